package pr

import (
	"context"
	"errors"
)

// backend is where a branch is made: GitHub's Git Data API or a local repository.
type backend interface {
	// base returns the base branch's tip commit and its tree.
	base(ctx context.Context) (sha, tree string, err error)
	// read reads a file at a commit of the base repository (head=false) or
	// of the repository holding the branch (head=true).
	read(ctx context.Context, ref, path string, head bool) ([]byte, bool, error)
	// branch returns the branch's tip, if the branch exists.
	branch(ctx context.Context, name string) (sha string, ok bool, err error)
	// commitInfo returns a commit's tree and message.
	commitInfo(ctx context.Context, sha string) (tree, msg string, err error)
	// write stores files as a new tree on baseTree and a commit with parents.
	write(ctx context.Context, baseTree string, files []File, parents []string, msg string) (string, error)
	// setBranch creates or moves the branch; errRefMoved when it changed under us.
	setBranch(ctx context.Context, name, sha string, create, force bool) error
	// tree is the base repository at a commit, read in bulk.
	tree(sha string) BaseTree
}

// errRefMoved means a ref changed while we worked: start over.
var errRefMoved = errors.New("the branch moved while spirepod was updating it")

// errForked means the backend switched to a fork: start over on it.
var errForked = errors.New("switched to a fork")

// upsert makes the branch hold the change, idempotently. It fills res's
// Action, Commit, BaseSHA and Files.
func upsert(ctx context.Context, b backend, c *Change, res *Result) error {
	var lastErr error
	for attempt := 0; attempt < 4; attempt++ {
		err := upsertOnce(ctx, b, c, res)
		if errors.Is(err, errForked) {
			continue
		}
		if errors.Is(err, errRefMoved) {
			lastErr = err
			continue
		}
		return err
	}
	return lastErr
}

func upsertOnce(ctx context.Context, b backend, c *Change, res *Result) error {
	baseSHA, baseTree, err := b.base(ctx)
	if err != nil {
		return err
	}
	res.BaseSHA = baseSHA
	read := memoRead(func(ctx context.Context, p string) ([]byte, bool, error) { return b.read(ctx, baseSHA, p, false) })
	files, err := compute(ctx, c, read)
	if err != nil {
		return err
	}
	res.Files = paths(files)
	if len(files) == 0 {
		res.Action = ActionInBase
		return nil
	}
	warnings, err := verify(ctx, c, b.tree(baseSHA), files)
	if err != nil {
		return err
	}
	res.Warnings = warnings
	// Reading and judging the city can take a while: once interrupted,
	// nothing is written and no ref moves.
	if err := ctx.Err(); err != nil {
		return err
	}
	msg := commitMessage(c, baseSHA)
	headSHA, exists, err := b.branch(ctx, c.Branch)
	if err != nil {
		return err
	}
	if !exists {
		sha, err := b.write(ctx, baseTree, files, []string{baseSHA}, msg)
		if err != nil {
			return err
		}
		if err := b.setBranch(ctx, c.Branch, sha, true, false); err != nil {
			return err
		}
		res.Action, res.Commit = ActionCreated, sha
		return nil
	}
	_, headMsg, err := b.commitInfo(ctx, headSHA)
	if err != nil {
		return err
	}
	same := true
	for _, f := range files {
		got, ok, err := b.read(ctx, headSHA, f.Path, true)
		if err != nil {
			return err
		}
		if ok == f.Delete || (!f.Delete && string(got) != string(f.New)) {
			same = false
			break
		}
	}
	if same {
		res.Action, res.Commit = ActionUnchanged, headSHA
		return nil
	}
	if trailerBase(headMsg) == baseSHA {
		// A new commit on the branch whose tree is the base's plus exactly
		// this change: files an earlier run wrote and this one does not
		// (another --format's) are gone.
		sha, err := b.write(ctx, baseTree, files, []string{headSHA}, msg)
		if err != nil {
			return err
		}
		if err := b.setBranch(ctx, c.Branch, sha, false, false); err != nil {
			return err
		}
		res.Action, res.Commit = ActionUpdated, sha
		return nil
	}
	sha, err := b.write(ctx, baseTree, files, []string{baseSHA}, msg)
	if err != nil {
		return err
	}
	if err := b.setBranch(ctx, c.Branch, sha, false, true); err != nil {
		return err
	}
	res.Action, res.Commit = ActionRebuilt, sha
	return nil
}
