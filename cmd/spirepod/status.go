package main

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/spirepod/spirepod/internal/apply"
	"github.com/spirepod/spirepod/internal/onboard"
	"github.com/spirepod/spirepod/internal/pr"
	"github.com/spirepod/spirepod/internal/project"
	"github.com/spirepod/spirepod/internal/retry"
	"github.com/spirepod/spirepod/internal/status"
)

type statusOptions struct {
	f    *Factory
	kube *kubeFlags

	Dir     string
	Short   bool
	Timeout time.Duration
}

func newCmdStatus(f *Factory, runF func(*statusOptions) error) *cobra.Command {
	opts := &statusOptions{f: f, kube: newKubeFlags()}
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Where you are in the seven steps: one checklist, local and remote",
		Long: `Check every step of the guide and print one checklist in the style of ` + "`linkerd check`" + `:
  1. scaffold: spirepod.yaml valid, the kustomization in its namespace
  2. team CA present and passing pki inspect
  3. the SPIRE server CA in the bundle ConfigMap
  4. trust-list PR and 5. SPIFFE ID PR: merged (open is a warning); without a GitHub token,
     the team's branches in the city checkout the last ` + "`pr … --local`" + ` used (recorded in .spirepod/)
  6. cluster: namespace, objects match the scaffold (asked of the API server by a server-side
     dry run, as ` + "`spirepod diff`" + ` does: missing or drifted objects; it needs get, list and
     patch, and says so when they are not allowed), the ` + defaultScaffoldFacts().IssuerKind + ` Ready, pods Running and ready
  7. the last ` + "`spirepod verify`" + ` succeeded

Local checks always run. Checks that need a GitHub token or a reachable cluster are skipped (-)
with the reason. --short prints one line per step, to paste into a chat.
-o json: {dir, namespace, context, checks: [{group, id, name, status, message, hint}],
steps: [{step, status, message}], failed}.

Exit codes: 0 nothing failed (warnings and skips allowed), 1 a check failed.`,
		Example: `  spirepod status
  spirepod status --short
  spirepod status --context dev -o json`,
		Args: cobra.NoArgs,
		RunE: runE(opts, func() error { return checkTimeout(opts.Timeout) }, runF, statusRun),
	}
	fl := cmd.Flags()
	opts.kube.AddFlags(fl)
	addDirFlag(fl, &opts.Dir)
	fl.BoolVar(&opts.Short, "short", false, "one line per step")
	addTimeoutFlag(fl, &opts.Timeout, 30*time.Second, "give up on the cluster and GitHub after this long")
	return cmd
}

func statusRun(ctx context.Context, opts *statusOptions) error {
	f := opts.f
	p, err := f.Project(opts.Dir)
	if err != nil {
		return err
	}
	if _, err := opts.kube.projectNamespace(p); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()
	so := status.Options{Project: p, Now: f.Now}
	so.Cluster, so.Context, so.ClusterSkip = statusCluster(ctx, f, opts.kube)
	so.Pulls, so.PullsSkip = statusPulls(ctx, f, p)
	rep, err := status.Run(ctx, so)
	if err != nil {
		return err
	}
	if err := renderStatus(f, rep, opts.Short); err != nil {
		return err
	}
	if rep.Failed {
		return &silentError{code: exitFailure}
	}
	return nil
}

// statusCluster is the cluster status checks, its context, or why they
// are skipped: none is configured, or it does not answer one request
// (status reports, it does not wait).
func statusCluster(ctx context.Context, f *Factory, kube *kubeFlags) (*apply.Target, string, string) {
	t, err := f.Kube(kube)
	if err != nil {
		return nil, "", "no cluster: " + err.Error()
	}
	pctx, pcancel := context.WithTimeout(ctx, 5*time.Second)
	_, err = t.Client.Discovery().RESTClient().Get().AbsPath("/version").Do(pctx).Raw()
	pcancel()
	switch {
	case err == nil:
		return &t.Target, t.Context, ""
	case !retry.Unreachable(err):
		if e := t.explain(err); e != nil {
			return nil, t.Context, e.Error()
		}
	}
	return nil, t.Context, t.unreachable(err).Error()
}

// statusPulls is both pull requests: from GitHub with a token; without
// one, the branches in the city checkout the last `--local` run used;
// else nil and why.
func statusPulls(ctx context.Context, f *Factory, p *project.Project) (*pr.StatusResult, string) {
	pc := &prCommon{f: f}
	w, note, err := pc.pullsWhere(ctx, p)
	switch {
	case err != nil && note != "":
		return nil, note
	case err != nil:
		return nil, err.Error()
	}
	from := "GitHub: "
	if w.Local != "" {
		from = "city checkout " + displayPath(f, w.Local) + ": "
	}
	res, err := onboard.PullRequests(ctx, p, w, pr.TrustListFile(p), pr.RegistrationFile(p))
	if err != nil {
		return nil, from + err.Error()
	}
	return res, ""
}

// renderStatus prints the checklist: -o json, --short (one line a step),
// or every check.
func renderStatus(f *Factory, rep *status.Report, short bool) error {
	switch {
	case f.JSON():
		return writeJSON(f.IO.Out, rep)
	case short:
		for _, s := range rep.Steps {
			line := fmt.Sprintf("%s %s", statusMark(f.IO, s.Status), s.Step)
			if s.Message != "" {
				line += ": " + s.Message
			}
			fmt.Fprintln(f.IO.Out, line)
		}
	default:
		printChecks(f.IO, f.IO.Out, rep.Checks)
		fmt.Fprintln(f.IO.Out)
		fmt.Fprintln(f.IO.Out, checkStatusLine(f.IO, rep.Checks))
	}
	return nil
}
