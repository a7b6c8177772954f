package pki

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/x509/pkix"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// cancelOnRead cancels a context once key generation has read randomness:
// an interrupt that lands while the key is being made.
type cancelOnRead struct {
	cancel context.CancelFunc
}

func (c cancelOnRead) Read(p []byte) (int, error) {
	c.cancel()
	return rand.Read(p)
}

// TestGenerateInterruptedWritesNothing: interrupted while making the key,
// Generate writes neither file (issue 21 item 2).
func TestGenerateInterruptedWritesNothing(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	_, err := Generate(ctx, GenerateOptions{CertPath: filepath.Join(dir, "ca.crt.pem"), KeyPath: filepath.Join(dir, "ca.key.pem"),
		Subject: pkix.Name{CommonName: "t"}, Rand: cancelOnRead{cancel}, Now: time.Now})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v, want context.Canceled", err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("wrote %v after the interrupt", ents)
	}
}

// TestForceKeepsTheReplacedCA: replacing a CA (Generate and Import with
// Force) first copies the old certificate and key into BackupDir, 0600 in
// a 0700 directory; a placeholder or a missing key is nothing to keep
// (issue 21 item 1).
func TestForceKeepsTheReplacedCA(t *testing.T) {
	dir := t.TempDir()
	backup := filepath.Join(dir, "state", "backup")
	cert, key := filepath.Join(dir, "ca.crt.pem"), filepath.Join(dir, "ca.key.pem")
	for _, f := range []string{cert, key} {
		if err := os.WriteFile(f, nil, 0o600); err != nil { // init's placeholders
			t.Fatal(err)
		}
	}
	opts := GenerateOptions{CertPath: cert, KeyPath: key, Subject: pkix.Name{CommonName: "t"}, Rand: rand.Reader, Now: time.Now, BackupDir: backup}
	first, err := Generate(context.Background(), opts)
	if err != nil || len(first.BackedUp) != 0 {
		t.Fatalf("over placeholders: backed up %v, err %v", first.BackedUp, err)
	}
	oldKey, _ := os.ReadFile(key)
	oldCert, _ := os.ReadFile(cert)
	opts.Force = true
	second, err := Generate(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	fp := SHA1Fingerprint(first.Cert)
	want := []string{filepath.Join(backup, fp+".key.pem"), filepath.Join(backup, fp+".crt.pem")}
	if len(second.BackedUp) != 2 || second.BackedUp[0] != want[0] || second.BackedUp[1] != want[1] {
		t.Fatalf("backed up %v, want %v", second.BackedUp, want)
	}
	for i, data := range [][]byte{oldKey, oldCert} {
		got, err := os.ReadFile(want[i])
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("%s: %v, not the replaced file", want[i], err)
		}
		if st, _ := os.Stat(want[i]); st.Mode().Perm() != 0o600 {
			t.Fatalf("%s mode %v", want[i], st.Mode().Perm())
		}
	}
	if st, _ := os.Stat(backup); st.Mode().Perm() != 0o700 {
		t.Fatalf("backup dir mode %v", st.Mode().Perm())
	}
	if now, _ := os.ReadFile(key); bytes.Equal(now, oldKey) {
		t.Fatal("the key was not replaced")
	}
	// Import over it keeps the second CA too.
	certPEM, _ := os.ReadFile(filepath.Join(backup, fp+".crt.pem"))
	keyPEM, _ := os.ReadFile(filepath.Join(backup, fp+".key.pem"))
	res, err := Import(context.Background(), ImportOptions{CertPEM: certPEM, KeyPEM: keyPEM, CertPath: cert, KeyPath: key,
		Force: true, Now: time.Now, BackupDir: backup})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.BackedUp) != 2 || filepath.Base(res.BackedUp[0]) != SHA1Fingerprint(second.Cert)+".key.pem" {
		t.Fatalf("import backed up %v", res.BackedUp)
	}
}
