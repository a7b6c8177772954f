package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

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
	ro := verify.RunOptions{Project: p, Client: target.Client, Dynamic: target.Dynamic, Context: target.Context,
		Namespace: opts.kube.Namespace(""), Expected: opts.Expect, Timeout: opts.Timeout, Ping: target.ping, Now: f.Now}
	if p != nil {
		if ro.Namespace, err = opts.kube.projectNamespace(p); err != nil {
			return err
		}
		ro.Drift = checkDrift(p)
	}
	if opts.Pod != "" {
		ro.Pods = []string{opts.Pod}
	}
	line := &verifyProgress{s: f.IO, where: target.describe()}
	ro.Event = line.event
	res, verr := verify.Run(ctx, ro)
	line.stop()
	if res == nil {
		return verr // nothing verified: drift, unreachable, interrupted
	}

	out := verifyJSON{Expected: res.Expected, Namespace: res.Namespace, Context: res.Context, Outcome: res.Outcome, Success: verr == nil,
		Elapsed: res.Elapsed, Pods: res.Pods, Diagnoses: res.Diagnoses}
	if verr != nil {
		out.Error = verr.Error()
	}
	return verifyExit(f, out, verr)
}

// verifyExit renders the outcome and maps Run's error to the exit code:
// 0 every pod matched, 124 timed out, 1 otherwise.
func verifyExit(f *Factory, out verifyJSON, verr error) error {
	var wrong *verify.WrongIDError
	var timeout *verify.TimeoutError
	errors.As(verr, &wrong)
	errors.As(verr, &timeout)
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

// verifyProgress renders verify.Run's events on stderr: what is verified
// where, the progress line of every pod, "diagnosing…" and warnings.
type verifyProgress struct {
	s        *IOStreams
	where    string
	prog     *progress
	states   *podStates
	stopTick func()
}

func (v *verifyProgress) event(ev verify.RunEvent) {
	switch ev.Kind {
	case verify.RunStarted:
		v.prog = newProgress(v.s)
		fmt.Fprintf(v.s.ErrOut, "verifying %s in %s on %s: expecting URI=%s\n", strings.Join(ev.Pods, ", "), ev.Namespace, v.where, ev.Expected)
		v.states = newPodStates(ev.Pods)
		v.stopTick = tick(v.prog, v.states)
	case verify.RunPod:
		v.prog.Update(v.states.update(ev.Pod))
	case verify.RunWaited:
		v.stop()
	case verify.RunDiagnosing:
		fmt.Fprintln(v.s.ErrOut, "diagnosing…")
	case verify.RunDiagnosisIncomplete:
		fmt.Fprintf(v.s.ErrOut, "warning: diagnosis incomplete: %v\n", ev.Err)
	case verify.RunRecordNotSaved:
		fmt.Fprintf(v.s.ErrOut, "warning: %v\n", ev.Err)
	}
}

// stop ends the progress line (once).
func (v *verifyProgress) stop() {
	if v.stopTick == nil {
		return
	}
	v.stopTick()
	v.prog.Done()
	v.stopTick = nil
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
