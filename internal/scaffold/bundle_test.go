package scaffold_test

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spirepod/spirepod/internal/project"
	"github.com/spirepod/spirepod/internal/scaffold"
	"github.com/spirepod/spirepod/scaffoldfs"
)

// newScaffold runs Init into a new directory and returns its project.
func newScaffold(t *testing.T) *project.Project {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "sc")
	res, err := scaffold.Init(context.Background(), scaffold.InitOptions{Dir: dir, Team: "payments", Namespace: "team-a", Template: scaffoldfs.Scaffold()})
	if err != nil {
		t.Fatal(err)
	}
	return res.Project
}

// setOpts sets file into p's bundle; the returned counter says how often
// the project was asked for, warnings what the events said.
func setOpts(p *project.Project, file string, asked *int, warnings *[]string) scaffold.SetServerCAOptions {
	return scaffold.SetServerCAOptions{
		File:    file,
		Project: func() (*project.Project, error) { *asked++; return p, nil },
		Event:   func(e scaffold.SetServerCAEvent) { *warnings = append(*warnings, e.Warning.Message) },
	}
}

func readBundleFile(t *testing.T, p *project.Project) string {
	t.Helper()
	b, err := os.ReadFile(p.Path(scaffold.BundleFile(p.Environment)))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestSetServerCA: the CA goes into the bundle ConfigMap with the text
// around it dropped (the result and the diff say so); setting it again
// changes nothing; a dry run only reports the diff.
func TestSetServerCA(t *testing.T) {
	p := newScaffold(t)
	file := filepath.Join(t.TempDir(), "ca.pem")
	validServerCA(t, file, "test server CA")
	pemData, _ := os.ReadFile(file)
	if err := os.WriteFile(file, append([]byte("subject=CN = test\r\n"), pemData...), 0o644); err != nil {
		t.Fatal(err)
	}
	if b := scaffold.ReadBundle(p.Dir, p.Environment, time.Now()); b.InPlace() || b.ReadErr != nil || b.ParseErr != nil || len(b.Certs) != 0 {
		t.Fatalf("a fresh scaffold's bundle: %+v", b)
	}
	before := readBundleFile(t, p)
	asked := 0
	var warnings []string

	o := setOpts(p, file, &asked, &warnings)
	o.DryRun = true
	res, err := scaffold.SetServerCA(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Changed || !res.DryRun || !strings.Contains(res.Diff, "+    -----BEGIN CERTIFICATE-----") {
		t.Errorf("dry run: changed %v, diff:\n%s", res.Changed, res.Diff)
	}
	if readBundleFile(t, p) != before {
		t.Fatal("a dry run wrote the bundle")
	}

	res, err = scaffold.SetServerCA(context.Background(), setOpts(p, file, &asked, &warnings))
	if err != nil {
		t.Fatal(err)
	}
	if !res.Changed || res.Path != p.Path(scaffold.BundleFile("dev")) || len(res.Certs) != 1 || res.Warning != nil || res.Diff == "" {
		t.Errorf("set: %+v", res)
	}
	after := readBundleFile(t, p)
	if strings.Contains(after, "subject=") || strings.Contains(after, "\r") {
		t.Errorf("the text around the certificate was written:\n%s", after)
	}
	b := scaffold.ReadBundle(p.Dir, p.Environment, time.Now())
	if !b.InPlace() || b.Certs[0].Subject.CommonName != "test server CA" || b.Problem != nil {
		t.Errorf("after set: %+v", b)
	}

	res, err = scaffold.SetServerCA(context.Background(), setOpts(p, file, &asked, &warnings))
	if err != nil || res.Changed || res.Diff != "" {
		t.Errorf("again: %v %+v", err, res)
	}
	if readBundleFile(t, p) != after {
		t.Error("setting the same CA again changed the file")
	}
	if asked != 3 || len(warnings) != 0 {
		t.Errorf("project asked %d times, warnings %v", asked, warnings)
	}
}

// TestSetServerCARefusals: each refusal is its own type, in the order the
// command checks them (the file before the scaffold), and writes nothing.
func TestSetServerCARefusals(t *testing.T) {
	now := time.Now()
	files := t.TempDir()
	path := func(n string) string { return filepath.Join(files, n) }
	writeServerCA(t, path("expired.pem"), "expired", now.Add(-48*time.Hour), now.Add(-24*time.Hour), false)
	writeServerCA(t, path("future.pem"), "future", now.Add(24*time.Hour), now.Add(48*time.Hour), false)
	writeServerCA(t, path("leaf.pem"), "leaf", now.Add(-time.Hour), now.Add(time.Hour), true)
	validServerCA(t, path("ok.pem"), "ok")
	errNoProject := errors.New("no spirepod.yaml")
	for _, tc := range []struct {
		name  string
		file  string
		setup func(p *project.Project) // breaks the scaffold
		noP   bool                     // Project fails
		want  func(error) bool
		asked int
	}{
		{"unreadable", path("missing.pem"), nil, true, func(err error) bool {
			var se *scaffold.ServerCAError
			var pe *fs.PathError
			return errors.As(err, &se) && errors.As(se.Err, &pe)
		}, 0},
		{"not a CA", path("leaf.pem"), nil, true, func(err error) bool {
			var se *scaffold.ServerCAError
			var pe *fs.PathError
			return errors.As(err, &se) && !errors.As(se.Err, &pe) && strings.Contains(err.Error(), "is not a CA")
		}, 0},
		{"expired", path("expired.pem"), nil, true, func(err error) bool {
			var ue *scaffold.UnusableServerCAError
			return errors.As(err, &ue) && ue.Problem.Fatal && strings.Contains(ue.Problem.Message, "expired")
		}, 0},
		{"not yet valid", path("future.pem"), nil, false, func(err error) bool {
			var ue *scaffold.UnusableServerCAError
			return errors.As(err, &ue) && strings.Contains(ue.Problem.Message, "not valid before")
		}, 0},
		{"no scaffold", path("ok.pem"), nil, true, func(err error) bool { return errors.Is(err, errNoProject) }, 1},
		{"bundle file missing", path("ok.pem"), func(p *project.Project) {
			_ = os.Remove(p.Path(scaffold.BundleFile(p.Environment)))
		}, false, func(err error) bool {
			var be *scaffold.BundleFileError
			return errors.As(err, &be) && be.Missing && errors.Is(err, fs.ErrNotExist)
		}, 1},
		{"no bundle ConfigMap", path("ok.pem"), func(p *project.Project) {
			_ = os.WriteFile(p.Path(scaffold.BundleFile(p.Environment)), []byte("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: other\n"), 0o644)
		}, false, func(err error) bool {
			var be *scaffold.BundleFileError
			return errors.As(err, &be) && !be.Missing && strings.Contains(err.Error(), `no ConfigMap "spire-bundle"`)
		}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newScaffold(t)
			if tc.setup != nil {
				tc.setup(p)
			}
			before := tree(t, p.Dir)
			asked := 0
			o := scaffold.SetServerCAOptions{File: tc.file, Now: func() time.Time { return now },
				Project: func() (*project.Project, error) {
					asked++
					if tc.noP {
						return nil, errNoProject
					}
					return p, nil
				}}
			res, err := scaffold.SetServerCA(context.Background(), o)
			if err == nil || !tc.want(err) {
				t.Fatalf("err %T %v (result %+v)", err, err, res)
			}
			if asked != tc.asked {
				t.Errorf("project asked %d times, want %d", asked, tc.asked)
			}
			if !maps(before, tree(t, p.Dir)) {
				t.Error("a refusal changed the scaffold")
			}
		})
	}
}

// TestSetServerCAWarnings: a CA near its end is written with a warning, in
// the result and as an event; Force writes an expired one, with its
// problem as the warning.
func TestSetServerCAWarnings(t *testing.T) {
	now := time.Now()
	files := t.TempDir()
	ending, expired := filepath.Join(files, "ending.pem"), filepath.Join(files, "expired.pem")
	writeServerCA(t, ending, "ending", now.Add(-time.Hour), now.Add(10*24*time.Hour), false)
	writeServerCA(t, expired, "expired", now.Add(-48*time.Hour), now.Add(-24*time.Hour), false)
	for _, tc := range []struct {
		name  string
		file  string
		force bool
		fatal bool
		msg   string
	}{
		{"ending", ending, false, false, "expires in 9 days"},
		{"expired with --force", expired, true, true, "expired"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newScaffold(t)
			asked := 0
			var warnings []string
			o := setOpts(p, tc.file, &asked, &warnings)
			o.Force, o.Now = tc.force, func() time.Time { return now }
			res, err := scaffold.SetServerCA(context.Background(), o)
			if err != nil {
				t.Fatal(err)
			}
			if res.Warning == nil || res.Warning.Fatal != tc.fatal || !strings.Contains(res.Warning.Message, tc.msg) {
				t.Errorf("warning %+v, want fatal %v with %q", res.Warning, tc.fatal, tc.msg)
			}
			if len(warnings) != 1 || warnings[0] != res.Warning.Message {
				t.Errorf("events %q", warnings)
			}
			b := scaffold.ReadBundle(p.Dir, p.Environment, now)
			if !res.Changed || len(b.Certs) != 1 || b.InPlace() == tc.fatal {
				t.Errorf("written: %v, bundle %+v", res.Changed, b)
			}
		})
	}
}

// TestReadBundleInPlace: the bundle is in place when the file parses and
// holds a server CA that is valid now (one near its end too, with its
// problem); not when the file is missing, broken, empty, or its CA expired.
func TestReadBundleInPlace(t *testing.T) {
	now := time.Now()
	files := t.TempDir()
	ok, ending, expired := filepath.Join(files, "ok.pem"), filepath.Join(files, "ending.pem"), filepath.Join(files, "expired.pem")
	validServerCA(t, ok, "ok")
	writeServerCA(t, ending, "ending", now.Add(-time.Hour), now.Add(24*time.Hour), false)
	writeServerCA(t, expired, "expired", now.Add(-48*time.Hour), now.Add(-24*time.Hour), false)
	set := func(file string) func(p *project.Project) {
		return func(p *project.Project) {
			t.Helper()
			if _, err := scaffold.SetServerCA(context.Background(), scaffold.SetServerCAOptions{File: file, Force: true,
				Project: func() (*project.Project, error) { return p, nil }}); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, tc := range []struct {
		name                       string
		setup                      func(p *project.Project)
		inPlace, readErr, parseErr bool
		problem                    string
	}{
		{"fresh scaffold: no CA yet", nil, false, false, false, "the bundle is empty"},
		{"valid CA", set(ok), true, false, false, ""},
		{"CA ending tomorrow", set(ending), true, false, false, "expires in 0 days"},
		{"expired CA", set(expired), false, false, false, "expired"},
		{"file missing", func(p *project.Project) { _ = os.Remove(p.Path(scaffold.BundleFile("dev"))) }, false, true, false, ""},
		{"not a bundle", func(p *project.Project) {
			_ = os.WriteFile(p.Path(scaffold.BundleFile("dev")), []byte("kind: Secret\n"), 0o644)
		}, false, false, true, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newScaffold(t)
			if tc.setup != nil {
				tc.setup(p)
			}
			b := scaffold.ReadBundle(p.Dir, "dev", now)
			if b.InPlace() != tc.inPlace || (b.ReadErr != nil) != tc.readErr || (b.ParseErr != nil) != tc.parseErr {
				t.Fatalf("%+v: in place %v", b, b.InPlace())
			}
			if tc.problem == "" && b.Problem != nil || tc.problem != "" && (b.Problem == nil || !strings.Contains(b.Problem.Message, tc.problem)) {
				t.Errorf("problem %+v, want %q", b.Problem, tc.problem)
			}
			if b.File != "spire-bundle-configmap-dev.yaml" {
				t.Errorf("file %q", b.File)
			}
		})
	}
}

// TestJudgeBundleData: what apply's preflight reads from the built
// ConfigMap: blank is an empty bundle (fatal), text that is not a CA
// bundle an error, a CA its certificates.
func TestJudgeBundleData(t *testing.T) {
	file := filepath.Join(t.TempDir(), "ca.pem")
	validServerCA(t, file, "ok")
	data, _ := os.ReadFile(file)
	if certs, pr, err := scaffold.JudgeBundleData([]byte(" \n"), time.Now()); err != nil || len(certs) != 0 || pr == nil || !pr.Fatal {
		t.Errorf("blank: %v %v %+v", certs, err, pr)
	}
	if _, _, err := scaffold.JudgeBundleData([]byte("not pem"), time.Now()); err == nil {
		t.Error("junk parsed")
	}
	if certs, pr, err := scaffold.JudgeBundleData(data, time.Now()); err != nil || len(certs) != 1 || pr != nil {
		t.Errorf("a CA: %v %v %+v", certs, err, pr)
	}
}
