package pki

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io/fs"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spirepod/spirepod/internal/checklist"
	"github.com/spirepod/spirepod/internal/project"
)

func TestIssue(t *testing.T) {
	dir := t.TempDir()
	ca, caKey := genCA(t, dir, KeyECP256)
	out := t.TempDir()
	res, err := Issue(context.Background(), IssueOptions{CA: ca.Cert, CAKey: caKey, CN: project.AgentCNPrefix + "web-0", OutDir: out, Rand: rand.Reader, Now: fixedNow})
	if err != nil {
		t.Fatal(err)
	}
	c := res.Cert
	if c.Subject.CommonName != "spire-agent-x509pop-web-0" || c.Subject.String() != "CN=spire-agent-x509pop-web-0" {
		t.Errorf("subject %v", c.Subject)
	}
	if c.KeyUsage != x509.KeyUsageDigitalSignature {
		t.Errorf("key usage %b, want digital signature only", c.KeyUsage)
	}
	if !slices.Equal(c.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}) {
		t.Errorf("ext key usage %v", c.ExtKeyUsage)
	}
	if c.IsCA {
		t.Error("leaf is a CA")
	}
	if got := c.NotAfter.Sub(c.NotBefore); got != LeafDuration {
		t.Errorf("duration %v, want %v", got, LeafDuration)
	}
	pub, ok := c.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		t.Errorf("public key %T, want ECDSA P-256", c.PublicKey)
	}
	if !slices.Equal(dirEntries(t, out), []string{"spire-agent-x509pop-web-0.crt.pem", "spire-agent-x509pop-web-0.key.pem"}) {
		t.Errorf("out dir holds %v", dirEntries(t, out))
	}
	if m := mode(t, res.KeyPath); m != 0o600 {
		t.Errorf("key mode %v", m)
	}
	keyPEM, _ := os.ReadFile(res.KeyPath)
	if b, _ := pem.Decode(keyPEM); b == nil || b.Type != "EC PRIVATE KEY" {
		t.Error("leaf key is not SEC1 (cert-manager's default PKCS1 encoding)")
	}
	key, err := ParsePrivateKey(keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	rs := InspectLeaf(c, LeafOptions{CA: ca.Cert, Key: key, Now: testNow})
	for _, r := range rs {
		if r.Status != checklist.OK && r.ID != RuleRSASize {
			t.Errorf("inspect of an issued leaf: %s %s %s", r.ID, r.Status, r.Message)
		}
	}

	// A second issue refuses without Force and changes nothing.
	_, err = Issue(context.Background(), IssueOptions{CA: ca.Cert, CAKey: caKey, CN: project.AgentCNPrefix + "web-0", OutDir: out, Rand: rand.Reader, Now: fixedNow})
	if !errors.Is(err, fs.ErrExist) {
		t.Errorf("second issue: %v, want exists", err)
	}
	if again, _ := os.ReadFile(res.KeyPath); string(again) != string(keyPEM) {
		t.Error("key changed")
	}
}

func TestIssueRefusals(t *testing.T) {
	ca, caKey := genCA(t, t.TempDir(), KeyECP256)
	wrongKey := ecKey(t)
	tests := []struct {
		name, cn, errText string
		key               any
		outDir            string
	}{
		{name: "common name 65 bytes", cn: project.AgentCNPrefix + strings.Repeat("a", 45), errText: "65 bytes; the limit is 64"},
		{name: "empty common name", cn: "", errText: "empty"},
		{name: "key mismatch", cn: "web-0.team", key: wrongKey, errText: "does not match"},
		{name: "missing out dir", cn: "web-0.team", outDir: "/nonexistent/spirepod", errText: "no such file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := tt.outDir
			if out == "" {
				out = t.TempDir()
			}
			o := IssueOptions{CA: ca.Cert, CAKey: caKey, CN: tt.cn, OutDir: out, Rand: rand.Reader, Now: fixedNow}
			if tt.key != nil {
				o.CAKey = wrongKey
			}
			_, err := Issue(context.Background(), o)
			if err == nil || !strings.Contains(err.Error(), tt.errText) {
				t.Fatalf("err %v, want %q", err, tt.errText)
			}
			if tt.outDir == "" && len(dirEntries(t, out)) != 0 {
				t.Errorf("files written: %v", dirEntries(t, out))
			}
		})
	}
	// 64 bytes is the longest common name; 65 is refused.
	if err := project.CheckAgentCN(strings.Repeat("a", 64)); err != nil {
		t.Errorf("64-byte CN refused: %v", err)
	}
	if err := project.CheckAgentCN(strings.Repeat("a", 65)); err == nil {
		t.Errorf("65-byte CN accepted")
	}
}

func TestIssueCappedByCA(t *testing.T) {
	dir := t.TempDir()
	res, err := Generate(context.Background(), GenerateOptions{
		CertPath: dir + "/ca.crt.pem", KeyPath: dir + "/ca.key.pem", Subject: DefaultSubject("t"),
		Validity: 30 * 24 * time.Hour, Rand: rand.Reader, Now: fixedNow,
	})
	if err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(res.KeyPath)
	key, _ := ParsePrivateKey(data)
	leaf, err := Issue(context.Background(), IssueOptions{CA: res.Cert, CAKey: key, CN: project.AgentCNPrefix + "p-0", OutDir: t.TempDir(), Rand: rand.Reader, Now: fixedNow})
	if err != nil {
		t.Fatal(err)
	}
	if !leaf.Capped || !leaf.Cert.NotAfter.Equal(res.Cert.NotAfter) {
		t.Errorf("capped=%v notAfter=%v, want the CA's %v", leaf.Capped, leaf.Cert.NotAfter, res.Cert.NotAfter)
	}
}

func TestImport(t *testing.T) {
	src := t.TempDir()
	ca, caKey := genCA(t, src, KeyECP384)
	certPEM, _ := os.ReadFile(ca.CertPath)
	// Import from a PKCS#1/SEC1 key to show it is re-encoded as PKCS#8.
	sec1, _ := x509.MarshalECPrivateKey(caKey.(*ecdsa.PrivateKey))
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1})
	other := ecKey(t)
	otherPEM, _ := EncodePKCS8(other)
	nonCA := EncodeCertificate(mkCert(t, other.Public(), nil, other, func(c *x509.Certificate) { c.IsCA = false; c.MaxPathLenZero = false }))
	expired := EncodeCertificate(mkCert(t, other.Public(), nil, other, func(c *x509.Certificate) {
		c.NotBefore, c.NotAfter = testNow.Add(-48*time.Hour), testNow.Add(-24*time.Hour)
	}))
	tests := []struct {
		name       string
		cert, key  []byte
		input      bool   // an InputError
		failedRule string // a CheckError naming this rule
	}{
		{name: "good", cert: certPEM, key: keyPEM},
		{name: "garbage cert", cert: []byte("nope"), key: keyPEM, input: true},
		{name: "key as cert", cert: keyPEM, key: keyPEM, input: true},
		{name: "cert as key", cert: certPEM, key: certPEM, input: true},
		{name: "encrypted key", cert: certPEM, key: pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: []byte{0x30, 0}}), input: true},
		{name: "key mismatch", cert: certPEM, key: otherPEM, failedRule: RuleKeyMatches},
		{name: "non-CA", cert: nonCA, key: otherPEM, failedRule: RuleCABasicConstraints},
		{name: "expired CA", cert: expired, key: otherPEM, failedRule: RuleValidity},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dst := t.TempDir()
			res, err := Import(context.Background(), ImportOptions{
				CertPEM: tt.cert, KeyPEM: tt.key, CertPath: dst + "/agent-x509pop.crt.pem", KeyPath: dst + "/agent-x509pop.key.pem", Now: fixedNow,
			})
			switch {
			case tt.input:
				if !IsInputError(err) {
					t.Fatalf("err %v, want an input error", err)
				}
			case tt.failedRule != "":
				var ce *CheckError
				if !errors.As(err, &ce) {
					t.Fatalf("err %v, want a check error", err)
				}
				if r, _ := checklist.Find(ce.Results, tt.failedRule); r.Status != checklist.Fail {
					t.Errorf("rule %s is %s", tt.failedRule, r.Status)
				}
			default:
				if err != nil {
					t.Fatal(err)
				}
				if m := mode(t, res.KeyPath); m != 0o600 {
					t.Errorf("key mode %v", m)
				}
				if m := mode(t, res.CertPath); m != 0o644 {
					t.Errorf("cert mode %v", m)
				}
				data, _ := os.ReadFile(res.KeyPath)
				if b, _ := pem.Decode(data); b == nil || b.Type != "PRIVATE KEY" {
					t.Error("imported key not PKCS#8")
				}
				return
			}
			if got := dirEntries(t, dst); len(got) != 0 {
				t.Errorf("bad input wrote %v", got)
			}
		})
	}
}
