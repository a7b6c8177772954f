package testbed

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// ContextName is the kubeconfig context the test bed writes.
const ContextName = "spirepod-testbed"

// NodeName is kwok's fake node.
const NodeName = "kwok-node-0"

// Options choose what a cluster runs.
type Options struct {
	// NoCertManager skips cert-manager's CRDs and controller.
	NoCertManager bool
	// ContextName overrides the kubeconfig context name.
	ContextName string
	// Logf receives progress lines (start-up times).
	Logf func(format string, args ...any)
	// RealNode runs a real node (containerd + kubelet, see node.go and
	// REALNODE.md) instead of kwok, with the Node authorizer on. Only inside
	// the test's network namespace: call InNetns first.
	RealNode bool
}

// Cluster is a running control plane.
type Cluster struct {
	Dir        string
	Kubeconfig string
	Context    string
	Server     string
	Config     *rest.Config
	Client     kubernetes.Interface
	Dynamic    dynamic.Interface
	Bins       Bins

	Etcd, APIServer, ControllerManager, Scheduler, Kwok, CertManager *Proc

	// Node is the real node (Options.RealNode), else nil.
	Node *Node
	// PodReachableAddr is where pods reach servers the test runs (BridgeIP)
	// on a real node; empty with kwok.
	PodReachableAddr string

	apiserverArgs []string
	kwokArgs      []string
	procs         []*Proc
	logf          func(string, ...any)
	// attached: the processes belong to someone else (a Shared bed's view,
	// or the standing bed): Stop leaves them, restarts are refused.
	attached bool
}

// StartCluster starts a cluster for one test (or a whole package, from
// TestMain with a testing.TB shim) and stops it when the test ends.
func StartCluster(t testing.TB, b Bins, opts Options) *Cluster {
	t.Helper()
	if opts.Logf == nil {
		opts.Logf = t.Logf
	}
	dir, err := os.MkdirTemp("", "spirepod-testbed-")
	if err != nil {
		t.Fatal(err)
	}
	timeout := 3 * time.Minute
	if opts.RealNode {
		timeout = 8 * time.Minute // a cold image build compiles the stand-ins
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c, err := Start(ctx, b, dir, opts)
	t.Cleanup(func() {
		if c != nil {
			if t.Failed() {
				c.DumpLogs(t.Logf)
			}
			c.Stop()
		}
		os.RemoveAll(dir)
	})
	if err != nil {
		t.Fatalf("test bed: %v", err)
	}
	return c
}

// Start starts etcd → kube-apiserver → controller-manager → scheduler →
// kwok (+ a Ready fake node) → cert-manager CRDs and controller, in dir.
func Start(ctx context.Context, b Bins, dir string, opts Options) (c *Cluster, err error) {
	logf := opts.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	c = &Cluster{Dir: dir, Bins: b, Context: ContextName, logf: logf}
	if opts.ContextName != "" {
		c.Context = opts.ContextName
	}
	defer func() {
		if err != nil {
			c.Stop()
		}
	}()
	begin := time.Now()
	step := func(what string, t0 time.Time) {
		logf("test bed: %s in %v", what, time.Since(t0).Round(time.Millisecond))
	}

	ports, err := freePorts(4)
	if err != nil {
		return c, err
	}
	etcdClient, etcdPeer, apiPort, kwokPort := ports[0], ports[1], ports[2], ports[3]

	// etcd
	t0 := time.Now()
	c.Etcd, err = c.start("etcd", b.Etcd(),
		"--data-dir", filepath.Join(dir, "etcd"),
		"--listen-client-urls", fmt.Sprintf("http://127.0.0.1:%d", etcdClient),
		"--advertise-client-urls", fmt.Sprintf("http://127.0.0.1:%d", etcdClient),
		"--listen-peer-urls", fmt.Sprintf("http://127.0.0.1:%d", etcdPeer),
		"--initial-advertise-peer-urls", fmt.Sprintf("http://127.0.0.1:%d", etcdPeer),
		"--initial-cluster", fmt.Sprintf("default=http://127.0.0.1:%d", etcdPeer),
		"--listen-metrics-urls", "",
		"--unsafe-no-fsync",
	)
	if err != nil {
		return c, err
	}
	etcdURL := fmt.Sprintf("http://127.0.0.1:%d", etcdClient)
	if err := waitFor(ctx, "etcd /health", c.Etcd, httpOK(http.DefaultClient, etcdURL+"/health")); err != nil {
		return c, err
	}
	step("etcd ready", t0)

	// certificates and the admin kubeconfig
	pki := filepath.Join(dir, "pki")
	if err := os.MkdirAll(pki, 0o700); err != nil {
		return c, err
	}
	ca := newCA("spirepod-testbed-ca")
	caPath, _, err := ca.write(pki, "ca")
	if err != nil {
		return c, err
	}
	serving := ca.issue("kube-apiserver", nil, true)
	apiHost := "127.0.0.1"
	if opts.RealNode {
		serving = ca.issueServing("kube-apiserver", realNodeServingIPs(), serving.Cert.DNSNames)
		apiHost, c.PodReachableAddr = BridgeIP, BridgeIP
	}
	servingPath, servingKey, err := serving.write(pki, "apiserver")
	if err != nil {
		return c, err
	}
	admin := ca.issue("spirepod-admin", []string{"system:masters"}, false)
	saPub, saKey, err := writeSAKeys(pki)
	if err != nil {
		return c, err
	}
	kwokCertPath, kwokKeyPath, err := ca.issue("kwok", nil, true).write(pki, "kwok")
	if err != nil {
		return c, err
	}
	c.Server = fmt.Sprintf("https://%s:%d", apiHost, apiPort)
	c.Kubeconfig = filepath.Join(dir, "kubeconfig")
	if err := writeKubeconfig(c.Kubeconfig, c.Context, c.Server, ca.CertPEM, admin.CertPEM, admin.KeyPEM); err != nil {
		return c, err
	}

	// kube-apiserver
	t0 = time.Now()
	c.apiserverArgs = []string{
		"--etcd-servers", etcdURL,
		"--bind-address", "127.0.0.1",
		"--advertise-address", "127.0.0.1",
		"--secure-port", itoa(apiPort),
		"--tls-cert-file", servingPath, "--tls-private-key-file", servingKey,
		"--client-ca-file", caPath,
		"--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file", saPub,
		"--service-account-signing-key-file", saKey,
		"--service-cluster-ip-range", "10.0.0.0/24",
		"--authorization-mode", "RBAC",
		"--endpoint-reconciler-type", "none",
		"--allow-privileged=true",
		"--kubelet-preferred-address-types", "InternalIP",
		"--cert-dir", filepath.Join(dir, "apiserver-certs"),
	}
	if opts.RealNode {
		if c.apiserverArgs, err = realNodeAPIServerArgs(c.apiserverArgs, pki, ca); err != nil {
			return c, err
		}
	}
	c.APIServer, err = c.start("kube-apiserver", b.Kube("kube-apiserver"), c.apiserverArgs...)
	if err != nil {
		return c, err
	}
	if err := c.connect(); err != nil {
		return c, err
	}
	if err := c.waitAPIServer(ctx); err != nil {
		return c, err
	}
	step("kube-apiserver ready", t0)

	// controller-manager and scheduler
	t0 = time.Now()
	c.ControllerManager, err = c.start("kube-controller-manager", b.Kube("kube-controller-manager"),
		"--kubeconfig", c.Kubeconfig,
		"--authentication-kubeconfig", c.Kubeconfig,
		"--authorization-kubeconfig", c.Kubeconfig,
		"--bind-address", "127.0.0.1", "--secure-port", "0",
		"--leader-elect=false",
		"--service-account-private-key-file", saKey,
		"--root-ca-file", caPath,
		"--use-service-account-credentials=false",
	)
	if err != nil {
		return c, err
	}
	c.Scheduler, err = c.start("kube-scheduler", b.Kube("kube-scheduler"),
		"--kubeconfig", c.Kubeconfig,
		"--authentication-kubeconfig", c.Kubeconfig,
		"--authorization-kubeconfig", c.Kubeconfig,
		"--bind-address", "127.0.0.1", "--secure-port", "0",
		"--leader-elect=false",
	)
	if err != nil {
		return c, err
	}
	step("controller-manager and scheduler started", t0)

	if opts.RealNode {
		// A real node (node.go) instead of kwok.
		if c.Node, err = c.startRealNode(ctx, ca, apiPort); err != nil {
			return c, err
		}
	} else {
		// kwok: CRDs for Logs, stages, a fake node
		t0 = time.Now()
		if out, err := c.Kubectl(ctx, "apply", "--server-side", "-f", b.KwokCRDs()); err != nil {
			return c, fmt.Errorf("kwok CRDs: %v\n%s", err, out)
		}
		if out, err := c.Kubectl(ctx, "wait", "--for=condition=Established", "--timeout=60s", "crd", "--all"); err != nil {
			return c, fmt.Errorf("kwok CRDs not established: %v\n%s", err, out)
		}
		stagesPath := filepath.Join(dir, "kwok-config.yaml")
		if err := concatYAML(b.KwokStages(), stagesPath); err != nil {
			return c, err
		}
		c.kwokArgs = []string{
			"--kubeconfig", c.Kubeconfig,
			"--config", stagesPath,
			"--manage-all-nodes=false",
			"--manage-nodes-with-annotation-selector", "kwok.x-k8s.io/node=fake",
			"--node-ip", "127.0.0.1",
			"--node-port", itoa(kwokPort),
			"--server-address", fmt.Sprintf("127.0.0.1:%d", kwokPort),
			"--tls-cert-file", kwokCertPath, "--tls-private-key-file", kwokKeyPath,
			"--enable-crds", "Logs,ClusterLogs",
			"--cidr", "10.244.0.0/16",
			// The node's Lease, renewed every 10 s as a kubelet does. Without
			// it kwok heartbeats only every 10–20 min, the controller-manager
			// marks the node NotReady after its 50 s grace period, kwok's
			// node-initialize stage runs again and the node loses its
			// addresses (pod logs then fail with "no preferred addresses
			// found"): harmless for a test bed that lives a minute, fatal for
			// one a package or a developer shares.
			"--node-lease-duration-seconds", "40",
		}
		c.Kwok, err = c.start("kwok", b.Kwok(), c.kwokArgs...)
		if err != nil {
			return c, err
		}
		if err := c.createNode(ctx); err != nil {
			return c, err
		}
		step("kwok node Ready", t0)
	}

	// cert-manager
	if !opts.NoCertManager {
		t0 = time.Now()
		if out, err := c.Kubectl(ctx, "apply", "--server-side", "-f", b.CertManagerCRDs()); err != nil {
			return c, fmt.Errorf("cert-manager CRDs: %v\n%s", err, out)
		}
		if out, err := c.Kubectl(ctx, "wait", "--for=condition=Established", "--timeout=60s", "crd", "--all"); err != nil {
			return c, fmt.Errorf("CRDs not established: %v\n%s", err, out)
		}
		if _, err := c.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "cert-manager"}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return c, err
		}
		c.CertManager, err = c.start("cert-manager", b.CertManager(),
			"--kubeconfig", c.Kubeconfig,
			"--cluster-resource-namespace", "cert-manager",
		)
		if err != nil {
			return c, err
		}
		step("cert-manager CRDs applied and controller started", t0)
	}
	logf("test bed: control plane up in %v (%s, context %s)", time.Since(begin).Round(time.Millisecond), c.Server, c.Context)
	return c, nil
}

func (c *Cluster) start(name, bin string, args ...string) (*Proc, error) {
	p, err := StartProc(c.Dir, name, bin, args...)
	if err != nil {
		return nil, err
	}
	c.procs = append(c.procs, p)
	return p, nil
}

func (c *Cluster) waitAPIServer(ctx context.Context) error {
	tr, err := rest.TransportFor(c.Config)
	if err != nil {
		return err
	}
	hc := &http.Client{Transport: tr, Timeout: 2 * time.Second}
	return waitFor(ctx, "kube-apiserver /readyz", c.APIServer, httpOK(hc, c.Server+"/readyz"))
}

// StopAPIServer kills kube-apiserver (fault tests); RestartAPIServer brings it back on the same port.
// A fault test needs a bed of its own: a shared one refuses.
func (c *Cluster) StopAPIServer() {
	c.own("StopAPIServer")
	c.APIServer.Kill()
}

// own panics when c's processes are not c's to stop (a shared or standing bed).
func (c *Cluster) own(what string) {
	if c.attached {
		panic("testbed: " + what + " on a shared test bed: a test that stops or restarts components starts a bed of its own (StartCluster)")
	}
}

// RestartAPIServer starts kube-apiserver again with the same flags and waits for it.
func (c *Cluster) RestartAPIServer(ctx context.Context) error {
	c.own("RestartAPIServer")
	p, err := c.start("kube-apiserver", c.Bins.Kube("kube-apiserver"), c.apiserverArgs...)
	if err != nil {
		return err
	}
	c.APIServer = p
	return c.waitAPIServer(ctx)
}

// RestartKwok kills kwok (ending every log stream it serves, as a node
// restarting a container would) and starts it again with the same flags.
// The node's Lease goes with the old kwok: the new one would otherwise wait
// out the old holder's 40 s before it runs the node's pods again.
func (c *Cluster) RestartKwok() error {
	c.own("RestartKwok")
	c.Kwok.Kill()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.Client.CoordinationV1().Leases(corev1.NamespaceNodeLease).Delete(ctx, NodeName, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("node lease %s: %w", NodeName, err)
	}
	p, err := c.start("kwok", c.Bins.Kwok(), c.kwokArgs...)
	if err != nil {
		return err
	}
	c.Kwok = p
	// Back once it holds the node again: it renews the node's lease.
	lctx, lcancel := context.WithTimeout(context.Background(), time.Minute)
	defer lcancel()
	return waitFor(lctx, "kwok to renew the node lease", p, func(ctx context.Context) bool {
		_, err := c.Client.CoordinationV1().Leases(corev1.NamespaceNodeLease).Get(ctx, NodeName, metav1.GetOptions{})
		return err == nil
	})
}

// WaitPodLogs waits until the node serves the container's log (kwok
// serves it once it has loaded the pod's Logs after a restart).
func (c *Cluster) WaitPodLogs(ctx context.Context, ns, pod, container string) error {
	var last error
	err := waitFor(ctx, "the log of "+ns+"/"+pod+"/"+container, c.Kwok, func(ctx context.Context) bool {
		_, last = c.Client.CoreV1().Pods(ns).GetLogs(pod, &corev1.PodLogOptions{Container: container}).Do(ctx).Raw()
		return last == nil
	})
	if err != nil && last != nil {
		return fmt.Errorf("%w (last: %v)", err, last)
	}
	return err
}

// Stop stops every process, last started first; a view of a shared or
// standing bed stops nothing.
func (c *Cluster) Stop() {
	if c.attached {
		return
	}
	if c.Node != nil {
		c.Node.Stop()
	}
	for i := len(c.procs) - 1; i >= 0; i-- {
		c.procs[i].Stop()
	}
	c.procs = nil
}

// DumpLogs prints the tail of each component's log.
func (c *Cluster) DumpLogs(logf func(string, ...any)) {
	var node []*Proc
	if c.Node != nil {
		node = c.Node.Procs()
	}
	for _, p := range append(c.procs, node...) {
		logf("--- %s (%s) ---\n%s", p.Name, p.LogPath, p.Tail(2000))
	}
}

// Kubectl runs the real kubectl against the cluster (tests use it as an independent judge).
func (c *Cluster) Kubectl(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, c.Bins.Kubectl(), append([]string{"--kubeconfig", c.Kubeconfig, "--context", c.Context}, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (c *Cluster) createNode(ctx context.Context) error {
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name:        NodeName,
			Annotations: map[string]string{"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
			Labels:      map[string]string{"type": "kwok", "kubernetes.io/hostname": NodeName, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64"},
		},
	}
	if _, err := c.Client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	return waitFor(ctx, "kwok node Ready", c.Kwok, func(ctx context.Context) bool {
		n, err := c.Client.CoreV1().Nodes().Get(ctx, NodeName, metav1.GetOptions{})
		if err != nil {
			return false
		}
		for _, cond := range n.Status.Conditions {
			if cond.Type == corev1.NodeReady && cond.Status == corev1.ConditionTrue {
				return true
			}
		}
		return false
	})
}

func httpOK(hc *http.Client, url string) func(context.Context) bool {
	return func(ctx context.Context) bool {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return false
		}
		resp, err := hc.Do(req)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}
}

func writeKubeconfig(path, contextName, server string, caPEM, certPEM, keyPEM []byte) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["testbed"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: caPEM}
	cfg.AuthInfos["admin"] = &clientcmdapi.AuthInfo{ClientCertificateData: certPEM, ClientKeyData: keyPEM}
	cfg.Contexts[contextName] = &clientcmdapi.Context{Cluster: "testbed", AuthInfo: "admin", Namespace: "default"}
	cfg.CurrentContext = contextName
	return clientcmd.WriteToFile(*cfg, path)
}

// AddContext adds another context (e.g. a "prod"-named one) pointing at the same cluster.
func (c *Cluster) AddContext(name string) error {
	cfg, err := clientcmd.LoadFromFile(c.Kubeconfig)
	if err != nil {
		return err
	}
	cfg.Contexts[name] = &clientcmdapi.Context{Cluster: "testbed", AuthInfo: "admin", Namespace: "default"}
	return clientcmd.WriteToFile(*cfg, c.Kubeconfig)
}

// AddUser adds a context authenticating as a user with the given groups
// (a client certificate from the test CA), for permission tests.
func (c *Cluster) AddUser(contextName, user string, groups []string) error {
	cfg, err := clientcmd.LoadFromFile(c.Kubeconfig)
	if err != nil {
		return err
	}
	caPEM := cfg.Clusters["testbed"].CertificateAuthorityData
	caKey, err := os.ReadFile(filepath.Join(c.Dir, "pki", "ca.key"))
	if err != nil {
		return err
	}
	pair, err := tls.X509KeyPair(caPEM, caKey)
	if err != nil {
		return err
	}
	caCert, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return err
	}
	ca := &keyPair{Cert: caCert, Key: pair.PrivateKey.(crypto.Signer)}
	kp := ca.issue(user, groups, false)
	cfg.AuthInfos[user] = &clientcmdapi.AuthInfo{ClientCertificateData: kp.CertPEM, ClientKeyData: kp.KeyPEM}
	cfg.Contexts[contextName] = &clientcmdapi.Context{Cluster: "testbed", AuthInfo: user}
	return clientcmd.WriteToFile(*cfg, c.Kubeconfig)
}

// FailInitAnnotation on a pod makes kwok fail its init containers (exit 1)
// and leave it Pending, the state a crashing gen-cert leaves on a real node.
const FailInitAnnotation = "testbed.spirepod.local/fail-init"

// failInitStage is a kwok Stage of the test bed's own: pods annotated with
// FailInitAnnotation get terminated init containers instead of Running.
const failInitStage = `apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: testbed-pod-init-fails
spec:
  resourceRef:
    apiGroup: v1
    kind: Pod
  selector:
    matchExpressions:
    - key: '.metadata.deletionTimestamp'
      operator: 'DoesNotExist'
    - key: '.metadata.annotations."` + FailInitAnnotation + `"'
      operator: 'In'
      values: ['true']
    - key: '.status.initContainerStatuses'
      operator: 'DoesNotExist'
  weight: 1
  next:
    statusTemplate: |
      {{ $now := Now }}
      conditions:
      - lastTransitionTime: {{ $now | Quote }}
        status: "False"
        type: Initialized
        reason: ContainersNotInitialized
      initContainerStatuses:
      {{ range .spec.initContainers }}
      - image: {{ .image | Quote }}
        name: {{ .name | Quote }}
        ready: false
        restartCount: 0
        state:
          terminated:
            exitCode: 1
            reason: Error
            startedAt: {{ $now | Quote }}
            finishedAt: {{ $now | Quote }}
      {{ end }}
      containerStatuses:
      {{ range .spec.containers }}
      - image: {{ .image | Quote }}
        name: {{ .name | Quote }}
        ready: false
        restartCount: 0
        state:
          waiting:
            reason: PodInitializing
      {{ end }}
`

// concatYAML joins kwok's stage files into one multi-document config, with
// the test bed's own stage, and keeps pods marked to fail out of pod-ready.
func concatYAML(dir, out string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	var b strings.Builder
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".yaml") {
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return err
		}
		text := string(data)
		if e.Name() == "pod-ready.yaml" {
			const anchor = "    matchExpressions:\n"
			if !strings.Contains(text, anchor) {
				return fmt.Errorf("%s: no matchExpressions to extend", e.Name())
			}
			text = strings.Replace(text, anchor, anchor+
				"    - key: '.metadata.annotations.\""+FailInitAnnotation+"\"'\n      operator: 'DoesNotExist'\n", 1)
		}
		b.WriteString("---\n")
		b.WriteString(text)
		b.WriteString("\n")
	}
	b.WriteString("---\n" + failInitStage)
	return os.WriteFile(out, []byte(b.String()), 0o644)
}
