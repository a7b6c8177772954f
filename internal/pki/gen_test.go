package pki

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spirepod/spirepod/internal/checklist"
)

var (
	oidBasicConstraints = asn1.ObjectIdentifier{2, 5, 29, 19}
	oidKeyUsage         = asn1.ObjectIdentifier{2, 5, 29, 15}
)

func critical(c *x509.Certificate, oid asn1.ObjectIdentifier) (present, crit bool) {
	for _, e := range c.Extensions {
		if e.Id.Equal(oid) {
			return true, e.Critical
		}
	}
	return false, false
}

func TestGenerate(t *testing.T) {
	tests := []struct {
		kt      KeyType
		sigAlg  x509.SignatureAlgorithm
		keyDesc string
	}{
		{KeyECP256, x509.ECDSAWithSHA256, "ec-p256"},
		{KeyECP384, x509.ECDSAWithSHA384, "ec-p384"},
		{KeyRSA2048, x509.SHA256WithRSA, "rsa-2048"},
		{KeyRSA3072, x509.SHA256WithRSA, "rsa-3072"},
		{KeyRSA4096, x509.SHA256WithRSA, "rsa-4096"},
	}
	for _, tt := range tests {
		t.Run(string(tt.kt), func(t *testing.T) {
			dir := t.TempDir()
			res, key := genCA(t, dir, tt.kt)
			c := res.Cert
			if !c.BasicConstraintsValid || !c.IsCA || c.MaxPathLen != 0 || !c.MaxPathLenZero {
				t.Errorf("basic constraints: valid=%v CA=%v pathlen=%d zero=%v", c.BasicConstraintsValid, c.IsCA, c.MaxPathLen, c.MaxPathLenZero)
			}
			if p, crit := critical(c, oidBasicConstraints); !p || !crit {
				t.Errorf("basicConstraints present=%v critical=%v, want critical", p, crit)
			}
			if p, crit := critical(c, oidKeyUsage); !p || !crit {
				t.Errorf("keyUsage present=%v critical=%v, want critical", p, crit)
			}
			if c.KeyUsage != x509.KeyUsageDigitalSignature|x509.KeyUsageCertSign|x509.KeyUsageCRLSign {
				t.Errorf("key usage %b", c.KeyUsage)
			}
			if len(c.SubjectKeyId) == 0 {
				t.Error("no subject key identifier")
			}
			if n := c.SerialNumber.BitLen(); n < 100 || n > 128 || c.SerialNumber.Sign() <= 0 {
				t.Errorf("serial %x has %d bits", c.SerialNumber, n)
			}
			if c.SignatureAlgorithm != tt.sigAlg {
				t.Errorf("signature algorithm %v, want %v", c.SignatureAlgorithm, tt.sigAlg)
			}
			if got := Describe(c).KeyType; got != tt.keyDesc {
				t.Errorf("key type %q, want %q", got, tt.keyDesc)
			}
			if got := c.NotAfter.Sub(testNow); got != DefaultCAValidity {
				t.Errorf("NotAfter is now+%v, want %v", got, DefaultCAValidity)
			}
			if !c.NotBefore.Before(testNow) {
				t.Errorf("NotBefore %v not backdated", c.NotBefore)
			}
			if c.Subject.CommonName != "payments x509pop agent CA" {
				t.Errorf("subject %v", c.Subject)
			}
			if m := mode(t, res.KeyPath); m != 0o600 {
				t.Errorf("key mode %v, want 0600", m)
			}
			if m := mode(t, res.CertPath); m != 0o644 {
				t.Errorf("cert mode %v, want 0644", m)
			}
			data, _ := os.ReadFile(res.KeyPath)
			if b, _ := pem.Decode(data); b == nil || b.Type != "PRIVATE KEY" {
				t.Errorf("key is not PKCS#8 PEM")
			}
			if !KeyMatches(c, key) {
				t.Error("key does not match certificate")
			}
			rs := InspectCA("", c, key, testNow)
			for _, r := range rs {
				if r.Status == checklist.Fail || r.Status == checklist.Warn {
					t.Errorf("inspect of a generated CA: %s %s: %s", r.ID, r.Status, r.Message)
				}
			}
			if got := dirEntries(t, dir); !slices.Equal(got, []string{"ca.crt.pem", "ca.key.pem"}) {
				t.Errorf("dir holds %v", got)
			}
		})
	}
}

func TestGenerateRefusals(t *testing.T) {
	base := func(dir string) GenerateOptions {
		return GenerateOptions{
			CertPath: filepath.Join(dir, "ca.crt.pem"), KeyPath: filepath.Join(dir, "ca.key.pem"),
			Subject: DefaultSubject("t"), Rand: rand.Reader, Now: fixedNow,
		}
	}
	tests := []struct {
		name    string
		prep    func(t *testing.T, dir string, o *GenerateOptions)
		wantErr string
		isExist bool
	}{
		{"validity under a day", func(_ *testing.T, _ string, o *GenerateOptions) { o.Validity = 23 * time.Hour }, "shorter than the minimum", false},
		{"missing directory", func(_ *testing.T, dir string, o *GenerateOptions) {
			o.CertPath = filepath.Join(dir, "nope", "ca.crt.pem")
			o.KeyPath = filepath.Join(dir, "nope", "ca.key.pem")
		}, "no such file or directory", false},
		{"existing key", func(t *testing.T, dir string, o *GenerateOptions) {
			if err := os.WriteFile(o.KeyPath, []byte("old"), 0o600); err != nil {
				t.Fatal(err)
			}
		}, "ca.key.pem already exists", true},
		{"existing cert", func(t *testing.T, dir string, o *GenerateOptions) {
			if err := os.WriteFile(o.CertPath, []byte("old"), 0o644); err != nil {
				t.Fatal(err)
			}
		}, "ca.crt.pem already exists", true},
		{"no common name", func(_ *testing.T, _ string, o *GenerateOptions) { o.Subject.CommonName = "" }, "common name", false},
		{"unknown key type", func(_ *testing.T, _ string, o *GenerateOptions) { o.KeyType = "dsa" }, "unknown key type", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			o := base(dir)
			tt.prep(t, dir, &o)
			before := dirEntries(t, dir)
			_, err := Generate(context.Background(), o)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err %v, want %q", err, tt.wantErr)
			}
			if tt.isExist != errors.Is(err, fs.ErrExist) {
				t.Errorf("errors.Is(err, fs.ErrExist) = %v", !tt.isExist)
			}
			if got := dirEntries(t, dir); !slices.Equal(got, before) {
				t.Errorf("dir changed from %v to %v", before, got)
			}
			for _, p := range []string{o.KeyPath, o.CertPath} {
				if b, err := os.ReadFile(p); err == nil && string(b) != "old" {
					t.Errorf("%s was changed", p)
				}
			}
		})
	}
}

func TestGenerateForceReplaces(t *testing.T) {
	dir := t.TempDir()
	first, _ := genCA(t, dir, KeyECP256)
	res, err := Generate(context.Background(), GenerateOptions{
		CertPath: first.CertPath, KeyPath: first.KeyPath, Subject: DefaultSubject("t"),
		Force: true, Rand: rand.Reader, Now: fixedNow,
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Replaced == nil || !res.Replaced.Equal(first.Cert) {
		t.Error("Replaced is not the first CA")
	}
	if res.Cert.Equal(first.Cert) {
		t.Error("certificate not replaced")
	}
	if m := mode(t, res.KeyPath); m != 0o600 {
		t.Errorf("key mode %v after --force", m)
	}
}

// TestGenerateWriteFailure injects a failure just before each file is moved
// into place: the key stays 0600 (or absent), the pair never mismatches and
// no temporary file remains.
func TestGenerateWriteFailure(t *testing.T) {
	boom := errors.New("disk full")
	for _, tt := range []struct {
		name     string
		existing bool
		failOn   string // "key" or "crt"
	}{
		{"fresh, key write fails", false, "key"},
		{"fresh, cert write fails", false, "crt"},
		{"force, key write fails", true, "key"},
		{"force, cert write fails", true, "crt"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			certPath, keyPath := filepath.Join(dir, "ca.crt.pem"), filepath.Join(dir, "ca.key.pem")
			var oldCert, oldKey []byte
			if tt.existing {
				genCA(t, dir, KeyECP256)
				oldCert, _ = os.ReadFile(certPath)
				oldKey, _ = os.ReadFile(keyPath)
			}
			sawTemp := false
			_, err := Generate(context.Background(), GenerateOptions{
				CertPath: certPath, KeyPath: keyPath, Subject: DefaultSubject("t"),
				Force: tt.existing, Rand: rand.Reader, Now: fixedNow,
				BeforeCommit: func(path, tmp string) error {
					if path == keyPath {
						if m := mode(t, tmp); m != 0o600 {
							t.Errorf("temp key file mode %v, want 0600", m)
						}
					}
					if strings.Contains(filepath.Base(path), "."+tt.failOn+".") {
						sawTemp = true
						return boom
					}
					return nil
				},
			})
			if !errors.Is(err, boom) {
				t.Fatalf("err %v, want injected failure", err)
			}
			if !sawTemp {
				t.Fatal("hook never reached the failing file")
			}
			want := []string(nil)
			if tt.existing {
				want = []string{"ca.crt.pem", "ca.key.pem"}
			}
			if got := dirEntries(t, dir); !slices.Equal(got, want) {
				t.Fatalf("dir holds %v, want %v (temp file left, or a half pair)", got, want)
			}
			if tt.existing {
				if b, _ := os.ReadFile(keyPath); string(b) != string(oldKey) {
					t.Error("old key not restored")
				}
				if b, _ := os.ReadFile(certPath); string(b) != string(oldCert) {
					t.Error("old certificate changed")
				}
				if m := mode(t, keyPath); m != 0o600 {
					t.Errorf("key mode %v, want 0600", m)
				}
			}
		})
	}
}

func TestParseKeyType(t *testing.T) {
	for _, k := range KeyTypes {
		if got, err := ParseKeyType(string(k)); err != nil || got != k {
			t.Errorf("ParseKeyType(%q) = %q, %v", k, got, err)
		}
	}
	if _, err := ParseKeyType("ed25519"); err == nil || !strings.Contains(err.Error(), "ec-p256") {
		t.Errorf("ParseKeyType(ed25519) err %v, want list of types", err)
	}
}

func TestParseSubject(t *testing.T) {
	tests := []struct {
		in      string
		want    string
		wantErr string
	}{
		{"payments CA", "", `no KEY=VALUE (for a common name write "CN=payments CA")`},
		{"CN=x,O=Acme", "CN=x,O=Acme", ""},
		{"/C=JP/O=Woven/CN=team ca", "CN=team ca,O=Woven,C=JP", ""},
		{"cn=lower, ou=unit", "CN=lower,OU=unit", ""},
		{"", "", "empty"},
		{"O=Acme", "", "needs a CN"},
		{"CN=x,EMAIL=a@b", "", "not one of"},
		{"CN=x,O", "", "not KEY=VALUE"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			n, err := ParseSubject(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if n.String() != tt.want {
				t.Errorf("got %q, want %q", n.String(), tt.want)
			}
		})
	}
}

func TestRandomSerial(t *testing.T) {
	seen := map[string]bool{}
	for range 64 {
		s, err := RandomSerial(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		if s.Sign() <= 0 || s.BitLen() > 127 {
			t.Fatalf("serial %x: %d bits", s, s.BitLen())
		}
		if seen[s.String()] {
			t.Fatal("repeated serial")
		}
		seen[s.String()] = true
	}
	if _, err := RandomSerial(strings.NewReader("short")); err == nil {
		t.Error("short randomness accepted")
	}
}

func TestDescribe(t *testing.T) {
	k384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	c := mkCert(t, k384.Public(), nil, k384, nil)
	d := Describe(c)
	if d.KeyType != "ec-p384" || d.Selector != "x509pop:ca:fingerprint:"+d.SHA1 || len(d.SHA1) != 40 || len(d.SHA256) != 64 {
		t.Errorf("%+v", d)
	}
	rk, _ := rsa.GenerateKey(rand.Reader, 2048)
	if got := Describe(mkCert(t, rk.Public(), nil, rk, nil)).KeyType; got != "rsa-2048" {
		t.Errorf("rsa key type %q", got)
	}
}
