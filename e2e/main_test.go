package e2e_test

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/spirepod/spirepod/internal/testbed"
)

// One test bed for the package: etcd, kube-apiserver, controller-manager,
// scheduler, kwok's node and cert-manager, started by the first test that
// needs it (or the standing bed $SPIREPOD_BED names: `make bed`) and
// stopped after the last. Every test works in namespaces, team names and a
// city repository of its own, and runs SPIRE servers of its own, configured
// from its own city's merged files (each test's trust list, entries and
// agent_path_template are what it proves, and a server starts in under a
// second). This is what many teams sharing one cluster means, so sharing
// makes the tests more realistic, not less.
//
// Tests that need another cluster say why: the real-node tests
// (TestRealPod…) run theirs inside a network namespace of their own.
var bed = &testbed.Shared{}

// clusterScoped serialises the tests that create and delete cluster-scoped
// objects of spire-controller-manager (ClusterStaticEntry): a controller
// reconciles every such object of its class in the cluster, so two of these
// tests at once would feed each other's servers.
var clusterScoped sync.Mutex

// lockClusterScoped takes clusterScoped for the rest of the test and
// deletes every ClusterStaticEntry before and after it: a standing bed
// (SPIREPOD_BED) keeps what earlier runs left.
func (ft *formatTest) lockClusterScoped() {
	t := ft.t
	t.Helper()
	clusterScoped.Lock()
	deleteAll := func() {
		if err := ft.cluster.ApplyCRDs(ft.ctx, ft.bins.SpireControllerManagerCRDs()); err != nil {
			t.Errorf("spire-controller-manager CRDs: %v", err)
			return
		}
		if out, err := ft.cluster.Kubectl(ft.ctx, "delete", "clusterstaticentries", "--all", "--wait"); err != nil {
			t.Errorf("delete clusterstaticentries: %v\n%s", err, out)
		}
	}
	t.Cleanup(func() {
		deleteAll()
		clusterScoped.Unlock()
	})
	deleteAll()
	if t.Failed() {
		t.FailNow()
	}
}

func TestMain(m *testing.M) {
	// The agents' k8s workload attestor, where configured, reads the node
	// name from MY_NODE_NAME (a pod sets it from spec.nodeName). Set once
	// here: tests running in parallel must not change the environment.
	os.Setenv("MY_NODE_NAME", testbed.NodeName)
	code := m.Run()
	if code != 0 {
		bed.DumpLogs(func(f string, a ...any) { fmt.Fprintf(os.Stderr, f+"\n", a...) })
	}
	bed.Stop()
	os.Exit(code)
}

// cliEnv carries the built spirepod binary to the test binary's children
// (the real-node tests re-run themselves in a network namespace).
const cliEnv = "SPIREPOD_E2E_CLI"

var cli struct {
	once sync.Once
	path string
	err  error
	noGo bool
}

// buildCLI builds the real binary once per package, as users run it. The
// binary goes to a fixed place per checkout in the user's cache
// ($XDG_CACHE_HOME/spirepod/e2e-cli/<checkout>/spirepod): `go build -o`
// does not link again when that file is already the build of the current
// sources, so a warm run pays about a second, not a link.
func buildCLI(t *testing.T) string {
	t.Helper()
	cli.once.Do(func() {
		if p := os.Getenv(cliEnv); p != "" {
			if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
				cli.path = p
				return
			}
		}
		goBin, err := exec.LookPath("go")
		if err != nil {
			cli.noGo, cli.err = true, err
			return
		}
		out, err := cliPath()
		if err != nil {
			cli.err = err
			return
		}
		cmd := exec.Command(goBin, "build", "-o", out, "github.com/spirepod/spirepod/cmd/spirepod")
		if o, err := cmd.CombinedOutput(); err != nil {
			cli.err = errors.New(err.Error() + "\n" + string(o))
			return
		}
		cli.path = out
		os.Setenv(cliEnv, out)
	})
	if cli.noGo {
		t.Skipf("e2e: no go toolchain to build spirepod: %v", cli.err)
	}
	if cli.err != nil {
		t.Fatalf("go build spirepod: %v", cli.err)
	}
	return cli.path
}

// cliPath is where this checkout's e2e binary lives.
func cliPath() (string, error) {
	wd, err := os.Getwd() // the package directory: <checkout>/e2e
	if err != nil {
		return "", err
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256([]byte(filepath.Dir(wd)))
	dir := filepath.Join(cache, "spirepod", "e2e-cli", hex.EncodeToString(sum[:6]))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	return filepath.Join(dir, "spirepod"), nil
}
