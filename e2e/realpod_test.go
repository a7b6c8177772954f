package e2e_test

// The end-to-end proof on the REAL node (issue 17): the default scaffold's
// StatefulSet runs in real containers (containerd + runc + a real kubelet
// registered with the test bed's apiserver), under Pod Security
// "restricted". Everything in the pod is the real thing except Envoy, which
// cannot be had here: its container runs the Envoy STAND-IN
// (internal/testbed/standin/envoy), a small Go program that reads the
// scaffold's own Envoy bootstrap and gets its SVID over the agent's SDS with
// the bootstrap's exact resource names (see internal/testbed/REALNODE.md).
//
// The scaffold is pointed at the local images and at the SPIRE server and
// upstream the test runs only through the project's own settings: a user
// config profile (images, spireServer) and init's --upstream-* flags.
// Nothing in the rendered manifests is edited to make it run; the breaks
// below edit a manifest on purpose, the way a user's mistake would.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/spirepod/spirepod/internal/fakes/githubfake"
	"github.com/spirepod/spirepod/internal/pki"
	"github.com/spirepod/spirepod/internal/project"
	"github.com/spirepod/spirepod/internal/testbed"
	"github.com/spirepod/spirepod/internal/verify"
)

// Names the test's cluster DNS answers (both on the bridge, where the test
// runs the SPIRE server's relay and the upstream echo).
const (
	realSpireServerHost = "spire-server.realnode.test"
	realUpstreamHost    = "httpbin.realnode.test"
)

// realPod is one team onboarded onto the real node.
type realPod struct {
	*chain
	dir    string
	p      *project.Project
	kube   []string
	srv    *testbed.SpireServer
	echoID string
	// initArgs are the first `spirepod init`'s arguments (without the directory).
	initArgs []string
	tm       *timings
	// applied: when the first `apply --wait` started and returned.
	applied [2]time.Time
}

// TestRealPodEndToEnd is issue 17's proof with the default scaffold at two
// replicas (--replicas 2; each pod with its own agent identity): init → pki gen → pr trust-ca
// and pr spiffe-id merged in the fake city repo → a real SPIRE server from
// the merged trust list and spiffe-ids.json → bundle set → apply --wait on
// the real node. gen-cert's real script gets each pod's certificate from
// real cert-manager, the real spire-agent (non-root) attests with x509pop,
// the Envoy stand-in gets its SVID over SDS (unix attestor through
// shareProcessNamespace), and real curl's log, read by `spirepod verify`
// through apiserver → kubelet, shows the XFCC line. Then one pod is deleted:
// the StatefulSet recreates it, gen-cert runs again, and it verifies.
func TestRealPodEndToEnd(t *testing.T) {
	t.Parallel()
	b, _ := testbed.RequireRealNode(t)
	// Built once here, in the parent: the child InNetns starts reuses it.
	buildCLI(t)
	// A bed of its own, not the package's: the real node (containerd, a
	// kubelet, the pod bridge) lives in this test's network namespace.
	if !testbed.InNetns(t) {
		return
	}
	r := onboardRealPod(t, b, nil, 2)
	pods := r.p.PodNames()
	wantID := r.p.WorkloadSpiffeID()

	var firstXFCC string
	r.step("curl-log-xfcc", func() {
		for _, pod := range pods {
			firstXFCC = r.waitLogLine(pod, "curl", "URI="+wantID)
		}
		if !strings.Contains(firstXFCC, "By="+r.echoID) {
			r.t.Fatalf("the XFCC line is not the upstream's (By=%s): %s", r.echoID, firstXFCC)
		}
		r.t.Logf("curl's log: %s", strings.TrimSpace(firstXFCC))
	})
	r.step("verify+status", func() {
		// verify reads curl's log through apiserver → the real kubelet;
		// status then shows every step of the guide done.
		r.checkVerified(r.verify(0, "--timeout", "2m"), pods, wantID)
		r.checkStatus()
	})
	r.step("gen-cert+attestation", func() {
		for _, pod := range pods {
			r.waitLogLine(pod, "gen-cert", "gen-cert: wrote /run/spire/agent-certs/agent.crt.pem for "+r.p.CertificateName(pod))
			// Each pod's agent attested with x509pop using the certificate
			// cert-manager issued for it (SPIRE's default agent ID is the
			// leaf's SHA-1), and its node alias applies to that agent.
			r.checkAgentAttested(pod)
		}
	})

	// Delete one pod: the StatefulSet recreates it, its gen-cert runs again
	// (and copies the same Certificate's Secret), the new agent attests, and
	// the new pod verifies.
	pod := pods[len(pods)-1]
	r.step("delete-pod", func() {
		other := r.getPod(pods[0])
		old := r.getPod(pod)
		r.deletePod(pod)
		np := r.waitNewPodRunning(pod, old.UID)
		r.waitLogLine(pod, "gen-cert", "gen-cert: wrote /run/spire/agent-certs/agent.crt.pem for "+r.p.CertificateName(pod))
		v := r.verify(0, "--pod", pod, "--timeout", "2m")
		r.checkVerified(v, []string{pod}, wantID)
		r.checkPodRuns(pod)
		r.checkAgentAttested(pod)
		if cur := r.getPod(pod); cur.UID != np.UID {
			r.t.Fatalf("pod %s was replaced again while verifying", pod)
		}
		// The other pod kept running all along: the same pod, no restart.
		if now := r.getPod(pods[0]); now.UID != other.UID || now.Status.Phase != corev1.PodRunning || totalRestarts(now) != totalRestarts(other) {
			r.t.Fatalf("pod %s was disturbed: uid %s→%s, %s, restarts %d→%d", pods[0], other.UID, now.UID, now.Status.Phase, totalRestarts(other), totalRestarts(now))
		}
	})
	t.Logf("REALPOD TIMINGS: %s", r.tm)
}

// startRealNode starts a test bed with a real node (call it inside the
// test's network namespace: testbed.InNetns) and makes its cluster DNS
// answer the names the teams' pods use for the SPIRE server and the
// upstream: the bridge, where each team's relay and echo listen on ports of
// their own.
func startRealNode(t *testing.T, b testbed.Bins) *testbed.Cluster {
	t.Helper()
	cl := testbed.StartCluster(t, b, testbed.Options{RealNode: true})
	for _, name := range []string{realSpireServerHost, realUpstreamHost} {
		if err := cl.Node.DNS.Add(name, cl.PodReachableAddr); err != nil {
			t.Fatal(err)
		}
	}
	return cl
}

// onboardRealPod takes one team, with the default scaffold and `replicas`
// pods, from `spirepod init` to a successful `spirepod apply --wait` on the
// real node of cl (nil: a test bed of its own, started here). Teams sharing
// a node have their own namespace, fake GitHub, SPIRE server and upstream,
// as teams of one city do.
func onboardRealPod(t *testing.T, b testbed.Bins, cl *testbed.Cluster, replicas int) *realPod {
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	t.Cleanup(cancel)
	c := &chain{t: t, ctx: ctx, bins: b, home: t.TempDir()}
	r := &realPod{chain: c, tm: &timings{}}

	r.step("setup", func() {
		c.cli = buildCLI(t)
		root, err := os.MkdirTemp("", "sprealpod-")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(root) })
		c.root = root
		if cl == nil {
			cl = startRealNode(t, b)
		}
		c.cluster = cl
		c.gh = githubfake.New("alice", ghToken)
		t.Cleanup(c.gh.Close)
		if _, err := c.gh.AddRepo(cityRepo, true, "main", map[string]string{"README.md": "city\n"}); err != nil {
			t.Fatal(err)
		}
	})

	a := c.realNodeProfile(t, cl)
	serverPort, echoPort, im := a.serverPort, a.echoPort, cl.Node.Images
	r.echoID = a.echoID

	team, ns := "t"+randHex(t, 3), "rp-"+randHex(t, 3)
	r.dir = filepath.Join(c.root, team)
	var teamCA *x509Cert
	upCert, upKey := c.upstreamCA()
	r.step("init+pki", func() {
		args := []string{"init", "--team", team, "--namespace", ns,
			"--upstream-host", realUpstreamHost, "--upstream-port", fmt.Sprint(echoPort), "--upstream-id", r.echoID}
		if replicas != 1 {
			args = append(args, "--replicas", fmt.Sprint(replicas))
		}
		r.initArgs = args
		c.run(c.root, append(args, r.dir)...)
		c.run(r.dir, "pki", "gen")
		c.run(r.dir, "bundle", "set", upCert)
		r.p = loadProject(t, r.dir)
		teamCA = readCert(t, r.p.Path(r.p.Paths.CACert))
	})
	p := r.p
	// The defaults the proof is about.
	if p.Naming != project.NamingNamespaced || p.IssuerScope != project.IssuerNamespaced || p.Registration.Format != project.FormatEntryJSON {
		t.Fatalf("init's defaults changed: naming %q issuer %q format %q", p.Naming, p.IssuerScope, p.Registration.Format)
	}
	if p.Images.SpireAgent != im.SpireAgent || p.SpireServer != fmt.Sprintf("%s:%d", realSpireServerHost, a.relayPort) {
		t.Fatalf("the profile did not reach spirepod.yaml: images %+v, spireServer %s", p.Images, p.SpireServer)
	}

	r.step("prs+server", func() {
		c.merge(c.run(r.dir, "pr", "trust-ca"))
		c.merge(c.run(r.dir, "pr", "spiffe-id"))
		files, err := c.gh.Files(cityRepo, "main")
		if err != nil {
			t.Fatal(err)
		}
		trustList, ok := files[p.City.TrustList.Path]
		if !ok {
			t.Fatalf("merged main has no %s", p.City.TrustList.Path)
		}
		if fps := fingerprints(t, []byte(trustList)); len(fps) != 1 || !fps[pki.SHA1Fingerprint(teamCA.Cert)] {
			t.Fatalf("merged trust list holds %v, want the team CA", fps)
		}
		entriesPath := strings.NewReplacer("{namespace}", ns, "{team}", team).Replace(p.City.TeamPath) + "/spiffe-ids.json"
		entries, ok := files[entriesPath]
		if !ok {
			t.Fatalf("merged main has no %s: %v", entriesPath, keys(files))
		}
		sdir := filepath.Join(c.root, "server")
		trustFile, entriesFile := filepath.Join(sdir, "x509pop-trust-list.pem"), filepath.Join(sdir, "entries.json")
		writeFile(t, trustFile, trustList, 0o644)
		writeFile(t, entriesFile, entries, 0o644)
		r.srv, err = testbed.StartSpireServer(c.ctx, c.bins, sdir, testbed.SpireServerConfig{TrustDomain: p.TrustDomain,
			CABundlePath: trustFile, AgentPathTemplate: defaultAgentPathTemplate, UpstreamCACert: upCert, UpstreamCAKey: upKey, Port: serverPort})
		if err != nil {
			t.Fatalf("spire-server: %v", err)
		}
		t.Cleanup(r.srv.Stop)
		out, err := r.srv.Run(c.ctx, "entry", "create", "-data", entriesFile)
		if err != nil {
			t.Fatalf("entry create -data: %v\n%s", err, out)
		}
		if n := strings.Count(out, "Entry ID"); n != 2*replicas {
			t.Fatalf("entry create made %d entries, want %d:\n%s", n, 2*replicas, out)
		}
		// Guide step 3: the server's CA into the bundle ConfigMap.
		c.run(r.dir, "bundle", "set", r.srv.BundlePath)
		r.startEcho(echoPort)
	})

	// The namespace, as the platform hands it out: Pod Security "restricted"
	// enforced.
	r.step("namespace", func() {
		if err := cl.CreateNamespace(c.ctx, ns); err != nil {
			t.Fatal(err)
		}
		nsObj, err := cl.Client.CoreV1().Namespaces().Get(c.ctx, ns, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if nsObj.Labels == nil {
			nsObj.Labels = map[string]string{}
		}
		nsObj.Labels["pod-security.kubernetes.io/enforce"] = "restricted"
		nsObj.Labels["pod-security.kubernetes.io/enforce-version"] = "latest"
		if _, err := cl.Client.CoreV1().Namespaces().Update(c.ctx, nsObj, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	})

	r.kube = []string{"--kubeconfig", cl.Kubeconfig, "--context", cl.Context}
	r.step("apply --wait", func() {
		r.applied[0] = time.Now()
		out, errOut, code := c.exec(r.dir, append([]string{"apply", "--wait", "--timeout", "4m"}, r.kube...)...)
		r.applied[1] = time.Now()
		if code != 0 {
			r.dumpPods()
			t.Fatalf("spirepod apply --wait: exit %d\n%s\n%s", code, out, errOut)
		}
		t.Logf("spirepod apply:\n%s", errOut)
	})
	for _, pod := range p.PodNames() {
		r.checkPodRuns(pod)
	}
	t.Logf("POD TIMELINE %s", r.podTimeline(p.PodName(0)))
	return r
}

func (r *realPod) step(name string, f func()) {
	r.t.Helper()
	t0 := time.Now()
	f()
	r.tm.add(name, time.Since(t0))
	if r.t.Failed() {
		r.t.FailNow()
	}
}

// startEcho runs the upstream (the xfccecho stand-in for the guide's
// httpbin) on the bridge, with an SVID for the project's upstream ID minted
// by the SPIRE server.
func (r *realPod) startEcho(port int) {
	t := r.t
	dir := filepath.Join(r.root, "echo")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := r.srv.Run(r.ctx, "x509", "mint", "-spiffeID", r.echoID, "-write", dir); err != nil {
		t.Fatalf("x509 mint: %v\n%s", err, out)
	}
	bin, err := testbed.StandinBinary(r.ctx, dir, "xfccecho")
	if err != nil {
		t.Fatal(err)
	}
	echo, err := testbed.StartProc(dir, "xfccecho", bin, "-listen", fmt.Sprintf("%s:%d", r.cluster.PodReachableAddr, port),
		"-cert", filepath.Join(dir, "svid.pem"), "-key", filepath.Join(dir, "key.pem"), "-bundle", filepath.Join(dir, "bundle.pem"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(echo.Stop)
}

// checkAgentAttested: the SPIRE server lists the agent whose ID is the
// SHA-1 of the certificate in the pod's Secret (issued by cert-manager from
// the team CA, with the pod's CN), and the pod's node alias resolves to it.
func (r *realPod) checkAgentAttested(pod string) {
	t := r.t
	t.Helper()
	sec, err := r.cluster.Client.CoreV1().Secrets(r.p.Namespace).Get(r.ctx, r.p.CertificateName(pod), metav1.GetOptions{})
	if err != nil {
		t.Fatalf("Secret %s: %v", r.p.CertificateName(pod), err)
	}
	certs, err := pki.ParseCertificates(sec.Data["tls.crt"])
	if err != nil || len(certs) == 0 {
		t.Fatalf("Secret %s: no certificate: %v", r.p.CertificateName(pod), err)
	}
	if cn := certs[0].Subject.CommonName; cn != r.p.AgentCN(pod) {
		t.Fatalf("%s: agent certificate CN %q, want %q", pod, cn, r.p.AgentCN(pod))
	}
	agentID := fmt.Sprintf("spiffe://%s/spire/agent/x509pop/%s", r.p.TrustDomain, pki.SHA1Fingerprint(certs[0]))
	out, err := r.srv.Run(r.ctx, "agent", "list")
	if err != nil || !strings.Contains(out, agentID) {
		t.Fatalf("agent list lacks %s (%v):\n%s", agentID, err, out)
	}
	r.checkAliasResolves(r.p, r.srv, pod, agentID)
}

// checkPodRuns: the pod runs on the real node, under the namespace's
// restricted profile, every container non-root, the agent and gen-cert as
// the same user, Envoy as the uid the workload entry selects.
func (r *realPod) checkPodRuns(name string) {
	t := r.t
	t.Helper()
	// Verify can pass before the kubelet's next readiness probe marks the
	// agent Ready: wait (bounded) for every container to be Ready.
	containers := []string{"gen-cert", "spire-agent", "envoy", "curl"}
	pod := r.waitPod(name, "every container Ready", func(p *corev1.Pod) bool {
		ready := map[string]bool{}
		for _, cs := range append(append([]corev1.ContainerStatus{}, p.Status.InitContainerStatuses...), p.Status.ContainerStatuses...) {
			ready[cs.Name] = cs.Ready
		}
		for _, ct := range containers {
			if !ready[ct] {
				return false
			}
		}
		return true
	})
	if pod.Spec.NodeName != testbed.RealNodeName || pod.Status.Phase != corev1.PodRunning {
		t.Fatalf("pod %s is %s on %q, want Running on %s", name, pod.Status.Phase, pod.Spec.NodeName, testbed.RealNodeName)
	}
	if pod.Spec.ShareProcessNamespace == nil || !*pod.Spec.ShareProcessNamespace {
		t.Fatalf("pod %s does not share its process namespace", name)
	}
	uids := map[string]int64{}
	for _, ct := range append(append([]corev1.Container{}, pod.Spec.InitContainers...), pod.Spec.Containers...) {
		if ct.SecurityContext == nil || ct.SecurityContext.RunAsUser == nil || *ct.SecurityContext.RunAsUser == 0 {
			t.Errorf("pod %s: container %s has no non-root runAsUser", name, ct.Name)
			continue
		}
		uids[ct.Name] = *ct.SecurityContext.RunAsUser
	}
	if uids["gen-cert"] != uids["spire-agent"] || uids["envoy"] != int64(r.p.Registration.EnvoyUID) {
		t.Errorf("pod %s: users %v: gen-cert must match spire-agent, envoy must be %d", name, uids, r.p.Registration.EnvoyUID)
	}
}

func totalRestarts(p *corev1.Pod) int32 {
	var n int32
	for _, cs := range append(append([]corev1.ContainerStatus{}, p.Status.InitContainerStatuses...), p.Status.ContainerStatuses...) {
		n += cs.RestartCount
	}
	return n
}

func (r *realPod) getPod(name string) *corev1.Pod {
	r.t.Helper()
	pod, err := r.cluster.Client.CoreV1().Pods(r.p.Namespace).Get(r.ctx, name, metav1.GetOptions{})
	if err != nil {
		r.t.Fatalf("pod %s: %v", name, err)
	}
	return pod
}

func (r *realPod) deletePod(name string) {
	r.t.Helper()
	err := r.cluster.Client.CoreV1().Pods(r.p.Namespace).Delete(r.ctx, name, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		r.t.Fatalf("delete pod %s: %v", name, err)
	}
}

// waitNewPodRunning watches until a pod named name with another UID than
// old runs (all its containers started), and returns it.
func (r *realPod) waitNewPodRunning(name string, old types.UID) *corev1.Pod {
	return r.waitPod(name, "a new pod (not "+string(old)+") Running", func(p *corev1.Pod) bool {
		if p.UID == old || p.Status.Phase != corev1.PodRunning || p.DeletionTimestamp != nil {
			return false
		}
		for _, cs := range p.Status.ContainerStatuses {
			if cs.State.Running == nil && cs.State.Terminated == nil && cs.LastTerminationState.Terminated == nil {
				return false
			}
		}
		return true
	})
}

// waitPod watches one pod until cond holds.
func (r *realPod) waitPod(name, what string, cond func(*corev1.Pod) bool) *corev1.Pod {
	t := r.t
	t.Helper()
	ctx, cancel := context.WithTimeout(r.ctx, 3*time.Minute)
	defer cancel()
	pods := r.cluster.Client.CoreV1().Pods(r.p.Namespace)
	sel := fields.OneTermEqualSelector("metadata.name", name).String()
	for {
		list, err := pods.List(ctx, metav1.ListOptions{FieldSelector: sel})
		if err != nil {
			r.dumpPods()
			t.Fatalf("%s: waiting for %s: %v", name, what, err)
		}
		for i := range list.Items {
			if cond(&list.Items[i]) {
				return &list.Items[i]
			}
		}
		w, err := pods.Watch(ctx, metav1.ListOptions{FieldSelector: sel, ResourceVersion: list.ResourceVersion})
		if err != nil {
			r.dumpPods()
			t.Fatalf("%s: waiting for %s: %v", name, what, err)
		}
		for ev := range w.ResultChan() {
			if p, ok := ev.Object.(*corev1.Pod); ok && ev.Type != watch.Deleted && cond(p) {
				w.Stop()
				return p
			}
		}
		w.Stop()
		if ctx.Err() != nil {
			r.dumpPods()
			t.Fatalf("%s: %s did not happen: %v", name, what, ctx.Err())
		}
	}
}

// waitLogLine follows a container's log (through apiserver → kubelet)
// until a line contains want, and returns that line.
func (r *realPod) waitLogLine(pod, container, want string) string {
	t := r.t
	t.Helper()
	ctx, cancel := context.WithTimeout(r.ctx, 2*time.Minute)
	defer cancel()
	var last error
	for ctx.Err() == nil {
		rc, err := r.cluster.Client.CoreV1().Pods(r.p.Namespace).GetLogs(pod, &corev1.PodLogOptions{Container: container, Follow: true}).Stream(ctx)
		if err != nil {
			last = err
			// The container has not started yet: wait for the pod to change.
			r.waitPodChange(ctx, pod)
			continue
		}
		sc := bufio.NewScanner(rc)
		sc.Buffer(make([]byte, 64*1024), 1<<20)
		for sc.Scan() {
			if strings.Contains(sc.Text(), want) {
				rc.Close()
				return sc.Text()
			}
		}
		rc.Close()
		last = sc.Err()
		// The stream ended (the container restarted): follow the new one
		// once the pod's status changes.
		r.waitPodChange(ctx, pod)
	}
	r.dumpPods()
	t.Fatalf("%s/%s: no log line with %q (last error %v)", pod, container, want, last)
	return ""
}

// waitPodChange returns at the pod's next change (or when ctx ends).
func (r *realPod) waitPodChange(ctx context.Context, pod string) {
	pods := r.cluster.Client.CoreV1().Pods(r.p.Namespace)
	cur, err := pods.Get(ctx, pod, metav1.GetOptions{})
	rv := ""
	if err == nil {
		rv = cur.ResourceVersion
	}
	w, err := pods.Watch(ctx, metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("metadata.name", pod).String(), ResourceVersion: rv})
	if err != nil {
		return
	}
	defer w.Stop()
	select {
	case <-w.ResultChan():
	case <-ctx.Done():
	}
}

// verifyOut is `spirepod verify -o json`.
type verifyOut struct {
	Expected  string             `json:"expected"`
	Outcome   string             `json:"outcome"`
	Success   bool               `json:"success"`
	Pods      []verify.PodResult `json:"pods"`
	Diagnoses []verify.Diagnosis `json:"diagnoses"`
	Error     string             `json:"error"`
	code      int
	stderr    string
	raw       string
}

// verify runs `spirepod verify -o json` and checks its exit code.
func (r *realPod) verify(wantCode int, args ...string) *verifyOut {
	t := r.t
	t.Helper()
	out, errOut, code := r.exec(r.dir, append(append([]string{"verify", "-o", "json"}, args...), r.kube...)...)
	var v verifyOut
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("spirepod verify: exit %d, output not JSON (%v)\n%s\n%s", code, err, out, errOut)
	}
	v.code, v.stderr, v.raw = code, errOut, out
	if code != wantCode {
		r.dumpPods()
		t.Fatalf("spirepod verify %s: exit %d, want %d\n%s\n%s", strings.Join(args, " "), code, wantCode, out, errOut)
	}
	return &v
}

// checkStatus: `spirepod status` shows every step of the guide done and
// every check ok, judged on the real node.
func (r *realPod) checkStatus() {
	t := r.t
	t.Helper()
	out, errOut, code := r.exec(r.dir, append([]string{"status", "-o", "json"}, r.kube...)...)
	var st struct {
		Checks []struct{ Group, ID, Name, Status, Message string }
		Steps  []struct{ Step, Status, Message string }
		Failed bool
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil || code != 0 || st.Failed {
		t.Fatalf("spirepod status: exit %d failed %v (%v)\n%s\n%s", code, st.Failed, err, out, errOut)
	}
	if len(st.Steps) < 7 {
		t.Fatalf("spirepod status: %d steps, want every step of the guide:\n%s", len(st.Steps), out)
	}
	for _, s := range st.Steps {
		if s.Status != "ok" {
			t.Errorf("spirepod status: step %q is %s: %s", s.Step, s.Status, s.Message)
		}
	}
	for _, ch := range st.Checks {
		if ch.Status != "ok" {
			t.Errorf("spirepod status: check %s/%s is %s: %s", ch.Group, ch.ID, ch.Status, ch.Message)
		}
	}
	text, textErr, _ := r.exec(r.dir, append([]string{"status", "--short"}, r.kube...)...)
	t.Logf("spirepod status --short (%d checks):\n%s%s", len(st.Checks), text, textErr)
}

func (r *realPod) checkVerified(v *verifyOut, pods []string, wantID string) {
	t := r.t
	t.Helper()
	if !v.Success || v.Expected != wantID {
		t.Fatalf("spirepod verify: success %v expected %q, want %q:\n%s", v.Success, v.Expected, wantID, v.raw)
	}
	matched := map[string]bool{}
	for _, p := range v.Pods {
		matched[p.Pod] = p.Matched
	}
	for _, pod := range pods {
		if !matched[pod] {
			t.Fatalf("spirepod verify: %s not matched:\n%s", pod, v.raw)
		}
	}
}

// dumpPods logs every pod's status and the tail of each container's log,
// for a failure's report.
func (r *realPod) dumpPods() {
	if r.p == nil || r.cluster == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	list, err := r.cluster.Client.CoreV1().Pods(r.p.Namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		r.t.Logf("dump: list pods: %v", err)
		return
	}
	for _, pod := range list.Items {
		var st []string
		for _, cs := range append(append([]corev1.ContainerStatus{}, pod.Status.InitContainerStatuses...), pod.Status.ContainerStatuses...) {
			b, _ := json.Marshal(cs.State)
			st = append(st, fmt.Sprintf("%s ready=%v restarts=%d %s", cs.Name, cs.Ready, cs.RestartCount, b))
		}
		sort.Strings(st)
		r.t.Logf("dump: pod %s %s uid %s:\n  %s", pod.Name, pod.Status.Phase, pod.UID, strings.Join(st, "\n  "))
		for _, ct := range []string{"gen-cert", "spire-agent", "envoy", "curl"} {
			tail := int64(25)
			rc, err := r.cluster.Client.CoreV1().Pods(r.p.Namespace).GetLogs(pod.Name, &corev1.PodLogOptions{Container: ct, TailLines: &tail}).Stream(ctx)
			if err != nil {
				r.t.Logf("dump: %s/%s log: %v", pod.Name, ct, err)
				continue
			}
			bs, _ := io.ReadAll(rc)
			rc.Close()
			r.t.Logf("dump: %s/%s log:\n%s", pod.Name, ct, bs)
		}
	}
	evs, err := r.cluster.Client.CoreV1().Events(r.p.Namespace).List(ctx, metav1.ListOptions{})
	if err == nil {
		// One line per object and reason (the last), with the count.
		type key struct{ obj, reason string }
		last, count := map[key]string{}, map[key]int{}
		var order []key
		for _, e := range evs.Items {
			if e.Type != corev1.EventTypeWarning {
				continue
			}
			k := key{e.InvolvedObject.Kind + "/" + e.InvolvedObject.Name, e.Reason}
			if _, seen := last[k]; !seen {
				order = append(order, k)
			}
			last[k] = e.Message
			count[k] += int(max(e.Count, 1))
		}
		for _, k := range order {
			r.t.Logf("dump: event Warning %s %s (x%d): %s", k.obj, k.reason, count[k], last[k])
		}
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// realNodeAddrs are where a project on the real node finds the bed.
type realNodeAddrs struct {
	// serverPort is the SPIRE server's port on 127.0.0.1 (it listens once
	// the PRs are merged); pods reach it by name through a relay on the
	// bridge, at relayPort.
	serverPort, relayPort int
	// echoPort is the upstream echo's port; echoID its SPIFFE ID.
	echoPort int
	echoID   string
}

// realNodeProfile picks the ports and points the project's own settings at
// this bed: the user config's profile for the default environment
// overrides only the SPIRE server address and the images (the local images
// imported into the node); init's flags name the upstream.
func (c *chain) realNodeProfile(t *testing.T, cl *testbed.Cluster) realNodeAddrs {
	t.Helper()
	var a realNodeAddrs
	var err error
	if a.serverPort, err = testbed.FreePort(); err != nil {
		t.Fatal(err)
	}
	a.relayPort = testbed.ExposeToPods(t, fmt.Sprintf("127.0.0.1:%d", a.serverPort)).Port()
	if a.echoPort, err = testbed.FreePort(); err != nil {
		t.Fatal(err)
	}
	im := cl.Node.Images
	writeFile(t, filepath.Join(c.home, ".config", "spirepod", "config.yaml"), fmt.Sprintf(`profiles:
  %s:
    spireServer: %s:%d
    images:
      genCert: %s
      spireAgent: %s
      envoy: %s
      curl: %s
`, project.DefaultEnvironment, realSpireServerHost, a.relayPort, im.GenCert, im.SpireAgent, im.Envoy, im.Curl), 0o644)
	td := project.MergeProfiles(nil)[project.DefaultEnvironment].TrustDomain
	a.echoID = fmt.Sprintf("spiffe://%s/ns/realnode-echo/sa/xfccecho", td)
	return a
}

// podTimeline says when each thing happened to a pod, in seconds after
// its StatefulSet was created: the pod's creation, its containers' starts
// and conditions, from the pod's status, and every event in the namespace
// (cert-manager's, the StatefulSet controller's, the kubelet's probe
// failures). Logged with the timings, it shows where a slow start went.
func (r *realPod) podTimeline(name string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ns := r.p.Namespace
	sts, err := r.cluster.Client.AppsV1().StatefulSets(ns).Get(ctx, r.p.StatefulSet, metav1.GetOptions{})
	if err != nil {
		return err.Error()
	}
	pod, err := r.cluster.Client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return err.Error()
	}
	t0 := sts.CreationTimestamp.Time
	type mark struct {
		at   time.Time
		what string
	}
	marks := []mark{{pod.CreationTimestamp.Time, name + " created"}}
	if !r.applied[0].IsZero() {
		marks = append(marks, mark{r.applied[0], "apply --wait started"}, mark{r.applied[1], "apply --wait returned"})
	}
	for _, cs := range append(append([]corev1.ContainerStatus{}, pod.Status.InitContainerStatuses...), pod.Status.ContainerStatuses...) {
		if cs.State.Running != nil {
			marks = append(marks, mark{cs.State.Running.StartedAt.Time, cs.Name + " running"})
		}
	}
	for _, c := range pod.Status.Conditions {
		if c.Status == corev1.ConditionTrue {
			marks = append(marks, mark{c.LastTransitionTime.Time, string(c.Type)})
		}
	}
	if evs, err := r.cluster.Client.CoreV1().Events(ns).List(ctx, metav1.ListOptions{}); err == nil {
		for _, e := range evs.Items {
			if e.Reason == "Pulled" || e.Reason == "Created" || e.Reason == "Scheduled" || e.Reason == "Started" {
				continue
			}
			at := e.FirstTimestamp.Time
			if at.IsZero() {
				at = e.EventTime.Time
			}
			msg := e.Message
			if len(msg) > 70 {
				msg = msg[:70] + "…"
			}
			marks = append(marks, mark{at, fmt.Sprintf("%s/%s %s %s ×%d (%s)", e.InvolvedObject.Kind, e.InvolvedObject.Name, e.InvolvedObject.FieldPath, e.Reason, max(e.Count, 1), msg)})
		}
	}
	sort.SliceStable(marks, func(i, j int) bool { return marks[i].at.Before(marks[j].at) })
	var b strings.Builder
	for _, m := range marks {
		fmt.Fprintf(&b, "\n  +%ds %s", int(m.at.Sub(t0).Seconds()), m.what)
	}
	return name + ":" + b.String()
}
