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

	"github.com/spirepod/spirepod/internal/checklist"
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
	Inspect []checklist.Result
	// OwnerComment, when set, is written on its own line directly above the
	// CA's PEM block in a bundle-mode trust list (city.OwnerComment), so the
	// platform knows which team put it there.
	OwnerComment string
	// Also are more CAs of the team the trust list must hold next to CA (a
	// CA rotation), each with its owner comment (AlsoComments[i], may be
	// empty) in a bundle.
	Also         []*x509.Certificate
	AlsoComments []string
	// Remove are CAs of the team to take off the trust list (a rotation's
	// retired CA), with the owner comment line directly above each block.
	Remove []*x509.Certificate
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
		if checklist.Failed(o.Inspect) {
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
	adds := []trustAdd{{sha1: info.SHA1, pem: certPEM, comment: o.OwnerComment}}
	for i, c := range o.Also {
		a := trustAdd{sha1: pki.SHA1Fingerprint(c), pem: pki.EncodeCertificate(c)}
		if i < len(o.AlsoComments) {
			a.comment = o.AlsoComments[i]
		}
		adds = append(adds, a)
	}
	removes := map[string]bool{}
	for _, c := range o.Remove {
		removes[pki.SHA1Fingerprint(c)] = true
	}
	switch tl.Mode {
	case project.TrustListBundle:
		ch.Compute = func(ctx context.Context, read ReadFunc) ([]File, error) {
			old, ok, err := read(ctx, tl.Path)
			if err != nil {
				return nil, err
			}
			nw := old
			if len(removes) > 0 {
				nw = bundleWithout(old, removes)
			}
			for _, a := range adds {
				if ok && bundleHas(nw, a.sha1) {
					continue
				}
				nw = append([]byte(nil), nw...)
				if len(nw) > 0 && !bytes.HasSuffix(nw, []byte("\n")) {
					nw = append(nw, '\n')
				}
				if a.comment != "" {
					nw = append(nw, a.comment+"\n"...)
				}
				nw = append(nw, a.pem...)
			}
			if ok && string(nw) == string(old) {
				return nil, nil
			}
			return []File{{Path: tl.Path, Old: old, OldExists: ok, New: nw}}, nil
		}
	case project.TrustListDirectory:
		certPath := path.Join(tl.Path, p.Team+".crt.pem")
		kPath := path.Join(tl.Path, "kustomization.yaml")
		var want []byte
		for _, a := range adds {
			want = append(want, a.pem...)
		}
		ch.Compute = func(ctx context.Context, read ReadFunc) ([]File, error) {
			oldK, kOK, err := read(ctx, kPath)
			if err != nil {
				return nil, err
			}
			newK, err := addGeneratorFile(oldK, kOK, kPath, p.Team+".crt.pem")
			if err != nil {
				return nil, err
			}
			cert := File{Path: certPath, New: want}
			// Read the certificate only when the kustomization already lists
			// it: a first run then costs one read less.
			if kOK && string(newK) == string(oldK) {
				if cert.Old, cert.OldExists, err = read(ctx, certPath); err != nil {
					return nil, err
				}
				if cert.OldExists && bundleHasAll(cert.Old, adds) && !bundleHasAny(cert.Old, removes) {
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

// trustAdd is one CA a trust-ca change puts on the list.
type trustAdd struct {
	sha1, comment string
	pem           []byte
}

func bundleHasAll(data []byte, adds []trustAdd) bool {
	for _, a := range adds {
		if !bundleHas(data, a.sha1) {
			return false
		}
	}
	return true
}

func bundleHasAny(data []byte, sha1s map[string]bool) bool {
	for fp := range sha1s {
		if bundleHas(data, fp) {
			return true
		}
	}
	return false
}

// bundleWithout removes from a PEM bundle every certificate whose SHA-1 is
// in drop, with its owner comment: the comment lines directly above its
// block that are spirepod's (`# spirepod: …`) or name its SHA-1. Every other
// byte stays as it was.
func bundleWithout(data []byte, drop map[string]bool) []byte {
	lines := strings.SplitAfter(string(data), "\n")
	var out []string
	pending := 0 // comment lines just above the current position, kept in out
	for i := 0; i < len(lines); i++ {
		l := lines[i]
		if strings.TrimSpace(l) != "-----BEGIN CERTIFICATE-----" {
			if strings.HasPrefix(strings.TrimSpace(l), "#") {
				pending++
			} else {
				pending = 0
			}
			out = append(out, l)
			continue
		}
		end := i
		for end < len(lines) && strings.TrimSpace(lines[end]) != "-----END CERTIFICATE-----" {
			end++
		}
		if end == len(lines) { // unterminated: leave the rest alone
			out = append(out, lines[i:]...)
			break
		}
		block := strings.Join(lines[i:end+1], "")
		b, _ := pem.Decode([]byte(block))
		var c *x509.Certificate
		if b != nil {
			c, _ = x509.ParseCertificate(b.Bytes)
		}
		if c != nil && drop[pki.SHA1Fingerprint(c)] {
			fp := pki.SHA1Fingerprint(c)
			for pending > 0 {
				last := out[len(out)-1]
				if !strings.Contains(last, "spirepod:") && !strings.Contains(last, fp) {
					break
				}
				out, pending = out[:len(out)-1], pending-1
			}
		} else {
			out = append(out, lines[i:end+1]...)
		}
		pending = 0
		i = end
	}
	return []byte(strings.Join(out, ""))
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

func verdict(rs []checklist.Result) string {
	c := checklist.Count(rs)
	var warns []string
	for _, r := range rs {
		if r.Status == checklist.Warn {
			warns = append(warns, r.Name)
		}
	}
	v := fmt.Sprintf("passed: %d of its certificate checks ok, %d warnings, %d not applicable (the key checks run where the key is, in `spirepod pki inspect`)", c.OK, c.Warn, c.Skipped)
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
	b.WriteString("- [ ] After merge, the SPIRE server is restarted or reloads its x509pop trust list (x509pop reads `ca_bundle_path(s)` when the plugin is configured): restart it, or (SPIRE >= 1.10, x509pop data in a `plugin_data_file`) point that file at the new PEM path and send the server SIGUSR1 (a file whose text did not change is not reloaded)\n")
	b.WriteString("\n_Opened by `spirepod pr trust-ca`._\n")
	return b.String()
}
