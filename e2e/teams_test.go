package e2e_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/utils/ptr"

	"github.com/spirepod/spirepod/internal/certmanager"
	"github.com/spirepod/spirepod/internal/project"
	"github.com/spirepod/spirepod/internal/testbed"
)

// member is one team of the many-teams proof.
type member struct {
	name, dir string
	p         *project.Project
	ca        *x509Cert
}

// TestE2EManyTeams is issue 11's proof on the real components: two teams
// that keep every default (same StatefulSet, same pod names) share one
// cluster and one SPIRE server that trusts both CAs. Both apply; each pod's
// certificate comes from its own team's issuer; each agent receives exactly
// its own team's SVID, over more than two entry-cache periods; a Certificate
// for one team's CN asked from another namespace is never issued; a third
// team that registers the first team's alias ID by hand is caught by the
// first team's `pr spiffe-id`; and SPIREPOD_YES cannot pass the protected
// context guard.
func TestE2EManyTeams(t *testing.T) {
	t.Parallel()
	c := newChain(t, "spteams-", 5*time.Minute, testbed.Bins.KubeSet, testbed.Bins.SpireSet)
	root, b := c.root, c.bins
	kube := []string{"--kubeconfig", c.cluster.Kubeconfig, "--context", c.cluster.Context}
	suffix := randHex(t, 3)

	// Two teams, all defaults but their names.
	upCert, upKey := c.upstreamCA()
	var teams []*member
	for _, name := range []string{"alpha-" + suffix, "beta-" + suffix} {
		m := &member{name: name, dir: filepath.Join(root, name)}
		c.run(root, "init", "--team", name, "--namespace", name, m.dir)
		c.run(m.dir, "pki", "gen")
		c.run(m.dir, "bundle", "set", upCert)
		m.p = loadProject(t, m.dir)
		m.ca = readCert(t, m.p.Path(m.p.Paths.CACert))
		c.merge(c.run(m.dir, "pr", "trust-ca"))
		teams = append(teams, m)
	}
	alpha, beta := teams[0], teams[1]
	if alpha.p.StatefulSet != beta.p.StatefulSet || alpha.p.PodName(0) != beta.p.PodName(0) {
		t.Fatalf("the teams should share the default pod names: %s vs %s", alpha.p.PodName(0), beta.p.PodName(0))
	}
	pod := alpha.p.PodName(0)

	t.Run("a hand-written registration of another team's alias is caught by pr spiffe-id", func(t *testing.T) {
		c := c.with(t)
		// A third team's folder registers alpha's alias ID, pinned to its own CA.
		gammaFolder := "ns/gamma-" + suffix + "/spire-envoy-integration/"
		hostile := fmt.Sprintf(`{
  "entries": [
    {
      "spiffe_id": %q,
      "parent_id": "spiffe://%s/spire/server",
      "selectors": [{"type": "x509pop", "value": "subject:cn:%s"}, {"type": "x509pop", "value": "ca:fingerprint:%s"}]
    }
  ]
}
`, alpha.p.NodeAliasID(pod), alpha.p.TrustDomain, "evil-0.gamma-"+suffix, strings.Repeat("e", 40))
		if _, err := c.gh.Commit(cityRepo, "main", map[string]string{gammaFolder + "spiffe-ids.json": hostile}, "gamma: hand-written entries"); err != nil {
			t.Fatal(err)
		}
		c.gh.ResetRequests()
		out, errOut, code := c.exec(alpha.dir, "pr", "spiffe-id")
		if code != 1 || !strings.Contains(errOut, "SPD101") || !strings.Contains(errOut, gammaFolder+"spiffe-ids.json:3") {
			t.Fatalf("pr spiffe-id with alpha's alias taken: exit %d, want 1 naming SPD101 and %sspiffe-ids.json:3\n%s%s", code, gammaFolder, out, errOut)
		}
		for _, r := range c.gh.RequestLog() {
			if !strings.HasPrefix(r, "GET ") && !strings.Contains(r, "graphql") {
				t.Fatalf("refused, but sent %s", r)
			}
		}
		t.Logf("refused in %d requests: %s", c.gh.Requests(), firstLines(errOut, 3))
		// The platform reverts the hostile file; alpha's PR goes through.
		if _, err := c.gh.Commit(cityRepo, "main", map[string]string{gammaFolder + "spiffe-ids.json": ""}, "revert gamma"); err != nil {
			t.Fatal(err)
		}
	})

	for _, m := range teams {
		c.merge(c.run(m.dir, "pr", "spiffe-id"))
		c.run(m.dir, append([]string{"apply", "--create-namespace", "--timeout", "2m"}, kube...)...)
		c.checkIssuerReady(m.p, m.ca)
	}

	t.Run("each pod's certificate comes from its own team's issuer", func(t *testing.T) {
		c := c.with(t)
		for _, m := range teams {
			cm, err := c.cluster.Client.CoreV1().ConfigMaps(m.p.Namespace).Get(c.ctx, "init-gen-cert", metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			c.genCert(m.p, pod, m.p.Namespace, cm, filepath.Join(root, m.name, "pod", "run", "spire", "agent-certs"), m.ca)
			cert, err := c.cluster.Dynamic.Resource(certmanager.CertificateGVR).Namespace(m.p.Namespace).Get(c.ctx, m.p.CertificateName(pod), metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			kind, _, _ := unstructured.NestedString(cert.Object, "spec", "issuerRef", "kind")
			name, _, _ := unstructured.NestedString(cert.Object, "spec", "issuerRef", "name")
			if ref := m.p.Issuer(); kind != ref.Kind || name != ref.Name || cert.GetNamespace() != ref.Namespace {
				t.Errorf("%s: Certificate asks %s %s in %s, want %s", m.name, kind, name, cert.GetNamespace(), ref)
			}
		}
	})

	t.Run("a Certificate for another team's CN from another namespace is not issued", func(t *testing.T) {
		c := c.with(t)
		evilNS := "gamma-" + suffix
		if err := c.cluster.CreateNamespace(c.ctx, evilNS); err != nil {
			t.Fatal(err)
		}
		for _, kind := range []string{certmanager.KindIssuer, certmanager.KindClusterIssuer} {
			name := "stolen-" + strings.ToLower(kind)
			obj := &unstructured.Unstructured{Object: map[string]any{
				"apiVersion": "cert-manager.io/v1", "kind": "Certificate",
				"metadata": map[string]any{"name": name, "namespace": evilNS},
				"spec": map[string]any{"secretName": name, "commonName": alpha.p.AgentCN(pod),
					"usages":    []any{"digital signature", "client auth"},
					"issuerRef": map[string]any{"group": "cert-manager.io", "kind": kind, "name": alpha.p.Issuer().Name}},
			}}
			if _, err := c.cluster.Dynamic.Resource(certmanager.CertificateGVR).Namespace(evilNS).Create(c.ctx, obj, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			// cert-manager's verdict, not a timer: the request names the missing issuer.
			msg := waitIssuerNotFound(t, c, evilNS, kind)
			if _, err := c.cluster.Client.CoreV1().Secrets(evilNS).Get(c.ctx, name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
				t.Fatalf("%s: a Secret %s/%s exists (err %v)", kind, evilNS, name, err)
			}
			t.Logf("%s: not issued: %s", kind, msg)
		}
	})

	// One SPIRE server trusts both CAs (the merged trust list) and loads both
	// teams' merged entries.
	files, err := c.gh.Files(cityRepo, "main")
	if err != nil {
		t.Fatal(err)
	}
	sdir := filepath.Join(root, "server")
	if err := os.MkdirAll(sdir, 0o700); err != nil {
		t.Fatal(err)
	}
	trustList := filepath.Join(sdir, "trust.pem")
	writeFile(t, trustList, files[alpha.p.City.TrustList.Path], 0o644)
	if fps := fingerprints(t, []byte(files[alpha.p.City.TrustList.Path])); len(fps) != 2 {
		t.Fatalf("trust list holds %d CAs, want both teams'", len(fps))
	}
	srv, err := testbed.StartSpireServer(c.ctx, b, sdir, testbed.SpireServerConfig{TrustDomain: alpha.p.TrustDomain, CABundlePath: trustList,
		AgentPathTemplate: defaultAgentPathTemplate, UpstreamCACert: upCert, UpstreamCAKey: upKey})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	for _, m := range teams {
		ef := filepath.Join(sdir, m.name+".json")
		writeFile(t, ef, files[strings.NewReplacer("{namespace}", m.p.Namespace, "{team}", m.p.Team).Replace(m.p.City.TeamPath)+"/spiffe-ids.json"], 0o644)
		if out, err := srv.Run(c.ctx, "entry", "create", "-data", ef); err != nil {
			t.Fatalf("entry create %s: %v\n%s", m.name, err, out)
		}
	}

	t.Run("each agent receives exactly its own team's SVID", func(t *testing.T) {
		c := c.with(t)
		sockets := map[string]string{}
		for _, m := range teams {
			bundle, err := os.ReadFile(srv.BundlePath)
			if err != nil {
				t.Fatal(err)
			}
			tok, err := c.cluster.Client.CoreV1().ServiceAccounts(m.p.Namespace).CreateToken(c.ctx, m.p.ServiceAccount,
				&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](3600)}}, metav1.CreateOptions{})
			if err != nil {
				t.Fatal(err)
			}
			c.saToken = tok.Status.Token
			conf := configMapKey(t, filepath.Join(m.dir, "spire-agent-configmap.yaml"), "agent.conf")
			a := c.startAgent(m.name, conf, filepath.Join(root, m.name, "pod"), srv, string(bundle))
			sockets[m.name] = a.Socket
			c.fetchSVID(a.Socket, filepath.Join(root, m.name, "first-svid"), syncBound)
		}
		// Over more than two entry-cache periods (5 s each), every fetch from
		// each agent returns exactly one SVID: its own team's.
		start, fetches := time.Now(), 0
		for time.Since(start) < absenceWindow {
			for _, m := range teams {
				dir := filepath.Join(root, m.name, fmt.Sprintf("svid-%d", fetches))
				if err := os.MkdirAll(dir, 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.Chown(dir, envoyUID, envoyUID); err != nil {
					t.Fatal(err)
				}
				if out, err := c.fetchOnce(sockets[m.name], dir); err != nil {
					t.Fatalf("%s: fetch: %v\n%s", m.name, err, out)
				}
				got, _ := filepath.Glob(filepath.Join(dir, "svid.*.pem"))
				if len(got) != 1 {
					t.Fatalf("%s's agent handed out %d SVIDs after %v, want exactly 1", m.name, len(got), time.Since(start).Round(time.Millisecond))
				}
				if uri := svidURI(t, got[0]); uri != m.p.WorkloadSpiffeID() {
					t.Fatalf("%s's agent handed out %s, want %s", m.name, uri, m.p.WorkloadSpiffeID())
				}
			}
			fetches++
			time.Sleep(500 * time.Millisecond) // the fetch loop's pace, not a synchronisation
		}
		t.Logf("%d fetches per agent over %v: each agent only ever held its own team's SVID", fetches, absenceWindow)
	})

	t.Run("SPIREPOD_YES does not pass the protected context guard", func(t *testing.T) {
		c := c.with(t)
		if err := c.cluster.AddContext("PROD-eu"); err != nil {
			t.Fatal(err)
		}
		c.env = append(append([]string{}, c.env...), "SPIREPOD_YES=true")
		out, errOut, code := c.exec(alpha.dir, "apply", "--kubeconfig", c.cluster.Kubeconfig, "--context", "PROD-eu")
		if code != 2 || !strings.Contains(errOut, "protected pattern") || !strings.Contains(errOut, "SPIREPOD_YES is ignored") {
			t.Fatalf("SPIREPOD_YES=true apply --context PROD-eu: exit %d, want 2 at the guard\n%s%s", code, out, errOut)
		}
	})
}

// merge merges the pull request a `spirepod pr` printed.
func (c *chain) merge(url string) {
	c.t.Helper()
	if _, err := c.gh.Merge(cityRepo, prNumber(c.t, url)); err != nil {
		c.t.Fatalf("merge %s: %v", url, err)
	}
}

// waitIssuerNotFound watches the CertificateRequests of ns until cert-manager
// says the referenced issuer kind was not found, and returns its message.
func waitIssuerNotFound(t *testing.T, c *chain, ns, kind string) string {
	t.Helper()
	gvr := certmanager.CertificateGVR
	gvr.Resource = "certificaterequests"
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		list, err := c.cluster.Dynamic.Resource(gvr).Namespace(ns).List(c.ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, cr := range list.Items {
			k, _, _ := unstructured.NestedString(cr.Object, "spec", "issuerRef", "kind")
			if k != kind {
				continue
			}
			ready, reason, msg := certmanager.ReadyCondition(&cr)
			if ready {
				t.Fatalf("CertificateRequest %s is Ready: another namespace got a certificate", cr.GetName())
			}
			if reason == "Pending" && strings.Contains(msg, "not found") {
				return msg
			}
		}
		time.Sleep(200 * time.Millisecond) // polling the API for cert-manager's verdict
	}
	t.Fatalf("cert-manager never reported the %s as not found in %s", kind, ns)
	return ""
}
