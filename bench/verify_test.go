package bench

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/spirepod/spirepod/internal/testbed"
)

// TestBenchVerifyLatency measures the delay from the XFCC line being written
// to the curl log file (served by kwok through the real apiserver) to
//   - `spirepod verify` exiting 0 (a whole process, already following), and
//   - a `kubectl logs | grep` loop polling every 2 s exiting,
//
// alternating, on one test bed, a fresh pod per run.
func TestBenchVerifyLatency(t *testing.T) {
	if os.Getenv("SPIREPOD_BENCH") != "1" {
		t.Skip("benchmark: set SPIREPOD_BENCH=1 (bench/verify-latency.sh)")
	}
	runs := 9
	if n, err := strconv.Atoi(os.Getenv("BENCH_RUNS")); err == nil && n > 0 {
		runs = n
	}
	b := testbed.Require(t, testbed.Bins.ControlPlaneSet)
	c := testbed.StartCluster(t, b, testbed.Options{NoCertManager: true})
	work := t.TempDir()
	bin := filepath.Join(work, "spirepod")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/spirepod").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	env := append(os.Environ(), "HOME="+work, "XDG_CONFIG_HOME="+filepath.Join(work, ".config"), "NO_COLOR=1")
	const id = "spiffe://spire.cityos-dev.woven-planet.tech/ns/bench/sa/httpbin-client"
	line := `    "X-Forwarded-Client-Cert": "By=spiffe://td/ns/echo/sa/httpbin;Hash=1;URI=` + id + `"`

	var sp, kc []time.Duration
	for i := range runs {
		for _, tool := range []string{"spirepod", "kubectl"} {
			ns := fmt.Sprintf("bench-%s-%d", tool, i)
			logFile := setupPod(t, c, ns, work)
			var d time.Duration
			if tool == "spirepod" {
				d = spirepodDelay(t, env, bin, c, ns, logFile, line)
				sp = append(sp, d)
			} else {
				offset := 500*time.Millisecond + time.Duration(i%4)*500*time.Millisecond
				d = kubectlDelay(t, env, c, ns, logFile, line, id, offset)
				kc = append(kc, d)
			}
			t.Logf("run %d %-8s write→exit %v", i, tool, d.Round(time.Millisecond))
		}
	}
	t.Logf("median write→exit over %d runs: spirepod verify %v, kubectl logs polling (2 s) %v",
		runs, median(sp).Round(time.Millisecond), median(kc).Round(time.Millisecond))
}

func setupPod(t *testing.T, c *testbed.Cluster, ns, work string) string {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := c.CreateNamespace(ctx, ns); err != nil {
		t.Fatal(err)
	}
	files, err := c.PodLogs(ctx, work, ns, "p-0", "curl")
	if err != nil {
		t.Fatal(err)
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p-0", Namespace: ns},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "curl", Image: "curl"}}}}
	if _, err := c.Client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitPodRunning(ctx, ns, "p-0"); err != nil {
		t.Fatal(err)
	}
	return files["curl"]
}

func writeLine(t *testing.T, path, line string) time.Time {
	now := time.Now()
	if err := testbed.AppendLog(path, now, line); err != nil {
		t.Fatal(err)
	}
	return now
}

// spirepodDelay starts verify, waits until it is following the log, writes the line.
func spirepodDelay(t *testing.T, env []string, bin string, c *testbed.Cluster, ns, logFile, line string) time.Duration {
	cmd := exec.Command(bin, "verify", "--kubeconfig", c.Kubeconfig, "--context", c.Context, "-n", ns, "--pod", "p-0",
		"--expect", "spiffe://spire.cityos-dev.woven-planet.tech/ns/bench/sa/httpbin-client", "--timeout", "60s")
	cmd.Env, cmd.Dir = env, filepath.Dir(logFile)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(stderr)
	for sc.Scan() {
		if strings.Contains(sc.Text(), "streaming") {
			break
		}
	}
	wrote := writeLine(t, logFile, line)
	go func() { // drain
		for sc.Scan() {
		}
	}()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("spirepod verify: %v", err)
	}
	return time.Since(wrote)
}

// kubectlDelay runs the by-hand loop and writes the line offset after it starts.
func kubectlDelay(t *testing.T, env []string, c *testbed.Cluster, ns, logFile, line, id string, offset time.Duration) time.Duration {
	script := fmt.Sprintf(`until %q --kubeconfig %q --context %q -n %q logs p-0 -c curl | grep -qF %q; do sleep 2; done`,
		c.Bins.Kubectl(), c.Kubeconfig, c.Context, ns, "URI="+id)
	cmd := exec.Command("bash", "-c", script)
	cmd.Env = env
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(offset) // the stimulus: the line appears at some point of the polling cycle
	wrote := writeLine(t, logFile, line)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("kubectl loop: %v", err)
	}
	return time.Since(wrote)
}
