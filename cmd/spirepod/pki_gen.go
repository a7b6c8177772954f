package main

import (
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/spirepod/spirepod/internal/pki"
)

type pkiGenOptions struct {
	f *Factory

	Dir      string
	KeyType  string
	Validity string
	Subject  string
	Force    bool
	DryRun   bool

	// Set by validate.
	keyType  pki.KeyType
	validity time.Duration
	subject  *pkix.Name
}

func newCmdPKIGen(f *Factory, runF func(*pkiGenOptions) error) *cobra.Command {
	opts := &pkiGenOptions{f: f}
	cmd := &cobra.Command{
		Use:   "gen",
		Short: "Make the team CA in the scaffold's certs/secret",
		Long: `Make the team CA that signs agent certificates, in the scaffold's certs/secret
(paths from spirepod.yaml, found from --dir or the working directory upward).

The certificate has basicConstraints CA:TRUE (critical, pathlen 0), keyUsage digitalSignature,
keyCertSign and cRLSign (critical), a subject key identifier and a random serial. The key is
PKCS#8, written with mode 0600 and never over an existing key unless --force.

Prints the subject, validity, SHA-256 and SHA-1 fingerprints, and the selector
x509pop:ca:fingerprint:<sha1> to put on your node aliases.`,
		Example: `  spirepod pki gen
  spirepod pki gen --key-type rsa-3072 --validity 5y --subject "CN=payments agent CA,O=Payments"
  spirepod pki gen --dir ./spire-envoy-integration -o json
  spirepod pki gen --dry-run`,
		Args: cobra.NoArgs,
		RunE: runE(opts, opts.validate, runF, pkiGenRun),
	}
	fl := cmd.Flags()
	addDirFlag(fl, &opts.Dir)
	fl.StringVar(&opts.KeyType, "key-type", string(pki.DefaultKeyType), "ec-p256, ec-p384, rsa-2048, rsa-3072 or rsa-4096")
	fl.StringVar(&opts.Validity, "validity", "10y", "how long the CA is valid: 10y, 730d, 8760h… (at least 1d)")
	fl.StringVar(&opts.Subject, "subject", "", `CA subject, "CN=…,O=…" or "/CN=…/O=…" (default: from the team)`)
	fl.BoolVar(&opts.Force, "force", false, "replace an existing CA (agents of the old CA stop attesting once the server trusts only the new one)")
	markCLIOnly(fl, "force")
	addDryRunFlag(fl, &opts.DryRun)
	return cmd
}

// validate is pure: it checks flag values and names the flag at fault.
func (o *pkiGenOptions) validate() error {
	kt, err := pki.ParseKeyType(o.KeyType)
	if err != nil {
		return usageError("run `spirepod pki gen --help`", "--key-type: %v", err)
	}
	o.keyType = kt
	d, err := parseValidity(o.Validity)
	if err != nil {
		return usageError("use forms like 10y, 90d or 8760h", "--validity: %v", err)
	}
	if d < pki.MinCAValidity {
		return usageError("a CA must be valid for at least 1d (24h)", "--validity %s is shorter than one day", o.Validity)
	}
	o.validity = d
	if o.Subject != "" {
		n, err := pki.ParseSubject(o.Subject)
		if err != nil {
			return usageError(`use "CN=name,O=org" or "/CN=name/O=org"`, "--subject: %v", err)
		}
		o.subject = &n
	}
	return nil
}

// pkiCAOutput is the -o json shape of `pki gen` and `pki import`.
type pkiCAOutput struct {
	Certificate string `json:"certificate"`
	Key         string `json:"key"`
	pki.CAInfo
	// ReplacedSelector is the selector of the CA --force replaced.
	ReplacedSelector string `json:"replacedSelector,omitempty"`
	// Backup are the copies of the CA --force replaced (.spirepod/backup).
	Backup []string `json:"backup,omitempty"`
	// DryRun: nothing was written.
	DryRun bool `json:"dryRun"`
}

// warnReplaced says what replacing a team CA breaks, and where the old
// one is kept.
func warnReplaced(f *Factory, replaced *x509.Certificate, out *pkiCAOutput) {
	msg := "warning: --force replaced the team CA. If the old CA is already on the SPIRE server's trust list, agents issued by the new one will not attest until the new certificate is added (spirepod pr trust-ca) and the server reloads its trust list; to replace a CA in use without an outage, use `spirepod pki rotate`"
	if replaced != nil {
		out.ReplacedSelector = pki.CAFingerprintSelector(replaced)
		msg += "; node aliases with " + out.ReplacedSelector + " stop matching (re-run spirepod pr spiffe-id)"
	}
	if len(out.Backup) > 0 {
		msg += "; the old CA is kept in " + strings.Join(out.Backup, " and ")
	}
	fmt.Fprintln(f.IO.ErrOut, f.IO.yellow(msg+"."))
}

// displayPaths is displayPath of each.
func displayPaths(f *Factory, ps []string) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = displayPath(f, p)
	}
	return out
}

func pkiGenRun(ctx context.Context, o *pkiGenOptions) error {
	p, err := pkiProject(o.f, o.Dir)
	if err != nil {
		return err
	}
	res, err := pki.GenTeamCA(ctx, pki.GenTeamCAOptions{
		Project: p, KeyType: o.keyType, Validity: o.validity, Subject: o.subject,
		Force: o.Force, DryRun: o.DryRun, Rand: o.f.Rand, Now: o.f.Now,
		CheckRotation: func() error { return checkNoRotationForCA(o.f, p, "`spirepod pki gen`") },
	})
	var ee *pki.ExistsError
	if errors.As(err, &ee) {
		return usageError("pass --force to replace the team CA (agents it issued stop attesting once the server trusts only the new one)",
			"%s already exists; nothing was written", displayPath(o.f, ee.Path))
	}
	var refused *pki.RefusedError
	if errors.As(err, &refused) {
		return refused.Err
	}
	if err != nil {
		return pkiWriteError(o.f, err)
	}
	out := pkiCAOutput{Certificate: displayPath(o.f, res.CertPath), Key: displayPath(o.f, res.KeyPath), CAInfo: res.Info, DryRun: o.DryRun}
	if o.DryRun {
		if o.f.JSON() {
			return writeJSON(o.f.IO.Out, out)
		}
		printCAInfo(o.f, wouldWrite(true, "", "Team CA to write"), out)
		fmt.Fprintln(o.f.IO.ErrOut, "the fingerprints are of this dry run's CA: a real run makes a new key")
		return nil
	}
	out.Backup = displayPaths(o.f, res.BackedUp)
	if res.Existed {
		warnReplaced(o.f, res.Replaced, &out)
	}
	if o.f.JSON() {
		return writeJSON(o.f.IO.Out, out)
	}
	printCAInfo(o.f, "Team CA written", out)
	self, _ := selfCommand(o.f)
	if !hasServerCA(p) {
		fmt.Fprintln(o.f.IO.ErrOut, "next: put the SPIRE server's CA in the bundle with `"+self+" bundle set <spire-server-ca.pem>`, then add the team CA to the server's trust list with `"+self+" pr trust-ca`")
	} else {
		fmt.Fprintln(o.f.IO.ErrOut, "next: add the CA to the server's trust list with `"+self+" pr trust-ca`")
	}
	return nil
}

func printCAInfo(f *Factory, title string, o pkiCAOutput) {
	w := f.IO.Out
	fmt.Fprintln(w, f.IO.bold(title))
	fmt.Fprintf(w, "  certificate  %s (0644)\n", o.Certificate)
	fmt.Fprintf(w, "  private key  %s (0600; keep it out of git and out of every PR)\n", o.Key)
	fmt.Fprintf(w, "  subject      %s\n", o.Subject)
	fmt.Fprintf(w, "  key type     %s\n", o.KeyType)
	fmt.Fprintf(w, "  valid        %s to %s\n", o.NotBefore.Format(time.RFC3339), o.NotAfter.Format(time.RFC3339))
	fmt.Fprintf(w, "  sha256       %s\n", o.SHA256)
	fmt.Fprintf(w, "  sha1         %s\n", o.SHA1)
	fmt.Fprintf(w, "  selector     %s\n", o.Selector)
}

func fileExists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}
