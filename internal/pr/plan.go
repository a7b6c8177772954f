package pr

import (
	"context"
	"fmt"
	"strings"

	"github.com/pmezard/go-difflib/difflib"
)

// Plan computes the change against read (nil: an empty base) and returns
// what a run would do, with the unified diff of every file. It writes nothing.
func Plan(ctx context.Context, ch *Change, read ReadFunc, base string) (*Result, error) {
	if read == nil {
		read = func(context.Context, string) ([]byte, bool, error) { return nil, false, nil }
	}
	files, err := compute(ctx, ch, memoRead(read))
	if err != nil {
		return nil, err
	}
	res := &Result{Kind: ch.Kind, Base: base, Branch: ch.Branch, Title: ch.Title, Body: ch.Body,
		Files: paths(files), Action: ActionPlanned, Warnings: ch.Warnings}
	if len(files) == 0 {
		res.Action = ActionInBase
	}
	res.Diff, err = Diff(files)
	return res, err
}

// Diff renders files as one unified diff, like `git diff`.
func Diff(files []File) (string, error) {
	var b strings.Builder
	for _, f := range files {
		from := "a/" + f.Path
		if !f.OldExists {
			from = "/dev/null"
		}
		d := difflib.UnifiedDiff{A: splitLines(f.Old), B: splitLines(f.New),
			FromFile: from, ToFile: "b/" + f.Path, Context: 3}
		if !f.OldExists {
			d.A = nil
		}
		fmt.Fprintf(&b, "diff --git a/%s b/%s\n", f.Path, f.Path)
		if err := difflib.WriteUnifiedDiff(&b, d); err != nil {
			return "", err
		}
	}
	return b.String(), nil
}

// PlanGitHub is Plan against the base branch on GitHub, read with GET
// requests only; Result.Requests counts them.
func PlanGitHub(ctx context.Context, ch *Change, o GitHubOptions) (*Result, error) {
	c, err := newClient(o)
	if err != nil {
		return nil, err
	}
	sha, _, err := c.base(ctx)
	if err != nil {
		return nil, err
	}
	res, err := Plan(ctx, ch, func(ctx context.Context, p string) ([]byte, bool, error) { return c.read(ctx, sha, p, false) }, o.Base)
	if res != nil {
		res.Repo, res.BaseSHA, res.Requests = c.repo(), sha, int(c.tr.count.Load())
	}
	return res, err
}

// splitLines keeps line endings and, unlike difflib.SplitLines, adds no
// empty last line; a missing final newline is marked as git does.
func splitLines(b []byte) []string {
	if len(b) == 0 {
		return nil
	}
	lines := strings.SplitAfter(string(b), "\n")
	if lines[len(lines)-1] == "" {
		return lines[:len(lines)-1]
	}
	lines[len(lines)-1] += "\n\\ No newline at end of file\n"
	return lines
}
