package pr

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"path"
	"strings"
	"time"

	"github.com/spirepod/spirepod/internal/check"
	"github.com/spirepod/spirepod/internal/pki"
	"github.com/spirepod/spirepod/internal/project"
)

// TrustCAOptions are the inputs of the trust-ca change.
type TrustCAOptions struct {
	Project *project.Project
	// CA is the team CA, loaded and judged by pki.LoadTeamCA.
	CA *x509.Certificate
	// Inspect are the CA's pki inspect results, for the PR body; nil says
	// it was not inspected.
	Inspect []check.Result
	// OwnerComment, when set, is written on its own line directly above the
	// CA's PEM block in a bundle-mode trust list (city.OwnerComment), so the
	// platform knows which team put it there.
	OwnerComment string
}

// CAInfo describes the team CA for the PR body and the CLI: pki's facts
// and the pki inspect verdict.
type CAInfo struct {
	pki.CAInfo
	Verdict string `json:"verdict"`
}

// TrustCA builds the change adding the team CA to the x509pop trust list.
func TrustCA(o TrustCAOptions) (*Change, *CAInfo, error) {
	p := o.Project
	ca := o.CA
	if ca == nil {
		return nil, nil, errors.New("trust-ca: no team CA")
	}
	info := &CAInfo{CAInfo: pki.Describe(ca), Verdict: "not inspected"}
	if o.Inspect != nil {
		if check.Failed(o.Inspect) {
			return nil, nil, fmt.Errorf("trust-ca: the team CA fails pki inspect")
		}
		info.Verdict = verdict(o.Inspect)
	}
	certPEM := pki.EncodeCertificate(ca)
	tl := p.City.TrustList
	if tl.Path == "" {
		return nil, nil, errors.New("city.trustList.path is empty in spirepod.yaml")
	}
	ch := &Change{
		Kind: KindTrustCA, Team: p.Team, Branch: BranchName(p.Team, KindTrustCA),
		Title:   fmt.Sprintf("Add %s CA certificate to trust list", p.Team),
		Message: fmt.Sprintf("Add %s CA certificate to trust list\n\nx509pop CA of team %s (namespace %s), SHA-1 %s.", p.Team, p.Team, p.Namespace, info.SHA1),
	}
	ch.Body = trustCABody(p, info)
	switch tl.Mode {
	case project.TrustListBundle:
		ch.Compute = func(ctx context.Context, read ReadFunc) ([]File, error) {
			old, ok, err := read(ctx, tl.Path)
			if err != nil {
				return nil, err
			}
			if ok && bundleHas(old, info.SHA1) {
				return nil, nil
			}
			nw := append([]byte(nil), old...)
			if len(nw) > 0 && !bytes.HasSuffix(nw, []byte("\n")) {
				nw = append(nw, '\n')
			}
			if o.OwnerComment != "" {
				nw = append(nw, o.OwnerComment+"\n"...)
			}
			nw = append(nw, certPEM...)
			return []File{{Path: tl.Path, Old: old, OldExists: ok, New: nw}}, nil
		}
	case project.TrustListDirectory:
		certPath := path.Join(tl.Path, p.Team+".crt.pem")
		kPath := path.Join(tl.Path, "kustomization.yaml")
		ch.Compute = func(ctx context.Context, read ReadFunc) ([]File, error) {
			oldK, kOK, err := read(ctx, kPath)
			if err != nil {
				return nil, err
			}
			newK, err := addGeneratorFile(oldK, kOK, kPath, p.Team+".crt.pem")
			if err != nil {
				return nil, err
			}
			cert := File{Path: certPath, New: certPEM}
			// Read the certificate only when the kustomization already lists
			// it: a first run then costs one read less.
			if kOK && string(newK) == string(oldK) {
				if cert.Old, cert.OldExists, err = read(ctx, certPath); err != nil {
					return nil, err
				}
				if cert.OldExists && bundleHas(cert.Old, info.SHA1) {
					cert.New = cert.Old
				}
			}
			return []File{cert, {Path: kPath, Old: oldK, OldExists: kOK, New: newK}}, nil
		}
	default:
		return nil, nil, fmt.Errorf("city.trustList.mode %q must be bundle or directory", tl.Mode)
	}
	return ch, info, nil
}

// bundleHas reports whether a PEM bundle holds a certificate with this SHA-1.
func bundleHas(data []byte, sha1 string) bool {
	rest := data
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			return false
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err == nil && pki.SHA1Fingerprint(c) == sha1 {
			return true
		}
	}
}

func verdict(rs []check.Result) string {
	c := check.Count(rs)
	var warns []string
	for _, r := range rs {
		if r.Status == check.Warn {
			warns = append(warns, r.Name)
		}
	}
	v := fmt.Sprintf("passed (%d checks ok, %d warnings)", c.OK, c.Warn)
	if c.Warn > 0 {
		v += ": " + strings.Join(warns, "; ")
	}
	return v
}

func trustCABody(p *project.Project, ca *CAInfo) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Adds the x509pop CA certificate of team **%s** to the SPIRE server trust list (`%s`, mode %s).\n\n",
		p.Team, p.City.TrustList.Path, p.City.TrustList.Mode)
	fmt.Fprintf(&b, "| | |\n|---|---|\n")
	fmt.Fprintf(&b, "| Team | %s |\n| Namespace | `%s` |\n| Environment | %s (trust domain `%s`) |\n", p.Team, p.Namespace, p.Environment, p.TrustDomain)
	fmt.Fprintf(&b, "| CA subject | `%s` |\n| Valid | %s to %s |\n", ca.Subject, ca.NotBefore.Format(time.RFC3339), ca.NotAfter.Format(time.RFC3339))
	fmt.Fprintf(&b, "| SHA-256 | `%s` |\n| SHA-1 | `%s` |\n| `spirepod pki inspect` | %s |\n\n", ca.SHA256, ca.SHA1, ca.Verdict)
	b.WriteString("Only the public certificate is added; spirepod refuses any content holding a private key.\n\n")
	b.WriteString("### Reviewer checklist\n")
	fmt.Fprintf(&b, "- [ ] The fingerprints above match the ones team %s shared out of band\n", p.Team)
	b.WriteString("- [ ] The diff adds exactly one CERTIFICATE block and nothing else\n")
	b.WriteString("- [ ] The CA has basicConstraints CA:TRUE and keyCertSign (see the inspect verdict)\n")
	fmt.Fprintf(&b, "- [ ] The team's node aliases pin `x509pop:ca:fingerprint:%s`, so no other team on this trust list can mint their agents' names\n", ca.SHA1)
	b.WriteString("- [ ] After merge, the SPIRE server is restarted: x509pop reads `ca_bundle_path` only at start\n")
	b.WriteString("\n_Opened by `spirepod pr trust-ca`._\n")
	return b.String()
}
