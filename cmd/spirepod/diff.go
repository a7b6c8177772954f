package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/spirepod/spirepod/internal/apply"
	"github.com/spirepod/spirepod/internal/project"
)

type diffOptions struct {
	f       *Factory
	kube    *kubeFlags
	Dir     string
	Timeout time.Duration
}

func newCmdDiff(f *Factory, runF func(*diffOptions) error) *cobra.Command {
	opts := &diffOptions{f: f, kube: newKubeFlags()}
	cmd := &cobra.Command{
		Use:   "diff",
		Short: "Show what `spirepod apply` would change, as a unified diff of live vs desired",
		Long: `Ask the API server what server-side apply would produce (dry run) for every object of
certs/ and the scaffold, and print a unified diff against the live objects. Secret values are
shown only as their length and SHA-256 prefix.

Exit status, like kubectl diff: 0 when nothing would change, 1 when something would, and more
than 1 on an error: 2 for bad usage or input, 3 when the comparison failed (the cluster did not
answer or refused), 124 on --timeout, 130 when interrupted.`,
		Example: `  spirepod diff --context dev-cluster
  spirepod diff -o json`,
		Args: cobra.NoArgs,
		RunE: runE(opts, func() error { return checkTimeout(opts.Timeout) }, runF, func(ctx context.Context, o *diffOptions) error {
			return diffExit(diffRun(ctx, o))
		}),
	}
	opts.kube.AddFlags(cmd.Flags())
	addDirFlag(cmd.Flags(), &opts.Dir)
	addTimeoutFlag(cmd.Flags(), &opts.Timeout, time.Minute, "how long to retry an unreachable API server")
	return cmd
}

// exitDiffFailed is diff's exit code for a comparison that failed: kubectl
// diff's rule keeps 1 for "would change".
const exitDiffFailed = 3

// diffExit moves diff's failures (exit 1 elsewhere) to exitDiffFailed, so
// a script can tell "changes" from "could not compare".
func diffExit(err error) error {
	if err == nil {
		return nil
	}
	var se *silentError
	if errors.As(err, &se) {
		return err // the changes found, already printed
	}
	var ce *cliError
	if errors.As(err, &ce) {
		if ce.code == exitFailure {
			ce.code = exitDiffFailed
		}
		return ce
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return &cliError{code: exitDiffFailed, err: err}
}

func diffRun(ctx context.Context, o *diffOptions) error {
	p, err := o.f.Project(o.Dir)
	if err != nil {
		return err
	}
	if _, err := o.kube.projectNamespace(p); err != nil {
		return err
	}
	layers, err := apply.Build(p.Dir)
	if err != nil {
		return failure(err, "run `spirepod pki gen` if the CA files are missing")
	}
	if err := apply.CheckProject(layers, p); err != nil {
		return usageError("re-render the manifests from spirepod.yaml: `"+p.ReinitCommand()+"` (or undo the edit)", "%v", err)
	}
	t, err := o.f.Kube(o.kube)
	if err != nil {
		return err
	}
	fmt.Fprintf(o.f.IO.ErrOut, "Comparing with %s\n", t.describe())
	if err := t.ping(ctx); err != nil {
		return err
	}
	dctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	diffs, err := apply.Diff(dctx, apply.Options{Layers: layers, Dynamic: t.Dynamic, Mapper: t.Mapper, FieldManager: p.FieldManager(), RetryFor: o.Timeout})
	if err != nil {
		return failure(err, kubeHint)
	}
	changed := len(apply.Changed(diffs))
	if o.f.JSON() {
		if err := writeJSON(o.f.IO.Out, diffs); err != nil {
			return err
		}
	} else {
		for _, d := range diffs {
			if d.Error != "" {
				fmt.Fprintf(o.f.IO.ErrOut, "%s: %s\n", d.Ref(), d.Error)
			}
			fmt.Fprint(o.f.IO.Out, d.Diff)
		}
		fmt.Fprintf(o.f.IO.ErrOut, "%d of %s would change\n", changed, project.Count(len(diffs), "object"))
	}
	if changed > 0 {
		return &silentError{code: exitFailure}
	}
	return nil
}
