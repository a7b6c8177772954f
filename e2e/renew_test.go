package e2e_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	"github.com/spirepod/spirepod/internal/certmanager"
	"github.com/spirepod/spirepod/internal/pki"
	"github.com/spirepod/spirepod/internal/pr"
	"github.com/spirepod/spirepod/internal/rotate"
	"github.com/spirepod/spirepod/internal/testbed"
)

// TestRenewAgentCertificate: a pod outlives its agent certificate. Real
// cert-manager renews the pod's Certificate (its lifetime shortened on the
// live object so renewals come every ~18 s instead of every year); the
// scaffold's own gen_cert.sh, running as the gen-cert sidecar does (follow
// mode, the pod's service-account token and Role), writes each renewal into
// the pod's certificate directory; a real spire-agent re-attests with the new
// certificate at its next rotation and keeps serving the workload's SVID,
// across at least two renewals.
func TestRenewAgentCertificate(t *testing.T) {
	t.Parallel()
	c := newChain(t, "sprenew-", 6*time.Minute, testbed.Bins.KubeSet, testbed.Bins.SpireSet)
	root, ctx, b := c.root, c.ctx, c.bins
	kube := []string{"--kubeconfig", c.cluster.Kubeconfig, "--context", c.cluster.Context}

	// The default scaffold, onboarded: CA, bundle, both PRs merged, applied.
	team := "renew-" + randHex(t, 3)
	dir := filepath.Join(root, team)
	upCert, upKey := c.upstreamCA()
	c.run(root, "init", "--team", team, "--namespace", team, dir)
	c.run(dir, "pki", "gen")
	c.run(dir, "bundle", "set", upCert)
	c.merge(c.run(dir, "pr", "trust-ca"))
	c.merge(c.run(dir, "pr", "spiffe-id"))
	c.run(dir, append([]string{"apply", "--create-namespace", "--timeout", "2m"}, kube...)...)
	p := loadProject(t, dir)
	pod := p.PodName(0)
	certName := p.CertificateName(pod)

	// Renewals every ~18 s: lifetime 54 s, renewed 36 s before its end. The
	// agent must rotate (re-attest) between two renewals, or it would skip a
	// certificate: it rotates at half its 18 s SVID lifetime (±10 %) on a
	// 5 s check (SPIRE's rotator), so within ~15 s of a renewal.
	patch := `{"spec":{"duration":"54s","renewBefore":"36s"}}`
	if _, err := c.cluster.Dynamic.Resource(certmanager.CertificateGVR).Namespace(p.Namespace).Patch(ctx, certName, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}

	// The SPIRE server: the merged trust list, the merged entries, agents
	// rotating (x509pop: re-attesting) every ~9 s.
	files, err := c.gh.Files(cityRepo, "main")
	if err != nil {
		t.Fatal(err)
	}
	sdir := filepath.Join(root, "server")
	writeFile(t, filepath.Join(sdir, "trust.pem"), files[p.City.TrustList.Path], 0o644)
	writeFile(t, filepath.Join(sdir, "entries.json"), files[pr.TeamPath(p)+"/spiffe-ids.json"], 0o644)
	srv, err := testbed.StartSpireServer(ctx, b, sdir, testbed.SpireServerConfig{TrustDomain: p.TrustDomain, CABundlePath: filepath.Join(sdir, "trust.pem"),
		AgentPathTemplate: defaultAgentPathTemplate, UpstreamCACert: upCert, UpstreamCAKey: upKey, AgentTTL: "18s"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	if out, err := srv.Run(ctx, "entry", "create", "-data", filepath.Join(sdir, "entries.json")); err != nil {
		t.Fatalf("entry create: %v\n%s", err, out)
	}

	// gen-cert, as the sidecar runs it: the script from the applied
	// ConfigMap, follow mode, the pods' service account.
	cm, err := c.cluster.Client.CoreV1().ConfigMaps(p.Namespace).Get(ctx, "init-gen-cert", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	podRoot := filepath.Join(root, "pod")
	certDir := filepath.Join(podRoot, "run", "spire", "agent-certs")
	if err := os.MkdirAll(certDir, 0o755); err != nil {
		t.Fatal(err)
	}
	kc, err := c.cluster.ServiceAccountKubeconfig(ctx, root, p.Namespace, p.ServiceAccount)
	if err != nil {
		t.Fatal(err)
	}
	script := filepath.Join(root, "gen_cert.sh")
	writeFile(t, script, cm.Data["gen_cert.sh"], 0o755)
	genLog := filepath.Join(root, "gen-cert.log")
	logf, err := os.Create(genLog)
	if err != nil {
		t.Fatal(err)
	}
	gen := exec.CommandContext(ctx, "/bin/sh", script)
	gen.Env = append(os.Environ(), "POD_NAME="+pod, "POD_NAMESPACE="+p.Namespace, "CERT_DIR="+certDir,
		"KUBECTL="+b.Kubectl()+" --kubeconfig "+kc, "REWATCH_SECONDS=1")
	gen.Stdout, gen.Stderr = logf, logf
	if err := gen.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = gen.Process.Kill()
		_ = gen.Wait()
		logf.Close()
		if t.Failed() {
			out, _ := os.ReadFile(genLog)
			t.Logf("gen-cert log:\n%s", out)
		}
	})
	waitFile(t, filepath.Join(certDir, "agent.crt.pem"), time.Minute)

	// The real agent of the pod, reading the files gen-cert writes.
	tok, err := c.cluster.Client.CoreV1().ServiceAccounts(p.Namespace).CreateToken(ctx, p.ServiceAccount,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](3600)}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c.saToken = tok.Status.Token
	agentConf := configMapKey(t, filepath.Join(dir, "spire-agent-configmap.yaml"), "agent.conf")
	bundle, err := os.ReadFile(upCert)
	if err != nil {
		t.Fatal(err)
	}
	agent := c.startAgent(pod, agentConf, podRoot, srv, string(bundle))

	// Watch two renewals through: a new certificate in the pod's directory,
	// the agent attested with it (its agent ID is the new leaf's
	// fingerprint), and the workload's SVID still served.
	seen := map[string]bool{}
	renewals := 0
	start := time.Now()
	deadline := start.Add(4 * time.Minute)
	for renewals < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("%d renewals reached the agent in %v; want 2", renewals, time.Since(start).Round(time.Second))
		}
		leaf := readCert(t, filepath.Join(certDir, "agent.crt.pem"))
		fp := pki.SHA1Fingerprint(leaf.Cert)
		if seen[fp] {
			time.Sleep(time.Second) // polling the pod's certificate directory
			continue
		}
		seen[fp] = true
		if len(seen) > 1 {
			renewals++
		}
		agentID := fmt.Sprintf("spiffe://%s/spire/agent/x509pop/%s", p.TrustDomain, fp)
		// The agent re-attests with it at its next rotation (every ~9 s).
		attested := waitFor(t, 90*time.Second, func() bool {
			out, err := srv.Run(ctx, "agent", "show", "-spiffeID", agentID)
			return err == nil && strings.Contains(out, agentID)
		})
		if !attested {
			t.Fatalf("the agent never attested with certificate %s (serial %x)", fp, leaf.Cert.SerialNumber)
		}
		svidDir := filepath.Join(root, fmt.Sprintf("svid-%d", len(seen)))
		c.fetchSVID(agent.Socket, svidDir, 30*time.Second)
		if got := svidURI(t, filepath.Join(svidDir, "svid.0.pem")); got != p.WorkloadSpiffeID() {
			t.Fatalf("after renewal %d the agent serves %s, want %s", renewals, got, p.WorkloadSpiffeID())
		}
		t.Logf("%v: certificate %s (valid to %s) in the pod; agent re-attested as %s; SVID served",
			time.Since(start).Round(time.Second), fp[:12], leaf.Cert.NotAfter.Format(time.TimeOnly), agentID[len(agentID)-40:][:12])
	}
}

func waitFile(t *testing.T, path string, bound time.Duration) {
	t.Helper()
	if !waitFor(t, bound, func() bool { st, err := os.Stat(path); return err == nil && st.Size() > 0 }) {
		t.Fatalf("%s never appeared", path)
	}
}

// waitFor polls cond every 500 ms up to bound.
func waitFor(t *testing.T, bound time.Duration, cond func() bool) bool {
	t.Helper()
	for end := time.Now().Add(bound); time.Now().Before(end); time.Sleep(500 * time.Millisecond) {
		if cond() {
			return true
		}
	}
	return cond()
}

// TestReissueFailsFast: `pki rotate` asks cert-manager to re-issue a pod's
// agent certificate and real cert-manager cannot: the issuer's CA Secret
// holds a CA certificate and a key that is not its own (the issuer stays
// Ready: it only checks that the certificate is a CA), so signing fails
// ("x509: provided PrivateKey doesn't match parent's PublicKey") and
// cert-manager marks the issuance failed, to be retried after an hour.
// Reissue ends with cert-manager's reason at once instead of waiting out
// its timeout.
func TestReissueFailsFast(t *testing.T) {
	t.Parallel()
	c := newChain(t, "spreissue-", 4*time.Minute, testbed.Bins.KubeSet)
	root, ctx := c.root, c.ctx
	kube := []string{"--kubeconfig", c.cluster.Kubeconfig, "--context", c.cluster.Context}
	team := "reissue-" + randHex(t, 3)
	dir := filepath.Join(root, team)
	upCert, _ := c.upstreamCA()
	c.run(root, "init", "--team", team, "--namespace", team, dir)
	c.run(dir, "pki", "gen")
	c.run(dir, "bundle", "set", upCert)
	c.run(dir, append([]string{"apply", "--create-namespace", "--wait", "--timeout", "2m"}, kube...)...)
	p := loadProject(t, dir)
	pod := p.PodName(0)
	crts := c.cluster.Dynamic.Resource(certmanager.CertificateGVR).Namespace(p.Namespace)
	if !waitFor(t, time.Minute, func() bool {
		crt, err := crts.Get(ctx, p.CertificateName(pod), metav1.GetOptions{})
		return err == nil && certReady(crt.Object)
	}) {
		t.Fatal("the agent Certificate was never issued")
	}

	// The CA Secret now: another CA's certificate, a third CA's key.
	caPEM := writeCAFile(t, filepath.Join(root, "b"))
	writeCAFile(t, filepath.Join(root, "c"))
	wrongKey, err := os.ReadFile(filepath.Join(root, "c", "ca.key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	ref := p.Issuer()
	secrets := c.cluster.Client.CoreV1().Secrets(ref.SecretNamespace)
	sec, err := secrets.Get(ctx, ref.SecretName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sec.Data["tls.crt"], sec.Data["tls.key"] = []byte(caPEM), wrongKey
	if _, err := secrets.Update(ctx, sec, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}

	kc := &rotate.KubeCluster{Context: c.cluster.Context, Client: c.cluster.Client, Dynamic: c.cluster.Dynamic}
	rctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	start := time.Now()
	_, err = kc.Reissue(rctx, p, pod, readCert(t, filepath.Join(root, "b", "ca.crt.pem")).Cert)
	var fe *rotate.IssuanceFailedError
	if !errors.As(err, &fe) || !strings.Contains(fe.Message, "doesn't match parent's PublicKey") || fe.Certificate != p.Namespace+"/"+p.CertificateName(pod) {
		t.Fatalf("Reissue: %v, want cert-manager's failed issuance naming the Certificate and the signing error", err)
	}
	if !strings.Contains(err.Error(), "kubectl -n "+p.Namespace+" describe certificate "+p.CertificateName(pod)) {
		t.Errorf("the error gives no way to look further: %v", err)
	}
	t.Logf("REISSUE: failed issuance reported in %v: %v", time.Since(start).Round(time.Millisecond), err)

	// Run again (a resumed rotation): the failed issuance left Issuing
	// False; the trigger replaces that condition (a second Issuing
	// condition is refused by the API server) and the new attempt's
	// failure is reported again.
	_, err = kc.Reissue(rctx, p, pod, readCert(t, filepath.Join(root, "b", "ca.crt.pem")).Cert)
	if !errors.As(err, &fe) || !strings.Contains(fe.Message, "doesn't match parent's PublicKey") {
		t.Fatalf("Reissue again: %v, want cert-manager's failed issuance", err)
	}
	crt, err := crts.Get(ctx, p.CertificateName(pod), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if n, _, _ := unstructured.NestedInt64(crt.Object, "status", "failedIssuanceAttempts"); n != 2 {
		t.Errorf("failedIssuanceAttempts %d, want 2: the second Reissue did not make cert-manager try again", n)
	}
}

// certReady: a Certificate's Ready condition is True.
func certReady(obj map[string]any) bool {
	conds, _, _ := unstructured.NestedSlice(obj, "status", "conditions")
	for _, c := range conds {
		if m, ok := c.(map[string]any); ok && m["type"] == "Ready" && m["status"] == "True" {
			return true
		}
	}
	return false
}
