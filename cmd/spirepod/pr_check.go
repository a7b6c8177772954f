package main

import (
	"context"
	"fmt"
	"path"
	"strings"

	"github.com/spirepod/spirepod/internal/city"
	"github.com/spirepod/spirepod/internal/pr"
	"github.com/spirepod/spirepod/internal/project"
	"github.com/spirepod/spirepod/internal/registration"
)

// CityCheckError refuses a pull request the platform's `city check` would
// fail: its findings name the files and lines (another team's too).
type CityCheckError struct{ Findings []registration.Finding }

func (e *CityCheckError) Error() string {
	n := 0
	for _, f := range e.Findings {
		if f.Severity == registration.SeverityError {
			n++
		}
	}
	return fmt.Sprintf("the city check would fail this pull request (%d error(s)); nothing was sent", n)
}

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

// verifyWithCity makes a change run the city rules on the base it is built
// on plus its own files, and refuse what `city check --base` would fail.
// ownCA is the team CA's SHA-1 when the change pins aliases to it: that CA
// not being on the trust list yet is the normal state while the trust-ca
// pull request is open, so it is a warning (the city check fails the PR
// until that one merges), not a refusal.
func (c *prCommon) verifyWithCity(ch *pr.Change, p *project.Project, ownCA string) {
	light := c.Local == "" // over the GitHub API: only spiffe-ids.* files are read
	cfg := cityConfig(c.f, p, light)
	ch.Verify = func(ctx context.Context, base pr.BaseTree, files []pr.File) ([]string, error) {
		written := map[string][]byte{}
		var deleted []string
		for _, fl := range files {
			if fl.Delete {
				deleted = append(deleted, fl.Path)
			} else {
				written[fl.Path] = fl.New
			}
		}
		fs, err := city.CheckOverlay(ctx, base, cfg, written, deleted)
		if err != nil {
			return nil, fmt.Errorf("check the change against the city: %w", err)
		}
		var bad []registration.Finding
		pending := false
		for i, fd := range fs {
			if ownCA != "" && fd.Code == city.CodePinNotTrusted && strings.Contains(fd.Message, ownCA) {
				fs[i].Severity, pending = registration.SeverityWarning, true
				continue
			}
			if fd.Severity == registration.SeverityError {
				bad = append(bad, fd)
			}
		}
		var warnings []string
		if pending {
			warnings = append(warnings, fmt.Sprintf("the team CA (%s) is not on the trust list %s yet: the city check fails this pull request until the trust-ca pull request (spirepod pr trust-ca) is merged", ownCA, p.City.TrustList.Path))
		}
		if len(bad) > 0 {
			return nil, &CityCheckError{Findings: fs}
		}
		return warnings, nil
	}
}

// cityCheckHint lists the findings, one per line, for the error's hint.
func cityCheckHint(e *CityCheckError) string {
	var b strings.Builder
	for _, f := range e.Findings {
		b.WriteString("\n  " + f.String())
	}
	return b.String()
}
