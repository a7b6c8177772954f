package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestBundleSetWarnsBeforeScaffoldError: the library's warning event is
// printed when the CA is judged, so a CA near its end outside any scaffold
// shows the warning, then the scaffold error (exit 2), in that order; in a
// scaffold it is followed by the "Set" line and the file's path on stdout.
func TestBundleSetWarnsBeforeScaffoldError(t *testing.T) {
	wd := t.TempDir()
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "ending CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(10 * 24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(wd, "ca.pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}

	f, out, errOut := testFactoryPKI(t, wd)
	f.Now = func() time.Time { return now }
	err = bundleSetRun(context.Background(), &bundleSetOptions{f: f, File: "ca.pem"})
	var ce *cliError
	if !errors.As(err, &ce) || ce.code != exitUsage || !strings.Contains(err.Error(), "no spirepod.yaml found") {
		t.Fatalf("outside a scaffold: %v", err)
	}
	if got := errOut.String(); got != "warning: server CA CN=ending CA expires in 10 days (2026-03-11T12:00:00Z): ask the SPIRE operators for its successor\n" {
		t.Errorf("stderr %q", got)
	}

	iopts := &initOptions{f: f, Dir: "sc", Team: "payments", Namespace: "team-a", Env: "dev", Name: "spire-envoy-integration",
		Replicas: 1, ServiceAccount: "httpbin-client", Naming: "namespaced", Issuer: "namespaced"}
	cmd := newCmdInit(f, nil)
	cmd.SetContext(context.Background())
	if err := initRun(cmd, iopts); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	errOut.Reset()
	if err := bundleSetRun(context.Background(), &bundleSetOptions{f: f, File: "ca.pem", Dir: "sc"}); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(errOut.String()), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "warning: server CA CN=ending CA expires in 10 days") || !strings.HasPrefix(lines[1], "Set server CA CN=ending CA (sha256 ") {
		t.Errorf("stderr:\n%s", errOut)
	}
	if got, want := out.String(), filepath.Join(wd, "sc", "spire-bundle-configmap-dev.yaml")+"\n"; got != want {
		t.Errorf("stdout %q, want %q", got, want)
	}
}
