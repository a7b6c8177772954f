package project

import (
	"fmt"
	"reflect"
	"sort"
	"strings"
)

// Profile is an environment's shared values: the Agora SPIRE deployment a
// team joins and the city repository that configures it.
type Profile struct {
	TrustDomain string `yaml:"trustDomain" json:"trustDomain"`
	SpireServer string `yaml:"spireServer" json:"spireServer"`
	CityRepo    string `yaml:"cityRepo" json:"cityRepo"`
	BaseBranch  string `yaml:"baseBranch" json:"baseBranch"`
	GitHubHost  string `yaml:"githubHost,omitempty" json:"githubHost,omitempty"`
	// TeamPath is the team folder in the city repo; "{namespace}" and "{team}" are replaced.
	TeamPath           string    `yaml:"teamPath" json:"teamPath"`
	TrustList          TrustList `yaml:"trustList" json:"trustList"`
	RegistrationFormat string    `yaml:"registrationFormat" json:"registrationFormat"`
	ClassName          string    `yaml:"className,omitempty" json:"className,omitempty"`
	// SpireVersion is the environment's SPIRE server version (the oldest one,
	// during an upgrade): the agent image's tag, since agents must not be
	// newer than the server.
	SpireVersion string `yaml:"spireVersion,omitempty" json:"spireVersion,omitempty"`
	// Images override the default images (DefaultImages) field by field.
	Images Images `yaml:"images,omitempty" json:"images,omitempty"`
}

// ProfileKeys are the keys a profile takes in the user config, from
// Profile's own fields (so the list names every key, spireVersion and
// images included).
func ProfileKeys() []string {
	var keys []string
	for k := range yamlFields(reflect.TypeOf(Profile{})) {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// DefaultEnvironment is used when --env is not given.
const DefaultEnvironment = "dev"

// profileDefaults are what every profile shares unless it says otherwise:
// the one copy of them, under the built-in profiles and under a user's new
// one.
func profileDefaults() Profile {
	return Profile{BaseBranch: DefaultBaseBranch, GitHubHost: "github.com", TeamPath: "ns/{namespace}/spire-envoy-integration",
		RegistrationFormat: FormatEntryJSON, TrustList: TrustList{Mode: TrustListBundle}}
}

// builtinProfiles are the Agora environments from the public docs. The trust
// list location is not public: mode bundle at the path below is spirepod's
// documented default, overridable per profile or in spirepod.yaml.
func builtinProfiles() map[string]Profile {
	builtin := func(env, domain string) Profile {
		return mergeProfile(profileDefaults(), Profile{
			TrustDomain:  domain,
			SpireServer:  "spire-server." + domain[len("spire."):] + ":8081",
			CityRepo:     "wp-wcm/city",
			TrustList:    TrustList{Path: "ns/spire/server/" + env + "/x509pop/agent-ca-bundle.pem"},
			SpireVersion: DefaultSpireVersion,
		})
	}
	return map[string]Profile{
		"dev": builtin("dev", "spire.cityos-dev.woven-planet.tech"),
		"lab": builtin("lab", "spire.agora-lab.woven-planet.tech"),
	}
}

// Profiles holds the built-in profiles merged with the user's.
type Profiles map[string]Profile

// MergeProfiles returns the built-in profiles plus the user's (from the
// user config's profiles: section, which the CLI reads). A user profile with
// a built-in name overrides the fields it sets; a new one starts from the
// defaults every profile shares.
func MergeProfiles(user map[string]Profile) Profiles {
	ps := Profiles(builtinProfiles())
	for name, up := range user {
		base, ok := ps[name]
		if !ok {
			base = profileDefaults()
		}
		ps[name] = mergeProfile(base, up)
	}
	return ps
}

func mergeProfile(base, over Profile) Profile {
	set := func(dst *string, v string) {
		if v != "" {
			*dst = v
		}
	}
	set(&base.TrustDomain, over.TrustDomain)
	set(&base.SpireServer, over.SpireServer)
	set(&base.CityRepo, over.CityRepo)
	set(&base.BaseBranch, over.BaseBranch)
	set(&base.GitHubHost, over.GitHubHost)
	set(&base.TeamPath, over.TeamPath)
	set(&base.TrustList.Mode, over.TrustList.Mode)
	set(&base.TrustList.Path, over.TrustList.Path)
	set(&base.RegistrationFormat, over.RegistrationFormat)
	set(&base.ClassName, over.ClassName)
	set(&base.SpireVersion, over.SpireVersion)
	set(&base.Images.GenCert, over.Images.GenCert)
	set(&base.Images.SpireAgent, over.Images.SpireAgent)
	set(&base.Images.Envoy, over.Images.Envoy)
	set(&base.Images.Curl, over.Images.Curl)
	return base
}

// Names lists the profile names, sorted.
func (ps Profiles) Names() []string {
	names := make([]string, 0, len(ps))
	for n := range ps {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Get returns the named profile or an error listing the known ones.
func (ps Profiles) Get(name string) (Profile, error) {
	p, ok := ps[name]
	if !ok {
		return Profile{}, fmt.Errorf("unknown environment %q (known: %s; define more under profiles: in the user config)",
			name, strings.Join(ps.Names(), ", "))
	}
	return p, nil
}

// PodImages are the profile's images over the defaults for its SPIRE version.
func (pr Profile) PodImages() Images { return pr.Images.merge(DefaultImages(pr.SpireVersion)) }

// TeamPathFor expands the profile's team path.
func (pr Profile) TeamPathFor(team, namespace string) string {
	return ExpandTeamPath(pr.TeamPath, team, namespace)
}

// ExpandTeamPath replaces {namespace} and {team} in a team-folder pattern:
// the one expansion of it.
func ExpandTeamPath(pattern, team, namespace string) string {
	return strings.NewReplacer("{namespace}", namespace, "{team}", team).Replace(pattern)
}
