package main

import (
	"bufio"
	"context"
	"crypto"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/spirepod/spirepod/internal/onboard"
	"github.com/spirepod/spirepod/internal/pki"
	"github.com/spirepod/spirepod/internal/pr"
	"github.com/spirepod/spirepod/internal/project"
	"github.com/spirepod/spirepod/internal/rotate"
	"github.com/spirepod/spirepod/internal/scaffold"
	"github.com/spirepod/spirepod/internal/verify"
)

type pkiRotateOptions struct {
	f    *Factory
	kube *kubeFlags

	Dir            string
	Plan           bool
	Emergency      bool
	Roll           string
	Format         string
	Wait           bool
	Poll           time.Duration
	Timeout        time.Duration
	Yes            bool
	ServerReloaded bool
	Server         string
	CheckWith      string
	CheckKey       string
	Local          string
	Push           bool
	Again          bool
	Abort          bool
}

func newCmdPKIRotate(f *Factory, runF func(*pkiRotateOptions) error) *cobra.Command {
	opts := &pkiRotateOptions{f: f, kube: newKubeFlags()}
	cmd := &cobra.Command{
		Use:   "rotate",
		Short: "Replace the team CA in phases, without a failed SVID fetch (resumable)",
		Long: `Replace the team CA with a new one while every agent keeps its identity. Each run does every
step it can and records it in ` + rotate.FileName + ` next to spirepod.yaml (no secret in it:
commit it, and any machine with the scaffold can resume); it stops where something outside
must happen (a merge, the SPIRE server's reload, your confirmation) and says what. Run it
again, or with --wait to poll. ` + "`spirepod status`" + ` shows "rotation: phase N of M, next: …".

  1 prepare          the new CA next to the current one (certs/secret/*.next.*), same key type,
                     validity and subject; the key is 0600, git-ignored, never printed, never in a PR
  2 trust both       pull requests: the new CA on the trust list next to the old one; one more
                     node alias per pod (same ID) pinned to the new CA. Merged, and the SPIRE
                     server reloaded: a 15-minute probe leaf of the new CA attests (--check-with
                     your own leaf, or --server-reloaded to confirm by hand)
  3 switch issuance  the scaffold's CA files, then the issuer's CA Secret (server-side apply,
                     refused unless it holds the old or the new CA) become the new CA; every pod's
                     agent certificate is re-issued. --roll in-place (default): gen-cert writes it
                     into the running pod and the agent re-attests at its next SVID rotation (no
                     restart; one pod first, then the rest); --roll restart: pods are deleted one
                     at a time, highest ordinal first, each Ready before the next (--wait: until
                     ` + "`spirepod verify`" + ` sees its SVID)
  4 retire           pull requests removing the old aliases, then the old CA; the server refuses
                     a probe leaf of the old CA; the old key is deleted (asks, unless --yes)

--emergency (the old key is compromised) has no overlap: issuance switches at once, the pull
requests add the new CA and remove the old one and its aliases together, and every pod has no
SVID from when the server loads them until its agent attests with a new leaf (--roll restart,
the default there, restarts them one by one). The plan names the pods.

A finished rotation stays recorded (status: "rotation: done"); running again reports it.
--again starts the next one. --plan prints every phase and what it changes, and writes nothing.
-o json: {state, phase, phases, phaseName, next, waiting, hint, old, new, plan: [{n, name,
platform, steps: [{id, title, changes, status, detail}]}], did, pullRequests, pods,
loseIdentity, lossWindow, durations, moveGap (--plan: {window, kept, failing, shorten: [{who,
where, config, note}]})}.

Exit codes: 0 done or stopped at a step that waits (see "waiting"), 1 a step failed, 2 bad input
(nothing changed), 124 --timeout ran out, 130 interrupted (run again: it resumes).`,
		Example: `  spirepod pki rotate --plan
  spirepod pki rotate                      # phase 1 and the pull requests of phase 2
  spirepod pki rotate --context dev        # after the merge and the server's reload: phases 3 and 4
  spirepod pki rotate --context dev --wait --timeout 2h --yes
  spirepod pki rotate --emergency --plan
  spirepod pki rotate --server 10.0.0.5:8081 -o json`,
		Args: cobra.NoArgs,
		RunE: runE(opts, opts.validate, runF, pkiRotateRun),
	}
	fl := cmd.Flags()
	opts.kube.AddFlags(fl)
	addDirFlag(fl, &opts.Dir)
	fl.BoolVar(&opts.Plan, "plan", false, "print every phase and what it changes; write nothing, contact nothing")
	fl.BoolVar(&opts.Emergency, "emergency", false, "the old key is compromised: no overlap (starts a rotation; refused while a normal one runs)")
	fl.StringVar(&opts.Roll, "roll", "", "how pods move to the new CA in phase 3: in-place or restart (default in-place; restart with --emergency)")
	fl.StringVar(&opts.Format, "format", "", "registration format of the alias pull requests (default registration.format)")
	fl.BoolVar(&opts.Wait, "wait", false, "poll for merges and the server's reload instead of stopping, and follow each restarted pod until 'spirepod verify' sees its SVID")
	fl.DurationVar(&opts.Poll, "poll", 15*time.Second, "with --wait, how often to look again")
	addTimeoutFlag(fl, &opts.Timeout, 30*time.Minute, "give up after this long (exit 124; run again to resume)")
	fl.BoolVar(&opts.Yes, "yes", false, "delete the old CA's key in phase 4 without asking")
	fl.BoolVar(&opts.ServerReloaded, "server-reloaded", false, "the platform team confirmed the SPIRE server reloaded its trust list: skip the probe of the next server check")
	fl.StringVar(&opts.Server, "server", "", "SPIRE server HOST:PORT for the probe (default spireServer in spirepod.yaml)")
	fl.StringVar(&opts.CheckWith, "check-with", "", "an agent certificate of the new CA to probe the server with (default: a probe leaf spirepod mints)")
	fl.StringVar(&opts.CheckKey, "check-key", "", "the private key of --check-with")
	fl.BoolVar(&opts.Again, "again", false, "start another rotation after a finished one (its record in "+rotate.FileName+" is replaced)")
	fl.BoolVar(&opts.Abort, "abort", false, "end a rotation none of whose pull requests is merged and whose issuance has not switched: the new CA moves to .spirepod/backup/, the state file goes; close its pull requests by hand")
	fl.StringVar(&opts.Local, "local", "", "make the branches in this local city checkout instead of through the GitHub API")
	fl.BoolVar(&opts.Push, "push", false, "with --local, push the branches to origin")
	_ = fl.MarkHidden("poll")
	markCLIOnly(fl, "yes", "server-reloaded", "emergency", "again", "abort")
	return cmd
}

func (o *pkiRotateOptions) validate() error {
	switch o.Roll {
	case "", rotate.RollInPlace, rotate.RollRestart:
	default:
		return usageError("use --roll in-place (no restart) or --roll restart", "--roll %q must be in-place or restart", o.Roll)
	}
	switch o.Format {
	case "", project.FormatSpiffeID, project.FormatClusterStaticEntry, project.FormatEntryJSON:
	default:
		return usageError("use spiffeid, cluster-static-entry or entry-json", "--format %q is not a registration format", o.Format)
	}
	if (o.CheckWith == "") != (o.CheckKey == "") {
		return usageError("pass both --check-with CERT and --check-key KEY, or neither", "--check-with and --check-key go together")
	}
	if o.Server != "" {
		if _, port, err := net.SplitHostPort(o.Server); err != nil || port == "" {
			return usageError("for example --server spire-server.example.org:8081", "--server %q must be HOST:PORT", o.Server)
		}
	}
	if o.Push && o.Local == "" {
		return usageError("add --local CITY_DIR, or drop --push", "--push needs --local")
	}
	if o.Poll <= 0 {
		return usageError("for example --poll 15s", "--poll must be positive, got %s", o.Poll)
	}
	if o.Abort && (o.Plan || o.Emergency || o.Again || o.Wait) {
		return usageError("run `spirepod pki rotate --abort` alone", "--abort cannot go with --plan, --emergency, --again or --wait")
	}
	return checkTimeout(o.Timeout)
}

func pkiRotateRun(ctx context.Context, o *pkiRotateOptions) error {
	f := o.f
	p, err := pkiProject(f, o.Dir)
	if err != nil {
		return err
	}
	if _, err := o.kube.projectNamespace(p); err != nil {
		return err
	}
	if o.Abort {
		return pkiRotateAbort(f, p)
	}
	s, fresh, err := rotate.Start(p, rotate.StartOptions{Emergency: o.Emergency, Roll: o.Roll, Format: o.Format, Again: o.Again}, f.Now())
	if err != nil {
		return rotateError(f, err)
	}
	if fresh {
		// A new rotation starts from a team CA that passes pki inspect.
		cert, key := scaffoldCAPaths(p, true)
		if _, err := loadTeamCA(f, cert, key, ""); err != nil {
			return err
		}
	}
	server := o.Server
	if server == "" {
		server = p.SpireServer
	}
	if o.Plan {
		return renderRotatePlan(f, p, rotate.Plan(p, s, server), fresh)
	}

	ro, err := o.runOptions(p, server)
	if err != nil {
		return err
	}
	if fresh && !f.JSON() {
		kind := "normal rotation (both CAs trusted while agents move)"
		if s.Emergency {
			kind = "EMERGENCY rotation (no overlap)"
		}
		fmt.Fprintf(f.IO.ErrOut, "Starting a %s of team %s's CA %s; state in %s\n", kind, p.Team, s.Old.SHA1, displayPath(f, rotate.Path(p.Dir)))
	}
	if s.Emergency && !f.JSON() && !s.Finished(rotate.StepPRAliases) {
		fmt.Fprintf(f.IO.ErrOut, "%s\n", f.IO.red(fmt.Sprintf("These pods will have no SVID %s: %s",
			lossWindow(s), strings.Join(p.PodNames(), ", "))))
	}

	rctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	rep, runErr := rotate.Run(rctx, ro, s)
	if runErr != nil {
		if rep != nil && f.JSON() {
			_ = writeJSON(f.IO.Out, rep)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if rctx.Err() != nil {
			return timeoutError(runErr, "run `spirepod pki rotate` again: it resumes where it stopped (or a longer --timeout)")
		}
		return rotateError(f, runErr)
	}
	if f.JSON() {
		return writeJSON(f.IO.Out, rep)
	}
	renderRotateReport(f, rep)
	return nil
}

// runOptions are rotate.Run's options and ports for this command: the pull
// requests (local or GitHub), the server probe, --check-with, the cluster
// (connected on first use), the pod check, the confirmation prompt (a
// terminal only) and progress lines.
func (o *pkiRotateOptions) runOptions(p *project.Project, server string) (rotate.Options, error) {
	f := o.f
	ro := rotate.Options{Project: p, Emergency: o.Emergency, Roll: o.Roll, Format: o.Format, Now: f.Now, Rand: f.Rand,
		Wait: o.Wait, Poll: o.Poll, Yes: o.Yes, ServerReloaded: o.ServerReloaded, Server: server}
	pc := &prCommon{f: f, Local: o.Local, Push: o.Push, Timeout: o.Timeout}
	ro.PRs = &rotatePRs{c: pc, p: p}
	ro.Probe, ro.NoProbe = serverProbe(f, p, server)
	ro.Transient = waitThrough
	if o.CheckWith != "" {
		certs, err := pkiReadCerts(f, "--check-with", o.CheckWith)
		if err != nil {
			return rotate.Options{}, err
		}
		key, err := pkiReadKey(f, "--check-key", o.CheckKey)
		if err != nil {
			return rotate.Options{}, err
		}
		if !pki.KeyMatches(certs[0], key) {
			return rotate.Options{}, usageError("pass the key of the --check-with certificate", "--check-key %s does not belong to --check-with %s", o.CheckKey, o.CheckWith)
		}
		ro.CheckWith, ro.CheckWithKey = certs, crypto.Signer(key)
	}
	var target *kubeTarget
	ro.Cluster = func(ctx context.Context) (rotate.Cluster, error) {
		t, err := f.Kube(o.kube)
		if err != nil {
			return nil, err
		}
		if err := t.ping(ctx); err != nil {
			return nil, err
		}
		target = t
		fmt.Fprintf(f.IO.ErrOut, "Cluster: %s\n", t.describe())
		return &rotate.KubeCluster{Context: t.Context, Client: t.Client, Dynamic: t.Dynamic, Mapper: t.Mapper}, nil
	}
	ro.VerifyPod = func(ctx context.Context, pod string) error {
		if target == nil {
			return errors.New("no cluster")
		}
		_, err := verify.Verify(ctx, verify.Options{Client: target.Client, Namespace: p.Namespace, Pods: []string{pod}, Expected: p.WorkloadSpiffeID(), Upstream: p.Upstream.SpiffeID, Now: f.Now,
			// rotate has just recreated the pod: every line of its log is new.
			FreshPods: true})
		return err
	}
	if f.IO.InTTY && !f.JSON() {
		in := bufio.NewReader(f.IO.In)
		ro.Confirm = func(q string) (bool, error) {
			fmt.Fprintf(f.IO.ErrOut, "%s [y/N] ", q)
			line, err := in.ReadString('\n')
			if err != nil && line == "" {
				return false, nil
			}
			a := strings.ToLower(strings.TrimSpace(line))
			return a == "y" || a == "yes", nil
		}
	}
	ro.Progress = func(msg string) {
		if !f.JSON() {
			fmt.Fprintln(f.IO.ErrOut, msg)
		}
	}
	return ro, nil
}

// pkiRotateAbort ends a rotation that has changed nothing outside the
// scaffold yet (rotate.Abort), keeping the new CA in .spirepod/backup/.
func pkiRotateAbort(f *Factory, p *project.Project) error {
	res, err := rotate.Abort(p, caBackupDir(p))
	if errors.Is(err, rotate.ErrCannotAbort) {
		return usageError("finish it with `spirepod pki rotate` (`--plan` shows what is left)", "%v; nothing was changed", err)
	}
	if err != nil {
		return rotateError(f, err)
	}
	if f.JSON() {
		return writeJSON(f.IO.Out, struct {
			Aborted bool `json:"aborted"`
			*rotate.AbortResult
		}{true, res})
	}
	fmt.Fprintf(f.IO.Out, "rotation aborted: the team CA stays %s\n", displayPath(f, p.Path(p.Paths.CACert)))
	if len(res.Kept) > 0 {
		fmt.Fprintf(f.IO.Out, "the new CA is kept in %s\n", strings.Join(displayPaths(f, res.Kept), " and "))
	}
	for _, pr := range res.OpenPRs {
		where := pr.URL
		if where == "" {
			where = "branch " + pr.Branch
		}
		fmt.Fprintf(f.IO.ErrOut, "close the rotation's pull request (%s): %s\n", pr.Step, where)
	}
	return nil
}

// lossWindow says when the emergency's pods are without identity.
func lossWindow(s *rotate.State) string {
	if s.Roll == rotate.RollRestart {
		return "from when the SPIRE server loads the alias pull request until each restarts in phase 3"
	}
	return "from when the SPIRE server loads the alias pull request until each agent re-attests with its new leaf (its next SVID rotation)"
}

// rotateError gives the library's errors their exit code and hint.
func rotateError(f *Factory, err error) error {
	var ce *cliError
	if errors.As(err, &ce) {
		return err
	}
	var ie *rotate.InputError
	var ste *rotate.StartError
	var se *rotate.StateError
	var sec *rotate.SecretError
	var un *rotate.UnreachableError
	var cc *onboard.CityCheckError
	switch {
	case errors.As(err, &ie):
		return usageError(ie.Hint, "%s: %v; nothing more was changed", displayPath(f, ie.Path), ie.Err)
	case errors.As(err, &ste):
		return usageError(ste.Hint, "%v; nothing was changed", ste.Err)
	case errors.As(err, &se):
		return usageError("fix the file, or move it away to start over (the new CA files stay where they are)", "%s: %v", displayPath(f, se.Path), se.Err)
	case errors.As(err, &sec):
		return failure(err, "check --context and spirepod.yaml's namespace and issuer: spirepod only replaces the Secret when it holds this rotation's old or new CA")
	case errors.As(err, &un):
		return failure(err, "run where the SPIRE server is reachable, pass --server HOST:PORT, or, once the platform team confirms the reload, --server-reloaded")
	case errors.As(err, &cc):
		return translatePRError(err)
	case errors.Is(err, rotate.ErrNoCluster):
		return usageError(kubeHint, "%v", err)
	}
	var pke *pr.PrivateKeyError
	var ae *pr.APIError
	if errors.As(err, &pke) || errors.As(err, &ae) {
		return translatePRError(err)
	}
	return failure(err, "run `spirepod pki rotate` again once the cause is fixed: finished steps are not repeated")
}

// serverProbe attests at server, trusting the scaffold's bundle; nil and
// why when there is no address or no server CA.
func serverProbe(f *Factory, p *project.Project, server string) (rotate.ProbeFunc, error) {
	if server == "" {
		return nil, errors.New("spireServer is empty in spirepod.yaml (pass --server)")
	}
	data, err := os.ReadFile(p.Path(scaffold.BundleFile(p.Environment)))
	if err != nil {
		return nil, err
	}
	certs, err := scaffold.BundleCerts(data)
	if err != nil || len(certs) == 0 {
		return nil, fmt.Errorf("%s holds no server CA (`spirepod bundle set`)", scaffold.BundleFile(p.Environment))
	}
	return rotate.ProbeOptions{Server: server, TrustDomain: p.TrustDomain, Bundle: certs}.Attest, nil
}

// rotatePRs opens the rotation's pull requests the way `spirepod pr` does.
type rotatePRs struct {
	c *prCommon
	p *project.Project
}

func (x *rotatePRs) Open(ctx context.Context, ch *rotate.Change) (*pr.Result, error) {
	res, err := x.c.submit(ctx, x.p, ch.Change, onboard.Pending{SHA1s: ch.Pending, Label: "the rotation's CA",
		Why: "expected until the rotation's other pull request is merged"})
	if err != nil {
		return nil, translatePRError(err)
	}
	for _, w := range res.Warnings {
		fmt.Fprintf(x.c.f.IO.ErrOut, "warning: %s\n", w)
	}
	return res, nil
}

func (x *rotatePRs) InBase(ctx context.Context, ch *rotate.Change) (bool, error) {
	plain := *ch.Change
	plain.Verify = nil
	w, err := x.c.where(ctx, x.p) // a token is needed: a plan against an empty base says nothing
	if err != nil {
		return false, err
	}
	res, err := onboard.Plan(ctx, &plain, x.p, w)
	if err != nil {
		return false, translatePRError(err)
	}
	return res.Action == pr.ActionInBase, nil
}

func stepMark(s *IOStreams, status string) string {
	switch status {
	case "done":
		return s.green("√")
	case "waiting":
		return s.yellow("‼")
	case "next":
		return s.yellow("→")
	}
	return "-"
}

func renderRotateReport(f *Factory, rep *rotate.Report) {
	w := f.IO.Out
	fmt.Fprintf(w, "old CA  %s  %s\n", rep.Old.SHA1, rep.Old.Subject)
	if rep.New.SHA1 != "" {
		fmt.Fprintf(w, "new CA  %s  %s, valid to %s\n", rep.New.SHA1, rep.New.Subject, rep.New.NotAfter.Format("2006-01-02"))
	}
	for _, ph := range rep.Plan {
		fmt.Fprintf(w, "%s\n", f.IO.bold(fmt.Sprintf("Phase %d/%d: %s", ph.N, rep.Phases, ph.Name)))
		for _, st := range ph.Steps {
			fmt.Fprintf(w, "  %s %s\n", stepMark(f.IO, st.Status), st.Title)
		}
	}
	for _, pr := range rep.PRs {
		fmt.Fprintf(w, "pull request (%s): %s\n", pr.Step, pr.URL)
	}
	if rep.State == "done" {
		fmt.Fprintf(w, "rotation: done (phase %d of %d); the team CA is %s\n", rep.Phases, rep.Phases, rep.New.SHA1)
		for _, ph := range rep.Plan {
			if d, ok := rep.Durations[fmt.Sprintf("%d %s", ph.N, ph.Name)]; ok {
				fmt.Fprintf(w, "  phase %d %s took %s\n", ph.N, ph.Name, d)
			}
		}
		return
	}
	fmt.Fprintf(w, "rotation: phase %d of %d (%s), next: %s\n", rep.Phase, rep.Phases, rep.PhaseName, rep.Next)
	if rep.Waiting != "" {
		fmt.Fprintf(f.IO.ErrOut, "waiting for %s\n", rep.Waiting)
		if rep.Hint != "" {
			fmt.Fprintf(f.IO.ErrOut, "hint: %s\n", rep.Hint)
		}
	}
}

func renderRotatePlan(f *Factory, p *project.Project, rep *rotate.Report, fresh bool) error {
	if f.JSON() {
		return writeJSON(f.IO.Out, rep)
	}
	w := f.IO.Out
	kind := "normal rotation: both CAs are trusted while the agents move"
	if rep.Emergency {
		kind = "EMERGENCY rotation: no overlap"
	}
	fmt.Fprintf(w, "%s\n", f.IO.bold(fmt.Sprintf("Rotation plan for team %s (namespace %s): %s; pods move %s", p.Team, p.Namespace, kind, rep.Roll)))
	fmt.Fprintf(w, "old CA %s (%s)\n", rep.Old.SHA1, rep.Old.Subject)
	if rep.New.SHA1 != "" {
		fmt.Fprintf(w, "new CA %s\n", rep.New.SHA1)
	}
	for _, ph := range rep.Plan {
		fmt.Fprintf(w, "\nPhase %d of %d: %s\n", ph.N, rep.Phases, ph.Name)
		fmt.Fprintf(w, "  platform team: %s\n", ph.Platform)
		for _, st := range ph.Steps {
			fmt.Fprintf(w, "  %s %s\n      %s\n", stepMark(f.IO, st.Status), st.Title, st.Changes)
		}
	}
	if len(rep.LoseIdentity) > 0 {
		fmt.Fprintf(w, "\nPods without SVID %s: %s\n", strings.TrimSuffix(rep.LossWindow, ":"), strings.Join(rep.LoseIdentity, ", "))
	}
	if g := rep.MoveGap; g != nil {
		fmt.Fprintf(w, "\nSPIRE's gap when an agent moves: %s.\n", g.Window)
		fmt.Fprintf(w, "  keeps working: %s\n", g.Kept)
		fmt.Fprintf(w, "  fails in the gap: %s\n", g.Failing)
		fmt.Fprintln(w, "  to shorten it:")
		for _, st := range g.Shorten {
			fmt.Fprintf(w, "    %s, %s: %s (%s)\n", st.Who, st.Where, st.Config, st.Note)
		}
	}
	if !fresh {
		fmt.Fprintf(w, "\nrotation: phase %d of %d (%s), next: %s\n", rep.Phase, rep.Phases, rep.PhaseName, rep.Next)
	}
	fmt.Fprintln(f.IO.ErrOut, "plan only: nothing was written")
	return nil
}
