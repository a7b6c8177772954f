package testbed_test

import (
	"context"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/utils/ptr"

	"github.com/spirepod/spirepod/internal/testbed"
)

// restricted is what Pod Security "restricted" asks of every container.
func restricted() *corev1.SecurityContext {
	return &corev1.SecurityContext{
		RunAsNonRoot:             ptr.To(true),
		AllowPrivilegeEscalation: ptr.To(false),
		Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
		SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
	}
}

// waitPodReady watches ns/name until every container is Ready; it fails on
// a container that terminated or a pod that failed.
func waitPodReady(ctx context.Context, t *testing.T, c *testbed.Cluster, ns, name string) *corev1.Pod {
	t.Helper()
	w, err := c.Client.CoreV1().Pods(ns).Watch(ctx, metav1.ListOptions{FieldSelector: "metadata.name=" + name})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	var last *corev1.Pod
	for ev := range w.ResultChan() {
		p, ok := ev.Object.(*corev1.Pod)
		if !ok || ev.Type == watch.Deleted {
			continue
		}
		last = p
		if p.Status.Phase == corev1.PodFailed {
			t.Fatalf("pod %s/%s failed: %+v", ns, name, p.Status)
		}
		for _, cs := range p.Status.ContainerStatuses {
			if cs.State.Terminated != nil {
				t.Fatalf("pod %s/%s: container %s terminated: %+v", ns, name, cs.Name, cs.State.Terminated)
			}
		}
		for _, cond := range p.Status.Conditions {
			if cond.Type == corev1.PodReady && cond.Status == corev1.ConditionTrue && p.Status.Phase == corev1.PodRunning {
				return p
			}
		}
	}
	if last != nil {
		t.Fatalf("pod %s/%s not Ready: %v; last status: %+v", ns, name, ctx.Err(), last.Status)
	}
	t.Fatalf("pod %s/%s not Ready: %v", ns, name, ctx.Err())
	return nil
}

func podLog(ctx context.Context, t *testing.T, c *testbed.Cluster, ns, pod, container string) string {
	t.Helper()
	rc, err := c.Client.CoreV1().Pods(ns).GetLogs(pod, &corev1.PodLogOptions{Container: container}).Stream(ctx)
	if err != nil {
		t.Fatalf("logs of %s/%s -c %s through apiserver → kubelet: %v", ns, pod, container, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// waitLog polls the container's log through the apiserver until it holds want.
func waitLog(ctx context.Context, t *testing.T, c *testbed.Cluster, ns, pod, container, want string) string {
	t.Helper()
	for {
		got := podLog(ctx, t, c, ns, pod, container)
		if strings.Contains(got, want) {
			return got
		}
		select {
		case <-ctx.Done():
			t.Fatalf("log of %s/%s -c %s never held %q:\n%s", ns, pod, container, want, got)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// createRestrictedNamespace makes a namespace enforcing Pod Security
// "restricted", and lets its default ServiceAccount read its pods.
func createRestrictedNamespace(ctx context.Context, t *testing.T, c *testbed.Cluster, ns string) {
	t.Helper()
	if err := c.CreateNamespace(ctx, ns); err != nil {
		t.Fatal(err)
	}
	nsObj, err := c.Client.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	nsObj.Labels["pod-security.kubernetes.io/enforce"] = "restricted"
	nsObj.Labels["pod-security.kubernetes.io/enforce-version"] = "latest"
	if _, err := c.Client.CoreV1().Namespaces().Update(ctx, nsObj, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	role := &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Name: "pod-reader", Namespace: ns},
		Rules:      []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get", "list"}}},
	}
	if _, err := c.Client.RbacV1().Roles(ns).Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	rb := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "pod-reader", Namespace: ns},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "pod-reader"},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: "default", Namespace: ns}},
	}
	if _, err := c.Client.RbacV1().RoleBindings(ns).Create(ctx, rb, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// smokePod is a restricted, non-root pod of the local images: kubectl (in
// the gen-cert image) calls the apiserver in-cluster with the pod's token
// and writes to an emptyDir; the curl image's shell reads it and shows it
// shares the pod's process namespace (PID 1 is the sandbox's pause).
func smokePod(ns, name string, im testbed.Images) *corev1.Pod {
	mounts := []corev1.VolumeMount{{Name: "shared", MountPath: "/shared"}}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: corev1.PodSpec{
			ShareProcessNamespace:         ptr.To(true),
			TerminationGracePeriodSeconds: ptr.To[int64](2),
			SecurityContext: &corev1.PodSecurityContext{
				RunAsNonRoot:   ptr.To(true),
				SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
			},
			Containers: []corev1.Container{
				{
					Name: "kubectl", Image: im.GenCert, ImagePullPolicy: corev1.PullNever,
					Command: []string{"/bin/sh", "-c", `set -e
kubectl get pod "$POD_NAME" -o jsonpath='in-cluster kubectl sees pod {.metadata.name} on {.spec.nodeName}{"\n"}'
echo "uid=$(id -u)"
echo "hello from $POD_NAME" > /shared/msg.tmp && mv /shared/msg.tmp /shared/msg
exec sleep 86400`},
					Env: []corev1.EnvVar{{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}}},
					ReadinessProbe: &corev1.Probe{
						ProbeHandler:  corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"test", "-s", "/shared/msg"}}},
						PeriodSeconds: 1,
					},
					VolumeMounts:    mounts,
					SecurityContext: restricted(),
				},
				{
					Name: "reader", Image: im.Curl, ImagePullPolicy: corev1.PullIfNotPresent,
					Command: []string{"/bin/sh", "-c", `until [ -s /shared/msg ]; do sleep 0.2; done
echo "read: $(cat /shared/msg)"
echo "pid1: $(tr '\0' ' ' < /proc/1/cmdline)"
echo "uid=$(id -u)"
echo "apiserver healthz by name: $(curl -sk --max-time 5 https://kubernetes.default.svc.cluster.local/healthz)"
curl --version | head -1
exec sleep 86400`},
					VolumeMounts:    mounts,
					SecurityContext: restricted(),
				},
			},
			Volumes: []corev1.Volume{{Name: "shared", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}},
		},
	}
}

// TestRealPodSmoke: a restricted, non-root pod with a shared process
// namespace and an emptyDir runs on the real node through the real
// apiserver, scheduler and kubelet; in-cluster kubectl works from it with
// its service-account token (through the kubernetes Service IP); its logs
// come through the apiserver → kubelet path; kubectl exec works; and once
// it is deleted every container and shim of it is gone.
func TestRealPodSmoke(t *testing.T) {
	t.Parallel()
	b, _ := testbed.RequireRealNode(t)
	if !testbed.InNetns(t) {
		return
	}
	t0 := time.Now()
	c := testbed.StartCluster(t, b, testbed.Options{RealNode: true, NoCertManager: true})
	t.Logf("test bed with a real node up in %v", time.Since(t0).Round(time.Millisecond))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	n := c.Node
	if n == nil || n.Name != testbed.RealNodeName {
		t.Fatalf("no real node: %+v", n)
	}
	node, err := c.Client.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := node.Status.DaemonEndpoints.KubeletEndpoint.Port; got != testbed.KubeletPort {
		t.Errorf("kubelet endpoint port %d, want %d", got, testbed.KubeletPort)
	}
	for _, ref := range n.Images.All() {
		if ok, err := n.HasImage(ctx, ref); err != nil || !ok {
			t.Fatalf("image %s not in containerd's CRI: %v", ref, err)
		}
	}

	ns := "realpod-smoke"
	createRestrictedNamespace(ctx, t, c, ns)

	// Pod Security admission refuses a root container here: the namespace
	// label is live (so a pod that passes is really restricted).
	bad := smokePod(ns, "root", n.Images)
	bad.Spec.Containers[0].SecurityContext.Capabilities = nil
	if _, err := c.Client.CoreV1().Pods(ns).Create(ctx, bad, metav1.CreateOptions{}); err == nil || !apierrors.IsForbidden(err) {
		t.Fatalf("a pod without capabilities.drop=[ALL] was not refused by Pod Security restricted: %v", err)
	}

	t1 := time.Now()
	if _, err := c.Client.CoreV1().Pods(ns).Create(ctx, smokePod(ns, "smoke", n.Images), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pod := waitPodReady(ctx, t, c, ns, "smoke")
	t.Logf("pod Running and Ready in %v (IP %s on %s)", time.Since(t1).Round(time.Millisecond), pod.Status.PodIP, pod.Spec.NodeName)
	if pod.Spec.NodeName != n.Name {
		t.Fatalf("pod scheduled to %q, want the real node %q", pod.Spec.NodeName, n.Name)
	}
	if !strings.HasPrefix(pod.Status.PodIP, "10.88.") {
		t.Errorf("pod IP %q is not from the bridge network %s", pod.Status.PodIP, testbed.PodSubnet)
	}

	// Logs through apiserver → kubelet → the CRI's log files.
	kl := waitLog(ctx, t, c, ns, "smoke", "kubectl", "uid=1001")
	if !strings.Contains(kl, "in-cluster kubectl sees pod smoke on "+n.Name) {
		t.Errorf("in-cluster kubectl did not get its own pod:\n%s", kl)
	}
	rl := waitLog(ctx, t, c, ns, "smoke", "reader", "curl ")
	for _, want := range []string{"read: hello from smoke", "pid1: /pause", "uid=100", "apiserver healthz by name: ok"} {
		if !strings.Contains(rl, want) {
			t.Errorf("reader log lacks %q:\n%s", want, rl)
		}
	}

	// exec through apiserver → kubelet → CRI streaming.
	out, err := c.Kubectl(ctx, "exec", "-n", ns, "smoke", "-c", "reader", "--", "cat", "/shared/msg")
	if err != nil || strings.TrimSpace(out) != "hello from smoke" {
		t.Errorf("kubectl exec: %v: %q", err, out)
	}

	// The pod's processes exist now; after deletion none may be left.
	procs := n.Processes()
	var pod2 []testbed.NodeProcess
	for _, p := range procs {
		if p.What != "containerd" && p.What != "kubelet" {
			pod2 = append(pod2, p)
		}
	}
	if len(pod2) < 4 { // a shim, pause, two containers
		t.Fatalf("only %d shim/container processes seen for a running pod: %+v", len(pod2), procs)
	}
	t.Logf("running pod's processes: %+v", pod2)
	t2 := time.Now()
	if err := c.Client.CoreV1().Pods(ns).Delete(ctx, "smoke", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	w, err := c.Client.CoreV1().Pods(ns).Watch(ctx, metav1.ListOptions{FieldSelector: "metadata.name=smoke"})
	if err != nil {
		t.Fatal(err)
	}
	for ev := range w.ResultChan() {
		if ev.Type == watch.Deleted {
			break
		}
	}
	w.Stop()
	if ctx.Err() != nil {
		t.Fatalf("pod never deleted: %v", ctx.Err())
	}
	t.Logf("pod deleted in %v", time.Since(t2).Round(time.Millisecond))
	waitGone(ctx, t, pod2)
	t.Logf("all %d shim/container processes of the pod gone %v after the delete", len(pod2), time.Since(t2).Round(time.Millisecond))
}

// waitGone polls until none of the processes is alive.
func waitGone(ctx context.Context, t *testing.T, procs []testbed.NodeProcess) {
	t.Helper()
	for {
		var left []testbed.NodeProcess
		for _, p := range procs {
			if processAlive(p.PID) {
				left = append(left, p)
			}
		}
		if len(left) == 0 {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("still running: %+v", left)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// processAlive: /proc/<pid> exists and is not a zombie.
func processAlive(pid int) bool {
	b, err := os.ReadFile("/proc/" + itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i > 0 && len(s) > i+2 && s[i+2] != 'Z' && s[i+2] != 'X'
}

func itoa(i int) string {
	if i == 0 {
		return "0"
	}
	var b []byte
	for ; i > 0; i /= 10 {
		b = append([]byte{byte('0' + i%10)}, b...)
	}
	return string(b)
}

// TestRealPodNothingLeft: with a pod running, stopping the test bed leaves
// no process it started (control plane, containerd, kubelet, shims,
// containers), no pod network interface and no mount under its directory.
func TestRealPodNothingLeft(t *testing.T) {
	t.Parallel()
	b, h := testbed.RequireRealNode(t)
	if !testbed.InNetns(t) {
		return
	}
	c := testbed.StartCluster(t, b, testbed.Options{RealNode: true, NoCertManager: true})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	ns := "nothing-left"
	createRestrictedNamespace(ctx, t, c, ns)
	if _, err := c.Client.CoreV1().Pods(ns).Create(ctx, smokePod(ns, "p", c.Node.Images), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitPodReady(ctx, t, c, ns, "p")

	var all []testbed.NodeProcess
	for _, p := range []*testbed.Proc{c.Etcd, c.APIServer, c.ControllerManager, c.Scheduler} {
		all = append(all, testbed.NodeProcess{PID: p.Cmd.Process.Pid, What: p.Name})
	}
	all = append(all, c.Node.Processes()...)
	if len(all) < 4+2+4 {
		t.Fatalf("expected the control plane, containerd, kubelet, a shim and 3 container processes: %+v", all)
	}
	if out, _ := exec.Command(h.IP, "-o", "link", "show", "type", "veth").CombinedOutput(); !strings.Contains(string(out), "veth") {
		t.Fatalf("no pod veth while the pod runs: %s", out)
	}
	t.Logf("processes before stop: %+v", all)

	c.Stop()
	for _, p := range all {
		if processAlive(p.PID) {
			t.Errorf("%s (pid %d) still running after Stop", p.What, p.PID)
		}
	}
	for _, p := range c.Node.SeenPIDs() {
		if processAlive(p.PID) {
			t.Errorf("%s (pid %d) still running after Stop", p.What, p.PID)
		}
	}
	if out, _ := exec.Command(h.IP, "-o", "link", "show", "type", "veth").CombinedOutput(); strings.TrimSpace(string(out)) != "" {
		t.Errorf("pod network interfaces left after Stop:\n%s", out)
	}
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(mi), "\n") {
		if strings.Contains(line, c.Dir) {
			t.Errorf("mount left under %s: %s", c.Dir, line)
		}
	}
}
