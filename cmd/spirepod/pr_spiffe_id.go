package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/spirepod/spirepod/internal/onboard"
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
	facts := defaultScaffoldFacts()
	guide := project.HelpExample()
	guide.Naming = project.NamingGuide
	cmd := &cobra.Command{
		Use:   "spiffe-id",
		Short: "PR registering node aliases and the Envoy SPIFFE IDs (guide step 5)",
		Long: `Open (or update) the pull request registering, for every pod <statefulSet>-<i>:

  a node alias   ` + facts.Alias + ` (naming: namespaced;
                 the guide's ` + guide.NodeAliasID("<pod>") + ` with naming: guide),
                 parent spiffe://<td>/spire/server, selectors x509pop:subject:cn:` + facts.AgentCN + `
                 and x509pop:ca:fingerprint:<SHA-1 of the team CA> (so no other team can claim it)
  a workload     the Envoy identity (registration.spiffeID, default
                 spiffe://<td>/ns/<namespace>/sa/<serviceAccount>), parent that alias,
                 selectors unix:uid:<registration.envoyUID> and unix:gid:<registration.envoyGID>

written to the team folder (city.teamPath) as spiffe-ids.json or spiffe-ids.yaml (listed once in
its kustomization.yaml resources); switching formats removes the other file.

Formats (--format, default registration.format; every built-in profile uses entry-json), each
proven through its real consumer on the test bed:
  entry-json            read by ` + "`spire-server entry create -data`" + ` (SPIRE 1.13.3; entry_id needs
                        SPIRE >= 1.8). Each entry carries entry_id spirepod.<namespace>.<name>, so
                        loading the file again creates no duplicate (create: AlreadyExists;
                        ` + "`entry update -data`" + ` updates in place). Proven: TestFormatEntryJSON, TestE2E,
                        TestRealPodEndToEnd.
  cluster-static-entry  ClusterStaticEntry (spire.spiffe.io/v1alpha1), turned into entries by
                        spire-controller-manager (v0.6.2 proven). Needs registration.className to
                        be the controller's className (the Helm chart's is <namespace>-<release>,
                        watchClassless false), or registration.watchClassless: true when the
                        controller watches classless objects; refused otherwise (SPD209: the
                        controller ignores such objects silently). Proven:
                        TestFormatClusterStaticEntry (status.set, never masked).
  spiffeid              SpiffeID (spiffeid.spiffe.io/v1beta1) of the k8s-workload-registrar, CRD
                        mode (SPIRE <= 1.5; removed in 1.6). Refused (SPD211): the registrar
                        turns every selector into k8s:<value> and adds k8s:ns:<namespace>, so an
                        x509pop node alias and a unix workload entry can never match. Measured
                        with the real registrar (v1.5.6) in TestFormatSpiffeID.

Before anything is sent: every ID is parsed with go-spiffe and every selector checked (the
offline validator, SPD2xx), spirepod.yaml is compared with the manifests (drift), and the city
rules run on the base branch plus this change (SPD1xx: an alias, CN or entry ID another team
already registered is refused, naming its file and line; over the API only spiffe-ids.* files
are read, ` + "`spirepod city check`" + ` in the city's CI reads every file).`,
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
	res, err := onboard.SpiffeID(ctx, onboard.SpiffeIDOptions{Project: p, CA: tca.Cert, Format: opts.Format, Where: w,
		City: cityConfig(f, p, opts.Local == "")})
	var ve *pr.ValidationError
	switch {
	case errors.Is(err, pr.ErrLegacyNames):
		return usageError(migrateHint(p), "%v", err)
	case errors.As(err, &ve):
		if !f.JSON() {
			for _, fd := range ve.Findings {
				fmt.Fprintf(f.IO.ErrOut, "%s %s: %s\n", f.IO.red("×"), fd.Code, fd.Message)
			}
		}
		format := opts.Format
		if format == "" {
			format = p.Registration.Format
		}
		return usageError(validationHint(ve), "%s: the registration would not work (nothing was sent)", format)
	case err != nil:
		return translatePRError(err)
	}
	return renderResult(f, res, opts.DryRun)
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
