package pr_test

import (
	"context"
	"errors"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/spirepod/spirepod/internal/pr"
	"github.com/spirepod/spirepod/internal/project"
)

// TestOpenLocalInterrupted: a change whose context is cancelled while the
// city is read and judged (an interrupt) writes no branch. Issue 21 item 2:
// `pr spiffe-id --local` ran on after SIGINT and created the branch.
func TestOpenLocalInterrupted(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git not installed")
	}
	city := filepath.Join(t.TempDir(), "city")
	gitCmd(t, filepath.Dir(city), "init", "-q", "-b", "main", city)
	gitCmd(t, city, "commit", "-q", "--allow-empty", "-m", "initial")
	ca, _ := genCA(t, "payments CA")
	ch := trustCA(t, testProject(project.TrustListBundle), ca)
	ctx, cancel := context.WithCancel(context.Background())
	// The city check runs after the base is read and before anything is
	// written: the interrupt lands there.
	ch.Verify = func(context.Context, pr.BaseTree, []pr.File) ([]string, error) {
		cancel()
		return nil, nil
	}
	_, err := pr.OpenLocal(ctx, ch, pr.LocalOptions{Dir: city, Base: "main"})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v, want context.Canceled", err)
	}
	if got := gitCmd(t, city, "branch", "--list", "spirepod/*"); got != "" {
		t.Fatalf("a branch was made after the interrupt: %q", got)
	}
}
