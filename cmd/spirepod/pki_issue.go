package main

import (
	"context"
	"fmt"
	"os"
	"slices"
	"time"

	"github.com/spf13/cobra"

	"github.com/spirepod/spirepod/internal/checklist"
	"github.com/spirepod/spirepod/internal/pki"
	"github.com/spirepod/spirepod/internal/project"
)

type pkiIssueOptions struct {
	f *Factory

	Pod    string
	OutDir string
	Dir    string
	CA     string
	CAKey  string
	Force  bool
	DryRun bool
}

func newCmdPKIIssue(f *Factory, runF func(*pkiIssueOptions) error) *cobra.Command {
	opts := &pkiIssueOptions{f: f}
	facts := defaultScaffoldFacts()
	cmd := &cobra.Command{
		Use:   "issue --pod NAME",
		Short: "Issue one agent certificate from the team CA, as the scaffold's cert-manager Certificate would",
		Long: reflow(fmt.Sprintf(`Issue the x509pop agent certificate of one pod from the team CA, exactly as the scaffold's
gen-cert sidecar asks cert-manager to: common name %s (%s with naming: guide, and
outside a scaffold), ECDSA P-256, usages %q, duration %s (cut to the CA's expiry if that is
sooner).

Writes <out-dir>/%s.crt.pem (0644) and .key.pem (0600, SEC1 like cert-manager's default
encoding). For clusters without cert-manager and for tests.`, facts.AgentCN, facts.GuideAgentCN, pki.LeafUsages, pki.LeafDuration, facts.Certificate)),
		Example: `  spirepod pki issue --pod spire-envoy-integration-0
  spirepod pki issue --pod web-0 --out-dir /tmp/agent --ca ca.pem --ca-key ca.key.pem`,
		Args: cobra.NoArgs,
		RunE: runE(opts, opts.validate, runF, pkiIssueRun),
	}
	fl := cmd.Flags()
	fl.StringVar(&opts.Pod, "pod", "", "pod name; the certificate's CN is "+facts.AgentCN+" in the scaffold (required)")
	fl.StringVar(&opts.OutDir, "out-dir", ".", "directory to write the certificate and key into (must exist)")
	addDirFlag(fl, &opts.Dir)
	fl.StringVar(&opts.CA, "ca", "", "team CA certificate (instead of the scaffold's; needs --ca-key)")
	fl.StringVar(&opts.CAKey, "ca-key", "", "team CA private key (with --ca)")
	fl.BoolVar(&opts.Force, "force", false, "replace an existing certificate and key for this pod")
	markCLIOnly(fl, "force")
	addDryRunFlag(fl, &opts.DryRun)
	return cmd
}

// validate is pure: it checks flag values and names the flag at fault.
func (o *pkiIssueOptions) validate() error {
	if o.Pod == "" {
		return usageError("pass the pod's name, e.g. --pod spire-envoy-integration-0", "--pod is required")
	}
	if err := project.CheckPodName(o.Pod); err != nil {
		return usageError("use a shorter pod (StatefulSet) name", "--pod: %v", err)
	}
	if (o.CA == "") != (o.CAKey == "") {
		return usageError("pass both --ca and --ca-key, or neither to use the scaffold's CA", "--ca and --ca-key go together")
	}
	if o.OutDir == "" {
		return usageError("pass a directory", "--out-dir must not be empty")
	}
	return nil
}

// pkiIssueOutput is the -o json shape of `pki issue`.
type pkiIssueOutput struct {
	Certificate string    `json:"certificate"`
	Key         string    `json:"key"`
	CommonName  string    `json:"commonName"`
	Serial      string    `json:"serial"`
	NotBefore   time.Time `json:"notBefore"`
	NotAfter    time.Time `json:"notAfter"`
	SHA1        string    `json:"sha1"`
	// CappedByCA is true when the CA expires before the usual duration.
	CappedByCA bool `json:"cappedByCA"`
	// DryRun: nothing was written.
	DryRun bool `json:"dryRun"`
}

func pkiIssueRun(ctx context.Context, o *pkiIssueOptions) error {
	outDir, err := o.f.Abs(o.OutDir)
	if err != nil {
		return err
	}
	if st, err := os.Stat(outDir); err != nil || !st.IsDir() {
		if err == nil {
			return usageError("pass an existing directory", "--out-dir %s is not a directory", o.OutDir)
		}
		return usageError("create it first, or pass an existing directory", "--out-dir %s: %v", o.OutDir, pathErr(err))
	}
	// The CN follows the scaffold's naming; without a scaffold, the guide's.
	p, perr := pkiProject(o.f, o.Dir)
	cn, name := project.AgentCNPrefix+o.Pod, project.AgentCNPrefix+o.Pod
	if perr == nil {
		cn, name = p.AgentCN(o.Pod), p.CertificateName(o.Pod)
		if !slices.Contains(p.PodNames(), o.Pod) {
			fmt.Fprintf(o.f.IO.ErrOut, "warning: %s is not a pod of this scaffold (%s…); no node alias selects its common name %s\n", o.Pod, p.PodName(0), cn)
		}
	}
	if err := project.CheckAgentCN(cn); err != nil {
		return usageError("use a shorter pod (StatefulSet) name", "--pod %s: %v", o.Pod, err)
	}
	caPath, keyPath, flag := o.CA, o.CAKey, "--ca"
	if caPath == "" {
		if perr != nil {
			return perr
		}
		caPath, keyPath = scaffoldCAPaths(p, true)
		flag = ""
	}
	tca, err := loadTeamCA(o.f, caPath, keyPath, flag)
	if err != nil {
		return err
	}
	res, err := pki.Issue(ctx, pki.IssueOptions{CA: tca.Cert, CAKey: tca.Key, CN: cn, Name: name, OutDir: outDir, Force: o.Force, DryRun: o.DryRun, Rand: o.f.Rand, Now: o.f.Now})
	if err != nil {
		return pkiWriteError(o.f, err)
	}
	out := pkiIssueOutput{
		Certificate: displayPath(o.f, res.CertPath), Key: displayPath(o.f, res.KeyPath), CommonName: res.CN,
		Serial: fmt.Sprintf("%x", res.Cert.SerialNumber), NotBefore: res.Cert.NotBefore.UTC(), NotAfter: res.Cert.NotAfter.UTC(),
		SHA1: pki.SHA1Fingerprint(res.Cert), CappedByCA: res.Capped, DryRun: o.DryRun,
	}
	if res.Capped {
		fmt.Fprintf(o.f.IO.ErrOut, "warning: the team CA expires %s, before the usual %s; the certificate ends with it\n",
			tca.Cert.NotAfter.UTC().Format(time.RFC3339), pki.LeafDuration)
	}
	if o.f.JSON() {
		return writeJSON(o.f.IO.Out, out)
	}
	w := o.f.IO.Out
	fmt.Fprintln(w, o.f.IO.bold(wouldWrite(o.DryRun, "Agent certificate issued", "Agent certificate to write")))
	fmt.Fprintf(w, "  certificate  %s\n", out.Certificate)
	fmt.Fprintf(w, "  private key  %s (0600)\n", out.Key)
	fmt.Fprintf(w, "  common name  %s\n", out.CommonName)
	fmt.Fprintf(w, "  valid        %s to %s\n", out.NotBefore.Format(time.RFC3339), out.NotAfter.Format(time.RFC3339))
	return nil
}

func firstFailure(rs []checklist.Result) checklist.Result {
	for _, r := range rs {
		if r.Status == checklist.Fail {
			return r
		}
	}
	return checklist.Result{}
}
