package main

import (
	"context"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/spirepod/spirepod/internal/project"
)

// The flags several commands share are defined here once, with one help text
// and one validation each.

// runE is a leaf command's RunE: validate (pure, names the flag at fault)
// before anything else, then runF when a test passes one, else run.
func runE[O any](opts O, validate func() error, runF func(O) error, run func(context.Context, O) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, _ []string) error {
		if err := validate(); err != nil {
			return err
		}
		if runF != nil {
			return runF(opts)
		}
		return run(cmd.Context(), opts)
	}
}

// addDirFlag is --dir: where the scaffold is.
func addDirFlag(fl *pflag.FlagSet, dst *string) {
	fl.StringVar(dst, "dir", "", "scaffold directory (default: where spirepod.yaml is found, from the working directory upward)")
}

// addTimeoutFlag is --timeout with a default and what it bounds.
func addTimeoutFlag(fl *pflag.FlagSet, dst *time.Duration, def time.Duration, bounds string) {
	fl.DurationVar(dst, "timeout", def, bounds)
}

// checkTimeout is the one validation of --timeout.
func checkTimeout(d time.Duration) error {
	if d <= 0 {
		return usageError("for example --timeout 5m", "--timeout must be positive, got %s", d)
	}
	return nil
}

// projectNamespace is the one -n policy: the namespace is part of the
// scaffold, so -n may only repeat it. A different -n is a usage error that
// says how to re-render the scaffold for another namespace.
func (k *kubeFlags) projectNamespace(p *project.Project) (string, error) {
	if ns := k.Namespace(""); ns != "" && ns != p.Namespace {
		return "", usageError("the namespace is part of the scaffold: re-render it with `spirepod init --namespace "+ns+" --force` from its parent directory, or drop -n",
			"-n %s differs from the scaffold's namespace %s (%s)", ns, p.Namespace, project.FileName)
	}
	return p.Namespace, nil
}
