package rotate

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spirepod/spirepod/internal/pki"
	"github.com/spirepod/spirepod/internal/pr"
	"github.com/spirepod/spirepod/internal/project"
)

// PRs is how the rotation reaches the city repository (GitHub, or a local
// checkout): the CLI's plumbing of `spirepod pr`.
type PRs interface {
	// Open upserts the change as a pull request (or a local branch).
	Open(ctx context.Context, ch *Change) (*pr.Result, error)
	// InBase reports whether the base branch already holds the change.
	InBase(ctx context.Context, ch *Change) (bool, error)
}

// Options are the inputs of Run.
type Options struct {
	Project *project.Project
	// Emergency starts an emergency rotation (ignored when one is running).
	Emergency bool
	// Roll is RollInPlace or RollRestart; "" keeps the state's (a new
	// rotation: in-place, restart for an emergency).
	Roll string
	// Format of the alias pull requests; "" is registration.format.
	Format string
	Now    func() time.Time
	Rand   io.Reader

	PRs PRs
	// Cluster returns the team's cluster; called only when a step needs it.
	Cluster func(ctx context.Context) (Cluster, error)
	// Server is the SPIRE server the probes attest at, as the plan names
	// it; "" is the project's spireServer.
	Server string
	// Probe attests at the SPIRE server (ProbeOptions.Attest is the real
	// one); nil when it cannot be probed, and NoProbe says why.
	Probe   ProbeFunc
	NoProbe error
	// CheckWith is an agent certificate chain of the new CA (and its key)
	// to probe with instead of a leaf spirepod mints.
	CheckWith      []*x509.Certificate
	CheckWithKey   crypto.Signer
	ServerReloaded bool
	// Wait polls for merges and the server's reload instead of stopping.
	Wait bool
	// Poll is the interval of those polls (default 15 s).
	Poll time.Duration
	// Transient says an error is worth waiting through while Wait polls a
	// step that already waits (GitHub's 5xx on a merge check, the network
	// for a moment): reported, then the step is tried again at the next
	// poll. nil: every error ends the run.
	Transient func(error) bool
	// VerifyPod, when set with Wait, follows a restarted pod until its
	// agent serves the workload's SVID (spirepod verify).
	VerifyPod func(ctx context.Context, pod string) error
	// Yes deletes the old key without asking; Confirm asks (nil: cannot).
	Yes     bool
	Confirm func(question string) (bool, error)
	// Progress receives one line per action.
	Progress func(string)
}

// Report is what Run did and where the rotation stands.
type Report struct {
	Dir       string `json:"dir"`
	State     string `json:"state"` // running, waiting, done
	Emergency bool   `json:"emergency"`
	Roll      string `json:"roll"`
	Phase     int    `json:"phase"`
	Phases    int    `json:"phases"`
	PhaseName string `json:"phaseName"`
	// Next is the next step's title; Waiting what the run stopped for.
	Next    string `json:"next,omitempty"`
	Waiting string `json:"waiting,omitempty"`
	// Hint says what to do about Waiting.
	Hint string      `json:"hint,omitempty"`
	Old  CA          `json:"old"`
	New  CA          `json:"new"`
	Plan []PhaseView `json:"plan"`
	// Did lists what this run did, in order.
	Did []string `json:"did"`
	PRs []PR     `json:"pullRequests,omitempty"`
	// Pods is phase 3's progress per pod.
	Pods map[string]*Pod `json:"pods,omitempty"`
	// LoseIdentity (emergency) are the pods that have no SVID from the
	// moment the alias pull request is loaded until their agent attests
	// with a leaf of the new CA; LossWindow says when that ends.
	LoseIdentity []string `json:"loseIdentity,omitempty"`
	LossWindow   string   `json:"lossWindow,omitempty"`
	// Durations of finished phases (from the state's step times).
	Durations map[string]string `json:"durations,omitempty"`
	// MoveGap (the plan) is SPIRE's gap after each agent moves to its new
	// leaf: how long, which traffic, what shortens it.
	MoveGap *MoveGap `json:"moveGap,omitempty"`
}

// waitErr is a step that cannot finish yet: something outside (a merge, a
// reload, an answer) has to happen first.
type waitErr struct{ what, hint string }

func (w *waitErr) Error() string { return "waiting: " + w.what }

type runner struct {
	o   Options
	p   *project.Project
	s   *State
	rep *Report
	cl  Cluster
	now func() time.Time
}

// StartOptions say how a new rotation begins.
type StartOptions struct {
	Emergency bool
	Roll      string
	Format    string
	// Again begins a new rotation over a finished one's record; without
	// it a finished rotation is reported, not repeated.
	Again bool
}

// Start reads the state, or begins a rotation (fresh: true) when there is
// none, or the last one finished and o.Again. It writes nothing.
func Start(p *project.Project, o StartOptions, now time.Time) (*State, bool, error) {
	emergency, roll, format := o.Emergency, o.Roll, o.Format
	s, err := Load(p)
	if err != nil {
		return nil, false, err
	}
	if s != nil && (s.Done.IsZero() || !o.Again) {
		if err := refuseResume(s, o); err != nil {
			return nil, false, err
		}
		return s, false, nil
	}
	if next := NextFiles(p).Cert; exists(next) {
		return nil, false, &StartError{Err: fmt.Errorf("%s exists but no rotation is recorded in %s", rel(p, next), FileName),
			Hint: "move it away (or delete it) first: `spirepod pki rotate` makes the new CA there"}
	}
	cur, err := readCA(CurrentFiles(p), true)
	if err != nil {
		return nil, false, &InputError{Path: CurrentFiles(p).Cert, Err: err, Hint: "the team CA must load: `spirepod pki inspect`"}
	}
	if cur == nil {
		return nil, false, &InputError{Path: CurrentFiles(p).Cert, Err: errors.New("no team CA to rotate"), Hint: "make one with `spirepod pki gen` (there is nothing to rotate yet)"}
	}
	if cur.Key == nil {
		return nil, false, &InputError{Path: CurrentFiles(p).Key, Err: errors.New("the team CA's key is missing"), Hint: "the rotation signs probe leaves with it and the issuer needs it until phase 3: restore it"}
	}
	if roll == "" {
		roll = RollInPlace
		if emergency {
			roll = RollRestart
		}
	}
	if format == "" {
		format = p.Registration.Format
	}
	return &State{APIVersion: APIVersion, Kind: Kind, Emergency: emergency, Roll: roll, Format: format,
		Started: now.UTC(), Old: describe(cur.Cert), Steps: map[string]time.Time{}, Pods: map[string]*Pod{}, dir: p.Dir}, true, nil
}

// StartError is a rotation that cannot start or resume as asked; nothing
// was changed (exit 2).
type StartError struct {
	Err  error
	Hint string
}

func (e *StartError) Error() string { return e.Err.Error() }
func (e *StartError) Unwrap() error { return e.Err }

// refuseResume: the options that cannot apply to the recorded rotation s.
// --emergency neither restarts a finished rotation (that takes --again)
// nor turns a normal one into an emergency (its phase 4 removes the old CA
// anyway); --format cannot change once the rotation opened pull requests.
func refuseResume(s *State, o StartOptions) error {
	switch {
	case !s.Done.IsZero() && o.Emergency:
		return &StartError{Err: fmt.Errorf("--emergency: the last rotation finished on %s (%s)", s.Done.Format("2006-01-02"), FileName),
			Hint: "pass --again with --emergency to start a new rotation (the finished one's record is replaced)"}
	case !s.Done.IsZero():
		return nil
	case o.Emergency && !s.Emergency:
		return &StartError{Err: fmt.Errorf("--emergency: a normal rotation is already running (%s)", FileName),
			Hint: "finish it (`spirepod pki rotate`), or, if the old key leaked meanwhile, hurry it: its phase 4 removes the old CA"}
	case o.Format != "" && o.Format != s.Format && len(s.PRs) > 0:
		return &StartError{Err: fmt.Errorf("--format %s differs from the rotation's format %s", o.Format, s.Format),
			Hint: "drop --format: the rotation's pull requests use " + s.Format}
	}
	return nil
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

// Run runs every step that can run, in order, recording each in the state
// file as it finishes. It stops at the first step that waits for something
// outside (unless Wait), at an error, or at the end.
func Run(ctx context.Context, o Options, s *State) (*Report, error) {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Poll <= 0 {
		o.Poll = 15 * time.Second
	}
	if o.Roll != "" && o.Roll != s.Roll {
		if len(s.Pods) > 0 {
			return nil, &InputError{Path: Path(s.dir), Err: fmt.Errorf("phase 3 already moved pods with --roll %s", s.Roll), Hint: "drop --roll, or pass --roll " + s.Roll}
		}
		s.Roll = o.Roll
		if err := s.Save(); err != nil {
			return nil, fmt.Errorf("record --roll %s in %s: %w", o.Roll, Path(s.dir), err)
		}
	}
	if o.Probe != nil {
		// A server that answered once in this run and then does not is
		// restarting to reload its trust list: a wait, not a failure.
		o.Probe = NewReloadWatch(o.Probe, o.Wait).Attest
	}
	r := &runner{o: o, p: o.Project, s: s, now: o.Now, rep: &Report{Dir: o.Project.Dir}}
	defer r.fill()
	for _, ph := range phasesFor(s.Emergency) {
		for _, id := range ph.Steps {
			if s.done(id) {
				continue
			}
			if err := ctx.Err(); err != nil {
				return r.rep, err // interrupted between steps: every finished one is recorded
			}
			var waiting *waitErr // the step's last wait in this run
			for {
				detail, err := r.step(ctx, id)
				var w *waitErr
				switch {
				case errors.As(err, &w):
					if !o.Wait {
						r.rep.Waiting, r.rep.Hint = w.what, w.hint
						return r.rep, nil
					}
					r.progress("waiting: " + w.what)
					waiting = w
				case err != nil && waiting != nil && r.waitThrough(ctx, err):
					r.progress("waiting: could not check (checking again): " + err.Error())
				case err != nil:
					return r.rep, err
				}
				if err != nil {
					select {
					case <-ctx.Done():
						r.rep.Waiting, r.rep.Hint = waiting.what, waiting.hint
						return r.rep, fmt.Errorf("%s: %w", waiting.what, ctx.Err())
					case <-time.After(o.Poll):
					}
					continue
				}
				s.Steps[id] = r.now().UTC()
				if id == StepOldKeyDeleted {
					s.Done = r.now().UTC()
				}
				if err := s.Save(); err != nil {
					return r.rep, fmt.Errorf("record step %s in %s: %w", id, Path(s.dir), err)
				}
				title, _ := r.inputs().describeStep(id)
				msg := title
				if detail != "" {
					msg += ": " + detail
				}
				r.rep.Did = append(r.rep.Did, msg)
				r.progress("√ " + msg)
				break
			}
		}
	}
	return r.rep, nil
}

// waitThrough: err, met while a step waits, is one Options.Transient
// says to wait through.
func (r *runner) waitThrough(ctx context.Context, err error) bool {
	return ctx.Err() == nil && r.o.Transient != nil && r.o.Transient(err)
}

func (r *runner) progress(msg string) {
	if r.o.Progress != nil {
		r.o.Progress(msg)
	}
}

func (r *runner) inputs() planInputs {
	return inputsFor(r.p, r.s, r.serverAddr())
}

func (r *runner) serverAddr() string {
	if r.o.Server != "" {
		return r.o.Server
	}
	return r.p.SpireServer
}

func inputsFor(p *project.Project, s *State, server string) planInputs {
	in := planInputs{p: p, emergency: s.Emergency, roll: s.Roll, format: s.Format, oldFP: s.Old.SHA1, newFP: s.New.SHA1, server: server}
	in.profile = "the current CA's key type, validity and subject"
	return in
}

// fill completes the report from the state.
func (r *runner) fill() {
	fillReport(r.rep, r.p, r.s, r.serverAddr())
}

func fillReport(rep *Report, p *project.Project, s *State, server string) {
	in := inputsFor(p, s, server)
	rep.Emergency, rep.Roll, rep.Old, rep.New, rep.PRs, rep.Pods = s.Emergency, s.Roll, s.Old, s.New, s.PRs, s.Pods
	rep.Plan, rep.Phase = views(in, s)
	rep.Phases = len(rep.Plan)
	switch {
	case !s.Done.IsZero():
		rep.State, rep.Phase = "done", rep.Phases
	case rep.Waiting != "":
		rep.State = "waiting"
	default:
		rep.State = "running"
	}
	if rep.Phase > 0 {
		rep.PhaseName = rep.Plan[rep.Phase-1].Name
		steps := rep.Plan[rep.Phase-1].Steps
		for i := range steps {
			if steps[i].Status == "next" {
				rep.Next = steps[i].Title
				if rep.Waiting != "" {
					steps[i].Status, steps[i].Detail = "waiting", rep.Waiting
				}
			}
		}
	}
	if s.Emergency {
		rep.LoseIdentity = p.PodNames()
		rep.LossWindow = "from when the SPIRE server loads the alias pull request (the old aliases are gone) until each pod's agent attests with a leaf of the new CA: "
		if s.Roll == RollRestart {
			rep.LossWindow += "until the pod restarts in phase 3"
		} else {
			rep.LossWindow += "its next SVID rotation (up to half the agent SVID TTL), or a restart"
		}
	}
	rep.Durations = durations(s)
}

// durations are the wall times of finished phases, from the step times.
func durations(s *State) map[string]string {
	out := map[string]string{}
	start := s.Started
	for i, ph := range phasesFor(s.Emergency) {
		var end time.Time
		all := true
		for _, id := range ph.Steps {
			t, ok := s.Steps[id]
			if !ok {
				all = false
				break
			}
			if t.After(end) {
				end = t
			}
		}
		if !all {
			break
		}
		out[fmt.Sprintf("%d %s", i+1, ph.Name)] = end.Sub(start).Round(time.Millisecond).String()
		start = end
	}
	return out
}

// Plan is every phase and step of the rotation that Start would begin (or
// the one recorded), with what each changes. It writes nothing.
func Plan(p *project.Project, s *State, server string) *Report {
	rep := &Report{Dir: p.Dir}
	fillReport(rep, p, s, server)
	rep.MoveGap = moveGap(s.Roll)
	if s.New.SHA1 == "" {
		if cur, err := readCA(CurrentFiles(p), false); err == nil && cur != nil {
			if prof, err := ProfileOf(cur.Cert); err == nil {
				in := inputsFor(p, s, server)
				in.profile = fmt.Sprintf("%s, valid %s, subject %q (the current CA's profile)", prof.KeyType, days(prof.Validity), prof.Subject)
				rep.Plan, _ = views(in, s)
			}
		}
	}
	return rep
}

func days(d time.Duration) string {
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}

// --- the steps ---

func (r *runner) step(ctx context.Context, id string) (string, error) {
	switch id {
	case StepNewCA:
		return r.newCA(ctx)
	case StepPRTrust, StepPRAliases, StepPRRetireAliases, StepPRRetireTrust:
		return r.openPR(ctx, id)
	case StepMerged:
		return r.merged(ctx, StepPRTrust, StepPRAliases)
	case StepRetireAliasesIn:
		return r.merged(ctx, StepPRRetireAliases)
	case StepRetireTrustIn:
		return r.merged(ctx, StepPRRetireTrust)
	case StepServerTrustsNew:
		return r.serverTrustsNew(ctx)
	case StepServerDropsOld:
		return r.serverDropsOld(ctx)
	case StepFilesSwapped:
		// The cluster first: the scaffold moves only when the Secret it
		// feeds can follow (reachable, and holding this rotation's CA).
		cl, err := r.cluster(ctx)
		if err != nil {
			return "", err
		}
		if _, err := guardSecret(ctx, r.p, cl, r.s.Old.SHA1, r.s.New.SHA1); err != nil {
			return "", err
		}
		if err := swapFiles(r.p, r.s.Old.SHA1, r.s.New.SHA1); err != nil {
			return "", err
		}
		return fmt.Sprintf("%s holds the new CA", rel(r.p, CurrentFiles(r.p).Cert)), nil
	case StepSecretSwitched:
		cl, err := r.cluster(ctx)
		if err != nil {
			return "", err
		}
		out, err := switchSecret(ctx, r.p, cl, r.s.Old.SHA1, r.s.New.SHA1)
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("Secret %s %s (context %s)", r.p.Issuer().Secret(), out, cl.Name()), nil
	case StepIssuerReady:
		cl, err := r.cluster(ctx)
		if err != nil {
			return "", err
		}
		return "", cl.WaitIssuer(ctx, r.p)
	case StepCertsReissued:
		return r.reissueAll(ctx)
	case StepPods:
		return r.pods(ctx)
	case StepOldKeyDeleted:
		return r.deleteOldKey()
	}
	return "", fmt.Errorf("unknown step %s", id)
}

func (r *runner) cluster(ctx context.Context) (Cluster, error) {
	if r.cl != nil {
		return r.cl, nil
	}
	if r.o.Cluster == nil {
		return nil, ErrNoCluster
	}
	cl, err := r.o.Cluster(ctx)
	if err != nil {
		return nil, err
	}
	r.cl = cl
	return cl, nil
}

// ca finds a CA of the rotation in the scaffold by fingerprint: in the
// current, next or old files.
func (r *runner) ca(fp string, withKey bool) (*loaded, error) {
	for _, f := range []Files{CurrentFiles(r.p), NextFiles(r.p), OldFiles(r.p)} {
		l, err := readCA(f, withKey)
		if err != nil {
			return nil, err
		}
		if l != nil && pki.SHA1Fingerprint(l.Cert) == fp {
			if withKey && l.Key == nil {
				continue
			}
			return l, nil
		}
	}
	what := "certificate"
	if withKey {
		what = "certificate and key"
	}
	return nil, &InputError{Path: CurrentFiles(r.p).Cert, Err: fmt.Errorf("the %s of CA %s are in none of %s, %s, %s", what, fp,
		rel(r.p, CurrentFiles(r.p).Cert), rel(r.p, NextFiles(r.p).Cert), rel(r.p, OldFiles(r.p).Cert)),
		Hint: "restore them from the machine the rotation began on (the key never left it), then run again"}
}

func (r *runner) cas() (oldCA, newCA *x509.Certificate, err error) {
	o, err := r.ca(r.s.Old.SHA1, false)
	if err != nil {
		return nil, nil, err
	}
	n, err := r.ca(r.s.New.SHA1, false)
	if err != nil {
		return nil, nil, err
	}
	return o.Cert, n.Cert, nil
}

func (r *runner) newCA(ctx context.Context) (string, error) {
	old, err := r.ca(r.s.Old.SHA1, false)
	if err != nil {
		return "", err
	}
	// The state first: a crash after the CA is written finds it claimed.
	if err := r.s.Save(); err != nil {
		return "", err
	}
	c, err := prepare(ctx, r.p, old.Cert, r.o.Rand, r.now)
	if err != nil {
		return "", err
	}
	if pki.SHA1Fingerprint(c) == r.s.Old.SHA1 {
		return "", &InputError{Path: NextFiles(r.p).Cert, Err: errors.New("holds the current CA"), Hint: "delete it and run again"}
	}
	r.s.New = describe(c)
	return fmt.Sprintf("%s, sha1 %s, valid to %s", rel(r.p, NextFiles(r.p).Cert), r.s.New.SHA1, r.s.New.NotAfter.Format("2006-01-02")), nil
}

func (r *runner) change(id string) (*Change, error) {
	oldCA, newCA, err := r.cas()
	if err != nil {
		return nil, err
	}
	return changeFor(id, r.p, r.s, oldCA, newCA)
}

func (r *runner) openPR(ctx context.Context, id string) (string, error) {
	ch, err := r.change(id)
	if err != nil {
		return "", err
	}
	res, err := r.o.PRs.Open(ctx, ch)
	if err != nil {
		return "", err
	}
	rec := PR{Step: id, Kind: ch.Kind, Branch: ch.Branch, URL: res.URL, Number: res.Number}
	if res.URL == "" && res.Action != pr.ActionInBase {
		rec.URL = "branch " + res.Branch
	}
	r.s.setPR(rec)
	switch {
	case res.Action == pr.ActionInBase:
		return fmt.Sprintf("%s already holds it", res.Base), nil
	case res.URL != "":
		return fmt.Sprintf("%s (%s)", res.URL, res.Action), nil
	}
	return fmt.Sprintf("branch %s (%s)", res.Branch, res.Action), nil
}

func (r *runner) merged(ctx context.Context, steps ...string) (string, error) {
	var pending []string
	for _, id := range steps {
		ch, err := r.change(id)
		if err != nil {
			return "", err
		}
		ok, err := r.o.PRs.InBase(ctx, ch)
		if err != nil {
			return "", err
		}
		if !ok {
			name := ch.Branch
			if rec := r.s.pr(id); rec != nil && rec.URL != "" {
				name = rec.URL
			}
			pending = append(pending, name)
		}
	}
	if len(pending) > 0 {
		return "", &waitErr{what: "the pull request(s) to be merged: " + strings.Join(pending, ", "),
			hint: "ask the platform team to review and merge (AMA channel), then run `spirepod pki rotate` again (or with --wait)"}
	}
	return fmt.Sprintf("%s holds the change", baseOf(r.p)), nil
}

// probeWith attests with a leaf of fp's CA (minted here) or with CheckWith.
func (r *runner) probeWith(ctx context.Context, fp string, userLeaf bool) (string, error) {
	if r.o.Probe == nil {
		err := ErrNoProbe
		if r.o.NoProbe != nil {
			err = fmt.Errorf("%w: %w", ErrNoProbe, r.o.NoProbe)
		}
		return "", &InputError{Path: r.p.Path(project.FileName), Err: err,
			Hint: "set spireServer (or pass --server HOST:PORT) and the server CA bundle (`spirepod bundle set`), or confirm the reload with --server-reloaded"}
	}
	if userLeaf && len(r.o.CheckWith) > 0 {
		return r.o.Probe(ctx, r.o.CheckWith, r.o.CheckWithKey)
	}
	ca, err := r.ca(fp, true)
	if err != nil {
		return "", err
	}
	chain, key, err := ProbeLeaf(ca.Cert, ca.Key, r.p.Namespace, r.now(), r.o.Rand)
	if err != nil {
		return "", err
	}
	return r.o.Probe(ctx, chain, key)
}

func (r *runner) serverTrustsNew(ctx context.Context) (string, error) {
	if r.o.ServerReloaded {
		return "confirmed by hand (--server-reloaded)", nil
	}
	if len(r.o.CheckWith) > 0 {
		_, newCA, err := r.cas()
		if err != nil {
			return "", err
		}
		if err := r.o.CheckWith[0].CheckSignatureFrom(newCA); err != nil {
			return "", &InputError{Path: "--check-with", Err: fmt.Errorf("the certificate is not issued by the new CA %s: %v", r.s.New.SHA1, err),
				Hint: "pass an agent certificate of the new CA (or leave --check-with out: spirepod mints a probe leaf)"}
		}
	}
	id, err := r.probeWith(ctx, r.s.New.SHA1, true)
	var refused *RefusedError
	if errors.As(err, &refused) {
		return "", &waitErr{what: "the SPIRE server to trust the new CA (a probe leaf of it is refused: " + refused.Err.Error() + ")",
			hint: "ask the platform team to reload the server's x509pop trust list (restart, or SIGUSR1 with plugin_data_file), then run again"}
	}
	if w := restarting(err); w != nil {
		return "", w
	}
	if err != nil {
		return "", err
	}
	return "a leaf of the new CA attested as " + id, nil
}

// restarting is the wait for a server that stopped answering in this run
// (a *RestartingError), or nil.
func restarting(err error) *waitErr {
	var re *RestartingError
	if !errors.As(err, &re) {
		return nil
	}
	if !re.Answered {
		return &waitErr{what: fmt.Sprintf("the SPIRE server at %s to answer (not yet, for %s: restarting to reload its trust list? giving up after %s)",
			re.Unreachable.Server, re.For.Round(time.Second), re.Grace),
			hint: "run again once the SPIRE server is back"}
	}
	return &waitErr{what: "the SPIRE server at " + re.Unreachable.Server + " to answer again (it answered earlier in this run: restarting to reload its trust list?)",
		hint: "run again once the SPIRE server is back (or with --wait)"}
}

func (r *runner) serverDropsOld(ctx context.Context) (string, error) {
	if r.o.ServerReloaded {
		return "confirmed by hand (--server-reloaded)", nil
	}
	if r.s.Emergency && !r.s.done(StepServerTrustsNew) {
		return "", &waitErr{what: "the server to trust the new CA first"}
	}
	id, err := r.probeWith(ctx, r.s.Old.SHA1, false)
	var refused *RefusedError
	if errors.As(err, &refused) {
		return "a leaf of the old CA is refused: " + refused.Err.Error(), nil
	}
	if w := restarting(err); w != nil {
		return "", w
	}
	if err != nil {
		return "", err
	}
	return "", &waitErr{what: "the SPIRE server to drop the old CA (a probe leaf of it still attests as " + id + ")",
		hint: "ask the platform team to reload the server's x509pop trust list now that the trust-list pull request is merged, then run again"}
}

func (r *runner) newCert() (*x509.Certificate, error) {
	l, err := r.ca(r.s.New.SHA1, false)
	if err != nil {
		return nil, err
	}
	return l.Cert, nil
}

func (r *runner) reissueOne(ctx context.Context, cl Cluster, pod string, newCA *x509.Certificate) (*Pod, error) {
	st := r.s.pod(pod)
	if st.Leaf != "" {
		return st, nil
	}
	leaf, err := cl.Reissue(ctx, r.p, pod, newCA)
	if err != nil {
		return nil, err
	}
	st.Leaf, st.Issued = pki.SHA1Fingerprint(leaf), r.now().UTC()
	r.progress(fmt.Sprintf("%s: agent certificate re-issued by the new CA (sha1 %s)", pod, st.Leaf))
	return st, r.s.Save()
}

// clusterAndCA is what the cluster steps need: the cluster and the new CA.
func (r *runner) clusterAndCA(ctx context.Context) (Cluster, *x509.Certificate, error) {
	cl, err := r.cluster(ctx)
	if err != nil {
		return nil, nil, err
	}
	newCA, err := r.newCert()
	return cl, newCA, err
}

func (r *runner) reissueAll(ctx context.Context) (string, error) {
	cl, newCA, err := r.clusterAndCA(ctx)
	if err != nil {
		return "", err
	}
	for _, pod := range rollOrder(r.p) {
		if _, err := r.reissueOne(ctx, cl, pod, newCA); err != nil {
			return "", err
		}
	}
	return fmt.Sprintf("%d agent certificates", r.p.Replicas), nil
}

// pods moves every pod's agent to the new CA.
func (r *runner) pods(ctx context.Context) (string, error) {
	cl, newCA, err := r.clusterAndCA(ctx)
	if err != nil {
		return "", err
	}
	order := rollOrder(r.p)
	if r.s.Roll == RollRestart {
		for _, pod := range order {
			st, err := r.reissueOne(ctx, cl, pod, newCA)
			if err != nil {
				return "", err
			}
			if !st.Attested.IsZero() {
				continue
			}
			if st.Restarted.IsZero() {
				st.Restarted = r.now().UTC()
				if err := r.s.Save(); err != nil {
					return "", err
				}
			}
			r.progress(pod + ": restarting")
			if err := cl.RestartPod(ctx, r.p, pod, st.Restarted); err != nil {
				return "", err
			}
			st.How = "pod Running and Ready (the agent's health check)"
			if r.o.Wait && r.o.VerifyPod != nil {
				if err := r.o.VerifyPod(ctx, pod); err != nil {
					return "", fmt.Errorf("%s: %w", pod, err)
				}
				st.How = "spirepod verify: the curl log shows the workload's SVID"
			}
			st.Attested = r.now().UTC()
			r.progress(fmt.Sprintf("%s: back, %s", pod, st.How))
			if err := r.s.Save(); err != nil {
				return "", err
			}
		}
		return fmt.Sprintf("%s restarted: %s", project.Count(len(order), "pod"), strings.Join(order, ", ")), nil
	}
	// In place: the first pod alone (a canary), then the others together.
	groups := [][]string{order[:1], order[1:]}
	for _, g := range groups {
		for _, pod := range g {
			if _, err := r.reissueOne(ctx, cl, pod, newCA); err != nil {
				return "", err
			}
		}
		for _, pod := range g {
			st := r.s.pod(pod)
			if !st.Attested.IsZero() {
				continue
			}
			line, err := r.attested(ctx, cl, pod, st)
			if err != nil {
				return "", err
			}
			st.Attested, st.How = r.now().UTC(), "spire-agent log: "+line
			r.progress(fmt.Sprintf("%s: the agent attested with its new certificate", pod))
			if err := r.s.Save(); err != nil {
				return "", err
			}
		}
	}
	return fmt.Sprintf("%d agents attested with leaves of the new CA", len(order)), nil
}

func (r *runner) attested(ctx context.Context, cl Cluster, pod string, st *Pod) (string, error) {
	leaf, err := currentLeaf(ctx, r.p, cl, pod, st.Leaf)
	if err != nil {
		return "", err
	}
	r.progress(pod + ": waiting for its spire-agent to attest with the new certificate (at its next SVID rotation)")
	line, err := cl.WaitAttested(ctx, r.p, pod, leaf)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(line), nil
}

// currentLeaf reads the pod's agent certificate from its Secret; it must
// be the one recorded (fp).
func currentLeaf(ctx context.Context, p *project.Project, cl Cluster, pod, fp string) (*x509.Certificate, error) {
	sec, err := cl.Secret(ctx, p.Namespace, p.CertificateName(pod))
	if err != nil {
		return nil, err
	}
	certs, err := pki.ParseCertificates(sec.Data["tls.crt"])
	if err != nil {
		return nil, fmt.Errorf("Secret %s/%s: %w", p.Namespace, p.CertificateName(pod), err)
	}
	// A leaf other than fp was renewed meanwhile, by the new CA: the issuer
	// has no other now. The agent attests with whatever the Secret holds.
	_ = fp
	return certs[0], nil
}

func (r *runner) deleteOldKey() (string, error) {
	old := OldFiles(r.p)
	if _, err := os.Stat(old.Key); err == nil && !r.o.Yes {
		q := fmt.Sprintf("Delete the old CA's key %s (sha1 %s)? Nothing can use it any more", rel(r.p, old.Key), r.s.Old.SHA1)
		if r.o.Confirm == nil {
			return "", &waitErr{what: "confirmation to delete the old CA's key " + rel(r.p, old.Key),
				hint: "run `spirepod pki rotate --yes` (on the command line) to delete it"}
		}
		ok, err := r.o.Confirm(q)
		if err != nil {
			return "", err
		}
		if !ok {
			return "", &waitErr{what: "confirmation to delete the old CA's key " + rel(r.p, old.Key) + " (answered no)",
				hint: "run `spirepod pki rotate` again when you are ready (or with --yes)"}
		}
	}
	for _, f := range []string{old.Key, old.Cert} {
		if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
			return "", err
		}
	}
	return fmt.Sprintf("%s and %s deleted", rel(r.p, old.Key), rel(r.p, old.Cert)), nil
}

// Status reads the scaffold's rotation for `spirepod status`: nil when
// there is none.
func Status(p *project.Project) (*Report, error) {
	s, err := Load(p)
	if err != nil || s == nil {
		return nil, err
	}
	rep := &Report{Dir: p.Dir}
	fillReport(rep, p, s, p.SpireServer)
	return rep, nil
}
