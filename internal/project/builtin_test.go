package project_test

import (
	"testing"

	"github.com/spirepod/spirepod/internal/project"
)

// TestBuiltinProfiles pins the built-in environments field by field (they
// are built from the shared defaults, which a user's new profile also starts
// from).
func TestBuiltinProfiles(t *testing.T) {
	ps := project.MergeProfiles(map[string]project.Profile{"mine": {TrustDomain: "example.org"}})
	want := map[string]project.Profile{
		"dev": {TrustDomain: "spire.cityos-dev.woven-planet.tech", SpireServer: "spire-server.cityos-dev.woven-planet.tech:8081",
			CityRepo: "wp-wcm/city", BaseBranch: project.DefaultBaseBranch, GitHubHost: "github.com",
			TeamPath:           "ns/{namespace}/spire-envoy-integration",
			TrustList:          project.TrustList{Mode: project.TrustListBundle, Path: "ns/spire/server/dev/x509pop/agent-ca-bundle.pem"},
			RegistrationFormat: project.FormatEntryJSON, SpireVersion: project.DefaultSpireVersion},
		"lab": {TrustDomain: "spire.agora-lab.woven-planet.tech", SpireServer: "spire-server.agora-lab.woven-planet.tech:8081",
			CityRepo: "wp-wcm/city", BaseBranch: project.DefaultBaseBranch, GitHubHost: "github.com",
			TeamPath:           "ns/{namespace}/spire-envoy-integration",
			TrustList:          project.TrustList{Mode: project.TrustListBundle, Path: "ns/spire/server/lab/x509pop/agent-ca-bundle.pem"},
			RegistrationFormat: project.FormatEntryJSON, SpireVersion: project.DefaultSpireVersion},
		"mine": {TrustDomain: "example.org", BaseBranch: project.DefaultBaseBranch, GitHubHost: "github.com",
			TeamPath: "ns/{namespace}/spire-envoy-integration", TrustList: project.TrustList{Mode: project.TrustListBundle},
			RegistrationFormat: project.FormatEntryJSON},
	}
	for name, w := range want {
		got, err := ps.Get(name)
		if err != nil {
			t.Fatal(err)
		}
		if got != w {
			t.Errorf("profile %s:\n got %+v\nwant %+v", name, got, w)
		}
	}
}
