package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/spirepod/spirepod/internal/testbed"
)

// teamScaffolds makes one team CA and returns a function that scaffolds a
// team in a fresh namespace with that CA (the cluster-scoped objects are then
// the same for every arm) and the CA as its server bundle.
func teamScaffolds(t *testing.T, c *testbed.Cluster, env []string, work, bin string) func(ns string) string {
	t.Helper()
	caDir := filepath.Join(work, "ca")
	mustRun(t, env, work, bin, "init", "--team", "bench", "--namespace", "ca", caDir)
	mustRun(t, env, caDir, bin, "pki", "gen")
	return func(ns string) string {
		dir := filepath.Join(work, ns)
		mustRun(t, env, work, bin, "init", "--team", "bench", "--namespace", ns, dir)
		mustRun(t, env, dir, bin, "bundle", "set", filepath.Join(caDir, "certs", "secret", "agent-x509pop.crt.pem"))
		for _, f := range []string{"agent-x509pop.crt.pem", "agent-x509pop.key.pem"} {
			data, err := os.ReadFile(filepath.Join(caDir, "certs", "secret", f))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, "certs", "secret", f), data, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := c.Client.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		return dir
	}
}

func median(ds []time.Duration) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

// mustRun runs a command that must exit 0 and returns its time.
func mustRun(t *testing.T, env []string, dir string, name string, args ...string) time.Duration {
	t.Helper()
	return runCode(t, env, dir, name, []int{0}, args...)
}

// TestBenchApply compares `spirepod apply --wait=false` with
// `kubectl apply -k certs && kubectl apply -k .` for the same scaffold objects,
// on the same test bed, alternating, each run into a fresh namespace.
func TestBenchApply(t *testing.T) {
	if os.Getenv("SPIREPOD_BENCH") != "1" {
		t.Skip("benchmark: set SPIREPOD_BENCH=1 (bench/apply.sh)")
	}
	runs := 11
	if n, err := strconv.Atoi(os.Getenv("BENCH_RUNS")); err == nil && n > 0 {
		runs = n
	}
	b := testbed.Require(t)
	c := testbed.StartCluster(t, b, testbed.Options{})
	work := t.TempDir()
	bin := filepath.Join(work, "spirepod")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/spirepod").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	env := append(os.Environ(), "HOME="+work, "XDG_CONFIG_HOME="+filepath.Join(work, ".config"), "NO_COLOR=1")
	// One team CA for every scaffold: the cluster-scoped CA Secret and
	// ClusterIssuer are then the same objects for both tools.
	scaffold := teamScaffolds(t, c, env, work, bin)
	kc := []string{"--kubeconfig", c.Kubeconfig, "--context", c.Context}
	// warm both: kubectl's discovery cache in HOME, and the first ClusterIssuer
	warm := scaffold("warm")
	mustRun(t, env, warm, b.Kubectl(), append([]string{"apply", "-k", "certs"}, kc...)...)

	var sp, kubectl []time.Duration
	for i := 0; i < runs; i++ {
		d1 := scaffold(fmt.Sprintf("sp-%d", i))
		// --force-conflicts: the shared CA Secret's data was last written by
		// kubectl's client-side apply in the other arm; SSA reports that as a
		// conflict even for equal values. Forcing costs no extra request.
		sp = append(sp, mustRun(t, env, d1, bin, append([]string{"apply", "--wait=false", "--force-conflicts", "--skip-image-check"}, kc...)...))
		d2 := scaffold(fmt.Sprintf("kc-%d", i))
		t0 := time.Now()
		mustRun(t, env, d2, b.Kubectl(), append([]string{"apply", "-k", "certs"}, kc...)...)
		mustRun(t, env, d2, b.Kubectl(), append([]string{"apply", "-k", "."}, kc...)...)
		kubectl = append(kubectl, time.Since(t0))
	}
	ms, mk := median(sp), median(kubectl)
	t.Logf("spirepod apply --wait=false: median %v over %d runs", ms.Round(100*time.Microsecond), runs)
	t.Logf("kubectl apply -k certs && kubectl apply -k .: median %v over %d runs", mk.Round(100*time.Microsecond), runs)
	t.Logf("ratio spirepod/kubectl: %.2f", float64(ms)/float64(mk))
}
