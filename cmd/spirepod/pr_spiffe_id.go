package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/spirepod/spirepod/internal/pki"
	"github.com/spirepod/spirepod/internal/pr"
	"github.com/spirepod/spirepod/internal/project"
	"github.com/spirepod/spirepod/internal/registration"
)

type prSpiffeIDOptions struct {
	prCommon

	CA     string
	Format string
}

func newCmdPRSpiffeID(f *Factory, runF func(*prSpiffeIDOptions) error) *cobra.Command {
	opts := &prSpiffeIDOptions{prCommon: prCommon{f: f}}
	cmd := &cobra.Command{
		Use:   "spiffe-id",
		Short: "PR registering node aliases and the Envoy SPIFFE IDs (guide step 5)",
		Long: `Open (or update) the pull request registering, for every pod <statefulSet>-<i>:

  a node alias   spiffe://<td>/spire-agent-x509pop-<pod>, parent spiffe://<td>/spire/server,
                 selectors x509pop:subject:cn:spire-agent-x509pop-<pod> and
                 x509pop:ca:fingerprint:<SHA-1 of the team CA> (so no other team can claim it)
  a workload     the Envoy identity (registration.spiffeID, default
                 spiffe://<td>/ns/<namespace>/sa/<serviceAccount>), parent that alias,
                 selector unix:uid:<registration.envoyUID>

written to the team folder (city.teamPath) as spiffe-ids.yaml (listed once in its
kustomization.yaml resources) or spiffe-ids.json. Formats (--format, default registration.format):
  spiffeid              SpiffeID custom resources (spiffeid.spiffe.io/v1beta1), the Agora default
  cluster-static-entry  spire-controller-manager ClusterStaticEntry (spire.spiffe.io/v1alpha1)
  entry-json            the file ` + "`spire-server entry create -data`" + ` reads

Every ID is checked with go-spiffe and every selector's syntax before anything is sent.`,
		Example: `  spirepod pr spiffe-id --format entry-json --dry-run
  spirepod pr spiffe-id`,
		Args: cobra.NoArgs,
		RunE: runE(opts, opts.validate, runF, prSpiffeIDRun),
	}
	opts.addFlags(cmd)
	cmd.Flags().StringVar(&opts.CA, "ca", "", "team CA certificate whose fingerprint pins the node aliases (default: paths.caCert)")
	cmd.Flags().StringVar(&opts.Format, "format", "", "spiffeid, cluster-static-entry or entry-json (default: registration.format)")
	return cmd
}

func (o *prSpiffeIDOptions) validate() error {
	if err := o.prCommon.validate(); err != nil {
		return err
	}
	switch o.Format {
	case "", project.FormatSpiffeID, project.FormatClusterStaticEntry, project.FormatEntryJSON:
		return nil
	}
	return usageError("use spiffeid, cluster-static-entry or entry-json", "--format %q is not a registration format", o.Format)
}

func prSpiffeIDRun(ctx context.Context, opts *prSpiffeIDOptions) error {
	f := opts.f
	p, err := f.Project(opts.Dir)
	if err != nil {
		return err
	}
	if err := checkDrift(p); err != nil {
		return err // the entries are for spirepod.yaml's pods: they must be the StatefulSet's
	}
	format := opts.Format
	if format == "" {
		format = p.Registration.Format
	}
	tca, err := prTeamCA(f, p, opts.CA)
	if err != nil {
		return err
	}
	ca := tca.Cert
	ch, _, err := pr.SpiffeID(pr.SpiffeIDOptions{Project: p, CA: ca, Format: format})
	if errors.Is(err, pr.ErrLegacyNames) {
		return usageError(migrateHint(p), "%v", err)
	}
	var ve *pr.ValidationError
	if errors.As(err, &ve) {
		if !f.JSON() {
			for _, fd := range ve.Findings {
				fmt.Fprintf(f.IO.ErrOut, "%s %s: %s\n", f.IO.red("×"), fd.Code, fd.Message)
			}
		}
		return usageError(validationHint(ve), "%s: the registration would not work (nothing was sent)", format)
	}
	if err != nil {
		return usageError("fix trustDomain, registration or statefulSet in spirepod.yaml", "%v", err)
	}
	opts.verifyWithCity(ch, p, pki.SHA1Fingerprint(ca))
	ctx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()
	res, err := opts.openChange(ctx, p, ch)
	if err != nil {
		return translatePRError(err)
	}
	return renderResult(f, res)
}

// validationHint is the way out of the first finding.
func validationHint(ve *pr.ValidationError) string {
	for _, fd := range ve.Findings {
		switch fd.Code {
		case registration.CodeRegistrarRewrites:
			return "use --format entry-json (spire-server entry create -data) or --format cluster-static-entry (spire-controller-manager); set registration.format in spirepod.yaml to keep it"
		case registration.CodeNoClassName:
			return "set registration.className in spirepod.yaml to your spire-controller-manager's className (the Helm chart's is <namespace>-<release>), or registration.watchClassless: true if it watches classless objects"
		}
	}
	return "fix spirepod.yaml (trustDomain, registration, statefulSet)"
}
