// Package onboard holds a team's onboarding workflows as library calls:
// opening its two pull requests to the city repository (judged first by the
// city rules the platform's `city check` runs) and reading where they stand.
// `spirepod pr trust-ca`, `pr spiffe-id`, `pr status`, `status`, `pki
// rotate` and `spirepod up` all go through them.
package onboard

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/spirepod/spirepod/internal/checklist"
	"github.com/spirepod/spirepod/internal/city"
	"github.com/spirepod/spirepod/internal/pki"
	"github.com/spirepod/spirepod/internal/pr"
	"github.com/spirepod/spirepod/internal/project"
	"github.com/spirepod/spirepod/internal/registration"
	"github.com/spirepod/spirepod/internal/rotate"
)

// Where says where a team's pull requests go: a local checkout of the
// city repository (Local), or GitHub (GitHub; its Token may be empty for a
// dry run only).
type Where struct {
	Local string
	// Push pushes a local branch to origin.
	Push   bool
	GitHub pr.GitHubOptions
	// DryRun plans the change: nothing is written.
	DryRun bool
	Now    func() time.Time
}

// Base is the city's base branch.
func (w Where) Base(p *project.Project) string { return p.BaseBranch() }

// Pending are CAs whose absence from the trust list is expected while
// another pull request is open (the team's trust-ca PR, or the other half
// of a rotation): the city check's SPD105 about them is a warning that
// says why (Why), not a refusal.
type Pending struct {
	SHA1s []string
	// Label names them ("the team CA").
	Label, Why string
}

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
	return fmt.Sprintf("the city check would fail this pull request (%s); nothing was sent", project.Count(n, "error"))
}

// RotatingError refuses a hand-made trust-ca or spiffe-id pull request
// while a CA rotation runs: it would write the current CA only, dropping
// the other CA the rotation keeps trusted; the rotation opens them itself.
type RotatingError struct {
	Phase, Phases int
	PhaseName     string
	// Next is the rotation's next step.
	Next string
}

func (e *RotatingError) Error() string {
	return fmt.Sprintf("a team CA rotation is in phase %d of %d (%s, %s)", e.Phase, e.Phases, e.PhaseName, rotate.FileName)
}

// CheckNoRotation is nil unless a CA rotation is running for p: then a
// *RotatingError (or the error reading its state file).
func CheckNoRotation(p *project.Project) error {
	st, err := rotate.Load(p)
	if err != nil {
		return err
	}
	if st == nil || !st.Done.IsZero() {
		return nil
	}
	rep := rotate.Plan(p, st, p.SpireServer)
	return &RotatingError{Phase: rep.Phase, Phases: rep.Phases, PhaseName: rep.PhaseName, Next: rep.Next}
}

// Submit judges a change with the city rules on the base it is built on
// plus its own files (cfg: how the team side reads the city), refusing what
// `city check --base` would fail (but SPD105 about pending CAs), then plans
// or opens it where w says.
func Submit(ctx context.Context, ch *pr.Change, p *project.Project, w Where, cfg city.Config, pending Pending) (*pr.Result, error) {
	ch.Verify = func(ctx context.Context, base pr.BaseTree, files []pr.File) ([]string, error) {
		return judge(ctx, p, base, files, cfg, pending)
	}
	if w.Now == nil {
		w.Now = time.Now
	}
	base := w.Base(p)
	switch {
	case w.DryRun && w.Local != "":
		return pr.PlanLocal(ctx, ch, pr.LocalOptions{Dir: w.Local, Base: base, Now: w.Now})
	case w.Local != "":
		res, err := pr.OpenLocal(ctx, ch, pr.LocalOptions{Dir: w.Local, Base: base, Push: w.Push, Now: w.Now})
		if err == nil {
			// status and pr status read the branches' state from it.
			if serr := project.SaveCityCheckout(p, w.Local, w.Now()); serr != nil {
				res.Warnings = append(res.Warnings, fmt.Sprintf("could not record the city checkout for `spirepod status`: %v", serr))
			}
		}
		return res, err
	case w.DryRun && w.GitHub.Token == "":
		res, err := pr.Plan(ctx, ch, nil, base)
		if res != nil {
			res.Warnings = append([]string{"no GitHub token: the diff is against an empty base, not the real " + p.City.Repo}, res.Warnings...)
		}
		return res, err
	case w.DryRun:
		return pr.PlanGitHub(ctx, ch, w.GitHub)
	}
	return pr.Open(ctx, ch, w.GitHub)
}

// Plan plans a change where w says, unjudged: what it would change, or
// ActionInBase when the base branch holds it already.
func Plan(ctx context.Context, ch *pr.Change, p *project.Project, w Where) (*pr.Result, error) {
	if w.Now == nil {
		w.Now = time.Now
	}
	if w.Local != "" {
		return pr.PlanLocal(ctx, ch, pr.LocalOptions{Dir: w.Local, Base: w.Base(p), Now: w.Now})
	}
	return pr.PlanGitHub(ctx, ch, w.GitHub)
}

func judge(ctx context.Context, p *project.Project, base pr.BaseTree, files []pr.File, cfg city.Config, pending Pending) ([]string, error) {
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

// TrustCAOptions are the inputs of TrustCA.
type TrustCAOptions struct {
	Project *project.Project
	// CA is the team CA (never its key); Inspect its pki inspect results.
	CA      *x509.Certificate
	Inspect []checklist.Result
	Where   Where
	City    city.Config
}

// TrustCA opens (or updates, or plans) the pull request that puts the team
// CA on the trust list, under its owner comment (guide step 4).
func TrustCA(ctx context.Context, o TrustCAOptions) (*pr.Result, error) {
	p := o.Project
	if err := CheckNoRotation(p); err != nil {
		return nil, err
	}
	ch, _, err := pr.TrustCA(pr.TrustCAOptions{Project: p, CA: o.CA, Inspect: o.Inspect,
		OwnerComment: city.OwnerComment(p.Team, p.Namespace, pki.SHA1Fingerprint(o.CA))})
	if err != nil {
		return nil, err
	}
	return Submit(ctx, ch, p, o.Where, o.City, Pending{})
}

// SpiffeIDOptions are the inputs of SpiffeID.
type SpiffeIDOptions struct {
	Project *project.Project
	// CA is the team CA the node aliases are pinned to.
	CA *x509.Certificate
	// Format is a registration format ("" is registration.format).
	Format string
	Where  Where
	City   city.Config
}

// SpiffeID opens (or updates, or plans) the pull request that registers the
// team's node aliases and workload entries (guide step 5). Until the team
// CA is on the trust list, the city check's SPD105 about it is a warning.
func SpiffeID(ctx context.Context, o SpiffeIDOptions) (*pr.Result, error) {
	p := o.Project
	if err := CheckNoRotation(p); err != nil {
		return nil, err
	}
	format := o.Format
	if format == "" {
		format = p.Registration.Format
	}
	ch, _, err := pr.SpiffeID(pr.SpiffeIDOptions{Project: p, CA: o.CA, Format: format})
	if err != nil {
		return nil, err
	}
	return Submit(ctx, ch, p, o.Where, o.City, Pending{SHA1s: []string{pki.SHA1Fingerprint(o.CA)}, Label: "the team CA",
		Why: "the city check fails this pull request until the trust-ca pull request (spirepod pr trust-ca) is merged"})
}

// PullRequests reads both pull requests of the team: from a local checkout
// (w.Local: its branches), else from GitHub (w.GitHub). baseFiles are read
// at the base branch's tip when a pull request is merged (a merge is only
// as good as what the base still holds).
func PullRequests(ctx context.Context, p *project.Project, w Where, baseFiles ...string) (*pr.StatusResult, error) {
	if w.Local != "" {
		return pr.LocalStatus(ctx, p.Team, pr.LocalOptions{Dir: w.Local, Base: w.Base(p)}, baseFiles...)
	}
	if w.GitHub.Token == "" {
		return nil, ErrNoToken
	}
	return pr.Status(ctx, p.Team, w.GitHub, baseFiles...)
}

// ErrNoToken: reading the pull requests needs a GitHub token (or a local
// checkout).
var ErrNoToken = errors.New("no GitHub token")
