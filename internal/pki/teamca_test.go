package pki

import (
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/spirepod/spirepod/internal/checklist"
)

func TestLoadTeamCA(t *testing.T) {
	key := ecKey(t)
	ca := mkCert(t, &key.PublicKey, nil, key, nil)
	other := ecKey(t)
	keyPEM, err := EncodePKCS8(key)
	if err != nil {
		t.Fatal(err)
	}
	otherPEM, err := EncodePKCS8(other)
	if err != nil {
		t.Fatal(err)
	}
	notCA := mkCert(t, &key.PublicKey, nil, key, func(c *x509.Certificate) { c.IsCA, c.MaxPathLenZero, c.KeyUsage = false, false, 0 })
	caPEM := EncodeCertificate(ca)

	tests := []struct {
		name      string
		cert, key []byte // nil: file absent
		withKey   bool
		reason    error // errors.Is target; nil means usable
		input     bool
		failedID  string
	}{
		{name: "good with key", cert: caPEM, key: keyPEM, withKey: true},
		{name: "good without key", cert: caPEM},
		{name: "missing", reason: ErrTeamCAMissing, input: true, failedID: RuleCAFiles},
		{name: "placeholder", cert: []byte{}, reason: ErrTeamCAMissing, input: true, failedID: RuleCAFiles},
		{name: "key placeholder", cert: caPEM, key: []byte{}, withKey: true, reason: ErrTeamCAMissing, input: true, failedID: RuleCAFiles},
		{name: "private key in the certificate file", cert: append(append([]byte{}, caPEM...), keyPEM...), reason: ErrPrivateKeyInCert, input: true, failedID: RuleCAParses},
		{name: "garbage", cert: []byte("not pem"), reason: ErrNoCertificate, input: true, failedID: RuleCAParses},
		{name: "two certificates", cert: append(append([]byte{}, caPEM...), caPEM...), input: true, failedID: RuleCAParses},
		{name: "key does not match", cert: caPEM, key: otherPEM, withKey: true, reason: ErrInspectFailed, failedID: RuleKeyMatches},
		{name: "not a CA", cert: EncodeCertificate(notCA), reason: ErrInspectFailed, failedID: RuleCABasicConstraints},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			o := TeamCAOptions{CertPath: filepath.Join(dir, "ca.crt.pem"), Now: testNow}
			if tt.cert != nil {
				if err := os.WriteFile(o.CertPath, tt.cert, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if tt.withKey {
				o.KeyPath = filepath.Join(dir, "ca.key.pem")
				if tt.key != nil {
					if err := os.WriteFile(o.KeyPath, tt.key, 0o600); err != nil {
						t.Fatal(err)
					}
				}
			}
			got := LoadTeamCA(o)
			if tt.failedID == "" {
				if got.Err != nil || checklist.Failed(got.Results) || got.Cert == nil || (tt.withKey && got.Key == nil) {
					t.Fatalf("want usable, got err %v, results %+v", got.Err, got.Results)
				}
				return
			}
			var te *TeamCAError
			if !errors.As(got.Err, &te) {
				t.Fatalf("want a *TeamCAError, got %v", got.Err)
			}
			if tt.reason != nil && !errors.Is(got.Err, tt.reason) {
				t.Errorf("reason %v, want %v", te.Reason, tt.reason)
			}
			if te.Input != tt.input || te.Rule.ID != tt.failedID {
				t.Errorf("input=%v rule=%s, want input=%v rule=%s (%s)", te.Input, te.Rule.ID, tt.input, tt.failedID, te.Rule.Message)
			}
			if r, ok := checklist.Find(got.Results, tt.failedID); !ok || r.Status != checklist.Fail {
				t.Errorf("results lack a failed %s: %+v", tt.failedID, got.Results)
			}
		})
	}
}
