package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
)

// Errors the key loader returns (wrapped); the CLI turns each into one
// message naming the file.
var (
	// ErrNoPEM means the input holds no PEM block at all.
	ErrNoPEM = errors.New("no PEM data found")
	// ErrCertificateNotKey means only certificates were found where a private key was expected.
	ErrCertificateNotKey = errors.New("found a CERTIFICATE where a private key was expected")
	// ErrEncryptedKey means the key is password-protected; spirepod, cert-manager and the SPIRE agent need it unencrypted.
	ErrEncryptedKey = errors.New("the private key is encrypted (password-protected); cert-manager and SPIRE need an unencrypted key")
	// ErrUnsupportedKey means the key is neither RSA nor ECDSA.
	ErrUnsupportedKey = errors.New("unsupported private key type (want RSA or ECDSA)")
)

// ParsePrivateKey returns the one private key in PEM data: PKCS#1 ("RSA
// PRIVATE KEY"), SEC1 ("EC PRIVATE KEY") or PKCS#8 ("PRIVATE KEY"), the
// encodings the SPIRE agent and cert-manager read. Certificates next to the
// key are ignored, so a combined cert+key file works; a file with only
// certificates, an encrypted key, or more than one key is an error.
func ParsePrivateKey(data []byte) (crypto.Signer, error) {
	var (
		key     crypto.Signer
		sawCert bool
		sawPEM  bool
	)
	rest := data
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		sawPEM = true
		switch {
		case block.Type == "CERTIFICATE":
			sawCert = true
			continue
		case block.Type == "ENCRYPTED PRIVATE KEY",
			strings.Contains(block.Headers["Proc-Type"], "ENCRYPTED"):
			return nil, ErrEncryptedKey
		case !strings.HasSuffix(block.Type, "PRIVATE KEY"):
			continue // EC PARAMETERS and the like
		}
		if key != nil {
			return nil, errors.New("more than one private key found; keep one key per file")
		}
		k, err := parseKeyBlock(block)
		if err != nil {
			return nil, err
		}
		key = k
	}
	switch {
	case key != nil:
		return key, nil
	case sawCert:
		return nil, ErrCertificateNotKey
	case sawPEM:
		return nil, errors.New("no PRIVATE KEY block found")
	default:
		return nil, ErrNoPEM
	}
}

func parseKeyBlock(b *pem.Block) (crypto.Signer, error) {
	var (
		k   any
		err error
	)
	switch b.Type {
	case "RSA PRIVATE KEY":
		k, err = x509.ParsePKCS1PrivateKey(b.Bytes)
	case "EC PRIVATE KEY":
		k, err = x509.ParseECPrivateKey(b.Bytes)
	case "PRIVATE KEY":
		k, err = x509.ParsePKCS8PrivateKey(b.Bytes)
	default:
		return nil, fmt.Errorf("unsupported PEM block %q (want PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY)", b.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", b.Type, err)
	}
	switch key := k.(type) {
	case *rsa.PrivateKey:
		return key, nil
	case *ecdsa.PrivateKey:
		return key, nil
	case ed25519.PrivateKey:
		return nil, fmt.Errorf("%w: found Ed25519, which SPIRE x509pop does not accept", ErrUnsupportedKey)
	default:
		return nil, fmt.Errorf("%w: found %T", ErrUnsupportedKey, k)
	}
}

// EncodePKCS8 returns the PKCS#8 PEM of a private key.
func EncodePKCS8(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// KeyMatches reports whether key is the private half of c's public key.
func KeyMatches(c *x509.Certificate, key crypto.Signer) bool {
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	return ok && pub.Equal(c.PublicKey)
}

// Kind of PEM file, as Classify sees it.
type Kind string

const (
	KindCertificate Kind = "certificate"
	KindKey         Kind = "key"
	KindBoth        Kind = "certificate+key"
	KindUnknown     Kind = "unknown"
)

// Classify says what a PEM file holds, without parsing the DER.
func Classify(data []byte) Kind {
	var cert, key bool
	rest := data
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		switch {
		case block.Type == "CERTIFICATE":
			cert = true
		case strings.HasSuffix(block.Type, "PRIVATE KEY"):
			key = true
		}
	}
	switch {
	case cert && key:
		return KindBoth
	case cert:
		return KindCertificate
	case key:
		return KindKey
	}
	return KindUnknown
}
