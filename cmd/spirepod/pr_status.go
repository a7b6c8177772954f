package main

import (
	"context"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/spirepod/spirepod/internal/pr"
)

type prStatusOptions struct {
	prCommon
}

func newCmdPRStatus(f *Factory, runF func(*prStatusOptions) error) *cobra.Command {
	opts := &prStatusOptions{prCommon: prCommon{f: f, Timeout: time.Minute}}
	cmd := &cobra.Command{
		Use:   "status",
		Short: "State (open, merged, closed) and checks of the trust-ca and spiffe-id pull requests",
		Long: `Show the team's two pull requests in the city repository: none, open, merged or closed,
with a summary of the check runs on their head commit (none, pending, success, failure).
-o json gives {repo, pulls: [{kind, branch, state, url, number, checks, ...}], requests}.`,
		Args: cobra.NoArgs,
		RunE: runE(opts, opts.validate, runF, prStatusRun),
	}
	addDirFlag(cmd.Flags(), &opts.Dir)
	addTimeoutFlag(cmd.Flags(), &opts.Timeout, time.Minute, "give up after this long")
	return cmd
}

func prStatusRun(ctx context.Context, opts *prStatusOptions) error {
	f := opts.f
	p, err := f.Project(opts.Dir)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()
	o, err := opts.gitHubOptions(ctx, p, true)
	if err != nil {
		return err
	}
	res, err := pr.Status(ctx, p.Team, o)
	if err != nil {
		return translatePRError(err)
	}
	if f.JSON() {
		return writeJSON(f.IO.Out, res)
	}
	tw := tabwriter.NewWriter(f.IO.Out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PR\tSTATE\tCHECKS\tURL")
	for _, ps := range res.Pulls {
		url := ps.URL
		if url == "" {
			url = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", ps.Kind, ps.State, ps.Checks, url)
	}
	return tw.Flush()
}
