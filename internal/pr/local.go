package pr

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/go-git/go-billy/v5"
	git "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/transport"

	"github.com/spirepod/spirepod/internal/pr/gittree"
)

// LocalOptions say which local checkout of the city repository to use.
type LocalOptions struct {
	// Dir is the checkout (its work tree is never touched: only refs and objects).
	Dir string
	// Base is the base branch: refs/heads/<Base>, else refs/remotes/<Remote>/<Base>.
	Base string
	// Push pushes the branch to Remote afterwards.
	Push   bool
	Remote string
	Auth   transport.AuthMethod
	Now    func() time.Time
}

type local struct {
	repo *git.Repository
	o    LocalOptions
}

func openLocal(o LocalOptions) (*local, error) {
	r, err := git.PlainOpenWithOptions(o.Dir, &git.PlainOpenOptions{DetectDotGit: true})
	if err != nil {
		return nil, fmt.Errorf("open git repository %s: %w", o.Dir, err)
	}
	if o.Remote == "" {
		o.Remote = "origin"
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &local{repo: r, o: o}, nil
}

func (l *local) base(context.Context) (string, string, error) {
	for _, name := range []plumbing.ReferenceName{plumbing.NewBranchReferenceName(l.o.Base), plumbing.NewRemoteReferenceName(l.o.Remote, l.o.Base)} {
		ref, err := l.repo.Reference(name, true)
		if errors.Is(err, plumbing.ErrReferenceNotFound) {
			continue
		}
		if err != nil {
			return "", "", err
		}
		c, err := l.repo.CommitObject(ref.Hash())
		if err != nil {
			return "", "", err
		}
		return c.Hash.String(), c.TreeHash.String(), nil
	}
	return "", "", fmt.Errorf("%s has no branch %s (nor %s/%s)", l.o.Dir, l.o.Base, l.o.Remote, l.o.Base)
}

func (l *local) read(_ context.Context, ref, p string, _ bool) ([]byte, bool, error) {
	c, err := l.repo.CommitObject(plumbing.NewHash(ref))
	if err != nil {
		return nil, false, err
	}
	return gittree.ReadFile(l.repo.Storer, c.TreeHash, p)
}

func (l *local) tree(sha string) BaseTree { return &localTree{l: l, sha: sha} }

func (l *local) branch(_ context.Context, name string) (string, bool, error) {
	ref, err := l.repo.Reference(plumbing.NewBranchReferenceName(name), true)
	if errors.Is(err, plumbing.ErrReferenceNotFound) {
		return "", false, nil
	}
	if err != nil {
		return "", false, err
	}
	return ref.Hash().String(), true, nil
}

func (l *local) commitInfo(_ context.Context, sha string) (string, string, error) {
	c, err := l.repo.CommitObject(plumbing.NewHash(sha))
	if err != nil {
		return "", "", err
	}
	return c.TreeHash.String(), c.Message, nil
}

func (l *local) signature() object.Signature {
	sig := object.Signature{Name: "spirepod", Email: "spirepod@localhost", When: l.o.Now()}
	for _, scope := range []config.Scope{config.LocalScope, config.GlobalScope} {
		cfg, err := l.repo.ConfigScoped(scope)
		if err == nil && cfg.User.Name != "" && cfg.User.Email != "" {
			sig.Name, sig.Email = cfg.User.Name, cfg.User.Email
			return sig
		}
	}
	return sig
}

func (l *local) write(_ context.Context, baseTree string, files []File, parents []string, msg string) (string, error) {
	if err := guard(files); err != nil {
		return "", err
	}
	var entries []gittree.Entry
	for _, f := range files {
		if f.Delete {
			entries = append(entries, gittree.Entry{Path: f.Path, Delete: true})
			continue
		}
		h, err := gittree.WriteBlob(l.repo.Storer, f.New)
		if err != nil {
			return "", err
		}
		entries = append(entries, gittree.Entry{Path: f.Path, Mode: filemode.Regular, Hash: h})
	}
	tree, err := gittree.Build(l.repo.Storer, plumbing.NewHash(baseTree), entries)
	if err != nil {
		return "", err
	}
	sig := l.signature()
	c := &object.Commit{Author: sig, Committer: sig, Message: msg, TreeHash: tree}
	for _, p := range parents {
		c.ParentHashes = append(c.ParentHashes, plumbing.NewHash(p))
	}
	h, err := gittree.WriteCommit(l.repo.Storer, c)
	return h.String(), err
}

// CheckedOutError refuses to move a branch that a work tree of the checkout
// has checked out (git refuses the same): its files would no longer match.
type CheckedOutError struct{ Branch, Where string }

func (e *CheckedOutError) Error() string {
	return fmt.Sprintf("branch %s is checked out in %s: moving it would leave that work tree out of date", e.Branch, e.Where)
}

// checkedOut reports where branch is checked out: the main work tree's HEAD
// or a linked work tree's (git worktree add), "" when nowhere.
func (l *local) checkedOut(branch string) string {
	want := plumbing.NewBranchReferenceName(branch)
	if head, err := l.repo.Storer.Reference(plumbing.HEAD); err == nil && head.Type() == plumbing.SymbolicReference && head.Target() == want {
		if wt, err := l.repo.Worktree(); err == nil {
			return wt.Filesystem.Root()
		}
		return l.o.Dir
	}
	fsys, ok := l.repo.Storer.(interface{ Filesystem() billy.Filesystem })
	if !ok {
		return ""
	}
	gitDir := fsys.Filesystem().Root()
	links, _ := filepath.Glob(filepath.Join(gitDir, "worktrees", "*", "HEAD"))
	for _, h := range links {
		b, err := os.ReadFile(h)
		if err == nil && strings.TrimSpace(string(b)) == "ref: "+want.String() {
			if gd, err := os.ReadFile(filepath.Join(filepath.Dir(h), "gitdir")); err == nil {
				return filepath.Dir(strings.TrimSpace(string(gd)))
			}
			return filepath.Dir(h)
		}
	}
	return ""
}

func (l *local) setBranch(_ context.Context, name, sha string, _, _ bool) error {
	if where := l.checkedOut(name); where != "" {
		return &CheckedOutError{Branch: name, Where: where}
	}
	return l.repo.Storer.SetReference(plumbing.NewHashReference(plumbing.NewBranchReferenceName(name), plumbing.NewHash(sha)))
}

// OpenLocal makes the same branch and commit as Open, in a local checkout,
// and pushes the branch when asked. It never touches the work tree or HEAD.
func OpenLocal(ctx context.Context, ch *Change, o LocalOptions) (*Result, error) {
	l, err := openLocal(o)
	if err != nil {
		return nil, err
	}
	if where := l.checkedOut(ch.Branch); where != "" {
		return nil, &CheckedOutError{Branch: ch.Branch, Where: where}
	}
	res := &Result{Kind: ch.Kind, Repo: o.Dir, Base: o.Base, Branch: ch.Branch, Title: ch.Title, Body: ch.Body, Warnings: ch.Warnings}
	if err := upsert(ctx, l, ch, res); err != nil {
		return res, err
	}
	if !o.Push || res.Action == ActionInBase {
		return res, nil
	}
	if err := ctx.Err(); err != nil {
		return res, err
	}
	spec := config.RefSpec(fmt.Sprintf("+refs/heads/%s:refs/heads/%s", ch.Branch, ch.Branch))
	err = l.repo.PushContext(ctx, &git.PushOptions{RemoteName: l.o.Remote, RefSpecs: []config.RefSpec{spec}, Auth: o.Auth})
	if err != nil && !errors.Is(err, git.NoErrAlreadyUpToDate) {
		return res, fmt.Errorf("push %s to %s: %w", ch.Branch, l.o.Remote, err)
	}
	res.Pushed = true
	return res, nil
}

// PlanLocal is Plan against the base branch of a local checkout.
func PlanLocal(ctx context.Context, ch *Change, o LocalOptions) (*Result, error) {
	l, err := openLocal(o)
	if err != nil {
		return nil, err
	}
	sha, _, err := l.base(ctx)
	if err != nil {
		return nil, err
	}
	res, err := plan(ctx, ch, func(ctx context.Context, p string) ([]byte, bool, error) { return l.read(ctx, sha, p, false) }, l.tree(sha), o.Base)
	if res != nil {
		res.Repo, res.BaseSHA = o.Dir, sha
	}
	return res, err
}
