package testbed

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// BedEnv names the standing bed (hack/bed, `make bed`) tests reuse: its
// directory, holding BedFile. Unset, every package starts a bed of its own.
const BedEnv = "SPIREPOD_BED"

// BedFile is the description a standing bed writes into its directory.
const BedFile = "bed.json"

// BedInfo is what a standing bed tells the tests and the user about itself.
type BedInfo struct {
	// PID is the process that owns the bed: when it is gone, so is the bed.
	PID        int    `json:"pid"`
	Dir        string `json:"dir"`
	Kubeconfig string `json:"kubeconfig"`
	Context    string `json:"context"`
	Server     string `json:"server"`
	// TestbinRoot is the test-bin cache the bed's binaries come from.
	TestbinRoot string `json:"testbinRoot"`
	// CertManager: cert-manager's CRDs and controller run.
	CertManager bool `json:"certManager"`
	// The bed's SPIRE server (for trying spirepod by hand; tests start
	// servers of their own, configured from their own city).
	SpireServerAddress string `json:"spireServerAddress,omitempty"`
	SpireServerSocket  string `json:"spireServerSocket,omitempty"`
	SpireServerBundle  string `json:"spireServerBundle,omitempty"`
	TrustDomain        string `json:"trustDomain,omitempty"`
	// The bed's fake GitHub (for trying spirepod by hand).
	GitHubURL   string `json:"githubURL,omitempty"`
	GitHubToken string `json:"githubToken,omitempty"`
	GitHubRepo  string `json:"githubRepo,omitempty"`
}

// WriteBedInfo writes info as dir/bed.json (0600: the kubeconfig it names is
// the bed's admin credential).
func WriteBedInfo(dir string, info BedInfo) error {
	data, err := json.MarshalIndent(info, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(dir, BedFile+".tmp")
	if err := os.WriteFile(tmp, append(data, '\n'), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, BedFile))
}

// ReadBedInfo reads dir/bed.json and checks that the bed's process lives.
func ReadBedInfo(dir string) (BedInfo, error) {
	var info BedInfo
	data, err := os.ReadFile(filepath.Join(dir, BedFile))
	if err != nil {
		return info, fmt.Errorf("standing bed %s: %w (start one with `make bed`, or unset %s)", dir, err, BedEnv)
	}
	if err := json.Unmarshal(data, &info); err != nil {
		return info, fmt.Errorf("standing bed %s: %s: %w", dir, BedFile, err)
	}
	if info.PID <= 0 || syscall.Kill(info.PID, 0) != nil {
		return info, fmt.Errorf("standing bed %s: its process %d is gone (start one with `make bed`, or unset %s)", dir, info.PID, BedEnv)
	}
	return info, nil
}

// Attach connects to a running standing bed: a Cluster whose processes
// belong to the bed, so Stop leaves them running.
func Attach(ctx context.Context, dir string) (*Cluster, BedInfo, error) {
	info, err := ReadBedInfo(dir)
	if err != nil {
		return nil, info, err
	}
	c := &Cluster{Dir: info.Dir, Kubeconfig: info.Kubeconfig, Context: info.Context, Server: info.Server,
		Bins: Bins{Root: info.TestbinRoot}, attached: true, logf: func(string, ...any) {}}
	if err := c.connect(); err != nil {
		return nil, info, fmt.Errorf("standing bed %s: %w", dir, err)
	}
	if err := c.waitAPIServer(ctx); err != nil {
		return nil, info, fmt.Errorf("standing bed %s: %w", dir, err)
	}
	return c, info, nil
}

// connect builds the clients from the kubeconfig.
func (c *Cluster) connect() error {
	var err error
	c.Config, err = clientcmd.BuildConfigFromFlags("", c.Kubeconfig)
	if err != nil {
		return err
	}
	c.Config.QPS, c.Config.Burst = 200, 400
	if c.Client, err = kubernetes.NewForConfig(c.Config); err != nil {
		return err
	}
	c.Dynamic, err = dynamic.NewForConfig(c.Config)
	return err
}

// Shared is one test bed for a whole test package: started by the first
// test that asks for it (Get) and stopped by the package's TestMain (Stop),
// or the standing bed $SPIREPOD_BED names, which Stop leaves running. Tests
// sharing it work in namespaces and under names of their own, as teams
// sharing one cluster do.
//
//	var bed = &testbed.Shared{Options: testbed.Options{}}
//	func TestMain(m *testing.M) { code := m.Run(); bed.Stop(); os.Exit(code) }
//	func TestX(t *testing.T) { c := bed.Get(t) ... }
type Shared struct {
	// Options are the bed's (RealNode is not supported: a real node lives
	// in one test's network namespace).
	Options Options
	// Sets are the binaries the bed needs (default: KubeSet, or
	// ControlPlaneSet with Options.NoCertManager).
	Sets []func(Bins) []string

	once sync.Once
	c    *Cluster
	err  error
	dir  string
}

// Get returns a view of the package's bed for t, starting the bed on first
// use. It skips (or fails, under SPIREPOD_REQUIRE_TESTBED=1) as Require does.
// The view has a kubeconfig of its own (AddContext and AddUser change only
// t's copy); stopping or restarting the bed's components is not allowed
// through it.
func (s *Shared) Get(t testing.TB) *Cluster {
	t.Helper()
	sets := s.Sets
	if len(sets) == 0 {
		sets = []func(Bins) []string{Bins.KubeSet}
		if s.Options.NoCertManager {
			sets = []func(Bins) []string{Bins.ControlPlaneSet}
		}
	}
	dir := os.Getenv(BedEnv)
	if dir == "" {
		Require(t, sets...)
	} else if testing.Short() {
		t.Skip("test bed: skipped under -short")
	}
	s.once.Do(func() { s.c, s.err = s.start(dir) })
	if s.err != nil {
		t.Fatalf("test bed: %v", s.err)
	}
	v, err := s.c.view(t.TempDir())
	if err != nil {
		t.Fatalf("test bed: %v", err)
	}
	return v
}

func (s *Shared) start(standing string) (*Cluster, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	logf := s.Options.Logf
	if logf == nil {
		logf = func(f string, a ...any) { fmt.Fprintf(os.Stderr, f+"\n", a...) }
	}
	if standing != "" {
		c, info, err := Attach(ctx, standing)
		if err != nil {
			return nil, err
		}
		if !s.Options.NoCertManager && !info.CertManager {
			return nil, fmt.Errorf("standing bed %s runs no cert-manager; this package needs it", standing)
		}
		logf("test bed: the standing bed %s (%s, pid %d)", standing, info.Server, info.PID)
		return c, nil
	}
	if s.Options.RealNode {
		return nil, errors.New("a shared bed cannot run a real node")
	}
	dir, err := os.MkdirTemp("", "spirepod-testbed-")
	if err != nil {
		return nil, err
	}
	s.dir = dir
	opts := s.Options
	opts.Logf = logf
	c, err := Start(ctx, Bins{Root: DefaultRoot()}, dir, opts)
	if err != nil {
		if c != nil {
			c.DumpLogs(logf)
			c.Stop()
		}
		return nil, err
	}
	return c, nil
}

// Stop stops the bed if this package started it (a standing bed keeps
// running) and removes its directory. Call it from TestMain after m.Run.
func (s *Shared) Stop() {
	if s.c != nil && !s.c.attached {
		s.c.Stop()
	}
	if s.dir != "" {
		os.RemoveAll(s.dir)
	}
}

// DumpLogs prints the tail of each component's log of a bed this package
// started (TestMain, when the package failed).
func (s *Shared) DumpLogs(logf func(string, ...any)) {
	if s.c != nil && !s.c.attached {
		s.c.DumpLogs(logf)
	}
}

// Started reports whether the bed was started (or attached).
func (s *Shared) Started() bool { return s.c != nil }

// view is a copy of c for one test: its own kubeconfig file (in dir) and
// no say over the bed's processes.
func (c *Cluster) view(dir string) (*Cluster, error) {
	v := *c
	v.procs = nil
	v.Node = nil
	v.attached = true
	v.Kubeconfig = filepath.Join(dir, "kubeconfig")
	data, err := os.ReadFile(c.Kubeconfig)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(v.Kubeconfig, data, 0o600); err != nil {
		return nil, err
	}
	v.Config = rest.CopyConfig(c.Config)
	return &v, nil
}
