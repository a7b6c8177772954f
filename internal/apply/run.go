package apply

import (
	"context"
	"fmt"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/spirepod/spirepod/internal/checklist"
	"github.com/spirepod/spirepod/internal/pki"
	"github.com/spirepod/spirepod/internal/project"
)

// DefaultTimeout bounds the cluster preflight, the retries of an unreachable
// API server and the wait, when RunOptions.Timeout is not set.
const DefaultTimeout = 5 * time.Minute

// Target is the cluster Run applies to: its names and its clients.
type Target struct {
	// Context, Cluster and Server are the kubeconfig context, its cluster's
	// name and the API server URL: the protected-context guard matches
	// them, and the Report carries them.
	Context, Cluster, Server string
	Client                   kubernetes.Interface
	Dynamic                  dynamic.Interface
	Mapper                   meta.RESTMapper
	// Ping asks the API server whether it answers, before any registry or
	// other request; nil skips it. Its error is returned as is.
	Ping func(context.Context) error
}

// RunOptions are the inputs of Run.
type RunOptions struct {
	// Project is the team's spirepod.yaml; Project.Dir holds the scaffold.
	Project *project.Project
	// Now judges the team CA and the SPIRE server CA bundle.
	Now time.Time
	// Connect resolves the cluster and builds its clients. Run calls it
	// only once the local checks pass (a missing CA is said before a
	// kubeconfig problem) and returns its error as is.
	Connect func() (*Target, error)
	// SkipImageCheck skips resolving the pods' images in their registries;
	// ImageCheck says how to resolve them otherwise.
	SkipImageCheck bool
	ImageCheck     ImageCheckOptions
	// AllowProtected allows changing a cluster whose context, cluster name
	// or server matches Project.ProtectedContexts (DefaultProtectedContexts
	// when it has none). A dry run needs no allowance.
	AllowProtected bool
	// DryRun applies with dryRun=All: the server validates and reports,
	// nothing is stored, nothing is waited for.
	DryRun          bool
	ForceConflicts  bool
	CreateNamespace bool
	ReplaceCA       bool
	// Wait waits for the issuer to be Ready and the pods to be Running and
	// ready once everything is applied.
	Wait bool
	// Timeout bounds the cluster preflight, the retries of an unreachable
	// API server and the wait (DefaultTimeout when zero).
	Timeout time.Duration
	// Event, if set, is told of progress. EventObject may come from
	// several goroutines at once.
	Event func(RunEvent)
}

// Stage is one step of apply's preflight.
type Stage string

const (
	StageTeamCA   Stage = "team-ca"  // the team CA files exist and pass pki inspect
	StageScaffold Stage = "scaffold" // spirepod.yaml matches the manifests; the server CA bundle is usable
	StageImages   Stage = "images"   // the pods' images exist in their registries
	StageCluster  Stage = "cluster"  // cert-manager, the namespace, the CA Secret, permissions, admission
)

// RunEventKind says what a RunEvent reports.
type RunEventKind string

const (
	// EventPreflight: a preflight Stage ended with Results (a failure among
	// them ends the run with a *PreflightError).
	EventPreflight RunEventKind = "preflight"
	// EventTarget: the cluster is resolved (Target); it is pinged next.
	EventTarget RunEventKind = "target"
	// EventImageCheck: the images are about to be resolved in their registries.
	EventImageCheck RunEventKind = "image-check"
	// EventObject: one object was applied, or refused (Object).
	EventObject RunEventKind = "object"
	// EventApplied: every object is applied (Result); the wait, if any, is next.
	EventApplied RunEventKind = "applied"
	// EventWait: progress of the wait (Message).
	EventWait RunEventKind = "wait"
)

// RunEvent is a progress report of Run.
type RunEvent struct {
	Kind    RunEventKind
	Stage   Stage
	Results []checklist.Result
	Target  *Target
	Object  *ObjectResult
	Result  *Result
	Message string
}

// Report is what Run did: the JSON of `spirepod apply -o json`.
type Report struct {
	Context   string             `json:"context"`
	Cluster   string             `json:"cluster"`
	Server    string             `json:"server"`
	DryRun    bool               `json:"dryRun"`
	Preflight []checklist.Result `json:"preflight"`
	Objects   []ObjectResult     `json:"objects"`
	Wait      *WaitStatus        `json:"wait,omitempty"`
}

// PreflightError is a preflight that failed: nothing was applied.
type PreflightError struct {
	// Stage is the stage that failed; Failed its failed checks.
	Stage  Stage
	Failed []checklist.Result
}

func (e *PreflightError) Error() string {
	if len(e.Failed) == 1 {
		return fmt.Sprintf("preflight: %s: %s; nothing was applied", e.Failed[0].Name, e.Failed[0].Message)
	}
	names := make([]string, len(e.Failed))
	for i, r := range e.Failed {
		names[i] = r.Name
	}
	return fmt.Sprintf("preflight: %d checks failed (%s); nothing was applied", len(e.Failed), strings.Join(names, "; "))
}

// ProtectedContextError is a refusal to change a protected cluster without
// RunOptions.AllowProtected: Name (the context, cluster or server) matches
// Pattern.
type ProtectedContextError struct {
	Pattern, Name, Context string
}

func (e *ProtectedContextError) Error() string {
	return fmt.Sprintf("%q (context %s) matches protected pattern %q", e.Name, e.Context, e.Pattern)
}

// BuildError is a scaffold whose kustomizations do not build.
type BuildError struct {
	Dir string
	Err error
}

func (e *BuildError) Error() string { return e.Err.Error() }
func (e *BuildError) Unwrap() error { return e.Err }

// ApplyError is a server-side apply that did not complete: Err is a
// *ConflictError or an *IncompleteError, and the Report lists each object.
type ApplyError struct{ Err error }

func (e *ApplyError) Error() string { return e.Err.Error() }
func (e *ApplyError) Unwrap() error { return e.Err }

// WaitError is a wait that ended before the issuer and the pods were ready.
type WaitError struct {
	// Status is what was ready when it ended.
	Status *WaitStatus
	// TimedOut is true when RunOptions.Timeout ran out (not the caller's
	// context).
	TimedOut bool
	Err      error
}

func (e *WaitError) Error() string { return e.Err.Error() }
func (e *WaitError) Unwrap() error { return e.Err }

// Run is `spirepod apply`: the local preflight (team CA, build, spirepod.yaml
// against the manifests, the server CA bundle), then the cluster (resolved
// by Connect and pinged before the registries are asked: a wrong context is
// the cause to say first), the images, the protected-context guard, the
// cluster preflight, the namespace (CreateNamespace), server-side apply, and
// the wait. Nothing is changed unless every preflight passes. The Report is
// never nil: on an error it holds what was done so far. Errors are typed:
// *PreflightError, *BuildError, *ProtectedContextError, *ApplyError,
// *WaitError; Connect's and Ping's errors come back as they were returned.
func Run(ctx context.Context, o RunOptions) (*Report, error) {
	p := o.Project
	rep := &Report{DryRun: o.DryRun}
	emit := func(ev RunEvent) {
		if o.Event != nil {
			o.Event(ev)
		}
	}
	preflight := func(s Stage, rs []checklist.Result) error {
		rep.Preflight = append(rep.Preflight, rs...)
		emit(RunEvent{Kind: EventPreflight, Stage: s, Results: rs})
		if !checklist.Failed(rep.Preflight) {
			return nil
		}
		pe := &PreflightError{Stage: s}
		for _, r := range rep.Preflight {
			if r.Status == checklist.Fail {
				pe.Failed = append(pe.Failed, r)
			}
		}
		return pe
	}

	ca := pki.LoadTeamCA(pki.TeamCAOptions{CertPath: p.Path(p.Paths.CACert), KeyPath: p.Path(p.Paths.CAKey), Now: o.Now, Group: "team CA"})
	if err := preflight(StageTeamCA, ca.Results); err != nil {
		return rep, err
	}
	layers, err := Build(p.Dir)
	if err != nil {
		return rep, &BuildError{Dir: p.Dir, Err: err}
	}
	if err := preflight(StageScaffold, append([]checklist.Result{CheckProjectResult(layers, p)}, CheckBundle(layers, o.Now)...)); err != nil {
		return rep, err
	}

	// The cluster before the registries: a wrong context or a cluster that
	// does not answer is the real cause, said first and once.
	t, err := o.Connect()
	if err != nil {
		return rep, err
	}
	rep.Context, rep.Cluster, rep.Server = t.Context, t.Cluster, t.Server
	emit(RunEvent{Kind: EventTarget, Target: t})
	if t.Ping != nil {
		if err := t.Ping(ctx); err != nil {
			return rep, err
		}
	}
	if !o.SkipImageCheck {
		emit(RunEvent{Kind: EventImageCheck})
		if err := preflight(StageImages, CheckImages(ctx, All(layers), o.ImageCheck)); err != nil {
			return rep, err
		}
	}
	patterns := p.ProtectedContexts
	if len(patterns) == 0 {
		patterns = DefaultProtectedContexts
	}
	if pat, name, ok := Protected([]string{t.Context, t.Cluster, t.Server}, patterns); ok && !o.AllowProtected && !o.DryRun {
		return rep, &ProtectedContextError{Pattern: pat, Name: name, Context: t.Context}
	}

	timeout := o.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	pctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := preflight(StageCluster, CheckCluster(pctx, ClusterOptions{
		Layers: layers, Client: t.Client, Mapper: t.Mapper, Namespace: p.Namespace, CreateNamespace: o.CreateNamespace,
		Issuer: p.Issuer(), ReplaceCA: o.ReplaceCA,
	})); err != nil {
		return rep, err
	}
	if o.CreateNamespace {
		ns := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": p.Namespace},
		}}
		layers = append([]Layer{{Name: "namespace", Objects: []*unstructured.Unstructured{ns}}}, layers...)
	}

	res, err := Apply(pctx, Options{
		Layers: layers, Dynamic: t.Dynamic, Mapper: t.Mapper, FieldManager: p.FieldManager(),
		DryRun: o.DryRun, ForceConflicts: o.ForceConflicts, RetryFor: timeout,
		Progress: func(ev Event) {
			if ev.Object != nil {
				emit(RunEvent{Kind: EventObject, Object: ev.Object})
			}
		},
	})
	if res != nil {
		rep.Objects = res.Objects
	}
	if err != nil {
		return rep, &ApplyError{Err: err}
	}
	emit(RunEvent{Kind: EventApplied, Result: res})
	if !o.Wait || o.DryRun {
		return rep, nil
	}
	st, err := Wait(pctx, WaitOptions{
		Client: t.Client, Dynamic: t.Dynamic, Issuer: p.Issuer(), Namespace: p.Namespace, Pods: p.PodNames(),
		Progress: func(s string) { emit(RunEvent{Kind: EventWait, Message: s}) },
	})
	rep.Wait = st
	if err != nil {
		return rep, &WaitError{Status: st, TimedOut: pctx.Err() != nil && ctx.Err() == nil, Err: err}
	}
	return rep, nil
}
