package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"

	"github.com/spf13/cobra"

	"github.com/spirepod/spirepod/internal/pki"
	"github.com/spirepod/spirepod/internal/project"
	"github.com/spirepod/spirepod/internal/scaffold"
)

func newCmdBundle(f *Factory) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bundle",
		Short: "Manage the SPIRE server CA in the scaffold's bundle ConfigMap (guide step 3)",
	}
	cmd.AddCommand(newCmdBundleSet(f, nil))
	return cmd
}

type bundleSetOptions struct {
	f      *Factory
	File   string
	Dir    string
	DryRun bool
	Force  bool
}

type bundleSetResult struct {
	File         string   `json:"file"`
	Changed      bool     `json:"changed"`
	Certificates []caInfo `json:"certificates"`
	// DryRun: nothing was written.
	DryRun bool `json:"dryRun"`
}

type caInfo struct {
	Subject string `json:"subject"`
	SHA256  string `json:"sha256"`
	SHA1    string `json:"sha1"`
}

func newCmdBundleSet(f *Factory, runF func(*bundleSetOptions) error) *cobra.Command {
	opts := &bundleSetOptions{f: f}
	cmd := &cobra.Command{
		Use:   "set FILE",
		Short: "Put (or replace) the SPIRE server CA in spire-bundle-configmap-<env>.yaml",
		Long: `Put the SPIRE server's CA certificate(s) into the scaffold's bundle ConfigMap (spire-bundle,
key bundle.crt), replacing what is there. The agent uses it to verify the server on first
contact. FILE must hold one or more PEM CA certificates; text around them is dropped and the
bundle is written as certificates only, with LF line ends.

A CA that is expired or not yet valid is refused (--force to write it anyway); one that ends
within 30 days is written with a warning.`,
		Example: `  spirepod bundle set spire-server-ca.pem
  spirepod bundle set --dir ./spire-envoy-integration ca.pem --dry-run`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.File = args[0]
			if runF != nil {
				return runF(opts)
			}
			return bundleSetRun(cmd.Context(), opts)
		},
	}
	addDirFlag(cmd.Flags(), &opts.Dir)
	cmd.Flags().BoolVar(&opts.DryRun, "dry-run", false, "print the diff; write nothing")
	cmd.Flags().BoolVar(&opts.Force, "force", false, "write a server CA that is expired or not yet valid")
	markCLIOnly(cmd.Flags(), "force")
	return cmd
}

func bundleSetRun(ctx context.Context, o *bundleSetOptions) error {
	file, err := o.f.Abs(o.File)
	if err != nil {
		return usageError("pass the PEM file holding the SPIRE server's CA", "%s: %v", o.File, err)
	}
	var p *project.Project // for the hints
	r, err := scaffold.SetServerCA(ctx, scaffold.SetServerCAOptions{
		File: file, Now: o.f.Now, Force: o.Force, DryRun: o.DryRun,
		Project: func() (*project.Project, error) {
			found, err := o.f.Project(o.Dir)
			p = found
			return found, err
		},
		Event: func(e scaffold.SetServerCAEvent) {
			if e.Warning != nil {
				fmt.Fprintf(o.f.IO.ErrOut, "warning: %s\n", e.Warning.Message)
			}
		},
	})
	if err != nil {
		return o.setError(err, p)
	}
	res := bundleSetResult{File: r.Path, Changed: r.Changed, DryRun: o.DryRun}
	for _, c := range r.Certs {
		res.Certificates = append(res.Certificates, caInfo{Subject: c.Subject.String(), SHA256: pki.SHA256Fingerprint(c), SHA1: pki.SHA1Fingerprint(c)})
	}
	if o.f.JSON() {
		return writeJSON(o.f.IO.Out, res)
	}
	if o.DryRun {
		fmt.Fprint(o.f.IO.Out, r.Diff)
		return nil
	}
	verb := "Set"
	if !res.Changed {
		verb = "Already set:"
	}
	for _, c := range res.Certificates {
		fmt.Fprintf(o.f.IO.ErrOut, "%s server CA %s (sha256 %s)\n", verb, c.Subject, c.SHA256)
	}
	fmt.Fprintln(o.f.IO.Out, r.Path)
	return nil
}

// setError maps the library's typed errors to the file at fault, an exit
// code and a hint; p is the scaffold once it was found.
func (o *bundleSetOptions) setError(err error, p *project.Project) error {
	var se *scaffold.ServerCAError
	var ue *scaffold.UnusableServerCAError
	var be *scaffold.BundleFileError
	switch {
	case errors.As(err, &se):
		var pe *fs.PathError
		if errors.As(se.Err, &pe) {
			return usageError("pass the PEM file holding the SPIRE server's CA", "%s: %v", o.File, pathErr(se.Err))
		}
		return usageError("ask the Agora team for the SPIRE server's CA certificate (PEM)", "%s: %v", o.File, se.Err)
	case errors.As(err, &ue):
		return usageError("ask the SPIRE operators for the current server CA, or pass --force if you mean this one", "%s: %s", o.File, ue.Problem.Message)
	case errors.As(err, &be):
		return usageError("re-render the scaffold with `"+p.ReinitCommand()+"`", "%v", be)
	case p == nil:
		return err // finding the scaffold: the Factory's error, with its hint
	}
	return fileFailure(o.f, err)
}
