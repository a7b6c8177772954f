package pr_test

import (
	"context"
	"crypto/x509"
	"path"
	"strings"
	"testing"

	"github.com/spirepod/spirepod/internal/pki"
	"github.com/spirepod/spirepod/internal/pr"
	"github.com/spirepod/spirepod/internal/project"
	"github.com/spirepod/spirepod/internal/registration"
)

// planOn computes a change against files (path → content) and returns the
// files it writes (path → new content, "<deleted>" for a deletion) and
// whether the base already holds it.
func planOn(t *testing.T, ch *pr.Change, files map[string]string) (map[string]string, bool) {
	t.Helper()
	read := func(_ context.Context, p string) ([]byte, bool, error) {
		s, ok := files[p]
		return []byte(s), ok, nil
	}
	res, err := pr.Plan(context.Background(), ch, read, "main")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, f := range res.Files {
		out[f] = ""
	}
	// Recompute to read the contents (Plan reports paths and the diff).
	got, err := ch.Compute(context.Background(), read)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range got {
		if _, ok := out[f.Path]; !ok {
			continue
		}
		if f.Delete {
			out[f.Path] = "<deleted>"
		} else {
			out[f.Path] = string(f.New)
		}
	}
	return out, res.Action == pr.ActionInBase
}

func comment(fp string) string {
	return "# spirepod: team=payments namespace=payments sha1=" + fp + "\n"
}

// TestTrustCARotationBundle: a rotation's trust-list changes in bundle
// mode. Adding the new CA next to the old one appends exactly its owner
// comment and PEM; removing the old CA takes exactly its block and owner
// comment away and leaves every other byte (another team's CA, a header
// comment) alone; each is in-base once applied.
func TestTrustCARotationBundle(t *testing.T) {
	p := testProject(project.TrustListBundle)
	other, _ := genCA(t, "other team CA")
	oldPEM, _ := genCA(t, "payments CA")
	newPEM, _ := genCA(t, "payments CA")
	oldCA, newCA := mustCert(t, oldPEM), mustCert(t, newPEM)
	oldFP, newFP := pki.SHA1Fingerprint(oldCA), pki.SHA1Fingerprint(newCA)
	base := "# the dev trust list\n" + string(other) + comment(oldFP) + string(oldPEM)

	add, _, err := pr.TrustCA(pr.TrustCAOptions{Project: p, CA: oldCA, OwnerComment: strings.TrimSuffix(comment(oldFP), "\n"),
		Also: []*x509.Certificate{newCA}, AlsoComments: []string{strings.TrimSuffix(comment(newFP), "\n")}})
	if err != nil {
		t.Fatal(err)
	}
	got, inBase := planOn(t, add, map[string]string{bundlePath: base})
	if inBase || got[bundlePath] != base+comment(newFP)+string(newPEM) {
		t.Fatalf("add the new CA: in base %v, bundle:\n%s", inBase, got[bundlePath])
	}
	both := got[bundlePath]
	if _, inBase := planOn(t, add, map[string]string{bundlePath: both}); !inBase {
		t.Errorf("the bundle holding both CAs is not in base for the same change")
	}

	rm, _, err := pr.TrustCA(pr.TrustCAOptions{Project: p, CA: newCA, OwnerComment: strings.TrimSuffix(comment(newFP), "\n"),
		Remove: []*x509.Certificate{oldCA}})
	if err != nil {
		t.Fatal(err)
	}
	got, inBase = planOn(t, rm, map[string]string{bundlePath: both})
	want := "# the dev trust list\n" + string(other) + comment(newFP) + string(newPEM)
	if inBase || got[bundlePath] != want {
		t.Fatalf("remove the old CA: in base %v, bundle:\n%s\nwant:\n%s", inBase, got[bundlePath], want)
	}
	if _, inBase := planOn(t, rm, map[string]string{bundlePath: want}); !inBase {
		t.Errorf("the retired bundle is not in base for the same change")
	}
	// Emergency: add the new one and remove the old one at once.
	got, _ = planOn(t, rm, map[string]string{bundlePath: base})
	if got[bundlePath] != "# the dev trust list\n"+string(other)+comment(newFP)+string(newPEM) {
		t.Errorf("replace in one change:\n%s", got[bundlePath])
	}
	// The single-CA change is unchanged by these options: exactly the old
	// append of its comment and PEM.
	single, _, err := pr.TrustCA(pr.TrustCAOptions{Project: p, CA: newCA, OwnerComment: strings.TrimSuffix(comment(newFP), "\n")})
	if err != nil {
		t.Fatal(err)
	}
	got, _ = planOn(t, single, map[string]string{bundlePath: string(other)})
	if got[bundlePath] != string(other)+comment(newFP)+string(newPEM) {
		t.Errorf("single CA:\n%s", got[bundlePath])
	}
}

// TestTrustCARotationDirectory: in directory mode the team's file holds
// both CAs during the overlap and the new one alone after.
func TestTrustCARotationDirectory(t *testing.T) {
	p := testProject(project.TrustListDirectory)
	dir := p.City.TrustList.Path
	oldPEM, _ := genCA(t, "payments CA")
	newPEM, _ := genCA(t, "payments CA")
	oldCA, newCA := mustCert(t, oldPEM), mustCert(t, newPEM)
	kust := "configMapGenerator:\n- name: x509pop-cas\n  files:\n  - payments.crt.pem\n"
	base := map[string]string{path.Join(dir, "kustomization.yaml"): kust, path.Join(dir, "payments.crt.pem"): string(oldPEM)}

	add, _, err := pr.TrustCA(pr.TrustCAOptions{Project: p, CA: oldCA, Also: []*x509.Certificate{newCA}})
	if err != nil {
		t.Fatal(err)
	}
	got, _ := planOn(t, add, base)
	if got[path.Join(dir, "payments.crt.pem")] != string(oldPEM)+string(newPEM) || len(got) != 1 {
		t.Fatalf("overlap: %v", got)
	}
	base[path.Join(dir, "payments.crt.pem")] = string(oldPEM) + string(newPEM)
	if _, in := planOn(t, add, base); !in {
		t.Errorf("overlap file not in base")
	}
	rm, _, err := pr.TrustCA(pr.TrustCAOptions{Project: p, CA: newCA, Remove: []*x509.Certificate{oldCA}})
	if err != nil {
		t.Fatal(err)
	}
	got, _ = planOn(t, rm, base)
	if got[path.Join(dir, "payments.crt.pem")] != string(newPEM) {
		t.Fatalf("retire: %v", got)
	}
}

// TestSpiffeIDRotation: during the overlap every pod has two aliases with
// the same ID, one per CA; the old CA's keeps its single-CA name and
// entry_id (a re-load finds it unchanged), the new one's is named apart;
// the workload entries are the single-CA ones; the render passes the
// offline validator.
func TestSpiffeIDRotation(t *testing.T) {
	p := testProject(project.TrustListBundle)
	oldPEM, _ := genCA(t, "payments CA")
	newPEM, _ := genCA(t, "payments CA")
	oldCA, newCA := mustCert(t, oldPEM), mustCert(t, newPEM)
	newFP := pki.SHA1Fingerprint(newCA)
	single := registration.Entries(p, oldCA)
	both := registration.EntriesFor(p, oldCA, newCA)
	if len(both) != len(single)+p.Replicas {
		t.Fatalf("%d entries, want %d (one more alias per pod)", len(both), len(single)+p.Replicas)
	}
	byID := map[string]registration.Entry{}
	for _, e := range both {
		if _, dup := byID[e.EntryID]; dup {
			t.Fatalf("entry_id %s twice", e.EntryID)
		}
		byID[e.EntryID] = e
	}
	for _, s := range single {
		b, ok := byID[s.EntryID]
		if !ok || b.SpiffeID != s.SpiffeID || b.Name != s.Name || strings.Join(b.Selectors, ",") != strings.Join(s.Selectors, ",") {
			t.Errorf("single-CA entry %s changed or missing: %+v", s.EntryID, b)
		}
	}
	for _, pod := range p.PodNames() {
		id := registration.EntryID(p.Namespace, registration.AliasName(p, pod, newFP))
		e, ok := byID[id]
		if !ok || e.SpiffeID != p.NodeAliasID(pod) || e.Selectors[1] != pki.SelectorPrefix+newFP || !e.Node {
			t.Errorf("pod %s: new-CA alias %s: %+v", pod, id, e)
		}
	}
	for _, format := range []string{project.FormatEntryJSON, project.FormatClusterStaticEntry} {
		p.Registration.ClassName = "spire-system-spire"
		ch, es, err := pr.SpiffeID(pr.SpiffeIDOptions{Project: p, CA: oldCA, More: []*x509.Certificate{newCA}, Format: format})
		if err != nil {
			t.Fatalf("%s: %v", format, err)
		}
		if len(es) != len(both) {
			t.Errorf("%s: %d entries", format, len(es))
		}
		files, _ := planOn(t, ch, map[string]string{})
		data := files[path.Join(pr.TeamPath(p), registration.File(format))]
		parsed, err := registration.Parse(registration.File(format), []byte(data))
		if err != nil {
			t.Fatal(err)
		}
		if fs := registration.Validate(parsed, registration.ValidateOptions{TrustDomain: p.TrustDomain}); len(fs) > 0 {
			t.Errorf("%s: findings %v", format, fs)
		}
		if format != project.FormatEntryJSON && !strings.Contains(data, "spirepod pki rotate") {
			t.Errorf("%s: the header does not say it is a rotation", format)
		}
	}
	// Single CA: the file is byte for byte what it was (header included).
	ch, _, err := pr.SpiffeID(pr.SpiffeIDOptions{Project: p, CA: newCA, Format: project.FormatEntryJSON})
	if err != nil {
		t.Fatal(err)
	}
	one, _ := planOn(t, ch, map[string]string{})
	want, _ := registration.Render(p, registration.Entries(p, newCA), project.FormatEntryJSON)
	if one[path.Join(pr.TeamPath(p), "spiffe-ids.json")] != string(want) {
		t.Errorf("single-CA render differs")
	}
}
