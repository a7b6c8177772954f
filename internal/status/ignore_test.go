package status

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/spirepod/spirepod/internal/checklist"
	"github.com/spirepod/spirepod/internal/project"
)

// TestIgnoreCheck: the check agrees with the real `git check-ignore` (an
// independent judge) on a scaffold inside a git work tree, with and without
// the rules, and with the rules coming from a parent directory.
func TestIgnoreCheck(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git not on PATH")
	}
	for _, tc := range []struct {
		name           string
		rootIgnore     string
		scaffoldIgnore string
		wantOK         bool
	}{
		{"no rules", "", "", false},
		{"only *.key.pem", "", "*.key.pem\n", false},
		{"the scaffold's rules", "", "*.key.pem\n*.key\n.*.tmp-*\n/.spirepod/\n", true},
		{"rules at the repository root", "*.key.pem\n.*.tmp-*\n.spirepod/\n", "", true},
		{"a negation re-includes the key", "", "*.key.pem\n.*.tmp-*\n/.spirepod/\n!certs/secret/agent-x509pop.key.pem\n", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			if out, err := exec.Command("git", "init", "-q", root).CombinedOutput(); err != nil {
				t.Fatalf("git init: %v\n%s", err, out)
			}
			dir := filepath.Join(root, "teams", "payments")
			if err := os.MkdirAll(filepath.Join(dir, "certs", "secret"), 0o755); err != nil {
				t.Fatal(err)
			}
			write := func(path, content string) {
				if content == "" {
					return
				}
				if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			write(filepath.Join(root, ".gitignore"), tc.rootIgnore)
			write(filepath.Join(dir, ".gitignore"), tc.scaffoldIgnore)
			p := &project.Project{Dir: dir, Paths: project.DefaultPaths}
			r := ignoreCheck(p)
			if got := r.Status == checklist.OK; got != tc.wantOK {
				t.Errorf("check %s (%s), want ok=%v", r.Status, r.Message, tc.wantOK)
			}
			// git itself must agree on every path the check asks about.
			all := true
			for _, rel := range []string{p.Paths.CAKey, "certs/secret/.agent-x509pop.key.pem.tmp-123456", ".spirepod/last-verify.json"} {
				cmd := exec.Command("git", "-C", root, "check-ignore", "-q", filepath.Join("teams", "payments", rel))
				if err := cmd.Run(); err != nil {
					all = false
				}
			}
			if all != tc.wantOK {
				t.Errorf("git check-ignore says all ignored = %v; the test case expects %v", all, tc.wantOK)
			}
		})
	}
}
