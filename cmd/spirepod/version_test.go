package main

import (
	"math"
	"runtime/debug"
	"strings"
	"testing"
)

// TestVersionOf: a build from a checkout says its commit, not "(devel)";
// `--version` works like `version` (issue 21 item 13).
func TestVersionOf(t *testing.T) {
	for _, tc := range []struct {
		name string
		bi   debug.BuildInfo
		want string
	}{
		{"go install module@version", debug.BuildInfo{Main: debug.Module{Version: "v1.2.3"}}, "v1.2.3"},
		{"pseudo-version of a checkout", debug.BuildInfo{Main: debug.Module{Version: "v0.0.0-20261206034005-1071f4787e72+dirty"}}, "v0.0.0-20261206034005-1071f4787e72+dirty"},
		{"devel with a VCS stamp", debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "1071f4787e72aabbccddeeff0011223344556677"}, {Key: "vcs.time", Value: "2026-12-06T03:40:05Z"}, {Key: "vcs.modified", Value: "true"}}},
			"devel 1071f4787e72+dirty 2026-12-06T03:40:05Z"},
		{"no stamp at all", debug.BuildInfo{Main: debug.Module{Version: "(devel)"}}, "(devel)"},
	} {
		if got := versionOf(&tc.bi); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
	dir := t.TempDir()
	code, out, errOut := cliRun(t, dir, map[string]string{"HOME": dir}, "--version")
	code2, out2, _ := cliRun(t, dir, map[string]string{"HOME": dir}, "version")
	if code != 0 || code2 != 0 || out != out2 || !strings.HasPrefix(out, "spirepod ") {
		t.Fatalf("--version: %d %q %q; version: %d %q", code, out, errOut, code2, out2)
	}
}

// TestTuneGC: 5x the live heap under a 1 GiB soft limit (half a smaller
// container limit), unless the user set GOGC or GOMEMLIMIT.
func TestTuneGC(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(math.MaxInt64))
	tuneGC(func(string) string { return "" })
	if got := debug.SetGCPercent(100); got != 400 {
		t.Errorf("GC percent %d, want 400", got)
	}
	if got, want := debug.SetMemoryLimit(math.MaxInt64), gcLimit(cgroupMemoryMax()); got != want {
		t.Errorf("memory limit %d, want %d", got, want)
	}
	for _, c := range []struct{ max, want int64 }{{0, 1 << 30}, {8 << 30, 1 << 30}, {512 << 20, 256 << 20}} {
		if got := gcLimit(c.max); got != c.want {
			t.Errorf("gcLimit(%d) = %d, want %d", c.max, got, c.want)
		}
	}
	tuneGC(func(k string) string { return map[string]string{"GOGC": "50", "GOMEMLIMIT": "2GiB"}[k] })
	if got := debug.SetGCPercent(100); got != 100 {
		t.Errorf("with GOGC set, the GC percent became %d", got)
	}
	if got := debug.SetMemoryLimit(math.MaxInt64); got != math.MaxInt64 {
		t.Errorf("with GOMEMLIMIT set, the memory limit became %d", got)
	}
}
