package pki

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/spirepod/spirepod/internal/project"
)

// IssueOptions say which agent leaf to issue and where.
type IssueOptions struct {
	CA    *x509.Certificate
	CAKey crypto.Signer
	// CN is the agent certificate's common name (project.AgentCN).
	CN string
	// Name is the files' base name (project.CertificateName); default CN.
	Name string
	// OutDir receives <Name>.crt.pem and <Name>.key.pem.
	OutDir string
	Force  bool
	// DryRun runs every check and builds the result but writes nothing.
	DryRun bool
	Rand   io.Reader
	Now    func() time.Time
	// BeforeCommit is a test hook, as in GenerateOptions.
	BeforeCommit func(path, tmp string) error
}

// IssueResult is what Issue made.
type IssueResult struct {
	Cert     *x509.Certificate
	CN       string
	CertPath string
	KeyPath  string
	// Capped is true when the CA expires before LeafDuration and the leaf's
	// NotAfter was cut to the CA's, as cert-manager's CA issuer does.
	Capped bool
}

// Issue issues one agent certificate from the team CA with the leaf profile
// of the scaffold's cert-manager Certificate: CN opts.CN,
// ECDSA P-256, key usage digital signature, extended key usage client auth,
// LeafDuration. The key is written SEC1 ("EC PRIVATE KEY", cert-manager's
// default PKCS1 encoding) with mode 0600.
func Issue(ctx context.Context, opts IssueOptions) (*IssueResult, error) {
	if err := project.CheckAgentCN(opts.CN); err != nil {
		return nil, err
	}
	if opts.CA == nil || opts.CAKey == nil {
		return nil, errors.New("the team CA certificate and key are required")
	}
	if !KeyMatches(opts.CA, opts.CAKey) {
		return nil, errors.New("the CA private key does not match the CA certificate")
	}
	cn, name := opts.CN, opts.Name
	if name == "" {
		name = cn
	}
	res := &IssueResult{
		CN:       cn,
		CertPath: filepath.Join(opts.OutDir, name+".crt.pem"),
		KeyPath:  filepath.Join(opts.OutDir, name+".key.pem"),
	}
	if err := checkTargets(res.CertPath, res.KeyPath, opts.Force); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if LeafKeyAlgorithm != "ECDSA" || LeafKeySize != 256 {
		return nil, fmt.Errorf("leaf profile %s/%d not implemented", LeafKeyAlgorithm, LeafKeySize)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), opts.Rand)
	if err != nil {
		return nil, fmt.Errorf("generate leaf key: %w", err)
	}
	ku, eku, ok := UsagesFor(LeafUsages)
	if !ok {
		return nil, fmt.Errorf("unknown usage in leaf profile %v", LeafUsages)
	}
	serial, err := RandomSerial(opts.Rand)
	if err != nil {
		return nil, err
	}
	now := opts.Now().UTC().Truncate(time.Second)
	notAfter := now.Add(LeafDuration)
	if notAfter.After(opts.CA.NotAfter) {
		notAfter, res.Capped = opts.CA.NotAfter, true
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             now,
		NotAfter:              notAfter,
		KeyUsage:              ku,
		ExtKeyUsage:           eku,
		BasicConstraintsValid: true,
		IsCA:                  false,
	}
	der, err := x509.CreateCertificate(opts.Rand, tmpl, opts.CA, key.Public(), opts.CAKey)
	if err != nil {
		return nil, fmt.Errorf("sign agent certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	sec1, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, err
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1})
	if !opts.DryRun { // DryRun: every check ran, nothing is written
		if err := writePair(res.CertPath, EncodeCertificate(cert), res.KeyPath, keyPEM, opts.Force, opts.BeforeCommit); err != nil {
			return nil, err
		}
	}
	res.Cert = cert
	return res, nil
}
