package pki

import (
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/spirepod/spirepod/internal/project"
)

// TeamCABackupDir is where a replaced team CA is kept: the scaffold's local
// state (.spirepod/, git-ignored since the first scaffold), 0700.
func TeamCABackupDir(p *project.Project) string {
	return filepath.Join(p.Dir, project.StateDir, "backup")
}

// GenTeamCAOptions say which scaffold's team CA to make, and how.
type GenTeamCAOptions struct {
	// Project is the scaffold; its Paths name the CA files.
	Project  *project.Project
	KeyType  KeyType       // "" means DefaultKeyType
	Validity time.Duration // zero means DefaultCAValidity
	// Subject is the CA's; nil means DefaultSubject(Project.Team).
	Subject *pkix.Name
	// Force replaces an existing team CA, keeping a copy of it in
	// TeamCABackupDir.
	Force bool
	// DryRun runs every check and makes the CA in memory; it writes nothing.
	DryRun bool
	Rand   io.Reader
	Now    func() time.Time
	// CheckRotation, when set, runs before a team CA that exists (not the
	// empty placeholder `spirepod init` writes) would be replaced, Force or
	// not; an error refuses, returned as a *RefusedError: the CLI refuses
	// while a CA rotation is unfinished.
	CheckRotation func() error
	// Event receives progress (nil: none).
	Event func(GenTeamCAEvent)
}

// GenTeamCAStage is a point GenTeamCA has reached.
type GenTeamCAStage string

const (
	// GenTeamCAGenerating: the checks passed; the key is being made (an RSA
	// key takes seconds).
	GenTeamCAGenerating GenTeamCAStage = "generating"
	// GenTeamCAWritten: the CA is on disk (not sent for a dry run).
	GenTeamCAWritten GenTeamCAStage = "written"
)

// GenTeamCAEvent is GenTeamCA's progress.
type GenTeamCAEvent struct {
	Stage    GenTeamCAStage
	KeyType  KeyType
	CertPath string
}

// GenTeamCAResult is the team CA GenTeamCA made: what `pki gen -o json`
// reports, with absolute paths.
type GenTeamCAResult struct {
	Cert     *x509.Certificate
	CertPath string
	KeyPath  string
	Info     CAInfo
	// Existed: a team CA (not init's placeholder) was there before; Force
	// replaced it (a dry run: would replace it).
	Existed bool
	// Replaced is the certificate Force replaced, when it parsed, and
	// ReplacedSelector its x509pop:ca:fingerprint selector, which node
	// aliases made for it carry. Not set for a dry run.
	Replaced         *x509.Certificate
	ReplacedSelector string
	// BackedUp are the copies of the replaced certificate and key.
	BackedUp []string
	DryRun   bool
}

// GenTeamCA makes the team CA of a scaffold (see Generate): the key
// (PKCS#8, 0600) and certificate at the project's CA paths, never over an
// existing CA without Force, a replaced one kept in TeamCABackupDir.
//
// Errors: *RefusedError (CheckRotation's), *ExistsError (without Force),
// and Generate's (bad options, a missing directory wrapping
// fs.ErrNotExist, write failures wrapping *fs.PathError, ctx's).
func GenTeamCA(ctx context.Context, o GenTeamCAOptions) (*GenTeamCAResult, error) {
	p := o.Project
	if p == nil {
		return nil, errors.New("pki gen: no project")
	}
	subject := DefaultSubject(p.Team)
	if o.Subject != nil {
		subject = *o.Subject
	}
	certPath, keyPath := p.Path(p.Paths.CACert), p.Path(p.Paths.CAKey)
	res := &GenTeamCAResult{Existed: teamCAExists(certPath) || teamCAExists(keyPath), DryRun: o.DryRun}
	if res.Existed && o.CheckRotation != nil {
		if err := o.CheckRotation(); err != nil {
			return nil, &RefusedError{Err: err}
		}
	}
	kt := o.KeyType
	if kt == "" {
		kt = DefaultKeyType
	}
	o.emit(GenTeamCAEvent{Stage: GenTeamCAGenerating, KeyType: kt, CertPath: certPath})
	gen, err := Generate(ctx, GenerateOptions{
		CertPath: certPath, KeyPath: keyPath,
		KeyType: kt, Validity: o.Validity, Subject: subject, Force: o.Force, DryRun: o.DryRun,
		Rand: o.Rand, Now: o.Now, BackupDir: TeamCABackupDir(p),
	})
	if err != nil {
		return nil, err
	}
	res.Cert, res.CertPath, res.KeyPath, res.Info = gen.Cert, gen.CertPath, gen.KeyPath, Describe(gen.Cert)
	if o.DryRun {
		return res, nil
	}
	res.BackedUp = gen.BackedUp
	if res.Replaced = gen.Replaced; res.Replaced != nil {
		res.ReplacedSelector = CAFingerprintSelector(res.Replaced)
	}
	o.emit(GenTeamCAEvent{Stage: GenTeamCAWritten, KeyType: kt, CertPath: certPath})
	return res, nil
}

// RefusedError is a refusal by the caller's CheckRotation; nothing was
// written. Its message is the refusal's own.
type RefusedError struct{ Err error }

func (e *RefusedError) Error() string { return e.Err.Error() }
func (e *RefusedError) Unwrap() error { return e.Err }

func (o *GenTeamCAOptions) emit(e GenTeamCAEvent) {
	if o.Event != nil {
		o.Event(e)
	}
}

// teamCAExists: something other than init's empty placeholder is at path.
func teamCAExists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil && !IsPlaceholder(path)
}
