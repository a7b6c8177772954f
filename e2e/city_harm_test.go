package e2e_test

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spirepod/spirepod/internal/city/citytest"
	"github.com/spirepod/spirepod/internal/pki"
	"github.com/spirepod/spirepod/internal/project"
	spreg "github.com/spirepod/spirepod/internal/registration"
	"github.com/spirepod/spirepod/internal/testbed"
)

// The harm that `city check`'s rules prevent, shown on the real SPIRE
// server (and spire-controller-manager) without the rule, so no rule is
// guesswork. Each test names the rule it backs.

// TestCityHarmParentChain backs SPD109: an entry parented to another
// team's *workload* ID (not a node alias) is handed to the agent that can
// obtain that ID: the victim team's pods receive the hostile team's
// identity. Without the rule a team can push an SVID of its choosing into
// another team's pods.
func TestCityHarmParentChain(t *testing.T) {
	t.Parallel()
	ft := newFormatTest(t, false)
	trust := ft.mergeTrustCA()
	reg := ft.mergeSpiffeID(project.FormatEntryJSON)
	srv := ft.startServer("server", trust, defaultAgentPathTemplate)
	file := filepath.Join(ft.root, "server", "entries.json")
	writeFile(t, file, reg.Content, 0o644)
	if out, err := srv.Run(ft.ctx, "entry", "create", "-data", file); err != nil {
		t.Fatalf("entry create -data: %v\n%s", err, out)
	}
	// The hostile team's entry: its own ID, parented to the victim's workload ID.
	hostileID := "spiffe://" + ft.td() + "/ns/hostile/sa/implant"
	hostile, _ := json.Marshal(map[string]any{"entries": []any{map[string]any{
		"entry_id": "spirepod.hostile.implant", "spiffe_id": hostileID, "parent_id": ft.wantID,
		"selectors": []map[string]string{{"type": "unix", "value": "uid:101"}}}}})
	hf := filepath.Join(ft.root, "server", "hostile.json")
	writeFile(t, hf, string(hostile), 0o644)
	if out, err := srv.Run(ft.ctx, "entry", "create", "-data", hf); err != nil {
		t.Fatalf("entry create -data hostile: %v\n%s", err, out)
	}
	a := ft.startPodAgent(filepath.Join(ft.root, "agents"), ft.pods[0], srv, 0)
	// The victim pod's Envoy (uid 101) now receives both identities.
	deadline := time.Now().Add(syncBound)
	var uris []string
	for time.Now().Before(deadline) {
		dir := filepath.Join(ft.root, "fetch-"+randHex(t, 3))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(dir, envoyUID, envoyUID); err != nil {
			t.Fatal(err)
		}
		if _, err := ft.fetchOnce(a.Socket, dir); err == nil {
			uris = svidURIs(t, dir)
			if contains(uris, hostileID) && contains(uris, ft.wantID) {
				t.Logf("HARM the victim's agent hands its Envoy both %s and the hostile %s (parented to the victim's workload ID)", ft.wantID, hostileID)
				return
			}
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Fatalf("within %v the victim's Envoy got %v, not both %s and %s: the chain did not deliver (SPD109's premise failed)", syncBound, uris, ft.wantID, hostileID)
}

// svidURIs lists the URI SANs of every svid.N.pem api fetch wrote.
func svidURIs(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	for i := 0; ; i++ {
		p := filepath.Join(dir, "svid."+strconv.Itoa(i)+".pem")
		if _, err := os.Stat(p); err != nil {
			return out
		}
		out = append(out, svidURI(t, p))
	}
}

// TestCityHarmCAFlood backs SPD313 and sizes SPD314: CAs with the subject
// and subject key ID of a team's CA, listed ahead of it on the trust list,
// make that team's agents fail to attest on the real spire-server once
// there are 100 of them (Go's verifier stops after 100 candidate signature
// checks per chain); 99 still let it attest. One owner may hold at most a
// handful of CAs (SPD314), and any CA with another owner's subject or key
// ID is refused (SPD313), so no team can line up 100.
func TestCityHarmCAFlood(t *testing.T) {
	t.Parallel()
	ft := newFormatTest(t, false)
	victim := ft.ca.Cert
	lookAlikes := func(n int) string {
		var b strings.Builder
		for i := 0; i < n; i++ {
			ca := citytest.NewCA("x", time.Now(), func(c *x509.Certificate) {
				c.Subject = victim.Subject
				c.SubjectKeyId = victim.SubjectKeyId
			})
			b.Write(pki.EncodeCertificate(ca))
		}
		return b.String()
	}
	own := string(pki.EncodeCertificate(victim))
	entries := func(srv *testbed.SpireServer) {
		es := spreg.Entries(ft.p, victim)
		data, err := spreg.Render(ft.p, es, project.FormatEntryJSON)
		if err != nil {
			t.Fatal(err)
		}
		f := filepath.Join(srv.Dir, "entries.json")
		writeFile(t, f, string(data), 0o644)
		if out, err := srv.Run(ft.ctx, "entry", "create", "-data", f); err != nil {
			t.Fatalf("entry create: %v\n%s", err, out)
		}
	}
	attests := func(name, trustList string) (bool, string) {
		srv := ft.startServer(name, trustList, defaultAgentPathTemplate)
		entries(srv)
		ok := ft.tryPodAgent(filepath.Join(ft.root, name+"-agents"), ft.pods[0], srv)
		log, _ := os.ReadFile(srv.Proc.LogPath)
		srv.Stop()
		return ok, string(log)
	}
	for _, c := range []struct {
		n    int
		want bool
	}{{99, true}, {100, false}} {
		ok, log := attests("flood-"+strconv.Itoa(c.n), lookAlikes(c.n)+own)
		if ok != c.want {
			t.Fatalf("%d look-alike CAs ahead of the team's CA: attested=%v, want %v\n%s", c.n, ok, c.want, lastLines(log, 20))
		}
		if !ok && !strings.Contains(log, "signature check attempts limit") {
			t.Fatalf("%d look-alikes: the agent failed, but not for the verifier's limit:\n%s", c.n, lastLines(log, 20))
		}
		t.Logf("MEASURED %d look-alike CAs ahead of the team's CA: attested=%v", c.n, ok)
	}
}

// tryPodAgent starts a pod's agent as startPodAgent does and reports
// whether it attested (became healthy) within 20 s; a failed start is an
// outcome here, not a test failure.
func (ft *formatTest) tryPodAgent(runRoot, pod string, srv *testbed.SpireServer) bool {
	ctx, cancel := context.WithTimeout(ft.ctx, 20*time.Second)
	defer cancel()
	a, err := ft.startPodAgentCtx(ctx, runRoot, pod, srv, 0)
	if err != nil {
		ft.t.Logf("agent for %s did not attest: %v", pod, lastLines(err.Error(), 5))
		return false
	}
	a.Stop()
	return true
}

// TestCityHarmControllerPrefix backs SPD404: a spire-controller-manager
// without entryIDPrefix treats every entry of the server as its own and
// deletes, on its first pass, the entry-json entries a team loaded with
// `spire-server entry create -data` (spirepod's own file here); with
// entryIDPrefix it leaves them alone.
func TestCityHarmControllerPrefix(t *testing.T) {
	t.Parallel()
	ft := newFormatTest(t, false, testbed.Bins.ControllerManagerSet)
	// ClusterStaticEntry objects are cluster-scoped: see clusterScoped.
	ft.lockClusterScoped()
	trust := ft.mergeTrustCA()
	reg := ft.mergeSpiffeID(project.FormatEntryJSON)
	want := entryIDsOf(t, []byte(reg.Content))
	for _, prefix := range []string{"", "scm."} {
		name := "prefix-" + strings.TrimSuffix(prefix, ".")
		srv := ft.startServer(name+"-server", trust, defaultAgentPathTemplate)
		file := filepath.Join(srv.Dir, "entries.json")
		writeFile(t, file, reg.Content, 0o644)
		if out, err := srv.Run(ft.ctx, "entry", "create", "-data", file); err != nil {
			t.Fatalf("entry create -data: %v\n%s", err, out)
		}
		m := ft.startControllerManager(name+"-controller", srv, testbed.ControllerManagerOptions{ClassName: helmClassName, EntryIDPrefix: strings.TrimSuffix(prefix, ".")})
		// A control object: once its entry is set, the controller has made a
		// full pass over the server's entries.
		control := "testbed-control-" + randHex(t, 3)
		w := ft.watchStatuses([]string{control})
		obj := toYAML(t, map[string]any{
			"apiVersion": "spire.spiffe.io/v1alpha1", "kind": "ClusterStaticEntry",
			"metadata": map[string]any{"name": control},
			"spec": map[string]any{"spiffeID": "spiffe://" + ft.td() + "/testbed/" + control, "parentID": ft.serverID(),
				"selectors": []string{"x509pop:subject:cn:" + control}, "className": helmClassName},
		})
		cf := filepath.Join(srv.Dir, "control.yaml")
		writeFile(t, cf, obj, 0o644)
		if out, err := ft.cluster.Kubectl(ft.ctx, "apply", "-f", cf); err != nil {
			t.Fatalf("kubectl apply: %v\n%s", err, out)
		}
		w.waitAllSet(30 * time.Second)
		var kept []string
		for _, e := range ft.entries(srv) {
			if contains(want, e.ID) {
				kept = append(kept, e.ID)
			}
		}
		switch prefix {
		case "":
			if len(kept) != 0 {
				t.Fatalf("without entryIDPrefix the controller kept %v of the team's entries %v", kept, want)
			}
			t.Logf("HARM a controller without entryIDPrefix deleted all %d entry-json entries of the team on its first pass", len(want))
		default:
			if len(kept) != len(want) {
				t.Fatalf("with entryIDPrefix %q the controller kept %v of %v", prefix, kept, want)
			}
			t.Logf("MEASURED with entryIDPrefix %q the team's %d entries stay", prefix, len(want))
		}
		m.Stop()
		srv.Stop()
		if out, err := ft.cluster.Kubectl(ft.ctx, "delete", "clusterstaticentries", "--all", "--wait"); err != nil {
			t.Fatalf("delete: %v\n%s", err, out)
		}
	}
}
