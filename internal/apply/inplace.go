package apply

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/spirepod/spirepod/internal/certmanager"
	"github.com/spirepod/spirepod/internal/project"
)

// InPlaceOptions are the inputs of InPlace.
type InPlaceOptions struct {
	// Project is the team's spirepod.yaml; Project.Dir holds the scaffold.
	Project *project.Project
	// Target is the cluster: Dynamic, Mapper and Client are read; Ping, if
	// set, is asked first.
	Target *Target
	// RetryFor bounds the retries of an unreachable API server (default 10 s).
	RetryFor time.Duration
}

// InPlaceStatus says whether the cluster holds what Run would apply.
type InPlaceStatus struct {
	// InPlace: nothing would change and the issuer and every pod are ready.
	InPlace bool `json:"inPlace"`
	// Objects is how many objects Run would apply (without a Namespace it
	// would create).
	Objects int `json:"objects"`
	// Changed are the objects apply would create or configure, or that the
	// server would refuse (Error says why: a field another manager owns, a
	// namespace that does not exist).
	Changed []ObjectResult `json:"changed,omitempty"`
	// Ready is the issuer's and the pods' readiness now.
	Ready *WaitStatus `json:"ready"`
}

// InPlace answers "is apply done?" without changing anything: it asks the API
// server what server-side apply would do (a dry run per object, as Diff does
// for `spirepod diff`), and reads once whether the issuer is Ready and the
// pods are Running and ready. Like `spirepod diff`, it refuses a scaffold
// whose spirepod.yaml and manifests disagree (*DriftError) or that does not
// build (*BuildError).
func InPlace(ctx context.Context, o InPlaceOptions) (*InPlaceStatus, error) {
	p, t := o.Project, o.Target
	layers, err := Build(p.Dir)
	if err != nil {
		return nil, &BuildError{Dir: p.Dir, Err: err}
	}
	if err := CheckProject(layers, p); err != nil {
		return nil, err
	}
	if t.Ping != nil {
		if err := t.Ping(ctx); err != nil {
			return nil, err
		}
	}
	retryFor := o.RetryFor
	if retryFor <= 0 {
		retryFor = 10 * time.Second
	}
	diffs, err := Diff(ctx, Options{Layers: layers, Dynamic: t.Dynamic, Mapper: t.Mapper, FieldManager: p.FieldManager(), RetryFor: retryFor})
	if err != nil {
		return nil, err
	}
	st := &InPlaceStatus{Objects: len(diffs)}
	for _, d := range Changed(diffs) {
		st.Changed = append(st.Changed, d.ObjectResult)
	}
	if st.Ready, err = Ready(ctx, WaitOptions{Client: t.Client, Dynamic: t.Dynamic, Issuer: p.Issuer(), Namespace: p.Namespace, Pods: p.PodNames()}); err != nil {
		return nil, err
	}
	st.InPlace = len(st.Changed) == 0 && st.Ready.IssuerReady && len(st.Ready.PodsPending) == 0
	return st, nil
}

// Changed are the diffs of objects that apply would create or configure,
// or that the server would refuse: what `spirepod diff` counts.
func Changed(diffs []ObjectDiff) []ObjectDiff {
	var out []ObjectDiff
	for _, d := range diffs {
		if d.Outcome != Unchanged {
			out = append(out, d)
		}
	}
	return out
}

// Ready reads once what Wait waits for: whether the issuer is Ready (an
// issuer that does not exist is not: IssuerMissing) and which of the pods
// are Running and ready (and why the others are not). A zero Issuer or no
// Pods skips that read. `spirepod status` shows its answer as checks.
func Ready(ctx context.Context, o WaitOptions) (*WaitStatus, error) {
	st := &WaitStatus{}
	if o.Issuer.Name != "" {
		u, err := o.Issuer.Get(ctx, o.Dynamic)
		switch {
		case apierrors.IsNotFound(err) && !certmanager.NotInstalled(err):
			st.IssuerMissing, st.IssuerMessage = true, "not found"
		case err != nil:
			return st, fmt.Errorf("read %s: %w", o.Issuer, err)
		default:
			st.IssuerReady, _, st.IssuerMessage = certmanager.ReadyCondition(u)
		}
	}
	if len(o.Pods) == 0 {
		return st, nil
	}
	list, err := o.Client.CoreV1().Pods(o.Namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return st, fmt.Errorf("list pods in namespace %s: %w", o.Namespace, err)
	}
	pods := make(map[string]*corev1.Pod, len(list.Items))
	for i := range list.Items {
		pods[list.Items[i].Name] = &list.Items[i]
	}
	st.setPods(o.Pods, pods)
	return st, nil
}
