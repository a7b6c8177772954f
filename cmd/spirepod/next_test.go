package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestNextStepsWork: the next steps init prints are commands a newcomer can
// run as printed (issue 21 items 12 and 13): after `go run ./cmd/spirepod
// init`, install first (no spirepod on PATH) and cd into the scaffold; a
// binary not on PATH is named by its path; and steps already done (a team
// CA, a server CA in the bundle, as after init --force) are not listed.
func TestNextStepsWork(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "bin", "spirepod")
	if err := os.MkdirAll(filepath.Dir(bin), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, []byte("x"), 0o755); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"HOME": dir, "NO_COLOR": "1"}
	initNext := func(exe string, onPath string, args ...string) string {
		t.Helper()
		f := newFactory(&IOStreams{}, func(k string) string { return env[k] })
		var out, errOut strings.Builder
		f.IO = &IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut}
		f.Getwd = func() (string, error) { return dir, nil }
		f.Executable = func() (string, error) { return exe, nil }
		f.LookPath = func(string) (string, error) {
			if onPath == "" {
				return "", errors.New("not found")
			}
			return onPath, nil
		}
		if code := run(t.Context(), f, append([]string{"init", "--team", "t", "--namespace", "t"}, args...)); code != 0 {
			t.Fatalf("init %v: exit %d\n%s", args, code, errOut.String())
		}
		_, next, _ := strings.Cut(errOut.String(), "Next:\n")
		return next
	}

	// go run: a temporary build, no spirepod on PATH
	next := initNext("/tmp/go-build123/b001/exe/spirepod", "", "a")
	want := []string{"go install ./cmd/spirepod", "cd a", "spirepod pki gen", "spirepod bundle set <spire-server-ca.pem>", "spirepod pr trust-ca"}
	for i, w := range want {
		lines := strings.Split(strings.TrimSpace(next), "\n")
		if i >= len(lines) || !strings.HasPrefix(strings.TrimSpace(lines[i]), w) {
			t.Fatalf("go run: next steps\n%s\nwant line %d to start with %q", next, i+1, w)
		}
	}
	// a binary not on PATH: its own path
	if next := initNext(bin, "", "b"); !strings.Contains(next, bin+" pki gen") || strings.Contains(next, "go install") {
		t.Fatalf("binary not on PATH: next steps\n%s", next)
	}
	// on PATH: plain spirepod
	if next := initNext(bin, bin, "c"); !strings.Contains(next, "\n  spirepod pki gen\n") {
		t.Fatalf("on PATH: next steps\n%s", next)
	}
	// init --force over a scaffold with a team CA and a server CA: neither step again
	c := filepath.Join(dir, "c")
	f := newFactory(&IOStreams{Out: &strings.Builder{}, ErrOut: &strings.Builder{}}, func(k string) string { return env[k] })
	f.Getwd = func() (string, error) { return c, nil }
	if code := run(t.Context(), f, []string{"pki", "gen"}); code != 0 {
		t.Fatal("pki gen failed")
	}
	if code := run(t.Context(), f, []string{"bundle", "set", filepath.Join(c, "certs", "secret", "agent-x509pop.crt.pem")}); code != 0 {
		t.Fatal("bundle set failed")
	}
	next = initNext(bin, bin, "c", "--replicas", "2", "--force")
	if strings.Contains(next, "pki gen") || strings.Contains(next, "bundle set") || !strings.Contains(next, "spirepod pr trust-ca") {
		t.Fatalf("init --force with a CA and a bundle: next steps\n%s", next)
	}
}
