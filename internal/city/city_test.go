package city_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/spirepod/spirepod/internal/city"
	"github.com/spirepod/spirepod/internal/city/citytest"
	"github.com/spirepod/spirepod/internal/pki"
	"github.com/spirepod/spirepod/internal/project"
	"github.com/spirepod/spirepod/internal/registration"
)

var ctx = context.Background()

func load(t *testing.T, tree city.Tree, cfg city.Config) []registration.Finding {
	t.Helper()
	c, err := city.Load(ctx, tree, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c.Check()
}

func codes(fs []registration.Finding) []string {
	var out []string
	for _, f := range fs {
		out = append(out, f.Code)
	}
	return out
}

func dump(fs []registration.Finding) string {
	var b strings.Builder
	for _, f := range fs {
		b.WriteString("\n  " + f.String())
	}
	return b.String()
}

// TestCleanCity: every generated city passes: both trust-list modes, every
// format, with and without the scaffold, guide naming with distinct
// StatefulSet names (a warning only).
func TestCleanCity(t *testing.T) {
	for _, o := range []citytest.Options{
		{Teams: 6},
		{Teams: 6, Directory: true},
		{Teams: 4, Scaffold: true, Pods: 1},
		{Teams: 3, Formats: []string{citytest.FormatClusterStaticEntry}},
	} {
		t.Run(fmt.Sprintf("%+v", o), func(t *testing.T) {
			g := citytest.Generate(o)
			if fs := load(t, g.Tree, g.Config); len(fs) != 0 {
				t.Errorf("clean city has findings:%s", dump(fs))
			}
		})
	}
}

// TestTwoDefaultTeamsShareAlias is the measured incident: two teams keep
// the guide's names and the default StatefulSet, so their node aliases have
// one ID. The check fails with SPD101 naming both files.
func TestTwoDefaultTeamsShareAlias(t *testing.T) {
	g := citytest.Generate(citytest.Options{Teams: 2, GuideNaming: true, Formats: []string{citytest.FormatEntryJSON}})
	fs := load(t, g.Tree, g.Config)
	a, b := g.Teams[0].Files[0], g.Teams[1].Files[0]
	var shared []registration.Finding
	for _, f := range fs {
		if f.Code == city.CodeAliasShared {
			shared = append(shared, f)
		}
	}
	if len(shared) != 6 { // three pods, reported at each team's alias
		t.Fatalf("SPD101 findings: %d, want 6:%s", len(shared), dump(fs))
	}
	for _, f := range shared {
		other := b
		if f.File == b {
			other = a
		}
		if f.Severity != registration.SeverityError || !strings.Contains(f.Message, other+":") {
			t.Errorf("%s: want an error naming the other file %s", f, other)
		}
	}
	alias := g.Teams[0].Proj.NodeAliasID(g.Teams[0].Proj.PodName(0))
	if !strings.Contains(shared[0].Message, alias) {
		t.Errorf("message does not name the alias %s: %s", alias, shared[0].Message)
	}
	// And each alias has the guide's form: relies on a unique StatefulSet name.
	n := 0
	for _, f := range fs {
		if f.Code == city.CodeAliasOutOfScope && f.Severity == registration.SeverityWarning {
			n++
		}
	}
	if n != 6 {
		t.Errorf("SPD102 warnings: %d, want 6:%s", n, dump(fs))
	}
}

// ---- fixtures: one failing city per rule ----

// fx is a clean 3-team city (entry-json, cluster-static-entry, mixed) to break.
type fx struct {
	*citytest.City
	t *testing.T
}

func (f fx) team(i int) *citytest.Team { return f.Teams[i] }

// alias is a node alias for team i's pod, pinned to fp, with CN cn.
func (f fx) alias(id, cn, fp string) registration.Entry {
	sel := []string{"x509pop:subject:cn:" + cn}
	if fp != "" {
		sel = append(sel, pki.SelectorPrefix+fp)
	}
	return registration.Entry{Name: "alias", SpiffeID: id, ParentID: registration.ServerID(citytest.TrustDomain), Node: true, Selectors: sel}
}

// withEntryID gives e an entry-json entry_id.
func withEntryID(e registration.Entry, id string) registration.Entry {
	e.EntryID = id
	return e
}

func (f fx) workload(id, parent string) registration.Entry {
	return registration.Entry{Name: "w", SpiffeID: id, ParentID: parent, Selectors: []string{"unix:uid:101"}}
}

func (f fx) id(p string) string { return "spiffe://" + citytest.TrustDomain + "/" + p }

// write puts entries in team i's folder as file (entry-json or
// cluster-static-entry by the name's extension) and returns its path.
func (f fx) write(i int, file string, es ...registration.Entry) string {
	format := registration.FormatEntryJSON
	if strings.HasSuffix(file, ".yaml") {
		format = registration.FormatClusterStaticEntry
	}
	b, err := registration.Render(f.team(i).Proj, es, format)
	if err != nil {
		f.t.Fatal(err)
	}
	p := path.Join(f.team(i).Folder, file)
	f.Tree[p] = b
	return p
}

func (f fx) ns(i int) string { return f.team(i).Namespace }

// bundle appends text to the bundle trust list.
func (f fx) bundle(text string) {
	f.Tree[citytest.BundlePath] = append(f.Tree[citytest.BundlePath], []byte(text)...)
}

func pemOf(c *x509.Certificate) string { return string(pki.EncodeCertificate(c)) }

type want struct {
	code string
	file string // "" = any file
	sev  registration.Severity
}

type fixture struct {
	name   string
	dir    bool // directory-mode trust list
	break_ func(f fx) []want
}

func fixtures() []fixture {
	now := time.Now()
	return []fixture{
		{name: "SPD101 alias ID registered by two folders", break_: func(f fx) []want {
			victim := f.team(0).Proj.NodeAliasID(f.team(0).Proj.PodName(0))
			p := f.write(1, "steal.json", f.alias(victim, "x."+f.ns(1), f.team(1).SHA1))
			return []want{{city.CodeAliasShared, p, "error"}, {city.CodeAliasShared, f.team(0).Files[0], "error"}}
		}},
		{name: "SPD112 entry_id of another team's namespace", break_: func(f fx) []want {
			a := f.alias(f.id("ns/"+f.ns(1)+"/spire-agent-x509pop-x-0"), "x-0."+f.ns(1), f.team(1).SHA1)
			p := f.write(1, "a.json", withEntryID(a, "spirepod."+f.ns(0)+".spire-agent-x509pop-web-0"))
			return []want{{city.CodeEntryIDOutOfScope, p, "error"}}
		}},
		{name: "SPD102 alias outside its scope", break_: func(f fx) []want {
			p := f.write(1, "a.json", f.alias(f.id("agents/web-0"), "web-0."+f.ns(1), f.team(1).SHA1))
			return []want{{city.CodeAliasOutOfScope, p, "error"}}
		}},
		{name: "SPD102 guide form alias is a warning", break_: func(f fx) []want {
			p := f.write(1, "a.json", f.alias(f.id("spire-agent-x509pop-web-0"), "spire-agent-x509pop-web-0", f.team(1).SHA1))
			return []want{{city.CodeAliasOutOfScope, p, "warning"}}
		}},
		{name: "SPD103 workload under another folder's alias", break_: func(f fx) []want {
			victim := f.team(0).Proj.NodeAliasID(f.team(0).Proj.PodName(0))
			p := f.write(1, "w.json", f.workload(f.id("ns/"+f.ns(1)+"/sa/thief"), victim))
			return []want{{city.CodeParentOtherFolder, p, "error"}}
		}},
		{name: "SPD104 workload outside its namespace path", break_: func(f fx) []want {
			own := f.team(1).Proj.NodeAliasID(f.team(1).Proj.PodName(0))
			p := f.write(1, "w.json", f.workload(f.id("ns/"+f.ns(0)+"/sa/httpbin-client"), own))
			return []want{{city.CodeWorkloadOutOfScope, p, "error"}}
		}},
		{name: "SPD105 alias pinned to a CA not on the trust list", break_: func(f fx) []want {
			other := citytest.NewCA("stranger", now, nil)
			p := f.write(1, "a.json", f.alias(f.id("ns/"+f.ns(1)+"/spire-agent-x509pop-x-0"), "x-0."+f.ns(1), pki.SHA1Fingerprint(other)))
			return []want{{city.CodePinNotTrusted, p, "error"}}
		}},
		{name: "SPD106 alias pinned to another team's CA", break_: func(f fx) []want {
			p := f.write(1, "a.json", f.alias(f.id("ns/"+f.ns(1)+"/spire-agent-x509pop-x-0"), "x-0."+f.ns(1), f.team(0).SHA1))
			return []want{{city.CodePinOtherTeam, p, "error"}}
		}},
		{name: "SPD107 one agent CN under two CAs", break_: func(f fx) []want {
			cn := f.team(0).Proj.AgentCN(f.team(0).Proj.PodName(0))
			p := f.write(1, "a.json", f.alias(f.id("ns/"+f.ns(1)+"/spire-agent-x509pop-x-0"), cn, f.team(1).SHA1))
			return []want{{city.CodeCNTwoCAs, p, "error"}, {city.CodeCNTwoCAs, f.team(0).Files[0], "error"}}
		}},
		{name: "SPD108 one agent CN and CA in two folders", break_: func(f fx) []want {
			cn := f.team(0).Proj.AgentCN(f.team(0).Proj.PodName(0))
			p := f.write(1, "a.json", f.alias(f.id("ns/"+f.ns(1)+"/spire-agent-x509pop-x-0"), cn, f.team(0).SHA1))
			return []want{{city.CodeCNTwoFolders, p, "error"}, {city.CodeCNTwoFolders, f.team(0).Files[0], "error"}}
		}},
		{name: "SPD109 parent registered nowhere", break_: func(f fx) []want {
			p := f.write(1, "w.json", f.workload(f.id("ns/"+f.ns(1)+"/sa/x"), f.id("ns/"+f.ns(1)+"/nobody")))
			return []want{{city.CodeParentNowhere, p, "error"}}
		}},
		{name: "SPD110 registration outside every team folder", break_: func(f fx) []want {
			b := f.Tree[f.team(0).Files[0]]
			delete(f.Tree, f.team(0).Files[0])
			f.Tree["misc/spiffe-ids.json"] = b
			return []want{{city.CodeOutsideTeamFolder, "misc/spiffe-ids.json", "warning"}}
		}},
		{name: "SPD111 registration file that does not parse", break_: func(f fx) []want {
			p := path.Join(f.team(1).Folder, "spiffe-ids.json")
			f.Tree[p] = []byte("{\n  \"entries\": [\n    {\"spiffe_id\": 1}\n  ]\n}\n")
			return []want{{city.CodeUnparsable, p, "error"}}
		}},
		{name: "SPD201 not a SPIFFE ID", break_: func(f fx) []want {
			own := f.team(1).Proj.NodeAliasID(f.team(1).Proj.PodName(0))
			p := f.write(1, "w.json", f.workload("spiffe://"+citytest.TrustDomain+"/ns/"+f.ns(1)+"/bad id", own))
			return []want{{registration.CodeBadSpiffeID, p, "error"}}
		}},
		{name: "SPD202 other trust domain", break_: func(f fx) []want {
			own := f.team(1).Proj.NodeAliasID(f.team(1).Proj.PodName(0))
			p := f.write(1, "w.json", f.workload("spiffe://other.example/ns/"+f.ns(1)+"/sa/x", own))
			return []want{{registration.CodeOtherTrustDomain, p, "error"}}
		}},
		{name: "SPD203 malformed selector", break_: func(f fx) []want {
			own := f.team(1).Proj.NodeAliasID(f.team(1).Proj.PodName(0))
			w := f.workload(f.id("ns/"+f.ns(1)+"/sa/x"), own)
			w.Selectors = []string{"Unix:uid:1"}
			return []want{{registration.CodeBadSelector, f.write(1, "w.json", w), "error"}}
		}},
		{name: "SPD204 fingerprint not lowercase hex", break_: func(f fx) []want {
			p := f.write(1, "a.json", f.alias(f.id("ns/"+f.ns(1)+"/spire-agent-x509pop-x-0"), "x-0."+f.ns(1), strings.ToUpper(f.team(1).SHA1)))
			return []want{{registration.CodeBadFingerprint, p, "error"}}
		}},
		{name: "SPD205 unix uid not a number", break_: func(f fx) []want {
			own := f.team(1).Proj.NodeAliasID(f.team(1).Proj.PodName(0))
			w := f.workload(f.id("ns/"+f.ns(1)+"/sa/x"), own)
			w.Selectors = []string{"unix:uid:envoy"}
			return []want{{registration.CodeBadUnixID, f.write(1, "w.json", w), "error"}}
		}},
		{name: "SPD206 no selectors", break_: func(f fx) []want {
			own := f.team(1).Proj.NodeAliasID(f.team(1).Proj.PodName(0))
			w := f.workload(f.id("ns/"+f.ns(1)+"/sa/x"), own)
			w.Selectors = nil
			return []want{{registration.CodeNoSelectors, f.write(1, "w.json", w), "error"}}
		}},
		{name: "SPD207 same entry twice in a folder", break_: func(f fx) []want {
			p := path.Join(f.team(0).Folder, "copy.json")
			f.Tree[p] = f.Tree[f.team(0).Files[0]]
			return []want{{registration.CodeDuplicate, "", "error"}}
		}},
		{name: "SPD208 alias without a CA pin", break_: func(f fx) []want {
			p := f.write(1, "a.json", f.alias(f.id("ns/"+f.ns(1)+"/spire-agent-x509pop-x-0"), "x-0."+f.ns(1), ""))
			return []want{{registration.CodeAliasUnpinned, p, "error"}}
		}},
		{name: "SPD209 ClusterStaticEntry without className", break_: func(f fx) []want {
			p := f.team(1).Files[0] // cluster-static-entry
			f.Tree[p] = []byte(strings.ReplaceAll(string(f.Tree[p]), "className: "+citytest.ClassName, ""))
			return []want{{registration.CodeNoClassName, p, "error"}}
		}},
		{name: "SPD210 SpiffeID selector namespace not its own", break_: func(f fx) []want {
			p := path.Join(f.team(2).Folder, "spiffe-ids.yaml") // mixed: SpiffeID workloads
			f.Tree[p] = []byte(strings.Replace(string(f.Tree[p]), "    namespace: "+f.ns(2), "    namespace: elsewhere", 1))
			return []want{{registration.CodeSpiffeIDNamespace, p, "error"}}
		}},
		{name: "SPD211 SpiffeID the registrar cannot carry", break_: func(f fx) []want {
			p := path.Join(f.team(2).Folder, "alias-cr.yaml")
			f.Tree[p] = []byte(fmt.Sprintf(`apiVersion: spiffeid.spiffe.io/v1beta1
kind: SpiffeID
metadata:
  name: alias
  namespace: %s
spec:
  spiffeId: %s
  parentId: %s
  selector:
    namespace: %s
    arbitrary:
    - x509pop:subject:cn:y-0.%s
    - x509pop:ca:fingerprint:%s
`, f.ns(2), f.id("ns/"+f.ns(2)+"/spire-agent-x509pop-y-0"), registration.ServerID(citytest.TrustDomain), f.ns(2), f.ns(2), f.team(2).SHA1))
			return []want{{registration.CodeRegistrarRewrites, p, "error"}}
		}},
		{name: "SPD212 agent CN over 64 bytes", break_: func(f fx) []want {
			p := f.write(1, "a.json", f.alias(f.id("ns/"+f.ns(1)+"/spire-agent-x509pop-x-0"), strings.Repeat("x", 65), f.team(1).SHA1))
			return []want{{registration.CodeBadCN, p, "error"}}
		}},
		{name: "SPD213 entry_id SPIRE refuses", break_: func(f fx) []want {
			a := f.alias(f.id("ns/"+f.ns(1)+"/spire-agent-x509pop-x-0"), "x-0."+f.ns(1), f.team(1).SHA1)
			p := f.write(1, "a.json", withEntryID(a, f.ns(1)+".bad id"))
			return []want{{registration.CodeBadEntryID, p, "error"}}
		}},
		{name: "SPD214 one entry_id on two entries", break_: func(f fx) []want {
			a := f.alias(f.id("ns/"+f.ns(1)+"/spire-agent-x509pop-x-0"), "x-0."+f.ns(1), f.team(1).SHA1)
			b := f.alias(f.id("ns/"+f.ns(1)+"/spire-agent-x509pop-x-1"), "x-1."+f.ns(1), f.team(1).SHA1)
			p := f.write(1, "a.json", withEntryID(a, f.ns(1)+".same"), withEntryID(b, f.ns(1)+".same"))
			return []want{{registration.CodeDuplicateEntryID, p, "error"}}
		}},
		{name: "SPD301 trust-list certificate not a CA", break_: func(f fx) []want {
			f.bundle(pemOf(citytest.NewCA("leaf", now, func(c *x509.Certificate) { c.IsCA = false; c.KeyUsage = x509.KeyUsageDigitalSignature })))
			return []want{{city.CodeNotCA, citytest.BundlePath, "error"}}
		}},
		{name: "SPD302 CA without keyCertSign", break_: func(f fx) []want {
			f.bundle(pemOf(citytest.NewCA("nosign", now, func(c *x509.Certificate) { c.KeyUsage = x509.KeyUsageDigitalSignature })))
			return []want{{city.CodeNoKeyCertSign, citytest.BundlePath, "error"}}
		}},
		{name: "SPD303 expired CA", break_: func(f fx) []want {
			f.bundle(pemOf(citytest.NewCA("old", now, func(c *x509.Certificate) {
				c.NotBefore, c.NotAfter = now.Add(-48*time.Hour), now.Add(-24*time.Hour)
			})))
			return []want{{city.CodeNotValid, citytest.BundlePath, "error"}}
		}},
		{name: "SPD304 CA expiring within the expiry days", break_: func(f fx) []want {
			f.bundle(pemOf(citytest.NewCA("soon", now, func(c *x509.Certificate) { c.NotAfter = now.Add(10 * 24 * time.Hour) })))
			return []want{{city.CodeExpiresSoon, citytest.BundlePath, "warning"}}
		}},
		{name: "SPD305 the same CA twice", break_: func(f fx) []want {
			f.bundle(pemOf(f.team(0).CA))
			return []want{{city.CodeDuplicateCA, citytest.BundlePath, "warning"}}
		}},
		{name: "SPD306 a private key in the bundle", break_: func(f fx) []want {
			k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			der, _ := x509.MarshalECPrivateKey(k)
			f.bundle(string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})))
			return []want{{city.CodeNotCertificate, citytest.BundlePath, "error"}}
		}},
		{name: "SPD306 a certificate that does not parse", break_: func(f fx) []want {
			f.bundle(string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("not DER")})))
			return []want{{city.CodeNotCertificate, citytest.BundlePath, "error"}}
		}},
		{name: "SPD306 another PEM type is skipped", break_: func(f fx) []want {
			k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			der, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
			f.bundle(string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})))
			return []want{{city.CodeNotCertificate, citytest.BundlePath, "warning"}}
		}},
		{name: "SPD307 owner unknown", break_: func(f fx) []want {
			f.bundle(pemOf(citytest.NewCA("anonymous", now, nil)))
			return []want{{city.CodeOwnerUnknown, citytest.BundlePath, "note"}}
		}},
		{name: "SPD308 no trust list", break_: func(f fx) []want {
			delete(f.Tree, citytest.BundlePath)
			return []want{{city.CodeTrustListAbsent, citytest.BundlePath, "warning"}}
		}},
		{name: "SPD309 directory file not listed", dir: true, break_: func(f fx) []want {
			p := path.Join(citytest.TrustDir, "extra.crt.pem")
			f.Tree[p] = []byte(pemOf(citytest.NewCA("extra", now, nil)))
			return []want{{city.CodeUnlisted, p, "warning"}}
		}},
		{name: "SPD310 directory kustomization lists a missing file", dir: true, break_: func(f fx) []want {
			delete(f.Tree, path.Join(citytest.TrustDir, f.team(1).Name+".crt.pem"))
			return []want{{city.CodeListedMissing, path.Join(citytest.TrustDir, "kustomization.yaml"), "error"},
				{city.CodePinNotTrusted, f.team(1).Files[0], "error"}}
		}},
		{name: "SPD311 owner comment above another certificate", break_: func(f fx) []want {
			ca := citytest.NewCA("misplaced", now, nil)
			f.bundle(city.OwnerComment(f.team(1).Name, f.ns(1), f.team(1).SHA1) + "\n" + pemOf(ca))
			return []want{{city.CodeOwnerConflict, citytest.BundlePath, "warning"}, {city.CodeOwnerUnknown, citytest.BundlePath, "note"}}
		}},
		{name: "SPD401 common-name agent path template", break_: func(f fx) []want {
			f.Tree[citytest.ServerFile] = citytest.ServerConfigMap("/{{ .PluginName }}/{{ .Subject.CommonName }}")
			return []want{{city.CodeCNTemplate, citytest.ServerFile, "error"}}
		}},
		{name: "SPD401 in a .conf file", break_: func(f fx) []want {
			p := "ns/spire/server/lab/server.conf"
			f.Tree[p] = []byte(citytest.ServerConf("/x509pop/{{ .SerialNumberHex }}"))
			return []want{{city.CodeCNTemplate, p, "error"}}
		}},
		{name: "SPD402 server config that does not parse", break_: func(f fx) []want {
			p := "ns/spire/server/lab/server.conf"
			f.Tree[p] = []byte(citytest.ServerConf("") + "\nplugins { NodeAttestor \"x509pop\" {\n")
			return []want{{city.CodeServerUnparsable, p, "warning"}}
		}},
		{name: "SPD403 x509pop plugin data in a file", break_: func(f fx) []want {
			p := "ns/spire/server/lab/server.conf"
			f.Tree[p] = []byte(strings.Replace(citytest.ServerConf(""), "plugin_data {\n      ca_bundle_path = \"/run/spire/x509pop/agent-ca-bundle.pem\"\n    }", "plugin_data_file = \"/run/spire/x509pop.hcl\"", 1))
			return []want{{city.CodeServerPluginFile, p, "note"}}
		}},
	}
}

// TestRuleFixtures breaks a clean city one rule at a time. Each break must
// produce its code where expected; the change-only check (LoadChange, what
// `--base` runs) must report exactly the full check's findings that
// involve the change; and every code in the rule table has a fixture.
func TestRuleFixtures(t *testing.T) {
	covered := map[string]bool{}
	for _, fxt := range fixtures() {
		t.Run(fxt.name, func(t *testing.T) {
			base := citytest.Generate(citytest.Options{Teams: 3, Directory: fxt.dir})
			head := &citytest.City{Tree: city.MapTree{}, Config: base.Config, Teams: base.Teams}
			for p, b := range base.Tree {
				head.Tree[p] = b
			}
			wants := fxt.break_(fx{City: head, t: t})
			full, err := city.Load(ctx, head.Tree, head.Config)
			if err != nil {
				t.Fatal(err)
			}
			all := full.Check()
			if testing.Verbose() {
				t.Logf("findings:%s", dump(all))
			}
			for _, w := range wants {
				found := false
				for _, f := range all {
					found = found || (f.Code == w.code && (w.file == "" || f.File == w.file) && f.Severity == w.sev)
				}
				if !found {
					t.Errorf("no %s %s at %q in:%s", w.sev, w.code, w.file, dump(all))
				}
				covered[w.code] = true
			}
			ch, err := city.Changed(ctx, base.Tree, head.Tree, head.Config)
			if err != nil {
				t.Fatal(err)
			}
			fc, _, err := city.LoadChange(ctx, base.Tree, head.Tree, head.Config)
			if err != nil {
				t.Fatal(err)
			}
			if got, want := fc.Check(), full.CheckChange(ch); !reflect.DeepEqual(got, want) {
				t.Errorf("change-only check differs from the full check's findings of the change\nchange-only:%s\nfull:%s", dump(got), dump(want))
			}
			for _, w := range wants {
				found := false
				for _, f := range fc.Check() {
					found = found || f.Code == w.code
				}
				if !found {
					t.Errorf("change-only check misses %s (changed %v)", w.code, ch.Paths)
				}
			}
		})
	}
	// The hostile corpus (TestHostileCorpus) covers the rest: the codes its
	// changes are refused with count when they do come out.
	for _, hc := range citytest.Hostiles() {
		g := citytest.Generate(citytest.Corpus)
		base := city.MapTree{}
		for p, b := range g.Tree {
			base[p] = b
		}
		h := citytest.NewHostileCity(g)
		w := hc.Apply(h)
		c, err := city.Load(ctx, linkedTree{MapTree: h.Tree, links: mapKeys(h.Links)}, g.Config)
		if err != nil {
			t.Fatal(err)
		}
		fs := c.Check()
		if ch, err := city.Changed(ctx, base, h.Tree, g.Config); err == nil {
			fs = append(fs, c.CheckChange(ch)...)
		}
		for _, f := range fs {
			if contains(w.Codes, f.Code) {
				covered[f.Code] = true
			}
		}
	}
	for _, r := range city.Rules() {
		if !covered[r.Code] {
			t.Errorf("rule %s has no failing fixture", r.Code)
		}
	}
}

func mapKeys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// TestUnchangedFindingsStayOut: --base reports a finding only when it
// involves the change; a problem already on the base is not the PR's.
func TestUnchangedFindingsStayOut(t *testing.T) {
	base := citytest.Generate(citytest.Options{Teams: 3})
	f := fx{City: base, t: t}
	victim := f.team(0).Proj.NodeAliasID(f.team(0).Proj.PodName(0))
	f.write(1, "steal.json", f.alias(victim, "x."+f.ns(1), f.team(1).SHA1))
	head := city.MapTree{}
	for p, b := range base.Tree {
		head[p] = b
	}
	// An unrelated change: a new team's folder.
	g := fx{City: &citytest.City{Tree: head, Config: base.Config}, t: t}
	nt := g.AddTeam("newteam", "ns-newteam", citytest.FormatEntryJSON, citytest.Options{})
	head[citytest.BundlePath] = append(head[citytest.BundlePath], []byte(city.OwnerComment(nt.Name, nt.Namespace, nt.SHA1)+"\n"+pemOf(nt.CA))...)
	c, _, err := city.LoadChange(ctx, base.Tree, head, base.Config)
	if err != nil {
		t.Fatal(err)
	}
	if fs := c.Check(); len(fs) != 0 {
		t.Errorf("the change is clean, yet:%s", dump(fs))
	}
	if fs := load(t, head, base.Config); len(fs) == 0 {
		t.Error("the full check must still see the base's SPD101")
	}
	// The same through CheckOverlay, as pr spiffe-id runs it.
	files := map[string][]byte{citytest.BundlePath: head[citytest.BundlePath]}
	for _, p := range nt.Files {
		files[p] = head[p]
	}
	fs, err := city.CheckOverlay(ctx, base.Tree, base.Config, files, nil)
	if err != nil || len(fs) != 0 {
		t.Errorf("CheckOverlay of a clean team: %v%s", err, dump(fs))
	}
	// A team that registers the victim's alias is refused by CheckOverlay.
	steal, _ := registration.Render(nt.Proj, []registration.Entry{g.alias(victim, "y."+nt.Namespace, nt.SHA1)}, registration.FormatEntryJSON)
	fs, err = city.CheckOverlay(ctx, base.Tree, base.Config, map[string][]byte{nt.Files[0]: steal}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !contains(codes(fs), city.CodeAliasShared) {
		t.Errorf("CheckOverlay missed the stolen alias:%s", dump(fs))
	}
	// CheckFiles keeps findings naming a file: the victim's file too.
	full, _ := city.Load(ctx, head, base.Config)
	if got := full.CheckFiles(f.team(0).Files[0]); !contains(codes(got), city.CodeAliasShared) {
		t.Errorf("CheckFiles(victim) misses SPD101:%s", dump(got))
	}
}

// TestRemovedAliasOrphansWorkloads: deleting a file that registered an
// alias reports the workloads left under it elsewhere (their files did not
// change; the alias they hang under did).
func TestRemovedAliasOrphansWorkloads(t *testing.T) {
	base := citytest.Generate(citytest.Options{Teams: 3, Formats: []string{citytest.FormatMixed}})
	head := city.MapTree{}
	for p, b := range base.Tree {
		head[p] = b
	}
	aliases := path.Join(base.Teams[1].Folder, "spiffe-ids.json")
	delete(head, aliases)
	c, ch, err := city.LoadChange(ctx, base.Tree, head, base.Config)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(ch.Paths, []string{aliases}) {
		t.Errorf("changed paths %v", ch.Paths)
	}
	fs := c.Check()
	n := 0
	for _, f := range fs {
		if f.Code == city.CodeParentNowhere && f.File == path.Join(base.Teams[1].Folder, "spiffe-ids.yaml") {
			n++
		}
	}
	if n != 3 {
		t.Errorf("SPD109 on the orphaned workloads: %d, want 3:%s", n, dump(fs))
	}
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// TestTeamPathTeamPlaceholder: folders named by {team} alone have no
// namespace, so the scope rules skip them and ownership compares teams.
func TestTeamPathTeamPlaceholder(t *testing.T) {
	g := citytest.Generate(citytest.Options{Teams: 2, Formats: []string{citytest.FormatEntryJSON}})
	tree := city.MapTree{citytest.BundlePath: g.Tree[citytest.BundlePath]}
	for _, tm := range g.Teams {
		tree["teams/"+tm.Name+"/spiffe-ids.json"] = g.Tree[tm.Files[0]]
	}
	cfg := g.Config
	cfg.TeamPath = "teams/{team}"
	if fs := load(t, tree, cfg); len(fs) != 0 {
		t.Errorf("clean:%s", dump(fs))
	}
	// Team 1's file pinned to team 0's CA: the owner comment's team says so.
	b := strings.ReplaceAll(string(tree["teams/team0001/spiffe-ids.json"]), g.Teams[1].SHA1, g.Teams[0].SHA1)
	tree["teams/team0001/spiffe-ids.json"] = []byte(b)
	if fs := load(t, tree, cfg); !contains(codes(fs), city.CodePinOtherTeam) {
		t.Errorf("want SPD106:%s", dump(fs))
	}
}

func TestConfigValidate(t *testing.T) {
	for _, c := range []struct {
		cfg  city.Config
		want string
	}{
		{city.Config{TeamPath: "ns/x", TrustList: project.TrustList{Path: "a.pem"}}, "neither {namespace} nor {team}"},
		{city.Config{TeamPath: "ns/{namespace}", TrustList: project.TrustList{Mode: "zip", Path: "a"}}, "must be bundle or directory"},
		{city.Config{TeamPath: "ns/{namespace}", TrustList: project.TrustList{}}, "trust list path is empty"},
		{city.Config{TeamPath: "ns/{namespace}", TrustList: project.TrustList{Path: "a"}, ServerConfigs: []string{"["}}, "server config pattern"},
	} {
		err := c.cfg.Validate()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want %q", c.cfg, err, c.want)
		}
	}
}

// TestRulesDocumented: every rule has a row in the README (the fragment
// until it is merged into README.md) with its anchor and severity.
func TestRulesDocumented(t *testing.T) {
	doc, err := os.ReadFile("README-fragment.md")
	if errors.Is(err, fs.ErrNotExist) {
		doc, err = os.ReadFile("../../README.md")
	}
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range city.Rules() {
		row := fmt.Sprintf("| <a id=%q></a>%s | %s", strings.TrimPrefix(r.Anchor(), "#"), r.Code, r.Severity)
		if !strings.Contains(string(doc), row) {
			t.Errorf("no README row %q", row)
		}
	}
}

// TestLightConfig: the team side's light reading of its city refuses what
// the platform would.
func TestLightConfig(t *testing.T) {
	g := citytest.Generate(citytest.Options{Teams: 2, Formats: []string{citytest.FormatEntryJSON}})
	cfg := g.Config
	cfg.Light = true
	// Team 1 rewrites its file to pin team 0's CA: refused as the platform would.
	f := g.Teams[1].Files[0]
	b := strings.ReplaceAll(string(g.Tree[f]), g.Teams[1].SHA1, g.Teams[0].SHA1)
	fs, err := city.CheckOverlay(ctx, g.Tree, cfg, map[string][]byte{f: []byte(b)}, nil)
	if err != nil || !contains(codes(fs), city.CodePinOtherTeam) {
		t.Errorf("%v%s", err, dump(fs))
	}
}

// linkedTree is a MapTree with symbolic links.
type linkedTree struct {
	city.MapTree
	links []string
}

func (l linkedTree) Links(context.Context) ([]string, error) { return l.links, nil }

// TestHostileCorpus: every hostile change of the corpus (citytest.Hostiles,
// at least one per class of issue 20) fails the full check and the
// change-only check (what --base runs) with an error of its codes that
// names the attacker's file and, where two folders are involved, the
// victim's; where the change is the attacker's own pull request, the team
// side's light check refuses it too. The clean city passes.
func TestHostileCorpus(t *testing.T) {
	classes := map[int]bool{}
	for _, hc := range citytest.Hostiles() {
		t.Run(hc.Name, func(t *testing.T) {
			base := citytest.Generate(citytest.Corpus)
			if fs := load(t, base.Tree, base.Config); len(fs) != 0 {
				t.Fatalf("clean corpus city has findings:%s", dump(fs))
			}
			head := city.MapTree{}
			for p, b := range base.Tree {
				head[p] = b
			}
			h := citytest.NewHostileCity(&citytest.City{Tree: head, Config: base.Config, Teams: base.Teams})
			w := hc.Apply(h)
			classes[hc.Class] = true
			var links []string
			for p := range h.Links {
				links = append(links, p)
			}
			headTree := linkedTree{MapTree: head, links: links}
			full, err := city.Load(ctx, headTree, base.Config)
			if err != nil {
				t.Fatal(err)
			}
			refused(t, "full check", full.Check(), w)
			fc, _, err := city.LoadChange(ctx, base.Tree, headTree, base.Config)
			if err != nil {
				t.Fatal(err)
			}
			refused(t, "change-only check", fc.Check(), w)
			if !w.TeamSide {
				return
			}
			changed := map[string][]byte{}
			for p, b := range head {
				if ob, ok := base.Tree[p]; !ok || string(ob) != string(b) {
					changed[p] = b
				}
			}
			light := base.Config
			light.Light = true
			fs, err := city.CheckOverlay(ctx, base.Tree, light, changed, h.Deleted)
			if err != nil {
				t.Fatal(err)
			}
			if len(h.Links) == 0 {
				refused(t, "team side", fs, w)
			}
		})
	}
	for c := 1; c <= 7; c++ {
		if !classes[c] {
			t.Errorf("no hostile change of class %d", c)
		}
	}
}

func refused(t *testing.T, what string, fs []registration.Finding, w citytest.Want) {
	t.Helper()
	var errs []registration.Finding
	for _, f := range fs {
		if f.Severity == registration.SeverityError {
			errs = append(errs, f)
		}
	}
	hit := false
	for _, f := range errs {
		hit = hit || contains(w.Codes, f.Code)
	}
	if !hit {
		t.Errorf("%s: no error %v in:%s", what, w.Codes, dump(fs))
	}
	for _, file := range w.Files {
		named := false
		for _, f := range errs {
			named = named || f.File == file || strings.Contains(f.Message, file)
		}
		if !named {
			t.Errorf("%s: no error names %s:%s", what, file, dump(fs))
		}
	}
}
