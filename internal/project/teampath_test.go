package project_test

import (
	"strings"
	"testing"

	"github.com/spirepod/spirepod/internal/project"
)

// TestTeamPath: the one expansion of a team-folder pattern and its one
// reverse agree: spirepod.yaml records the expanded folder, and the city's
// rules get back the profile's pattern, or the folder with the namespace as
// {namespace} when the profile's pattern expands elsewhere.
func TestTeamPath(t *testing.T) {
	prof := project.Profile{TeamPath: "teams/{team}/ns/{namespace}/spire"}
	for _, tc := range []struct {
		name, recorded, wantDir, wantPattern string
		prof                                 *project.Profile
	}{
		{"profile pattern", prof.TeamPathFor("pay", "payments"), "teams/pay/ns/payments/spire", prof.TeamPath, &prof},
		{"pattern recorded as is", "ns/{namespace}/sei", "ns/payments/sei", "ns/{namespace}/sei", &prof},
		{"moved folder", "clusters/a/payments/sei", "clusters/a/payments/sei", "clusters/a/{namespace}/sei", &prof},
		{"no profile", "ns/payments/sei/", "ns/payments/sei/", "ns/{namespace}/sei", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := &project.Project{Team: "pay", Namespace: "payments"}
			p.City.TeamPath = tc.recorded
			if got := p.CityTeamDir(); got != tc.wantDir {
				t.Errorf("CityTeamDir = %q, want %q", got, tc.wantDir)
			}
			if got := p.TeamPathPattern(tc.prof); got != tc.wantPattern {
				t.Errorf("TeamPathPattern = %q, want %q", got, tc.wantPattern)
			}
			if got := project.ExpandTeamPath(p.TeamPathPattern(tc.prof), p.Team, p.Namespace); got != strings.TrimSuffix(tc.wantDir, "/") {
				t.Errorf("the pattern expands to %q, not the team's folder %q", got, tc.wantDir)
			}
		})
	}
}
