package verify_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/spirepod/spirepod/internal/testbed"
	"github.com/spirepod/spirepod/internal/verify"
)

const expected = "spiffe://spire.cityos-dev.woven-planet.tech/ns/team-a/sa/httpbin-client"

// One control plane for the package (started by the first test that needs
// it), stopped in TestMain.
var (
	bedOnce sync.Once
	bed     *testbed.Cluster
	bedErr  error
	bedCM   bool // cert-manager runs
)

func TestMain(m *testing.M) {
	code := m.Run()
	if bed != nil {
		bed.Stop()
		os.RemoveAll(bed.Dir)
	}
	os.Exit(code)
}

// cluster returns the shared test bed; cert-manager runs when its binary is there.
func cluster(t *testing.T) *testbed.Cluster {
	t.Helper()
	b := testbed.Require(t, testbed.Bins.ControlPlaneSet)
	bedOnce.Do(func() {
		dir, err := os.MkdirTemp("", "spirepod-verify-testbed-")
		if err != nil {
			bedErr = err
			return
		}
		bedCM = len(b.Missing(b.KubeSet()...)) == 0
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		bed, bedErr = testbed.Start(ctx, b, dir, testbed.Options{NoCertManager: !bedCM, Logf: func(f string, a ...any) { fmt.Fprintf(os.Stderr, f+"\n", a...) }})
	})
	if bedErr != nil {
		t.Fatalf("test bed: %v", bedErr)
	}
	return bed
}

func requireCertManager(t *testing.T) {
	t.Helper()
	if !bedCM {
		t.Skip("cert-manager binary missing: run `make testbin`")
	}
}

var nsSeq struct {
	sync.Mutex
	n int
}

func namespace(t *testing.T, c *testbed.Cluster) string {
	t.Helper()
	nsSeq.Lock()
	nsSeq.n++
	ns := fmt.Sprintf("v%d-%d", nsSeq.n, time.Now().UnixNano()%100000)
	nsSeq.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := c.CreateNamespace(ctx, ns); err != nil {
		t.Fatal(err)
	}
	return ns
}

// logFiles makes one empty CRI log file per container and a kwok Logs
// object serving them (follow) as the pod's container logs.
func logFiles(t *testing.T, c *testbed.Cluster, ns, pod string, containers ...string) map[string]string {
	t.Helper()
	files, err := c.PodLogs(context.Background(), t.TempDir(), ns, pod, containers...)
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// appendLog appends lines in CRI format (one write per call) and returns the time of the write.
func appendLog(t *testing.T, path string, lines ...string) time.Time {
	t.Helper()
	now := time.Now()
	if err := testbed.AppendLog(path, now, lines...); err != nil {
		t.Error(err)
	}
	return now
}

func xfccLines(uri string) []string {
	return []string{
		`{`,
		`  "headers": {`,
		`    "Accept": "*/*",`,
		`    "X-Forwarded-Client-Cert": "By=spiffe://spire.cityos-dev.woven-planet.tech/ns/echo/sa/httpbin;Hash=8c2f0d;Subject=\"\";URI=` + uri + `"`,
		`  }`,
		`}`,
	}
}

// makePod creates a bare pod with the scaffold's containers (kwok runs it).
func makePod(t *testing.T, c *testbed.Cluster, ns, name string, mutate func(*corev1.Pod)) {
	t.Helper()
	if err := createPod(c, ns, name, mutate); err != nil {
		t.Fatal(err)
	}
}

// createPod is makePod for goroutines, which must not call t.Fatal.
func createPod(c *testbed.Cluster, ns, name string, mutate func(*corev1.Pod)) error {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{"app.kubernetes.io/name": "sei"}},
		Spec: corev1.PodSpec{
			InitContainers: []corev1.Container{{Name: "gen-cert", Image: "kubectl"}},
			Containers:     []corev1.Container{{Name: "spire-agent", Image: "a"}, {Name: "envoy", Image: "e"}, {Name: "curl", Image: "c"}},
		},
	}
	if mutate != nil {
		mutate(p)
	}
	_, err := c.Client.CoreV1().Pods(ns).Create(context.Background(), p, metav1.CreateOptions{})
	return err
}

func waitRunning(t *testing.T, c *testbed.Cluster, ns, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := c.WaitPodRunning(ctx, ns, name); err != nil {
		t.Error(err)
	}
}

// TestVerifyLateLine: the XFCC line is written only once verify follows
// the pod's log (so after verify and the pod started, after a line without
// one): verify succeeds on that line. The stimulus follows verify's own
// progress event; the delay from the write to success is measured by
// bench/verify-latency.sh, not here.
func TestVerifyLateLine(t *testing.T) {
	c := cluster(t)
	ns := namespace(t, c)
	pod := "sei-0"
	files := logFiles(t, c, ns, pod, "curl")
	makePod(t, c, ns, pod, nil)
	appendLog(t, files["curl"], "curl: (7) Failed to connect to 127.0.0.1 port 8080 after 0 ms: Couldn't connect to server")

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var once sync.Once
	wrote := false
	res, err := verify.Verify(ctx, verify.Options{Client: c.Client, Namespace: ns, Pods: []string{pod}, Expected: expected,
		Progress: func(ev verify.Event) { // called one at a time, never concurrently
			if ev.State == verify.StateStreaming {
				once.Do(func() { appendLog(t, files["curl"], xfccLines(expected)...); wrote = true })
			}
		}})
	if err != nil {
		t.Fatalf("Verify: %v (result %+v)", err, res)
	}
	if !wrote {
		t.Fatal("verify never reported streaming the log, so the line was never written")
	}
	if !res.Success || !res.Pods[0].Matched || res.Pods[0].SeenIDs[0] != expected || !strings.Contains(res.Pods[0].Line, "URI="+expected) {
		t.Fatalf("result %+v, want a match on %s", res, expected)
	}
}

// TestVerifyWaitsForPod: verify starts before the pod exists and waits
// (watch). The pod is created only once verify has reported it is waiting.
func TestVerifyWaitsForPod(t *testing.T) {
	c := cluster(t)
	ns := namespace(t, c)
	pod := "sei-0"
	files := logFiles(t, c, ns, pod, "curl")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var states []string
	var mu sync.Mutex
	waiting := make(chan struct{})
	var once sync.Once
	done := make(chan struct{})
	go func() { // the stimulus: the pod appears after verify said it waits, then the line
		defer close(done)
		select {
		case <-waiting:
		case <-ctx.Done():
			return
		}
		if err := createPod(c, ns, pod, nil); err != nil {
			t.Error(err)
			return
		}
		waitRunning(t, c, ns, pod)
		appendLog(t, files["curl"], xfccLines(expected)...)
	}()
	res, err := verify.Verify(ctx, verify.Options{Client: c.Client, Namespace: ns, Pods: []string{pod}, Expected: expected,
		Progress: func(ev verify.Event) {
			mu.Lock()
			states = append(states, ev.State+":"+ev.Message)
			mu.Unlock()
			if ev.State == verify.StateWaiting {
				once.Do(func() { close(waiting) })
			}
		}})
	cancel()
	<-done
	if err != nil || !res.Success {
		t.Fatalf("Verify = %+v, %v", res, err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(states) == 0 || !strings.HasPrefix(states[0], verify.StateWaiting) {
		t.Fatalf("progress %v: want the first event to be waiting (pod not found yet)", states)
	}
	t.Logf("progress: %v", states)
}

// TestVerifyWrongID: a different URI fails the pod at once, naming both IDs.
func TestVerifyWrongID(t *testing.T) {
	c := cluster(t)
	ns := namespace(t, c)
	pod := "sei-0"
	files := logFiles(t, c, ns, pod, "curl")
	makePod(t, c, ns, pod, nil)
	other := expected + "-v2" // a longer ID must not count as a match
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var once sync.Once
	res, err := verify.Verify(ctx, verify.Options{Client: c.Client, Namespace: ns, Pods: []string{pod}, Expected: expected,
		Progress: func(ev verify.Event) { // stimulus: written once verify follows the log
			if ev.State == verify.StateStreaming {
				once.Do(func() { appendLog(t, files["curl"], xfccLines(other)...) })
			}
		}})
	var wrong *verify.WrongIDError
	if !errors.As(err, &wrong) {
		t.Fatalf("Verify error = %v, want *WrongIDError", err)
	}
	if !strings.Contains(err.Error(), "URI="+other) || !strings.Contains(err.Error(), "URI="+expected) {
		t.Errorf("error %q must name both IDs", err)
	}
	if res.Pods[0].State != verify.StateWrongID || res.Pods[0].Matched {
		t.Errorf("pod result %+v", res.Pods[0])
	}
	if got := res.Pods[0].SeenIDs; len(got) != 1 || got[0] != other {
		t.Errorf("seen IDs %v, want [%s]", got, other)
	}
}

// TestVerifyTimeoutUnschedulable: a pod that cannot be scheduled times out,
// and the diagnosis names the pod stage with the scheduler's words.
func TestVerifyTimeoutUnschedulable(t *testing.T) {
	c := cluster(t)
	ns := namespace(t, c)
	pod := "sei-0"
	makePod(t, c, ns, pod, func(p *corev1.Pod) { p.Spec.NodeSelector = map[string]string{"spirepod.test/no-such-node": "true"} })
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	res, err := verify.Verify(ctx, verify.Options{Client: c.Client, Namespace: ns, Pods: []string{pod}, Expected: expected})
	var to *verify.TimeoutError
	if !errors.As(err, &to) || res.Success || res.Pods[0].State != verify.StateStopped {
		t.Fatalf("Verify = %+v, %v; want a timeout", res, err)
	}
	// The scheduler's verdict may land just after the deadline: diagnose
	// again after each change of the pod (a watch event) until it has.
	var d verify.Diagnosis
	deadline := time.Now().Add(20 * time.Second)
	for {
		ds, err := verify.Diagnose(context.Background(), verify.DiagnoseOptions{Client: c.Client, Dynamic: c.Dynamic, Namespace: ns,
			StatefulSet: "sei", Pods: []string{pod}, Expected: expected, Verify: res})
		if err != nil {
			t.Fatal(err)
		}
		d = ds[0]
		if strings.Contains(d.Summary, "node") || time.Now().After(deadline) {
			break
		}
		waitPodChange(t, c, ns, pod)
	}
	if d.Stage != verify.StagePod || !strings.Contains(d.Summary, "not scheduled") || !strings.Contains(d.Summary, "node") {
		t.Fatalf("diagnosis = %+v, want stage pod, not scheduled, the scheduler's message", d)
	}
	t.Logf("diagnosis: %s\nevidence: %v\nfix: %s", d.Summary, d.Evidence, d.Fix)
}

// waitPodChange blocks until the pod's status changes (a watch event).
func waitPodChange(t *testing.T, c *testbed.Cluster, ns, name string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	p, err := c.Client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	w, err := c.Client.CoreV1().Pods(ns).Watch(ctx, metav1.ListOptions{FieldSelector: "metadata.name=" + name, ResourceVersion: p.ResourceVersion})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	<-w.ResultChan()
}

// TestVerifyMultiplePods: pods are followed concurrently; each matches on its own line.
func TestVerifyMultiplePods(t *testing.T) {
	c := cluster(t)
	ns := namespace(t, c)
	pods := []string{"sei-0", "sei-1"}
	files := map[string]map[string]string{}
	for _, p := range pods {
		files[p] = logFiles(t, c, ns, p, "curl")
		makePod(t, c, ns, p, nil)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// The stimulus follows verify's own progress: sei-1's line once both
	// pods stream, sei-0's only after sei-1 matched. No sleeps decide the order.
	streaming := map[string]bool{}
	var mu sync.Mutex
	bothStreaming, sei1Matched := make(chan struct{}), make(chan struct{})
	var once1, once2 sync.Once
	done := make(chan struct{})
	go func() {
		defer close(done)
		for _, step := range []struct {
			wait <-chan struct{}
			pod  string
		}{{bothStreaming, "sei-1"}, {sei1Matched, "sei-0"}} {
			select {
			case <-step.wait:
			case <-ctx.Done():
				return
			}
			appendLog(t, files[step.pod]["curl"], xfccLines(expected)...)
		}
	}()
	res, err := verify.Verify(ctx, verify.Options{Client: c.Client, Namespace: ns, Pods: pods, Expected: expected,
		Progress: func(ev verify.Event) {
			mu.Lock()
			defer mu.Unlock()
			if ev.State == verify.StateStreaming {
				streaming[ev.Pod] = true
			}
			if streaming["sei-0"] && streaming["sei-1"] {
				once1.Do(func() { close(bothStreaming) })
			}
			if ev.Pod == "sei-1" && ev.State == verify.StateMatched {
				once2.Do(func() { close(sei1Matched) })
			}
		}})
	cancel()
	<-done
	if err != nil || !res.Success {
		t.Fatalf("Verify = %+v, %v", res, err)
	}
	if res.Pods[1].Elapsed >= res.Pods[0].Elapsed {
		t.Errorf("sei-1 matched after %v, sei-0 after %v: want sei-1 first (pods are followed concurrently)", res.Pods[1].Elapsed, res.Pods[0].Elapsed)
	}
}

// --- diagnosis stages from real cluster states -------------------------

type testCA struct {
	cert    *x509.Certificate
	certPEM []byte
	keyPEM  []byte
}

func newTestCA(t *testing.T) testCA {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: "team-a x509pop CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), BasicConstraintsValid: true, IsCA: true,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	kd, _ := x509.MarshalPKCS8PrivateKey(key)
	return testCA{cert: cert, certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		keyPEM: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kd})}
}

var (
	gvrCert   = schema.GroupVersionResource{Group: "cert-manager.io", Version: "v1", Resource: "certificates"}
	gvrIssuer = schema.GroupVersionResource{Group: "cert-manager.io", Version: "v1", Resource: "clusterissuers"}
)

// issuer creates a ClusterIssuer named name over secret (in cert-manager);
// with ca nil the secret is not created.
func issuer(t *testing.T, c *testbed.Cluster, name, secret string, ca *testCA) {
	t.Helper()
	ctx := context.Background()
	if ca != nil {
		s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: secret, Namespace: "cert-manager"}, Type: corev1.SecretTypeTLS,
			Data: map[string][]byte{"tls.crt": ca.certPEM, "tls.key": ca.keyPEM}}
		if _, err := c.Client.CoreV1().Secrets("cert-manager").Create(ctx, s, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	obj := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "cert-manager.io/v1", "kind": "ClusterIssuer", "metadata": map[string]any{"name": name},
		"spec": map[string]any{"ca": map[string]any{"secretName": secret}}}}
	if _, err := c.Dynamic.Resource(gvrIssuer).Create(ctx, obj, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func certificate(t *testing.T, c *testbed.Cluster, ns, pod, issuerName string, usages ...any) {
	t.Helper()
	name := "spire-agent-x509pop-" + pod
	obj := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "cert-manager.io/v1", "kind": "Certificate", "metadata": map[string]any{"name": name, "namespace": ns},
		"spec": map[string]any{"secretName": name, "commonName": name, "duration": "8760h",
			"privateKey": map[string]any{"algorithm": "ECDSA", "size": int64(256)},
			"usages":     usages,
			"issuerRef":  map[string]any{"group": "cert-manager.io", "kind": "ClusterIssuer", "name": issuerName}}}}
	if _, err := c.Dynamic.Resource(gvrCert).Namespace(ns).Create(context.Background(), obj, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// waitCondition watches a cert-manager object until its Ready condition has the given status.
func waitCondition(t *testing.T, c *testbed.Cluster, gvr schema.GroupVersionResource, ns, name, status string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ri := c.Dynamic.Resource(gvr)
	var w watch.Interface
	var err error
	opts := metav1.ListOptions{FieldSelector: "metadata.name=" + name}
	if ns != "" {
		w, err = ri.Namespace(ns).Watch(ctx, opts)
	} else {
		w, err = ri.Watch(ctx, opts)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	for ev := range w.ResultChan() {
		u, ok := ev.Object.(*unstructured.Unstructured)
		if !ok {
			continue
		}
		conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
		for _, cd := range conds {
			m := cd.(map[string]any)
			if m["type"] == "Ready" && m["status"] == status {
				return
			}
		}
	}
	t.Fatalf("%s %s/%s: Ready never became %s", gvr.Resource, ns, name, status)
}

func diagnoseOne(t *testing.T, c *testbed.Cluster, ns, pod string, ca *x509.Certificate) verify.Diagnosis {
	t.Helper()
	ds, err := verify.Diagnose(context.Background(), verify.DiagnoseOptions{Client: c.Client, Dynamic: c.Dynamic, Namespace: ns,
		StatefulSet: "sei", Pods: []string{pod}, Expected: expected, TeamCA: ca})
	if err != nil {
		t.Fatal(err)
	}
	if len(ds) != 1 {
		t.Fatalf("diagnoses = %+v", ds)
	}
	t.Logf("stage %s: %s\nevidence: %v\nfix: %s", ds[0].Stage, ds[0].Summary, ds[0].Evidence, ds[0].Fix)
	return ds[0]
}

// TestDiagnoseIssuerSecretMissing: a ClusterIssuer whose CA secret does not
// exist; real cert-manager marks it not Ready and the Certificate stage says so.
func TestDiagnoseIssuerSecretMissing(t *testing.T) {
	c := cluster(t)
	requireCertManager(t)
	ns := namespace(t, c)
	pod := "sei-0"
	iname := "issuer-" + ns
	issuer(t, c, iname, "no-such-secret-"+ns, nil)
	certificate(t, c, ns, pod, iname, "digital signature", "client auth")
	makePod(t, c, ns, pod, nil)
	waitRunning(t, c, ns, pod)
	waitCondition(t, c, gvrIssuer, "", iname, "False")
	d := diagnoseOne(t, c, ns, pod, nil)
	if d.Stage != verify.StageCertificate || !strings.Contains(d.Summary, "ClusterIssuer "+iname+" is not Ready") ||
		!strings.Contains(d.Summary, "no-such-secret-"+ns) || !strings.Contains(d.Fix, "spirepod") {
		t.Fatalf("diagnosis %+v: want the certificate stage naming the issuer and its missing secret", d)
	}
}

// TestDiagnoseWrongUsages: cert-manager issues a Certificate with only
// "client auth"; the agent-cert stage finds digitalSignature missing.
func TestDiagnoseWrongUsages(t *testing.T) {
	c := cluster(t)
	requireCertManager(t)
	ns := namespace(t, c)
	pod := "sei-0"
	ca := newTestCA(t)
	iname := "issuer-" + ns
	issuer(t, c, iname, "ca-"+ns, &ca)
	certificate(t, c, ns, pod, iname, "client auth")
	makePod(t, c, ns, pod, nil)
	waitRunning(t, c, ns, pod)
	waitCondition(t, c, gvrCert, ns, "spire-agent-x509pop-"+pod, "True")
	d := diagnoseOne(t, c, ns, pod, ca.cert)
	if d.Stage != verify.StageAgentCert || d.PatternID != "pki:leaf-digitalsignature" ||
		!strings.Contains(d.Summary, "certificate not intended for digital signature use") {
		t.Fatalf("diagnosis %+v: want agent-cert, leaf-digitalsignature", d)
	}
}

// TestDiagnoseAgentLog: everything up to the agent is right; the agent's log
// (served by kwok through the apiserver) holds SPIRE's real rejection.
func TestDiagnoseAgentLog(t *testing.T) {
	c := cluster(t)
	requireCertManager(t)
	ns := namespace(t, c)
	pod := "sei-0"
	ca := newTestCA(t)
	iname := "issuer-" + ns
	issuer(t, c, iname, "ca-"+ns, &ca)
	certificate(t, c, ns, pod, iname, "digital signature", "client auth")
	files := logFiles(t, c, ns, pod, "spire-agent", "envoy", "curl")
	appendLog(t, files["spire-agent"],
		`time="2026-01-01T00:00:00Z" level=info msg="Starting agent with data directory" data_dir=/run/spire/data`,
		`time="2026-01-01T00:00:01Z" level=error msg="Agent crashed" error="failed to get SVID: rpc error: code = PermissionDenied desc = failed to attest: x509pop: certificate verification failed: x509: certificate signed by unknown authority"`)
	appendLog(t, files["curl"], "curl: request to envoy failed")
	makePod(t, c, ns, pod, nil)
	waitRunning(t, c, ns, pod)
	waitCondition(t, c, gvrCert, ns, "spire-agent-x509pop-"+pod, "True")
	d := diagnoseOne(t, c, ns, pod, ca.cert)
	if d.Stage != verify.StageAgent || d.PatternID != "agent-ca-not-trusted" || !strings.Contains(d.Fix, "pr status") ||
		!strings.Contains(d.Evidence[0], "signed by unknown authority") {
		t.Fatalf("diagnosis %+v: want spire-agent, agent-ca-not-trusted", d)
	}
	// Attested, but no SVID for the expected ID: SPIFFE ID PR not merged.
	// (A fresh log: the old crash line would still be the latest error.)
	if err := os.WriteFile(files["spire-agent"], nil, 0o644); err != nil {
		t.Fatal(err)
	}
	appendLog(t, files["spire-agent"],
		`time="2026-01-01T00:01:00Z" level=info msg="Node attestation was successful" reattestable=true spiffe_id="spiffe://spire.cityos-dev.woven-planet.tech/spire/agent/x509pop/spire-agent-x509pop-sei-0"`,
		`time="2026-01-01T00:01:01Z" level=info msg="Creating X509-SVID" entry_id=abc spiffe_id="`+expected+`-v2"`)
	d = diagnoseOne(t, c, ns, pod, ca.cert)
	if d.Stage != verify.StageAgent || d.PatternID != "agent-no-svid" {
		t.Fatalf("diagnosis %+v: want spire-agent, agent-no-svid", d)
	}
	// With the SVID created, the agent passes and curl's connection error is next.
	appendLog(t, files["spire-agent"],
		`time="2026-01-01T00:01:02Z" level=info msg="Creating X509-SVID" entry_id=abd spiffe_id="`+expected+`"`)
	// Envoy's real SDS failure line: the envoy stage comes before curl.
	appendLog(t, files["envoy"],
		`[2026-01-01 00:01:03.000][1][warning][config] [source/extensions/config_subscription/grpc/grpc_stream.h:190] StreamSecrets gRPC config stream to spire_agent closed since 31s ago: 14, upstream connect error or disconnect/reset before headers. reset reason: remote connection failure`)
	d = diagnoseOne(t, c, ns, pod, ca.cert)
	if d.Stage != verify.StageEnvoy || d.PatternID != "envoy-sds-rejected" {
		t.Fatalf("diagnosis %+v: want envoy, envoy-sds-rejected", d)
	}
	// Envoy started before the agent's socket (its SDS stream closed once),
	// then verified the upstream with the bundle SDS gave it: curl's later
	// TLS failure is the fault, not the start-up race.
	appendLog(t, files["curl"], `upstream connect error or disconnect/reset before headers. reset reason: connection failure, transport failure reason: TLS_error:|268435581:SSL routines:OPENSSL_internal:CERTIFICATE_VERIFY_FAILED`)
	d = diagnoseOne(t, c, ns, pod, ca.cert)
	if d.Stage != verify.StageCurl || d.PatternID != "curl-upstream-tls" {
		t.Fatalf("diagnosis %+v: want curl, curl-upstream-tls (the SDS closure came before Envoy served mTLS)", d)
	}
	// The SDS stream closing again after that is the fault again.
	appendLog(t, files["envoy"],
		`[2026-01-01 00:01:09.000][1][warning][config] [source/extensions/config_subscription/grpc/grpc_stream.h:190] StreamSecrets gRPC config stream to spire_agent closed: 14, connection error`)
	d = diagnoseOne(t, c, ns, pod, ca.cert)
	if d.Stage != verify.StageEnvoy || d.PatternID != "envoy-sds-rejected" {
		t.Fatalf("diagnosis %+v: want envoy, envoy-sds-rejected (after the TLS answer)", d)
	}
	if err := os.WriteFile(files["curl"], nil, 0o644); err != nil {
		t.Fatal(err)
	}
	appendLog(t, files["curl"], "curl: request to envoy failed")
	if err := os.WriteFile(files["envoy"], nil, 0o644); err != nil {
		t.Fatal(err)
	}
	d = diagnoseOne(t, c, ns, pod, ca.cert)
	if d.Stage != verify.StageCurl || d.PatternID != "curl-envoy-unreachable" {
		t.Fatalf("diagnosis %+v: want curl, curl-envoy-unreachable", d)
	}
	// And a different URI in curl's log is named with the expected one.
	appendLog(t, files["curl"], xfccLines("spiffe://spire.cityos-dev.woven-planet.tech/ns/team-a/sa/default")...)
	d = diagnoseOne(t, c, ns, pod, ca.cert)
	if d.Stage != verify.StageCurl || !strings.Contains(d.Summary, "sa/default") || !strings.Contains(d.Summary, expected) {
		t.Fatalf("diagnosis %+v: want curl naming both IDs", d)
	}
}

// TestDiagnoseGenCertFailed: the gen-cert init container exits 1 (kwok's
// test-bed stage leaves the pod Pending with the init container terminated,
// as a node does), its log holds kubectl's real RBAC refusal, and no
// Certificate was ever created: the diagnosis names gen-cert with that log.
func TestDiagnoseGenCertFailed(t *testing.T) {
	c := cluster(t)
	ns := namespace(t, c)
	pod := "sei-0"
	files := logFiles(t, c, ns, pod, "gen-cert")
	appendLog(t, files["gen-cert"],
		"gen-cert: requesting Certificate "+ns+"/spire-agent-x509pop-"+pod,
		`Error from server (Forbidden): certificates.cert-manager.io "spire-agent-x509pop-`+pod+`" is forbidden: User "system:serviceaccount:`+ns+`:httpbin-client" cannot patch resource "certificates" in API group "cert-manager.io" in the namespace "`+ns+`"`)
	makePod(t, c, ns, pod, func(p *corev1.Pod) {
		p.Annotations = map[string]string{testbed.FailInitAnnotation: "true"}
	})
	// Wait for kwok to report the failed init container.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	w, err := c.Client.CoreV1().Pods(ns).Watch(ctx, metav1.ListOptions{FieldSelector: "metadata.name=" + pod})
	if err != nil {
		t.Fatal(err)
	}
	for ev := range w.ResultChan() {
		p, ok := ev.Object.(*corev1.Pod)
		if ok && len(p.Status.InitContainerStatuses) > 0 && p.Status.InitContainerStatuses[0].State.Terminated != nil {
			if p.Status.Phase == corev1.PodRunning {
				t.Fatal("a pod whose init container failed is Running")
			}
			break
		}
	}
	w.Stop()
	d := diagnoseOne(t, c, ns, pod, nil)
	if d.Stage != verify.StageGenCert || !strings.Contains(d.Summary, "exit 1") ||
		!strings.Contains(strings.Join(d.Evidence, "\n"), "cannot patch resource \"certificates\"") {
		t.Fatalf("diagnosis %+v: want gen-cert with its exit code and log tail", d)
	}
}

// TestVerifyReopensAfterStreamEnds: kwok, which plays the kubelet, is killed
// and restarted while verify follows the log, so the stream ends as it does
// when a node or container restarts; verify opens it again and still sees
// the line.
func TestVerifyReopensAfterStreamEnds(t *testing.T) {
	c := cluster(t)
	ns := namespace(t, c)
	pod := "sei-0"
	files := logFiles(t, c, ns, pod, "curl")
	makePod(t, c, ns, pod, nil)
	waitRunning(t, c, ns, pod)
	streaming := make(chan struct{}, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		<-streaming
		if err := c.RestartKwok(); err != nil {
			t.Error(err)
			return
		}
		// The line is written once the restarted kwok serves the log
		// again: a line verify could never read proves nothing.
		wctx, wcancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer wcancel()
		if err := c.WaitPodLogs(wctx, ns, pod, "curl"); err != nil {
			t.Error(err)
			return
		}
		appendLog(t, files["curl"], xfccLines(expected)...)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := verify.Verify(ctx, verify.Options{Client: c.Client, Namespace: ns, Pods: []string{pod}, Expected: expected,
		Progress: func(ev verify.Event) {
			if ev.State == verify.StateStreaming {
				select {
				case streaming <- struct{}{}:
				default:
				}
			}
		}})
	<-done
	if err != nil || !res.Success {
		t.Fatalf("Verify = %+v, %v", res, err)
	}
	if res.Pods[0].Reopened < 1 {
		t.Fatalf("the stream was never re-opened (%+v): kwok's restart did not end it", res.Pods[0])
	}
	t.Logf("matched after %d re-opens (last error: %s)", res.Pods[0].Reopened, res.Pods[0].LastError)
}

// TestVerifyIgnoresLinesBeforeStart: one rule for every line logged before
// verify started, match or not: an old wrong ID does not fail verify and an
// old match does not pass it; only the line written afterwards decides.
func TestVerifyIgnoresLinesBeforeStart(t *testing.T) {
	c := cluster(t)
	ns := namespace(t, c)
	pod := "sei-0"
	files := logFiles(t, c, ns, pod, "curl")
	makePod(t, c, ns, pod, nil)
	waitRunning(t, c, ns, pod)
	old := time.Now() // after the pod started (the log is read from there), before verify starts
	if err := testbed.AppendLog(files["curl"], old, xfccLines(expected+"-old-wrong")...); err != nil {
		t.Fatal(err)
	}
	if err := testbed.AppendLog(files["curl"], old, xfccLines(expected)...); err != nil {
		t.Fatal(err)
	}
	fresh := `    "X-Forwarded-Client-Cert": "By=spiffe://spire.cityos-dev.woven-planet.tech/ns/echo/sa/httpbin;Hash=fresh;URI=` + expected + `"`
	var mu sync.Mutex
	ignored := 0
	progress := func(ev verify.Event) {
		mu.Lock()
		defer mu.Unlock()
		if !strings.Contains(ev.Message, "before verify started") {
			return
		}
		ignored++
		if ignored == 2 { // both old lines judged: now the stimulus
			appendLog(t, files["curl"], fresh)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := verify.Verify(ctx, verify.Options{Client: c.Client, Namespace: ns, Pods: []string{pod}, Expected: expected, Progress: progress})
	if err != nil {
		t.Fatalf("Verify: %v (result %+v)", err, res)
	}
	if ignored != 2 {
		t.Errorf("%d old lines reported as ignored, want 2", ignored)
	}
	if !strings.Contains(res.Pods[0].Line, "Hash=fresh") {
		t.Errorf("matched line %q, want the one written after verify started", res.Pods[0].Line)
	}
}

// TestVerifyFreshPodsCountsLinesSincePodStart: for a pod the caller has just
// recreated (pki rotate's restart), a line logged after the pod started but
// before Verify was called is the new incarnation's proof; without FreshPods
// the same line is ignored as older than Verify.
func TestVerifyFreshPodsCountsLinesSincePodStart(t *testing.T) {
	c := cluster(t)
	ns := namespace(t, c)
	pod := "fresh-0"
	files := logFiles(t, c, ns, pod, "curl")
	makePod(t, c, ns, pod, nil)
	waitRunning(t, c, ns, pod)
	if err := testbed.AppendLog(files["curl"], time.Now(), xfccLines(expected)...); err != nil {
		t.Fatal(err)
	}

	// Without FreshPods: the line is reported as ignored, nothing matches.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ignored := false
	var mu sync.Mutex
	res, err := verify.Verify(ctx, verify.Options{Client: c.Client, Namespace: ns, Pods: []string{pod}, Expected: expected,
		Progress: func(ev verify.Event) {
			mu.Lock()
			defer mu.Unlock()
			if strings.Contains(ev.Message, "before verify started") {
				ignored = true
				cancel()
			}
		}})
	if err == nil || res.Pods[0].State == verify.StateMatched || !ignored {
		t.Fatalf("without FreshPods: err %v, pod %+v, ignored %v; want the old line ignored and no match", err, res.Pods[0], ignored)
	}

	// With FreshPods: the same line, logged after the pod started, counts.
	ctx2, cancel2 := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel2()
	res, err = verify.Verify(ctx2, verify.Options{Client: c.Client, Namespace: ns, Pods: []string{pod}, Expected: expected, FreshPods: true})
	if err != nil {
		t.Fatalf("FreshPods: %v (result %+v)", err, res)
	}
	if res.Pods[0].State != verify.StateMatched {
		t.Fatalf("FreshPods: pod %+v, want matched", res.Pods[0])
	}
}
