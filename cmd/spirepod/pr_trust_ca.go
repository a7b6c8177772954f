package main

import (
	"context"

	"github.com/spf13/cobra"

	"github.com/spirepod/spirepod/internal/onboard"
)

type prTrustCAOptions struct {
	prCommon

	// CA is the team CA certificate (default: paths.caCert of the project).
	CA string
}

func newCmdPRTrustCA(f *Factory, runF func(*prTrustCAOptions) error) *cobra.Command {
	opts := &prTrustCAOptions{prCommon: prCommon{f: f}}
	cmd := &cobra.Command{
		Use:   "trust-ca",
		Short: "PR adding the team CA to the SPIRE server's x509pop trust list (guide step 4)",
		Long: `Open (or update) the pull request "Add <team> CA certificate to trust list" in the city repository.

Only the public certificate is sent. Where it goes comes from city.trustList in spirepod.yaml:
  mode bundle     appended to the PEM bundle file at path (deduplicated by SHA-1 fingerprint;
                  the built-in profiles use ns/spire/server/<env>/x509pop/agent-ca-bundle.pem)
  mode directory  <path>/<team>.crt.pem, listed once in <path>/kustomization.yaml's
                  configMapGenerator (or secretGenerator) files

The CA must pass ` + "`spirepod pki inspect`" + `; anything holding a private key is refused.`,
		Example: `  spirepod pr trust-ca --dry-run
  spirepod pr trust-ca
  spirepod pr trust-ca --local ~/src/city --push`,
		Args: cobra.NoArgs,
		RunE: runE(opts, opts.validate, runF, prTrustCARun),
	}
	opts.addFlags(cmd)
	cmd.Flags().StringVar(&opts.CA, "ca", "", "team CA certificate (default: paths.caCert in spirepod.yaml)")
	return cmd
}

func prTrustCARun(ctx context.Context, opts *prTrustCAOptions) error {
	f := opts.f
	p, err := f.Project(opts.Dir)
	if err != nil {
		return err
	}
	tca, err := prTeamCA(f, p, opts.CA)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()
	w, err := opts.where(ctx, p)
	if err != nil {
		return err
	}
	res, err := onboard.TrustCA(ctx, onboard.TrustCAOptions{Project: p, CA: tca.Cert, Inspect: tca.Results, Where: w,
		City: cityConfig(f, p, opts.Local == "")})
	if err != nil {
		return translatePRError(err)
	}
	return renderResult(f, res, opts.DryRun)
}
