package main

import (
	"context"
	"fmt"
	"path"
	"slices"
	"strings"

	"github.com/spirepod/spirepod/internal/city"
	"github.com/spirepod/spirepod/internal/pr"
	"github.com/spirepod/spirepod/internal/project"
	"github.com/spirepod/spirepod/internal/registration"
	"github.com/spirepod/spirepod/internal/rotate"
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

// pendingCAs are CAs whose absence from the trust list is the expected
// state while another pull request (the team's trust-ca, or a rotation's
// other half) is open: SPD105 about them is a warning that says why, not a
// refusal.
type pendingCAs struct {
	SHA1s []string
	// Label names them ("the team CA"), Why says when it resolves.
	Label, Why string
}

// verifyWithCity makes a change run the city rules on the base it is built
// on plus its own files, and refuse what `city check --base` would fail,
// except SPD105 about the pending CAs.
func (c *prCommon) verifyWithCity(ch *pr.Change, p *project.Project, pending pendingCAs) {
	cfg := cityConfig(c.f, p, c.Local == "") // over the GitHub API: only spiffe-ids.* files are read
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
		bad := false
		var waiting []string
		for i, fd := range fs {
			if fd.Code == city.CodePinNotTrusted && slices.Contains(pending.SHA1s, fd.CA) {
				fs[i].Severity = registration.SeverityWarning
				if !slices.Contains(waiting, fd.CA) {
					waiting = append(waiting, fd.CA)
				}
				continue
			}
			bad = bad || fd.Severity == registration.SeverityError
		}
		if bad {
			return nil, &CityCheckError{Findings: fs}
		}
		var warnings []string
		for _, fp := range waiting {
			warnings = append(warnings, fmt.Sprintf("%s (%s) is not on the trust list %s yet: %s", pending.Label, fp, p.City.TrustList.Path, pending.Why))
		}
		return warnings, nil
	}
}

// checkNoRotation refuses a hand-run pr trust-ca or pr spiffe-id while a CA
// rotation is under way: they would write the current CA only, dropping the
// other CA the rotation keeps trusted (its aliases, its trust-list block)
// before its agents moved. The rotation opens these pull requests itself.
func checkNoRotation(p *project.Project, cmd string) error {
	st, err := rotate.Load(p)
	if err != nil {
		return usageError("fix or remove "+rotate.FileName+" (`spirepod pki rotate --plan` reads it)", "%v", err)
	}
	if st == nil || !st.Done.IsZero() {
		return nil
	}
	rep := rotate.Plan(p, st, p.SpireServer)
	next := ""
	if rep.Next != "" {
		next = "; next: " + rep.Next
	}
	return usageError("continue the rotation with `spirepod pki rotate` (it opens this pull request with both CAs while they overlap"+next+"); nothing was sent",
		"a team CA rotation is in phase %d of %d (%s, %s): `%s` now would drop the CA the rotation keeps trusted", rep.Phase, rep.Phases, rep.PhaseName, rotate.FileName, cmd)
}

// cityCheckHint lists the findings, one per line, for the error's hint.
func cityCheckHint(e *CityCheckError) string {
	var b strings.Builder
	for _, f := range e.Findings {
		b.WriteString("\n  " + f.String())
	}
	return b.String()
}
