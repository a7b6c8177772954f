package rotate

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/spirepod/spirepod/internal/pki"
	"github.com/spirepod/spirepod/internal/project"
)

// logAPI is the two reads WaitAttested makes of an API server: the pod's
// spire-agent log (each open answered by stream, in order; the last one
// again for later opens) and the pod's certificate Secret.
type logAPI struct {
	mu      sync.Mutex
	streams []func(w http.ResponseWriter, r *http.Request)
	opens   int
	secret  *corev1.Secret
}

func (a *logAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	switch {
	case strings.HasSuffix(r.URL.Path, "/log"):
		i := min(a.opens, len(a.streams)-1)
		a.opens++
		stream := a.streams[i]
		a.mu.Unlock()
		w.Header().Set("Content-Type", "text/plain")
		stream(w, r)
	case strings.Contains(r.URL.Path, "/secrets/"):
		b, _ := json.Marshal(a.secret)
		a.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(b)
	default:
		a.mu.Unlock()
		http.NotFound(w, r)
	}
}

// lines writes log lines and ends the stream, or, with stall, keeps it
// open without writing more until the client goes.
func lines(stall bool, ls ...string) func(http.ResponseWriter, *http.Request) {
	return func(w http.ResponseWriter, r *http.Request) {
		for _, l := range ls {
			fmt.Fprintln(w, l)
		}
		w.(http.Flusher).Flush()
		if stall {
			<-r.Context().Done()
		}
	}
}

// testLeaves are agent leaves of one CA, issued at the given times.
func testLeaves(t *testing.T, ns string, at ...time.Time) []*x509.Certificate {
	t.Helper()
	ca := otherTeamCA(t)
	var out []*x509.Certificate
	for _, now := range at {
		chain, _, err := ProbeLeaf(ca.Cert, ca.Key, ns, now, rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, chain[0])
	}
	return out
}

func attestedLine(at time.Time, td string, leaf *x509.Certificate) string {
	return fmt.Sprintf(`%s stderr F time="%s" level=info msg="Successfully reattested node" spiffe_id="spiffe://%s/spire/agent/x509pop/%s" subsystem_name=manager`,
		at.Format(time.RFC3339Nano), at.Format(time.RFC3339Nano), td, pki.SHA1Fingerprint(leaf))
}

// waitAttestedWith runs KubeCluster.WaitAttested for leaf against api,
// reading the log again every 200 ms, for at most within.
func waitAttestedWith(t *testing.T, api *logAPI, leaf *x509.Certificate, within time.Duration) (string, error) {
	t.Helper()
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	cs, err := kubernetes.NewForConfig(&rest.Config{Host: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	fastReopen(t)
	p := &project.Project{Namespace: "payments", StatefulSet: "spire-envoy-integration", TrustDomain: "example.org"}
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	return (&KubeCluster{Client: cs}).WaitAttested(ctx, p, "spire-envoy-integration-0", leaf)
}

// TestWaitAttestedStalledStream: the first log stream delivers the old
// leaf's attestation and then stays open without delivering the agent's
// next line (a stalled kubelet stream). The wait reads the log again and
// finds the attestation with the new leaf, instead of waiting on the
// stalled stream until its timeout.
func TestWaitAttestedStalledStream(t *testing.T) {
	now := time.Now().UTC().Truncate(time.Second)
	ls := testLeaves(t, "payments", now.Add(-time.Hour), now)
	old, leaf := ls[0], ls[1]
	api := &logAPI{secret: secretOf(leaf), streams: []func(http.ResponseWriter, *http.Request){
		lines(true, attestedLine(now.Add(-time.Minute), "example.org", old)),
		lines(true, attestedLine(now.Add(-time.Minute), "example.org", old), attestedLine(now.Add(time.Second), "example.org", leaf)),
	}}
	line, err := waitAttestedWith(t, api, leaf, 20*time.Second)
	if err != nil {
		t.Fatalf("WaitAttested: %v (log opened %d times)", err, api.opens)
	}
	if !strings.Contains(line, pki.SHA1Fingerprint(leaf)) {
		t.Fatalf("WaitAttested returned %q, want the new leaf's attestation", line)
	}
}

// TestWaitAttestedRenewedLeaf: cert-manager renewed the leaf after the wait
// read it, and the agent attests with the renewal (gen-cert writes what the
// Secret holds last). An attestation with the Secret's later leaf ends the
// wait; one with a leaf older than the awaited one never does.
func TestWaitAttestedRenewedLeaf(t *testing.T) {
	now := time.Now().UTC().Truncate(time.Second)
	ls := testLeaves(t, "payments", now.Add(-time.Hour), now, now.Add(time.Minute))
	older, leaf, renewed := ls[0], ls[1], ls[2]
	api := &logAPI{secret: secretOf(renewed), streams: []func(http.ResponseWriter, *http.Request){
		lines(false, attestedLine(now.Add(2*time.Minute), "example.org", renewed)),
	}}
	line, err := waitAttestedWith(t, api, leaf, 20*time.Second)
	if err != nil {
		t.Fatalf("WaitAttested: %v (log opened %d times)", err, api.opens)
	}
	if !strings.Contains(line, pki.SHA1Fingerprint(renewed)) {
		t.Fatalf("WaitAttested returned %q, want the renewed leaf's attestation", line)
	}

	// A Secret holding an older leaf (not a renewal) is not awaited.
	api = &logAPI{secret: secretOf(older), streams: []func(http.ResponseWriter, *http.Request){
		lines(false, attestedLine(now.Add(2*time.Minute), "example.org", older)),
	}}
	if line, err := waitAttestedWith(t, api, leaf, 600*time.Millisecond); err == nil {
		t.Fatalf("WaitAttested accepted an attestation with an older leaf: %q", line)
	}
}

// fastReopen reads the log again every 200 ms, after a 20 ms pause.
func fastReopen(t *testing.T) {
	every, pause := logReopenEvery, logReopenPause
	logReopenEvery, logReopenPause = 200*time.Millisecond, 20*time.Millisecond
	t.Cleanup(func() { logReopenEvery, logReopenPause = every, pause })
}

func secretOf(leaf *x509.Certificate) *corev1.Secret {
	return &corev1.Secret{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: metav1.ObjectMeta{Namespace: "payments", Name: "x"},
		Data:       map[string][]byte{"tls.crt": pki.EncodeCertificate(leaf)}}
}

// TestFailedSince reads cert-manager's failed issuance off a Certificate's
// status as its issuing controller writes it (failIssueCertificate:
// lastFailureTime, then Issuing False with the request's reason), and only
// when it is not older than the re-issue.
func TestFailedSince(t *testing.T) {
	since := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	crt := func(issuing, lastFailure string) *unstructured.Unstructured {
		status := map[string]any{"conditions": []any{
			map[string]any{"type": "Ready", "status": "False", "reason": "DoesNotExist"},
			map[string]any{"type": "Issuing", "status": issuing, "reason": "Failed", "message": "The certificate request has failed to complete and will be retried: denied"},
		}}
		if lastFailure != "" {
			status["lastFailureTime"] = lastFailure
		}
		return &unstructured.Unstructured{Object: map[string]any{"status": status}}
	}
	for _, c := range []struct {
		name string
		crt  *unstructured.Unstructured
		want bool
	}{
		{"failed in the same second", crt("False", "2026-12-06T12:00:00Z"), true},
		{"failed later", crt("False", "2026-12-06T12:03:00Z"), true},
		{"an earlier failure", crt("False", "2026-12-06T11:59:59Z"), false},
		{"issuing again after a failure", crt("True", "2026-12-06T12:03:00Z"), false},
		{"never failed", crt("False", ""), false},
	} {
		got := failedSince(c.crt, since)
		if (got != nil) != c.want {
			t.Errorf("%s: %+v, want failed=%v", c.name, got, c.want)
		}
		if got != nil && (got.Reason != "Failed" || !strings.Contains(got.Message, "denied")) {
			t.Errorf("%s: %+v does not carry the condition's reason and message", c.name, got)
		}
	}
}
