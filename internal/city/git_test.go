package city_test

import (
	"errors"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/spirepod/spirepod/internal/city"
	"github.com/spirepod/spirepod/internal/city/citytest"
	"github.com/spirepod/spirepod/internal/pki"
)

func needGit(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git CLI not on PATH: it is the independent judge of these tests")
	}
}

func git(t *testing.T, dir string, args ...string) string {
	t.Helper()
	out, err := citytest.Git(dir, args...)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(out)
}

func openGit(t *testing.T, dir, rev string) *city.GitTree {
	t.Helper()
	g, err := city.OpenGit(dir, rev)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	return g
}

// TestGitTree: the files and contents go-git reads at a commit are the ones
// git itself lists and shows; the work tree does not matter; every
// revision form resolves.
func TestGitTree(t *testing.T) {
	needGit(t)
	dir := t.TempDir()
	g := citytest.Generate(citytest.Options{Teams: 3, Scaffold: true, Pods: 1})
	if err := citytest.WriteGit(g.Tree, dir, "city"); err != nil {
		t.Fatal(err)
	}
	first := git(t, dir, "rev-parse", "HEAD")
	// A second commit, a branch, a remote-tracking ref and an uncommitted edit.
	changed := g.Teams[1].Files[0]
	if err := os.WriteFile(filepath.Join(dir, changed), []byte("{\"entries\": []}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	git(t, dir, "commit", "-qam", "edit")
	git(t, dir, "branch", "old", first)
	git(t, dir, "update-ref", "refs/remotes/origin/main", first)
	if err := os.WriteFile(filepath.Join(dir, g.Teams[0].Files[0]), []byte("uncommitted"), 0o644); err != nil {
		t.Fatal(err)
	}

	head := openGit(t, filepath.Join(dir, "ns"), "") // found upward, like git
	files, err := head.Files(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := strings.Split(git(t, dir, "ls-tree", "-r", "--name-only", "HEAD"), "\n"); !reflect.DeepEqual(files, want) {
		t.Fatalf("Files: %d paths, git ls-tree: %d", len(files), len(want))
	}
	got, err := head.Read(ctx, files)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range files {
		if want := git(t, dir, "show", "HEAD:"+p); strings.TrimSpace(string(got[p])) != want {
			t.Fatalf("%s differs from git show", p)
		}
	}
	if _, ok := got[g.Teams[0].Files[0]]; !ok || string(got[g.Teams[0].Files[0]]) == "uncommitted" {
		t.Error("the work tree leaked into the commit's view")
	}
	if m, _ := head.Read(ctx, []string{"no/such/file"}); len(m) != 0 {
		t.Error("a missing path must be left out")
	}
	for _, rev := range []string{"old", "origin/main", first, first[:10], "HEAD~1", "main~1"} {
		b, err := head.At(rev)
		if err != nil {
			t.Errorf("At(%q): %v", rev, err)
			continue
		}
		if b.Commit.String() != first {
			t.Errorf("At(%q) = %s, want %s", rev, b.Commit, first)
		}
	}
	if _, err := head.At("no-such-branch"); !errors.Is(err, city.ErrRevision) {
		t.Errorf("unknown revision: %v", err)
	}

	// Changed paths between the commits are git diff's.
	base, _ := head.At("old")
	ch, err := city.Changed(ctx, base, head, g.Config)
	if err != nil {
		t.Fatal(err)
	}
	if want := strings.Split(git(t, dir, "diff", "--name-only", "old", "HEAD"), "\n"); !reflect.DeepEqual(ch.Paths, want) {
		t.Errorf("Changed %v, git diff %v", ch.Paths, want)
	}
	// The same city read from git and from the map: the same findings.
	c, err := city.Load(ctx, head, g.Config)
	if err != nil {
		t.Fatal(err)
	}
	mt := city.MapTree{}
	for p, b := range got {
		mt[p] = b
	}
	if a, b := c.Check(), load(t, mt, g.Config); !reflect.DeepEqual(a, b) {
		t.Errorf("git:%s\nmap:%s", dump(a), dump(b))
	}
}

// TestOwnerFromHistory: a bundle without owner comments; each CA was added
// by its own commit. Commits in spirepod's words name the team and
// namespace, so a pin to another team's CA is caught (SPD106); a commit in
// other words leaves only its author (SPD307 says so).
func TestOwnerFromHistory(t *testing.T) {
	needGit(t)
	dir := t.TempDir()
	g := citytest.Generate(citytest.Options{Teams: 3, Formats: []string{citytest.FormatEntryJSON}})
	tree := city.MapTree{}
	for p, b := range g.Tree {
		if p != citytest.BundlePath {
			tree[p] = b
		}
	}
	if err := citytest.WriteGit(tree, dir, "folders"); err != nil {
		t.Fatal(err)
	}
	var bundle []byte
	for i, tm := range g.Teams {
		bundle = append(bundle, pki.EncodeCertificate(tm.CA)...)
		msg := "Add " + tm.Name + " CA certificate to trust list\n\nx509pop CA of team " + tm.Name + " (namespace " + tm.Namespace + "), SHA-1 " + tm.SHA1 + "."
		if i == 2 {
			msg = "add a CA"
		}
		if err := citytest.Commit(city.MapTree{citytest.BundlePath: bundle}, dir, msg); err != nil {
			t.Fatal(err)
		}
	}
	head := openGit(t, dir, "")
	fs := load(t, head, g.Config)
	if len(fs) != 1 || fs[0].Code != city.CodeOwnerUnknown || !strings.Contains(fs[0].Message, "City Bot <bot@city.example>") {
		t.Fatalf("want one SPD307 naming the author:%s", dump(fs))
	}
	// Team 1 pins team 0's CA (committed by spirepod: owner known).
	p := g.Teams[1].Files[0]
	steal := strings.ReplaceAll(string(g.Tree[p]), g.Teams[1].SHA1, g.Teams[0].SHA1)
	if err := citytest.Commit(city.MapTree{p: []byte(steal)}, dir, "pin"); err != nil {
		t.Fatal(err)
	}
	head = openGit(t, dir, "")
	fs = load(t, head, g.Config)
	n := 0
	for _, f := range fs {
		if f.Code == city.CodePinOtherTeam && f.File == p && strings.Contains(f.Message, "team team0000 (namespace ns-team0000)") &&
			strings.Contains(f.Message, "owner from commit ") {
			n++
		}
	}
	if n != 3 {
		t.Errorf("SPD106 from history: %d, want 3:%s", n, dump(fs))
	}
	// The PR's check (--base) finds the same, and only that.
	base, _ := head.At("HEAD~1")
	full, _ := city.Load(ctx, head, g.Config)
	ch, err := city.Changed(ctx, base, head, g.Config)
	if err != nil {
		t.Fatal(err)
	}
	fc, _, err := city.LoadChange(ctx, base, head, g.Config)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := fc.Check(), full.CheckChange(ch); !reflect.DeepEqual(got, want) || len(got) != 3 {
		t.Errorf("--base:%s\nfull, filtered:%s", dump(got), dump(want))
	}
	// Read from the work tree (no git), the owners are unknown: SPD307 each.
	fs = load(t, city.DirTree(dir), g.Config)
	n = 0
	for _, f := range fs {
		if f.Code == city.CodeOwnerUnknown {
			n++
		}
	}
	if n != 3 {
		t.Errorf("SPD307 without history: %d, want 3:%s", n, dump(fs))
	}
}

// TestOwnerComment: the line pr trust-ca writes, read back; the SPIRE
// loader's view (encoding/pem) is unaffected by it.
func TestOwnerComment(t *testing.T) {
	g := citytest.Generate(citytest.Options{Teams: 2})
	b := g.Tree[citytest.BundlePath]
	owners := city.ParseOwnerComments(b)
	if len(owners) != 2 {
		t.Fatalf("owners: %v", owners)
	}
	for i, tm := range g.Teams {
		o := owners[tm.SHA1]
		if o.Team != tm.Name || o.Namespace != tm.Namespace || o.Line != 1+i*(1+strings.Count(string(pki.EncodeCertificate(tm.CA)), "\n")) {
			t.Errorf("owner of %s: %+v", tm.Name, o)
		}
	}
	if got := city.OwnerComment("a", "b", strings.ToUpper(g.Teams[0].SHA1)); got != "# spirepod: team=a namespace=b sha1="+g.Teams[0].SHA1 {
		t.Errorf("OwnerComment: %q", got)
	}
	certs, err := pki.ParseCertificates(b)
	if err != nil || len(certs) != 2 {
		t.Errorf("the bundle with comments must still parse as certificates: %v", err)
	}
}

// TestDirTree reads a city from a plain directory, skipping .git.
func TestDirTree(t *testing.T) {
	dir := t.TempDir()
	g := citytest.Generate(citytest.Options{Teams: 2})
	if err := citytest.Write(g.Tree, dir); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, ".git"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, ".git", "spiffe-ids.json"), []byte("{}"), 0o644); err != nil {
		t.Fatal(err)
	}
	files, err := city.DirTree(dir).Files(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(files, citytest.Paths(g.Tree)) {
		t.Errorf("DirTree files %v", files)
	}
	if fs := load(t, city.DirTree(dir), g.Config); len(fs) != 0 {
		t.Errorf("clean:%s", dump(fs))
	}
}

// TestOverlay: base plus a change, as the team side builds it.
func TestOverlay(t *testing.T) {
	base := city.MapTree{"a": []byte("1"), "b": []byte("2"), "c/d": []byte("3")}
	o := city.Overlay(base, map[string][]byte{"./b": []byte("20"), "e": []byte("5")}, []string{"c/d", "b"})
	files, _ := o.Files(ctx)
	if want := []string{"a", "b", "e"}; !reflect.DeepEqual(files, want) {
		t.Errorf("files %v, want %v (a path both written and deleted is written)", files, want)
	}
	got, _ := o.Read(ctx, []string{"a", "b", "c/d", "e"})
	if want := map[string][]byte{"a": []byte("1"), "b": []byte("20"), "e": []byte("5")}; !reflect.DeepEqual(got, want) {
		t.Errorf("read %q", got)
	}
	cfg := city.Config{TeamPath: "ns/{namespace}", TrustList: citytest.Generate(citytest.Options{Teams: 1}).Config.TrustList}
	ch, err := city.Changed(ctx, base, o, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"b", "c/d", "e"}; !reflect.DeepEqual(ch.Paths, want) {
		t.Errorf("changed %v, want %v", ch.Paths, want)
	}
	// Writing a file with its base content is no change.
	ch, _ = city.Changed(ctx, base, city.Overlay(base, map[string][]byte{"a": []byte("1")}, nil), cfg)
	if len(ch.Paths) != 0 {
		t.Errorf("unchanged write: %v", ch.Paths)
	}
}

// TestLightMode reads only spiffe-ids files (the API-friendly reading).
func TestLightMode(t *testing.T) {
	g := citytest.Generate(citytest.Options{Teams: 2, Formats: []string{citytest.FormatEntryJSON}})
	f := fx{City: g, t: t}
	victim := f.team(0).Proj.NodeAliasID(f.team(0).Proj.PodName(0))
	p := f.write(1, "steal.json", f.alias(victim, "x."+f.ns(1), f.team(1).SHA1))
	cfg := g.Config
	cfg.Light = true
	if fs := load(t, g.Tree, cfg); len(fs) != 0 {
		t.Errorf("light mode read %s:%s", p, dump(fs))
	}
	g.Tree[path.Join(f.team(1).Folder, "spiffe-ids.json")] = g.Tree[p]
	if fs := load(t, g.Tree, cfg); len(fs) == 0 || fs[0].Code != city.CodeAliasShared {
		t.Errorf("light mode must read spiffe-ids.json:%s", dump(fs))
	}
}
