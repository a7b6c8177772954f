package city_test

import (
	"bytes"
	"fmt"
	"path"
	"testing"
	"time"

	"github.com/spirepod/spirepod/internal/city"
	"github.com/spirepod/spirepod/internal/city/citytest"
	"github.com/spirepod/spirepod/internal/pki"
	"github.com/spirepod/spirepod/internal/project"
	"github.com/spirepod/spirepod/internal/registration"
)

// TestRotationOverlapIsClean: while a team replaces its CA (`spirepod pki
// rotate`), its folder registers every alias ID twice, once per CA pin, and
// the trust list holds both CAs with owner comments. That is one team's own
// aliases, not a shared alias (SPD101 is across folders), not one CN under
// two teams' CAs (SPD107), not a duplicate (SPD207/SPD214): the city check
// passes, in every format and both trust-list modes. The retire order is
// judged too: the old CA off the trust list while its aliases remain is
// SPD105 (so the aliases go first), and the end state is clean again.
func TestRotationOverlapIsClean(t *testing.T) {
	for _, dir := range []bool{false, true} {
		for _, format := range []string{citytest.FormatEntryJSON, citytest.FormatClusterStaticEntry, citytest.FormatMixed} {
			t.Run(fmt.Sprintf("directory=%v/%s", dir, format), func(t *testing.T) {
				g := citytest.Generate(citytest.Options{Teams: 3, Pods: 2, Directory: dir,
					Formats: []string{format, citytest.FormatEntryJSON, citytest.FormatClusterStaticEntry}})
				if fs := load(t, g.Tree, g.Config); len(fs) != 0 {
					t.Fatalf("generated city has findings:%s", dump(fs))
				}
				team := g.Teams[0]
				p := team.Proj
				p.Namespace = team.Namespace
				oldCA := team.CA
				newCA := citytest.NewCA(team.Name+" x509pop agent CA", time.Now(), nil)
				// render rewrites the team's registration as pki rotate does:
				// a mixed folder keeps its SpiffeID workloads and registers
				// the aliases (all of them) in entry-json.
				render := func(es []registration.Entry) {
					f, keep := format, es
					if format == citytest.FormatMixed {
						f, keep = project.FormatEntryJSON, nil
						for _, e := range es {
							if e.Node {
								keep = append(keep, e)
							}
						}
					}
					data, err := registration.Render(p, keep, f)
					if err != nil {
						t.Fatal(err)
					}
					g.Tree[path.Join(team.Folder, registration.File(f))] = data
				}
				setTrust := func(cas ...[]byte) {
					if dir {
						g.Tree[path.Join(citytest.TrustDir, team.Name+".crt.pem")] = bytes.Join(cas, nil)
						return
					}
					var b bytes.Buffer
					for _, tm := range g.Teams[1:] {
						b.WriteString(city.OwnerComment(tm.Name, tm.Namespace, tm.SHA1) + "\n")
						b.Write(pki.EncodeCertificate(tm.CA))
					}
					for _, c := range cas {
						cert, _ := pki.ParseCertificates(c)
						b.WriteString(city.OwnerComment(team.Name, team.Namespace, pki.SHA1Fingerprint(cert[0])) + "\n")
						b.Write(c)
					}
					g.Tree[citytest.BundlePath] = b.Bytes()
				}
				oldPEM, newPEM := pki.EncodeCertificate(oldCA), pki.EncodeCertificate(newCA)

				// Phase 2: both CAs trusted, one alias per pod and CA.
				setTrust(oldPEM, newPEM)
				both := registration.EntriesFor(p, oldCA, newCA)
				render(both)
				if n := len(both); n != 3*p.Replicas {
					t.Fatalf("%d entries for %d pods and 2 CAs, want 3 per pod", n, p.Replicas)
				}
				if fs := load(t, g.Tree, g.Config); len(fs) != 0 {
					t.Errorf("overlap (both CAs, both pins) has findings:%s", dump(fs))
				}

				// Retire in the wrong order: the old CA leaves the trust list
				// while its aliases remain.
				setTrust(newPEM)
				fs := load(t, g.Tree, g.Config)
				if len(fs) == 0 || !allCode(fs, city.CodePinNotTrusted) {
					t.Errorf("old CA removed before its aliases: want only %s, got:%s", city.CodePinNotTrusted, dump(fs))
				}

				// Retire in order: the aliases first (old CA still trusted),
				// then the CA.
				setTrust(oldPEM, newPEM)
				render(registration.Entries(p, newCA))
				if fs := load(t, g.Tree, g.Config); len(fs) != 0 {
					t.Errorf("old aliases removed, both CAs trusted: findings:%s", dump(fs))
				}
				setTrust(newPEM)
				if fs := load(t, g.Tree, g.Config); len(fs) != 0 {
					t.Errorf("rotation done: findings:%s", dump(fs))
				}
			})
		}
	}
}

func allCode(fs []registration.Finding, code string) bool {
	for _, f := range fs {
		if f.Code != code {
			return false
		}
	}
	return true
}
