package pr

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/spirepod/spirepod/internal/fakes/githubfake"
)

// TestReadsAboveGitHubLimits: files above the contents API's limit
// (encoding "none") and above GraphQL's Blob.text limit (isTruncated) are
// read whole, through the Git Data API. The fake's limits are lowered so
// small files cross them; TestCityAtGitHubLimits crosses GitHub's own.
func TestReadsAboveGitHubLimits(t *testing.T) {
	e := newRateEnv(t, GitHubOptions{})
	big := strings.Repeat("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n", 100) // 5,700 bytes
	utf := strings.Repeat("é", 3000)                                                             // 6,000 bytes, cut inside a rune
	if _, err := e.fake.Commit("o/r", "main", map[string]string{"big.pem": big, "dir/utf.txt": utf, "small.txt": "small\n"}, "add"); err != nil {
		t.Fatal(err)
	}
	l := e.fake.Limits()
	l.ContentsMax, l.BlobTextMax = 1000, 999
	e.fake.SetLimits(l)
	ctx := context.Background()
	sha, _, err := e.c.base(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]string{"big.pem": big, "dir/utf.txt": utf, "small.txt": "small\n"} {
		got, ok, err := e.c.read(ctx, sha, p, false)
		if err != nil || !ok || string(got) != want {
			t.Errorf("contents read of %s: %v, %v, %d bytes of %d", p, err, ok, len(got), len(want))
		}
	}
	e.fake.ResetRequests()
	got, err := e.c.tree(sha).Read(ctx, []string{"big.pem", "dir/utf.txt", "small.txt", "missing"})
	if err != nil {
		t.Fatal(err)
	}
	if string(got["big.pem"]) != big || string(got["dir/utf.txt"]) != utf || string(got["small.txt"]) != "small\n" || len(got) != 3 {
		t.Errorf("GraphQL read: %d, %d bytes, %q, %d files", len(got["big.pem"]), len(got["dir/utf.txt"]), got["small.txt"], len(got))
	}
	blobs := 0
	for _, r := range e.fake.RequestLog() {
		if strings.Contains(r, "/git/blobs/") {
			blobs++
		}
	}
	if blobs != 2 {
		t.Errorf("%d blob reads, want 2 (the truncated files): %v", blobs, e.fake.RequestLog())
	}
}

// TestGraphQLBatchSplit: a GraphQL read GitHub cannot answer in time (502)
// is split, never sent again whole, until the parts pass; a file that
// fails alone is read through REST.
func TestGraphQLBatchSplit(t *testing.T) {
	e := newRateEnv(t, GitHubOptions{})
	files := map[string]string{}
	var paths []string
	for i := range 100 {
		p := fmt.Sprintf("teams/t%03d/spiffe-ids.json", i)
		files[p] = fmt.Sprintf("{\"team\": %d}\n", i)
		paths = append(paths, p)
	}
	if _, err := e.fake.Commit("o/r", "main", files, "teams"); err != nil {
		t.Fatal(err)
	}
	l := e.fake.Limits()
	l.GraphQLMaxObjects = 30
	e.fake.SetLimits(l)
	var mu sync.Mutex
	var sizes []int
	seen := map[string]bool{}
	stop := githubfake.Observe(func(ex githubfake.Exchange) {
		if !strings.HasSuffix(ex.Path, "/graphql") {
			return
		}
		var body struct{ Variables map[string]any }
		_ = json.Unmarshal(ex.Body, &body)
		mu.Lock()
		defer mu.Unlock()
		if seen[string(ex.Body)] {
			t.Errorf("a GraphQL query was sent twice (answer %d)", ex.Status)
		}
		seen[string(ex.Body)] = true
		sizes = append(sizes, len(body.Variables)-2)
	})
	defer stop()
	ctx := context.Background()
	sha, _, err := e.c.base(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got, err := e.c.tree(sha).Read(ctx, paths)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range paths {
		if string(got[p]) != files[p] {
			t.Errorf("%s: %q", p, got[p])
		}
	}
	// 100 fails, 50 fails, 25 + 25 pass, 50 fails, 25 + 25 pass.
	if want := []int{100, 50, 25, 25, 50, 25, 25}; fmt.Sprint(sizes) != fmt.Sprint(want) {
		t.Errorf("GraphQL batches %v, want %v", sizes, want)
	}
	if !strings.Contains(e.progress.String(), "splitting it") {
		t.Errorf("progress %q", e.progress.String())
	}

	// A file that fails alone is read through REST.
	l.GraphQLMaxObjects = 0
	e.fake.SetLimits(l)
	e.fake.ResetRequests()
	e.fake.Inject(&githubfake.Fault{Path: "/graphql", Status: 502, Times: 3})
	got, err = e.c.tree(sha).Read(ctx, paths[:2])
	if err != nil || string(got[paths[0]]) != files[paths[0]] || string(got[paths[1]]) != files[paths[1]] {
		t.Fatalf("%v %q", err, got)
	}
	contents := 0
	for _, r := range e.fake.RequestLog() {
		if strings.Contains(r, "/contents/") {
			contents++
		}
	}
	if contents != 2 {
		t.Errorf("%d contents reads, want 2 (each file alone failed): %v", contents, e.fake.RequestLog())
	}
}

// TestTruncatedTreeListing: a recursive file list GitHub cut (truncated)
// is listed through GraphQL, and a GraphQL listing GitHub cannot answer is
// split by directories, then by depth, then read through REST. The fake's
// tree limit is lowered so a small tree crosses it.
func TestTruncatedTreeListing(t *testing.T) {
	e := newRateEnv(t, GitHubOptions{})
	files := map[string]string{}
	for i := range 40 {
		files[fmt.Sprintf("ns/t%02d/a/b/c/d/e/f/file.txt", i)] = fmt.Sprintf("%d\n", i)
		files[fmt.Sprintf("ns/t%02d/top.txt", i)] = "top\n"
	}
	if _, err := e.fake.Commit("o/r", "main", files, "deep"); err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprint(sortStrings(append(keysSorted(files), "README.md")))
	l := e.fake.Limits()
	l.TreeMaxEntries = 50
	e.fake.SetLimits(l)
	ctx := context.Background()
	sha, _, err := e.c.base(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, maxObjects := range []int{0, 1} {
		l.GraphQLMaxObjects = maxObjects
		e.fake.SetLimits(l)
		e.progress.Reset()
		e.fake.ResetRequests()
		got, err := e.c.tree(sha).Files(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(got) != want {
			t.Errorf("GraphQL objects per query %d: listed %d files, want %d:\n%v", maxObjects, len(got), len(files)+1, got)
		}
		if !strings.Contains(e.progress.String(), "GitHub cut the file list") {
			t.Errorf("progress %q", e.progress.String())
		}
		t.Logf("GraphQL objects per query %d: %d requests", maxObjects, e.fake.Requests())
	}
}

func keysSorted(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return sortStrings(out)
}

func sortStrings(s []string) []string {
	out := append([]string(nil), s...)
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if out[j] < out[i] {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
}
