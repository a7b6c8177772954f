package apply

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
)

// Outcome of applying one object.
type Outcome string

const (
	Created    Outcome = "created"
	Configured Outcome = "configured"
	Unchanged  Outcome = "unchanged"
	Failed     Outcome = "failed"
	NotApplied Outcome = "not-applied"
)

// Conflict is a field owned by another field manager.
type Conflict struct {
	Field   string `json:"field"`
	Manager string `json:"manager"`
}

// ObjectResult is what happened to one object.
type ObjectResult struct {
	Layer     string     `json:"layer"`
	Kind      string     `json:"kind"`
	Namespace string     `json:"namespace,omitempty"`
	Name      string     `json:"name"`
	Outcome   Outcome    `json:"outcome"`
	Error     string     `json:"error,omitempty"`
	Conflicts []Conflict `json:"conflicts,omitempty"`
}

// Ref is Kind namespace/name.
func (r ObjectResult) Ref() string {
	if r.Namespace == "" {
		return r.Kind + "/" + r.Name
	}
	return fmt.Sprintf("%s %s/%s", r.Kind, r.Namespace, r.Name)
}

// Event is a progress report.
type Event struct {
	Object  *ObjectResult
	Message string
}

// Options for Apply.
type Options struct {
	Layers  []Layer
	Dynamic dynamic.Interface
	Mapper  meta.RESTMapper
	// DryRun applies with dryRun=All: the server validates and reports, nothing is stored.
	DryRun bool
	// FieldManager is the server-side-apply field manager: one per team
	// (project.FieldManager), so a cross-team overwrite is a conflict.
	FieldManager string
	// ForceConflicts takes ownership of fields other managers own.
	ForceConflicts bool
	// Deadline bounds retries when the API server is unreachable.
	RetryFor time.Duration
	Progress func(Event)
	// Sleep waits between retries (tests may shorten it); nil means time.After.
	Sleep func(context.Context, time.Duration) error
}

// Result of Apply.
type Result struct {
	Objects []ObjectResult `json:"objects"`
}

// Count returns how many objects had an outcome.
func (r *Result) Count(o Outcome) int {
	n := 0
	for _, ob := range r.Objects {
		if ob.Outcome == o {
			n++
		}
	}
	return n
}

// ConflictError says which managers own the fields spirepod wanted.
type ConflictError struct {
	Objects []ObjectResult
}

func (e *ConflictError) Error() string {
	var parts []string
	for _, o := range e.Objects {
		for _, c := range o.Conflicts {
			parts = append(parts, fmt.Sprintf("%s: %s is owned by field manager %q", o.Ref(), c.Field, c.Manager))
		}
	}
	return "field conflicts: " + strings.Join(parts, "; ")
}

// IncompleteError lists what was and was not applied when the API server
// stayed unreachable or refused.
type IncompleteError struct {
	Cause   error
	Applied []string
	Missing []string
}

func (e *IncompleteError) Error() string {
	return fmt.Sprintf("%v\napplied (%d): %s\nnot applied, or not confirmed (%d): %s", e.Cause,
		len(e.Applied), strings.Join(e.Applied, ", "), len(e.Missing), strings.Join(e.Missing, ", "))
}

func (e *IncompleteError) Unwrap() error { return e.Cause }

// rank orders kinds: cluster prerequisites and namespaces first, the CA
// Secret before the issuer (Issuer or ClusterIssuer), configuration before
// the StatefulSet.
func rank(kind string) int {
	switch kind {
	case "CustomResourceDefinition":
		return 0
	case "Namespace":
		return 1
	case "Secret", "ServiceAccount", "ConfigMap":
		return 2
	case "ClusterRole", "Role":
		return 3
	case "ClusterRoleBinding", "RoleBinding":
		return 4
	case "ClusterIssuer", "Issuer", "Service":
		return 5
	case "StatefulSet", "Deployment", "DaemonSet":
		return 7
	default:
		return 6
	}
}

// wave is when an object is applied: CRDs and Namespaces first, then
// everything the pods need (Secrets, ConfigMaps, RBAC roles, issuers,
// Certificates), then the bindings (RBAC's escalation check wants the role to
// exist), then the workloads. Objects of one wave go together, so a remote
// API server costs one round trip per wave, not per object.
func wave(kind string) int {
	switch r := rank(kind); {
	case r <= 1:
		return 0
	case r == 4:
		return 2
	case r == 7:
		return 3
	default:
		return 1
	}
}

// Apply server-side applies every layer: first it reads every live object
// at once (one round trip), then applies in waves (see wave), the objects of
// a wave in parallel. A transient failure (API server unreachable, 5xx, 429)
// is retried with backoff for RetryFor; then the result lists what was and
// was not applied. Re-running completes the job.
func Apply(ctx context.Context, opts Options) (*Result, error) {
	type item struct {
		layer string
		o     *unstructured.Unstructured
		rc    dynamic.ResourceInterface
		live  *unstructured.Unstructured
		err   error
	}
	var items []*item
	for _, layer := range opts.Layers {
		objs := append([]*unstructured.Unstructured(nil), layer.Objects...)
		sort.SliceStable(objs, func(a, b int) bool { return rank(objs[a].GetKind()) < rank(objs[b].GetKind()) })
		for _, o := range objs {
			items = append(items, &item{layer: layer.Name, o: o})
		}
	}
	res := &Result{Objects: make([]ObjectResult, len(items))}
	objs := make([]*unstructured.Unstructured, len(items))
	for i, it := range items {
		objs[i] = it.o
	}
	rcs, lives, errs := readAllLive(ctx, opts, objs)
	for i, it := range items {
		it.rc, it.live, it.err = rcs[i], lives[i], errs[i]
	}
	var firstErr error
	var conflicts []ObjectResult
	for i, it := range items {
		res.Objects[i] = newResult(it.layer, it.o, NotApplied)
		if it.err != nil && firstErr == nil {
			res.Objects[i].Outcome, res.Objects[i].Error = Failed, it.err.Error()
			firstErr = fmt.Errorf("apply %s: %w", res.Objects[i].Ref(), it.err)
		}
	}
	for w := 0; w <= 3 && firstErr == nil; w++ {
		var idx []int
		for i, it := range items {
			if wave(it.o.GetKind()) == w {
				idx = append(idx, i)
			}
		}
		errs := make([]error, len(idx))
		var g errgroup.Group
		for k := range idx {
			g.Go(func() error {
				it := items[idx[k]]
				res.Objects[idx[k]], errs[k] = patchOne(ctx, opts, it.layer, it.o, it.rc, it.live)
				if opts.Progress != nil {
					opts.Progress(Event{Object: &res.Objects[idx[k]]})
				}
				return nil // errs keeps every object's outcome
			})
		}
		_ = g.Wait()
		for k, err := range errs {
			if err == nil {
				continue
			}
			r := res.Objects[idx[k]]
			if len(r.Conflicts) > 0 {
				conflicts = append(conflicts, r)
				continue
			}
			if firstErr == nil {
				firstErr = fmt.Errorf("apply %s: %w", r.Ref(), err)
			}
		}
		if len(conflicts) > 0 && firstErr == nil {
			firstErr = &ConflictError{Objects: conflicts}
		}
	}
	if firstErr != nil {
		var ce *ConflictError
		if errors.As(firstErr, &ce) {
			return res, firstErr
		}
		inc := &IncompleteError{Cause: firstErr}
		for _, o := range res.Objects {
			if o.Outcome == Failed || o.Outcome == NotApplied {
				inc.Missing = append(inc.Missing, o.Ref())
			} else {
				inc.Applied = append(inc.Applied, o.Ref())
			}
		}
		return res, inc
	}
	return res, nil
}

func newResult(layer string, o *unstructured.Unstructured, oc Outcome) ObjectResult {
	return ObjectResult{Layer: layer, Kind: o.GetKind(), Namespace: o.GetNamespace(), Name: o.GetName(), Outcome: oc}
}

// resourceFor maps an object to its dynamic resource client.
func resourceFor(opts Options, o *unstructured.Unstructured) (dynamic.ResourceInterface, error) {
	gvk := o.GroupVersionKind()
	m, err := opts.Mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		if meta.IsNoMatchError(err) {
			return nil, fmt.Errorf("the cluster does not serve %s: %w", gvk.String(), err)
		}
		return nil, fmt.Errorf("look up %s in the API server's discovery: %w", gvk.String(), err) // unreachable, forbidden, …
	}
	if m.Scope.Name() == meta.RESTScopeNameNamespace {
		return opts.Dynamic.Resource(m.Resource).Namespace(o.GetNamespace()), nil
	}
	return opts.Dynamic.Resource(m.Resource), nil
}

// readAllLive finds each object's resource and reads its live object (nil
// when absent), listing each kind and namespace once: a handful of
// requests, whatever the number of pods (against 5,000 single reads that
// the client's rate limit spreads over 50 s). A List the user may not make
// falls back to a Get per object.
func readAllLive(ctx context.Context, opts Options, objs []*unstructured.Unstructured) ([]dynamic.ResourceInterface, []*unstructured.Unstructured, []error) {
	rcs := make([]dynamic.ResourceInterface, len(objs))
	lives := make([]*unstructured.Unstructured, len(objs))
	errs := make([]error, len(objs))
	type group struct {
		rc    dynamic.ResourceInterface
		index []int
	}
	groups := map[string]*group{}
	var keys []string
	for i, o := range objs {
		if errs[i] = retryOp(ctx, opts, func() error {
			var err error
			rcs[i], err = resourceFor(opts, o)
			return err
		}); errs[i] != nil {
			continue
		}
		gvk := o.GroupVersionKind()
		key := gvk.String() + "/" + o.GetNamespace()
		if groups[key] == nil {
			groups[key] = &group{rc: rcs[i]}
			keys = append(keys, key)
		}
		groups[key].index = append(groups[key].index, i)
	}
	var lists errgroup.Group
	for _, key := range keys {
		lists.Go(func() error {
			g := groups[key]
			var list *unstructured.UnstructuredList
			err := retryOp(ctx, opts, func() error {
				var err error
				list, err = g.rc.List(ctx, metav1.ListOptions{})
				return err
			})
			if err == nil {
				byName := make(map[string]*unstructured.Unstructured, len(list.Items))
				for j := range list.Items {
					byName[list.Items[j].GetName()] = &list.Items[j]
				}
				for _, i := range g.index {
					lives[i] = byName[objs[i].GetName()]
				}
				return nil
			}
			if ctx.Err() != nil {
				for _, i := range g.index {
					errs[i] = err
				}
				return nil
			}
			var gets errgroup.Group
			for _, i := range g.index {
				gets.Go(func() error {
					errs[i] = retryOp(ctx, opts, func() error {
						var err error
						lives[i], err = g.rc.Get(ctx, objs[i].GetName(), metav1.GetOptions{})
						if apierrors.IsNotFound(err) {
							lives[i], err = nil, nil
						}
						return err
					})
					return nil // errs keeps every object's outcome
				})
			}
			return gets.Wait()
		})
	}
	_ = lists.Wait()
	return rcs, lives, errs
}

// patchOne server-side applies o and judges the outcome against live.
func patchOne(ctx context.Context, opts Options, layer string, o *unstructured.Unstructured, rc dynamic.ResourceInterface, live *unstructured.Unstructured) (ObjectResult, error) {
	r := newResult(layer, o, Failed)
	data, err := json.Marshal(o.Object)
	if err != nil {
		return r, err
	}
	po := metav1.PatchOptions{FieldManager: opts.FieldManager, Force: &opts.ForceConflicts}
	if opts.DryRun {
		po.DryRun = []string{metav1.DryRunAll}
	}
	var got *unstructured.Unstructured
	err = retryOp(ctx, opts, func() error {
		var err error
		got, err = rc.Patch(ctx, o.GetName(), types.ApplyPatchType, data, po)
		return err
	})
	if err != nil {
		r.Error = err.Error()
		r.Conflicts = conflictsOf(err)
		return r, err
	}
	// Judged on content, not resourceVersion: live was read before the
	// first wave, and controllers (cert-manager on Certificates, the
	// StatefulSet controller) update status in between.
	switch {
	case live == nil:
		r.Outcome = Created
	case !Equivalent(live, got):
		r.Outcome = Configured
	default:
		r.Outcome = Unchanged
	}
	return r, nil
}

// conflictsOf reads the field manager conflicts from an apply error.
func conflictsOf(err error) []Conflict {
	var se apierrors.APIStatus
	if !errors.As(err, &se) || se.Status().Reason != metav1.StatusReasonConflict || se.Status().Details == nil {
		return nil
	}
	var out []Conflict
	for _, c := range se.Status().Details.Causes {
		if c.Type != metav1.CauseTypeFieldManagerConflict {
			continue
		}
		mgr := c.Message
		if i := strings.Index(mgr, `"`); i >= 0 {
			if j := strings.Index(mgr[i+1:], `"`); j >= 0 {
				mgr = mgr[i+1 : i+1+j]
			}
		}
		out = append(out, Conflict{Field: c.Field, Manager: mgr})
	}
	return out
}

// Equivalent compares two objects ignoring server bookkeeping.
func Equivalent(a, b *unstructured.Unstructured) bool {
	return jsonEqual(Clean(a), Clean(b))
}

// Clean drops fields the server manages (managedFields, resourceVersion,
// generation, uid, creationTimestamp, status) for comparisons and diffs.
func Clean(o *unstructured.Unstructured) map[string]any {
	if o == nil {
		return nil
	}
	c := o.DeepCopy()
	for _, f := range [][]string{
		{"metadata", "managedFields"}, {"metadata", "resourceVersion"}, {"metadata", "generation"},
		{"metadata", "uid"}, {"metadata", "creationTimestamp"}, {"status"},
	} {
		unstructured.RemoveNestedField(c.Object, f...)
	}
	return c.Object
}

func jsonEqual(a, b any) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return string(ja) == string(jb)
}
