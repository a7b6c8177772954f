package verify

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"time"

	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/spirepod/spirepod/internal/pki"
	"github.com/spirepod/spirepod/internal/project"
)

// RunOptions for Run: step 7 of the guide as `spirepod verify` and
// `spirepod up` take it.
type RunOptions struct {
	// Project is the scaffold. Without one (nil), Namespace, Pods and
	// Expected are all required, and nothing is recorded.
	Project *project.Project
	// Drift is the answer of the check that spirepod.yaml and the
	// scaffold's manifests agree (nil: they do). A non-nil Drift is returned
	// as it is, before the cluster is contacted.
	Drift error

	Client  kubernetes.Interface
	Dynamic dynamic.Interface
	// Context is the kube context's name; the record keeps it.
	Context string

	// Namespace, Pods and Expected override the project's namespace, its
	// replicas and its workload SPIFFE ID.
	Namespace string
	Pods      []string
	Expected  string

	// Timeout bounds the wait for the expected line (not the diagnosis);
	// 0 leaves only ctx's deadline.
	Timeout time.Duration
	// DiagnoseTimeout bounds the diagnosis after a failure; default 60s.
	DiagnoseTimeout time.Duration

	// Ping, when set, is asked first whether the cluster answers; its error
	// is returned as it is (an unreachable cluster fails within seconds,
	// not after Timeout).
	Ping func(context.Context) error
	// Now is the clock; default time.Now.
	Now func() time.Time
	// Event, when set, receives Run's progress, in order. It is called from
	// several goroutines, never concurrently.
	Event func(RunEvent)

	// Verify and Diagnose are this package's functions unless replaced
	// (tests give Run's branches their outcomes without a cluster).
	Verify   func(context.Context, Options) (*Result, error)
	Diagnose func(context.Context, DiagnoseOptions) ([]Diagnosis, error)
}

// Kinds of RunEvent, in the order Run reports them.
const (
	// RunStarted: the cluster answered; Namespace, Pods and Expected say
	// what is verified.
	RunStarted = "started"
	// RunPod: a pod's state changed (Pod).
	RunPod = "pod"
	// RunWaited: the wait for the expected line is over.
	RunWaited = "waited"
	// RunDiagnosing: the verification failed; the stages are walked.
	RunDiagnosing = "diagnosing"
	// RunDiagnosisIncomplete: the walk stopped early (Err); the diagnoses
	// made so far are kept.
	RunDiagnosisIncomplete = "diagnosis-incomplete"
	// RunRecordNotSaved: the record could not be written (Err); the
	// outcome stands.
	RunRecordNotSaved = "record-not-saved"
)

// RunEvent is a progress report of Run.
type RunEvent struct {
	Kind string
	// Namespace, Pods and Expected (RunStarted).
	Namespace string
	Pods      []string
	Expected  string
	// Pod is the pod's event (RunPod).
	Pod Event
	// Err is the warning's cause (RunDiagnosisIncomplete, RunRecordNotSaved).
	Err error
}

// RunResult is the outcome of a verification that ran to an end.
type RunResult struct {
	Expected  string
	Namespace string
	Context   string
	// Outcome is OutcomeSuccess, OutcomeWrongID, OutcomeTimeout or OutcomeError.
	Outcome   string
	Elapsed   Duration
	Pods      []PodResult
	Diagnoses []Diagnosis
	// Record is what was saved for `spirepod status` (nil without a
	// project, or when it could not be written).
	Record *Record
}

// Success says every pod matched.
func (r *RunResult) Success() bool { return r.Outcome == OutcomeSuccess }

// Run verifies, diagnoses and records: the drift answer first, then the
// ping, then Verify (bounded by Timeout, progress as RunPod events); when it
// fails other than by a wrong ID (its own diagnosis), Diagnose walks the
// stages; with a project, the outcome is saved as the Record that
// CheckLast judges, tied to the kube context, namespace and team CA.
//
// The error is Verify's: nil, *WrongIDError, *TimeoutError or another, with
// the RunResult filled. The RunResult is nil when nothing was verified:
// Drift, the ping's error, options that name no pod or ID, or ctx ended
// (an interrupt leaves no record, not even a half-diagnosed one).
func Run(ctx context.Context, o RunOptions) (*RunResult, error) {
	if o.Drift != nil {
		return nil, o.Drift
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Verify == nil {
		o.Verify = Verify
	}
	if o.Diagnose == nil {
		o.Diagnose = Diagnose
	}
	if o.DiagnoseTimeout <= 0 {
		o.DiagnoseTimeout = 60 * time.Second
	}
	emit := func(ev RunEvent) {
		if o.Event != nil {
			o.Event(ev)
		}
	}
	pl, err := plan(o)
	if err != nil {
		return nil, err
	}
	if o.Ping != nil {
		if err := o.Ping(ctx); err != nil {
			return nil, err
		}
	}

	emit(RunEvent{Kind: RunStarted, Namespace: pl.Namespace, Pods: pl.Pods, Expected: pl.Expected})
	vctx, cancel := ctx, context.CancelFunc(func() {})
	if o.Timeout > 0 {
		vctx, cancel = context.WithTimeout(ctx, o.Timeout)
	}
	vres, verr := o.Verify(vctx, Options{Client: o.Client, Namespace: pl.Namespace, Pods: pl.Pods, Expected: pl.Expected,
		Upstream: pl.Upstream, Now: o.Now, Progress: func(ev Event) { emit(RunEvent{Kind: RunPod, Pod: ev}) }})
	cancel()
	emit(RunEvent{Kind: RunWaited})

	res := &RunResult{Expected: pl.Expected, Namespace: pl.Namespace, Context: o.Context, Outcome: OutcomeSuccess}
	if vres != nil {
		res.Pods, res.Elapsed = vres.Pods, vres.Elapsed
	}
	var wrong *WrongIDError
	var timeout *TimeoutError
	switch {
	case verr == nil:
	case errors.As(verr, &wrong):
		res.Outcome = OutcomeWrongID
	case errors.As(verr, &timeout):
		res.Outcome = OutcomeTimeout
	case ctx.Err() != nil:
		return nil, ctx.Err() // interrupted: nothing to record
	default:
		res.Outcome = OutcomeError
	}
	if verr != nil && wrong == nil { // a wrong ID is its own diagnosis; otherwise find the broken stage
		emit(RunEvent{Kind: RunDiagnosing})
		dctx, dcancel := context.WithTimeout(ctx, o.DiagnoseTimeout)
		ds, derr := o.Diagnose(dctx, DiagnoseOptions{Client: o.Client, Dynamic: o.Dynamic, Namespace: pl.Namespace,
			StatefulSet: pl.StatefulSet, Pods: pl.Pods, Expected: pl.Expected, Upstream: pl.Upstream, TeamCA: pl.TeamCA,
			CertificateName: pl.CertificateName, AgentCNs: pl.AgentCNs, Verify: vres, Now: o.Now})
		dcancel()
		if derr != nil {
			emit(RunEvent{Kind: RunDiagnosisIncomplete, Err: derr})
		}
		res.Diagnoses = ds
	}
	if ctx.Err() != nil {
		return nil, ctx.Err() // interrupted while diagnosing: no half-made record
	}
	if o.Project != nil {
		rec := &Record{Time: o.Now(), Context: o.Context, Namespace: pl.Namespace, CASHA1: caSHA1(pl.TeamCA), Expected: pl.Expected,
			Outcome: res.Outcome, Pods: res.Pods, Diagnoses: res.Diagnoses}
		if verr != nil {
			rec.Message = verr.Error()
		}
		if err := SaveRecord(o.Project.Dir, rec); err != nil {
			emit(RunEvent{Kind: RunRecordNotSaved, Err: err})
		} else {
			res.Record = rec
		}
	}
	return res, verr
}

// runPlan is what Run verifies, from the project and the overrides.
type runPlan struct {
	Namespace, Expected, Upstream, StatefulSet string
	Pods, AgentCNs                             []string
	CertificateName                            func(string) string
	TeamCA                                     *x509.Certificate
}

func plan(o RunOptions) (runPlan, error) {
	var pl runPlan
	if p := o.Project; p != nil {
		pl = runPlan{Namespace: p.Namespace, Expected: p.WorkloadSpiffeID(), Upstream: p.Upstream.SpiffeID, StatefulSet: p.StatefulSet,
			Pods: p.PodNames(), AgentCNs: p.AgentCNs(), CertificateName: p.CertificateName}
		pl.TeamCA = pki.LoadTeamCA(pki.TeamCAOptions{CertPath: p.Path(p.Paths.CACert), Now: o.Now()}).Cert
	}
	if o.Namespace != "" {
		pl.Namespace = o.Namespace
	}
	if o.Expected != "" {
		pl.Expected = o.Expected
	}
	if len(o.Pods) > 0 {
		pl.Pods = o.Pods
	}
	var missing []string
	for _, m := range []struct {
		field string
		unset bool
	}{{"Client", o.Client == nil}, {"Namespace", pl.Namespace == ""}, {"Pods", len(pl.Pods) == 0}, {"Expected", pl.Expected == ""}} {
		if m.unset {
			missing = append(missing, m.field)
		}
	}
	if len(missing) > 0 {
		return pl, fmt.Errorf("verify: RunOptions has no %s (without a Project they must be set)", strings.Join(missing, ", "))
	}
	return pl, nil
}

// caSHA1 is the team CA's fingerprint, "" when there is none.
func caSHA1(c *x509.Certificate) string {
	if c == nil {
		return ""
	}
	return pki.SHA1Fingerprint(c)
}
