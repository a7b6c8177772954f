package main

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/spirepod/spirepod/internal/apply"
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

// addDryRunFlag is --dry-run for commands that write local files: every
// check runs, nothing is written.
func addDryRunFlag(fl *pflag.FlagSet, dst *bool) {
	fl.BoolVar(dst, "dry-run", false, "run every check and print what would be written; write nothing")
}

// wouldWrite is the title of a dry run's report.
func wouldWrite(dryRun bool, done, planned string) string {
	if dryRun {
		return planned + " (dry run: nothing written)"
	}
	return done
}

// dryRunArgs lets `--dry-run server` (a space, as kubectl allows) mean
// --dry-run=server for a command that takes no arguments.
func dryRunArgs(cmd *cobra.Command, dst *string) cobra.PositionalArgs {
	return func(c *cobra.Command, args []string) error {
		if len(args) == 1 && c.Flags().Changed("dry-run") && *dst == c.Flags().Lookup("dry-run").NoOptDefVal {
			switch args[0] {
			case "none", "server", "client":
				*dst = args[0]
				return nil
			}
		}
		return cobra.NoArgs(c, args)
	}
}

// checkDrift refuses to act when spirepod.yaml and the scaffold's manifests
// disagree (replicas or namespace edited on one side only): exit 2 with the
// fields and the command that re-renders the manifests from spirepod.yaml.
//
// A project file without manifests next to it (a checkout holding only
// spirepod.yaml) has nothing to disagree with.
func checkDrift(p *project.Project) error {
	if _, err := os.Stat(p.Path("kustomization.yaml")); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	objs, err := apply.BuildDir(p.Dir)
	layers := []apply.Layer{{Name: "app", Dir: p.Dir, Objects: objs}}
	if err != nil {
		return failure(err, "fix the kustomization, or re-render the scaffold with `"+p.ReinitCommand()+"`")
	}
	if err := apply.CheckProject(layers, p); err != nil {
		return usageError("re-render the manifests from spirepod.yaml: `"+p.ReinitCommand()+"` (or undo the edit); nothing was done", "%v", err)
	}
	return nil
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
		moved := *p
		moved.Namespace = ns
		return "", usageError("the namespace is part of the scaffold: drop -n, or re-render the scaffold for "+ns+" with `"+moved.ReinitCommand()+"`",
			"-n %s differs from the scaffold's namespace %s (%s)", ns, p.Namespace, project.FileName)
	}
	return p.Namespace, nil
}
