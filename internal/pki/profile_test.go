package pki

import (
	"crypto/x509"
	"io/fs"
	"slices"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/spirepod/spirepod/scaffoldfs"
)

// TestLeafProfileMatchesScaffold reads the cert-manager Certificate that the
// scaffold's gen-cert init container applies and fails when `pki issue`'s
// leaf profile has drifted from it.
func TestLeafProfileMatchesScaffold(t *testing.T) {
	tpl, err := fs.ReadFile(scaffoldfs.Scaffold(), "agent-certificates.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var cert struct {
		Kind string `yaml:"kind"`
		Spec struct {
			CommonName string `yaml:"commonName"`
			Duration   string `yaml:"duration"`
			PrivateKey struct {
				Algorithm string `yaml:"algorithm"`
				Size      int    `yaml:"size"`
				Encoding  string `yaml:"encoding"`
			} `yaml:"privateKey"`
			Usages []string `yaml:"usages"`
		} `yaml:"spec"`
	}
	if err := yaml.Unmarshal(tpl, &cert); err != nil {
		t.Fatalf("agent-certificates.yaml: %v", err)
	}
	if cert.Kind != "Certificate" {
		t.Fatalf("agent-certificates.yaml kind %q", cert.Kind)
	}
	s := cert.Spec
	// The common name is the project's (init renders it; scaffold's tests
	// check the rendered one against project.AgentCNTemplate).
	d, err := time.ParseDuration(s.Duration)
	if err != nil || d != LeafDuration {
		t.Errorf("template duration %q, pki LeafDuration %v", s.Duration, LeafDuration)
	}
	if s.PrivateKey.Algorithm != LeafKeyAlgorithm || s.PrivateKey.Size != LeafKeySize {
		t.Errorf("template key %s/%d, pki %s/%d", s.PrivateKey.Algorithm, s.PrivateKey.Size, LeafKeyAlgorithm, LeafKeySize)
	}
	enc := s.PrivateKey.Encoding
	if enc == "" {
		enc = "PKCS1" // cert-manager's default
	}
	if enc != LeafKeyEncoding {
		t.Errorf("template key encoding %s, pki %s", enc, LeafKeyEncoding)
	}
	if !slices.Equal(s.Usages, LeafUsages) {
		t.Errorf("template usages %v, pki %v", s.Usages, LeafUsages)
	}
	ku, eku, ok := UsagesFor(s.Usages)
	if !ok || ku != x509.KeyUsageDigitalSignature || !slices.Equal(eku, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}) {
		t.Errorf("template usages map to %b %v (ok=%v)", ku, eku, ok)
	}
}
