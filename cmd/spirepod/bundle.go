package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/spf13/cobra"

	"github.com/spirepod/spirepod/internal/atomicfile"
	"github.com/spirepod/spirepod/internal/pki"
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
	pemData, err := o.f.ReadFile(o.File)
	if err != nil {
		return usageError("pass the PEM file holding the SPIRE server's CA", "%s: %v", o.File, pathErr(err))
	}
	certs, err := scaffold.ParseServerCA(pemData)
	if err != nil {
		return usageError("ask the Agora team for the SPIRE server's CA certificate (PEM)", "%s: %v", o.File, err)
	}
	if pr := scaffold.JudgeBundle(certs, o.f.Now()); pr != nil {
		if pr.Fatal && !o.Force {
			return usageError("ask the SPIRE operators for the current server CA, or pass --force if you mean this one", "%s: %s", o.File, pr.Message)
		}
		fmt.Fprintf(o.f.IO.ErrOut, "warning: %s\n", pr.Message)
	}
	pemData = scaffold.NormalizeBundle(certs)
	p, err := o.f.Project(o.Dir)
	if err != nil {
		return err
	}
	rel := scaffold.BundleFile(p.Environment)
	path := p.Path(rel)
	old, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return usageError("re-render the scaffold with `"+p.ReinitCommand()+"`", "%s is missing", path)
	} else if err != nil {
		return fileFailure(o.f, err)
	}
	updated, err := scaffold.UpdateBundleFile(old, pemData)
	if err != nil {
		return usageError("re-render the scaffold with `"+p.ReinitCommand()+"`", "%s: %v", path, err)
	}
	res := bundleSetResult{File: path, Changed: string(old) != string(updated), DryRun: o.DryRun}
	for _, c := range certs {
		res.Certificates = append(res.Certificates, caInfo{Subject: c.Subject.String(), SHA256: pki.SHA256Fingerprint(c), SHA1: pki.SHA1Fingerprint(c)})
	}
	if o.DryRun {
		plan, err := scaffold.PlanWrite(p.Dir, map[string][]byte{rel: updated})
		if err != nil {
			return failure(err, "")
		}
		if o.f.JSON() {
			return writeJSON(o.f.IO.Out, res)
		}
		fmt.Fprint(o.f.IO.Out, plan.Diff())
		return nil
	}
	if res.Changed {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := atomicfile.WriteFile(path, updated, atomicfile.Options{Perm: 0o644}); err != nil {
			return fileFailure(o.f, err)
		}
	}
	if o.f.JSON() {
		return writeJSON(o.f.IO.Out, res)
	}
	verb := "Set"
	if !res.Changed {
		verb = "Already set:"
	}
	for _, c := range res.Certificates {
		fmt.Fprintf(o.f.IO.ErrOut, "%s server CA %s (sha256 %s)\n", verb, c.Subject, c.SHA256)
	}
	fmt.Fprintln(o.f.IO.Out, path)
	return nil
}
