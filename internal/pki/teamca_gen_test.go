package pki

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/x509/pkix"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/spirepod/spirepod/internal/project"
)

// genProject is a scaffold directory with init's empty CA placeholders.
func genProject(t *testing.T) *project.Project {
	t.Helper()
	p := &project.Project{Team: "payments", Dir: t.TempDir(), Paths: project.DefaultPaths}
	if err := os.MkdirAll(filepath.Dir(p.Path(p.Paths.CACert)), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{p.Paths.CACert, p.Paths.CAKey} {
		if err := os.WriteFile(p.Path(f), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

// genOpts records guard calls and event stages.
func genOpts(p *project.Project, guarded *int, stages *[]GenTeamCAStage) GenTeamCAOptions {
	return GenTeamCAOptions{Project: p, Rand: rand.Reader, Now: fixedNow,
		CheckRotation: func() error { *guarded++; return nil },
		Event:         func(e GenTeamCAEvent) { *stages = append(*stages, e.Stage) }}
}

func caFiles(t *testing.T, p *project.Project) (cert, key []byte) {
	t.Helper()
	cert, err := os.ReadFile(p.Path(p.Paths.CACert))
	if err != nil {
		t.Fatal(err)
	}
	key, err = os.ReadFile(p.Path(p.Paths.CAKey))
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

// TestGenTeamCAOverPlaceholders: init's empty placeholders are no CA: the
// rotation guard is not asked, nothing is backed up, and the CA written
// passes LoadTeamCA (the step's "in place?" answer) with the team's subject.
func TestGenTeamCAOverPlaceholders(t *testing.T) {
	p := genProject(t)
	if LoadTeamCA(TeamCAOptions{CertPath: p.Path(p.Paths.CACert), KeyPath: p.Path(p.Paths.CAKey), Now: testNow}).Err == nil {
		t.Fatal("placeholders count as a team CA")
	}
	guarded := 0
	var stages []GenTeamCAStage
	res, err := GenTeamCA(context.Background(), genOpts(p, &guarded, &stages))
	if err != nil {
		t.Fatal(err)
	}
	if res.Existed || guarded != 0 || res.Replaced != nil || res.ReplacedSelector != "" || len(res.BackedUp) != 0 {
		t.Errorf("over placeholders: %+v, guard asked %d times", res, guarded)
	}
	if want := []GenTeamCAStage{GenTeamCAGenerating, GenTeamCAWritten}; !slices.Equal(stages, want) {
		t.Errorf("stages %v, want %v", stages, want)
	}
	if res.CertPath != p.Path(p.Paths.CACert) || res.KeyPath != p.Path(p.Paths.CAKey) || res.Info != Describe(res.Cert) ||
		res.Info.KeyType != string(DefaultKeyType) || res.Cert.Subject.CommonName != DefaultSubject("payments").CommonName {
		t.Errorf("result %+v", res)
	}
	if m := mode(t, res.KeyPath); m != 0o600 {
		t.Errorf("key mode %o", m)
	}
	if ca := LoadTeamCA(TeamCAOptions{CertPath: res.CertPath, KeyPath: res.KeyPath, Now: testNow}); ca.Err != nil || !ca.Cert.Equal(res.Cert) {
		t.Errorf("the written CA is not in place: %v", ca.Err)
	}
	if _, err := os.Stat(TeamCABackupDir(p)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a backup dir was made with nothing to keep: %v", err)
	}
}

// TestGenTeamCAReplace: over a CA, the guard is asked first (Force or
// not); without Force the CA stays (*ExistsError); with Force the old one
// is kept in the backup directory and named in the result; a dry run says
// it would replace it and writes nothing.
func TestGenTeamCAReplace(t *testing.T) {
	p := genProject(t)
	guarded := 0
	var stages []GenTeamCAStage
	first, err := GenTeamCA(context.Background(), genOpts(p, &guarded, &stages))
	if err != nil {
		t.Fatal(err)
	}
	cert, key := caFiles(t, p)

	_, err = GenTeamCA(context.Background(), genOpts(p, &guarded, &stages))
	var ee *ExistsError
	if !errors.As(err, &ee) || guarded != 1 {
		t.Fatalf("again without force: %v, guard asked %d times", err, guarded)
	}
	o := genOpts(p, &guarded, &stages)
	o.Force, o.DryRun = true, true
	stages = nil
	dry, err := GenTeamCA(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if !dry.Existed || !dry.DryRun || dry.Replaced != nil || len(dry.BackedUp) != 0 || guarded != 2 || !slices.Equal(stages, []GenTeamCAStage{GenTeamCAGenerating}) {
		t.Errorf("dry run: %+v, guard %d, stages %v", dry, guarded, stages)
	}
	if c, k := caFiles(t, p); !bytes.Equal(c, cert) || !bytes.Equal(k, key) {
		t.Fatal("a dry run or a refusal replaced the CA")
	}
	if _, err := os.Stat(TeamCABackupDir(p)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a dry run made the backup dir: %v", err)
	}

	o.DryRun = false
	o.KeyType = KeyECP384
	o.Subject = &pkix.Name{CommonName: "payments CA 2"}
	res, err := GenTeamCA(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Existed || res.Replaced == nil || !res.Replaced.Equal(first.Cert) || res.ReplacedSelector != CAFingerprintSelector(first.Cert) {
		t.Errorf("replaced: %+v", res)
	}
	if res.Info.KeyType != string(KeyECP384) || res.Cert.Subject.CommonName != "payments CA 2" {
		t.Errorf("new CA: %+v", res.Info)
	}
	if len(res.BackedUp) != 2 {
		t.Fatalf("backed up %v", res.BackedUp)
	}
	for _, b := range res.BackedUp {
		if filepath.Dir(b) != TeamCABackupDir(p) || !strings.HasPrefix(filepath.Base(b), SHA1Fingerprint(first.Cert)) {
			t.Errorf("backup %s", b)
		}
		data, err := os.ReadFile(b)
		if err != nil || !(bytes.Equal(data, cert) || bytes.Equal(data, key)) {
			t.Errorf("backup %s does not hold the old CA: %v", b, err)
		}
		if m := mode(t, b); m != 0o600 {
			t.Errorf("backup %s mode %o", b, m)
		}
	}
	if TeamCABackupDir(p) != filepath.Join(p.Dir, project.StateDir, "backup") {
		t.Errorf("backup dir %s", TeamCABackupDir(p))
	}
}

// TestGenTeamCARefusals: the rotation guard refuses before any key is made
// (a *RefusedError wrapping its error, even with Force); a missing
// directory is fs.ErrNotExist.
func TestGenTeamCARefusals(t *testing.T) {
	p := genProject(t)
	if _, err := GenTeamCA(context.Background(), GenTeamCAOptions{Project: p, Rand: rand.Reader, Now: fixedNow}); err != nil {
		t.Fatal(err)
	}
	cert, key := caFiles(t, p)
	errRotating := errors.New("a rotation is in phase 3")
	var stages []GenTeamCAStage
	_, err := GenTeamCA(context.Background(), GenTeamCAOptions{Project: p, Rand: rand.Reader, Now: fixedNow, Force: true,
		CheckRotation: func() error { return errRotating },
		Event:         func(e GenTeamCAEvent) { stages = append(stages, e.Stage) }})
	var re *RefusedError
	if !errors.As(err, &re) || !errors.Is(err, errRotating) || err.Error() != errRotating.Error() {
		t.Fatalf("err %v, want the guard's refusal", err)
	}
	if len(stages) != 0 {
		t.Errorf("a refused gen made a key: %v", stages)
	}
	if c, k := caFiles(t, p); !bytes.Equal(c, cert) || !bytes.Equal(k, key) {
		t.Fatal("a refused gen replaced the CA")
	}

	q := &project.Project{Team: "payments", Dir: t.TempDir(), Paths: project.DefaultPaths} // no certs/secret
	if _, err := GenTeamCA(context.Background(), GenTeamCAOptions{Project: q, Rand: rand.Reader, Now: fixedNow}); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing directory: %v", err)
	}
}
