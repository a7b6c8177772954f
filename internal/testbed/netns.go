package testbed

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The pod network inside the test's own network namespace. None of these
// addresses exists outside it: the namespace has no interface but its
// loopback, the bridge and the pods' veths, so pods reach only what runs in
// it.
const (
	// BridgeName is the Linux bridge the CNI bridge plugin attaches pods to.
	BridgeName = "cni0"
	// BridgeIP is the bridge's address: the pods' gateway, the node's
	// InternalIP and where the apiserver listens (pods reach it here).
	BridgeIP = "10.88.0.1"
	// PodSubnet is what host-local hands out to pods.
	PodSubnet = "10.88.0.0/16"
	// ServiceCIDR is the apiserver's --service-cluster-ip-range.
	ServiceCIDR = "10.0.0.0/24"
	// KubernetesServiceIP is the ClusterIP of default/kubernetes (the first
	// address of ServiceCIDR): one iptables DNAT rule sends it to the
	// apiserver, as kube-proxy would.
	KubernetesServiceIP = "10.0.0.1"
)

// netnsEnv tells the re-executed test binary it runs in the namespace
// InNetns made; its value is the parent's network namespace, so the child
// can check that it really is in another one before touching the network.
const netnsEnv = "SPIREPOD_TESTBED_NETNS"

// InNetns runs the calling test inside a network namespace (and a private
// mount namespace and a PID namespace) of its own, made with `unshare --net
// --mount --pid`: the test binary re-executes itself there with -test.run
// naming only this test.
//
// In the parent it returns false once the child has finished, having
// streamed the child's output into the test log and passed on its result
// (fail, skip or pass): the caller returns at once. In the child it sets up
// loopback and the pod bridge (BridgeIP) and returns true: the caller goes
// on and starts the test bed there (StartCluster with Options.RealNode).
//
//	b, _ := testbed.RequireRealNode(t)
//	if !testbed.InNetns(t) {
//		return
//	}
//	c := testbed.StartCluster(t, b, testbed.Options{RealNode: true})
//
// When the child exits the namespaces go with it: the bridge, the veths,
// the iptables rule, every mount the kubelet and containerd made, and any
// process still running in it.
func InNetns(t *testing.T) bool {
	t.Helper()
	if parent := os.Getenv(netnsEnv); parent != "" {
		own, err := netnsID()
		if err != nil {
			t.Fatalf("netns: %v", err)
		}
		pnet, pmnt, _ := strings.Cut(parent, "|")
		onet, omnt, _ := strings.Cut(own, "|")
		if onet == pnet || omnt == pmnt {
			t.Fatalf("netns: %s=%s but this process is in %s: still in the parent's network or mount namespace, refusing to configure it", netnsEnv, parent, own)
		}
		if err := setupNetns(); err != nil {
			t.Fatalf("netns: %v", err)
		}
		return true
	}
	runInNetns(t)
	return false
}

// inNetns reports whether this process is a child InNetns started.
func inNetns() bool { return os.Getenv(netnsEnv) != "" }

// netnsID names this process's network and mount namespaces.
func netnsID() (string, error) {
	n, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		return "", err
	}
	m, err := os.Readlink("/proc/self/ns/mnt")
	if err != nil {
		return "", err
	}
	return n + "|" + m, nil
}

// runInNetns re-executes the test binary in new network and mount
// namespaces and reports the child's result as the test's.
func runInNetns(t *testing.T) {
	t.Helper()
	_, h := RequireRealNode(t)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	own, err := netnsID()
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(t.Name(), "/")
	for i, p := range parts {
		parts[i] = "^" + regexp.QuoteMeta(p) + "$"
	}
	// --pid with --kill-child: the child is PID 1 of a PID namespace of its
	// own, so when it ends for any reason (a panic, a timeout, SIGKILL) the
	// kernel kills every process left in it — containers and shims too;
	// and when unshare dies (this process went), the child gets SIGTERM and
	// stops what it started. --mount-proc shows that namespace's /proc.
	args := []string{"--net", "--mount", "--propagation", "private", "--pid", "--kill-child=SIGTERM", "--mount-proc", "--", self,
		"-test.run=" + strings.Join(parts, "/"), "-test.v=true", "-test.count=1"}
	// The child runs the test's parallel subtests as the parent would.
	if f := flag.Lookup("test.parallel"); f != nil {
		args = append(args, "-test.parallel="+f.Value.String())
	}
	if dl, ok := t.Deadline(); ok {
		// Leave the parent time to report the child's own timeout panic.
		if left := time.Until(dl) - 30*time.Second; left > 0 {
			args = append(args, "-test.timeout="+left.Round(time.Second).String())
		}
	}
	cmd := exec.Command(h.Unshare, args...)
	cmd.Env = append(os.Environ(), netnsEnv+"="+own)
	// The child dies with this process; on SIGTERM it stops what it started.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	var out strings.Builder
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			out.WriteString(line + "\n")
			t.Log("netns| " + line)
		}
		io.Copy(io.Discard, pr)
	}()
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatalf("netns: start %s: %v", h.Unshare, err)
	}
	t.Logf("netns: running %s in a new network and mount namespace (pid %d)", t.Name(), cmd.Process.Pid)
	runErr := cmd.Wait()
	pw.Close()
	wg.Wait()
	text := out.String()
	name := regexp.QuoteMeta(t.Name())
	switch {
	case runErr == nil && regexp.MustCompile(`(?m)^--- PASS: `+name+` `).MatchString(text):
		t.Logf("netns: child passed in %v", time.Since(t0).Round(time.Millisecond))
	case regexp.MustCompile(`(?m)^--- SKIP: ` + name + ` `).MatchString(text):
		t.Skipf("netns: the child skipped (see its log above)")
	case runErr == nil:
		t.Fatalf("netns: the child exited 0 without running %s (output above)", t.Name())
	default:
		t.Fatalf("netns: the child failed: %v (output above)", runErr)
	}
}

var netnsOnce struct {
	sync.Once
	err error
}

// setupNetns brings up loopback and the pod bridge with BridgeIP, and turns
// on forwarding, in the namespace this process runs in (once per process).
func setupNetns() error {
	netnsOnce.Do(func() {
		h, missing := FindHostTools()
		if h.IP == "" {
			netnsOnce.err = fmt.Errorf("no ip tool: %v", missing)
			return
		}
		ip := func(args ...string) error {
			out, err := exec.Command(h.IP, args...).CombinedOutput()
			if err != nil {
				return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, out)
			}
			return nil
		}
		steps := [][]string{
			{"link", "set", "lo", "up"},
			{"link", "add", BridgeName, "type", "bridge"},
			{"addr", "add", BridgeIP + "/16", "dev", BridgeName},
			{"link", "set", BridgeName, "up"},
		}
		for _, s := range steps {
			if err := ip(s...); err != nil {
				netnsOnce.err = err
				return
			}
		}
		// Per network namespace: pods' packets to the service IP are routed
		// (DNAT) through the namespace's own stack.
		if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644); err != nil {
			netnsOnce.err = fmt.Errorf("ip_forward: %w", err)
			return
		}
		// In this private mount namespace only: empty tmpfs over the
		// host paths containerd, its shims, CNI and the kubelet write to
		// whatever their config says (shim sockets in /run/containerd/s,
		// libcni's result cache in /var/lib/cni, the kubelet's log symlinks
		// in /var/log/containers), so nothing lands on the host and the
		// system containerd (if any) is out of sight.
		for _, d := range []string{"/run/containerd", "/var/lib/cni", "/var/log/containers"} {
			if err := os.MkdirAll(d, 0o755); err != nil {
				netnsOnce.err = err
				return
			}
			if err := syscall.Mount("tmpfs", d, "tmpfs", 0, "mode=0755"); err != nil {
				netnsOnce.err = fmt.Errorf("mount tmpfs on %s: %w", d, err)
				return
			}
		}
		// The shims daemonize: as subreaper this process adopts them (and
		// Node.Stop reaps them by PID) instead of the machine's init.
		if err := prctlSubreaper(); err != nil {
			netnsOnce.err = err
			return
		}
		// The bridge has no port yet, so it is NO-CARRIER: the address is
		// still usable locally, and binds to it work at once.
		netnsOnce.err = waitAddr(BridgeIP)
	})
	return netnsOnce.err
}

// waitAddr waits until ip is bindable (the kernel assigned it).
func waitAddr(ip string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return waitFor(ctx, "address "+ip, nil, func(context.Context) bool {
		l, err := listenTCP(ip + ":0")
		if err != nil {
			return false
		}
		l.Close()
		return true
	})
}

// addServiceDNAT adds the one nat rule that stands in for kube-proxy: the
// kubernetes Service's ClusterIP:443 goes to the apiserver on the bridge.
func addServiceDNAT(apiPort int) error {
	if !inNetns() {
		return fmt.Errorf("refusing to add an iptables rule outside the test's network namespace")
	}
	h, _ := FindHostTools()
	args := []string{"-w", "-t", "nat", "-A", "PREROUTING", "-d", KubernetesServiceIP + "/32", "-p", "tcp", "--dport", "443",
		"-j", "DNAT", "--to-destination", fmt.Sprintf("%s:%d", BridgeIP, apiPort)}
	out, err := exec.Command(h.Iptables, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("iptables %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

// cniConfig is the bridge network containerd's CRI plugin sets pods up with:
// host-local addresses from PodSubnet, the default route via the bridge, its
// allocation state in dir (not /var/lib/cni).
func cniConfig(dir string) string {
	return fmt.Sprintf(`{
  "cniVersion": "1.0.0",
  "name": "spirepod-testbed",
  "plugins": [
    {
      "type": "bridge",
      "bridge": %q,
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": %q, "gateway": %q}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": %q
      }
    }
  ]
}
`, BridgeName, PodSubnet, BridgeIP, filepath.Join(dir, "ipam"))
}

const prSetChildSubreaper = 36 // PR_SET_CHILD_SUBREAPER

func prctlSubreaper() error {
	if _, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, prSetChildSubreaper, 1, 0); errno != 0 {
		return fmt.Errorf("prctl(PR_SET_CHILD_SUBREAPER): %w", errno)
	}
	return nil
}
