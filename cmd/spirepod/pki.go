package main

import (
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/spirepod/spirepod/internal/pki"
	"github.com/spirepod/spirepod/internal/project"
)

func newCmdPKI(f *Factory) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "pki",
		Short: "Make, import, inspect and issue the team CA and agent certificates for x509pop (guide step 2)",
		Long: reflow(`The team CA signs every agent certificate (cert-manager's ` + defaultScaffoldFacts().Issuer + ` uses it,
from the Secret ` + defaultScaffoldFacts().CASecret + `; ` + clusterIssuerNote + `) and goes
on the SPIRE server's x509pop trust list. It lives in the scaffold as
` + project.DefaultPaths.CACert + ` and ` + path.Base(project.DefaultPaths.CAKey) + ` (the key is git-ignored, never printed, never in a PR).

  spirepod pki gen          make a new team CA
  spirepod pki import       use a CA you already have
  spirepod pki inspect      predict what SPIRE and cert-manager will say about a certificate
  spirepod pki issue        issue one agent certificate, as the scaffold's gen-cert would
  spirepod pki rotate       replace the team CA in phases, without a failed SVID fetch`),
	}
	cmd.AddCommand(
		newCmdPKIGen(f, nil),
		newCmdPKIImport(f, nil),
		newCmdPKIInspect(f, nil),
		newCmdPKIIssue(f, nil),
		newCmdPKIRotate(f, nil),
	)
	return cmd
}

// pkiProject finds the scaffold from --dir (which must exist) or the
// working directory.
func pkiProject(f *Factory, dir string) (*project.Project, error) {
	if dir != "" {
		abs, err := f.Abs(dir)
		if err != nil {
			return nil, err
		}
		st, err := os.Stat(abs)
		if err != nil {
			return nil, usageError("pass the scaffold directory that `spirepod init` made", "--dir %s: %v", dir, pathErr(err))
		}
		if !st.IsDir() {
			return nil, usageError("pass the scaffold directory that `spirepod init` made", "--dir %s is not a directory", dir)
		}
	}
	return f.Project(dir)
}

// loadTeamCA loads and judges the team CA through pki.LoadTeamCA: the
// certificate at certPath and, when keyPath is not empty, its key. flag names
// the flag the paths came from ("" for the scaffold's). A CA that cannot be
// used is an error naming the file, with the failing checks printed on stderr
// (unless -o json) and the rule's hint.
func loadTeamCA(f *Factory, certPath, keyPath, flag string) (*pki.TeamCA, error) {
	o := pki.TeamCAOptions{Now: f.Now()}
	var err error
	if o.CertPath, err = f.Abs(certPath); err != nil {
		return nil, err
	}
	if keyPath != "" {
		if o.KeyPath, err = f.Abs(keyPath); err != nil {
			return nil, err
		}
	}
	o.Group = "team CA " + displayPath(f, o.CertPath)
	t := pki.LoadTeamCA(o)
	if err := teamCAInputError(f, t, flag); err != nil {
		return t, err
	}
	var te *pki.TeamCAError
	if !errors.As(t.Err, &te) {
		return t, nil
	}
	if !f.JSON() {
		printChecks(f.IO, f.IO.ErrOut, t.Results)
	}
	return t, failure(fmt.Errorf("team CA %s fails %s: %s", displayPath(f, te.Path), te.Rule.ID, te.Rule.Message), te.Hint())
}

// teamCAInputError is the usage error for a team CA whose files are missing
// or malformed (exit 2), or nil when the files load (whatever rules fail).
func teamCAInputError(f *Factory, t *pki.TeamCA, flag string) error {
	var te *pki.TeamCAError
	if !errors.As(t.Err, &te) || !te.Input {
		return nil
	}
	where := displayPath(f, te.Path)
	if errors.Is(te.Reason, pki.ErrTeamCAMissing) {
		hint := "make one with `spirepod pki gen` (or `spirepod pki import CERT KEY`)"
		if flag != "" {
			hint = "pass an existing file to " + flag
		}
		return usageError(hint, "no team CA at %s (%s)", where, te.Rule.Message)
	}
	return usageError(te.Hint(), "team CA %s: %s", where, pathErr(te.Reason))
}

// scaffoldCA is the team CA of the scaffold: certificate, and key when withKey.
func scaffoldCAPaths(p *project.Project, withKey bool) (cert, key string) {
	cert = p.Path(p.Paths.CACert)
	if withKey {
		key = p.Path(p.Paths.CAKey)
	}
	return cert, key
}

// pkiReadFile reads an input file; a missing or unreadable file is a usage
// error naming it and the flag or argument it came from.
func pkiReadFile(f *Factory, what, path string) ([]byte, error) {
	data, err := f.ReadFile(path)
	if err != nil {
		return nil, usageError("check the path", "%s %s: %v", what, path, pathErr(err))
	}
	return data, nil
}

// pkiReadKey reads and parses a private key file.
func pkiReadKey(f *Factory, what, path string) (crypto.Signer, error) {
	data, err := pkiReadFile(f, what, path)
	if err != nil {
		return nil, err
	}
	key, err := pki.ParsePrivateKey(data)
	if err != nil {
		return nil, usageError(pkiKeyHint(err), "%s %s: %v", what, path, err)
	}
	return key, nil
}

func pkiKeyHint(err error) string {
	switch {
	case errors.Is(err, pki.ErrEncryptedKey):
		return "decrypt it first: openssl pkey -in KEY -out KEY.plain (keep the result out of git)"
	case errors.Is(err, pki.ErrCertificateNotKey):
		return "pass the private key file (PEM \"PRIVATE KEY\", \"EC PRIVATE KEY\" or \"RSA PRIVATE KEY\")"
	case errors.Is(err, pki.ErrUnsupportedKey):
		return "SPIRE x509pop needs an RSA or ECDSA key"
	}
	return "pass a PEM private key (PKCS#1, PKCS#8 or SEC1)"
}

// pkiReadCerts reads and parses a PEM certificate file.
func pkiReadCerts(f *Factory, what, path string) ([]*x509.Certificate, error) {
	data, err := pkiReadFile(f, what, path)
	if err != nil {
		return nil, err
	}
	certs, err := pki.ParseCertificates(data)
	if err != nil {
		hint := "pass a PEM certificate file (-----BEGIN CERTIFICATE-----)"
		if pki.Classify(data) == pki.KindKey {
			hint = "that file is a private key; pass the certificate (keys go to --key)"
		}
		return nil, usageError(hint, "%s %s: %v", what, path, err)
	}
	return certs, nil
}

// pkiWriteError translates the library's write errors once, at the edge.
func pkiWriteError(f *Factory, err error) error {
	var ee *pki.ExistsError
	if errors.As(err, &ee) {
		return usageError("pass --force to replace it", "%s already exists; nothing was written", displayPath(f, ee.Path))
	}
	if errors.Is(err, fs.ErrNotExist) {
		return usageError("run `spirepod init` to create the scaffold, or create the directory", "%v; nothing was written", err)
	}
	return fileFailure(f, err)
}

// displayPath shows p relative to the working directory when it is inside it.
func displayPath(f *Factory, p string) string {
	wd, err := f.Getwd()
	if err != nil {
		return p
	}
	if rel, err := filepath.Rel(wd, p); err == nil && !strings.HasPrefix(rel, "..") {
		return rel
	}
	return p
}

var validityUnit = regexp.MustCompile(`^(\d+)([ywd])`)

// maxValidity bounds --validity: far beyond any CA policy, and inside what
// a time.Duration holds (about 292 years; 1000y overflowed to "negative").
const (
	maxValidity     = 100 * 365 * 24 * time.Hour
	maxValidityText = "100y"
)

// parseValidity accepts Go durations (8760h) and day-based forms: 10y
// (365 days each), 2w, 90d, and mixes such as 1y30d or 1d12h.
func parseValidity(s string) (time.Duration, error) {
	in := strings.TrimSpace(s)
	if in == "" {
		return 0, errors.New("empty duration")
	}
	var total time.Duration
	rest := in
	for {
		m := validityUnit.FindStringSubmatch(rest)
		if m == nil {
			break
		}
		n, err := strconv.Atoi(m[1])
		if err != nil || n > 1000*365 {
			return 0, fmt.Errorf("%q is too long (at most %s)", s, maxValidityText)
		}
		day := 24 * time.Hour
		unit := map[string]time.Duration{"y": 365 * day, "w": 7 * day, "d": day}[m[2]]
		total += time.Duration(n) * unit
		rest = rest[len(m[0]):]
	}
	if rest != "" {
		d, err := time.ParseDuration(rest)
		if err != nil {
			return 0, fmt.Errorf("%q is not a duration (use forms like 10y, 90d, 2w or 8760h)", s)
		}
		total += d
	}
	if total > maxValidity || total < 0 {
		return 0, fmt.Errorf("%q is too long (at most %s)", s, maxValidityText)
	}
	if total == 0 {
		return 0, fmt.Errorf("%q must be positive", s)
	}
	return total, nil
}
