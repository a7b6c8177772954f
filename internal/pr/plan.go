package pr

import (
	"context"
	"fmt"
	"strings"

	"github.com/spirepod/spirepod/internal/unidiff"
)

// Plan computes the change against read (nil: an empty base) and returns
// what a run would do, with the unified diff of every file. It writes nothing.
func Plan(ctx context.Context, ch *Change, read ReadFunc, base string) (*Result, error) {
	return plan(ctx, ch, read, emptyTree{}, base)
}

func plan(ctx context.Context, ch *Change, read ReadFunc, tree BaseTree, base string) (*Result, error) {
	if read == nil {
		read = func(context.Context, string) ([]byte, bool, error) { return nil, false, nil }
	}
	files, err := compute(ctx, ch, memoRead(read))
	if err != nil {
		return nil, err
	}
	warnings, err := verify(ctx, ch, tree, files)
	if err != nil {
		return nil, err
	}
	res := &Result{Kind: ch.Kind, Base: base, Branch: ch.Branch, Title: ch.Title, Body: ch.Body,
		Files: paths(files), Action: ActionPlanned, Warnings: warnings}
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
		fmt.Fprintf(&b, "diff --git a/%s b/%s\n", f.Path, f.Path)
		b.WriteString(unidiff.Diff(unidiff.Side{Name: "a/" + f.Path, Text: f.Old, Exists: f.OldExists},
			unidiff.Side{Name: "b/" + f.Path, Text: f.New, Exists: !f.Delete}))
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
	res, err := plan(ctx, ch, func(ctx context.Context, p string) ([]byte, bool, error) { return c.read(ctx, sha, p, false) }, c.tree(sha), o.Base)
	if res != nil {
		res.Repo, res.BaseSHA, res.Requests = c.repo(), sha, int(c.tr.count.Load())
	}
	return res, err
}
