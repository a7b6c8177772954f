// Package pki makes, imports, inspects and issues the x509pop certificates a
// team needs: the team CA that the team's cert-manager issuer signs with and the
// SPIRE server trusts, and agent leaves like the ones cert-manager issues.
package pki

import (
	"bytes"
	"crypto/sha1" //nolint:gosec // SPIRE's x509pop:ca:fingerprint selector is defined as SHA-1
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"regexp"
)

// SelectorPrefix is SPIRE's x509pop selector for the CA that issued an agent's certificate.
const SelectorPrefix = "x509pop:ca:fingerprint:"

// CNSelectorPrefix is SPIRE's x509pop selector for an agent certificate's
// subject common name.
const CNSelectorPrefix = "x509pop:subject:cn:"

// SHA1Fingerprint is the SHA-1 of the certificate's DER as 40 lowercase hex
// digits with no separators: exactly what SPIRE's x509pop:ca:fingerprint
// selector matches (uppercase, colons or SHA-256 never match).
func SHA1Fingerprint(c *x509.Certificate) string {
	sum := sha1.Sum(c.Raw) //nolint:gosec
	return hex.EncodeToString(sum[:])
}

// SHA256Fingerprint is the SHA-256 of the DER as lowercase hex.
func SHA256Fingerprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:])
}

// CAFingerprintSelector is the ready-made x509pop:ca:fingerprint:<sha1> selector.
func CAFingerprintSelector(ca *x509.Certificate) string {
	return SelectorPrefix + SHA1Fingerprint(ca)
}

var privateKeyPEM = regexp.MustCompile(`-----BEGIN ([A-Z0-9]+ )*PRIVATE KEY-----`)

// ContainsPrivateKey reports whether data holds a PEM private key of any kind
// (PKCS#1, PKCS#8, SEC1, encrypted). The last guard before anything leaves the machine.
func ContainsPrivateKey(data []byte) bool {
	return privateKeyPEM.Match(data)
}

// ErrNoCertificate means the input held no PEM CERTIFICATE block.
var ErrNoCertificate = errors.New("no PEM CERTIFICATE block found")

// ParseCertificates parses every CERTIFICATE block in PEM data. Other block
// types are an error, so a key passed where a certificate belongs is caught.
func ParseCertificates(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	rest := bytes.TrimSpace(data)
	for len(rest) > 0 {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			if len(certs) == 0 {
				return nil, ErrNoCertificate
			}
			// Text around the blocks (a comment, openssl's "subject=" lines)
			// is dropped, after the last block as before the first; a block
			// that begins and does not end is not text.
			if bytes.Contains(rest, []byte("-----BEGIN")) {
				return nil, fmt.Errorf("certificate %d is not complete PEM (no matching -----END line)", len(certs)+1)
			}
			break
		}
		if block.Type != "CERTIFICATE" {
			if ContainsPrivateKey(pem.EncodeToMemory(&pem.Block{Type: block.Type})) || block.Type == "PRIVATE KEY" {
				return nil, fmt.Errorf("found a %s where a certificate was expected", block.Type)
			}
			return nil, fmt.Errorf("found a PEM %q block where a certificate was expected", block.Type)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %w", len(certs)+1, err)
		}
		certs = append(certs, c)
		rest = bytes.TrimSpace(rest)
	}
	if len(certs) == 0 {
		return nil, ErrNoCertificate
	}
	return certs, nil
}

// EncodeCertificate returns the PEM of one certificate.
func EncodeCertificate(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}
