package bench

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/spirepod/spirepod/internal/city"
	"github.com/spirepod/spirepod/internal/city/citytest"
)

// TestBenchCityGenerate writes a generated city for bench/city-check.sh:
// SPIREPOD_BENCH_CITY=DIR, BENCH_TEAMS teams (default 1000) × BENCH_PODS
// pods (default 3), formats mixed, the scaffold in every team folder unless
// BENCH_SCAFFOLD=0. The city is one git commit (packed, as a clone is);
// BENCH_CHANGE=1 adds a second commit that changes one team's
// registration file, for --base HEAD~1.
func TestBenchCityGenerate(t *testing.T) {
	dir := os.Getenv("SPIREPOD_BENCH_CITY")
	if dir == "" {
		t.Skip("benchmark fixture: set SPIREPOD_BENCH_CITY=DIR (bench/city-check.sh)")
	}
	teams, pods := envInt("BENCH_TEAMS", 1000), envInt("BENCH_PODS", 3)
	g := citytest.Generate(citytest.Options{Teams: teams, Pods: pods, Scaffold: os.Getenv("BENCH_SCAFFOLD") != "0"})
	if err := citytest.WriteGit(g.Tree, dir, "city of "+strconv.Itoa(teams)+" teams"); err != nil {
		t.Fatal(err)
	}
	if _, err := citytest.Git(dir, "repack", "-adq"); err != nil {
		t.Fatal(err)
	}
	if os.Getenv("BENCH_CHANGE") == "1" {
		// Pod 0 becomes pod 9 in every registration file of one team: a
		// change that passes (its aliases and workloads move together).
		tm := g.Teams[teams/2]
		changed := city.MapTree{}
		for _, p := range tm.Files {
			changed[p] = []byte(strings.ReplaceAll(string(g.Tree[p]), tm.Proj.StatefulSet+"-0", tm.Proj.StatefulSet+"-9"))
		}
		if err := citytest.Commit(changed, dir, "change "+tm.Name); err != nil {
			t.Fatal(err)
		}
	}
	n := 0
	_ = filepath.WalkDir(dir, func(_ string, d os.DirEntry, _ error) error {
		if d != nil && !d.IsDir() {
			n++
		}
		return nil
	})
	t.Logf("city of %d teams × %d pods at %s (%d files on disk)", teams, pods, dir, n)
}

func envInt(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil && n > 0 {
		return n
	}
	return def
}
