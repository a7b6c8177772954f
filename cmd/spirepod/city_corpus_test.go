package main

import (
	"context"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spirepod/spirepod/internal/city"
	"github.com/spirepod/spirepod/internal/city/citytest"
	"github.com/spirepod/spirepod/internal/pki"
	"github.com/spirepod/spirepod/internal/project"
	"github.com/spirepod/spirepod/internal/registration"
)

// TestHostileCityCorpus is issue 20's proof: a city made by spirepod's own
// flow (three teams run init, pki gen, `pr trust-ca --local` and `pr
// spiffe-id --local`, each branch merged), then one commit per hostile
// change of citytest.Hostiles on a branch of its own. Every one fails
// `spirepod city check` (exit 1) in full mode and with --base at the clean
// commit, naming the attacker's file and, where two folders are involved,
// the victim's; where the change is the attacker's own pull request, the
// team side's check (the light reading `pr` does, over the base it builds
// on) refuses it too. The clean city passes (exit 0).
func TestHostileCityCorpus(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git not installed (the test uses it to merge and commit, as a platform would)")
	}
	root := t.TempDir()
	env := map[string]string{"HOME": root, "NO_COLOR": "1", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t"}
	cityDir := filepath.Join(root, "city")
	git := func(args ...string) string {
		t.Helper()
		cmd := exec.Command("git", append([]string{"-C", cityDir}, args...)...)
		cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=City", "GIT_AUTHOR_EMAIL=city@example", "GIT_COMMITTER_NAME=City",
			"GIT_COMMITTER_EMAIL=city@example", "GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_NOSYSTEM=1")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	if err := os.MkdirAll(cityDir, 0o755); err != nil {
		t.Fatal(err)
	}
	git("init", "-q", "-b", "main")
	git("config", "gc.auto", "0")
	if err := os.WriteFile(filepath.Join(cityDir, "README.md"), []byte("the city\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	git("add", "-A")
	git("commit", "-qm", "the city")

	// The teams, by spirepod's own flow; the formats of citytest.Corpus.
	serverCA := writeServerCA(t, root, 24*time.Hour)
	var teams []*citytest.Team
	for i, format := range citytest.Corpus.Formats {
		name := []string{"victim", "kustom", "plain"}[i]
		ns := "ns-" + name
		proj := filepath.Join(root, name)
		cli := func(dir string, args ...string) {
			t.Helper()
			if code, out, errOut := cliRun(t, dir, env, args...); code != exitOK {
				t.Fatalf("%s: spirepod %v: exit %d\n%s%s", name, args, code, out, errOut)
			}
		}
		cli(root, "init", "--team", name, "-n", ns, "--server-ca", serverCA, name)
		if format == registration.FormatClusterStaticEntry {
			setClassName(t, filepath.Join(proj, project.FileName), citytest.ClassName)
		}
		cli(proj, "pki", "gen")
		cli(proj, "pr", "trust-ca", "--local", cityDir)
		git("merge", "-q", "--no-ff", "-m", "merge trust-ca of "+name, "spirepod/"+name+"/trust-ca")
		cli(proj, "pr", "spiffe-id", "--format", format, "--local", cityDir)
		git("merge", "-q", "--no-ff", "-m", "merge spiffe-id of "+name, "spirepod/"+name+"/spiffe-id")

		p, err := project.Load(filepath.Join(proj, project.FileName))
		if err != nil {
			t.Fatal(err)
		}
		pemData, err := os.ReadFile(p.Path(p.Paths.CACert))
		if err != nil {
			t.Fatal(err)
		}
		certs, err := pki.ParseCertificates(pemData)
		if err != nil || len(certs) != 1 {
			t.Fatalf("team CA: %v (%d certificates)", err, len(certs))
		}
		ca := certs[0]
		folder := strings.NewReplacer("{namespace}", ns, "{team}", name).Replace(citytest.TeamPath)
		teams = append(teams, &citytest.Team{Name: name, Namespace: ns, Folder: folder, Format: format, CA: ca,
			SHA1: pki.SHA1Fingerprint(ca), Proj: p, Files: []string{path.Join(folder, registration.File(format))}})
	}
	clean := git("rev-parse", "HEAD")
	if code, out, errOut := cliRun(t, cityDir, env, "city", "check"); code != exitOK {
		t.Fatalf("the city spirepod made fails its own check: exit %d\n%s%s", code, out, errOut)
	}
	cfg := city.Config{TrustDomain: citytest.TrustDomain, TeamPath: citytest.TeamPath,
		TrustList: project.TrustList{Mode: project.TrustListBundle, Path: citytest.BundlePath}}
	light := cfg
	light.Light = true

	seenClass := map[int]bool{}
	for _, hc := range citytest.Hostiles() {
		if testing.Short() && seenClass[hc.Class] {
			continue // -short: one change per class
		}
		seenClass[hc.Class] = true
		t.Run(hc.Name, func(t *testing.T) {
			git("checkout", "-q", "-f", "main")
			git("clean", "-qfdx")
			git("checkout", "-q", "-b", "hostile-"+strings.NewReplacer(" ", "-", "'", "", ":", "").Replace(hc.Name))
			before := readTree(t, cityDir)
			head := city.MapTree{}
			for p, b := range before {
				head[p] = b
			}
			h := citytest.NewHostileCity(&citytest.City{Tree: head, Config: cfg, Teams: teams})
			w := hc.Apply(h)
			changed := map[string][]byte{}
			for p, b := range head {
				if ob, ok := before[p]; !ok || string(ob) != string(b) {
					changed[p] = b
					full := filepath.Join(cityDir, filepath.FromSlash(p))
					if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
						t.Fatal(err)
					}
					if err := os.WriteFile(full, b, 0o644); err != nil {
						t.Fatal(err)
					}
				}
			}
			for p, target := range h.Links {
				if err := os.Symlink(target, filepath.Join(cityDir, filepath.FromSlash(p))); err != nil {
					t.Fatal(err)
				}
			}
			git("add", "-A")
			git("commit", "-qm", "hostile: "+hc.Name)

			for _, args := range [][]string{{"city", "check"}, {"city", "check", "--base", clean}} {
				code, out, errOut := cliRun(t, cityDir, env, args...)
				if code != exitFailure {
					t.Errorf("spirepod %v: exit %d, want %d\n%s%s", args, code, exitFailure, out, errOut)
					continue
				}
				hit := false
				for _, c := range w.Codes {
					hit = hit || strings.Contains(out, "× "+c+" ")
				}
				if !hit {
					t.Errorf("spirepod %v: no × for %v:\n%s", args, w.Codes, out)
				}
				for _, file := range w.Files {
					if !strings.Contains(out, file) {
						t.Errorf("spirepod %v: %s is not named:\n%s", args, file, out)
					}
				}
			}
			if !w.TeamSide || len(h.Links) > 0 {
				return // a link cannot be part of what pr writes
			}
			base, err := city.OpenGit(cityDir, clean)
			if err != nil {
				t.Fatal(err)
			}
			defer base.Close()
			fs, err := city.CheckOverlay(context.Background(), base, light, changed, nil)
			if err != nil {
				t.Fatal(err)
			}
			refusedBy := false
			for _, f := range fs {
				refusedBy = refusedBy || (f.Severity == registration.SeverityError && contains(w.Codes, f.Code))
			}
			if !refusedBy {
				t.Errorf("the team side does not refuse it (want %v); it reports:\n%v", w.Codes, fs)
			}
		})
	}
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// readTree reads a checkout's regular files (not .git).
func readTree(t *testing.T, dir string) city.MapTree {
	t.Helper()
	out := city.MapTree{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && d.Name() == ".git" {
			return filepath.SkipDir
		}
		if !d.Type().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		out[filepath.ToSlash(rel)] = b
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// setClassName sets registration.className in a spirepod.yaml.
func setClassName(t *testing.T, file, class string) {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	s := strings.Replace(string(b), "registration:\n", "registration:\n  className: "+class+"\n", 1)
	if s == string(b) {
		t.Fatalf("%s has no registration: block", file)
	}
	if err := os.WriteFile(file, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}
