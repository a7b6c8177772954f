package apply

import (
	"context"
	"fmt"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	watchtools "k8s.io/client-go/tools/watch"

	"github.com/spirepod/spirepod/internal/certmanager"
)

// WaitOptions say what to wait for.
type WaitOptions struct {
	Client  kubernetes.Interface
	Dynamic dynamic.Interface
	// Issuer is waited for until Ready; a zero value skips it.
	Issuer    certmanager.IssuerRef
	Namespace string
	// Pods are waited for until Running and ready.
	Pods     []string
	Progress func(string)
}

// WaitStatus is what was ready when the wait ended.
type WaitStatus struct {
	IssuerReady bool `json:"issuerReady"`
	// IssuerMissing: the issuer does not exist (Ready says so; a wait that
	// never saw it leaves it false).
	IssuerMissing bool   `json:"issuerMissing,omitempty"`
	IssuerMessage string `json:"issuerMessage,omitempty"`
	// PodsReady and PodsPending are the pods, sorted by name, that are and
	// are not Running and ready.
	PodsReady   []string `json:"podsReady"`
	PodsPending []string `json:"podsPending,omitempty"`
	// PodsMissing are the pending pods that do not exist; PodsWhy says why
	// each of the other pending pods is not ready (NotReadyReason).
	PodsMissing []string          `json:"podsMissing,omitempty"`
	PodsWhy     map[string]string `json:"podsWhy,omitempty"`
}

// setPods fills the pod fields of st from the state of each wanted pod
// (nil: it does not exist).
func (st *WaitStatus) setPods(want []string, pods map[string]*corev1.Pod) {
	st.PodsReady, st.PodsPending, st.PodsMissing, st.PodsWhy = nil, nil, nil, nil
	for _, name := range want {
		p := pods[name]
		switch {
		case p == nil:
			st.PodsPending = append(st.PodsPending, name)
			st.PodsMissing = append(st.PodsMissing, name)
		case PodReady(p):
			st.PodsReady = append(st.PodsReady, name)
		default:
			st.PodsPending = append(st.PodsPending, name)
			if st.PodsWhy == nil {
				st.PodsWhy = map[string]string{}
			}
			st.PodsWhy[name] = NotReadyReason(p)
		}
	}
	sort.Strings(st.PodsReady)
	sort.Strings(st.PodsPending)
	sort.Strings(st.PodsMissing)
}

// Wait watches until the issuer (Issuer or ClusterIssuer) is Ready and
// every pod of the StatefulSet is Running and ready, or ctx ends (then the
// error says what was not ready).
func Wait(ctx context.Context, o WaitOptions) (*WaitStatus, error) {
	st := &WaitStatus{}
	progress := o.Progress
	if progress == nil {
		progress = func(string) {}
	}
	if o.Issuer.Name != "" {
		if err := waitIssuer(ctx, o, st, progress); err != nil {
			return st, err
		}
		progress(fmt.Sprintf("%s is Ready", o.Issuer))
	}
	if len(o.Pods) > 0 {
		if err := waitPods(ctx, o, st, progress); err != nil {
			return st, err
		}
	}
	return st, nil
}

func waitIssuer(ctx context.Context, o WaitOptions, st *WaitStatus, progress func(string)) error {
	sel := fields.OneTermEqualSelector("metadata.name", o.Issuer.Name).String()
	var ri dynamic.ResourceInterface = o.Dynamic.Resource(o.Issuer.GVR())
	if !o.Issuer.Cluster() {
		ri = o.Dynamic.Resource(o.Issuer.GVR()).Namespace(o.Issuer.Namespace)
	}
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
			opts.FieldSelector = sel
			return ri.List(ctx, opts)
		},
		WatchFuncWithContext: func(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
			opts.FieldSelector = sel
			return ri.Watch(ctx, opts)
		},
	}
	progress(fmt.Sprintf("waiting for %s to be Ready", o.Issuer))
	_, err := watchtools.UntilWithSync(ctx, watchListFor(lw, o.Dynamic), &unstructured.Unstructured{}, nil, func(ev watch.Event) (bool, error) {
		u, ok := ev.Object.(*unstructured.Unstructured)
		if !ok {
			return false, nil
		}
		ready, _, msg := certmanager.ReadyCondition(u)
		st.IssuerReady, st.IssuerMessage = ready, msg
		return ready, nil
	})
	if err != nil {
		msg := st.IssuerMessage
		if msg == "" {
			msg = "no Ready condition yet"
		}
		return fmt.Errorf("%s is not Ready: %s: %w", o.Issuer, msg, err)
	}
	return nil
}

func waitPods(ctx context.Context, o WaitOptions, st *WaitStatus, progress func(string)) error {
	want := map[string]bool{}
	for _, p := range o.Pods {
		want[p] = true
	}
	names := make([]string, 0, len(want))
	for name := range want {
		names = append(names, name)
	}
	pods := o.Client.CoreV1().Pods(o.Namespace)
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
			return pods.List(ctx, opts)
		},
		WatchFuncWithContext: func(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
			return pods.Watch(ctx, opts)
		},
	}
	seen := map[string]*corev1.Pod{}
	last := -1
	report := func() {
		st.setPods(names, seen)
		if len(st.PodsReady) != last {
			last = len(st.PodsReady)
			progress(fmt.Sprintf("pods ready: %d/%d", last, len(want)))
		}
	}
	report()
	_, err := watchtools.UntilWithSync(ctx, watchListFor(lw, o.Client), &corev1.Pod{}, nil, func(ev watch.Event) (bool, error) {
		p, ok := ev.Object.(*corev1.Pod)
		if !ok || !want[p.Name] {
			return false, nil
		}
		if ev.Type == watch.Deleted {
			delete(seen, p.Name)
		} else {
			seen[p.Name] = p
		}
		report()
		return len(st.PodsReady) == len(want), nil
	})
	if err != nil {
		return fmt.Errorf("pods not ready: %s: %w", strings.Join(st.PodsPending, ", "), err)
	}
	return nil
}

// NotReadyReason says why a pod that is not ready is not: its phase, with
// the scheduler's reason when it is not scheduled ("Pending (Unschedulable)"),
// or "Running, not ready" (a readiness probe fails).
func NotReadyReason(p *corev1.Pod) string {
	why := string(p.Status.Phase)
	if why == "" {
		why = string(corev1.PodPending)
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && c.Reason != "" {
			why += " (" + c.Reason + ")"
		}
	}
	if p.Status.Phase == corev1.PodRunning {
		why += ", not ready"
	}
	return why
}

// PodReady is Running with condition Ready=True.
func PodReady(p *corev1.Pod) bool {
	if p.Status.Phase != corev1.PodRunning {
		return false
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// watchListFor lets the reflector know whether client can serve a streaming
// list (a watch with sendInitialEvents): a real API server can; client-go's
// fake clients say they cannot, and then it lists and watches as before.
// https://kubernetes.io/docs/reference/using-api/api-concepts/#streaming-lists
func watchListFor(lw *cache.ListWatch, client any) cache.ListerWatcher {
	return cache.ToListWatcherWithWatchListSemantics(lw, client)
}
