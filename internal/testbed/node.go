package testbed

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// RealNodeName is the Node the real kubelet registers.
const RealNodeName = "spirepod-node-0"

// KubeletPort is the kubelet API port, the usual 10250 (the SPIRE k8s
// workload attestor's default): it is free because the kubelet listens on
// BridgeIP inside the test's own network namespace.
const KubeletPort = 10250

// Node is a real node: containerd (Debian's, with runc and the CNI bridge
// plugin) and a real kubelet registered with the test bed's apiserver, all
// in the test's network namespace. Made by StartCluster with
// Options.RealNode; stopped (pods, containers and shims included) by
// Cluster.Stop.
type Node struct {
	Name string
	// IP is the node's InternalIP (BridgeIP): the apiserver reaches the
	// kubelet here, and pods reach services the test runs on it.
	IP  string
	Dir string
	// Images are the local images imported into containerd.
	Images Images
	// ContainerdSocket is containerd's gRPC (and CRI) socket.
	ContainerdSocket string
	// DNS is the pods' cluster DNS (on BridgeIP:53): it knows the node's
	// name and kubernetes.default.svc.cluster.local; tests Add more.
	DNS *DNS

	Containerd, Kubelet *Proc

	tools    HostTools
	bins     Bins
	stateDir string
	conn     *grpc.ClientConn
	cri      runtimeapi.RuntimeServiceClient
	images   runtimeapi.ImageServiceClient
	logf     func(string, ...any)

	mu        sync.Mutex
	seen      map[int]procID // shims and container processes seen in containerd's state
	stopped   bool
	watchStop chan struct{}
	watchDone chan struct{}
}

// procID names a process that is not ours by its PID and its start time, so
// a reused PID is never mistaken for it.
type procID struct {
	What  string
	Start uint64
}

// NodeProcess is a process of the real node: one of ours, a shim or a
// container process.
type NodeProcess struct {
	PID  int
	What string
}

// realNodeServingIPs are the apiserver's serving-certificate addresses on a
// real node: loopback, the bridge, and the kubernetes Service ClusterIP
// in-cluster clients (kubectl in a pod) dial.
func realNodeServingIPs() []net.IP {
	return []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP(BridgeIP), net.ParseIP(KubernetesServiceIP)}
}

// issueServing signs a serving certificate for these IPs (certs.go's issue
// is fixed to 127.0.0.1).
func (ca *keyPair) issueServing(cn string, ips []net.IP, dns []string) *keyPair {
	key := newKey()
	tmpl := &x509.Certificate{
		SerialNumber: serial(), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: ips, DNSNames: dns,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		panic(err)
	}
	c, _ := x509.ParseCertificate(der)
	return encode(c, key)
}

// realNodeAPIServerArgs changes the kwok cluster's apiserver flags for a
// real node: listen on the bridge, the Node authorizer (with RBAC) and
// NodeRestriction, and a client certificate for the kubelet API (logs, exec).
func realNodeAPIServerArgs(args []string, pki string, ca *keyPair) ([]string, error) {
	crt, key, err := ca.issue("kube-apiserver-kubelet-client", []string{"system:masters"}, false).write(pki, "apiserver-kubelet-client")
	if err != nil {
		return nil, err
	}
	set := map[string]string{
		"--bind-address":       BridgeIP,
		"--advertise-address":  BridgeIP,
		"--authorization-mode": "Node,RBAC",
	}
	out := make([]string, 0, len(args)+8)
	for i := 0; i < len(args); i++ {
		if v, ok := set[args[i]]; ok && i+1 < len(args) {
			out = append(out, args[i], v)
			delete(set, args[i])
			i++
			continue
		}
		out = append(out, args[i])
	}
	for k, v := range set {
		out = append(out, k, v)
	}
	return append(out,
		"--enable-admission-plugins", "NodeRestriction",
		"--kubelet-client-certificate", crt, "--kubelet-client-key", key,
	), nil
}

// startRealNode starts containerd, imports the images, starts the kubelet
// and waits for the Node to be Ready.
func (c *Cluster) startRealNode(ctx context.Context, ca *keyPair, apiPort int) (*Node, error) {
	if !inNetns() {
		return nil, fmt.Errorf("Options.RealNode runs only inside the test's network namespace: call testbed.InNetns(t) first")
	}
	h, missing := FindHostTools()
	if len(missing) > 0 {
		return nil, fmt.Errorf("real node: missing %s (run hack/packages.sh as root)", strings.Join(missing, ", "))
	}
	if err := addServiceDNAT(apiPort); err != nil {
		return nil, err
	}
	dir := filepath.Join(c.Dir, "node")
	n := &Node{
		Name: RealNodeName, IP: BridgeIP, Dir: dir, Images: TestImages,
		ContainerdSocket: filepath.Join(dir, "containerd", "containerd.sock"),
		tools:            h, bins: c.Bins, stateDir: filepath.Join(dir, "containerd", "state"),
		logf: c.logf, seen: map[int]procID{},
	}
	c.Node = n
	// The node's state (containerd's content and unpacked snapshots, the
	// kubelet's pod directories, logs) lives on a tmpfs mounted in the test's
	// private mount namespace: fast, and gone with the namespace however the
	// test ends, so an interrupted run leaves no gigabyte of snapshots.
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return n, err
	}
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "mode=0755"); err != nil {
		return n, fmt.Errorf("mount tmpfs on %s: %w", dir, err)
	}
	for _, d := range []string{"containerd/root", "containerd/state", "containerd/opt", "cni/net.d", "cni/ipam", "kubelet/pki", "pod-logs", "volume-plugins"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return n, err
		}
	}
	step := func(what string, t0 time.Time) {
		c.logf("test bed: %s in %v", what, time.Since(t0).Round(time.Millisecond))
	}

	// Images build (or come from the cache) while containerd starts.
	t0 := time.Now()
	type built struct {
		tars map[string]string
		err  error
	}
	imgs := make(chan built, 1)
	go func() {
		tars, err := BuildImages(ctx, c.Bins, h, c.logf)
		imgs <- built{tars, err}
	}()

	// containerd
	if err := os.WriteFile(filepath.Join(dir, "cni", "net.d", "10-spirepod-bridge.conflist"), []byte(cniConfig(filepath.Join(dir, "cni"))), 0o644); err != nil {
		return n, err
	}
	cfgPath := filepath.Join(dir, "containerd", "config.toml")
	if err := os.WriteFile(cfgPath, []byte(containerdConfig(dir, h.CNIBinDir)), 0o644); err != nil {
		return n, err
	}
	var err error
	n.Containerd, err = StartProc(dir, "containerd", h.Containerd, "--config", cfgPath)
	if err != nil {
		return n, err
	}
	n.watch()
	if err := n.dialCRI(ctx); err != nil {
		return n, err
	}
	step("containerd ready (CRI)", t0)

	// images
	b := <-imgs
	if b.err != nil {
		return n, b.err
	}
	t1 := time.Now()
	errs := make(chan error, len(b.tars))
	for _, ref := range TestImages.All() {
		go func() { errs <- n.ImportImage(ctx, b.tars[ref]) }()
	}
	for range TestImages.All() {
		if err := <-errs; err != nil {
			return n, err
		}
	}
	step(fmt.Sprintf("%d images imported", len(b.tars)), t1)

	// cluster DNS, then the kubelet
	t1 = time.Now()
	if n.DNS, err = startDNS(BridgeIP); err != nil {
		return n, fmt.Errorf("cluster DNS: %w", err)
	}
	if err := n.DNS.Add(n.Name, n.IP); err != nil {
		return n, err
	}
	if err := n.DNS.Add("kubernetes.default.svc.cluster.local", KubernetesServiceIP); err != nil {
		return n, err
	}
	if err := n.startKubelet(ctx, c, ca); err != nil {
		return n, err
	}
	if err := n.waitReady(ctx, c); err != nil {
		return n, err
	}
	step("real node "+n.Name+" Ready", t1)
	return n, nil
}

func containerdConfig(dir, cniBin string) string {
	return fmt.Sprintf(`version = 2
root = %q
state = %q
# CAP_SYS_RESOURCE is missing here: containerd must not lower its own score.
oom_score = 0

[grpc]
  address = %q

[ttrpc]
  address = %q

[debug]
  level = "info"

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = %q

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %q
  # Without CAP_SYS_RESOURCE every sandbox fails ("can't get final child's
  # PID from pipe: EOF") unless the OOM score is only ever raised.
  restrict_oom_score_adj = true
  # Pod network namespaces live under state, not /var/run/netns.
  netns_mounts_under_state_dir = true
  enable_selinux = false
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    # overlayfs (and the other snapshotters) do not work in this sandbox.
    snapshotter = "native"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = %q
    conf_dir = %q
    max_conf_num = 1
`,
		filepath.Join(dir, "containerd", "root"), filepath.Join(dir, "containerd", "state"),
		filepath.Join(dir, "containerd", "containerd.sock"), filepath.Join(dir, "containerd", "containerd.sock.ttrpc"),
		filepath.Join(dir, "containerd", "opt"),
		TestImages.Pause, cniBin, filepath.Join(dir, "cni", "net.d"))
}

// dialCRI connects to containerd's CRI and waits until the runtime is ready.
func (n *Node) dialCRI(ctx context.Context) error {
	if err := waitFor(ctx, "containerd socket", n.Containerd, func(context.Context) bool {
		_, err := os.Stat(n.ContainerdSocket)
		return err == nil
	}); err != nil {
		return err
	}
	conn, err := grpc.NewClient("unix://"+n.ContainerdSocket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	n.conn = conn
	n.cri = runtimeapi.NewRuntimeServiceClient(conn)
	n.images = runtimeapi.NewImageServiceClient(conn)
	var last string
	err = waitFor(ctx, "containerd CRI RuntimeReady", n.Containerd, func(ctx context.Context) bool {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		st, err := n.cri.Status(cctx, &runtimeapi.StatusRequest{})
		if err != nil {
			last = err.Error()
			return false
		}
		for _, cond := range st.GetStatus().GetConditions() {
			if cond.Type == runtimeapi.RuntimeReady && !cond.Status {
				last = cond.Reason + ": " + cond.Message
				return false
			}
		}
		return true
	})
	if err != nil {
		return fmt.Errorf("%w (last: %s)", err, last)
	}
	return nil
}

// ImportImage imports a docker-archive tar into containerd's k8s.io
// namespace (the CRI's), unpacked for the native snapshotter, and checks
// the CRI sees it.
func (n *Node) ImportImage(ctx context.Context, tarPath string) error {
	out, err := exec.CommandContext(ctx, n.tools.Ctr, "--address", n.ContainerdSocket, "-n", "k8s.io",
		"images", "import", "--snapshotter", "native", tarPath).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ctr images import %s: %v\n%s", tarPath, err, out)
	}
	return nil
}

// HasImage reports whether the CRI knows the image (as the kubelet asks).
func (n *Node) HasImage(ctx context.Context, ref string) (bool, error) {
	st, err := n.images.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: ref}})
	if err != nil {
		return false, err
	}
	return st.GetImage() != nil, nil
}

func (n *Node) startKubelet(ctx context.Context, c *Cluster, ca *keyPair) error {
	kdir := filepath.Join(n.Dir, "kubelet")
	pki := filepath.Join(kdir, "pki")
	caPath := filepath.Join(c.Dir, "pki", "ca.crt")
	// The node's client certificate: the Node authorizer and NodeRestriction
	// know a node by CN system:node:<name> in group system:nodes.
	client := ca.issue("system:node:"+n.Name, []string{"system:nodes"}, false)
	kubeconfig := filepath.Join(kdir, "kubeconfig")
	if err := writeKubeconfig(kubeconfig, "node", c.Server, ca.CertPEM, client.CertPEM, client.KeyPEM); err != nil {
		return err
	}
	servCrt, servKey, err := ca.issueServing(n.Name, []net.IP{net.ParseIP(n.IP), net.ParseIP("127.0.0.1")}, []string{n.Name}).write(pki, "kubelet")
	if err != nil {
		return err
	}
	healthz, err := FreePort()
	if err != nil {
		return err
	}
	cfg := fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: %s
port: %d
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: %d
tlsCertFile: %s
tlsPrivateKeyFile: %s
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: %s
authorization:
  mode: Webhook
containerRuntimeEndpoint: unix://%s
imageServiceEndpoint: unix://%s
# This machine has cgroup v1, no systemd and no CAP_SYS_RESOURCE.
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupsPerQOS: false
enforceNodeAllocatable: []
localStorageCapacityIsolation: false
failSwapOn: false
clusterDomain: cluster.local
# ClusterFirst pods ask the test bed's DNS (dns.go); dnsPolicy Default pods
# get an empty resolv.conf: nothing outside the namespace resolves.
clusterDNS: [%s]
resolvConf: ""
podLogsDir: %s
volumePluginDir: %s
# Never garbage-collect the imported images (nothing can pull them again).
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: "1Mi"
  nodefs.available: "1%%"
  imagefs.available: "1%%"
  nodefs.inodesFree: "1%%"
serializeImagePulls: false
nodeStatusUpdateFrequency: 5s
syncFrequency: 10s
registerNode: true
rotateCertificates: false
serverTLSBootstrap: false
kubeAPIQPS: 50
kubeAPIBurst: 100
`, n.IP, KubeletPort, healthz, servCrt, servKey, caPath, n.ContainerdSocket, n.ContainerdSocket, BridgeIP,
		filepath.Join(n.Dir, "pod-logs"), filepath.Join(n.Dir, "volume-plugins"))
	cfgPath := filepath.Join(kdir, "config.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return err
	}
	n.Kubelet, err = StartProc(n.Dir, "kubelet", n.bins.Kubelet(),
		"--config", cfgPath,
		"--kubeconfig", kubeconfig,
		"--root-dir", kdir,
		"--cert-dir", pki,
		"--hostname-override", n.Name,
		"--node-ip", n.IP,
		"--v=2",
	)
	if err != nil {
		return err
	}
	return waitFor(ctx, "kubelet /healthz", n.Kubelet, httpOK(httpClient2s, fmt.Sprintf("http://127.0.0.1:%d/healthz", healthz)))
}

func (n *Node) waitReady(ctx context.Context, c *Cluster) error {
	last := "not registered"
	err := waitFor(ctx, "node "+n.Name+" Ready", n.Kubelet, func(ctx context.Context) bool {
		node, err := c.Client.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
		if err != nil {
			return false
		}
		for _, cond := range node.Status.Conditions {
			if cond.Type == corev1.NodeReady {
				last = cond.Reason + ": " + cond.Message
				return cond.Status == corev1.ConditionTrue
			}
		}
		return false
	})
	if err != nil {
		return fmt.Errorf("%w (last Ready condition: %s)", err, last)
	}
	return nil
}

// Processes lists the node's processes that are still alive: containerd,
// the kubelet, and every shim and container process seen in containerd's
// state so far.
func (n *Node) Processes() []NodeProcess {
	n.discover()
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []NodeProcess
	for _, p := range []*Proc{n.Containerd, n.Kubelet} {
		if p != nil {
			if ok, _ := p.Exited(); !ok {
				out = append(out, NodeProcess{PID: p.Cmd.Process.Pid, What: p.Name})
			}
		}
	}
	for pid, id := range n.seen {
		if alive(pid, id.Start) {
			out = append(out, NodeProcess{PID: pid, What: id.What})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].PID < out[j].PID })
	return out
}

// SeenPIDs lists every process of the node ever seen (alive or not):
// containerd, the kubelet, shims and container processes.
func (n *Node) SeenPIDs() []NodeProcess {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []NodeProcess
	for _, p := range []*Proc{n.Containerd, n.Kubelet} {
		if p != nil {
			out = append(out, NodeProcess{PID: p.Cmd.Process.Pid, What: p.Name})
		}
	}
	for pid, id := range n.seen {
		out = append(out, NodeProcess{PID: pid, What: id.What})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].PID < out[j].PID })
	return out
}

// discover records the node's shims and container processes from
// containerd's state: each task's init.pid (…/io.containerd.runtime.v2.task/
// k8s.io/<id>/init.pid, written by runc), and each shim of a task there —
// Debian's runc v2 shim writes no shim.pid, so a shim is found as a child of
// this process (the subreaper InNetns made it: the shims daemonize and are
// re-parented here) started with -address <our socket> -id <a task id>.
func (n *Node) discover() {
	tasks := filepath.Join(n.stateDir, "io.containerd.runtime.v2.task")
	nss, _ := os.ReadDir(tasks)
	ids := map[string]bool{}
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, ns := range nss {
		dirs, _ := os.ReadDir(filepath.Join(tasks, ns.Name()))
		for _, id := range dirs {
			ids[id.Name()] = true
			b, err := os.ReadFile(filepath.Join(tasks, ns.Name(), id.Name(), "init.pid"))
			if err != nil {
				continue
			}
			pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
			if err != nil || pid <= 1 {
				continue
			}
			if _, ok := n.seen[pid]; ok {
				continue
			}
			if st, ok := startTime(pid); ok {
				n.seen[pid] = procID{What: fmt.Sprintf("container %.12s", id.Name()), Start: st}
			}
		}
	}
	procs, _ := os.ReadDir("/proc")
	self := os.Getpid()
	for _, e := range procs {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if _, ok := n.seen[pid]; ok || parentOf(pid) != self {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil {
			continue
		}
		args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
		var addr, id string
		for i := 0; i+1 < len(args); i++ {
			switch args[i] {
			case "-address":
				addr = args[i+1]
			case "-id":
				id = args[i+1]
			}
		}
		if addr != n.ContainerdSocket || !ids[id] {
			continue
		}
		if st, ok := startTime(pid); ok {
			n.seen[pid] = procID{What: fmt.Sprintf("containerd-shim %.12s", id), Start: st}
		}
	}
}

// parentOf is field 4 of /proc/<pid>/stat (0 when unknown).
func parentOf(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 2 {
		return 0
	}
	pp, _ := strconv.Atoi(f[1])
	return pp
}

// startTime is field 22 of /proc/<pid>/stat; ok is false when the process
// is gone or a zombie.
func startTime(pid int) (uint64, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3 (state); field 22 is f[19].
	if len(f) < 20 || f[0] == "Z" || f[0] == "X" {
		return 0, false
	}
	st, err := strconv.ParseUint(f[19], 10, 64)
	return st, err == nil
}

// alive reports whether pid is still the process that started at start.
func alive(pid int, start uint64) bool {
	st, ok := startTime(pid)
	return ok && st == start
}

// Stop removes every pod through the CRI (containers, sandboxes, their
// network), waits for the shims and container processes to exit (SIGKILL
// by PID after a grace), reaps the shims this process adopted, stops the
// kubelet and containerd, and unmounts what they mounted under Dir.
func (n *Node) Stop() {
	n.mu.Lock()
	if n.stopped {
		n.mu.Unlock()
		return
	}
	n.stopped = true
	n.mu.Unlock()
	if n.watchStop != nil {
		close(n.watchStop)
		<-n.watchDone
	}
	n.discover()
	// The kubelet first, or it would start the pods again.
	if n.Kubelet != nil {
		n.Kubelet.Stop()
	}
	if n.cri != nil && n.Containerd != nil {
		if ok, _ := n.Containerd.Exited(); !ok {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			if err := n.RemoveAllPods(ctx); err != nil {
				n.logf("test bed: node: removing pods through the CRI: %v", err)
			}
			cancel()
		}
	}
	n.discover()
	n.waitGone(15 * time.Second)
	if n.conn != nil {
		n.conn.Close()
	}
	if n.Containerd != nil {
		n.Containerd.Stop()
	}
	n.waitGone(5 * time.Second)
	if n.DNS != nil {
		n.DNS.Close()
	}
	unmountUnder(n.Dir)
}

// RemoveAllPods stops and removes every pod sandbox (and any container
// left outside one) through containerd's CRI, as the kubelet would.
func (n *Node) RemoveAllPods(ctx context.Context) error {
	var errs []string
	sbs, err := n.cri.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		return err
	}
	for _, sb := range sbs.GetItems() {
		if _, err := n.cri.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: sb.Id}); err != nil {
			errs = append(errs, fmt.Sprintf("stop sandbox %s: %v", sb.Id, err))
		}
		if _, err := n.cri.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: sb.Id}); err != nil {
			errs = append(errs, fmt.Sprintf("remove sandbox %s: %v", sb.Id, err))
		}
	}
	cs, err := n.cri.ListContainers(ctx, &runtimeapi.ListContainersRequest{})
	if err != nil {
		return err
	}
	for _, ct := range cs.GetContainers() {
		n.cri.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: ct.Id})
		if _, err := n.cri.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: ct.Id}); err != nil {
			errs = append(errs, fmt.Sprintf("remove container %s: %v", ct.Id, err))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return nil
}

// waitGone waits for the seen shims and container processes to exit,
// reaping the shims this process adopted as subreaper, and kills the ones
// left after grace by PID (checked against their start time).
func (n *Node) waitGone(grace time.Duration) {
	deadline := time.Now().Add(grace)
	for {
		n.reap()
		left := 0
		n.mu.Lock()
		for pid, id := range n.seen {
			if alive(pid, id.Start) {
				left++
				if time.Now().After(deadline) {
					n.logf("test bed: node: %s (pid %d) still running after %v: SIGKILL", id.What, pid, grace)
					_ = syscall.Kill(pid, syscall.SIGKILL)
				}
			}
		}
		n.mu.Unlock()
		if left == 0 {
			return
		}
		if time.Now().After(deadline.Add(5 * time.Second)) {
			n.logf("test bed: node: %d processes would not die", left)
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// reap collects the exit status of the seen shims that became this
// process's children (re-parented to it as subreaper) and have exited: only
// a zombie with the recorded start time, so a reused PID is never touched.
func (n *Node) reap() {
	n.mu.Lock()
	defer n.mu.Unlock()
	for pid, id := range n.seen {
		if zombie(pid, id.Start) {
			var ws syscall.WaitStatus
			_, _ = syscall.Wait4(pid, &ws, syscall.WNOHANG, nil)
		}
	}
}

// zombie reports whether pid is the process that started at start, exited
// and not yet reaped.
func zombie(pid int, start uint64) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return false
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 || f[0] != "Z" {
		return false
	}
	st, err := strconv.ParseUint(f[19], 10, 64)
	return err == nil && st == start
}

// watch records new shims and container processes and reaps exited shims
// while the node runs.
func (n *Node) watch() {
	n.watchStop = make(chan struct{})
	n.watchDone = make(chan struct{})
	go func() {
		defer close(n.watchDone)
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-n.watchStop:
				return
			case <-t.C:
				n.discover()
				n.reap()
			}
		}
	}()
}

// unmountUnder detaches every mount below dir, deepest first.
func unmountUnder(dir string) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return
	}
	defer f.Close()
	var mps []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) > 4 {
			mp := unescapeMount(fs[4])
			if mp == dir || strings.HasPrefix(mp, dir+"/") {
				mps = append(mps, mp)
			}
		}
	}
	sort.Slice(mps, func(i, j int) bool { return len(mps[i]) > len(mps[j]) })
	for _, mp := range mps {
		_ = syscall.Unmount(mp, syscall.MNT_DETACH)
	}
}

func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// Procs is the node's own processes (for DumpLogs).
func (n *Node) Procs() []*Proc {
	var out []*Proc
	for _, p := range []*Proc{n.Containerd, n.Kubelet} {
		if p != nil {
			out = append(out, p)
		}
	}
	return out
}

var httpClient2s = &http.Client{Timeout: 2 * time.Second}
