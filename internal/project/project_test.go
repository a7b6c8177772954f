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

func TestCheckStatefulSetCNLimit(t *testing.T) {
	// spire-agent-x509pop- is 20 bytes: pod names may have 44.
	if err := CheckStatefulSet(strings.Repeat("a", 42), 10); err != nil { // last pod "<42>-9" = 44 bytes
		t.Fatalf("44-byte pod name refused: %v", err)
	}
	if err := CheckStatefulSet(strings.Repeat("a", 42), 11); err == nil { // "<42>-10" = 45 bytes
		t.Fatal("45-byte pod name accepted")
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
