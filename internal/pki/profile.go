package pki

import (
	"crypto/x509"
	"time"
)

// The agent leaf profile: what the scaffold's cert-manager Certificate
// (agent-certificates.yaml) asks for. `pki issue` issues
// exactly this; profile_test.go reads the embedded template and fails when
// the two drift apart.
const (
	// LeafDuration is spec.duration.
	LeafDuration = 8760 * time.Hour
	// LeafKeyAlgorithm and LeafKeySize are spec.privateKey.algorithm and .size.
	LeafKeyAlgorithm = "ECDSA"
	LeafKeySize      = 256
	// LeafKeyEncoding is cert-manager's default spec.privateKey.encoding:
	// PKCS1, which for an ECDSA key means a SEC1 "EC PRIVATE KEY" block.
	LeafKeyEncoding = "PKCS1"
)

// LeafUsages is spec.usages, in cert-manager's words.
var LeafUsages = []string{"digital signature", "client auth"}

// certManagerKeyUsages maps cert-manager usage names to x509 key usages.
var certManagerKeyUsages = map[string]x509.KeyUsage{
	"digital signature":  x509.KeyUsageDigitalSignature,
	"key encipherment":   x509.KeyUsageKeyEncipherment,
	"content commitment": x509.KeyUsageContentCommitment,
	"data encipherment":  x509.KeyUsageDataEncipherment,
	"key agreement":      x509.KeyUsageKeyAgreement,
	"cert sign":          x509.KeyUsageCertSign,
	"crl sign":           x509.KeyUsageCRLSign,
}

// certManagerExtKeyUsages maps cert-manager usage names to extended key usages.
var certManagerExtKeyUsages = map[string]x509.ExtKeyUsage{
	"server auth":      x509.ExtKeyUsageServerAuth,
	"client auth":      x509.ExtKeyUsageClientAuth,
	"code signing":     x509.ExtKeyUsageCodeSigning,
	"email protection": x509.ExtKeyUsageEmailProtection,
}

// UsagesFor turns cert-manager usage names into x509 usages; ok is false
// for a name it does not know.
func UsagesFor(names []string) (ku x509.KeyUsage, eku []x509.ExtKeyUsage, ok bool) {
	for _, n := range names {
		if u, found := certManagerKeyUsages[n]; found {
			ku |= u
			continue
		}
		if u, found := certManagerExtKeyUsages[n]; found {
			eku = append(eku, u)
			continue
		}
		return 0, nil, false
	}
	return ku, eku, true
}

// The CA profile: what `pki gen` makes.
const (
	// DefaultCAValidity is ten years of 365 days, like openssl -days 3650.
	DefaultCAValidity = 10 * 365 * 24 * time.Hour
	// MinCAValidity is the shortest CA `pki gen` makes.
	MinCAValidity = 24 * time.Hour
	// CAKeyUsage is the guide's digital signature plus what a CA needs.
	CAKeyUsage = x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign | x509.KeyUsageCRLSign
	// caBackdate moves NotBefore into the past so a server whose clock is a
	// little behind still accepts a CA made a moment ago.
	caBackdate = 5 * time.Minute
	// LifetimeWarning is the remaining lifetime under which inspect warns.
	LifetimeWarning = 90 * 24 * time.Hour
	// MaxRSABits is the largest RSA key inspect accepts (Go's crypto refuses to verify larger).
	MaxRSABits = 8192
	// MinRSABits is the smallest RSA key inspect accepts.
	MinRSABits = 2048
)
