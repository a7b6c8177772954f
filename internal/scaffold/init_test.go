package scaffold_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spirepod/spirepod/internal/project"
	"github.com/spirepod/spirepod/internal/scaffold"
	"github.com/spirepod/spirepod/scaffoldfs"
)

// writeServerCA writes a self-signed certificate (a CA unless leaf) named
// cn, valid from nb to na, as PEM at path.
func writeServerCA(t *testing.T, path, cn string, nb, na time.Time, leaf bool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: nb, NotAfter: na, IsCA: !leaf, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
}

// validServerCA writes a server CA valid for a year around now.
func validServerCA(t *testing.T, path, cn string) {
	t.Helper()
	writeServerCA(t, path, cn, time.Now().Add(-time.Hour), time.Now().Add(365*24*time.Hour), false)
}

// initOpts are the options `spirepod init --team payments --namespace
// team-a DIR` passes, recording events and rotation-guard calls.
func initOpts(dir string, events *[]scaffold.InitStage, guarded *int) scaffold.InitOptions {
	return scaffold.InitOptions{
		Dir: dir, Team: "payments", Namespace: "team-a", Template: scaffoldfs.Scaffold(),
		Event: func(e scaffold.InitEvent) { *events = append(*events, e.Stage) },
		CheckRotation: func(p *project.Project) error {
			*guarded++
			return nil
		},
	}
}

// TestInitWritesThenNoop: a first Init writes the whole scaffold (the
// events say rendered, planned, written) with a spirepod.yaml that loads
// with the values asked for and the flags' defaults; a second one is a
// no-op that writes nothing and never asks the rotation guard.
func TestInitWritesThenNoop(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "sc")
	var events []scaffold.InitStage
	guarded := 0
	res, err := scaffold.Init(context.Background(), initOpts(dir, &events, &guarded))
	if err != nil {
		t.Fatal(err)
	}
	if !res.Changed || res.DryRun || res.Dir != dir || res.Source != "embedded" || res.Plan.Count(scaffold.Create) == 0 {
		t.Fatalf("first init: %+v", res)
	}
	if want := []scaffold.InitStage{scaffold.InitRendered, scaffold.InitPlanned, scaffold.InitWritten}; !slices.Equal(events, want) {
		t.Errorf("events %v, want %v", events, want)
	}
	if guarded != 1 {
		t.Errorf("rotation guard asked %d times for a changing plan, want 1", guarded)
	}
	p, err := project.Load(filepath.Join(dir, project.FileName))
	if err != nil {
		t.Fatal(err)
	}
	if p.Team != "payments" || p.Namespace != "team-a" || p.Environment != project.DefaultEnvironment || p.Replicas != 1 ||
		p.StatefulSet != scaffold.TemplateName || p.ServiceAccount != scaffold.TemplateServiceAccount ||
		p.Naming != project.DefaultNaming || p.IssuerScope != project.DefaultIssuerScope || p.TrustDomain == "" {
		t.Errorf("spirepod.yaml: %+v", p)
	}
	for _, f := range res.Plan.Files {
		if _, err := os.Stat(filepath.Join(dir, filepath.FromSlash(f.Path))); err != nil {
			t.Errorf("planned file %s: %v", f.Path, err)
		}
	}

	before := tree(t, dir)
	events, guarded = nil, 0
	res, err = scaffold.Init(context.Background(), initOpts(dir, &events, &guarded))
	if err != nil {
		t.Fatal(err)
	}
	if res.Changed || res.Plan.Count(scaffold.Create)+res.Plan.Count(scaffold.Update) != 0 {
		t.Errorf("second init changes: %+v", res.Plan)
	}
	if want := []scaffold.InitStage{scaffold.InitRendered, scaffold.InitPlanned}; !slices.Equal(events, want) {
		t.Errorf("second init events %v, want %v", events, want)
	}
	if guarded != 0 {
		t.Errorf("rotation guard asked for an unchanged plan")
	}
	if after := tree(t, dir); !maps(before, after) {
		t.Error("second init changed files")
	}
}

func maps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// TestInitConflictNeedsForce: changed values over an existing scaffold are
// a *ConflictError carrying the diff, with nothing written; Force writes
// them.
func TestInitConflictNeedsForce(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "sc")
	var events []scaffold.InitStage
	guarded := 0
	if _, err := scaffold.Init(context.Background(), initOpts(dir, &events, &guarded)); err != nil {
		t.Fatal(err)
	}
	before := tree(t, dir)
	o := initOpts(dir, &events, &guarded)
	o.Replicas = 3
	_, err := scaffold.Init(context.Background(), o)
	var ce *scaffold.ConflictError
	if !errors.As(err, &ce) {
		t.Fatalf("err %v, want *ConflictError", err)
	}
	if !slices.Contains(ce.Paths, project.FileName) || !strings.Contains(ce.Diff, "+replicas: 3") {
		t.Errorf("conflict %v, diff:\n%s", ce.Paths, ce.Diff)
	}
	if !maps(before, tree(t, dir)) {
		t.Fatal("a refused init changed files")
	}
	o.Force = true
	res, err := scaffold.Init(context.Background(), o)
	if err != nil || !res.Changed {
		t.Fatalf("--force: %v %+v", err, res)
	}
	if p, err := project.Load(filepath.Join(dir, project.FileName)); err != nil || p.Replicas != 3 {
		t.Fatalf("after --force: %v %+v", err, p)
	}
}

// TestInitDryRunWritesNothing: a dry run plans the whole scaffold (and asks
// the rotation guard, as a real run would) but creates no directory.
func TestInitDryRunWritesNothing(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "sc")
	var events []scaffold.InitStage
	guarded := 0
	o := initOpts(dir, &events, &guarded)
	o.DryRun = true
	res, err := scaffold.Init(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if !res.DryRun || !res.Changed || res.Plan.Count(scaffold.Create) == 0 || res.Plan.Diff() == "" {
		t.Errorf("dry run: %+v", res)
	}
	if _, err := os.Lstat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("dry run made %s: %v", dir, err)
	}
	if slices.Contains(events, scaffold.InitWritten) || guarded != 1 {
		t.Errorf("events %v, guard asked %d times", events, guarded)
	}
}

// TestInitRotationGuardRefuses: the guard's error refuses a changing plan
// as a *RefusedError wrapping it, with nothing written, the guard seeing
// the project it would write.
func TestInitRotationGuardRefuses(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "sc")
	errRotating := errors.New("a rotation is in phase 2")
	var seen *project.Project
	o := scaffold.InitOptions{Dir: dir, Team: "payments", Namespace: "team-a", Template: scaffoldfs.Scaffold(), Force: true,
		CheckRotation: func(p *project.Project) error { seen = p; return errRotating }}
	_, err := scaffold.Init(context.Background(), o)
	var re *scaffold.RefusedError
	if !errors.As(err, &re) || !errors.Is(err, errRotating) || err.Error() != errRotating.Error() {
		t.Fatalf("err %v, want the guard's refusal", err)
	}
	if seen == nil || seen.Namespace != "team-a" || seen.Dir != dir {
		t.Errorf("guard saw %+v", seen)
	}
	if _, err := os.Lstat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a refused init made %s", dir)
	}
}

// TestInitInputErrors: each input that cannot be used is an *InitError
// naming it, checked in the command's order, with nothing written.
func TestInitInputErrors(t *testing.T) {
	base := t.TempDir()
	missing := filepath.Join(base, "missing.pem")
	leaf := filepath.Join(base, "leaf.pem")
	writeServerCA(t, leaf, "a leaf", time.Now().Add(-time.Hour), time.Now().Add(time.Hour), true)
	aFile := filepath.Join(base, "a-file")
	if err := os.WriteFile(aFile, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	notRepo := t.TempDir()
	for _, tc := range []struct {
		name     string
		mut      func(*scaffold.InitOptions)
		input    string
		pathErr  bool
		contains string
	}{
		{"unknown env", func(o *scaffold.InitOptions) { o.Env = "prod" }, scaffold.InputEnv, false, `unknown environment "prod"`},
		{"env before server CA", func(o *scaffold.InitOptions) { o.Env = "prod"; o.ServerCAFile = missing }, scaffold.InputEnv, false, "prod"},
		{"server CA unreadable", func(o *scaffold.InitOptions) { o.ServerCAFile = missing }, scaffold.InputServerCA, true, "no such file"},
		{"server CA not a CA", func(o *scaffold.InitOptions) { o.ServerCAFile = leaf }, scaffold.InputServerCA, false, "is not a CA"},
		{"server CA before dir", func(o *scaffold.InitOptions) { o.ServerCAFile = leaf; o.Dir = aFile }, scaffold.InputServerCA, false, "is not a CA"},
		{"from not a checkout", func(o *scaffold.InitOptions) { o.From = notRepo }, scaffold.InputFrom, false, "open git repository"},
		{"from before dir", func(o *scaffold.InitOptions) { o.From = notRepo; o.Dir = aFile }, scaffold.InputFrom, false, "open git repository"},
		{"dir is a file", func(o *scaffold.InitOptions) { o.Dir = aFile }, scaffold.InputDir, false, "not a directory"},
		{"bad team", func(o *scaffold.InitOptions) { o.Team = "Bad_Team" }, scaffold.InputProject, false, "team"},
		{"guide naming with the default name", func(o *scaffold.InitOptions) { o.Naming = project.NamingGuide }, scaffold.InputProject, false, "naming"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "sc")
			guarded := false
			o := scaffold.InitOptions{Dir: dir, Team: "payments", Namespace: "team-a", Template: scaffoldfs.Scaffold(),
				CheckRotation: func(*project.Project) error { guarded = true; return nil }}
			tc.mut(&o)
			_, err := scaffold.Init(context.Background(), o)
			var ie *scaffold.InitError
			if !errors.As(err, &ie) || ie.Input != tc.input {
				t.Fatalf("err %v, want *InitError for %s", err, tc.input)
			}
			var pe *fs.PathError
			if errors.As(ie.Err, &pe) != tc.pathErr {
				t.Errorf("Err %T %v: *fs.PathError %v, want %v", ie.Err, ie.Err, !tc.pathErr, tc.pathErr)
			}
			if !strings.Contains(ie.Err.Error(), tc.contains) {
				t.Errorf("Err %q lacks %q", ie.Err, tc.contains)
			}
			if guarded {
				t.Error("the rotation guard was asked before the inputs were checked")
			}
			if _, err := os.Lstat(dir); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("made %s", dir)
			}
		})
	}
	if _, err := scaffold.Init(context.Background(), scaffold.InitOptions{Dir: "rel/sc", Team: "payments", Namespace: "team-a",
		Template: scaffoldfs.Scaffold()}); err == nil {
		t.Error("a relative Dir was taken (it would depend on the process's working directory)")
	}
}

// TestInitKeepsServerCA: ServerCAFile puts the CA into the bundle; a
// re-render without it keeps that CA; another ServerCAFile replaces it.
func TestInitKeepsServerCA(t *testing.T) {
	base := t.TempDir()
	dir := filepath.Join(base, "sc")
	first, second := filepath.Join(base, "first.pem"), filepath.Join(base, "second.pem")
	validServerCA(t, first, "first server CA")
	validServerCA(t, second, "second server CA")
	subject := func() string {
		t.Helper()
		b := scaffold.ReadBundle(dir, "dev", time.Now())
		if !b.InPlace() {
			t.Fatalf("bundle not in place: %+v", b)
		}
		return b.Certs[0].Subject.CommonName
	}
	o := scaffold.InitOptions{Dir: dir, Team: "payments", Namespace: "team-a", Template: scaffoldfs.Scaffold(), ServerCAFile: first}
	if _, err := scaffold.Init(context.Background(), o); err != nil {
		t.Fatal(err)
	}
	if got := subject(); got != "first server CA" {
		t.Fatalf("bundle holds %q", got)
	}
	o.ServerCAFile, o.Replicas, o.Force = "", 2, true
	if _, err := scaffold.Init(context.Background(), o); err != nil {
		t.Fatal(err)
	}
	if got := subject(); got != "first server CA" {
		t.Fatalf("a re-render without a server CA left %q", got)
	}
	o.ServerCAFile = second
	res, err := scaffold.Init(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if got := subject(); got != "second server CA" || !res.Changed {
		t.Fatalf("another server CA: bundle holds %q, changed %v", got, res.Changed)
	}
}
