package main

import (
	"path"
	"strings"

	"github.com/spirepod/spirepod/internal/city"
	"github.com/spirepod/spirepod/internal/onboard"
	"github.com/spirepod/spirepod/internal/pr"
	"github.com/spirepod/spirepod/internal/project"
)

// cityConfig is how the team side reads the city: the environment's trust
// domain, team-folder pattern and trust list, as `city check` does.
func cityConfig(f *Factory, p *project.Project, light bool) city.Config {
	pattern := teamPathPattern(f, p)
	return city.Config{TrustDomain: p.TrustDomain, TeamPath: pattern, TrustList: p.City.TrustList,
		Classless: p.Registration.WatchClassless, Now: f.Now(), Light: light}
}

// teamPathPattern is the environment profile's team-folder pattern; when the
// profile does not give one, the project's folder with its namespace as
// {namespace}.
func teamPathPattern(f *Factory, p *project.Project) string {
	if prof, err := f.Profiles().Get(p.Environment); err == nil && prof.TeamPathFor(p.Team, p.Namespace) == pr.TeamPath(p) {
		return prof.TeamPath
	}
	parts := strings.Split(pr.TeamPath(p), "/")
	for i, s := range parts {
		if s == p.Namespace {
			parts[i] = "{namespace}"
		}
	}
	return path.Join(parts...)
}

// cityCheckHint lists the findings, one per line, for the error's hint.
func cityCheckHint(e *onboard.CityCheckError) string {
	var b strings.Builder
	for _, f := range e.Findings {
		b.WriteString("\n  " + f.String())
	}
	return b.String()
}
