package bench

import (
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

// TestBenchScaleDiff times `spirepod diff` on one real test bed (the API
// server with cert-manager's CRDs) for scaffolds of each size in
// BENCH_SIZES, RUNS times each, each size in its own namespace, and prints
// "diff SIZE WALL_NS CPU_NS" (medians) for bench/scale.sh. BENCH_BIN is the
// binary to time.
func TestBenchScaleDiff(t *testing.T) {
	if os.Getenv("SPIREPOD_BENCH") != "1" {
		t.Skip("benchmark: set SPIREPOD_BENCH=1 (bench/scale.sh --diff)")
	}
	runs := 5
	if n, err := strconv.Atoi(os.Getenv("BENCH_RUNS")); err == nil && n > 0 {
		runs = n
	}
	bin := os.Getenv("BENCH_BIN")
	if bin == "" {
		t.Fatal("BENCH_BIN: the spirepod binary to time")
	}
	b := testbed.Require(t)
	c := testbed.StartCluster(t, b, testbed.Options{})
	work := t.TempDir()
	env := append(os.Environ(), "HOME="+work, "XDG_CONFIG_HOME="+filepath.Join(work, ".config"), "NO_COLOR=1")
	kc := []string{"--kubeconfig", c.Kubeconfig, "--context", c.Context}
	for _, s := range strings.Fields(os.Getenv("BENCH_SIZES")) {
		n, err := strconv.Atoi(s)
		if err != nil {
			t.Fatalf("BENCH_SIZES: %q", s)
		}
		ns := fmt.Sprintf("scale-%d", n)
		dir := filepath.Join(work, ns)
		if code := runCodeQuiet(env, work, bin, "init", "--team", "bench", "--namespace", ns, "--replicas", s, dir); code != 0 {
			t.Logf("%d replicas: init exit %d (refused): no diff", n, code)
			continue
		}
		mustRun(t, env, dir, bin, "pki", "gen")
		mustRun(t, env, dir, bin, "bundle", "set", filepath.Join(dir, "certs", "secret", "agent-x509pop.crt.pem"))
		if _, err := c.Client.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		var ds, cpus []time.Duration
		for range runs {
			// exit 1: the objects would be created (nothing is applied): the first diff a team runs
			wall, cpu := timeCmd(t, env, dir, bin, append([]string{"diff"}, kc...)...)
			ds, cpus = append(ds, wall), append(cpus, cpu)
		}
		t.Logf("diff %d %d %d", n, median(ds).Nanoseconds(), median(cpus).Nanoseconds())
	}
}

// timeCmd runs a command that must exit 0 or 1 and returns its wall-clock
// and CPU (user+sys) time.
func timeCmd(t *testing.T, env []string, dir, name string, args ...string) (time.Duration, time.Duration) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir, cmd.Env = dir, env
	t0 := time.Now()
	out, err := cmd.CombinedOutput()
	wall := time.Since(t0)
	if code := cmd.ProcessState.ExitCode(); err != nil && code != 1 {
		t.Fatalf("%s %v: exit %d: %v\n%s", name, args, code, err, out)
	}
	return wall, cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
}

// runCodeQuiet runs a command and returns its exit code.
func runCodeQuiet(env []string, dir, name string, args ...string) int {
	cmd := exec.Command(name, args...)
	cmd.Dir, cmd.Env = dir, env
	if err := cmd.Run(); err != nil {
		if cmd.ProcessState != nil {
			return cmd.ProcessState.ExitCode()
		}
		return -1
	}
	return 0
}
