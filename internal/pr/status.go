package pr

import (
	"context"

	"github.com/google/go-github/v60/github"
)

// PullStatus is the state of one of the team's pull requests.
type PullStatus struct {
	Kind   string `json:"kind"`
	Branch string `json:"branch"`
	// State is none (no pull request), open, merged or closed.
	State   string `json:"state"`
	URL     string `json:"url,omitempty"`
	Number  int    `json:"number,omitempty"`
	Title   string `json:"title,omitempty"`
	HeadSHA string `json:"headSHA,omitempty"`
	// Checks summarises the check runs on the head commit: none, pending, success or failure.
	Checks        string `json:"checks"`
	ChecksPassed  int    `json:"checksPassed"`
	ChecksFailed  int    `json:"checksFailed"`
	ChecksPending int    `json:"checksPending"`
}

// StatusResult is both pull requests' state.
type StatusResult struct {
	Repo     string       `json:"repo"`
	Pulls    []PullStatus `json:"pulls"`
	Requests int          `json:"requests"`
	// Base holds the files Status was asked for, as the base branch has
	// them now (absent: not there), read when a pull request is merged: a
	// merge is only as good as what the base still holds.
	Base map[string]string `json:"-"`
}

// Status reports the trust-ca and spiffe-id pull requests of a team,
// looking for branches in the repository and then in the user's fork. When
// one is merged, baseFiles are read at the base branch's tip into Base.
func Status(ctx context.Context, team string, o GitHubOptions, baseFiles ...string) (*StatusResult, error) {
	c, err := newClient(o)
	if err != nil {
		return nil, err
	}
	res := &StatusResult{Repo: c.repo()}
	defer func() { res.Requests = int(c.tr.count.Load()) }()
	login := ""
	for _, kind := range []string{KindTrustCA, KindSpiffeID} {
		ps := PullStatus{Kind: kind, Branch: BranchName(team, kind), State: "none", Checks: "none"}
		pr, err := c.latestPull(ctx, c.owner, ps.Branch)
		if err != nil {
			return res, err
		}
		if pr == nil {
			if login == "" {
				u, _, err := c.gh.Users.Get(ctx, "")
				if err != nil {
					return res, translate(err, "read the authenticated user", c.repo(), "")
				}
				login = u.GetLogin()
			}
			if login != c.owner {
				if pr, err = c.latestPull(ctx, login, ps.Branch); err != nil {
					return res, err
				}
			}
		}
		if pr != nil {
			ps.URL, ps.Number, ps.Title, ps.HeadSHA = pr.GetHTMLURL(), pr.GetNumber(), pr.GetTitle(), pr.GetHead().GetSHA()
			ps.State = pr.GetState()
			if pr.GetMerged() || pr.MergedAt != nil {
				ps.State = "merged"
			}
			if err := c.checks(ctx, &ps); err != nil {
				return res, err
			}
		}
		res.Pulls = append(res.Pulls, ps)
	}
	merged := false
	for _, ps := range res.Pulls {
		merged = merged || ps.State == "merged"
	}
	if merged && len(baseFiles) > 0 {
		sha, _, err := c.base(ctx)
		if err != nil {
			return res, err
		}
		got, err := c.tree(sha).Read(ctx, baseFiles)
		if err != nil {
			return res, err
		}
		res.Base = map[string]string{}
		for p, b := range got {
			res.Base[p] = string(b)
		}
	}
	return res, nil
}

func (c *client) latestPull(ctx context.Context, owner, branch string) (*github.PullRequest, error) {
	prs, _, err := c.gh.PullRequests.List(ctx, c.owner, c.name, &github.PullRequestListOptions{
		State: "all", Head: owner + ":" + branch, ListOptions: github.ListOptions{PerPage: 10}})
	if err != nil {
		return nil, translate(err, "list pull requests of "+c.repo(), c.repo(), "pull_requests:read")
	}
	for _, pr := range prs { // an open one wins over older closed ones
		if pr.GetState() == "open" {
			return pr, nil
		}
	}
	if len(prs) > 0 {
		return prs[0], nil
	}
	return nil, nil
}

func (c *client) checks(ctx context.Context, ps *PullStatus) error {
	if ps.HeadSHA == "" {
		return nil
	}
	runs, _, err := c.gh.Checks.ListCheckRunsForRef(ctx, c.owner, c.name, ps.HeadSHA, nil)
	if err != nil {
		return translate(err, "list checks of "+ps.HeadSHA, c.repo(), "checks:read")
	}
	for _, r := range runs.CheckRuns {
		switch {
		case r.GetStatus() != "completed":
			ps.ChecksPending++
		case r.GetConclusion() == "success" || r.GetConclusion() == "neutral" || r.GetConclusion() == "skipped":
			ps.ChecksPassed++
		default:
			ps.ChecksFailed++
		}
	}
	switch {
	case ps.ChecksFailed > 0:
		ps.Checks = "failure"
	case ps.ChecksPending > 0:
		ps.Checks = "pending"
	case ps.ChecksPassed > 0:
		ps.Checks = "success"
	}
	return nil
}
