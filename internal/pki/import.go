package pki

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"github.com/spirepod/spirepod/internal/checklist"
)

// ImportOptions carry an existing CA (already read from its files) and
// where the scaffold expects it.
type ImportOptions struct {
	CertPEM, KeyPEM   []byte
	CertPath, KeyPath string // destinations
	Force             bool
	// DryRun runs every check and builds the result but writes nothing.
	DryRun bool
	Now    func() time.Time
	// BeforeCommit is a test hook, as in GenerateOptions.
	BeforeCommit func(path, tmp string) error
	// BackupDir keeps the CA Force replaces, as in GenerateOptions.
	BackupDir string
}

// InputError is an input file that cannot be used at all (not PEM, the
// wrong kind of block, an encrypted key). Which says "certificate" or "key".
type InputError struct {
	Which string
	Err   error
}

func (e *InputError) Error() string { return e.Which + ": " + e.Err.Error() }
func (e *InputError) Unwrap() error { return e.Err }

// CheckError is a CA that failed inspection; Results say why.
type CheckError struct{ Results []checklist.Result }

func (e *CheckError) Error() string {
	for _, r := range e.Results {
		if r.Status == checklist.Fail {
			return fmt.Sprintf("%s: %s", r.ID, r.Message)
		}
	}
	return "check failed"
}

// ImportResult is what Import put in place.
type ImportResult struct {
	Cert     *x509.Certificate
	Results  []checklist.Result
	CertPath string
	KeyPath  string
	// BackedUp are the copies of the replaced CA in BackupDir.
	BackedUp []string
}

// Import checks an existing CA and key as `inspect` does (plus that the key
// matches) and writes them under the scaffold's names: the certificate
// (0644) and the key re-encoded as PKCS#8 (0600). Nothing is written when
// a check fails.
func Import(ctx context.Context, opts ImportOptions) (*ImportResult, error) {
	certs, err := ParseCertificates(opts.CertPEM)
	if err != nil {
		return nil, &InputError{Which: "certificate", Err: err}
	}
	if len(certs) != 1 {
		return nil, &InputError{Which: "certificate", Err: fmt.Errorf("holds %d certificates; the team CA file must hold exactly one", len(certs))}
	}
	key, err := ParsePrivateKey(opts.KeyPEM)
	if err != nil {
		return nil, &InputError{Which: "key", Err: err}
	}
	ca := certs[0]
	rs := InspectCA("", ca, key, opts.Now())
	if checklist.Failed(rs) {
		return &ImportResult{Cert: ca, Results: rs}, &CheckError{Results: rs}
	}
	if err := checkTargets(opts.CertPath, opts.KeyPath, opts.Force); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	keyPEM, err := EncodePKCS8(key)
	if err != nil {
		return nil, err
	}
	res := &ImportResult{Cert: ca, Results: rs, CertPath: opts.CertPath, KeyPath: opts.KeyPath}
	if !opts.DryRun { // DryRun: every check ran, nothing is written
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if res.BackedUp, err = Backup(opts.CertPath, opts.KeyPath, opts.BackupDir); err != nil {
			return nil, err
		}
		if err := writePair(opts.CertPath, EncodeCertificate(ca), opts.KeyPath, keyPEM, opts.Force, opts.BeforeCommit); err != nil {
			return nil, err
		}
	}
	return res, nil
}

// IsInputError reports whether err is an unusable input file.
func IsInputError(err error) bool {
	var ie *InputError
	return errors.As(err, &ie)
}
