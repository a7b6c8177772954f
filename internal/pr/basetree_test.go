package pr

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spirepod/spirepod/internal/fakes/githubfake"
)

// TestRemoteTree: the whole file list in one request and 1,000 files in
// ceil(1000/250) GraphQL requests, with the exact bytes git holds.
func TestRemoteTree(t *testing.T) {
	fake := githubfake.New("alice", "tok")
	defer fake.Close()
	files := map[string]string{}
	for i := range 1000 {
		files[fmt.Sprintf("ns/team-%04d/spire-envoy-integration/spiffe-ids.json", i)] = fmt.Sprintf("{\"entries\": [%d]}\n", i)
	}
	files["bin/blob"] = "\xff\xfe\x00binary"
	if _, err := fake.AddRepo("city/city", true, "main", files); err != nil {
		t.Fatal(err)
	}
	c, err := newClient(GitHubOptions{BaseURL: fake.URL, Repo: "city/city", Base: "main", Token: "tok"})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	sha, _, err := c.base(ctx)
	if err != nil {
		t.Fatal(err)
	}
	fake.ResetRequests()
	tree := c.tree(sha)
	paths, err := tree.Files(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(paths) != len(files) {
		t.Fatalf("%d paths, want %d", len(paths), len(files))
	}
	got, err := tree.Read(ctx, paths)
	if err != nil {
		t.Fatal(err)
	}
	for p, want := range files {
		if p == "bin/blob" {
			if _, ok := got[p]; ok {
				t.Errorf("binary blob returned as text")
			}
			continue
		}
		if string(got[p]) != want {
			t.Fatalf("%s = %q, want %q", p, got[p], want)
		}
	}
	if n, want := fake.Requests(), 1+(len(files)+graphqlBatch-1)/graphqlBatch; n != want {
		t.Errorf("%d requests (%v), want %d", n, fake.RequestLog(), want)
	}
	t.Logf("listed and read %d files in %d requests", len(files), fake.Requests())
}

func TestGraphQLURL(t *testing.T) {
	for in, want := range map[string]string{
		"https://api.github.com/":         "https://api.github.com/graphql",
		"https://ghe.example.com/api/v3/": "https://ghe.example.com/api/graphql",
		"http://127.0.0.1:8080/api/v3/":   "http://127.0.0.1:8080/api/graphql",
	} {
		u, _ := url.Parse(in)
		if got := graphqlURL(u); got != want {
			t.Errorf("graphqlURL(%s) = %s, want %s", in, got, want)
		}
	}
}

// TestLocalTreeLinks: a symbolic link in the base is listed as a link, not
// as a file (git lists it as a blob of mode 120000; a checkout follows it),
// so the city check reports it (SPD501) instead of reading its target path
// as content.
func TestLocalTreeLinks(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git not installed")
	}
	dir := t.TempDir()
	run := func(args ...string) string {
		t.Helper()
		cmd := exec.Command("git", args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_NOSYSTEM=1",
			"GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.com", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.com")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	run("init", "-q", "-b", "main")
	if err := os.MkdirAll(filepath.Join(dir, "ns/a"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "ns/a/spiffe-ids.json"), []byte("{}"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../b", filepath.Join(dir, "ns/a/other")); err != nil {
		t.Fatal(err)
	}
	run("add", "-A")
	run("commit", "-qm", "with a link")
	l, err := openLocal(LocalOptions{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	tree := &localTree{l: l, sha: run("rev-parse", "HEAD")}
	files, err := tree.Files(context.Background())
	if err != nil || len(files) != 1 || files[0] != "ns/a/spiffe-ids.json" {
		t.Errorf("files %v (%v), want the JSON only", files, err)
	}
	links, err := memoTree(tree, nil).(interface {
		Links(context.Context) ([]string, error)
	}).Links(context.Background())
	if err != nil || len(links) != 1 || links[0] != "ns/a/other" {
		t.Errorf("links %v (%v), want ns/a/other", links, err)
	}
}
