package project

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const valid = `apiVersion: spirepod/v1alpha1
kind: Project
team: payments
namespace: team-a
environment: dev
statefulSet: spire-envoy-integration
replicas: 2
serviceAccount: httpbin-client
trustDomain: spire.cityos-dev.woven-planet.tech
spireServer: spire-server.cityos-dev.woven-planet.tech:8081
city:
  repo: wp-wcm/city
  baseBranch: main
  teamPath: ns/team-a/spire-envoy-integration
  trustList:
    mode: bundle
    path: ns/spire/x509pop/bundle.pem
registration:
  format: spiffeid
  envoyUID: 101
paths:
  caCert: certs/secret/agent-x509pop.crt.pem
  caKey: certs/secret/agent-x509pop.key.pem
`

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		name, old, new, want string
	}{
		{"valid", "", "", ""},
		{"unknown key names its line", "team: payments\n", "teem: payments\n", "line 3: unknown key teem"},
		{"bad namespace", "namespace: team-a\n", "namespace: Team_A\n", `namespace "Team_A" is not a valid namespace`},
		{"pod name too long", "statefulSet: spire-envoy-integration\n", "statefulSet: " + strings.Repeat("a", 43) + "\n", "agent common name"},
		{"wrong version", "apiVersion: spirepod/v1alpha1\n", "apiVersion: spirepod/v2\n", `apiVersion is "spirepod/v2"`},
		{"bad trust list mode", "    mode: bundle\n", "    mode: zip\n", `city.trustList.mode "zip"`},
		{"bad format", "  format: spiffeid\n", "  format: yaml\n", `registration.format "yaml"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Parse([]byte(strings.Replace(valid, tc.old, tc.new, 1)))
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				if got := p.PodNames(); len(got) != 2 || got[1] != "spire-envoy-integration-1" {
					t.Fatalf("PodNames = %v", got)
				}
				if id := p.WorkloadSpiffeID(); id != "spiffe://spire.cityos-dev.woven-planet.tech/ns/team-a/sa/httpbin-client" {
					t.Fatalf("WorkloadSpiffeID = %s", id)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestMarshalRoundTrip(t *testing.T) {
	p, err := Parse([]byte(valid))
	if err != nil {
		t.Fatal(err)
	}
	out, err := p.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	q, err := Parse(out)
	if err != nil {
		t.Fatalf("re-parse: %v\n%s", err, out)
	}
	if q.Namespace != p.Namespace || q.City.TrustList != p.City.TrustList || q.Replicas != p.Replicas {
		t.Fatalf("round trip lost data: %+v", q)
	}
}

func TestFindSearchesUpward(t *testing.T) {
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, FileName), []byte(valid), 0o644); err != nil {
		t.Fatal(err)
	}
	deep := filepath.Join(root, "certs", "secret")
	if err := os.MkdirAll(deep, 0o755); err != nil {
		t.Fatal(err)
	}
	p, err := Find(deep)
	if err != nil {
		t.Fatal(err)
	}
	if p.Dir != root || p.Path(p.Paths.CACert) != filepath.Join(root, "certs/secret/agent-x509pop.crt.pem") {
		t.Fatalf("Dir %s, CA path %s", p.Dir, p.Path(p.Paths.CACert))
	}
	_, err = Find(t.TempDir())
	var nf *NotFoundError
	if !errors.As(err, &nf) || !strings.Contains(err.Error(), "or any parent directory") {
		t.Fatalf("err = %v, want NotFoundError naming the search", err)
	}
}

func TestAgentCNLimitAndNaming(t *testing.T) {
	base, err := Parse([]byte(valid))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, naming, sts, ns string
		replicas              int
		cn, alias             string // for pod 0
		ok                    bool
	}{
		// namespaced: <pod>.<ns> — 64 bytes fit, 65 do not
		{"namespaced fits", NamingNamespaced, strings.Repeat("a", 30), strings.Repeat("n", 31), 1,
			strings.Repeat("a", 30) + "-0." + strings.Repeat("n", 31), "spiffe://spire.cityos-dev.woven-planet.tech/ns/" + strings.Repeat("n", 31) + "/spire-agent-x509pop-" + strings.Repeat("a", 30) + "-0", true},
		{"namespaced 65 bytes", NamingNamespaced, strings.Repeat("a", 30), strings.Repeat("n", 31), 11, "", "", false},
		// guide: spire-agent-x509pop-<pod> — 44-byte pod names fit, 45 do not
		{"guide fits", NamingGuide, strings.Repeat("a", 42), "team-a", 10,
			"spire-agent-x509pop-" + strings.Repeat("a", 42) + "-0", "spiffe://spire.cityos-dev.woven-planet.tech/spire-agent-x509pop-" + strings.Repeat("a", 42) + "-0", true},
		{"guide 45 bytes", NamingGuide, strings.Repeat("a", 42), "team-a", 11, "", "", false},
		{"guide refuses the default StatefulSet name", NamingGuide, DefaultStatefulSet, "team-a", 1, "", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := *base
			p.Naming, p.IssuerScope, p.StatefulSet, p.Namespace, p.Replicas = tc.naming, IssuerNamespaced, tc.sts, tc.ns, tc.replicas
			err := p.Validate()
			if (err == nil) != tc.ok {
				t.Fatalf("Validate = %v, want ok=%v", err, tc.ok)
			}
			if tc.ok {
				if got := p.AgentCN(p.PodName(0)); got != tc.cn {
					t.Errorf("AgentCN = %q, want %q", got, tc.cn)
				}
				if got := p.NodeAliasID(p.PodName(0)); got != tc.alias {
					t.Errorf("NodeAliasID = %q, want %q", got, tc.alias)
				}
			}
		})
	}
}

// TestTwoDefaultTeamsShareNoName: two teams that keep every default
// (StatefulSet name, pod names) get distinct CNs, aliases, issuers, CA
// Secrets and field managers; the legacy layout shares them all.
func TestTwoDefaultTeamsShareNoName(t *testing.T) {
	base, err := Parse([]byte(valid))
	if err != nil {
		t.Fatal(err)
	}
	mk := func(ns, naming, issuer string) *Project {
		p := *base
		p.Namespace, p.Naming, p.IssuerScope = ns, naming, issuer
		return &p
	}
	for _, issuer := range []string{IssuerNamespaced, IssuerCluster} {
		a, b := mk("alpha", NamingNamespaced, issuer), mk("beta", NamingNamespaced, issuer)
		pod := a.PodName(0)
		if a.AgentCN(pod) == b.AgentCN(pod) || a.NodeAliasID(pod) == b.NodeAliasID(pod) || a.FieldManager() == b.FieldManager() {
			t.Errorf("%s: shared names: %q %q %q", issuer, a.AgentCN(pod), a.NodeAliasID(pod), a.FieldManager())
		}
		ia, ib := a.Issuer(), b.Issuer()
		if ia.String() == ib.String() || ia.Secret() == ib.Secret() {
			t.Errorf("%s: shared issuer %s or Secret %s", issuer, ia, ia.Secret())
		}
		if !strings.HasPrefix(a.NodeAliasID(pod), a.Scope()) {
			t.Errorf("alias %s outside the team's scope %s", a.NodeAliasID(pod), a.Scope())
		}
	}
	if a := mk("alpha", NamingNamespaced, IssuerNamespaced); a.Issuer().Cluster() || a.Issuer().SecretNamespace != "alpha" {
		t.Errorf("namespaced issuer %+v", a.Issuer())
	}
	la, lb := mk("alpha", "", ""), mk("beta", "", "")
	if !la.Legacy() || la.NodeAliasID("x-0") != lb.NodeAliasID("x-0") || la.Issuer() != lb.Issuer() {
		t.Errorf("legacy layout: want the guide's shared names")
	}
}

func TestProfiles(t *testing.T) {
	ps := MergeProfiles(nil)
	if ps["dev"].TrustDomain != "spire.cityos-dev.woven-planet.tech" || ps["lab"].TrustDomain != "spire.agora-lab.woven-planet.tech" {
		t.Fatalf("built-in profiles: %+v", ps)
	}
	ps = MergeProfiles(map[string]Profile{
		"lab":     {SpireServer: "other:443"},
		"staging": {TrustDomain: "example.org", SpireServer: "s.example.org:8081"},
	})
	if lab := ps["lab"]; lab.SpireServer != "other:443" || lab.TrustDomain != "spire.agora-lab.woven-planet.tech" {
		t.Fatalf("user override of lab: %+v", lab)
	}
	st, err := ps.Get("staging")
	if err != nil || st.TrustDomain != "example.org" || st.TrustList.Mode != TrustListBundle || st.TeamPathFor("t", "ns1") != "ns/ns1/spire-envoy-integration" {
		t.Fatalf("staging: %+v, %v", st, err)
	}
	if _, err := ps.Get("nope"); err == nil || !strings.Contains(err.Error(), "known: dev, lab, staging") {
		t.Fatalf("unknown profile error: %v", err)
	}
}

func TestAgentVersionSkew(t *testing.T) {
	for _, tc := range []struct {
		agent, server string
		ok, known     bool
	}{
		{"ghcr.io/spiffe/spire-agent:1.13.3", "1.13.3", true, true},
		{"ghcr.io/spiffe/spire-agent:1.12.0", "1.13.3", true, true},
		{"ghcr.io/spiffe/spire-agent:1.14.0", "1.13.3", false, true},
		{"ghcr.io/spiffe/spire-agent:1.11.0", "v1.13.3", false, true},
		{"ghcr.io/spiffe/spire-agent@sha256:" + strings.Repeat("a", 64), "1.13.3", true, false},
		{"ghcr.io/spiffe/spire-agent:1.13.3", "", true, false},
	} {
		p := &Project{Images: Images{SpireAgent: tc.agent}, SpireVersion: tc.server}
		ok, known, msg := p.AgentVersionSkew()
		if ok != tc.ok || known != tc.known {
			t.Errorf("%s vs %s: ok %v known %v (%s), want %v %v", tc.agent, tc.server, ok, known, msg, tc.ok, tc.known)
		}
	}
}

func TestCount(t *testing.T) {
	for _, c := range []struct {
		n          int
		noun, want string
	}{
		{1, "team folder", "1 team folder"}, {0, "team folder", "0 team folders"}, {2, "entry", "2 entries"},
		{3, "node alias", "3 node aliases"}, {2, "key", "2 keys"}, {1, "entry", "1 entry"},
	} {
		if got := Count(c.n, c.noun); got != c.want {
			t.Errorf("Count(%d, %q) = %q, want %q", c.n, c.noun, got, c.want)
		}
	}
}
