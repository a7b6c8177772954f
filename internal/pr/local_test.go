package pr_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spirepod/spirepod/internal/pr"
	"github.com/spirepod/spirepod/internal/project"
)

// gitCmd runs the real git CLI, the independent judge of what go-git wrote.
func gitCmd(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_NOSYSTEM=1",
		"GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.com", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.com")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func TestLocal(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git not installed")
	}
	root := t.TempDir()
	bare := filepath.Join(root, "remote.git")
	city := filepath.Join(root, "city")
	gitCmd(t, root, "init", "-q", "--bare", bare)
	gitCmd(t, root, "init", "-q", "-b", "main", city)
	otherCA, _ := genCA(t, "other CA")
	if err := os.MkdirAll(filepath.Join(city, filepath.Dir(bundlePath)), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(city, bundlePath), otherCA, 0o644); err != nil {
		t.Fatal(err)
	}
	gitCmd(t, city, "add", ".")
	gitCmd(t, city, "commit", "-q", "-m", "initial")
	gitCmd(t, city, "remote", "add", "origin", bare)

	ca, _ := genCA(t, "payments CA")
	p := testProject(project.TrustListBundle)
	branch := "spirepod/payments/trust-ca"
	o := pr.LocalOptions{Dir: city, Base: "main", Push: true}
	res, err := pr.OpenLocal(context.Background(), trustCA(t, p, ca), o)
	if err != nil {
		t.Fatal(err)
	}
	if res.Action != pr.ActionCreated || !res.Pushed {
		t.Fatalf("%+v", res)
	}
	if got := gitCmd(t, city, "diff", "--name-only", "main", branch); got != bundlePath+"\n" {
		t.Errorf("changed files: %q", got)
	}
	if got := gitCmd(t, city, "show", branch+":"+bundlePath); got != string(otherCA)+string(ca) {
		t.Errorf("bundle on the branch:\n%s", got)
	}
	gitCmd(t, city, "fsck", "--strict")
	if head := gitCmd(t, city, "rev-parse", "--abbrev-ref", "HEAD"); head != "main\n" {
		t.Errorf("HEAD moved to %q", head)
	}
	if st := gitCmd(t, city, "status", "--porcelain"); st != "" {
		t.Errorf("work tree touched: %q", st)
	}
	if got, want := gitCmd(t, bare, "rev-parse", branch), gitCmd(t, city, "rev-parse", branch); got != want {
		t.Errorf("pushed %s, local %s", got, want)
	}
	again, err := pr.OpenLocal(context.Background(), trustCA(t, p, ca), pr.LocalOptions{Dir: city, Base: "main"})
	if err != nil || again.Action != pr.ActionUnchanged {
		t.Errorf("re-run: %v %+v", err, again)
	}
	// The base moved: rebuilt on it.
	gitCmd(t, city, "commit", "-q", "--allow-empty", "-m", "moved")
	reb, err := pr.OpenLocal(context.Background(), trustCA(t, p, ca), pr.LocalOptions{Dir: city, Base: "main"})
	if err != nil || reb.Action != pr.ActionUnchanged {
		t.Errorf("base moved without touching the bundle: %v %+v", err, reb)
	}
	ca2, _ := genCA(t, "payments CA 2")
	reb, err = pr.OpenLocal(context.Background(), trustCA(t, p, ca2), pr.LocalOptions{Dir: city, Base: "main"})
	if err != nil || reb.Action != pr.ActionRebuilt {
		t.Fatalf("new CA on a moved base: %v %+v", err, reb)
	}
	if parent := gitCmd(t, city, "rev-parse", branch+"^"); parent != gitCmd(t, city, "rev-parse", "main") {
		t.Errorf("rebuilt branch's parent %s is not main", parent)
	}
	if got := gitCmd(t, city, "show", branch+":"+bundlePath); got != string(otherCA)+string(ca2) {
		t.Errorf("rebuilt bundle:\n%s", got)
	}
}
