package apply_test

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	authzv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/version"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	fakediscovery "k8s.io/client-go/discovery/fake"
	"k8s.io/client-go/dynamic"
	dynfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/kubernetes"
	kfake "k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	k8stesting "k8s.io/client-go/testing"

	"github.com/spirepod/spirepod/internal/apply"
	"github.com/spirepod/spirepod/internal/checklist"
	"github.com/spirepod/spirepod/internal/pki"
	"github.com/spirepod/spirepod/internal/project"
	"github.com/spirepod/spirepod/internal/scaffold"
	"github.com/spirepod/spirepod/internal/status"
	"github.com/spirepod/spirepod/internal/testbed"
)

// readyScaffold is newScaffold with a SPIRE server CA in the bundle, so the
// local preflight passes.
func readyScaffold(t *testing.T, ns string, replicas int) *project.Project {
	t.Helper()
	p := newScaffold(t, ns, replicas)
	dir := t.TempDir()
	if _, err := pki.Generate(context.Background(), pki.GenerateOptions{
		CertPath: filepath.Join(dir, "server.crt"), KeyPath: filepath.Join(dir, "server.key"), Subject: pki.DefaultSubject("spire-server"),
		Rand: rand.Reader, Now: time.Now,
	}); err != nil {
		t.Fatal(err)
	}
	serverCA, err := os.ReadFile(filepath.Join(dir, "server.crt"))
	if err != nil {
		t.Fatal(err)
	}
	bundle := p.Path(scaffold.BundleFile(p.Environment))
	data, err := os.ReadFile(bundle)
	if err != nil {
		t.Fatal(err)
	}
	if data, err = scaffold.UpdateBundleFile(data, serverCA); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bundle, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// fakeCluster is client-go's fake clients with the little behaviour of a
// cluster Run depends on, keeping real state in the fakes' trackers:
// server-side apply stores the object (not with DryRun), cert-manager makes
// an applied issuer Ready, the StatefulSet controller makes its pods Running
// and ready (unless noPods), and every SelfSubjectAccessReview is allowed.
type fakeCluster struct {
	cs     *kfake.Clientset
	dyn    *dynfake.FakeDynamicClient
	mapper meta.RESTMapper
	noPods bool
	// conflict makes applying the StatefulSet a field-manager conflict.
	conflict string

	mu              sync.Mutex
	connects, pings int
	imageRequests   int
	events          []apply.RunEvent
	// cancelOnWait is called at the first wait event (the caller stopping).
	cancelOnWait func()
}

var clusterScoped = map[string]bool{"Namespace": true, "ClusterRole": true, "ClusterRoleBinding": true, "ClusterIssuer": true}

func newFakeCluster(t *testing.T, p *project.Project, objs ...runtime.Object) *fakeCluster {
	t.Helper()
	layers, err := apply.Build(p.Dir)
	if err != nil {
		t.Fatal(err)
	}
	mapper := meta.NewDefaultRESTMapper(nil)
	listKinds := map[schema.GroupVersionResource]string{}
	gvks := []schema.GroupVersionKind{{Version: "v1", Kind: "Namespace"}, {Group: "cert-manager.io", Version: "v1", Kind: "Certificate"}}
	for _, o := range apply.All(layers) {
		gvks = append(gvks, o.GroupVersionKind())
	}
	for _, gvk := range gvks {
		scope := meta.RESTScopeNamespace
		if clusterScoped[gvk.Kind] {
			scope = meta.RESTScopeRoot
		}
		mapper.Add(gvk, scope)
		plural, _ := meta.UnsafeGuessKindToResource(gvk)
		listKinds[plural] = gvk.Kind + "List"
	}
	f := &fakeCluster{
		cs:     kfake.NewClientset(objs...),
		dyn:    dynfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), listKinds),
		mapper: mapper,
	}
	f.cs.PrependReactor("create", "selfsubjectaccessreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
		r := a.(k8stesting.CreateAction).GetObject().(*authzv1.SelfSubjectAccessReview).DeepCopy()
		r.Status.Allowed = true
		return true, r, nil
	})
	// The admission preflight's dry-run pod: admitted, not stored.
	f.cs.PrependReactor("create", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		return true, a.(k8stesting.CreateAction).GetObject(), nil
	})
	f.dyn.PrependReactor("patch", "*", f.serverSideApply)
	f.setVersion("v1.34.2")
	return f
}

// setVersion is the Kubernetes version the fake API server reports.
func (f *fakeCluster) setVersion(v string) {
	f.cs.Discovery().(*fakediscovery.FakeDiscovery).FakedServerVersion = &version.Info{GitVersion: v}
}

func (f *fakeCluster) serverSideApply(a k8stesting.Action) (bool, runtime.Object, error) {
	pa := a.(k8stesting.PatchActionImpl)
	if pa.GetPatchType() != types.ApplyPatchType {
		return false, nil, nil
	}
	obj := &unstructured.Unstructured{}
	if err := obj.UnmarshalJSON(pa.GetPatch()); err != nil {
		return true, nil, err
	}
	gvr := pa.GetResource()
	if obj.GetKind() == "StatefulSet" && f.conflict != "" && (pa.PatchOptions.Force == nil || !*pa.PatchOptions.Force) {
		return true, nil, &apierrors.StatusError{ErrStatus: metav1.Status{
			Status: metav1.StatusFailure, Code: 409, Reason: metav1.StatusReasonConflict, Message: "Apply failed with 1 conflict",
			Details: &metav1.StatusDetails{Causes: []metav1.StatusCause{{Type: metav1.CauseTypeFieldManagerConflict,
				Message: fmt.Sprintf("conflict with %q using apps/v1", f.conflict), Field: ".spec.replicas"}}},
		}}
	}
	if len(pa.PatchOptions.DryRun) > 0 {
		return true, obj, nil
	}
	if obj.GetKind() == "Issuer" || obj.GetKind() == "ClusterIssuer" {
		_ = unstructured.SetNestedSlice(obj.Object, []any{map[string]any{"type": "Ready", "status": "True", "message": "Signing CA verified"}}, "status", "conditions")
	}
	tr := f.dyn.Tracker()
	var err error
	if _, gerr := tr.Get(gvr, pa.GetNamespace(), pa.GetName()); apierrors.IsNotFound(gerr) {
		err = tr.Create(gvr, obj, pa.GetNamespace())
	} else {
		err = tr.Update(gvr, obj, pa.GetNamespace())
	}
	if err != nil {
		return true, nil, err
	}
	if obj.GetKind() == "StatefulSet" && !f.noPods {
		replicas, _, _ := unstructured.NestedInt64(obj.Object, "spec", "replicas")
		for i := range int(replicas) {
			if err := setPod(f.cs, obj.GetNamespace(), fmt.Sprintf("%s-%d", obj.GetName(), i), true); err != nil {
				return true, nil, err
			}
		}
	}
	return true, obj, nil
}

// setPod creates or updates a pod, Running and ready or not.
func setPod(cs *kfake.Clientset, ns, name string, ready bool) error {
	cond := corev1.ConditionFalse
	if ready {
		cond = corev1.ConditionTrue
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: cond}}}}
	gvr := corev1.SchemeGroupVersion.WithResource("pods")
	if _, err := cs.Tracker().Get(gvr, ns, name); err == nil {
		return cs.Tracker().Update(gvr, pod, ns)
	}
	return cs.Tracker().Add(pod)
}

// options are RunOptions against the fake, named context, recording events.
func (f *fakeCluster) options(p *project.Project, kubeContext string) apply.RunOptions {
	return apply.RunOptions{
		Project: p, Now: time.Now(), SkipImageCheck: true, Timeout: time.Minute, Wait: true,
		ImageCheck: apply.ImageCheckOptions{Keychain: anonymous, Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
			f.mu.Lock()
			f.imageRequests++
			f.mu.Unlock()
			return nil, errors.New("no registry in this test")
		})},
		Connect: func() (*apply.Target, error) {
			f.mu.Lock()
			f.connects++
			f.mu.Unlock()
			return &apply.Target{Context: kubeContext, Cluster: "kind-" + kubeContext, Server: "https://127.0.0.1:6443",
				Client: f.cs, Dynamic: f.dyn, Mapper: f.mapper,
				Ping: func(context.Context) error { f.mu.Lock(); f.pings++; f.mu.Unlock(); return nil }}, nil
		},
		Event: func(ev apply.RunEvent) {
			f.mu.Lock()
			f.events = append(f.events, ev)
			cancel := f.cancelOnWait
			f.mu.Unlock()
			if ev.Kind == apply.EventWait && cancel != nil {
				cancel()
			}
		},
	}
}

// kinds are the events' kinds (with the stage), a run of one kind once.
func (f *fakeCluster) kinds() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, ev := range f.events {
		k := string(ev.Kind)
		if ev.Stage != "" {
			k += ":" + string(ev.Stage)
		}
		if len(out) > 0 && out[len(out)-1] == k {
			continue
		}
		out = append(out, k)
	}
	return out
}

// requests are what the clients sent to the cluster.
func (f *fakeCluster) requests() int { return len(f.cs.Actions()) + len(f.dyn.Actions()) }

type roundTripFunc func(*http.Request) (*http.Response, error)

func (fn roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return fn(r) }

func wantKinds(t *testing.T, f *fakeCluster, want ...string) {
	t.Helper()
	if got := f.kinds(); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("events %v, want %v", got, want)
	}
}

func wantPreflightError(t *testing.T, err error, stage apply.Stage, id string) *apply.PreflightError {
	t.Helper()
	var pe *apply.PreflightError
	if !errors.As(err, &pe) {
		t.Fatalf("err = %v, want a *PreflightError", err)
	}
	if pe.Stage != stage || len(pe.Failed) == 0 || pe.Failed[0].ID != id {
		t.Fatalf("preflight error at %s %+v, want stage %s, check %s", pe.Stage, pe.Failed, stage, id)
	}
	if !strings.HasSuffix(pe.Error(), "nothing was applied") {
		t.Errorf("message %q does not say nothing was applied", pe.Error())
	}
	return pe
}

// TestRunLocalPreflight: the local checks come first, in order, and a
// failure stops the run before the cluster is even resolved.
func TestRunLocalPreflight(t *testing.T) {
	for _, tc := range []struct {
		name  string
		spoil func(t *testing.T, p *project.Project)
		stage apply.Stage
		id    string
		build bool
	}{
		{name: "team CA missing", stage: apply.StageTeamCA, id: "ca-files", spoil: func(t *testing.T, p *project.Project) {
			if err := os.Remove(p.Path(p.Paths.CAKey)); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "spirepod.yaml and the manifests disagree", stage: apply.StageScaffold, id: "project-matches-manifests", spoil: func(t *testing.T, p *project.Project) {
			p.Replicas = 3
		}},
		{name: "server CA bundle empty", stage: apply.StageScaffold, id: "server-ca-bundle"},
		{name: "kustomization does not build", build: true, spoil: func(t *testing.T, p *project.Project) {
			if err := os.WriteFile(filepath.Join(p.Dir, "kustomization.yaml"), []byte("resources: [nowhere.yaml]\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var p *project.Project
			if tc.id == "server-ca-bundle" {
				p = newScaffold(t, "team-local", 1)
			} else {
				p = readyScaffold(t, "team-local", 1)
			}
			f := newFakeCluster(t, p)
			if tc.spoil != nil {
				tc.spoil(t, p)
			}
			rep, err := apply.Run(t.Context(), f.options(p, "dev"))
			if rep == nil {
				t.Fatal("no report")
			}
			if tc.build {
				var be *apply.BuildError
				if !errors.As(err, &be) || be.Dir != p.Dir || !strings.Contains(err.Error(), "nowhere.yaml") {
					t.Fatalf("err = %v, want a *BuildError naming the missing file", err)
				}
				wantKinds(t, f, "preflight:team-ca")
			} else {
				wantPreflightError(t, err, tc.stage, tc.id)
				if r, ok := checklist.Find(rep.Preflight, tc.id); !ok || r.Status != checklist.Fail || r.Hint == "" {
					t.Errorf("report's %s: %+v, want a failure with a hint", tc.id, r)
				}
			}
			if f.connects != 0 || f.requests() != 0 {
				t.Fatalf("the cluster was resolved (%d) or asked (%d requests) after a local failure", f.connects, f.requests())
			}
		})
	}
}

// TestRunClusterOrder: the cluster is pinged before any registry is asked,
// the images are checked before the protected-context guard, the guard
// before the cluster preflight, and the preflight before any change.
func TestRunClusterOrder(t *testing.T) {
	p := readyScaffold(t, "team-order", 1)

	t.Run("resolving the cluster fails: its error as is, no ping", func(t *testing.T) {
		f := newFakeCluster(t, p)
		o := f.options(p, "dev")
		errNoContext := errors.New(`--context "nope" not found`)
		o.Connect = func() (*apply.Target, error) { return nil, errNoContext }
		o.SkipImageCheck = false
		_, err := apply.Run(t.Context(), o)
		if err != errNoContext {
			t.Fatalf("err = %v, want Connect's error as is", err)
		}
		if f.imageRequests != 0 {
			t.Fatal("a registry was asked before the cluster was resolved")
		}
		wantKinds(t, f, "preflight:team-ca", "preflight:scaffold")
	})

	t.Run("the ping fails: its error as is, before the registries", func(t *testing.T) {
		f := newFakeCluster(t, p)
		o := f.options(p, "dev")
		errUnreachable := errors.New("cluster unreachable")
		connect := o.Connect
		o.Connect = func() (*apply.Target, error) {
			tg, err := connect()
			tg.Ping = func(context.Context) error { return errUnreachable }
			return tg, err
		}
		o.SkipImageCheck = false
		rep, err := apply.Run(t.Context(), o)
		if err != errUnreachable {
			t.Fatalf("err = %v, want the ping's error as is", err)
		}
		if f.imageRequests != 0 || f.requests() != 0 {
			t.Fatalf("after a failed ping: %d registry and %d cluster requests", f.imageRequests, f.requests())
		}
		if rep.Context != "dev" || rep.Server != "https://127.0.0.1:6443" {
			t.Errorf("the report does not name the cluster: %+v", rep)
		}
		wantKinds(t, f, "preflight:team-ca", "preflight:scaffold", "target")
	})

	t.Run("an image that does not exist: refused before the protected-context guard", func(t *testing.T) {
		f := newFakeCluster(t, p)
		o := f.options(p, "team-prod-eu")
		o.SkipImageCheck = false
		host := startRegistry(t, nil) // empty: every image is unknown
		o.ImageCheck.Transport = roundTripFunc(func(r *http.Request) (*http.Response, error) {
			f.mu.Lock()
			f.imageRequests++
			f.mu.Unlock()
			r = r.Clone(r.Context())
			r.URL.Scheme, r.URL.Host, r.Host = "http", host, host
			return http.DefaultTransport.RoundTrip(r)
		})
		_, err := apply.Run(t.Context(), o)
		pe := wantPreflightError(t, err, apply.StageImages, "image:docker.io/alpine/k8s:1.31.12")
		if len(pe.Failed) != 4 {
			t.Errorf("%d images refused, want the scaffold's 4: %+v", len(pe.Failed), pe.Failed)
		}
		if f.pings != 1 || f.imageRequests == 0 || f.requests() != 0 {
			t.Fatalf("pings %d, registry requests %d, cluster requests %d: want 1, some, 0", f.pings, f.imageRequests, f.requests())
		}
		wantKinds(t, f, "preflight:team-ca", "preflight:scaffold", "target", "image-check", "preflight:images")
	})

	for _, tc := range []struct {
		name, context string
		patterns      []string
		allow, dryRun bool
		refused       string // the pattern, or "" for allowed
	}{
		{name: "a prod context is refused", context: "team-prod-eu", refused: "*prod*"},
		{name: "a prd context is refused", context: "eu-prd", refused: "*prd*"},
		{name: "--yes allows it", context: "team-prod-eu", allow: true},
		{name: "a dry run needs no --yes", context: "team-prod-eu", dryRun: true},
		{name: "spirepod.yaml's patterns replace the defaults", context: "team-prod-eu", patterns: []string{"staging"}},
		{name: "spirepod.yaml's patterns refuse", context: "staging-1", patterns: []string{"staging"}, refused: "staging"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q := *p
			q.ProtectedContexts = tc.patterns
			f := newFakeCluster(t, &q, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: q.Namespace}})
			o := f.options(&q, tc.context)
			o.AllowProtected, o.DryRun, o.Wait = tc.allow, tc.dryRun, false
			_, err := apply.Run(t.Context(), o)
			var pc *apply.ProtectedContextError
			if tc.refused == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if !errors.As(err, &pc) || pc.Pattern != tc.refused || pc.Context != tc.context {
				t.Fatalf("err = %v, want a refusal by %q", err, tc.refused)
			}
			if want := fmt.Sprintf("%q (context %s) matches protected pattern %q", tc.context, tc.context, tc.refused); err.Error() != want {
				t.Errorf("message %q, want %q", err, want)
			}
			if f.requests() != 0 {
				t.Fatalf("%d cluster requests after the refusal", f.requests())
			}
		})
	}

	t.Run("a missing namespace fails the cluster preflight and changes nothing", func(t *testing.T) {
		f := newFakeCluster(t, p)
		_, err := apply.Run(t.Context(), f.options(p, "dev"))
		pe := wantPreflightError(t, err, apply.StageCluster, "namespace")
		if !strings.Contains(pe.Failed[0].Hint, "--create-namespace") {
			t.Errorf("hint %q", pe.Failed[0].Hint)
		}
		for _, a := range f.dyn.Actions() {
			if a.GetVerb() == "patch" {
				t.Fatalf("something was applied after a failed preflight: %v", a)
			}
		}
		wantKinds(t, f, "preflight:team-ca", "preflight:scaffold", "target", "preflight:cluster")
	})
}

// TestRunApplies: with --create-namespace the Namespace goes first, every
// object is created and reported, then the issuer and the pods are waited
// for; a second run finds everything unchanged; a dry run stores nothing
// and waits for nothing.
func TestRunApplies(t *testing.T) {
	p := readyScaffold(t, "team-run", 2)
	f := newFakeCluster(t, p)
	gvrSTS := schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "statefulsets"}

	t.Run("dry run", func(t *testing.T) {
		o := f.options(p, "dev")
		o.DryRun, o.CreateNamespace = true, true
		rep, err := apply.Run(t.Context(), o)
		if err != nil {
			t.Fatal(err)
		}
		if !rep.DryRun || rep.Wait != nil || len(rep.Objects) == 0 || outcomesOf(rep.Objects)[apply.Created] != len(rep.Objects) {
			t.Fatalf("dry-run report %+v, want every object created, no wait", rep)
		}
		if _, err := f.dyn.Tracker().Get(gvrSTS, p.Namespace, p.StatefulSet); !apierrors.IsNotFound(err) {
			t.Fatalf("the dry run stored the StatefulSet: %v", err)
		}
		wantKinds(t, f, "preflight:team-ca", "preflight:scaffold", "target", "preflight:cluster", "object", "applied")
	})

	t.Run("apply and wait", func(t *testing.T) {
		f.events = nil
		o := f.options(p, "dev")
		o.CreateNamespace = true
		rep, err := apply.Run(t.Context(), o)
		if err != nil {
			t.Fatal(err)
		}
		if rep.Objects[0].Kind != "Namespace" || rep.Objects[0].Name != p.Namespace || rep.Objects[0].Layer != "namespace" {
			t.Fatalf("first object %+v, want the Namespace", rep.Objects[0])
		}
		if got := outcomesOf(rep.Objects); got[apply.Created] != len(rep.Objects) {
			t.Fatalf("outcomes %v, want all created", got)
		}
		if _, err := f.dyn.Tracker().Get(gvrSTS, p.Namespace, p.StatefulSet); err != nil {
			t.Fatalf("the StatefulSet was not stored: %v", err)
		}
		if rep.Wait == nil || !rep.Wait.IssuerReady || strings.Join(rep.Wait.PodsReady, ",") != p.PodName(0)+","+p.PodName(1) {
			t.Fatalf("wait %+v", rep.Wait)
		}
		if rep.Context != "dev" || rep.Cluster != "kind-dev" || len(rep.Preflight) == 0 || checklist.Failed(rep.Preflight) {
			t.Fatalf("report %+v", rep)
		}
		wantKinds(t, f, "preflight:team-ca", "preflight:scaffold", "target", "preflight:cluster", "object", "applied", "wait")
		var applied *apply.Result
		for _, ev := range f.events {
			if ev.Kind == apply.EventApplied {
				applied = ev.Result
			}
		}
		if applied == nil || len(applied.Objects) != len(rep.Objects) {
			t.Fatalf("EventApplied carries %+v", applied)
		}
	})

	t.Run("second run changes nothing", func(t *testing.T) {
		o := f.options(p, "dev")
		o.CreateNamespace = true
		rep, err := apply.Run(t.Context(), o)
		if err != nil {
			t.Fatal(err)
		}
		if got := outcomesOf(rep.Objects); got[apply.Unchanged] != len(rep.Objects) {
			t.Fatalf("outcomes %v, want all unchanged", got)
		}
	})
}

func outcomesOf(objs []apply.ObjectResult) map[apply.Outcome]int {
	m := map[apply.Outcome]int{}
	for _, o := range objs {
		m[o.Outcome]++
	}
	return m
}

// TestRunRefusals: what the cluster refuses after the preflight is typed:
// a field conflict is an *ApplyError holding the *ConflictError and no wait
// starts; pods that never get ready are a *WaitError, TimedOut only when
// RunOptions.Timeout ran out (not when the caller stopped).
func TestRunRefusals(t *testing.T) {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "team-refuse"}}

	t.Run("field conflict", func(t *testing.T) {
		p := readyScaffold(t, "team-refuse", 1)
		f := newFakeCluster(t, p, ns)
		f.conflict = "flux"
		rep, err := apply.Run(t.Context(), f.options(p, "dev"))
		var ae *apply.ApplyError
		var ce *apply.ConflictError
		if !errors.As(err, &ae) || !errors.As(err, &ce) || ae.Error() != ce.Error() {
			t.Fatalf("err = %v, want an *ApplyError with the *ConflictError's message", err)
		}
		if !strings.Contains(err.Error(), `.spec.replicas is owned by field manager "flux"`) {
			t.Fatalf("message %q", err)
		}
		if len(rep.Objects) == 0 || rep.Wait != nil {
			t.Fatalf("report %+v: want the objects, no wait", rep)
		}
		wantKinds(t, f, "preflight:team-ca", "preflight:scaffold", "target", "preflight:cluster", "object")

		o := f.options(p, "dev")
		o.ForceConflicts = true
		if _, err := apply.Run(t.Context(), o); err != nil {
			t.Fatalf("with ForceConflicts: %v", err)
		}
	})

	t.Run("the caller stops the wait", func(t *testing.T) {
		p := readyScaffold(t, "team-refuse", 1)
		f := newFakeCluster(t, p, ns)
		f.noPods = true
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		f.cancelOnWait = cancel
		rep, err := apply.Run(ctx, f.options(p, "dev"))
		var we *apply.WaitError
		if !errors.As(err, &we) || we.TimedOut || ctx.Err() == nil {
			t.Fatalf("err = %v (%+v), want a *WaitError, not timed out", err, we)
		}
		if rep.Wait != we.Status {
			t.Fatal("the report's wait status is not the error's")
		}
	})

	t.Run("the pods never get ready within Timeout", func(t *testing.T) {
		p := readyScaffold(t, "team-refuse", 1)
		f := newFakeCluster(t, p, ns)
		f.noPods = true
		o := f.options(p, "dev")
		o.Timeout = 2 * time.Second
		rep, err := apply.Run(t.Context(), o)
		var we *apply.WaitError
		if !errors.As(err, &we) || !we.TimedOut {
			t.Fatalf("err = %v, want a *WaitError that timed out", err)
		}
		if !we.Status.IssuerReady || strings.Join(we.Status.PodsPending, ",") != p.PodName(0) || !strings.Contains(err.Error(), p.PodName(0)) {
			t.Fatalf("status %+v, error %q: want the issuer ready and the pod named as pending", we.Status, err)
		}
		if len(rep.Objects) == 0 {
			t.Fatal("the report lost the applied objects")
		}
	})
}

// TestInPlace: before apply nothing is in place and every object would be
// created; after it the cluster holds the scaffold and the pods are ready;
// a pod that is not ready, or a manifest that changed, is not in place. It
// changes nothing: every apply it sends is a dry run.
func TestInPlace(t *testing.T) {
	p := readyScaffold(t, "team-inplace", 2)
	f := newFakeCluster(t, p, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: p.Namespace}})
	tg := &apply.Target{Client: f.cs, Dynamic: f.dyn, Mapper: f.mapper}
	inPlace := func(t *testing.T) *apply.InPlaceStatus {
		t.Helper()
		before := len(f.dyn.Actions())
		st, err := apply.InPlace(t.Context(), apply.InPlaceOptions{Project: p, Target: tg})
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range f.dyn.Actions()[before:] {
			if pa, ok := a.(k8stesting.PatchActionImpl); ok && len(pa.PatchOptions.DryRun) == 0 {
				t.Fatalf("InPlace applied for real: %v", a)
			}
		}
		return st
	}

	st := inPlace(t)
	if st.InPlace || len(st.Changed) != st.Objects || st.Objects == 0 || st.Ready.IssuerReady || len(st.Ready.PodsPending) != 2 {
		t.Fatalf("before apply: %+v %+v", st, st.Ready)
	}
	for _, c := range st.Changed {
		if c.Outcome != apply.Created {
			t.Fatalf("before apply %s is %s, want created", c.Ref(), c.Outcome)
		}
	}

	o := f.options(p, "dev")
	if _, err := apply.Run(t.Context(), o); err != nil {
		t.Fatal(err)
	}
	if st := inPlace(t); !st.InPlace || len(st.Changed) != 0 {
		t.Fatalf("after apply: %+v %+v", st, st.Ready)
	}

	if err := setPod(f.cs, p.Namespace, p.PodName(1), false); err != nil {
		t.Fatal(err)
	}
	if st := inPlace(t); st.InPlace || len(st.Changed) != 0 || strings.Join(st.Ready.PodsPending, ",") != p.PodName(1) {
		t.Fatalf("with pod 1 not ready: %+v %+v", st, st.Ready)
	}
	if err := setPod(f.cs, p.Namespace, p.PodName(1), true); err != nil {
		t.Fatal(err)
	}

	// A changed manifest (its spirepod.yaml value with it): the StatefulSet
	// would be configured.
	gvr := schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "statefulsets"}
	live, err := f.dyn.Tracker().Get(gvr, p.Namespace, p.StatefulSet)
	if err != nil {
		t.Fatal(err)
	}
	u := live.(*unstructured.Unstructured).DeepCopy()
	_ = unstructured.SetNestedField(u.Object, int64(1), "spec", "replicas")
	if err := f.dyn.Tracker().Update(gvr, u, p.Namespace); err != nil {
		t.Fatal(err)
	}
	st = inPlace(t)
	if st.InPlace || len(st.Changed) != 1 || st.Changed[0].Kind != "StatefulSet" || st.Changed[0].Outcome != apply.Configured {
		t.Fatalf("with the live StatefulSet edited: %+v", st.Changed)
	}

	p.Replicas = 3 // spirepod.yaml alone: apply would refuse, and so does InPlace
	defer func() { p.Replicas = 2 }()
	var de *apply.DriftError
	if _, err := apply.InPlace(t.Context(), apply.InPlaceOptions{Project: p, Target: tg}); !errors.As(err, &de) {
		t.Fatalf("err = %v, want a *DriftError", err)
	}
}

// TestRunAndInPlaceOnTestbed: InPlace against a real API server, whose
// dry-run apply is the judge: not in place before Run (the namespace does
// not exist, nothing is there); Run creates the namespace, applies and
// waits; then it is in place; a field another manager took over (with
// another value) is seen as the conflict apply would meet.
func TestRunAndInPlaceOnTestbed(t *testing.T) {
	b := testbed.Require(t)
	c := testbed.StartCluster(t, b, testbed.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	p := readyScaffold(t, "team-inplace", 1)
	tg := &apply.Target{Context: c.Context, Cluster: "testbed", Server: c.Server, Client: c.Client, Dynamic: c.Dynamic, Mapper: newEnv(t, c, p).opts.Mapper}

	st, err := apply.InPlace(ctx, apply.InPlaceOptions{Project: p, Target: tg})
	if err != nil {
		t.Fatal(err)
	}
	if st.InPlace || len(st.Changed) != st.Objects || st.Ready.IssuerReady || len(st.Ready.PodsPending) != 1 {
		t.Fatalf("before apply: %+v %+v", st, st.Ready)
	}
	// status's cluster step is the same answer (issue 22): nothing applied.
	wantCluster(t, p, tg, map[string]checklist.Status{"namespace": checklist.Todo, "objects": checklist.Todo, "cluster-issuer": checklist.Todo, "pods": checklist.Todo},
		map[string]string{"objects": fmt.Sprintf("none of the scaffold's %d objects applied yet", st.Objects)})

	rep, err := apply.Run(ctx, apply.RunOptions{
		Project: p, Now: time.Now(), SkipImageCheck: true, CreateNamespace: true, Wait: true, Timeout: 2 * time.Minute,
		Connect: func() (*apply.Target, error) { return tg, nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	if outcomesOf(rep.Objects)[apply.Created] != len(rep.Objects) || rep.Wait == nil || len(rep.Wait.PodsReady) != 1 {
		t.Fatalf("run: %+v", rep)
	}

	if st, err = apply.InPlace(ctx, apply.InPlaceOptions{Project: p, Target: tg}); err != nil || !st.InPlace {
		t.Fatalf("after apply: %v %+v %+v", err, st, st.Ready)
	}
	wantCluster(t, p, tg, map[string]checklist.Status{"namespace": checklist.OK, "objects": checklist.OK, "cluster-issuer": checklist.OK, "pods": checklist.OK},
		map[string]string{"objects": fmt.Sprintf("%d objects", st.Objects), "pods": "1/1"})

	// A user who may read but not patch: the dry run is refused, and status
	// says which permission it needs instead of judging by other reads.
	wantCluster(t, p, readOnlyTarget(t, ctx, c, p.Namespace), map[string]checklist.Status{"namespace": checklist.OK, "objects": checklist.Warn, "cluster-issuer": checklist.OK, "pods": checklist.OK},
		map[string]string{"objects": "needs get, list and patch on"})

	patch := []byte(`{"apiVersion":"apps/v1","kind":"StatefulSet","metadata":{"name":"` + p.StatefulSet + `","namespace":"` + p.Namespace + `"},"spec":{"replicas":2}}`)
	if _, err := c.Client.AppsV1().StatefulSets(p.Namespace).Patch(ctx, p.StatefulSet, types.ApplyPatchType, patch,
		metav1.PatchOptions{FieldManager: "flux", Force: ptrTrue()}); err != nil {
		t.Fatal(err)
	}
	if st, err = apply.InPlace(ctx, apply.InPlaceOptions{Project: p, Target: tg}); err != nil {
		t.Fatal(err)
	}
	if st.InPlace || len(st.Changed) != 1 || st.Changed[0].Kind != "StatefulSet" || len(st.Changed[0].Conflicts) == 0 || st.Changed[0].Conflicts[0].Manager != "flux" {
		t.Fatalf("after flux set .spec.replicas to 2: %+v", st.Changed)
	}
	wantCluster(t, p, tg, map[string]checklist.Status{"objects": checklist.Fail},
		map[string]string{"objects": `drifted: StatefulSet ` + p.Namespace + `/` + p.StatefulSet + ` (spec.replicas changed by "flux")`})

	// An object deleted by hand is missing, by name.
	cm := firstOfKind(t, p, "ConfigMap")
	if err := c.Client.CoreV1().ConfigMaps(p.Namespace).Delete(ctx, cm, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	wantCluster(t, p, tg, map[string]checklist.Status{"objects": checklist.Fail},
		map[string]string{"objects": "missing: ConfigMap " + p.Namespace + "/" + cm})
}

// firstOfKind is the name of the scaffold's first object of the kind.
func firstOfKind(t *testing.T, p *project.Project, kind string) string {
	t.Helper()
	layers, err := apply.Build(p.Dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range layers {
		for _, o := range l.Objects {
			if o.GetKind() == kind {
				return o.GetName()
			}
		}
	}
	t.Fatalf("the scaffold has no %s", kind)
	return ""
}

// wantCluster runs status and checks its cluster step: each check id has
// the status, and its message contains the text.
func wantCluster(t *testing.T, p *project.Project, tg *apply.Target, want map[string]checklist.Status, msg map[string]string) {
	t.Helper()
	rep, err := status.Run(t.Context(), status.Options{Project: p, Cluster: tg, Context: tg.Context})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]checklist.Result{}
	for _, r := range rep.Checks {
		if r.Group == status.Step6 {
			got[r.ID] = r
		}
	}
	for id, st := range want {
		r, ok := got[id]
		switch {
		case !ok:
			t.Errorf("status has no cluster check %q: %+v", id, rep.Checks)
		case r.Status != st:
			t.Errorf("status %s: %s (%s), want %s", id, r.Status, r.Message, st)
		case !strings.Contains(r.Message, msg[id]):
			t.Errorf("status %s: %q, want it to say %q", id, r.Message, msg[id])
		}
	}
}

// readOnlyTarget is tg as a service account of ns that may get and list
// everything in it, and nothing else.
func readOnlyTarget(t *testing.T, ctx context.Context, c *testbed.Cluster, ns string) *apply.Target {
	t.Helper()
	const name = "status-reader"
	if _, err := c.Client.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	role := &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: name},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{"*"}, Resources: []string{"*"}, Verbs: []string{"get", "list"}}}}
	if _, err := c.Client.RbacV1().Roles(ns).Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	rb := &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: name},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: name},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: name, Namespace: ns}}}
	if _, err := c.Client.RbacV1().RoleBindings(ns).Create(ctx, rb, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	tok, err := c.Client.CoreV1().ServiceAccounts(ns).CreateToken(ctx, name, &authnv1.TokenRequest{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := rest.AnonymousClientConfig(c.Config)
	cfg.BearerToken = tok.Status.Token
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	dc, err := discovery.NewDiscoveryClientForConfig(c.Config) // discovery as the admin: the mapper is not under test
	if err != nil {
		t.Fatal(err)
	}
	return &apply.Target{Context: "reader", Cluster: "testbed", Server: c.Server, Client: client, Dynamic: dyn,
		Mapper: restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))}
}

// TestRunRefusesOldKubernetes: the scaffold's gen-cert is a native sidecar
// (issue 21.15); an API server older than v1.29 drops its restartPolicy and
// the pod would never start, so the cluster preflight refuses it, naming
// the version and the container, and nothing is applied. v1.29 passes.
func TestRunRefusesOldKubernetes(t *testing.T) {
	p := readyScaffold(t, "team-version", 1)
	gvrSTS := schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "statefulsets"}
	for _, tc := range []struct {
		version string
		refused bool
	}{{"v1.28.15", true}, {"v1.27.3-eks-1234", true}, {"v1.29.0", false}, {"v1.34.2+k3s1", false}} {
		t.Run(tc.version, func(t *testing.T) {
			f := newFakeCluster(t, p)
			f.setVersion(tc.version)
			o := f.options(p, "dev")
			o.CreateNamespace = true
			_, err := apply.Run(t.Context(), o)
			if !tc.refused {
				if err != nil {
					t.Fatalf("refused %s: %v", tc.version, err)
				}
				return
			}
			pe := wantPreflightError(t, err, apply.StageCluster, "kubernetes-version")
			if msg := pe.Failed[0].Message; !strings.Contains(msg, tc.version) || !strings.Contains(msg, "gen-cert") || !strings.Contains(msg, "v1.29") {
				t.Errorf("message %q does not name the version, gen-cert and v1.29", msg)
			}
			if _, err := f.dyn.Tracker().Get(gvrSTS, p.Namespace, p.StatefulSet); !apierrors.IsNotFound(err) {
				t.Fatalf("the StatefulSet was applied on %s: %v", tc.version, err)
			}
		})
	}

	// A server without a release version (a build without stamping) that
	// drops the field, as a pre-1.29 server does: the pod dry run sees it.
	t.Run("unstamped server that drops the field", func(t *testing.T) {
		f := newFakeCluster(t, p)
		f.setVersion("v0.0.0-master+$Format:%H$")
		f.cs.PrependReactor("create", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
			pod := a.(k8stesting.CreateAction).GetObject().(*corev1.Pod).DeepCopy()
			for i := range pod.Spec.InitContainers {
				pod.Spec.InitContainers[i].RestartPolicy = nil
			}
			return true, pod, nil
		})
		o := f.options(p, "dev")
		o.CreateNamespace = true
		_, err := apply.Run(t.Context(), o)
		pe := wantPreflightError(t, err, apply.StageCluster, "pod-admission")
		if msg := pe.Failed[0].Message; !strings.Contains(msg, "gen-cert") || !strings.Contains(msg, "native sidecars") {
			t.Errorf("message %q does not name gen-cert and native sidecars", msg)
		}
		if _, err := f.dyn.Tracker().Get(gvrSTS, p.Namespace, p.StatefulSet); !apierrors.IsNotFound(err) {
			t.Fatalf("the StatefulSet was applied: %v", err)
		}
	})
}

// TestStatusWithoutCertManager: on a cluster without cert-manager's CRDs,
// status's objects check fails naming the unserved kinds and says to
// install cert-manager, rather than "to do: spirepod apply", which would
// fail the same way.
func TestStatusWithoutCertManager(t *testing.T) {
	b := testbed.Require(t, testbed.Bins.ControlPlaneSet)
	c := testbed.StartCluster(t, b, testbed.Options{NoCertManager: true})
	p := readyScaffold(t, "team-nocm", 1)
	tg := &apply.Target{Context: c.Context, Cluster: "testbed", Server: c.Server, Client: c.Client, Dynamic: c.Dynamic, Mapper: newEnv(t, c, p).opts.Mapper}
	rep, err := status.Run(t.Context(), status.Options{Project: p, Cluster: tg, Context: tg.Context})
	if err != nil {
		t.Fatal(err)
	}
	r, ok := checklist.Find(rep.Checks, "objects")
	if !ok || r.Status != checklist.Fail || !strings.Contains(r.Message, "does not serve the kind of") || !strings.Contains(r.Message, "Issuer") ||
		!strings.Contains(r.Hint, "install cert-manager") {
		t.Fatalf("objects check %+v: want a failure naming the Issuer's kind and cert-manager", r)
	}
}
