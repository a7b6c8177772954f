package main

import (
	"crypto"
	"crypto/x509"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/spirepod/spirepod/internal/checklist"
	"github.com/spirepod/spirepod/internal/pki"
	"github.com/spirepod/spirepod/internal/project"
)

type pkiInspectOptions struct {
	f *Factory

	Files []string
	Key   string
	CA    string
	Dir   string
}

func newCmdPKIInspect(f *Factory, runF func(*pkiInspectOptions) error) *cobra.Command {
	opts := &pkiInspectOptions{f: f}
	cmd := &cobra.Command{
		Use:   "inspect [FILE...]",
		Short: "Check a team CA or agent certificate the way SPIRE x509pop and cert-manager will",
		Long: reflow(`Check certificates against what the SPIRE server's x509pop plugin and cert-manager accept,
and say in SPIRE's own words what it would reject.

With no FILE, inspects the scaffold's team CA and its key. A FILE whose certificate is not a
CA and whose common name is an agent's (` + defaultScaffoldFacts().AgentCN + `, or ` + defaultScaffoldFacts().GuideAgentCN + `
with naming: guide) is checked as an agent certificate (certificates after it in the file are
its intermediates); anything else as a team CA. Every certificate's SHA-1 fingerprint is
printed: the value of the x509pop:ca:fingerprint selector the node aliases pin.

Rules (IDs are stable, see -o json):
  team CA  ca-basic-constraints, ca-keycertsign, ca-digitalsignature (warning), key-algorithm,
           rsa-size, key-matches, validity, lifetime-90d (warning)
  agent    leaf-digitalsignature, key-algorithm, rsa-size, cn-length, cn-form, chains-to-ca,
           validity, key-matches (with --key)

Exits 1 when any rule fails.`),
		Example: `  spirepod pki inspect
  spirepod pki inspect ca.pem --key ca.key.pem
  spirepod pki inspect web-0.payments.crt.pem --ca certs/secret/agent-x509pop.crt.pem`,
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.Files = args
			if runF != nil {
				return runF(opts)
			}
			return pkiInspectRun(opts)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&opts.Key, "key", "", "private key to match against the first certificate")
	fl.StringVar(&opts.CA, "ca", "", "team CA that agent certificates must chain to (default: a CA among FILEs, else the scaffold's)")
	addDirFlag(fl, &opts.Dir)
	return cmd
}

// pkiInspectOutput is the -o json shape of `pki inspect`.
type pkiInspectOutput struct {
	OK      bool               `json:"ok"`
	Results []checklist.Result `json:"results"`
	// Certificates are the fingerprints of every certificate inspected.
	Certificates []inspectedCert `json:"certificates"`
}

// inspectedCert names one inspected certificate by its fingerprints: the
// SHA-1 is what SPIRE's x509pop:ca:fingerprint selector matches (40
// lowercase hex digits, no colons), the value node aliases pin.
type inspectedCert struct {
	File    string `json:"file"`
	Index   int    `json:"index,omitempty"`
	Subject string `json:"subject"`
	CA      bool   `json:"ca"`
	SHA1    string `json:"sha1"`
	SHA256  string `json:"sha256"`
	// Selector is x509pop:ca:fingerprint:<sha1>, for a CA.
	Selector string `json:"selector,omitempty"`
}

func describeCert(file string, index int, c *x509.Certificate) inspectedCert {
	ic := inspectedCert{File: file, Index: index, Subject: c.Subject.String(), CA: c.BasicConstraintsValid && c.IsCA,
		SHA1: pki.SHA1Fingerprint(c), SHA256: pki.SHA256Fingerprint(c)}
	if ic.CA {
		ic.Selector = pki.CAFingerprintSelector(c)
	}
	return ic
}

// printFingerprints prints each certificate's SHA-1 (and SHA-256) under a
// heading, as the checklist prints its groups.
func printFingerprints(s *IOStreams, w io.Writer, cs []inspectedCert) {
	if len(cs) == 0 {
		return
	}
	fmt.Fprintln(w, s.bold("fingerprints"))
	fmt.Fprintln(w, s.bold(dashes(len("fingerprints"))))
	for _, c := range cs {
		name := c.File
		if c.Index > 0 {
			name += fmt.Sprintf(" (certificate %d)", c.Index)
		}
		fmt.Fprintf(w, "%s: %s\n", name, c.Subject)
		fmt.Fprintf(w, "  sha1      %s\n", c.SHA1)
		fmt.Fprintf(w, "  sha256    %s\n", c.SHA256)
		if c.Selector != "" {
			fmt.Fprintf(w, "  selector  %s\n", c.Selector)
		}
	}
	fmt.Fprintln(w)
}

type inspectTarget struct {
	path  string
	certs []*x509.Certificate
	leaf  bool
}

// isAgentLeaf: a certificate that is not a CA and whose common name is an
// agent name (either naming form) is judged as an agent leaf; anything else
// as a team CA.
func isAgentLeaf(c *x509.Certificate) bool {
	if c.BasicConstraintsValid && c.IsCA {
		return false
	}
	_, err := project.ParseAgentCN(c.Subject.CommonName)
	return err == nil
}

// agentCNs are the scaffold's agent common names, when there is a scaffold.
func (o *pkiInspectOptions) agentCNs() []string {
	p, err := pkiProject(o.f, o.Dir)
	if err != nil {
		return nil
	}
	return p.AgentCNs()
}

func pkiInspectRun(o *pkiInspectOptions) error {
	in, err := o.inputs()
	if err != nil {
		return err
	}
	rs := append(in.results, inspectTargets(in.targets, in.key, in.ca, o.f.Now(), o.agentCNs())...)
	failed := checklist.Failed(rs)
	if o.f.JSON() {
		if err := writeJSON(o.f.IO.Out, pkiInspectOutput{OK: !failed, Results: rs, Certificates: in.certs}); err != nil {
			return err
		}
	} else {
		printChecks(o.f.IO, o.f.IO.Out, rs)
		fmt.Fprintln(o.f.IO.Out)
		printFingerprints(o.f.IO, o.f.IO.Out, in.certs)
		fmt.Fprintln(o.f.IO.Out, checkStatusLine(o.f.IO, rs))
	}
	if failed {
		return &silentError{code: exitFailure}
	}
	return nil
}

// inspectInputs are what pki inspect judges: the files given (or the
// scaffold's team CA, already judged in results), --key, the CA leaves are
// chained to, and every certificate's fingerprints.
type inspectInputs struct {
	targets []inspectTarget
	key     crypto.Signer
	ca      *x509.Certificate
	results []checklist.Result
	certs   []inspectedCert
}

// inputs reads the files. Without FILES the scaffold's team CA and key
// are judged by the one team-CA loader. The CA leaves are chained to is
// --ca, else the first CA among the files, else the scaffold's.
func (o *pkiInspectOptions) inputs() (*inspectInputs, error) {
	in := &inspectInputs{}
	if len(o.Files) == 0 {
		p, err := pkiProject(o.f, o.Dir)
		if err != nil {
			return nil, err
		}
		cert, key := scaffoldCAPaths(p, o.Key == "")
		if o.Key != "" {
			key = o.Key
		}
		t := pki.LoadTeamCA(pki.TeamCAOptions{CertPath: cert, KeyPath: key, Now: o.f.Now(), Group: "team CA " + displayPath(o.f, cert)})
		if err := teamCAInputError(o.f, t, ""); err != nil {
			return nil, err
		}
		in.results, in.ca = t.Results, t.Cert
		if t.Cert != nil {
			in.certs = append(in.certs, describeCert(displayPath(o.f, cert), 0, t.Cert))
		}
	}
	for _, path := range o.Files {
		cs, err := pkiReadCerts(o.f, "certificate", path)
		if err != nil {
			return nil, err
		}
		in.targets = append(in.targets, inspectTarget{path: path, certs: cs, leaf: isAgentLeaf(cs[0])})
	}
	for _, t := range in.targets {
		for j, c := range t.certs {
			idx := 0
			if len(t.certs) > 1 {
				idx = j + 1
			}
			in.certs = append(in.certs, describeCert(t.path, idx, c))
		}
	}
	if o.Key != "" {
		key, err := pkiReadKey(o.f, "--key", o.Key)
		if err != nil {
			return nil, err
		}
		in.key = key
	}
	switch {
	case len(o.Files) == 0:
	case o.CA != "":
		cs, err := pkiReadCerts(o.f, "--ca", o.CA)
		if err != nil {
			return nil, err
		}
		in.ca = cs[0]
	default:
		for _, t := range in.targets {
			if !t.leaf {
				in.ca = t.certs[0]
				break
			}
		}
		if in.ca == nil {
			in.ca = scaffoldCA(o)
		}
	}
	return in, nil
}

// inspectTargets judges each file: an agent leaf against ca (with its
// intermediates), every certificate of another file as a team CA; key
// (--key) goes with the first file's first certificate only.
func inspectTargets(targets []inspectTarget, key crypto.Signer, ca *x509.Certificate, now time.Time, cns []string) []checklist.Result {
	var rs []checklist.Result
	for i, t := range targets {
		k := key
		if i > 0 {
			k = nil
		}
		if t.leaf {
			rs = append(rs, pki.InspectLeaf(t.certs[0], pki.LeafOptions{Group: "agent certificate " + t.path, Intermediates: t.certs[1:], CA: ca, Key: k, Now: now, CNs: cns})...)
			continue
		}
		for j, c := range t.certs {
			group := "team CA " + t.path
			if len(t.certs) > 1 {
				group += fmt.Sprintf(" (certificate %d)", j+1)
			}
			if j > 0 {
				k = nil
			}
			rs = append(rs, pki.InspectCA(group, c, k, now)...)
		}
	}
	return rs
}

// scaffoldCA is the scaffold's team CA when there is one, for chaining agent
// certificates; nil otherwise (the chains-to-ca rule is then skipped).
func scaffoldCA(o *pkiInspectOptions) *x509.Certificate {
	p, err := pkiProject(o.f, o.Dir)
	if err != nil {
		return nil
	}
	cert, _ := scaffoldCAPaths(p, false)
	return pki.LoadTeamCA(pki.TeamCAOptions{CertPath: cert, Now: o.f.Now()}).Cert
}
