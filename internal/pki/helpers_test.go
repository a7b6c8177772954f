package pki

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"
)

var testNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func fixedNow() time.Time { return testNow }

func ecKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// mkCert signs a certificate for pub. parent nil means self-signed with key.
// mut edits the template, which starts as a valid CA profile.
func mkCert(t testing.TB, pub crypto.PublicKey, parent *x509.Certificate, parentKey crypto.Signer, mut func(*x509.Certificate)) *x509.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: "test CA"},
		NotBefore:             testNow.Add(-time.Hour),
		NotAfter:              testNow.Add(365 * 24 * time.Hour),
		KeyUsage:              CAKeyUsage,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	if mut != nil {
		mut(tmpl)
	}
	if parent == nil {
		parent = tmpl
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// genCA makes a CA with Generate into dir and returns it with its key.
func genCA(t testing.TB, dir string, kt KeyType) (*GenerateResult, crypto.Signer) {
	t.Helper()
	res, err := Generate(context.Background(), GenerateOptions{
		CertPath: filepath.Join(dir, "ca.crt.pem"),
		KeyPath:  filepath.Join(dir, "ca.key.pem"),
		KeyType:  kt,
		Subject:  DefaultSubject("payments"),
		Rand:     rand.Reader,
		Now:      fixedNow,
	})
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(res.KeyPath)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ParsePrivateKey(data)
	if err != nil {
		t.Fatal(err)
	}
	return res, key
}

func dirEntries(t testing.TB, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	return names
}

func mode(t testing.TB, path string) os.FileMode {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Mode().Perm()
}

func readFile(p string) ([]byte, error) { return os.ReadFile(p) }
