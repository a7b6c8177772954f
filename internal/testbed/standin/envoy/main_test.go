package main

import (
	"os"
	"path/filepath"
	"testing"

	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"sigs.k8s.io/yaml"
)

func TestParseArgs(t *testing.T) {
	for _, tc := range []struct {
		name       string
		args       []string
		cfg, level string
		err        bool
	}{
		{"scaffold", []string{"-c", "/etc/envoy/envoy.yaml", "-l", "info"}, "/etc/envoy/envoy.yaml", "info", false},
		{"long forms", []string{"--config-path=/e.yaml", "--log-level", "debug"}, "/e.yaml", "debug", false},
		{"ignored flags with values", []string{"--service-cluster", "x", "-c", "/e.yaml", "--concurrency", "2", "--disable-hot-restart"}, "/e.yaml", "info", false},
		{"no config", []string{"-l", "info"}, "", "info", true},
		{"missing value", []string{"-c"}, "", "info", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, level, err := parseArgs(tc.args)
			if (err != nil) != tc.err || cfg != tc.cfg || level != tc.level {
				t.Fatalf("parseArgs(%q) = %q, %q, %v; want %q, %q, error %v", tc.args, cfg, level, err, tc.cfg, tc.level, tc.err)
			}
		})
	}
}

func TestStringMatch(t *testing.T) {
	prefix := &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: "spiffe://td/"}}
	exact := &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "spiffe://td/ns/a/sa/b"}}
	regex := &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: `spiffe://td/ns/[^/]+/sa/b`}}}
	for _, tc := range []struct {
		name string
		m    *matcherv3.StringMatcher
		s    string
		want bool
	}{
		{"prefix match", prefix, "spiffe://td/ns/a/sa/b", true},
		{"prefix other trust domain", prefix, "spiffe://td2/ns/a/sa/b", false},
		{"exact match", exact, "spiffe://td/ns/a/sa/b", true},
		{"exact longer", exact, "spiffe://td/ns/a/sa/bc", false},
		{"regex is anchored", regex, "spiffe://td/ns/x/sa/b/extra", false},
		{"regex match", regex, "spiffe://td/ns/x/sa/b", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := stringMatch(tc.m, tc.s); got != tc.want {
				t.Fatalf("stringMatch(%v, %q) = %v", tc.m, tc.s, got)
			}
		})
	}
}

// TestScaffoldBootstrap: the stand-in takes the scaffold's own bootstrap and
// subscribes to exactly the SDS names it lists, on the SDS cluster's pipe.
func TestScaffoldBootstrap(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("..", "..", "..", "..", "embed", "templates", "spire-envoy-integration", "envoy-configmap.yaml"))
	if err != nil {
		t.Skipf("scaffold template not found: %v", err)
	}
	var cm struct {
		Data map[string]string `json:"data"`
	}
	if err := yaml.Unmarshal(raw, &cm); err != nil {
		t.Fatal(err)
	}
	bs, err := loadBootstrap([]byte(cm.Data["envoy.yaml"]))
	if err != nil {
		t.Fatalf("the stand-in refuses the scaffold's bootstrap: %v", err)
	}
	p, err := planFrom(bs)
	if err != nil {
		t.Fatalf("the stand-in cannot plan the scaffold's bootstrap: %v", err)
	}
	if p.admin == "" || len(p.listeners) == 0 {
		t.Fatalf("no admin or listener: %+v", p)
	}
	var want []string
	var pipe string
	for _, cl := range bs.GetStaticResources().GetClusters() {
		for _, ep := range cl.GetLoadAssignment().GetEndpoints() {
			for _, lb := range ep.GetLbEndpoints() {
				if pp := lb.GetEndpoint().GetAddress().GetPipe(); pp != nil {
					pipe = pp.GetPath()
				}
			}
		}
		if tp := p.clusters[cl.GetName()].tls; tp != nil {
			want = append(want, tp.certNames...)
			want = append(want, tp.validationName)
			if tp.static == nil || len(tp.static.GetMatchTypedSubjectAltNames()) == 0 {
				t.Errorf("cluster %s: the SAN matchers of the default validation context were not kept", cl.GetName())
			}
		}
	}
	if len(p.sds) != len(want) || len(want) < 2 {
		t.Fatalf("SDS subscriptions %+v, want one per name %q", p.sds, want)
	}
	for i, s := range p.sds {
		if s.name != want[i] || s.pipe != pipe || s.cluster == "" {
			t.Errorf("subscription %d: %+v, want name %q on pipe %q", i, s, want[i], pipe)
		}
	}
}
