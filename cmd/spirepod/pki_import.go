package main

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/spirepod/spirepod/internal/checklist"
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

// pkiImportOutput is the -o json shape of `pki import` (a failed check
// prints {results, error, dryRun}).
type pkiImportOutput struct {
	*pkiCAOutput
	Results []checklist.Result `json:"results"`
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
	certPath, keyPath := p.Path(p.Paths.CACert), p.Path(p.Paths.CAKey)
	existed := (fileExists(certPath) && !pki.IsPlaceholder(certPath)) || (fileExists(keyPath) && !pki.IsPlaceholder(keyPath))
	if existed {
		if err := checkNoRotationForCA(o.f, p, "`spirepod pki import`"); err != nil {
			return err
		}
	}
	var replaced *x509.Certificate
	if data, err := os.ReadFile(certPath); err == nil {
		if cs, err := pki.ParseCertificates(data); err == nil {
			replaced = cs[0]
		}
	}
	res, err := pki.Import(ctx, pki.ImportOptions{
		CertPEM: certPEM, KeyPEM: keyPEM,
		CertPath: certPath, KeyPath: keyPath,
		Force: o.Force, DryRun: o.DryRun, Now: o.f.Now, BackupDir: caBackupDir(p),
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
		// The CA given is not one the scaffold can use: bad input, exit 2,
		// as `bundle set` refuses a non-CA certificate.
		r := firstFailure(ce.Results)
		cerr := usageError(r.Hint, "%s fails %s: %s; nothing was written", o.Cert, r.ID, r.Message)
		if o.f.JSON() {
			_ = writeJSON(o.f.IO.Out, struct {
				Results []checklist.Result `json:"results"`
				Error   string             `json:"error"`
				DryRun  bool               `json:"dryRun"`
			}{ce.Results, cerr.Error(), o.DryRun})
			return &silentError{code: exitUsage}
		}
		printChecks(o.f.IO, o.f.IO.ErrOut, ce.Results)
		return cerr
	case err != nil:
		return pkiWriteError(o.f, err)
	}
	out := pkiImportOutput{
		pkiCAOutput: &pkiCAOutput{Certificate: displayPath(o.f, res.CertPath), Key: displayPath(o.f, res.KeyPath), CAInfo: pki.Describe(res.Cert), DryRun: o.DryRun,
			Backup: displayPaths(o.f, res.BackedUp)},
		Results: res.Results,
	}
	if existed && !o.DryRun && (replaced == nil || pki.SHA1Fingerprint(replaced) != pki.SHA1Fingerprint(res.Cert)) {
		warnReplaced(o.f, replaced, out.pkiCAOutput)
	}
	if o.f.JSON() {
		return writeJSON(o.f.IO.Out, out)
	}
	printChecks(o.f.IO, o.f.IO.ErrOut, res.Results)
	fmt.Fprintln(o.f.IO.ErrOut)
	printCAInfo(o.f, wouldWrite(o.DryRun, "Team CA imported", "Team CA to import"), *out.pkiCAOutput)
	return nil
}
