package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/spirepod/spirepod/internal/apply"
	"github.com/spirepod/spirepod/internal/checklist"
	"github.com/spirepod/spirepod/internal/onboard"
	"github.com/spirepod/spirepod/internal/pki"
	"github.com/spirepod/spirepod/internal/pr"
	"github.com/spirepod/spirepod/internal/project"
	"github.com/spirepod/spirepod/internal/retry"
	"github.com/spirepod/spirepod/internal/rotate"
	"github.com/spirepod/spirepod/internal/scaffold"
	"github.com/spirepod/spirepod/internal/status"
	"github.com/spirepod/spirepod/internal/up"
	"github.com/spirepod/spirepod/internal/verify"
	"github.com/spirepod/spirepod/scaffoldfs"
)

// exitWaiting is `up --no-wait` stopping at a step that waits on someone:
// not a failure (sysexits' EX_TEMPFAIL: try again later).
const exitWaiting = 75

type upOptions struct {
	f    *Factory
	kube *kubeFlags

	Dir, Team, Namespace, Env, ServerCA string
	Upstream                            project.Upstream
	Local                               string
	Push                                bool
	NoWait                              bool
	ServerReloaded                      bool
	Server                              string
	Poll                                time.Duration
	Timeout                             time.Duration
	CreateNamespace, Yes                bool
}

func newCmdUp(f *Factory, runF func(*upOptions) error) *cobra.Command {
	opts := &upOptions{f: f, kube: newKubeFlags()}
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Take the team from wherever it is to a verified SPIFFE identity: every step, resumable",
		Long: reflow(`Run the guide's steps in order, each skipped when its result is already in place, read from
the world every time (the scaffold, the team CA, the city's base branch, the SPIRE server, the
cluster, the last verification):

  1. scaffold            spirepod init (needs --team and -n when there is no spirepod.yaml)
  2. team CA             spirepod pki gen
  3. SPIRE server CA     spirepod bundle set --server-ca FILE (waits for it otherwise)
  4. trust-list PR       spirepod pr trust-ca; waits for the merge
     server trusts CA    waits until the SPIRE server accepts a throwaway leaf of the team CA
                         (the platform reloaded the trust list), or --server-reloaded; each
                         probe leaves one attested-agent record (a 15-minute leaf, no entries)
                         on the server, so once verified it is not probed again; a
                         server that does not answer is restarting to reload: up waits
                         (2 minutes if it never answered in this run)
  5. SPIFFE ID PR        spirepod pr spiffe-id; waits for the merge
  6. cluster             spirepod apply (skipped when the cluster already holds it all, ready)
  7. verification        spirepod verify (waits for the entries to reach the agent)

Each step is the library call its own command makes. Interrupt it anywhere (Ctrl-C, a closed
laptop, a day of review) and run it again: it continues where the world is, and no step runs
twice to a different result. Waiting costs nothing: GitHub is polled with conditional requests
(which do not count against its rate limit), backing off from --poll to 2 minutes.

--no-wait stops at the first step that waits on people, says who must do what (with the pull
request's URL) and exits 75, so a script can tell "waiting" from "failed".

Output: a checklist (√ done or in place, ‼ waiting, × failed); -o json prints one JSON event per
line ({"time","step","title","event","state","message","hint","who","what","url","error"}).

Exit codes: 0 verified, 1 a step failed, 2 usage, 75 waiting (--no-wait), 130 interrupted.`),
		Example: `  spirepod up --team payments -n payments --server-ca spire-server-ca.pem --context dev
  spirepod up --no-wait            # in CI, or to see what it waits on
  spirepod up --local ~/src/city   # the city as a local checkout instead of GitHub`,
		Args: cobra.NoArgs,
		RunE: runE(opts, opts.validate, runF, upRun),
	}
	fl := cmd.Flags()
	opts.kube.AddFlags(fl)
	addDirFlag(fl, &opts.Dir)
	fl.StringVar(&opts.Team, "team", "", "team name, for init when there is no spirepod.yaml")
	fl.StringVar(&opts.Env, "env", project.DefaultEnvironment, "environment profile, for init: dev, lab, or one from the config file")
	fl.StringVar(&opts.ServerCA, "server-ca", "", "PEM file with the SPIRE server's CA, for the bundle ConfigMap")
	fl.StringVar(&opts.Upstream.Host, "upstream-host", "", "for init: the remote service Envoy calls over mTLS (init's default)")
	fl.IntVar(&opts.Upstream.Port, "upstream-port", 0, "for init: its port")
	fl.StringVar(&opts.Upstream.SNI, "upstream-sni", "", "for init: the TLS server name Envoy sends")
	fl.StringVar(&opts.Upstream.SpiffeID, "upstream-id", "", "for init: the upstream's SPIFFE ID")
	fl.StringVar(&opts.Local, "local", "", "make the pull requests' branches in this local city checkout instead of through the GitHub API")
	fl.BoolVar(&opts.Push, "push", false, "with --local, push the branches to origin")
	fl.BoolVar(&opts.NoWait, "no-wait", false, "stop at the first step that waits on people (exit 75)")
	fl.BoolVar(&opts.ServerReloaded, "server-reloaded", false, "take the platform's word that the SPIRE server trusts the team CA (no probe)")
	fl.StringVar(&opts.Server, "server", "", "SPIRE server address to probe (default: spireServer in spirepod.yaml)")
	fl.DurationVar(&opts.Poll, "poll", 10*time.Second, "first wait between checks of a step that waits; it doubles up to 2 minutes")
	addTimeoutFlag(fl, &opts.Timeout, 5*time.Minute, "bound of each cluster step (apply's wait, verify)")
	fl.BoolVar(&opts.CreateNamespace, "create-namespace", false, "let apply create the namespace if it does not exist")
	fl.BoolVar(&opts.Yes, "yes", false, "allow changing a protected context")
	markCLIOnly(fl, "yes", "create-namespace", "server-reloaded")
	return cmd
}

func (o *upOptions) validate() error {
	if o.Push && o.Local == "" {
		return usageError("add --local CITY_DIR, or drop --push", "--push needs --local")
	}
	if o.Poll < time.Second || o.Poll > 10*time.Minute {
		return usageError("for example --poll 10s", "--poll must be between 1s and 10m, got %s", o.Poll)
	}
	return checkTimeout(o.Timeout)
}

func upRun(ctx context.Context, o *upOptions) error {
	o.Namespace = o.kube.Namespace("") // -n: the team's namespace, for init
	u, err := o.newUp()
	if err != nil {
		return err
	}
	render := o.renderer()
	res, err := up.Run(ctx, up.Options{Steps: u.steps(), NoWait: o.NoWait, Poll: o.Poll, Now: o.f.Now, Event: render, Transient: waitThrough})
	var we *up.WaitingError
	var se *up.StepError
	switch {
	case err == nil:
		if !o.f.JSON() {
			fmt.Fprintf(o.f.IO.ErrOut, "%s verified: %s\n", o.f.IO.green("√"), res.Steps[len(res.Steps)-1].Message)
		}
		return nil
	case errors.As(err, &we):
		return &cliError{code: exitWaiting, err: err, hint: waitingHint(we)}
	case errors.As(err, &se):
		return u.stepFailed(se)
	}
	return err
}

func waitingHint(we *up.WaitingError) string {
	h := "run `spirepod up` again once that is done (or without --no-wait, which waits)"
	if we.Hint != "" {
		h = we.Hint + "; then " + h
	}
	return h
}

// upRun's state: where the scaffold is, how the city and the cluster are
// reached. Every step reads the world itself.
type upRunner struct {
	o    *upOptions
	dir  string // the scaffold's directory (it may not exist yet)
	cond *pr.Conditional

	mu     sync.Mutex
	target *kubeTarget
	// watch probes the SPIRE server across server-trust's polls: once it
	// answered, not answering is a restart (the platform's reload).
	watch *rotate.ReloadWatch
}

func (o *upOptions) newUp() (*upRunner, error) {
	u := &upRunner{o: o, cond: &pr.Conditional{}}
	start, err := o.f.Abs(o.Dir)
	if err != nil {
		return nil, err
	}
	if p, err := project.Find(start); err == nil {
		u.dir = p.Dir
	} else {
		var nf *project.NotFoundError
		if !errors.As(err, &nf) {
			return nil, usageError("fix spirepod.yaml (or move it away to start over)", "%v", err)
		}
		u.dir = start
		if o.Dir == "" {
			u.dir = filepath.Join(start, scaffold.TemplateName)
		}
	}
	return u, nil
}

func (u *upRunner) project() (*project.Project, error) {
	return project.Load(filepath.Join(u.dir, project.FileName))
}

func (u *upRunner) steps() []up.Step {
	return []up.Step{
		{ID: "init", Title: status.Step1, Check: u.checkInit, Run: u.runInit},
		{ID: "pki", Title: status.Step2, Check: u.checkCA, Run: u.runCA},
		{ID: "bundle", Title: status.Step3, Check: u.checkBundle, Run: u.runBundle},
		{ID: "trust-ca", Title: status.Step4, Check: u.checkPull(status.Pulls[0]), Run: u.runTrustCA},
		{ID: "server-trust", Title: "4. SPIRE server trusts the team CA", Check: u.checkServerTrust},
		{ID: "spiffe-id", Title: status.Step5, Check: u.checkPull(status.Pulls[1]), Run: u.runSpiffeID},
		{ID: "apply", Title: status.Step6, Check: u.checkApply, Run: u.runApply},
		{ID: "verify", Title: status.Step7, Check: u.checkVerify, Run: u.runVerify},
	}
}

// --- 1. scaffold -------------------------------------------------------------

func (u *upRunner) checkInit(context.Context) (up.Check, error) {
	p, err := u.project()
	switch {
	case err == nil:
		return up.Check{State: up.Done, Message: p.Dir}, nil
	case !errors.Is(err, os.ErrNotExist):
		return up.Check{State: up.Broken, Message: err.Error(), Hint: "fix spirepod.yaml, or re-render it with `spirepod init --force`"}, nil
	case u.o.Team == "" || u.o.Namespace == "":
		return up.Check{State: up.Broken, Message: "no spirepod.yaml in " + displayPath(u.o.f, u.dir),
			Hint: "pass --team and -n to scaffold one here (or --dir the scaffold you have)"}, nil
	}
	return up.Check{State: up.Todo, Message: "no scaffold yet: " + displayPath(u.o.f, u.dir)}, nil
}

func (u *upRunner) runInit(ctx context.Context) error {
	lo := scaffold.InitOptions{Dir: u.dir, Team: u.o.Team, Namespace: u.o.Namespace, Env: u.o.Env, Upstream: u.o.Upstream,
		Profiles: u.o.f.Profiles(), Template: scaffoldfs.Scaffold(),
		CheckRotation: func(p *project.Project) error { return checkNoRotationForCA(u.o.f, p, "`spirepod init`") }}
	if u.o.ServerCA != "" {
		abs, err := u.o.f.Abs(u.o.ServerCA)
		if err != nil {
			return err
		}
		lo.ServerCAFile = abs
	}
	_, err := scaffold.Init(ctx, lo)
	if err != nil {
		return (&initOptions{f: u.o.f}).initError(err)
	}
	return nil
}

// --- 2. team CA --------------------------------------------------------------

func (u *upRunner) checkCA(context.Context) (up.Check, error) {
	p, err := u.project()
	if err != nil {
		return up.Check{}, err
	}
	cert, key := p.Path(p.Paths.CACert), p.Path(p.Paths.CAKey)
	if empty(cert) && empty(key) {
		return up.Check{State: up.Todo, Message: "no team CA yet"}, nil
	}
	t := pki.LoadTeamCA(pki.TeamCAOptions{CertPath: cert, KeyPath: key, Now: u.o.f.Now()})
	if t.Cert == nil || checklist.Failed(t.Results) {
		r := firstFailed(t.Results)
		return up.Check{State: up.Broken, Message: r.Message, Hint: r.Hint}, nil
	}
	return up.Check{State: up.Done, Message: "sha1 " + pki.SHA1Fingerprint(t.Cert)}, nil
}

func empty(path string) bool {
	st, err := os.Stat(path)
	return err != nil || st.Size() == 0
}

func firstFailed(rs []checklist.Result) checklist.Result {
	for _, r := range rs {
		if r.Status == checklist.Fail {
			return r
		}
	}
	return checklist.Result{Message: "the team CA does not load"}
}

func (u *upRunner) runCA(ctx context.Context) error {
	p, err := u.project()
	if err != nil {
		return err
	}
	_, err = pki.GenTeamCA(ctx, pki.GenTeamCAOptions{Project: p, Rand: rand.Reader, Now: u.o.f.Now,
		CheckRotation: func() error { return checkNoRotationForCA(u.o.f, p, "`spirepod pki gen`") }})
	return err
}

// --- 3. SPIRE server CA ------------------------------------------------------

func (u *upRunner) checkBundle(context.Context) (up.Check, error) {
	p, err := u.project()
	if err != nil {
		return up.Check{}, err
	}
	b := scaffold.ReadBundle(p.Dir, p.Environment, u.o.f.Now())
	switch {
	case b.InPlace():
		return up.Check{State: up.Done, Message: project.Count(len(b.Certs), "server CA")}, nil
	case b.ReadErr != nil || b.ParseErr != nil:
		return up.Check{State: up.Broken, Message: errors.Join(b.ReadErr, b.ParseErr).Error(), Hint: "re-render the scaffold with `" + p.ReinitCommand() + "`"}, nil
	case len(b.Certs) > 0:
		return up.Check{State: up.Broken, Message: b.Problem.Message, Hint: "get the current CA of the " + p.Environment + " SPIRE server and `spirepod bundle set FILE`"}, nil
	case u.o.ServerCA != "":
		return up.Check{State: up.Todo, Message: "setting the server CA from " + u.o.ServerCA}, nil
	}
	return up.Check{State: up.Waiting, Who: "the SPIRE operators", What: "hand over the " + p.Environment + " SPIRE server's CA",
		Hint: "then `spirepod bundle set FILE` (or `spirepod up --server-ca FILE`)"}, nil
}

func (u *upRunner) runBundle(ctx context.Context) error {
	abs, err := u.o.f.Abs(u.o.ServerCA)
	if err != nil {
		return err
	}
	_, err = scaffold.SetServerCA(ctx, scaffold.SetServerCAOptions{File: abs, Now: u.o.f.Now, Project: u.project})
	return err
}

// --- 4, 5. pull requests -----------------------------------------------------

// where is where the pull requests go and are read from: --local, else
// GitHub with the token (polled with conditional requests).
func (u *upRunner) where(ctx context.Context, p *project.Project) (onboard.Where, error) {
	c := &prCommon{f: u.o.f, Local: u.o.Local, Push: u.o.Push}
	w, err := c.where(ctx, p)
	w.GitHub.Conditional = u.cond
	w.GitHub.Progress = nil // a poll's lines are noise; waits still show as events
	return w, err
}

func (u *upRunner) checkPull(spec status.PullSpec) func(context.Context) (up.Check, error) {
	return func(ctx context.Context) (up.Check, error) {
		p, err := u.project()
		if err != nil {
			return up.Check{}, err
		}
		w, err := u.where(ctx, p)
		if err != nil {
			return up.Check{}, err
		}
		res, err := onboard.PullRequests(ctx, p, w, pr.TrustListFile(p), pr.RegistrationFile(p))
		if err != nil {
			return up.Check{}, translatePRError(err)
		}
		r, ps := status.PullCheck(p, res, spec)
		c := up.Check{Message: r.Message, Hint: r.Hint}
		switch {
		case r.Status == checklist.OK:
			c.State = up.Done
		case ps != nil && (ps.State == "open" || ps.State == pr.StatePushed):
			c.State, c.Who, c.What, c.URL = up.Waiting, "the city's reviewers", "review and merge the pull request", ps.URL
		case ps != nil && ps.State == pr.StateBranch:
			c.State, c.Who, c.What = up.Waiting, "you", "push branch "+ps.Branch+" of "+res.Repo+" and open a pull request from it"
		default: // none, closed without merging, merged but stale: open (a new) one
			c.State = up.Todo
		}
		return c, nil
	}
}

func (u *upRunner) runTrustCA(ctx context.Context) error {
	p, tca, w, err := u.prInputs(ctx, false)
	if err != nil {
		return err
	}
	_, err = onboard.TrustCA(ctx, onboard.TrustCAOptions{Project: p, CA: tca.Cert, Inspect: tca.Results, Where: w,
		City: cityConfig(u.o.f, p, u.o.Local == "")})
	return err
}

func (u *upRunner) runSpiffeID(ctx context.Context) error {
	p, tca, w, err := u.prInputs(ctx, true)
	if err != nil {
		return err
	}
	_, err = onboard.SpiffeID(ctx, onboard.SpiffeIDOptions{Project: p, CA: tca.Cert, Where: w, City: cityConfig(u.o.f, p, u.o.Local == "")})
	return err
}

// prInputs is what both pull requests are made from: the project (with
// drift, refused when spirepod.yaml and the manifests disagree: the
// entries are for spirepod.yaml's pods), the team CA, and where they go.
func (u *upRunner) prInputs(ctx context.Context, drift bool) (*project.Project, *pki.TeamCA, onboard.Where, error) {
	p, err := u.project()
	if err != nil {
		return nil, nil, onboard.Where{}, err
	}
	if drift {
		if err := checkDrift(p); err != nil {
			return nil, nil, onboard.Where{}, err
		}
	}
	tca, err := prTeamCA(u.o.f, p, "")
	if err != nil {
		return nil, nil, onboard.Where{}, err
	}
	w, err := u.where(ctx, p)
	return p, tca, w, err
}

// waitThrough: a failed check that a wait on people outlasts: GitHub
// answering 5xx or rate-limiting after the client's own retries, or the
// network or the cluster failing for a moment (retry.Transient).
func waitThrough(err error) bool { return pr.Retryable(err) || retry.Transient(err) }

// --- 4. the SPIRE server trusts the team CA ----------------------------------

// checkServerTrust attests at the SPIRE server with a throwaway leaf of the
// team CA (as `pki rotate` probes, CN spirepod-rotation-probe.<namespace>,
// which no node alias selects): accepted means the platform reloaded the
// trust list with the team CA on it.
func (u *upRunner) checkServerTrust(ctx context.Context) (up.Check, error) {
	if u.o.ServerReloaded {
		return up.Check{State: up.Done, Message: "taken from --server-reloaded"}, nil
	}
	p, err := u.project()
	if err != nil {
		return up.Check{}, err
	}
	// Once the team's own agents have attested with this CA (the last
	// verification counts for it), that is the proof: no probe, so a
	// re-run leaves no throwaway agent record on the shared server.
	if t, err := u.kube(); err == nil {
		if last := verify.CheckLast(p, t.Context); last.Verified() {
			return up.Check{State: up.Done, Message: "the team's agents attest with this CA (" + last.Message + ")"}, nil
		}
	}
	server := u.o.Server
	if server == "" {
		server = p.SpireServer
	}
	watch, err := u.reloadWatch(p, server)
	if err != nil {
		return up.Check{State: up.Broken, Message: "cannot probe the SPIRE server: " + err.Error(),
			Hint: "pass --server HOST:PORT, or --server-reloaded once the platform team confirms the reload"}, nil
	}
	t := pki.LoadTeamCA(pki.TeamCAOptions{CertPath: p.Path(p.Paths.CACert), KeyPath: p.Path(p.Paths.CAKey), Now: u.o.f.Now()})
	if t.Cert == nil || t.Key == nil {
		return up.Check{State: up.Broken, Message: "the team CA and its key are needed to sign the probe leaf"}, nil
	}
	chain, key, err := rotate.ProbeLeaf(t.Cert, t.Key, p.Namespace, u.o.f.Now(), rand.Reader)
	if err != nil {
		return up.Check{}, err
	}
	id, err := watch.Attest(ctx, chain, key)
	var refused *rotate.RefusedError
	var restarting *rotate.RestartingError
	switch {
	case err == nil:
		return up.Check{State: up.Done, Message: "a leaf of the team CA attests at " + server + " (" + id + ")"}, nil
	case errors.As(err, &refused):
		return up.Check{State: up.Waiting, Who: "the platform team", What: "reload the SPIRE server's x509pop trust list (restart it, or SIGUSR1 with plugin_data_file)",
			Message: err.Error(), Hint: "or `spirepod up --server-reloaded` once they confirm it"}, nil
	case errors.As(err, &restarting):
		what := "bring the SPIRE server back (it stopped answering: restarting to reload its trust list?)"
		if !restarting.Answered {
			what = "bring the SPIRE server up (it does not answer yet: restarting to reload its trust list?)"
		}
		return up.Check{State: up.Waiting, Who: "the platform team", What: what,
			Message: err.Error(), Hint: "or `spirepod up --server-reloaded` once they confirm the reload"}, nil
	}
	return up.Check{State: up.Broken, Message: err.Error(),
		Hint: "run where the SPIRE server is reachable, pass --server HOST:PORT, or --server-reloaded once the platform team confirms the reload"}, nil
}

// reloadWatch is the run's one watch on the SPIRE server.
func (u *upRunner) reloadWatch(p *project.Project, server string) (*rotate.ReloadWatch, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.watch != nil {
		return u.watch, nil
	}
	probe, err := serverProbe(u.o.f, p, server)
	if err != nil {
		return nil, err
	}
	u.watch = rotate.NewReloadWatch(probe, !u.o.NoWait)
	return u.watch, nil
}

// --- 6. cluster --------------------------------------------------------------

func (u *upRunner) kube() (*kubeTarget, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.target != nil {
		return u.target, nil
	}
	t, err := u.o.f.Kube(u.o.kube)
	if err != nil {
		return nil, err
	}
	u.target = t
	return t, nil
}

func (u *upRunner) applyTarget() (*apply.Target, error) {
	t, err := u.kube()
	if err != nil {
		return nil, err
	}
	return &apply.Target{Context: t.Context, Cluster: t.Cluster, Server: t.Server,
		Client: t.Client, Dynamic: t.Dynamic, Mapper: t.Mapper, Ping: t.ping}, nil
}

func (u *upRunner) checkApply(ctx context.Context) (up.Check, error) {
	p, err := u.project()
	if err != nil {
		return up.Check{}, err
	}
	t, err := u.applyTarget()
	if err != nil {
		return up.Check{}, err
	}
	st, err := apply.InPlace(ctx, apply.InPlaceOptions{Project: p, Target: t})
	if err != nil {
		return up.Check{}, err
	}
	if st.InPlace {
		return up.Check{State: up.Done, Message: fmt.Sprintf("%s in place on %s; pods ready: %s", project.Count(st.Objects, "object"), t.Context, strings.Join(st.Ready.PodsReady, ", "))}, nil
	}
	return up.Check{State: up.Todo, Message: fmt.Sprintf("%s to apply on %s", project.Count(len(st.Changed), "object"), t.Context)}, nil
}

func (u *upRunner) runApply(ctx context.Context) error {
	p, err := u.project()
	if err != nil {
		return err
	}
	_, err = apply.Run(ctx, apply.RunOptions{Project: p, Now: u.o.f.Now(), ImageCheck: u.o.f.ImageCheck,
		AllowProtected: u.o.Yes, CreateNamespace: u.o.CreateNamespace, Wait: true, Timeout: u.o.Timeout,
		Connect: u.applyTarget})
	return err
}

// --- 7. verification ---------------------------------------------------------

func (u *upRunner) checkVerify(context.Context) (up.Check, error) {
	p, err := u.project()
	if err != nil {
		return up.Check{}, err
	}
	t, err := u.kube()
	if err != nil {
		return up.Check{}, err
	}
	last := verify.CheckLast(p, t.Context)
	if last.Verified() {
		return up.Check{State: up.Done, Message: last.Message}, nil
	}
	return up.Check{State: up.Todo, Message: last.Message, Hint: last.Fix}, nil
}

func (u *upRunner) runVerify(ctx context.Context) error {
	p, err := u.project()
	if err != nil {
		return err
	}
	t, err := u.kube()
	if err != nil {
		return err
	}
	_, err = verify.Run(ctx, verify.RunOptions{Project: p, Drift: checkDrift(p), Client: t.Client, Dynamic: t.Dynamic,
		Context: t.Context, Timeout: u.o.Timeout, Ping: t.ping, Now: u.o.f.Now})
	return err
}

// --- output -------------------------------------------------------------------

// renderer prints up's events: a checklist line per event (√ ‼ × like
// status), or one JSON object per line with -o json.
func (o *upOptions) renderer() func(up.Event) {
	io := o.f.IO
	return func(ev up.Event) {
		if o.f.JSON() {
			_ = writeJSONLine(io.Out, ev)
			return
		}
		var line string
		switch ev.Kind {
		case up.EventSkipped:
			line = fmt.Sprintf("%s %s: in place (%s)", io.green("√"), ev.Title, ev.Message)
		case up.EventRunning:
			line = fmt.Sprintf("… %s: %s", ev.Title, firstNonEmpty(ev.Message, "running"))
		case up.EventDone:
			line = fmt.Sprintf("%s %s: %s", io.green("√"), ev.Title, firstNonEmpty(ev.Message, "done"))
		case up.EventWaiting:
			line = fmt.Sprintf("%s %s: waiting on %s to %s", io.yellow("‼"), ev.Title, ev.Who, ev.What)
			if ev.URL != "" {
				line += ": " + ev.URL
			}
		case up.EventFailed:
			line = fmt.Sprintf("%s %s: %s", io.red("×"), ev.Title, firstNonEmpty(ev.Error, ev.Message))
		}
		fmt.Fprintln(io.ErrOut, line)
	}
}

func firstNonEmpty(ss ...string) string {
	for _, s := range ss {
		if s != "" {
			return s
		}
	}
	return ""
}

// stepFailed gives a failed step's error the hint and exit code its own
// command would give it.
func (u *upRunner) stepFailed(se *up.StepError) error {
	var ce *cliError
	if se.Err != nil && errors.As(se.Err, &ce) {
		return ce
	}
	if se.Err != nil {
		if e := translatePRError(se.Err); e != se.Err {
			return e
		}
		hint := se.Hint
		if hint == "" {
			hint = "fix it, then run `spirepod up` again: steps in place are skipped"
		}
		return failure(se, hint)
	}
	return failure(se, se.Hint)
}
