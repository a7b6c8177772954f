package testbed

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/yaml"
)

// ClusterStaticEntryGVR is spire-controller-manager's cluster-scoped
// ClusterStaticEntry resource.
var ClusterStaticEntryGVR = schema.GroupVersionResource{Group: "spire.spiffe.io", Version: "v1alpha1", Resource: "clusterstaticentries"}

// ControllerManagerOptions are what a test varies in spire-controller-manager's
// ControllerManagerConfig (v0.6.x, spire.spiffe.io/v1alpha1).
type ControllerManagerOptions struct {
	// ClusterName is required by the controller; default "testbed".
	ClusterName string
	// ClassName: with it set and WatchClassless false, objects whose
	// spec.className differs (or is empty) are ignored. The standard Helm
	// install sets "<namespace>-<release>" (e.g. "spire-system-spire") and
	// watchClassless false.
	ClassName string
	// WatchClassless also handles objects without a className when ClassName is set.
	WatchClassless bool
	// EntryIDPrefix makes the controller manage only entries whose ID starts
	// with "<prefix>."; without it the controller owns (and deletes) every
	// entry of the server that no object declares.
	EntryIDPrefix string
	// GCInterval is how often it reconciles when idle; default the controller's (10 s).
	GCInterval time.Duration
}

// SpireControllerManager is a running spire-controller-manager.
type SpireControllerManager struct {
	Proc *Proc
	// ConfigPath is the ControllerManagerConfig it runs with.
	ConfigPath string
	// HealthPort serves /readyz and /healthz on 127.0.0.1.
	HealthPort int
	Options    ControllerManagerOptions
}

// controllerManagerConfig is the config file; leader election off, metrics
// off, health probes on loopback, webhooks off (ENABLE_WEBHOOKS=false: they
// validate ClusterSPIFFEID and ClusterFederatedTrustDomain only; there is no
// ClusterStaticEntry webhook, and the webhook manager needs in-cluster config).
func controllerManagerConfig(srv *SpireServer, healthPort int, o ControllerManagerOptions) ([]byte, error) {
	cfg := map[string]any{
		"apiVersion":            "spire.spiffe.io/v1alpha1",
		"kind":                  "ControllerManagerConfig",
		"metrics":               map[string]any{"bindAddress": "0"},
		"health":                map[string]any{"healthProbeBindAddress": fmt.Sprintf("127.0.0.1:%d", healthPort)},
		"leaderElection":        map[string]any{"leaderElect": false},
		"clusterName":           o.ClusterName,
		"clusterDomain":         "cluster.local",
		"trustDomain":           srv.TrustDomain,
		"spireServerSocketPath": srv.Socket,
		"ignoreNamespaces":      []string{"kube-system", "kube-public", "spire-system"},
		"logLevel":              "debug",
	}
	if o.ClassName != "" {
		cfg["className"] = o.ClassName
	}
	if o.WatchClassless {
		cfg["watchClassless"] = true
	}
	if o.EntryIDPrefix != "" {
		cfg["entryIDPrefix"] = o.EntryIDPrefix
	}
	if o.GCInterval > 0 {
		cfg["gcInterval"] = int64(o.GCInterval) // time.Duration in JSON: nanoseconds
	}
	return yaml.Marshal(cfg)
}

// StartSpireControllerManager applies the controller's CRDs to the cluster
// and runs spire-controller-manager against the cluster's apiserver and the
// server's admin socket, until /readyz answers and its ClusterStaticEntry
// controller has started its workers.
func StartSpireControllerManager(ctx context.Context, c *Cluster, srv *SpireServer, dir string, o ControllerManagerOptions) (*SpireControllerManager, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if o.ClusterName == "" {
		o.ClusterName = "testbed"
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	if err := c.ApplyCRDs(ctx, c.Bins.SpireControllerManagerCRDs()); err != nil {
		return nil, fmt.Errorf("spire-controller-manager CRDs: %w", err)
	}
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	conf, err := controllerManagerConfig(srv, port, o)
	if err != nil {
		return nil, err
	}
	m := &SpireControllerManager{ConfigPath: filepath.Join(dir, "controller-manager-config.yaml"), HealthPort: port, Options: o}
	if err := os.WriteFile(m.ConfigPath, conf, 0o644); err != nil {
		return nil, err
	}
	m.Proc, err = startProcEnv(dir, "spire-controller-manager", c.Bins.SpireControllerManager(),
		[]string{"ENABLE_WEBHOOKS=false", "KUBECONFIG=" + c.Kubeconfig},
		"--config", m.ConfigPath, "--kubeconfig", c.Kubeconfig)
	if err != nil {
		return nil, err
	}
	hc := &http.Client{Timeout: 2 * time.Second}
	ready := httpOK(hc, fmt.Sprintf("http://127.0.0.1:%d/readyz", port))
	if err := waitFor(ctx, "spire-controller-manager ready", m.Proc, func(ctx context.Context) bool {
		return ready(ctx) && m.workersStarted()
	}); err != nil {
		m.Proc.Stop()
		return nil, err
	}
	return m, nil
}

// workersStarted: controller-runtime logs "Starting workers" per controller
// once its caches synced.
func (m *SpireControllerManager) workersStarted() bool {
	b, err := os.ReadFile(m.Proc.LogPath)
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.Contains(line, "Starting workers") && strings.Contains(strings.ToLower(line), "clusterstaticentry") {
			return true
		}
	}
	return false
}

// Stop stops the controller.
func (m *SpireControllerManager) Stop() { m.Proc.Stop() }

// ApplyCRDs applies every CRD manifest in dir (server-side) and waits until
// all CRDs are Established.
func (c *Cluster) ApplyCRDs(ctx context.Context, dir string) error {
	if out, err := c.Kubectl(ctx, "apply", "--server-side", "-f", dir); err != nil {
		return fmt.Errorf("apply %s: %v\n%s", dir, err, out)
	}
	if out, err := c.Kubectl(ctx, "wait", "--for=condition=Established", "--timeout=60s", "crd", "--all"); err != nil {
		return fmt.Errorf("CRDs of %s not established: %v\n%s", dir, err, out)
	}
	return nil
}

// ClusterStaticEntryStatus is the status the controller writes on a ClusterStaticEntry.
type ClusterStaticEntryStatus struct {
	Name string
	// Present is false while the controller has not written a status at all
	// (an object it ignores, e.g. of another class, never gets one).
	Present  bool
	Rendered bool
	Masked   bool
	Set      bool
}

// ClusterStaticEntryStatuses reads the status of every ClusterStaticEntry.
func (c *Cluster) ClusterStaticEntryStatuses(ctx context.Context) ([]ClusterStaticEntryStatus, error) {
	list, err := c.Dynamic.Resource(ClusterStaticEntryGVR).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	out := make([]ClusterStaticEntryStatus, 0, len(list.Items))
	for _, it := range list.Items {
		st := ClusterStaticEntryStatus{Name: it.GetName()}
		if m, ok, _ := unstructured.NestedMap(it.Object, "status"); ok {
			st.Present = true
			st.Rendered, _ = m["rendered"].(bool)
			st.Masked, _ = m["masked"].(bool)
			st.Set, _ = m["set"].(bool)
		}
		out = append(out, st)
	}
	return out, nil
}
