package pki

import (
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	"github.com/spirepod/spirepod/internal/checklist"
)

// Rule IDs of loading the team CA (before the inspect rules).
const (
	RuleCAFiles    = "ca-files"
	RuleCAParses   = "ca-parses"
	RuleCAKeyParse = "ca-key-parses"
)

// Why a team CA cannot be used.
var (
	// ErrTeamCAMissing: no file, or the empty placeholder `spirepod init` writes.
	ErrTeamCAMissing = errors.New("no team CA yet")
	// ErrPrivateKeyInCert: the certificate file holds a private key.
	ErrPrivateKeyInCert = errors.New("the certificate file holds a PEM private key")
	// ErrInspectFailed: the CA loads but fails a pki inspect rule.
	ErrInspectFailed = errors.New("the team CA fails pki inspect")
)

// TeamCAOptions say which files hold the team CA and when to judge it.
type TeamCAOptions struct {
	CertPath string
	// KeyPath is the CA's private key; "" loads no key and skips key-matches.
	KeyPath string
	Now     time.Time
	// Group names the checks; default "team CA".
	Group string
}

// TeamCA is a team CA loaded from disk and judged by every rule: the files
// exist and are not placeholders, the certificate file holds exactly one
// certificate and no key, the key parses, and pki inspect's CA rules.
type TeamCA struct {
	Cert    *x509.Certificate
	Key     crypto.Signer
	Results []checklist.Result
	// Err is why the CA cannot be used (a *TeamCAError), nil when it can.
	Err error
}

// TeamCAError names the file at fault and the reason.
type TeamCAError struct {
	Path   string
	Reason error
	// Input is true when the file itself is wrong (missing, unreadable, not
	// a single certificate, a key in it), false when it loads but fails a rule.
	Input bool
	// Rule is the failing check.
	Rule checklist.Result
}

func (e *TeamCAError) Error() string {
	if e.Rule.Message != "" {
		return fmt.Sprintf("%s: %s: %s", e.Path, e.Rule.Name, e.Rule.Message)
	}
	return fmt.Sprintf("%s: %v", e.Path, e.Reason)
}

func (e *TeamCAError) Unwrap() error { return e.Reason }

// Hint is what to do about it.
func (e *TeamCAError) Hint() string { return e.Rule.Hint }

// LoadTeamCA loads and judges the team CA. It never fails: problems are in
// Results and the first one in Err.
func LoadTeamCA(o TeamCAOptions) *TeamCA {
	group := o.Group
	if group == "" {
		group = "team CA"
	}
	t := &TeamCA{}
	fail := func(path, id, name string, reason error, msg, hint string, input bool) *TeamCA {
		r := result(group, id, name, checklist.Fail, msg, hint)
		t.Results = append(t.Results, r)
		t.Err = &TeamCAError{Path: path, Reason: reason, Input: input, Rule: r}
		return t
	}
	const filesName = "team CA files exist"
	genHint := "run `spirepod pki gen` (or `spirepod pki import CERT KEY`)"
	paths := []string{o.CertPath}
	if o.KeyPath != "" {
		paths = append(paths, o.KeyPath)
	}
	for _, p := range paths {
		if _, err := os.Stat(p); errors.Is(err, fs.ErrNotExist) || IsPlaceholder(p) {
			what := "missing"
			if err == nil {
				what = "empty (the placeholder `spirepod init` writes)"
			}
			return fail(p, RuleCAFiles, filesName, ErrTeamCAMissing, p+" is "+what, genHint, true)
		}
	}
	certPEM, err := os.ReadFile(o.CertPath)
	if err != nil {
		return fail(o.CertPath, RuleCAFiles, filesName, err, err.Error(), "check the file's permissions", true)
	}
	t.Results = append(t.Results, result(group, RuleCAFiles, filesName, checklist.OK, "", ""))
	const parseName = "team CA certificate parses (one certificate, no key)"
	if ContainsPrivateKey(certPEM) {
		return fail(o.CertPath, RuleCAParses, parseName, ErrPrivateKeyInCert,
			"the certificate file holds a private key", "keep the key in its own file; pass the certificate only", true)
	}
	certs, err := ParseCertificates(certPEM)
	if err != nil {
		return fail(o.CertPath, RuleCAParses, parseName, err, err.Error(), "re-create it with `spirepod pki gen --force`", true)
	}
	if len(certs) != 1 {
		return fail(o.CertPath, RuleCAParses, parseName, fmt.Errorf("%d certificates", len(certs)),
			fmt.Sprintf("the file holds %d certificates; the team CA is exactly one", len(certs)),
			"keep only the team CA certificate in the file", true)
	}
	t.Cert = certs[0]
	t.Results = append(t.Results, result(group, RuleCAParses, parseName, checklist.OK, "", ""))
	if o.KeyPath != "" {
		keyPEM, err := os.ReadFile(o.KeyPath)
		if err != nil {
			return fail(o.KeyPath, RuleCAKeyParse, "team CA key parses", err, err.Error(), "check the file's permissions", true)
		}
		if t.Key, err = ParsePrivateKey(keyPEM); err != nil {
			return fail(o.KeyPath, RuleCAKeyParse, "team CA key parses", err, err.Error(), "re-create the CA with `spirepod pki gen --force`", true)
		}
		t.Results = append(t.Results, result(group, RuleCAKeyParse, "team CA key parses", checklist.OK, "", ""))
	}
	t.Results = append(t.Results, InspectCA(group, t.Cert, t.Key, o.Now)...)
	for _, r := range t.Results {
		if r.Status == checklist.Fail {
			t.Err = &TeamCAError{Path: o.CertPath, Reason: ErrInspectFailed, Rule: r}
			break
		}
	}
	return t
}
