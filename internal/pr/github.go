package pr

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/google/go-github/v60/github"

	"github.com/spirepod/spirepod/internal/retry"
)

// GitHubOptions say where and how to reach GitHub.
type GitHubOptions struct {
	// HTTPClient is the client requests go through; its transport is wrapped.
	HTTPClient *http.Client
	// Host is the GitHub host (city.host): github.com, <tenant>.ghe.com or
	// a GitHub Enterprise Server host; the API endpoints follow from it
	// (APIEndpoints). "" is github.com. BaseURL, when set, wins.
	Host string
	// BaseURL is the REST API root when it is not the host's usual one
	// (a proxy, or the fake in tests): https://HOST/api/v3/ or
	// https://api.HOST/. GraphQL is then at /api/graphql for a root ending
	// in /api/v3/, else at <root>/graphql.
	BaseURL string
	// Token authenticates; it is only ever sent in the Authorization header.
	Token string
	// Repo is owner/name of the city repository; Base its base branch.
	Repo string
	Base string
	// Sleep waits between retries (tests pass one that does not sleep).
	Sleep func(context.Context, time.Duration) error
	Now   func() time.Time
	// Retries of a 5xx or rate-limited request; 0 means 4.
	Retries int
	// MaxRateLimitWait is the longest spirepod waits for one rate limit
	// to pass (GitHub's retry-after or x-ratelimit-reset) before it gives
	// up with the rate-limit error; 0 means 2 minutes. The context's
	// deadline bounds it too.
	MaxRateLimitWait time.Duration
	// Progress receives one line per step; nil discards.
	Progress io.Writer
	// Conditional, when set, keeps ETags across calls: a caller that polls
	// (spirepod up) sends conditional requests, which GitHub answers 304
	// without counting them against the rate limit.
	Conditional *Conditional
}

type client struct {
	gh          *github.Client
	tr          *apiTransport
	owner, name string
	headOwner   string
	headName    string
	baseBranch  string
	forked      bool
	progress    io.Writer
	sleep       func(context.Context, time.Duration) error
	graphqlURL  string
}

func newClient(o GitHubOptions) (*client, error) {
	owner, name, ok := strings.Cut(o.Repo, "/")
	if !ok || owner == "" || name == "" {
		return nil, fmt.Errorf("repository %q is not owner/name", o.Repo)
	}
	hc := o.HTTPClient
	if hc == nil {
		hc = &http.Client{Timeout: 60 * time.Second}
	}
	base := hc.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	if o.Conditional != nil {
		base = &conditionalTransport{base: base, cache: o.Conditional}
	}
	if o.Sleep == nil {
		o.Sleep = retry.Sleep
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Retries == 0 {
		o.Retries = 4
	}
	if o.MaxRateLimitWait == 0 {
		o.MaxRateLimitWait = 2 * time.Minute
	}
	progress := o.Progress
	if progress == nil {
		progress = io.Discard
	}
	tr := &apiTransport{base: base, token: o.Token, sleep: o.Sleep, now: o.Now, retries: o.Retries,
		minDelay: 500 * time.Millisecond, attemptTimeout: hc.Timeout, maxWait: o.MaxRateLimitWait, progress: progress}
	wrapped := *hc
	wrapped.Transport = tr
	// The client's timeout applies to each attempt inside the transport, so
	// waiting out a rate limit is bounded by the caller's context instead.
	wrapped.Timeout = 0
	gh := github.NewClient(&wrapped)
	var api, gql *url.URL
	if o.BaseURL != "" {
		u := o.BaseURL
		if !strings.HasSuffix(u, "/") {
			u += "/"
		}
		if p, err := url.Parse(u); err != nil || p.Host == "" || (p.Scheme != "https" && p.Scheme != "http") {
			return nil, fmt.Errorf("GitHub API URL %q is not an absolute http(s) URL", o.BaseURL)
		}
		// go-github's rule: a root that neither ends in /api/v3/ nor is on
		// an api.* host gets api/v3/ appended (GitHub Enterprise Server).
		var err error
		if gh, err = gh.WithEnterpriseURLs(u, u); err != nil {
			return nil, fmt.Errorf("GitHub API URL %q: %w", o.BaseURL, err)
		}
		api = gh.BaseURL
		gql, _ = url.Parse(graphqlURL(api))
	} else {
		var err error
		if api, gql, err = APIEndpoints(o.Host); err != nil {
			return nil, err
		}
		gh.BaseURL = api
	}
	// The token goes to the API's scheme and host only.
	tr.api = api
	return &client{gh: gh, tr: tr, owner: owner, name: name, headOwner: owner, headName: name,
		baseBranch: o.Base, progress: progress, sleep: o.Sleep, graphqlURL: gql.String()}, nil
}

func (c *client) tree(sha string) BaseTree { return &remoteTree{c: c, sha: sha} }

func (c *client) repo() string     { return c.owner + "/" + c.name }
func (c *client) headRepo() string { return c.headOwner + "/" + c.headName }

func (c *client) base(ctx context.Context) (string, string, error) {
	// One request gives the tip and its tree. Not Repositories.GetBranch: its
	// redirect handling hides GitHub's error body.
	op := fmt.Sprintf("read branch %s of %s", c.baseBranch, c.repo())
	req, err := c.gh.NewRequest(http.MethodGet, fmt.Sprintf("repos/%s/%s/branches/%s", c.owner, c.name, url.PathEscape(c.baseBranch)), nil)
	if err != nil {
		return "", "", err
	}
	b := new(github.Branch)
	if _, err := c.gh.Do(ctx, req, b); err != nil {
		return "", "", translate(err, op, c.repo(), "contents:read")
	}
	return b.GetCommit().GetSHA(), b.GetCommit().GetCommit().GetTree().GetSHA(), nil
}

// read reads a file through the contents API. A file above the contents
// API's 1 MB limit comes back with content "" and encoding "none" (GitHub's
// description of "Get repository content":
// https://docs.github.com/rest/repos/contents#get-repository-content); it is
// then read by its SHA through the Git Data API, which serves blobs up to
// 100 MB.
func (c *client) read(ctx context.Context, ref, path string, head bool) ([]byte, bool, error) {
	owner, name := c.owner, c.name
	if head {
		owner, name = c.headOwner, c.headName
	}
	fc, _, _, err := c.gh.Repositories.GetContents(ctx, owner, name, path, &github.RepositoryContentGetOptions{Ref: ref})
	if isNotFound(err) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, translate(err, fmt.Sprintf("read %s in %s/%s", path, owner, name), owner+"/"+name, "contents:read")
	}
	if fc == nil {
		return nil, false, fmt.Errorf("read %s in %s/%s: it is a directory", path, owner, name)
	}
	if fc.GetEncoding() == "none" || (fc.Content != nil && *fc.Content == "" && fc.GetSize() > 0) {
		b, err := c.blob(ctx, owner, name, fc.GetSHA(), path)
		return b, err == nil, err
	}
	s, err := fc.GetContent()
	if err != nil {
		return nil, false, fmt.Errorf("read %s in %s/%s: %w", path, owner, name, err)
	}
	return []byte(s), true, nil
}

// blob reads a blob by SHA through the Git Data API ("Get a blob", base64,
// up to 100 MB: https://docs.github.com/rest/git/blobs#get-a-blob) and
// checks that its content hashes to the SHA. path names it in errors.
func (c *client) blob(ctx context.Context, owner, name, sha, path string) ([]byte, error) {
	op := fmt.Sprintf("read %s (blob %s) in %s/%s", path, shortRef(sha), owner, name)
	if !plumbing.IsHash(sha) {
		return nil, fmt.Errorf("%s: GitHub gave no blob SHA", op)
	}
	b, _, err := c.gh.Git.GetBlob(ctx, owner, name, sha)
	if err != nil {
		return nil, translate(err, op, owner+"/"+name, "contents:read")
	}
	var data []byte
	switch b.GetEncoding() {
	case "base64":
		data, err = base64.StdEncoding.DecodeString(strings.NewReplacer("\n", "", "\r", "").Replace(b.GetContent()))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", op, err)
		}
	case "utf-8":
		data = []byte(b.GetContent())
	default:
		return nil, fmt.Errorf("%s: unsupported blob encoding %q", op, b.GetEncoding())
	}
	if got := plumbing.ComputeHash(plumbing.BlobObject, data); got.String() != sha {
		return nil, fmt.Errorf("%s: the content GitHub sent hashes to %s, not to the blob's SHA", op, shortRef(got.String()))
	}
	return data, nil
}

func (c *client) branch(ctx context.Context, name string) (string, bool, error) {
	ref, _, err := c.gh.Git.GetRef(ctx, c.headOwner, c.headName, "heads/"+name)
	if isNotFound(err) {
		return "", false, nil
	}
	if err != nil {
		return "", false, translate(err, "read branch "+name+" of "+c.headRepo(), c.headRepo(), "contents:read")
	}
	return ref.GetObject().GetSHA(), true, nil
}

func (c *client) commitInfo(ctx context.Context, sha string) (string, string, error) {
	cm, _, err := c.gh.Git.GetCommit(ctx, c.headOwner, c.headName, sha)
	if err != nil {
		return "", "", translate(err, "read commit "+sha, c.headRepo(), "contents:read")
	}
	return cm.GetTree().GetSHA(), cm.GetMessage(), nil
}

func (c *client) write(ctx context.Context, baseTree string, files []File, parents []string, msg string) (string, error) {
	if err := guard(files); err != nil {
		return "", err
	}
	entries := make([]*github.TreeEntry, len(files))
	for i, f := range files {
		entries[i] = &github.TreeEntry{Path: github.String(f.Path), Mode: github.String("100644"),
			Type: github.String("blob"), Content: github.String(string(f.New))}
		if f.Delete { // no sha and no content: go-github sends "sha": null, which removes the path
			entries[i].Content = nil
		}
	}
	tree, _, err := c.gh.Git.CreateTree(ctx, c.headOwner, c.headName, baseTree, entries)
	if err != nil {
		if st := statusOf(err); (st == http.StatusForbidden || st == http.StatusNotFound) && !c.forked {
			if ferr := c.forkIfCannotPush(ctx); ferr != nil {
				return "", ferr
			}
		}
		return "", translate(err, "create tree in "+c.headRepo(), c.headRepo(), "contents:write")
	}
	commit := &github.Commit{Message: github.String(msg), Tree: &github.Tree{SHA: tree.SHA}}
	for _, p := range parents {
		commit.Parents = append(commit.Parents, &github.Commit{SHA: github.String(p)})
	}
	cm, _, err := c.gh.Git.CreateCommit(ctx, c.headOwner, c.headName, commit, nil)
	if err != nil {
		return "", translate(err, "create commit in "+c.headRepo(), c.headRepo(), "contents:write")
	}
	return cm.GetSHA(), nil
}

// forkIfCannotPush asks whether the user may push; when not, it forks the
// repository, waits for the fork, and returns errForked.
func (c *client) forkIfCannotPush(ctx context.Context) error {
	r, _, err := c.gh.Repositories.Get(ctx, c.owner, c.name)
	if err != nil {
		return translate(err, "read repository "+c.repo(), c.repo(), "metadata:read")
	}
	if r.GetPermissions()["push"] {
		return nil // the token, not the user, lacks the permission: report the original error
	}
	fmt.Fprintf(c.progress, "no push access to %s: using a fork\n", c.repo())
	f, _, err := c.gh.Repositories.CreateFork(ctx, c.owner, c.name, &github.RepositoryCreateForkOptions{})
	var accepted *github.AcceptedError
	if err != nil && !errors.As(err, &accepted) {
		return translate(err, "fork "+c.repo(), c.repo(), "administration:write (to create a fork)")
	}
	if f == nil || f.GetOwner().GetLogin() == "" {
		// 202 Accepted: go-github returns the body in AcceptedError.
		f = new(github.Repository)
		if accepted != nil {
			_ = jsonUnmarshal(accepted.Raw, f)
		}
	}
	if f.GetOwner().GetLogin() == "" {
		return fmt.Errorf("fork %s: GitHub did not say where the fork is", c.repo())
	}
	c.headOwner, c.headName, c.forked = f.GetOwner().GetLogin(), f.GetName(), true
	// Forking is asynchronous: wait until the fork's git data answers
	// (404 or 409 until then), 1 s doubling to 8 s, 11 tries.
	err = retry.Backoff{Min: time.Second, Max: 8 * time.Second, For: time.Hour, Tries: 11, Sleep: c.sleep,
		Retry: func(err error) bool {
			st := statusOf(err)
			return st == http.StatusConflict || st == http.StatusNotFound
		},
	}.Do(ctx, func() error {
		_, _, err := c.gh.Git.GetRef(ctx, c.headOwner, c.headName, "heads/"+c.baseBranch)
		return err
	})
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("wait for fork %s: %w", c.headRepo(), ctx.Err())
		}
		return translate(err, "wait for fork "+c.headRepo(), c.headRepo(), "contents:read")
	}
	return errForked
}

func (c *client) setBranch(ctx context.Context, name, sha string, create, force bool) error {
	ref := &github.Reference{Ref: github.String("refs/heads/" + name), Object: &github.GitObject{SHA: github.String(sha)}}
	var err error
	if create {
		_, _, err = c.gh.Git.CreateRef(ctx, c.headOwner, c.headName, ref)
	} else {
		_, _, err = c.gh.Git.UpdateRef(ctx, c.headOwner, c.headName, ref, force)
	}
	if st := statusOf(err); st == http.StatusConflict || st == http.StatusUnprocessableEntity {
		fmt.Fprintf(c.progress, "branch %s moved meanwhile: starting over\n", name)
		return errRefMoved
	}
	return translate(err, "set branch "+name+" in "+c.headRepo(), c.headRepo(), "contents:write")
}

// Open upserts the change as a pull request on GitHub.
func Open(ctx context.Context, ch *Change, o GitHubOptions) (*Result, error) {
	c, err := newClient(o)
	if err != nil {
		return nil, err
	}
	res := &Result{Kind: ch.Kind, Repo: c.repo(), Base: o.Base, Branch: ch.Branch, Title: ch.Title, Body: ch.Body, Warnings: ch.Warnings}
	defer func() { res.Requests = int(c.tr.count.Load()) }()
	if err := upsert(ctx, c, ch, res); err != nil {
		res.Requests = int(c.tr.count.Load())
		return res, err
	}
	if c.forked {
		res.HeadRepo = c.headRepo()
	}
	if res.Action == ActionInBase {
		return res, nil
	}
	pr, err := c.upsertPull(ctx, ch, res.Action)
	if err != nil {
		return res, err
	}
	res.URL, res.Number = pr.GetHTMLURL(), pr.GetNumber()
	return res, nil
}

func (c *client) head(branch string) string { return c.headOwner + ":" + branch }

func (c *client) findOpenPull(ctx context.Context, branch string) (*github.PullRequest, error) {
	prs, _, err := c.gh.PullRequests.List(ctx, c.owner, c.name, &github.PullRequestListOptions{
		State: "open", Head: c.head(branch), Base: c.baseBranch})
	if err != nil {
		return nil, translate(err, "list pull requests of "+c.repo(), c.repo(), "pull_requests:read")
	}
	if len(prs) == 0 {
		return nil, nil
	}
	return prs[0], nil
}

func (c *client) upsertPull(ctx context.Context, ch *Change, action string) (*github.PullRequest, error) {
	if action != ActionCreated {
		pr, err := c.findOpenPull(ctx, ch.Branch)
		if err != nil {
			return nil, err
		}
		if pr != nil {
			if action == ActionUnchanged || (pr.GetBody() == ch.Body && pr.GetTitle() == ch.Title) {
				return pr, nil
			}
			return c.editPull(ctx, pr, ch)
		}
	}
	pr, _, err := c.gh.PullRequests.Create(ctx, c.owner, c.name, &github.NewPullRequest{
		Title: github.String(ch.Title), Head: github.String(c.head(ch.Branch)), Base: github.String(c.baseBranch),
		Body: github.String(ch.Body), MaintainerCanModify: github.Bool(true)})
	if statusOf(err) == http.StatusUnprocessableEntity && strings.Contains(errorText(err), "already exists") {
		existing, ferr := c.findOpenPull(ctx, ch.Branch)
		if ferr != nil {
			return nil, ferr
		}
		if existing != nil {
			if existing.GetBody() == ch.Body {
				return existing, nil
			}
			return c.editPull(ctx, existing, ch)
		}
	}
	if err != nil {
		return nil, translate(err, "open pull request in "+c.repo(), c.repo(), "pull_requests:write")
	}
	return pr, nil
}

func (c *client) editPull(ctx context.Context, pr *github.PullRequest, ch *Change) (*github.PullRequest, error) {
	out, _, err := c.gh.PullRequests.Edit(ctx, c.owner, c.name, pr.GetNumber(), &github.PullRequest{
		Title: github.String(ch.Title), Body: github.String(ch.Body)})
	if err != nil {
		return nil, translate(err, fmt.Sprintf("update pull request #%d", pr.GetNumber()), c.repo(), "pull_requests:write")
	}
	return out, nil
}

func errorText(err error) string {
	var er *github.ErrorResponse
	if errors.As(err, &er) {
		s := er.Message
		for _, e := range er.Errors {
			s += " " + e.Message
		}
		return s
	}
	return err.Error()
}
