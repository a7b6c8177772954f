package main

import (
	"context"
	"errors"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/spirepod/spirepod/internal/onboard"
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

With --local CITY_DIR (or, without a GitHub token, the checkout the last ` + "`pr … --local`" + ` used,
recorded in .spirepod/) the branches are read from that checkout instead: none, branch (made
there, not merged), pushed (on origin too, not merged) or merged (the base branch holds the
change; ` + "`git pull`" + ` the checkout first: nothing is fetched).
-o json gives {repo, pulls: [{kind, branch, state, url, number, checks, ...}], requests}.`,
		Args: cobra.NoArgs,
		RunE: runE(opts, opts.validate, runF, prStatusRun),
	}
	addDirFlag(cmd.Flags(), &opts.Dir)
	addTimeoutFlag(cmd.Flags(), &opts.Timeout, time.Minute, "give up after this long")
	cmd.Flags().StringVar(&opts.Local, "local", "", "read the branches from this local city checkout instead of GitHub's pull requests")
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
	w, note, err := opts.pullsWhere(ctx, p)
	if errors.Is(err, onboard.ErrNoToken) {
		_, err = opts.resolveToken(ctx, gitHubHost(f, p)) // its error says where a token comes from
	}
	if err != nil {
		return err
	}
	if note != "" {
		fmt.Fprintln(f.IO.ErrOut, note)
	}
	local := w.Local
	res, err := onboard.PullRequests(ctx, p, w)
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
			if local != "" && ps.State != "none" {
				url = "branch " + ps.Branch + " in " + displayPath(f, local)
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", ps.Kind, ps.State, ps.Checks, url)
	}
	return tw.Flush()
}
