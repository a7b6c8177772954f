package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"time"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/spirepod/spirepod/internal/pki"
)

// cmdPKIFixture makes certificates and keys for the pki scripts at test
// time, so no private key is ever committed:
//
//	pki-fixture ca|ca-no-certsign|ca-expired|non-ca CERT KEY
//	pki-fixture leaf-no-digsig CERT KEY CA CAKEY
//	pki-fixture encrypted-key KEY
func cmdPKIFixture(ts *testscript.TestScript, neg bool, args []string) {
	if neg {
		ts.Fatalf("pki-fixture does not support !")
	}
	if len(args) < 2 {
		ts.Fatalf("usage: pki-fixture KIND FILE...")
	}
	kind := args[0]
	if kind == "encrypted-key" {
		// The block type is what makes it encrypted to every PEM reader.
		b := make([]byte, 64)
		_, _ = rand.Read(b)
		ts.Check(os.WriteFile(ts.MkAbs(args[1]), pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: b}), 0o600))
		return
	}
	if len(args) < 3 {
		ts.Fatalf("usage: pki-fixture %s CERT KEY", kind)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ts.Check(err)
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(now.UnixNano()),
		Subject:               pkix.Name{CommonName: "fixture " + kind},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(365 * 24 * time.Hour),
		KeyUsage:              pki.CAKeyUsage,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	parent, parentKey := tmpl, any(key)
	switch kind {
	case "ca":
	case "ca-no-certsign":
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature | x509.KeyUsageCRLSign
	case "ca-expired":
		tmpl.NotBefore, tmpl.NotAfter = now.Add(-48*time.Hour), now.Add(-24*time.Hour)
	case "ca-future":
		tmpl.NotBefore, tmpl.NotAfter = now.Add(24*time.Hour), now.Add(48*time.Hour)
	case "ca-ending":
		tmpl.NotAfter = now.Add(10 * 24 * time.Hour)
	case "non-ca":
		tmpl.IsCA, tmpl.KeyUsage = false, x509.KeyUsageDigitalSignature
	case "leaf-no-digsig":
		if len(args) != 5 {
			ts.Fatalf("usage: pki-fixture leaf-no-digsig CERT KEY CA CAKEY")
		}
		caPEM, err := os.ReadFile(ts.MkAbs(args[3]))
		ts.Check(err)
		cas, err := pki.ParseCertificates(caPEM)
		ts.Check(err)
		caKeyPEM, err := os.ReadFile(ts.MkAbs(args[4]))
		ts.Check(err)
		caKey, err := pki.ParsePrivateKey(caKeyPEM)
		ts.Check(err)
		parent, parentKey = cas[0], caKey
		tmpl.Subject = pkix.Name{CommonName: "spire-agent-x509pop-web-0"}
		tmpl.IsCA, tmpl.KeyUsage = false, 0
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	default:
		ts.Fatalf("pki-fixture: unknown kind %q", kind)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	ts.Check(err)
	ts.Check(os.WriteFile(ts.MkAbs(args[1]), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644))
	kd, err := x509.MarshalPKCS8PrivateKey(key)
	ts.Check(err)
	ts.Check(os.WriteFile(ts.MkAbs(args[2]), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kd}), 0o600))
}

// cmdFileMode: `file-mode FILE 600` fails unless FILE has that octal mode.
func cmdFileMode(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 2 {
		ts.Fatalf("usage: file-mode FILE OCTAL")
	}
	st, err := os.Stat(ts.MkAbs(args[0]))
	ts.Check(err)
	got := st.Mode().Perm()
	var want os.FileMode
	for _, c := range args[1] {
		want = want*8 + os.FileMode(c-'0')
	}
	if (got == want) == neg {
		ts.Fatalf("%s has mode %o, want %s%o", args[0], got, map[bool]string{true: "not ", false: ""}[neg], want)
	}
}
