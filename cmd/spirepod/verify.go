package main

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/spirepod/spirepod/internal/pki"
	"github.com/spirepod/spirepod/internal/verify"
)

type verifyOptions struct {
	f    *Factory
	kube *kubeFlags

	Dir     string
	Pod     string
	Expect  string
	Timeout time.Duration
}

func caSHA1(c *x509.Certificate) string {
	if c == nil {
		return ""
	}
	return pki.SHA1Fingerprint(c)
}

func newCmdVerify(f *Factory, runF func(*verifyOptions) error) *cobra.Command {
	opts := &verifyOptions{f: f, kube: newKubeFlags()}
	cmd := &cobra.Command{
		Use:   "verify",
		Short: "Wait for URI=<your SPIFFE ID> in the curl log of every pod (guide step 7)",
		Long: `Follow the curl container's log of every pod of the StatefulSet (or --pod) and succeed as
soon as the echoed X-Forwarded-Client-Cert carries URI=<expected>. The expected ID is
spiffe://<trustDomain>/ns/<namespace>/sa/<serviceAccount> from spirepod.yaml, or --expect.

What counts:
  - only lines logged after verify started (the scaffold's curl calls every 10 s); earlier lines,
    matching or not, are reported as ignored (a line without a timestamp has its container's
    start time);
  - only the header element the upstream appended: the last one whose By= is upstream.spiffeID
    from spirepod.yaml (the last element with --expect alone); elements before it came with the
    request and can be forged;
  - an exact match: a longer or different ID is not one; a different URI fails at once, naming
    both IDs.

A cluster that does not answer fails within seconds ("cluster unreachable", exit 1), not after
--timeout. spirepod.yaml and the manifests must agree (replicas, namespace): exit 2 otherwise.

On a timeout or a failure it walks the stages in order and names the first broken one with its
evidence and the fix: pod scheduled and Running; agent Certificate and ` + defaultScaffoldFacts().IssuerKind + ` Ready;
init container gen-cert; the agent certificate against x509pop's rules; known SPIRE errors in the
spire-agent log; SDS and upstream errors in the envoy log; the curl log.

The outcome is kept in .spirepod/last-verify.json for ` + "`spirepod status`" + `, with the kube context,
namespace and team CA it was made with (status counts it only for those).
-o json: {expected, namespace, context, outcome, success, elapsed, pods: [{pod, state, matched,
elapsed, seenIDs, line}], diagnoses: [{pod, stage, summary, evidence, fix, stages}]}.

Exit codes: 0 every pod matched, 1 a different ID (or another failure), 124 timed out.`,
		Example: `  spirepod verify
  spirepod verify --pod spire-envoy-integration-1 --timeout 2m
  spirepod verify --context dev --expect spiffe://spire.cityos-dev.woven-planet.tech/ns/payments/sa/httpbin-client`,
		Args: cobra.NoArgs,
		RunE: runE(opts, opts.validate, runF, verifyRun),
	}
	fl := cmd.Flags()
	opts.kube.AddFlags(fl)
	addDirFlag(fl, &opts.Dir)
	fl.StringVar(&opts.Pod, "pod", "", "verify only this pod (default: every replica)")
	fl.StringVar(&opts.Expect, "expect", "", "the SPIFFE ID to expect (default: from spirepod.yaml)")
	addTimeoutFlag(fl, &opts.Timeout, 5*time.Minute, "give up after this long (exit 124)")
	return cmd
}

func (o *verifyOptions) validate() error {
	if err := checkTimeout(o.Timeout); err != nil {
		return err
	}
	if o.Expect != "" && !strings.HasPrefix(o.Expect, "spiffe://") {
		return usageError("for example --expect spiffe://<trust domain>/ns/<namespace>/sa/<service account>", "--expect must be a spiffe:// ID, got %q", o.Expect)
	}
	return nil
}

// verifyJSON is the -o json shape.
type verifyJSON struct {
	Expected  string             `json:"expected"`
	Namespace string             `json:"namespace"`
	Context   string             `json:"context"`
	Outcome   string             `json:"outcome"`
	Success   bool               `json:"success"`
	Elapsed   verify.Duration    `json:"elapsed"`
	Error     string             `json:"error,omitempty"`
	Pods      []verify.PodResult `json:"pods"`
	Diagnoses []verify.Diagnosis `json:"diagnoses,omitempty"`
}

func verifyRun(ctx context.Context, opts *verifyOptions) error {
	f := opts.f
	p, perr := f.Project(opts.Dir)
	if perr != nil && (opts.Expect == "" || opts.Pod == "" || opts.kube.Namespace("") == "") {
		return perr // without a project, --expect, --pod and -n are all needed
	}
	if perr != nil {
		p = nil
	}
	target, err := f.Kube(opts.kube)
	if err != nil {
		return err
	}
	var (
		ns, expected, sts, upstream string
		pods                        []string
		teamCA                      *x509.Certificate
	)
	var (
		certName func(string) string
		cns      []string
	)
	if p != nil {
		if ns, err = opts.kube.projectNamespace(p); err != nil {
			return err
		}
		if err := checkDrift(p); err != nil {
			return err
		}
		expected, sts, pods, certName, cns = p.WorkloadSpiffeID(), p.StatefulSet, p.PodNames(), p.CertificateName, p.AgentCNs()
		upstream = p.Upstream.SpiffeID
		cert, _ := scaffoldCAPaths(p, false)
		teamCA = pki.LoadTeamCA(pki.TeamCAOptions{CertPath: cert, Now: f.Now()}).Cert
	} else {
		ns = opts.kube.Namespace("")
	}
	if opts.Expect != "" {
		expected = opts.Expect
	}
	if opts.Pod != "" {
		pods = []string{opts.Pod}
	}
	if err := target.ping(ctx); err != nil {
		return err // unreachable: exit 1 within seconds, not after --timeout
	}

	prog := newProgress(f.IO)
	fmt.Fprintf(f.IO.ErrOut, "verifying %s in %s on %s: expecting URI=%s\n", strings.Join(pods, ", "), ns, target.describe(), expected)
	states := newPodStates(pods)
	stopTick := tick(prog, states)
	vctx, cancel := context.WithTimeout(ctx, opts.Timeout)
	res, verr := verify.Verify(vctx, verify.Options{
		Client: target.Client, Namespace: ns, Pods: pods, Expected: expected, Upstream: upstream, Now: f.Now,
		Progress: func(ev verify.Event) { prog.Update(states.update(ev)) },
	})
	cancel()
	stopTick()
	prog.Done()

	out := verifyJSON{Expected: expected, Namespace: ns, Context: target.Context, Outcome: verify.OutcomeSuccess, Success: verr == nil}
	if res != nil {
		out.Pods, out.Elapsed = res.Pods, res.Elapsed
	}
	var wrong *verify.WrongIDError
	var timeout *verify.TimeoutError
	switch {
	case verr == nil:
	case errors.As(verr, &wrong):
		out.Outcome = verify.OutcomeWrongID
	case errors.As(verr, &timeout):
		out.Outcome = verify.OutcomeTimeout
	case ctx.Err() != nil:
		return ctx.Err() // interrupted: nothing to record
	default:
		out.Outcome = verify.OutcomeError
	}
	if verr != nil {
		out.Error = verr.Error()
		if wrong == nil { // a wrong ID is its own diagnosis; otherwise find the broken stage
			fmt.Fprintln(f.IO.ErrOut, "diagnosing…")
			dctx, dcancel := context.WithTimeout(ctx, 60*time.Second)
			ds, derr := verify.Diagnose(dctx, verify.DiagnoseOptions{Client: target.Client, Dynamic: target.Dynamic, Namespace: ns,
				StatefulSet: sts, Pods: pods, Expected: expected, Upstream: upstream, TeamCA: teamCA, CertificateName: certName, AgentCNs: cns, Verify: res, Now: f.Now})
			dcancel()
			if derr != nil {
				fmt.Fprintf(f.IO.ErrOut, "warning: diagnosis incomplete: %v\n", derr)
			}
			out.Diagnoses = ds
		}
	}
	if ctx.Err() != nil {
		return ctx.Err() // interrupted while diagnosing: no half-made record
	}
	if p != nil {
		rec := &verify.Record{Time: f.Now(), Context: target.Context, Namespace: ns, CASHA1: caSHA1(teamCA), Expected: expected, Outcome: out.Outcome,
			Message: out.Error, Pods: out.Pods, Diagnoses: out.Diagnoses}
		if err := verify.SaveRecord(p.Dir, rec); err != nil {
			fmt.Fprintf(f.IO.ErrOut, "warning: %v\n", err)
		}
	}

	if f.JSON() {
		if err := writeJSON(f.IO.Out, out); err != nil {
			return err
		}
		switch {
		case verr == nil:
			return nil
		case timeout != nil:
			return &silentError{code: exitTimeout}
		}
		return &silentError{code: exitFailure}
	}
	printVerifyText(f, out)
	switch {
	case verr == nil:
		return nil
	case wrong != nil:
		return failure(verr, "Envoy holds a different SPIFFE ID: correct spec.spiffeId in the SPIFFE ID PR (`spirepod pr spiffe-id`), or pass --expect if that ID is intended")
	case timeout != nil:
		return timeoutError(verr, firstFix(out.Diagnoses, "run again with a longer --timeout"))
	}
	return failure(verr, firstFix(out.Diagnoses, kubeHint))
}

func firstFix(ds []verify.Diagnosis, def string) string {
	for _, d := range ds {
		if d.Fix != "" {
			return d.Fix
		}
	}
	return def
}

func printVerifyText(f *Factory, out verifyJSON) {
	w := f.IO.Out
	s := f.IO
	for _, pr := range out.Pods {
		el := time.Duration(pr.Elapsed).Round(time.Millisecond)
		switch pr.State {
		case verify.StateMatched:
			fmt.Fprintf(w, "%s %s: URI=%s (after %s)\n", s.green("√"), pr.Pod, out.Expected, el)
		case verify.StateWrongID:
			var other []string
			for _, id := range pr.SeenIDs {
				if id != out.Expected {
					other = append(other, id)
				}
			}
			fmt.Fprintf(w, "%s %s: URI=%s, expected URI=%s\n    %s\n", s.red("×"), pr.Pod, strings.Join(other, ", URI="), out.Expected, pr.Line)
		default:
			msg := "no XFCC line with the expected URI"
			if len(pr.SeenIDs) > 0 {
				msg += "; seen URI=" + strings.Join(pr.SeenIDs, ", URI=")
			}
			fmt.Fprintf(w, "%s %s: %s (after %s)\n", s.red("×"), pr.Pod, msg, el)
		}
	}
	for _, d := range out.Diagnoses {
		fmt.Fprintln(w)
		printChecks(s, w, d.Stages)
		if len(d.Evidence) > 0 {
			fmt.Fprintln(w, "    evidence:")
			for _, e := range d.Evidence {
				fmt.Fprintf(w, "      %s\n", e)
			}
		}
		if d.Stage == verify.StageNone {
			fmt.Fprintf(w, "%s: %s\n    hint: %s\n", d.Pod, d.Summary, d.Fix)
		}
	}
}

// podStates renders the progress line from every pod's latest event.
type podStates struct {
	mu    sync.Mutex
	pods  []string
	state map[string]verify.Event
}

func newPodStates(pods []string) *podStates {
	return &podStates{pods: pods, state: map[string]verify.Event{}}
}

func (ps *podStates) update(ev verify.Event) string {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	ps.state[ev.Pod] = ev
	return ps.lineLocked()
}

func (ps *podStates) line() string {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	return ps.lineLocked()
}

func (ps *podStates) lineLocked() string {
	var parts []string
	matched := 0
	for _, p := range ps.pods {
		ev, ok := ps.state[p]
		st := verify.StateWaiting
		if ok {
			st = ev.State
		}
		if st == verify.StateMatched {
			matched++
		}
		part := p + " " + st
		if ok && ev.Message != "" {
			part += " (" + ev.Message + ")"
		}
		parts = append(parts, part)
	}
	return fmt.Sprintf("%d/%d matched: %s", matched, len(ps.pods), strings.Join(parts, "; "))
}

// tick redraws the progress line on a terminal so the clock moves.
func tick(prog *progress, ps *podStates) func() {
	if !prog.s.ErrTTY {
		return func() {}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				prog.Update(ps.line())
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}
