package e2e_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/spirepod/spirepod/internal/pki"
	"github.com/spirepod/spirepod/internal/project"
	"github.com/spirepod/spirepod/internal/testbed"
)

// negativeOtherTeam: a second team whose CA is on the same trust list mints
// the first team's agent name. Its agent attests, but the node alias is pinned
// to the first team's CA fingerprint, so it gets no SVID for the first
// team's workload.
func (c *chain) negativeOtherTeam(beta *team, p *project.Project, pod, agentConf string, srv *testbed.SpireServer, victimSVIDDir string) {
	t := c.t
	wantID := p.WorkloadSpiffeID()
	// The first team's agent did get the workload SVID (step 7); it keeps running.
	if got := svidURI(t, filepath.Join(victimSVIDDir, "svid.0.pem")); got != wantID {
		t.Fatalf("first team's SVID is %q, want %q", got, wantID)
	}

	evil := filepath.Join(c.root, "evil")
	issued := filepath.Join(evil, "issued")
	if err := os.MkdirAll(issued, 0o755); err != nil {
		t.Fatal(err)
	}
	// The impostor mints the first team's agent CN with its own (trusted) CA.
	// spirepod's pki issue only names its own pods, so it uses the library.
	cn, name := p.AgentCN(pod), p.CertificateName(pod)
	betaCA := pki.LoadTeamCA(pki.TeamCAOptions{CertPath: beta.p.Path(beta.p.Paths.CACert), KeyPath: beta.p.Path(beta.p.Paths.CAKey), Now: time.Now()})
	if betaCA.Err != nil {
		t.Fatal(betaCA.Err)
	}
	if _, err := pki.Issue(c.ctx, pki.IssueOptions{CA: betaCA.Cert, CAKey: betaCA.Key, CN: cn, Name: name, OutDir: issued, Rand: rand.Reader, Now: time.Now}); err != nil {
		t.Fatal(err)
	}
	leaf := readCert(t, filepath.Join(issued, name+".crt.pem"))
	if leaf.Cert.Subject.CommonName != cn || leaf.Cert.CheckSignatureFrom(beta.ca.Cert) != nil {
		t.Fatalf("impostor leaf: CN %q, issued by the second team's CA: %v", leaf.Cert.Subject.CommonName, leaf.Cert.CheckSignatureFrom(beta.ca.Cert))
	}
	// Where the scaffold's agent.conf reads its certificate.
	conf := mapAgentConf(t, agentConf, evil, srv.Port, 1)
	for src, dst := range map[string]string{name + ".crt.pem": "certificate_path", name + ".key.pem": "private_key_path"} {
		data, err := os.ReadFile(filepath.Join(issued, src))
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, hclString(t, conf, dst), string(data), 0o600)
	}
	bundle, err := os.ReadFile(srv.BundlePath)
	if err != nil {
		t.Fatal(err)
	}
	agent := c.startAgent("impostor", agentConf, evil, srv, string(bundle))

	agentID := x509popAgentID(t, p.TrustDomain, filepath.Join(issued, name+".crt.pem"))
	out, err := srv.Run(c.ctx, "agent", "show", "-spiffeID", agentID)
	if err != nil || !strings.Contains(out, pki.SelectorPrefix+pki.SHA1Fingerprint(beta.ca.Cert)+"\n") {
		t.Fatalf("the impostor agent did not attest with the second team's CA: %v\n%s", err, out)
	}
	t.Logf("impostor attested as %s (CA %s)", agentID, pki.SHA1Fingerprint(beta.ca.Cert))

	outDir := filepath.Join(evil, "svid")
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(outDir, envoyUID, envoyUID); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	var last string
	polls := 0
	for time.Since(start) < absenceWindow {
		polls++
		out, err := c.fetchOnce(agent.Socket, outDir)
		if err == nil {
			t.Fatalf("the impostor's agent handed out an SVID for the first team's workload after %v:\n%s\n%s",
				time.Since(start).Round(time.Millisecond), out, readSVIDURI(outDir))
		}
		last = out
		time.Sleep(500 * time.Millisecond)
	}
	// The agent answered and attested the caller: it just has nothing for it.
	if !strings.Contains(last, "no identity issued") {
		t.Fatalf("fetch from the impostor's agent failed for another reason than no identity: %s", last)
	}
	t.Logf("impostor's agent: no SVID for %s in %d fetches over %v (agent sync is 5 s)", wantID, polls, absenceWindow)
}

func readSVIDURI(dir string) string {
	data, err := os.ReadFile(filepath.Join(dir, "svid.0.pem"))
	if err != nil {
		return err.Error()
	}
	certs, err := pki.ParseCertificates(data)
	if err != nil || len(certs) == 0 || len(certs[0].URIs) == 0 {
		return fmt.Sprint("unparseable SVID: ", err)
	}
	return "SVID URI: " + certs[0].URIs[0].String()
}

// negativeNoKeyCertSign: a team CA without keyCertSign is stopped by
// `pki inspect` and by `apply`'s preflight before anything reaches the cluster.
func (c *chain) negativeNoKeyCertSign(first *project.Project, firstCA *x509Cert) {
	t := c.t
	ns := "e2e-g-" + randHex(t, 4)
	dir := filepath.Join(c.root, "gamma")
	c.run(c.root, "init", "--team", "g"+randHex(t, 4), "--namespace", ns, dir)
	p := loadProject(t, dir)
	writeCAWithoutKeyCertSign(t, p.Path(p.Paths.CACert), p.Path(p.Paths.CAKey))

	out, errOut, code := c.exec(dir, "pki", "inspect", "-o", "json")
	var report struct {
		OK      bool `json:"ok"`
		Results []struct{ ID, Status string }
	}
	if err := json.Unmarshal([]byte(out), &report); err != nil {
		t.Fatalf("pki inspect -o json: %v\n%s%s", err, out, errOut)
	}
	failed := map[string]bool{}
	for _, r := range report.Results {
		if r.Status == "fail" {
			failed[r.ID] = true
		}
	}
	if code != 1 || report.OK || !failed["ca-keycertsign"] {
		t.Fatalf("pki inspect of a CA without keyCertSign: exit %d, want 1 naming ca-keycertsign\n%s%s", code, out, errOut)
	}

	// The first team's issuer and CA Secret, which a failed apply of another
	// team must leave alone.
	ref := first.Issuer()
	issuer, err := ref.Get(c.ctx, c.cluster.Dynamic)
	if err != nil {
		t.Fatal(err)
	}
	secret, err := c.cluster.Client.CoreV1().Secrets(ref.SecretNamespace).Get(c.ctx, ref.SecretName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}

	out, errOut, code = c.exec(dir, "apply", "--create-namespace", "--timeout", "30s",
		"--kubeconfig", c.cluster.Kubeconfig, "--context", c.cluster.Context)
	if code == 0 || !strings.Contains(strings.ToLower(out+errOut), "keycertsign") {
		t.Fatalf("apply with a CA without keyCertSign: exit %d, want a preflight failure naming keyCertSign\n%s%s", code, out, errOut)
	}
	t.Logf("apply stopped it (exit %d): %s", code, strings.TrimSpace(firstLines(errOut, 4)))

	// Nothing reached the cluster: no namespace, the shared CA Secret and
	// ClusterIssuer untouched.
	if _, err := c.cluster.Client.CoreV1().Namespaces().Get(c.ctx, ns, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("namespace %s exists after a failed preflight (err %v)", ns, err)
	}
	s2, err := c.cluster.Client.CoreV1().Secrets(ref.SecretNamespace).Get(c.ctx, ref.SecretName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if s2.ResourceVersion != secret.ResourceVersion || !fingerprints(t, s2.Data["tls.crt"])[pki.SHA1Fingerprint(firstCA.Cert)] {
		t.Fatalf("CA Secret changed by a failed apply (resourceVersion %s → %s)", secret.ResourceVersion, s2.ResourceVersion)
	}
	i2, err := ref.Get(c.ctx, c.cluster.Dynamic)
	if err != nil {
		t.Fatal(err)
	}
	if i2.GetResourceVersion() != issuer.GetResourceVersion() {
		t.Fatalf("%s changed by a failed apply", ref)
	}
}

func firstLines(s string, n int) string {
	lines := strings.SplitN(s, "\n", n+1)
	if len(lines) > n {
		lines = lines[:n]
	}
	return strings.Join(lines, "\n")
}

// writeCAWithoutKeyCertSign writes a CA (CA:TRUE) whose key usage lacks
// keyCertSign, the mistake SPIRE rejects as "parent certificate cannot sign
// this kind of certificate".
func writeCAWithoutKeyCertSign(t interface{ Fatal(...any) }, certPath, keyPath string) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: "gamma agent CA (no keyCertSign)"},
		NotBefore:             time.Now().Add(-time.Minute),
		NotAfter:              time.Now().Add(365 * 24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	pk, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(certPath), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pk}), 0o600); err != nil {
		t.Fatal(err)
	}
}
