package pr

import (
	"context"
	"errors"
	"fmt"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"

	"github.com/spirepod/spirepod/internal/pr/gittree"
)

// Local states of a team's branch (PullStatus.State with LocalStatus):
// a local checkout knows branches, not pull requests.
const (
	// StateBranch: the branch exists in the checkout only, not merged.
	StateBranch = "branch"
	// StatePushed: the branch is also on the remote (origin/<branch>):
	// a pull request can be opened from it; not merged.
	StatePushed = "pushed"
)

// LocalStatus reports the team's trust-ca and spiffe-id branches as a
// local checkout of the city repository sees them: none, branch (made here,
// not merged), pushed (also on the remote, not merged) or merged (the base
// branch contains the branch's commit, or already holds every file its last
// commit changed: a squash merge). Nothing is fetched: the answer is as
// fresh as the checkout (`git fetch` / `git pull` first). When one is
// merged, baseFiles are read at the base branch's tip into Base, as Status
// does.
func LocalStatus(ctx context.Context, team string, o LocalOptions, baseFiles ...string) (*StatusResult, error) {
	l, err := openLocal(o)
	if err != nil {
		return nil, err
	}
	baseSHA, _, err := l.base(ctx)
	if err != nil {
		return nil, err
	}
	base, err := l.repo.CommitObject(plumbing.NewHash(baseSHA))
	if err != nil {
		return nil, err
	}
	res := &StatusResult{Repo: o.Dir}
	merged := false
	for _, kind := range []string{KindTrustCA, KindSpiffeID} {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		ps := PullStatus{Kind: kind, Branch: BranchName(team, kind), State: "none", Checks: "none"}
		tip, ok, err := l.branch(ctx, ps.Branch)
		if err != nil {
			return nil, err
		}
		remote, rerr := l.repo.Reference(plumbing.NewRemoteReferenceName(l.o.Remote, ps.Branch), true)
		if rerr != nil && !errors.Is(rerr, plumbing.ErrReferenceNotFound) {
			return nil, rerr
		}
		if !ok && rerr == nil {
			tip, ok = remote.Hash().String(), true
		}
		if ok {
			ps.HeadSHA = tip
			ps.State = StateBranch
			if rerr == nil {
				ps.State = StatePushed
			}
			in, err := inBase(l, base, tip)
			if err != nil {
				return nil, fmt.Errorf("branch %s: %w", ps.Branch, err)
			}
			if in {
				ps.State, merged = "merged", true
			}
		}
		res.Pulls = append(res.Pulls, ps)
	}
	if merged && len(baseFiles) > 0 {
		res.Base = map[string]string{}
		for _, p := range baseFiles {
			data, ok, err := gittree.ReadFile(l.repo.Storer, base.TreeHash, p)
			if err != nil {
				return nil, err
			}
			if ok {
				res.Base[p] = string(data)
			}
		}
	}
	return res, nil
}

// inBase reports whether base holds the branch's change: its tip is base
// or an ancestor of it, or base already has every file the tip's commit
// changed, as the tip has it.
func inBase(l *local, base *object.Commit, tip string) (bool, error) {
	c, err := l.repo.CommitObject(plumbing.NewHash(tip))
	if err != nil {
		return false, err
	}
	if c.Hash == base.Hash {
		return true, nil
	}
	if anc, err := c.IsAncestor(base); err != nil {
		return false, err
	} else if anc {
		return true, nil
	}
	if c.NumParents() == 0 {
		return false, nil
	}
	parent, err := c.Parent(0)
	if err != nil {
		return false, err
	}
	from, err := parent.Tree()
	if err != nil {
		return false, err
	}
	to, err := c.Tree()
	if err != nil {
		return false, err
	}
	changes, err := from.Diff(to)
	if err != nil {
		return false, err
	}
	if len(changes) == 0 {
		return false, nil
	}
	for _, ch := range changes {
		path := ch.To.Name
		want, wantOK, err := gittree.ReadFile(l.repo.Storer, c.TreeHash, path)
		if path == "" { // deleted by the branch
			path = ch.From.Name
			want, wantOK, err = nil, false, nil
		}
		if err != nil {
			return false, err
		}
		got, gotOK, err := gittree.ReadFile(l.repo.Storer, base.TreeHash, path)
		if err != nil {
			return false, err
		}
		if gotOK != wantOK || string(got) != string(want) {
			return false, nil
		}
	}
	return true, nil
}
