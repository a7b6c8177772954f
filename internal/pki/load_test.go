package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"strings"
	"testing"
)

// keyFixtures are made at test time; no key is committed.
type keyFixtures struct {
	ec                                          *ecdsa.PrivateKey
	rsa                                         *rsa.PrivateKey
	pkcs1, sec1, pkcs8EC, pkcs8RSA, ed, certPEM []byte
}

func makeKeyFixtures(t testing.TB) keyFixtures {
	t.Helper()
	var f keyFixtures
	f.ec = ecKey(t)
	var err error
	if f.rsa, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		t.Fatal(err)
	}
	f.pkcs1 = pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(f.rsa)})
	sec1, _ := x509.MarshalECPrivateKey(f.ec)
	f.sec1 = pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1})
	if f.pkcs8EC, err = EncodePKCS8(f.ec); err != nil {
		t.Fatal(err)
	}
	if f.pkcs8RSA, err = EncodePKCS8(f.rsa); err != nil {
		t.Fatal(err)
	}
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	edDER, _ := x509.MarshalPKCS8PrivateKey(edKey)
	f.ed = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: edDER})
	f.certPEM = EncodeCertificate(mkCert(t, f.ec.Public(), nil, f.ec, nil))
	return f
}

func TestParsePrivateKey(t *testing.T) {
	f := makeKeyFixtures(t)
	encrypted := pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: []byte{0x30, 0x00}})
	legacyEncrypted := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY",
		Headers: map[string]string{"Proc-Type": "4,ENCRYPTED", "DEK-Info": "AES-128-CBC,00000000000000000000000000000000"}, Bytes: []byte{1, 2, 3}})
	tests := []struct {
		name    string
		data    []byte
		match   any // the public key it must return
		wantErr error
		errText string
	}{
		{name: "PKCS1 RSA", data: f.pkcs1, match: &f.rsa.PublicKey},
		{name: "SEC1 EC", data: f.sec1, match: &f.ec.PublicKey},
		{name: "PKCS8 EC", data: f.pkcs8EC, match: &f.ec.PublicKey},
		{name: "PKCS8 RSA", data: f.pkcs8RSA, match: &f.rsa.PublicKey},
		{name: "cert then key", data: append(append([]byte{}, f.certPEM...), f.sec1...), match: &f.ec.PublicKey},
		{name: "EC PARAMETERS then key", data: append(pem.EncodeToMemory(&pem.Block{Type: "EC PARAMETERS", Bytes: []byte{6, 8, 42, 134, 72, 206, 61, 3, 1, 7}}), f.sec1...), match: &f.ec.PublicKey},
		{name: "certificate only", data: f.certPEM, wantErr: ErrCertificateNotKey},
		{name: "encrypted PKCS8", data: encrypted, wantErr: ErrEncryptedKey},
		{name: "legacy encrypted PEM", data: legacyEncrypted, wantErr: ErrEncryptedKey},
		{name: "garbage", data: []byte("hello, not a key\n"), wantErr: ErrNoPEM},
		{name: "empty", data: nil, wantErr: ErrNoPEM},
		{name: "ed25519", data: f.ed, wantErr: ErrUnsupportedKey},
		{name: "two keys", data: append(append([]byte{}, f.sec1...), f.pkcs1...), errText: "more than one private key"},
		{name: "corrupt DER", data: pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: []byte{1, 2, 3}}), errText: "parse EC PRIVATE KEY"},
		{name: "PKCS1 label on SEC1 DER", data: pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: f.sec1[:0]}), errText: "parse RSA PRIVATE KEY"},
		{name: "public key only", data: pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: []byte{1}}), errText: "no PRIVATE KEY block"},
		{name: "unknown private key label", data: pem.EncodeToMemory(&pem.Block{Type: "DSA PRIVATE KEY", Bytes: []byte{1}}), errText: "unsupported PEM block"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, err := ParsePrivateKey(tt.data)
			switch {
			case tt.wantErr != nil:
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err %v, want %v", err, tt.wantErr)
				}
			case tt.errText != "":
				if err == nil || !strings.Contains(err.Error(), tt.errText) {
					t.Fatalf("err %v, want %q", err, tt.errText)
				}
			default:
				if err != nil {
					t.Fatal(err)
				}
				if !k.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(tt.match) {
					t.Error("wrong key returned")
				}
			}
		})
	}
}

func TestParseCertificatesRejectsKeys(t *testing.T) {
	f := makeKeyFixtures(t)
	for name, data := range map[string][]byte{"sec1": f.sec1, "pkcs8": f.pkcs8EC, "pkcs1": f.pkcs1} {
		_, err := ParseCertificates(data)
		if err == nil || !strings.Contains(err.Error(), "where a certificate was expected") {
			t.Errorf("%s: err %v", name, err)
		}
	}
	if _, err := ParseCertificates([]byte("garbage")); !errors.Is(err, ErrNoCertificate) {
		t.Errorf("garbage: %v", err)
	}
}

func TestClassify(t *testing.T) {
	f := makeKeyFixtures(t)
	tests := map[string]struct {
		data []byte
		want Kind
	}{
		"cert":    {f.certPEM, KindCertificate},
		"key":     {f.sec1, KindKey},
		"both":    {append(append([]byte{}, f.certPEM...), f.pkcs8EC...), KindBoth},
		"garbage": {[]byte("x"), KindUnknown},
	}
	for name, tt := range tests {
		if got := Classify(tt.data); got != tt.want {
			t.Errorf("%s: %s, want %s", name, got, tt.want)
		}
	}
}

// FuzzLoad feeds arbitrary bytes to every loader entry point: none may
// panic, and a key it accepts must be usable.
func FuzzLoad(f *testing.F) {
	kf := makeKeyFixtures(f)
	for _, seed := range [][]byte{
		kf.pkcs1, kf.sec1, kf.pkcs8EC, kf.pkcs8RSA, kf.ed, kf.certPEM,
		append(append([]byte{}, kf.certPEM...), kf.sec1...),
		[]byte("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n"),
		// Malformed and encrypted blocks, encoded here so no key-like PEM text is committed.
		pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: []byte{0x30, 0}}),
		pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Headers: map[string]string{"Proc-Type": "4,ENCRYPTED"}, Bytes: []byte{1, 2, 3}}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: []byte{1, 2, 3}}),
		[]byte("garbage"), {}, {0xff, 0xfe},
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		_ = Classify(data)
		_ = ContainsPrivateKey(data)
		if certs, err := ParseCertificates(data); err == nil {
			for _, c := range certs {
				_ = Describe(c)
				_ = InspectCA("", c, nil, testNow)
				_ = InspectLeaf(c, LeafOptions{Intermediates: certs[1:], CA: certs[len(certs)-1], Now: testNow})
			}
		}
		if k, err := ParsePrivateKey(data); err == nil {
			if k == nil || k.Public() == nil {
				t.Fatal("nil key without error")
			}
			if _, err := EncodePKCS8(k); err != nil {
				t.Fatalf("accepted key does not re-encode: %v", err)
			}
		}
	})
}
