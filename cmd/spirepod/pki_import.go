package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/spirepod/spirepod/internal/check"
	"github.com/spirepod/spirepod/internal/pki"
)

type pkiImportOptions struct {
	f *Factory

	Cert   string
	Key    string
	Dir    string
	Force  bool
	DryRun bool
}

func newCmdPKIImport(f *Factory, runF func(*pkiImportOptions) error) *cobra.Command {
	opts := &pkiImportOptions{f: f}
	cmd := &cobra.Command{
		Use:   "import CERT KEY",
		Short: "Check an existing CA and put it in the scaffold as the team CA",
		Long: `For teams that already have a CA: check it as ` + "`pki inspect`" + ` does, check that KEY is its
private key, and write both under the scaffold's names (paths from spirepod.yaml): the
certificate with mode 0644, the key re-encoded as PKCS#8 with mode 0600. Nothing is written
when a check fails or a file exists (unless --force).`,
		Example: `  spirepod pki import ~/ca/team-ca.pem ~/ca/team-ca.key
  spirepod pki import ~/ca/team-ca.pem ~/ca/team-ca.key --dry-run`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.Cert, opts.Key = args[0], args[1]
			if runF != nil {
				return runF(opts)
			}
			return pkiImportRun(cmd.Context(), opts)
		},
	}
	fl := cmd.Flags()
	addDirFlag(fl, &opts.Dir)
	fl.BoolVar(&opts.Force, "force", false, "replace an existing team CA")
	markCLIOnly(fl, "force")
	addDryRunFlag(fl, &opts.DryRun)
	return cmd
}

// pkiImportOutput is the -o json shape of `pki import`.
type pkiImportOutput struct {
	pkiCAOutput
	Results []check.Result `json:"results"`
}

func pkiImportRun(ctx context.Context, o *pkiImportOptions) error {
	certPEM, err := pkiReadFile(o.f, "certificate", o.Cert)
	if err != nil {
		return err
	}
	keyPEM, err := pkiReadFile(o.f, "key", o.Key)
	if err != nil {
		return err
	}
	p, err := pkiProject(o.f, o.Dir)
	if err != nil {
		return err
	}
	res, err := pki.Import(ctx, pki.ImportOptions{
		CertPEM: certPEM, KeyPEM: keyPEM,
		CertPath: p.Path(p.Paths.CACert), KeyPath: p.Path(p.Paths.CAKey),
		Force: o.Force, DryRun: o.DryRun, Now: o.f.Now,
	})
	var ie *pki.InputError
	var ce *pki.CheckError
	switch {
	case errors.As(err, &ie):
		file := o.Cert
		hint := "pass the CA certificate as CERT (PEM, exactly one certificate)"
		if ie.Which == "key" {
			file, hint = o.Key, pkiKeyHint(ie.Err)
		}
		return usageError(hint, "%s %s: %v; nothing was written", ie.Which, file, ie.Err)
	case errors.As(err, &ce):
		printChecks(o.f.IO, o.f.IO.ErrOut, ce.Results)
		r := firstFailure(ce.Results)
		return failure(fmt.Errorf("%s fails %s: %s; nothing was written", o.Cert, r.ID, r.Message), r.Hint)
	case err != nil:
		return pkiWriteError(o.f, err)
	}
	out := pkiImportOutput{
		pkiCAOutput: pkiCAOutput{Certificate: displayPath(o.f, res.CertPath), Key: displayPath(o.f, res.KeyPath), CAInfo: pki.Describe(res.Cert), DryRun: o.DryRun},
		Results:     res.Results,
	}
	if o.f.JSON() {
		return writeJSON(o.f.IO.Out, out)
	}
	printChecks(o.f.IO, o.f.IO.ErrOut, res.Results)
	fmt.Fprintln(o.f.IO.ErrOut)
	printCAInfo(o.f, wouldWrite(o.DryRun, "Team CA imported", "Team CA to import"), out.pkiCAOutput)
	return nil
}
