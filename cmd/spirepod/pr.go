package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"

	git "github.com/go-git/go-git/v5"
	"github.com/spf13/cobra"

	"github.com/spirepod/spirepod/internal/onboard"
	"github.com/spirepod/spirepod/internal/pki"
	"github.com/spirepod/spirepod/internal/pr"
	"github.com/spirepod/spirepod/internal/project"
)

// envGitHubAPIURL overrides the GitHub REST API root (GitHub Enterprise
// Server behind a proxy, or the fake GitHub in tests).
const envGitHubAPIURL = "SPIREPOD_GITHUB_API_URL"

func newCmdPR(f *Factory) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "pr",
		Short: "Open the city-repository pull requests of guide steps 4 and 5",
		Long: `Pull requests to the city repository (city.repo in spirepod.yaml), made through the GitHub
API without cloning it, on fixed branches spirepod/<team>/trust-ca and spirepod/<team>/spiffe-id.
Running again with the same content prints the existing pull request; new content adds a commit
and updates the description; if the base branch already has the change, nothing is opened.

  spirepod pr trust-ca    add the team CA to the SPIRE server's x509pop trust list   (step 4)
  spirepod pr spiffe-id   register node aliases and the Envoy SPIFFE IDs            (step 5)
  spirepod pr status      state and checks of both pull requests

GitHub access: the host is city.host in spirepod.yaml (or GH_HOST), github.com by default; for
GitHub Enterprise Server the API is https://HOST/api/v3/ (override with ` + envGitHubAPIURL + `).
The token comes from GH_TOKEN, then GITHUB_TOKEN (github.com) or GH_ENTERPRISE_TOKEN, then
GITHUB_ENTERPRISE_TOKEN (Enterprise), then ` + "`gh auth token --hostname HOST`" + `. It needs
contents:write and pull_requests:write on the repository (or on your fork, made for you when you
cannot push). It is never printed.

With --local CITY_DIR the same branch and commit are made in a local checkout instead (the work
tree is not touched); --push pushes the branch to origin.`,
	}
	cmd.AddCommand(
		newCmdPRTrustCA(f, nil),
		newCmdPRSpiffeID(f, nil),
		newCmdPRStatus(f, nil),
	)
	return cmd
}

// prCommon are the flags and dependencies trust-ca and spiffe-id share.
type prCommon struct {
	f *Factory

	Dir     string
	DryRun  bool
	Local   string
	Push    bool
	Timeout time.Duration
}

func (c *prCommon) addFlags(cmd *cobra.Command) {
	fl := cmd.Flags()
	addDirFlag(fl, &c.Dir)
	fl.BoolVar(&c.DryRun, "dry-run", false, "print the branch, the diff of every file and the PR title and body; change nothing")
	fl.StringVar(&c.Local, "local", "", "make the branch and commit in this local city checkout instead of through the GitHub API")
	fl.BoolVar(&c.Push, "push", false, "with --local, push the branch to origin")
	addTimeoutFlag(fl, &c.Timeout, 5*time.Minute, "give up after this long (retries and rate-limit waits included)")
}

func (c *prCommon) validate() error {
	if c.Push && c.Local == "" {
		return usageError("add --local CITY_DIR, or drop --push", "--push needs --local")
	}
	return checkTimeout(c.Timeout)
}

// gitHubHost is city.host, else GH_HOST, else github.com.
func gitHubHost(f *Factory, p *project.Project) string {
	if p != nil && p.City.Host != "" {
		return p.City.Host
	}
	if h := f.Getenv("GH_HOST"); h != "" {
		return h
	}
	return "github.com"
}

// resolveToken follows gh's order. The token is returned, never printed.
func (c *prCommon) resolveToken(ctx context.Context, host string) (string, error) {
	vars := []string{"GH_TOKEN", "GITHUB_TOKEN"}
	if !pr.IsGitHubCloud(host) {
		vars = []string{"GH_ENTERPRISE_TOKEN", "GITHUB_ENTERPRISE_TOKEN"}
	}
	for _, v := range vars {
		if t := strings.TrimSpace(c.f.Getenv(v)); t != "" {
			return t, nil
		}
	}
	if c.f.GHToken != nil {
		if t, err := c.f.GHToken(ctx, host); err == nil && t != "" {
			return t, nil
		}
	}
	return "", failure(fmt.Errorf("no GitHub token for %s", host),
		fmt.Sprintf("set %s (a token with contents:write and pull_requests:write on the city repository), or run `gh auth login --hostname %s`", vars[0], host))
}

func ghAuthToken(ctx context.Context, host string) (string, error) {
	path, err := exec.LookPath("gh")
	if err != nil {
		return "", err
	}
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, path, "auth", "token", "--hostname", host)
	cmd.Stdout = &out
	if err := cmd.Run(); err != nil {
		return "", err
	}
	return strings.TrimSpace(out.String()), nil
}

func (c *prCommon) gitHubOptions(ctx context.Context, p *project.Project, requireToken bool) (pr.GitHubOptions, error) {
	host := gitHubHost(c.f, p)
	// The library derives the API and GraphQL endpoints from the host
	// (api.github.com, api.<tenant>.ghe.com, https://HOST/api/v3/);
	// SPIREPOD_GITHUB_API_URL overrides them (the fake in tests).
	o := pr.GitHubOptions{HTTPClient: c.f.HTTPClient(), Host: host, BaseURL: c.f.Getenv(envGitHubAPIURL), Repo: p.City.Repo, Base: p.BaseBranch(),
		Now: c.f.Now, Progress: c.f.IO.ErrOut}
	if p.City.Repo == "" {
		return o, usageError("set city.repo (owner/name) in spirepod.yaml", "%s: city.repo is empty", project.FileName)
	}
	tok, err := c.resolveToken(ctx, host)
	if err != nil && requireToken {
		return o, err
	}
	o.Token = tok
	return o, nil
}

// where is where the command's pull request goes: --local (checked to be a
// directory), else GitHub, with a token unless it is a dry run.
func (c *prCommon) where(ctx context.Context, p *project.Project) (onboard.Where, error) {
	w := onboard.Where{Push: c.Push, DryRun: c.DryRun, Now: c.f.Now}
	if c.Local != "" {
		dir, err := c.f.Abs(c.Local)
		if err != nil {
			return w, err
		}
		w.Local = dir
		return w, checkLocalCity(c.Local, dir, p)
	}
	o, err := c.gitHubOptions(ctx, p, !c.DryRun)
	w.GitHub = o
	return w, err
}

// submit judges the change with the city rules and opens (or plans) it
// where the flags say; onboard.Submit does both.
func (c *prCommon) submit(ctx context.Context, p *project.Project, ch *pr.Change, pending onboard.Pending) (*pr.Result, error) {
	w, err := c.where(ctx, p)
	if err != nil {
		return nil, err
	}
	return onboard.Submit(ctx, ch, p, w, cityConfig(c.f, p, c.Local == ""), pending)
}

// pullsWhere is where the team's pull requests are read from: --local;
// else GitHub with a token; else the city checkout the last `--local` run
// used (note says so); else onboard.ErrNoToken, with the hint in note.
func (c *prCommon) pullsWhere(ctx context.Context, p *project.Project) (w onboard.Where, note string, err error) {
	if c.Local != "" {
		w, err = c.where(ctx, p)
		return w, "", err
	}
	o, err := c.gitHubOptions(ctx, p, false)
	if err != nil {
		return w, "", err
	}
	if o.Token != "" {
		return onboard.Where{GitHub: o, Now: c.f.Now}, "", nil
	}
	if rec, _ := project.LoadCityCheckout(p); rec != nil {
		return onboard.Where{Local: rec.Dir, Now: c.f.Now},
			fmt.Sprintf("no GitHub token: reading the branches from the city checkout %s (used by the last --local run)", displayPath(c.f, rec.Dir)), nil
	}
	return w, "no GitHub token for " + gitHubHost(c.f, p) + " (set GH_TOKEN or run `gh auth login`; after `pr … --local` the branches are read from that checkout)", onboard.ErrNoToken
}

// checkLocalCity refuses a --local that is not a directory (exit 2, as any
// missing input file), before anything is read.
func checkLocalCity(flagValue, dir string, p *project.Project) error {
	hint := "pass --local a local checkout of the city repository (git clone of " + p.City.Repo + ")"
	st, err := os.Stat(dir)
	if err != nil {
		return usageError(hint, "--local %s: %v", flagValue, pathErr(err))
	}
	if !st.IsDir() {
		return usageError(hint, "--local %s is not a directory", flagValue)
	}
	return nil
}

// prTeamCA is the team CA a pull request carries or pins: --ca, else the
// scaffold's certificate (never its key), judged by pki inspect.
func prTeamCA(f *Factory, p *project.Project, caFlag string) (*pki.TeamCA, error) {
	if caFlag != "" {
		return loadTeamCA(f, caFlag, "", "--ca")
	}
	cert, _ := scaffoldCAPaths(p, false)
	return loadTeamCA(f, cert, "", "")
}

// translatePRError gives known library errors their hint and exit code.
func translatePRError(err error) error {
	var ae *pr.APIError
	var pk *pr.PrivateKeyError
	var cc *onboard.CityCheckError
	var ro *onboard.RotatingError
	var co *pr.CheckedOutError
	switch {
	case errors.As(err, &ro):
		next := ""
		if ro.Next != "" {
			next = "; next: " + ro.Next
		}
		return usageError("continue the rotation with `spirepod pki rotate` (it opens this pull request with both CAs while they overlap"+next+"); nothing was sent",
			"%v: a hand-made trust-ca or spiffe-id pull request now would drop the CA the rotation keeps trusted", err)
	case errors.Is(err, git.ErrRepositoryNotExists):
		return usageError("pass --local a local checkout of the city repository (a directory made by git clone)", "--local: %v", err)
	case errors.As(err, &co):
		return failure(err, "switch that work tree to another branch first (git switch "+"<base branch>), or pass --local a separate checkout; nothing was changed")
	case errors.As(err, &cc):
		return failure(err, "each line names a file of the city and the rule (README: city check rules):"+cityCheckHint(cc))
	case errors.As(err, &ae):
		return failure(err, ae.Hint)
	case errors.As(err, &pk):
		return usageError("pass the CA certificate only (certs/secret/agent-x509pop.crt.pem); the key must never leave your machine", "%v", err)
	}
	return err
}

// renderResult prints a run: the PR URL (or the local branch) on stdout, what
// happened on stderr; the plan with its diff for --dry-run; JSON with -o json.
func renderResult(f *Factory, res *pr.Result, dryRun bool) error {
	for _, w := range res.Warnings {
		fmt.Fprintf(f.IO.ErrOut, "warning: %s\n", w)
	}
	if f.JSON() {
		// dryRun, as every --dry-run's JSON says: nothing was sent.
		return writeJSON(f.IO.Out, struct {
			*pr.Result
			DryRun bool `json:"dryRun"`
		}{res, dryRun})
	}
	out, errOut := f.IO.Out, f.IO.ErrOut
	switch res.Action {
	case pr.ActionPlanned:
		fmt.Fprintf(out, "branch: %s\nbase: %s\n", res.Branch, res.Base)
		fmt.Fprintf(out, "files: %s\n\n", strings.Join(res.Files, ", "))
		fmt.Fprint(out, res.Diff)
		fmt.Fprintf(out, "\ntitle: %s\n\n%s", res.Title, res.Body)
		fmt.Fprintln(errOut, "dry run: nothing was sent")
		return nil
	case pr.ActionInBase:
		fmt.Fprintf(errOut, "%s already contains this change: nothing to open\n", res.Base)
		return nil
	}
	where := "pull request"
	if res.URL == "" {
		where = "branch " + res.Branch + " (" + shortSHA(res.Commit) + ")"
	}
	switch res.Action {
	case pr.ActionCreated:
		fmt.Fprintf(errOut, "created %s", where)
	case pr.ActionUpdated:
		fmt.Fprintf(errOut, "added a commit to %s", where)
	case pr.ActionRebuilt:
		fmt.Fprintf(errOut, "rebuilt %s on the new %s", where, res.Base)
	case pr.ActionUnchanged:
		fmt.Fprintf(errOut, "unchanged: %s already holds this content", where)
	}
	if res.HeadRepo != "" {
		fmt.Fprintf(errOut, " from fork %s", res.HeadRepo)
	}
	if res.URL != "" {
		fmt.Fprintf(errOut, " (%d GitHub requests)\n", res.Requests)
		fmt.Fprintln(out, res.URL)
		return nil
	}
	if res.Pushed {
		fmt.Fprint(errOut, ", pushed to origin")
	}
	fmt.Fprintln(errOut)
	fmt.Fprintln(out, res.Branch)
	return nil
}

func shortSHA(s string) string {
	if len(s) > 12 {
		return s[:12]
	}
	return s
}
