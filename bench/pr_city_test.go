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
// (default 1000) × 3 pods with the scaffold in every folder; each run a new
// team runs `pr trust-ca` and `pr spiffe-id` (both run the city rules over
// the base plus the change before sending). It reports the requests each
// command made (the fake's own log) and wall-clock medians, next to what a
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
		gh.ResetRequests()
		idT = append(idT, mustRun(t, env, dir, bin, "pr", "spiffe-id"))
		idN = append(idN, gh.Requests())
		if i == 0 {
			t.Logf("pr spiffe-id requests: %s", strings.Join(gh.RequestLog(), ", "))
		}

		clone := filepath.Join(work, fmt.Sprintf("clone%d", i))
		cloneT = append(cloneT, mustRun(t, env, work, "git", "clone", "-q", "--depth", "1", "file://"+gitDir, clone))
		_ = os.RemoveAll(clone)
	}
	t.Logf("city: %d teams × 3 pods, %d files in the base", teams, len(files))
	t.Logf("pr trust-ca: requests %v, median %v", trustN, median(trustT))
	t.Logf("pr spiffe-id: requests %v, median %v", idN, median(idT))
	t.Logf("git clone --depth 1 (from disk): median %v", median(cloneT))
	t.Logf("ratio: (trust-ca + spiffe-id) / git clone = %.2f", float64(median(trustT)+median(idT))/float64(median(cloneT)))
}
