package pki

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/spirepod/spirepod/internal/checklist"
)

// want is one expected rule outcome.
type want struct {
	id     string
	status checklist.Status
	msg    string // substring of the message, if set
}

func assertRules(t *testing.T, rs []checklist.Result, wants []want) {
	t.Helper()
	for _, w := range wants {
		r, ok := checklist.Find(rs, w.id)
		if !ok {
			t.Errorf("rule %s missing", w.id)
			continue
		}
		if r.Status != w.status {
			t.Errorf("rule %s: status %s (%s), want %s", w.id, r.Status, r.Message, w.status)
		}
		if w.msg != "" && !strings.Contains(r.Message, w.msg) {
			t.Errorf("rule %s: message %q does not contain %q", w.id, r.Message, w.msg)
		}
		if (r.Status == checklist.Fail || r.Status == checklist.Warn) && r.Hint == "" {
			t.Errorf("rule %s: %s without a hint", w.id, r.Status)
		}
	}
}

// bigRSAPublicKey is a 9000-bit RSA public key; no private half is needed
// since another key signs the certificate.
func bigRSAPublicKey() *rsa.PublicKey {
	n := new(big.Int).Lsh(big.NewInt(1), 8999)
	n.Add(n, big.NewInt(12345))
	return &rsa.PublicKey{N: n, E: 65537}
}

func TestInspectCA(t *testing.T) {
	signer := ecKey(t)
	other := ecKey(t)
	rsa1024, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	edPub, _, _ := ed25519.GenerateKey(rand.Reader)
	allIDs := []string{RuleCABasicConstraints, RuleCAKeyCertSign, RuleCADigitalSignature, RuleKeyAlgorithm, RuleRSASize, RuleKeyMatches, RuleValidity, RuleLifetime90d}

	tests := []struct {
		name  string
		pub   crypto.PublicKey
		mut   func(*x509.Certificate)
		key   crypto.Signer
		now   time.Time
		wants []want
		fail  bool
	}{
		{name: "good CA", pub: signer.Public(), key: signer, wants: []want{
			{RuleCABasicConstraints, checklist.OK, ""}, {RuleCAKeyCertSign, checklist.OK, ""}, {RuleCADigitalSignature, checklist.OK, ""},
			{RuleKeyAlgorithm, checklist.OK, "ec-p256"}, {RuleRSASize, checklist.Skipped, ""}, {RuleKeyMatches, checklist.OK, ""},
			{RuleValidity, checklist.OK, ""}, {RuleLifetime90d, checklist.OK, "days left"},
		}},
		{name: "not a CA", pub: signer.Public(), fail: true, mut: func(c *x509.Certificate) { c.IsCA = false; c.MaxPathLenZero = false },
			wants: []want{{RuleCABasicConstraints, checklist.Fail, "parent certificate cannot sign this kind of certificate"}}},
		{name: "no basic constraints", pub: signer.Public(), fail: true, mut: func(c *x509.Certificate) {
			c.BasicConstraintsValid, c.IsCA, c.MaxPathLenZero = false, false, false
		}, wants: []want{{RuleCABasicConstraints, checklist.Fail, "x509: certificate signed by unknown authority"}}},
		{name: "no keyCertSign", pub: signer.Public(), fail: true, mut: func(c *x509.Certificate) {
			c.KeyUsage = x509.KeyUsageDigitalSignature | x509.KeyUsageCRLSign
		}, wants: []want{{RuleCAKeyCertSign, checklist.Fail, "parent certificate cannot sign this kind of certificate"}, {RuleCADigitalSignature, checklist.OK, ""}}},
		{name: "no digitalSignature warns", pub: signer.Public(), mut: func(c *x509.Certificate) {
			c.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign
		}, wants: []want{{RuleCAKeyCertSign, checklist.OK, ""}, {RuleCADigitalSignature, checklist.Warn, "SPIRE itself does not check"}}},
		{name: "no keyUsage at all", pub: signer.Public(), mut: func(c *x509.Certificate) { c.KeyUsage = 0 },
			wants: []want{{RuleCAKeyCertSign, checklist.OK, "no keyUsage"}, {RuleCADigitalSignature, checklist.Warn, ""}}},
		{name: "ed25519", pub: edPub, fail: true,
			wants: []want{{RuleKeyAlgorithm, checklist.Fail, "only supports RSA and ECDSA"}, {RuleRSASize, checklist.Skipped, ""}}},
		{name: "rsa 1024", pub: rsa1024.Public(), fail: true, wants: []want{{RuleKeyAlgorithm, checklist.OK, "rsa-1024"}, {RuleRSASize, checklist.Fail, "below 2048"}}},
		{name: "rsa 9000", pub: bigRSAPublicKey(), fail: true, wants: []want{{RuleRSASize, checklist.Fail, "over 8192"}}},
		{name: "key mismatch", pub: signer.Public(), key: other, fail: true, wants: []want{{RuleKeyMatches, checklist.Fail, "not the certificate's"}}},
		{name: "no key given", pub: signer.Public(), wants: []want{{RuleKeyMatches, checklist.Skipped, "no private key"}}},
		{name: "expired", pub: signer.Public(), fail: true, now: testNow.Add(400 * 24 * time.Hour),
			wants: []want{{RuleValidity, checklist.Fail, "has expired or is not yet valid"}, {RuleLifetime90d, checklist.Skipped, ""}}},
		{name: "not yet valid", pub: signer.Public(), fail: true, now: testNow.Add(-2 * time.Hour),
			wants: []want{{RuleValidity, checklist.Fail, "not valid before"}}},
		{name: "under 90 days left", pub: signer.Public(), now: testNow.Add(300 * 24 * time.Hour),
			wants: []want{{RuleValidity, checklist.OK, ""}, {RuleLifetime90d, checklist.Warn, "expires in 65 days"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := mkCert(t, tt.pub, &x509.Certificate{Subject: pkix.Name{CommonName: "signer"}}, signer, tt.mut)
			if tt.name == "good CA" || tt.name == "key mismatch" || tt.name == "no key given" {
				c = mkCert(t, tt.pub, nil, signer, tt.mut)
			}
			now := tt.now
			if now.IsZero() {
				now = testNow
			}
			rs := InspectCA("CA", c, tt.key, now)
			assertRules(t, rs, tt.wants)
			if got := checklist.Failed(rs); got != tt.fail {
				t.Errorf("Failed() = %v, want %v", got, tt.fail)
			}
			for _, id := range allIDs {
				if _, ok := checklist.Find(rs, id); !ok {
					t.Errorf("rule %s missing from the result", id)
				}
			}
		})
	}
}

func TestInspectLeaf(t *testing.T) {
	caKey := ecKey(t)
	ca := mkCert(t, caKey.Public(), nil, caKey, nil)
	otherKey := ecKey(t)
	otherCA := mkCert(t, otherKey.Public(), nil, otherKey, nil)
	nonCAKey := ecKey(t)
	nonCA := mkCert(t, nonCAKey.Public(), nil, nonCAKey, func(c *x509.Certificate) { c.IsCA = false; c.MaxPathLenZero = false })
	noSignCAKey := ecKey(t)
	noSignCA := mkCert(t, noSignCAKey.Public(), nil, noSignCAKey, func(c *x509.Certificate) { c.KeyUsage = x509.KeyUsageDigitalSignature })
	leafKey := ecKey(t)
	edPub, _, _ := ed25519.GenerateKey(rand.Reader)

	leafProfile := func(cn string) func(*x509.Certificate) {
		return func(c *x509.Certificate) {
			c.Subject = pkix.Name{CommonName: cn}
			c.IsCA, c.MaxPathLenZero = false, false
			c.KeyUsage = x509.KeyUsageDigitalSignature
			c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
		}
	}
	chain := func(extra func(*x509.Certificate), cn string) func(*x509.Certificate) {
		return func(c *x509.Certificate) {
			leafProfile(cn)(c)
			if extra != nil {
				extra(c)
			}
		}
	}
	good := "spire-agent-x509pop-web-0"
	tests := []struct {
		name     string
		pub      crypto.PublicKey
		parent   *x509.Certificate
		parentK  crypto.Signer
		mut      func(*x509.Certificate)
		ca       *x509.Certificate
		key      crypto.Signer
		now      time.Time
		wants    []want
		wantFail bool
	}{
		{name: "good leaf", pub: leafKey.Public(), parent: ca, parentK: caKey, mut: chain(nil, good), ca: ca, key: leafKey, wants: []want{
			{RuleLeafDigitalSignature, checklist.OK, ""}, {RuleKeyAlgorithm, checklist.OK, ""}, {RuleCNLength, checklist.OK, ""},
			{RuleCNForm, checklist.OK, "pod web-0 (guide naming)"}, {RuleChainsToCA, checklist.OK, ""}, {RuleValidity, checklist.OK, ""}, {RuleKeyMatches, checklist.OK, ""},
		}},
		{name: "client auth only", pub: leafKey.Public(), parent: ca, parentK: caKey, ca: ca, wantFail: true,
			mut:   chain(func(c *x509.Certificate) { c.KeyUsage = 0 }, good),
			wants: []want{{RuleLeafDigitalSignature, checklist.Fail, "certificate not intended for digital signature use"}}},
		{name: "key encipherment only", pub: leafKey.Public(), parent: ca, parentK: caKey, ca: ca, wantFail: true,
			mut:   chain(func(c *x509.Certificate) { c.KeyUsage = x509.KeyUsageKeyEncipherment }, good),
			wants: []want{{RuleLeafDigitalSignature, checklist.Fail, "unable to generate challenge"}}},
		{name: "ed25519 leaf", pub: edPub, parent: ca, parentK: caKey, mut: chain(nil, good), ca: ca, wantFail: true,
			wants: []want{{RuleKeyAlgorithm, checklist.Fail, "RSA and ECDSA"}}},
		{name: "CN too long", pub: leafKey.Public(), parent: ca, parentK: caKey, ca: ca, wantFail: true,
			mut:   chain(nil, "spire-agent-x509pop-"+strings.Repeat("a", 45)),
			wants: []want{{RuleCNLength, checklist.Fail, "65 bytes"}}},
		{name: "CN 64 bytes", pub: leafKey.Public(), parent: ca, parentK: caKey, ca: ca,
			mut:   chain(nil, "spire-agent-x509pop-"+strings.Repeat("a", 44)),
			wants: []want{{RuleCNLength, checklist.OK, "64 bytes"}, {RuleCNForm, checklist.OK, ""}}},
		{name: "CN wrong form", pub: leafKey.Public(), parent: ca, parentK: caKey, ca: ca, wantFail: true,
			mut: chain(nil, "web-0"), wants: []want{{RuleCNForm, checklist.Fail, "will not match"}}},
		{name: "CN namespaced form", pub: leafKey.Public(), parent: ca, parentK: caKey, ca: ca,
			mut: chain(nil, "web-0.team-a"), wants: []want{{RuleCNForm, checklist.OK, "pod web-0 in namespace team-a"}}},
		{name: "CN with two dots", pub: leafKey.Public(), parent: ca, parentK: caKey, ca: ca, wantFail: true,
			mut: chain(nil, "web-0.team-a.x"), wants: []want{{RuleCNForm, checklist.Fail, "not <pod>.<namespace>"}}},
		{name: "CN empty pod", pub: leafKey.Public(), parent: ca, parentK: caKey, ca: ca, wantFail: true,
			mut: chain(nil, "spire-agent-x509pop-"), wants: []want{{RuleCNForm, checklist.Fail, ""}}},
		{name: "CN bad pod name", pub: leafKey.Public(), parent: ca, parentK: caKey, ca: ca, wantFail: true,
			mut: chain(nil, "spire-agent-x509pop-Web_0"), wants: []want{{RuleCNForm, checklist.Fail, "not a valid pod name"}}},
		{name: "other CA", pub: leafKey.Public(), parent: otherCA, parentK: otherKey, mut: chain(nil, good), ca: ca, wantFail: true,
			wants: []want{{RuleChainsToCA, checklist.Fail, "x509: certificate signed by unknown authority"}}},
		{name: "issuer not a CA", pub: leafKey.Public(), parent: nonCA, parentK: nonCAKey, mut: chain(nil, good), ca: nonCA, wantFail: true,
			wants: []want{{RuleChainsToCA, checklist.Fail, "parent certificate cannot sign this kind of certificate"}}},
		{name: "issuer without keyCertSign", pub: leafKey.Public(), parent: noSignCA, parentK: noSignCAKey, mut: chain(nil, good), ca: noSignCA, wantFail: true,
			wants: []want{{RuleChainsToCA, checklist.Fail, "parent certificate cannot sign this kind of certificate"}}},
		{name: "no CA given", pub: leafKey.Public(), parent: ca, parentK: caKey, mut: chain(nil, good),
			wants: []want{{RuleChainsToCA, checklist.Skipped, "no team CA"}}},
		{name: "expired leaf", pub: leafKey.Public(), parent: ca, parentK: caKey, ca: ca, wantFail: true, now: testNow.Add(200 * 24 * time.Hour),
			mut:   chain(func(c *x509.Certificate) { c.NotAfter = testNow.Add(24 * time.Hour) }, good),
			wants: []want{{RuleValidity, checklist.Fail, "x509: certificate has expired or is not yet valid"}}},
		{name: "key mismatch", pub: leafKey.Public(), parent: ca, parentK: caKey, mut: chain(nil, good), ca: ca, key: otherKey, wantFail: true,
			wants: []want{{RuleKeyMatches, checklist.Fail, ""}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			leaf := mkCert(t, tt.pub, tt.parent, tt.parentK, tt.mut)
			now := tt.now
			if now.IsZero() {
				now = testNow
			}
			rs := InspectLeaf(leaf, LeafOptions{Group: "agent", CA: tt.ca, Key: tt.key, Now: now})
			assertRules(t, rs, tt.wants)
			if got := checklist.Failed(rs); got != tt.wantFail {
				t.Errorf("Failed() = %v, want %v: %+v", got, tt.wantFail, rs)
			}
			for _, id := range []string{RuleLeafDigitalSignature, RuleKeyAlgorithm, RuleCNLength, RuleCNForm, RuleChainsToCA, RuleValidity} {
				if _, ok := checklist.Find(rs, id); !ok {
					t.Errorf("rule %s missing", id)
				}
			}
		})
	}
}
