package pki

import (
	"context"
	"crypto/rand"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spirepod/spirepod/internal/project"
)

// The real openssl is an independent judge of what Generate and Issue write.
func requireOpenSSL(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("openssl")
	if err != nil {
		t.Skip("openssl not on PATH")
	}
	return p
}

func openssl(t *testing.T, bin string, args ...string) string {
	t.Helper()
	out, err := exec.Command(bin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("openssl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func TestOpenSSLCrossCheck(t *testing.T) {
	bin := requireOpenSSL(t)
	for _, kt := range []KeyType{KeyECP256, KeyECP384, KeyRSA2048} {
		t.Run(string(kt), func(t *testing.T) {
			dir := t.TempDir()
			// Real clock: openssl verify uses the current time.
			res, err := Generate(context.Background(), GenerateOptions{
				CertPath: filepath.Join(dir, "ca.crt.pem"), KeyPath: filepath.Join(dir, "ca.key.pem"),
				KeyType: kt, Subject: DefaultSubject("payments"), Rand: rand.Reader, Now: time.Now,
			})
			if err != nil {
				t.Fatal(err)
			}
			text := openssl(t, bin, "x509", "-in", res.CertPath, "-text", "-noout")
			for _, want := range []string{
				"X509v3 Basic Constraints: critical",
				"CA:TRUE, pathlen:0",
				"X509v3 Key Usage: critical",
				"Digital Signature, Certificate Sign, CRL Sign",
				"X509v3 Subject Key Identifier",
			} {
				if !strings.Contains(text, want) {
					t.Errorf("openssl x509 -text lacks %q:\n%s", want, text)
				}
			}
			// openssl reads the key and agrees it is the certificate's.
			certPub := openssl(t, bin, "x509", "-in", res.CertPath, "-noout", "-pubkey")
			keyPub := openssl(t, bin, "pkey", "-in", res.KeyPath, "-pubout")
			if certPub != keyPub {
				t.Errorf("openssl: key's public half differs from the certificate's")
			}
			// SHA-1 fingerprint as openssl prints it, colons removed, lowercased.
			fp := openssl(t, bin, "x509", "-in", res.CertPath, "-noout", "-fingerprint", "-sha1")
			fp = strings.ToLower(strings.ReplaceAll(strings.TrimSpace(fp[strings.Index(fp, "=")+1:]), ":", ""))
			if fp != SHA1Fingerprint(res.Cert) {
				t.Errorf("openssl sha1 %s, spirepod %s", fp, SHA1Fingerprint(res.Cert))
			}

			keyData, _ := readFile(res.KeyPath)
			key, err := ParsePrivateKey(keyData)
			if err != nil {
				t.Fatal(err)
			}
			out := t.TempDir()
			leaf, err := Issue(context.Background(), IssueOptions{CA: res.Cert, CAKey: key, CN: project.AgentCNPrefix + "web-0", OutDir: out, Rand: rand.Reader, Now: time.Now})
			if err != nil {
				t.Fatal(err)
			}
			ltext := openssl(t, bin, "x509", "-in", leaf.CertPath, "-text", "-noout")
			for _, want := range []string{"Subject: CN = spire-agent-x509pop-web-0", "Digital Signature", "TLS Web Client Authentication", "CA:FALSE"} {
				if !strings.Contains(ltext, want) {
					t.Errorf("leaf: openssl x509 -text lacks %q:\n%s", want, ltext)
				}
			}
			if got := openssl(t, bin, "verify", "-CAfile", res.CertPath, leaf.CertPath); !strings.Contains(got, ": OK") {
				t.Errorf("openssl verify: %s", got)
			}
			openssl(t, bin, "pkey", "-in", leaf.KeyPath, "-noout")
		})
	}
}
