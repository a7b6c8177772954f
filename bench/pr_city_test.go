package bench

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spirepod/spirepod/internal/city/citytest"
	"github.com/spirepod/spirepod/internal/fakes/githubfake"
)

// TestBenchPRCity measures what a new team's two pull requests cost on a
// large city: the fake GitHub holds a generated city of BENCH_TEAMS teams
// (default 1000) × 3 pods with the scaffold in every folder, with GitHub's
// documented limits on (contents API 1 MB, GraphQL Blob.text 512,000 bytes,
// recursive trees 100,000 entries / 7 MB: from about 1,500 teams the trust
// list and the file list are read the long way); each run a new team runs
// `pr trust-ca` and `pr spiffe-id` (both run the city rules over the base
// plus the change before sending). It reports the requests each command
// made (the fake's own log, by kind) and wall-clock medians, next to what a
// user would do instead to review the same base: `git clone --depth 1` of
// the same city from disk (no network, which favours git).
func TestBenchPRCity(t *testing.T) {
	if os.Getenv("SPIREPOD_BENCH") != "1" {
		t.Skip("benchmark: set SPIREPOD_BENCH=1 (bench/pr-city.sh)")
	}
	runs, teams := envInt("BENCH_RUNS", 5), envInt("BENCH_TEAMS", 1000)
	const repo, token = "wp-wcm/city", "bench-token"
	work := t.TempDir()
	g := citytest.Generate(citytest.Options{Teams: teams, Pods: 3, Scaffold: true})
	files := make(map[string]string, len(g.Tree))
	for p, b := range g.Tree {
		files[p] = string(b)
	}
	gh := githubfake.New("alice", token)
	t.Cleanup(gh.Close)
	if _, err := gh.AddRepo(repo, true, "main", files); err != nil {
		t.Fatal(err)
	}
	gitDir := filepath.Join(work, "city.git")
	if err := citytest.WriteGit(g.Tree, gitDir, "city"); err != nil {
		t.Fatal(err)
	}

	bin := filepath.Join(work, "spirepod")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/spirepod").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	env := append(os.Environ(), "HOME="+work, "XDG_CONFIG_HOME="+filepath.Join(work, ".config"), "NO_COLOR=1",
		"SPIREPOD_GITHUB_API_URL="+gh.URL, "GH_TOKEN="+token)

	var trustT, idT, cloneT []time.Duration
	var trustN, idN []int
	for i := range runs {
		dir := filepath.Join(work, fmt.Sprintf("team%d", i))
		mustRun(t, env, work, bin, "init", "--team", fmt.Sprintf("bench%d", i), "--namespace", fmt.Sprintf("bench-new-%d", i), dir)
		mustRun(t, env, dir, bin, "pki", "gen")

		gh.ResetRequests()
		trustT = append(trustT, mustRun(t, env, dir, bin, "pr", "trust-ca"))
		trustN = append(trustN, gh.Requests())
		if i == 0 {
			t.Logf("pr trust-ca requests by kind: %s", requestKinds(gh.RequestLog()))
		}
		gh.ResetRequests()
		idT = append(idT, mustRun(t, env, dir, bin, "pr", "spiffe-id"))
		idN = append(idN, gh.Requests())
		if i == 0 {
			t.Logf("pr spiffe-id requests by kind: %s", requestKinds(gh.RequestLog()))
		}

		clone := filepath.Join(work, fmt.Sprintf("clone%d", i))
		cloneT = append(cloneT, mustRun(t, env, work, "git", "clone", "-q", "--depth", "1", "file://"+gitDir, clone))
		_ = os.RemoveAll(clone)
	}
	lim := gh.Limits()
	t.Logf("city: %d teams × 3 pods, %d files in the base, trust list %d bytes (contents API limit %d, GraphQL Blob.text %d)",
		teams, len(files), len(files[citytest.BundlePath]), lim.ContentsMax, lim.BlobTextMax)
	t.Logf("pr trust-ca: requests %v, median %v", trustN, median(trustT))
	t.Logf("pr spiffe-id: requests %v, median %v", idN, median(idT))
	t.Logf("git clone --depth 1 (from disk): median %v", median(cloneT))
	t.Logf("ratio: (trust-ca + spiffe-id) / git clone = %.2f", float64(median(trustT)+median(idT))/float64(median(cloneT)))
}

// requestKinds counts a request log by method and endpoint (path
// parameters dropped): "GET git/blobs ×1, POST graphql ×21, …".
func requestKinds(log []string) string {
	n := map[string]int{}
	var order []string
	for _, r := range log {
		method, p, _ := strings.Cut(r, " ")
		seg := strings.Split(strings.Trim(p, "/"), "/")
		kind := p
		switch {
		case len(seg) >= 4 && seg[0] == "repos" && seg[3] == "git" && len(seg) >= 5:
			kind = "git/" + seg[4]
		case len(seg) >= 4 && seg[0] == "repos":
			kind = seg[3]
		case len(seg) > 0:
			kind = seg[len(seg)-1]
		}
		k := method + " " + kind
		if n[k] == 0 {
			order = append(order, k)
		}
		n[k]++
	}
	var out []string
	for _, k := range order {
		out = append(out, fmt.Sprintf("%s ×%d", k, n[k]))
	}
	return strings.Join(out, ", ")
}
