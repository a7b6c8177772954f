package main

import (
	"strings"

	"github.com/spirepod/spirepod/internal/city"
	"github.com/spirepod/spirepod/internal/onboard"
	"github.com/spirepod/spirepod/internal/project"
)

// cityConfig is how the team side reads the city: the environment's trust
// domain, team-folder pattern and trust list, as `city check` does.
func cityConfig(f *Factory, p *project.Project, light bool) city.Config {
	pattern := teamPathPattern(f, p)
	return city.Config{TrustDomain: p.TrustDomain, TeamPath: pattern, TrustList: p.City.TrustList,
		Classless: p.Registration.WatchClassless, Now: f.Now(), Light: light}
}

// teamPathPattern is the team-folder pattern of the project's environment
// profile (Project.TeamPathPattern).
func teamPathPattern(f *Factory, p *project.Project) string {
	prof, err := f.Profiles().Get(p.Environment)
	if err != nil {
		return p.TeamPathPattern(nil)
	}
	return p.TeamPathPattern(&prof)
}

// cityCheckHint lists the findings, one per line, for the error's hint.
func cityCheckHint(e *onboard.CityCheckError) string {
	var b strings.Builder
	for _, f := range e.Findings {
		b.WriteString("\n  " + f.String())
	}
	return b.String()
}
