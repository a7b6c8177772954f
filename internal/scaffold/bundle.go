package scaffold

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spirepod/spirepod/internal/atomicfile"
	"github.com/spirepod/spirepod/internal/pki"
	"github.com/spirepod/spirepod/internal/project"
)

// BundleExpiryWarning is how close to its end a server CA is worth a warning.
const BundleExpiryWarning = 30 * 24 * time.Hour

// NormalizeBundle is the server CA bundle as spirepod writes it: the
// certificates only (no text or keys around them), PEM with LF line ends.
func NormalizeBundle(certs []*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, pki.EncodeCertificate(c)...)
	}
	return out
}

// BundleProblem is what is wrong with a server CA bundle at now.
type BundleProblem struct {
	// Fatal: the agent cannot use it (empty, expired, not yet valid).
	Fatal   bool
	Message string
}

// JudgeBundle judges server CA certificates at now: none, expired or not yet
// valid is fatal (the agent cannot verify the server); ending within
// BundleExpiryWarning is a warning. nil means fine.
func JudgeBundle(certs []*x509.Certificate, now time.Time) *BundleProblem {
	if len(certs) == 0 {
		return &BundleProblem{Fatal: true, Message: "the bundle is empty: the agent cannot verify the SPIRE server and exits at start"}
	}
	for _, c := range certs {
		switch {
		case now.Before(c.NotBefore):
			return &BundleProblem{Fatal: true, Message: fmt.Sprintf("server CA %s is not valid before %s", c.Subject, c.NotBefore.UTC().Format(time.RFC3339))}
		case now.After(c.NotAfter):
			return &BundleProblem{Fatal: true, Message: fmt.Sprintf("server CA %s expired %s", c.Subject, c.NotAfter.UTC().Format(time.RFC3339))}
		}
	}
	for _, c := range certs {
		if left := c.NotAfter.Sub(now); left < BundleExpiryWarning {
			return &BundleProblem{Message: fmt.Sprintf("server CA %s expires in %d days (%s): ask the SPIRE operators for its successor",
				c.Subject, int(left.Hours()/24), c.NotAfter.UTC().Format(time.RFC3339))}
		}
	}
	return nil
}

// ReadServerCA reads a PEM file with the SPIRE server's CA certificate(s)
// and parses it with ParseServerCA. A file that cannot be read is its
// *fs.PathError.
func ReadServerCA(path string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return ParseServerCA(data)
}

// JudgeBundleData parses the bundle.crt value of a spire-bundle ConfigMap
// (blank is no certificate) and judges it at now with JudgeBundle. err is a
// value that is not a CA bundle; a nil problem means usable and not near
// its end.
func JudgeBundleData(data []byte, now time.Time) ([]*x509.Certificate, *BundleProblem, error) {
	var certs []*x509.Certificate
	if strings.TrimSpace(string(data)) != "" {
		var err error
		if certs, err = ParseServerCA(data); err != nil {
			return nil, nil, err
		}
	}
	return certs, JudgeBundle(certs, now), nil
}

// BundleState is the server CA in a scaffold's bundle ConfigMap file: the
// read-only "is it in place?" answer of `spirepod bundle set`.
type BundleState struct {
	// File is the bundle file, relative to the scaffold.
	File string
	// ReadErr: the file cannot be read (an *fs.PathError).
	ReadErr error
	// ParseErr: the file has no spire-bundle ConfigMap, or its bundle.crt
	// is not a CA bundle.
	ParseErr error
	// Certs are the server CA certificates (none: the template's empty bundle).
	Certs []*x509.Certificate
	// Problem is JudgeBundle of Certs at the time asked; nil when fine.
	// It is set only when the file parses.
	Problem *BundleProblem
}

// InPlace reports whether the bundle holds a server CA the agent can use:
// the file parses, holds at least one CA, none expired or not yet valid.
func (s *BundleState) InPlace() bool {
	return s.ReadErr == nil && s.ParseErr == nil && (s.Problem == nil || !s.Problem.Fatal)
}

// ReadBundle reads and judges the bundle file of the scaffold in dir for
// environment env at now. It never fails: problems are in its fields.
func ReadBundle(dir, env string, now time.Time) *BundleState {
	s := &BundleState{File: BundleFile(env)}
	data, err := os.ReadFile(filepath.Join(dir, s.File))
	if err != nil {
		s.ReadErr = err
		return s
	}
	if s.Certs, s.ParseErr = BundleCerts(data); s.ParseErr != nil {
		return s
	}
	s.Problem = JudgeBundle(s.Certs, now)
	return s
}

// SetServerCAOptions say which server CA to put into which scaffold's
// bundle ConfigMap.
type SetServerCAOptions struct {
	// File is an absolute path to the PEM file with the SPIRE server's CA
	// certificate(s); text around them is dropped.
	File string
	// Project returns the scaffold to write into. It is called once the
	// file has been judged, so a bad file is reported before a missing
	// scaffold (the CLI finds spirepod.yaml from --dir).
	Project func() (*project.Project, error)
	// Now is the clock the CA's validity is judged by.
	Now func() time.Time
	// Force writes a CA that is expired or not yet valid.
	Force bool
	// DryRun judges and plans; it writes nothing.
	DryRun bool
	// Event receives progress (nil: none).
	Event func(SetServerCAEvent)
}

// SetServerCAEvent is SetServerCA's progress.
type SetServerCAEvent struct {
	// Warning is sent once the CA is judged, when it is written despite a
	// problem: it ends within BundleExpiryWarning, or (Force) it is
	// expired or not yet valid.
	Warning *BundleProblem
}

// SetServerCAResult is what SetServerCA wrote (or, dry run, would write).
type SetServerCAResult struct {
	// Path is the bundle file, absolute.
	Path    string
	Project *project.Project
	// Certs are the server CA certificates, as written.
	Certs []*x509.Certificate
	// Changed: the file's content changes (a dry run: would change).
	Changed bool
	DryRun  bool
	// Warning is the problem the CA is written with, as in the event.
	Warning *BundleProblem
	// Diff is the unified diff of the change ("" when none).
	Diff string
}

// ServerCAError: the server CA file cannot be read (Err is its
// *fs.PathError) or does not hold a CA bundle.
type ServerCAError struct {
	Path string
	Err  error
}

func (e *ServerCAError) Error() string { return fmt.Sprintf("%s: %v", e.Path, e.Err) }
func (e *ServerCAError) Unwrap() error { return e.Err }

// UnusableServerCAError: the server CA is expired or not yet valid (or the
// file holds none), and Force was not set; nothing was written.
type UnusableServerCAError struct {
	Path    string
	Problem BundleProblem
}

func (e *UnusableServerCAError) Error() string { return e.Path + ": " + e.Problem.Message }

// BundleFileError: the scaffold's bundle file is missing (Missing), or
// holds no spire-bundle ConfigMap that can be updated; re-rendering the
// scaffold brings it back.
type BundleFileError struct {
	Path    string
	Missing bool
	Err     error
}

func (e *BundleFileError) Error() string {
	if e.Missing {
		return e.Path + " is missing"
	}
	return fmt.Sprintf("%s: %v", e.Path, e.Err)
}

func (e *BundleFileError) Unwrap() error { return e.Err }

// SetServerCA puts the SPIRE server's CA into the scaffold's bundle
// ConfigMap (spire-bundle, key bundle.crt), replacing what is there, as
// certificates only with LF line ends; the file is written atomically and
// only when its content changes.
//
// Errors, in the order they are checked: *ServerCAError,
// *UnusableServerCAError (without Force), Project's error as it is,
// *BundleFileError, then errors reading or writing the bundle file
// (wrapping *fs.PathError) and ctx's.
func SetServerCA(ctx context.Context, o SetServerCAOptions) (*SetServerCAResult, error) {
	if !filepath.IsAbs(o.File) || o.Project == nil {
		return nil, errors.New("scaffold set server CA: File (absolute) and Project are required")
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	certs, err := ReadServerCA(o.File)
	if err != nil {
		return nil, &ServerCAError{Path: o.File, Err: err}
	}
	res := &SetServerCAResult{Certs: certs, DryRun: o.DryRun}
	if pr := JudgeBundle(certs, o.Now()); pr != nil {
		if pr.Fatal && !o.Force {
			return nil, &UnusableServerCAError{Path: o.File, Problem: *pr}
		}
		res.Warning = pr
		if o.Event != nil {
			o.Event(SetServerCAEvent{Warning: pr})
		}
	}
	p, err := o.Project()
	if err != nil {
		return nil, err
	}
	res.Project = p
	rel := BundleFile(p.Environment)
	res.Path = p.Path(rel)
	old, err := os.ReadFile(res.Path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, &BundleFileError{Path: res.Path, Missing: true, Err: err}
	} else if err != nil {
		return nil, err
	}
	updated, err := UpdateBundleFile(old, NormalizeBundle(certs))
	if err != nil {
		return nil, &BundleFileError{Path: res.Path, Err: err}
	}
	res.Changed = !bytes.Equal(old, updated)
	fc := FileChange{Path: rel, Action: Unchanged}
	if res.Changed {
		fc.Action, fc.old, fc.new = Update, old, updated
	}
	res.Diff = (&Plan{Dir: p.Dir, Files: []FileChange{fc}}).Diff()
	if o.DryRun || !res.Changed {
		return res, nil
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := atomicfile.WriteFile(res.Path, updated, atomicfile.Options{Perm: 0o644}); err != nil {
		return nil, err
	}
	return res, nil
}
