package apply

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"path"
	"slices"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"
	appsv1 "k8s.io/api/apps/v1"

	corev1 "k8s.io/api/core/v1"

	authzv1 "k8s.io/api/authorization/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilversion "k8s.io/apimachinery/pkg/util/version"
	"k8s.io/client-go/kubernetes"

	"github.com/spirepod/spirepod/internal/certmanager"
	"github.com/spirepod/spirepod/internal/checklist"
	"github.com/spirepod/spirepod/internal/pki"
	"github.com/spirepod/spirepod/internal/project"
	"github.com/spirepod/spirepod/internal/retry"
	"github.com/spirepod/spirepod/internal/scaffold"
)

// Protected reports whether any of names (the context name, the cluster's
// name, the server URL) matches one of the patterns, case-insensitively:
// shell globs, or a substring for a pattern without glob characters. It
// returns the pattern and the name it matched.
func Protected(names []string, patterns []string) (pattern, name string, ok bool) {
	for _, p := range patterns {
		lp := strings.ToLower(p)
		for _, n := range names {
			ln := strings.ToLower(n)
			if !strings.ContainsAny(lp, "*?[") {
				if ln != "" && strings.Contains(ln, lp) {
					return p, n, true
				}
				continue
			}
			if m, _ := path.Match(lp, ln); m {
				return p, n, true
			}
		}
	}
	return "", "", false
}

// DefaultProtectedContexts applies when the project file sets none.
var DefaultProtectedContexts = []string{"*prod*", "*prd*"}

// ClusterOptions are the inputs of the cluster preflight.
type ClusterOptions struct {
	Layers          []Layer
	Client          kubernetes.Interface
	Mapper          meta.RESTMapper
	Namespace       string
	CreateNamespace bool
	// Issuer names the team's issuer and its CA Secret.
	Issuer certmanager.IssuerRef
	// ReplaceCA allows replacing a CA Secret that holds another certificate.
	ReplaceCA bool
	// RetryFor bounds retries of reads the guard depends on (default 10 s).
	RetryFor time.Duration
}

func (o ClusterOptions) retryFor() time.Duration {
	if o.RetryFor > 0 {
		return o.RetryFor
	}
	return 10 * time.Second
}

// CheckCluster checks cert-manager, the namespace and permissions.
func CheckCluster(ctx context.Context, o ClusterOptions) []checklist.Result {
	const group = "cluster"
	var out []checklist.Result

	// The cert-manager kinds the scaffold applies, and Certificate, which
	// gen-cert creates in every pod.
	kinds := []schema.GroupVersionKind{{Group: certmanager.Group, Version: "v1", Kind: "Certificate"}}
	for _, obj := range All(o.Layers) {
		if gvk := obj.GroupVersionKind(); gvk.Group == certmanager.Group && !slices.Contains(kinds, gvk) {
			kinds = append([]schema.GroupVersionKind{gvk}, kinds...)
		}
	}
	var missing []string
	for _, gvk := range kinds {
		if _, err := o.Mapper.RESTMapping(gvk.GroupKind(), gvk.Version); err != nil {
			if !meta.IsNoMatchError(err) {
				return append(out, checklist.Result{Group: group, ID: "cluster-reachable", Name: "cluster reachable", Status: checklist.Fail,
					Message: err.Error(), Hint: "check --kubeconfig and --context"})
			}
			missing = append(missing, gvk.Kind+"."+gvk.Group)
		}
	}
	if len(missing) > 0 {
		out = append(out, checklist.Result{Group: group, ID: "cert-manager", Name: "cert-manager is installed", Status: checklist.Fail,
			Message: "the cluster does not serve " + strings.Join(missing, ", "),
			Hint:    "install cert-manager in this cluster (its CRDs and controller), or pick the right --context"})
	} else {
		out = append(out, checklist.Result{Group: group, ID: "cert-manager", Name: "cert-manager is installed", Status: checklist.OK})
	}

	// The rest are independent requests: sent together, they cost one
	// round trip to a remote API server, not four.
	// A cluster that does not answer the namespace read stops the others
	// (the CA-Secret read would otherwise retry for RetryFor).
	var nsRes, caRes, permRes, admRes, verRes []checklist.Result
	pctx, cancel := context.WithCancel(ctx)
	defer cancel()
	unreachable := func() bool { return checklist.Failed(nsRes) && nsRes[len(nsRes)-1].ID == "cluster-reachable" }
	var g errgroup.Group
	g.Go(func() error {
		if nsRes = checkNamespace(pctx, o); unreachable() {
			cancel()
		}
		return nil
	})
	g.Go(func() error { caRes = checkCASecret(pctx, o); return nil })
	g.Go(func() error { permRes = checkPermissions(pctx, o); return nil })
	g.Go(func() error { admRes = CheckPodAdmission(pctx, o); return nil })
	g.Go(func() error { verRes = checkServerVersion(o); return nil })
	_ = g.Wait()
	if unreachable() {
		return append(out, nsRes...)
	}
	out = append(out, verRes...)
	out = append(out, nsRes...)
	out = append(out, caRes...)
	out = append(out, permRes...)
	return append(out, admRes...)
}

// MinSidecarVersion is the first Kubernetes release that runs native
// sidecars (an init container with restartPolicy: Always) by default: the
// SidecarContainers feature is beta and on from v1.29
// (https://kubernetes.io/docs/concepts/workloads/pods/sidecar-containers/).
// An older API server drops the field, so gen-cert, which follows renewals
// and never exits, would block the pod's start for ever.
var MinSidecarVersion = utilversion.MajorMinor(1, 29)

// checkServerVersion refuses an API server older than MinSidecarVersion
// when the manifests hold a native sidecar.
func checkServerVersion(o ClusterOptions) []checklist.Result {
	const group, id, name = "cluster", "kubernetes-version", "Kubernetes runs native sidecars"
	sidecar := nativeSidecar(All(o.Layers))
	if sidecar == "" {
		return nil
	}
	info, err := o.Client.Discovery().ServerVersion()
	if err != nil {
		return []checklist.Result{{Group: group, ID: id, Name: name, Status: checklist.Fail,
			Message: "cannot read the API server's version: " + apiMessage(err), Hint: "check --kubeconfig and --context"}}
	}
	v, err := utilversion.ParseGeneric(info.GitVersion)
	if err != nil {
		return []checklist.Result{{Group: group, ID: id, Name: name, Status: checklist.Fail,
			Message: fmt.Sprintf("the API server reports version %q, which is not a Kubernetes version", info.GitVersion),
			Hint:    "native sidecars need Kubernetes v1.29 or later; check --context"}}
	}
	if v.Major() == 0 {
		// A build without version stamping (v0.0.0-master): the pod dry run
		// in CheckPodAdmission still sees whether the field survives.
		return []checklist.Result{{Group: group, ID: id, Name: name, Status: checklist.Skipped,
			Message: fmt.Sprintf("the API server reports no release version (%s)", info.GitVersion)}}
	}
	if v.LessThan(MinSidecarVersion) {
		return []checklist.Result{{Group: group, ID: id, Name: name, Status: checklist.Fail,
			Message: fmt.Sprintf("the API server is Kubernetes %s; %s is a native sidecar (an init container with restartPolicy: Always), which needs v1.29 or later (older servers drop the field and the pod never starts)", info.GitVersion, sidecar),
			Hint:    "upgrade the cluster to v1.29 or later, or pick another --context"}}
	}
	return []checklist.Result{{Group: group, ID: id, Name: name, Status: checklist.OK, Message: info.GitVersion}}
}

// nativeSidecar names the first init container with restartPolicy: Always
// in objs' pod templates ("StatefulSet/x: gen-cert"), or "".
func nativeSidecar(objs []*unstructured.Unstructured) string {
	for _, obj := range objs {
		for _, path := range [][]string{{"spec", "template", "spec", "initContainers"}, {"spec", "initContainers"}} {
			inits, _, _ := unstructured.NestedSlice(obj.Object, path...)
			for _, c := range inits {
				if m, ok := c.(map[string]any); ok && m["restartPolicy"] == "Always" {
					return fmt.Sprintf("%s/%s's init container %v", obj.GetKind(), obj.GetName(), m["name"])
				}
			}
		}
	}
	return ""
}

// checkNamespace: the team namespace exists, is in the scaffold, or will be
// created.
func checkNamespace(ctx context.Context, o ClusterOptions) []checklist.Result {
	const group = "cluster"
	var out []checklist.Result
	inScaffold := false
	for _, obj := range All(o.Layers) {
		if obj.GetKind() == "Namespace" && obj.GetName() == o.Namespace {
			inScaffold = true
		}
	}
	_, err := o.Client.CoreV1().Namespaces().Get(ctx, o.Namespace, metav1.GetOptions{})
	switch {
	case err == nil || inScaffold:
		out = append(out, checklist.Result{Group: group, ID: "namespace", Name: fmt.Sprintf("namespace %s exists", o.Namespace), Status: checklist.OK})
	case apierrors.IsNotFound(err) && o.CreateNamespace:
		out = append(out, checklist.Result{Group: group, ID: "namespace", Name: fmt.Sprintf("namespace %s will be created", o.Namespace), Status: checklist.OK})
	case apierrors.IsNotFound(err):
		out = append(out, checklist.Result{Group: group, ID: "namespace", Name: fmt.Sprintf("namespace %s exists", o.Namespace), Status: checklist.Fail,
			Message: "not found in the cluster and not in the scaffold", Hint: "pass --create-namespace, or ask the cluster admins to create it"})
	case apierrors.IsForbidden(err):
		out = append(out, checklist.Result{Group: group, ID: "namespace", Name: fmt.Sprintf("namespace %s exists", o.Namespace), Status: checklist.Warn,
			Message: "cannot read namespaces: " + err.Error()})
	default:
		return append(out, checklist.Result{Group: group, ID: "cluster-reachable", Name: "cluster reachable", Status: checklist.Fail,
			Message: err.Error(), Hint: "check --kubeconfig and --context"})
	}
	return out
}

// checkCASecret guards the team-CA Secret: refuse when the live Secret holds
// a different certificate (another team's CA on a shared name, or the team's
// own old CA, whose agents then stop attesting: their node aliases are pinned
// to its fingerprint), unless ReplaceCA. It fails closed: a Secret that
// cannot be read, after retries, refuses the apply.
func checkCASecret(ctx context.Context, o ClusterOptions) []checklist.Result {
	const id, name = "ca-secret", "the team-CA Secret is ours or absent"
	for _, obj := range All(o.Layers) {
		if obj.GetKind() != "Secret" || obj.GetNamespace() != o.Issuer.SecretNamespace || obj.GetName() != o.Issuer.SecretName {
			continue
		}
		want, _, _ := unstructured.NestedString(obj.Object, "data", "tls.crt")
		var live *corev1.Secret
		err := retry.Backoff{For: o.retryFor()}.Do(ctx, func() error {
			var err error
			live, err = o.Client.CoreV1().Secrets(obj.GetNamespace()).Get(ctx, obj.GetName(), metav1.GetOptions{})
			return err
		})
		if apierrors.IsNotFound(err) {
			return []checklist.Result{{Group: "cluster", ID: id, Name: name, Status: checklist.OK}}
		}
		if err != nil {
			return []checklist.Result{{Group: "cluster", ID: id, Name: name, Status: checklist.Fail,
				Message: fmt.Sprintf("cannot read Secret %s/%s to check it holds this team's CA: %v", obj.GetNamespace(), obj.GetName(), err),
				Hint:    "apply replaces it only once it is known to be this team's (or absent): retry when the API server answers, or ask for get on secrets there"}}
		}
		wantPEM, _ := base64.StdEncoding.DecodeString(strings.Join(strings.Fields(want), ""))
		livePEM := live.Data["tls.crt"]
		if len(livePEM) == 0 || bytes.Equal(bytes.TrimSpace(livePEM), bytes.TrimSpace(wantPEM)) {
			return []checklist.Result{{Group: "cluster", ID: id, Name: name, Status: checklist.OK}}
		}
		desc := "another certificate"
		if certs, err := pki.ParseCertificates(livePEM); err == nil {
			desc = fmt.Sprintf("CA %s (sha1 %s)", certs[0].Subject, pki.SHA1Fingerprint(certs[0]))
		}
		msg := fmt.Sprintf("Secret %s/%s holds %s, not this scaffold's team CA", obj.GetNamespace(), obj.GetName(), desc)
		if o.ReplaceCA {
			return []checklist.Result{{Group: "cluster", ID: id, Name: name, Status: checklist.Warn, Message: msg + "; replacing it (--replace-ca)"}}
		}
		return []checklist.Result{{Group: "cluster", ID: id, Name: name, Status: checklist.Fail, Message: msg,
			Hint: "if it is another team's, applying would break its agents: check spirepod.yaml's namespace and issuer; if it is your own old CA, re-run with --replace-ca (see `spirepod pki rotate` for a rotation without downtime)"}}
	}
	return nil
}

// checkPermissions asks the API server (SelfSubjectAccessReview) whether the
// user may get, create and patch every kind of object that will be applied.
func checkPermissions(ctx context.Context, o ClusterOptions) []checklist.Result {
	type key struct{ group, resource, ns string }
	type ask struct {
		k    key
		verb string
	}
	seen := map[key]bool{}
	var asks []ask
	var denied []string
	for _, obj := range All(o.Layers) {
		gvk := obj.GroupVersionKind()
		m, err := o.Mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			continue // reported by the cert-manager check or at apply
		}
		ns := ""
		if m.Scope.Name() == meta.RESTScopeNameNamespace {
			ns = obj.GetNamespace()
		}
		k := key{m.Resource.Group, m.Resource.Resource, ns}
		if seen[k] {
			continue
		}
		seen[k] = true
		for _, verb := range []string{"get", "create", "patch"} {
			asks = append(asks, ask{k, verb})
		}
	}
	// One review per (kind, verb), all at once: one round trip.
	allowed := make([]bool, len(asks))
	errs := make([]error, len(asks))
	var g errgroup.Group
	for i, a := range asks {
		g.Go(func() error {
			ssar := &authzv1.SelfSubjectAccessReview{Spec: authzv1.SelfSubjectAccessReviewSpec{
				ResourceAttributes: &authzv1.ResourceAttributes{Namespace: a.k.ns, Verb: a.verb, Group: a.k.group, Resource: a.k.resource},
			}}
			res, err := o.Client.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, ssar, metav1.CreateOptions{})
			errs[i] = err
			allowed[i] = err == nil && res.Status.Allowed
			return nil // every answer is read below
		})
	}
	_ = g.Wait()
	for i, a := range asks {
		if errs[i] != nil {
			return []checklist.Result{{Group: "cluster", ID: "permissions", Name: "permission to apply", Status: checklist.Warn,
				Message: "could not ask: " + errs[i].Error()}}
		}
		if !allowed[i] {
			where := "cluster-wide"
			if a.k.ns != "" {
				where = "in namespace " + a.k.ns
			}
			denied = append(denied, fmt.Sprintf("%s %s %s", a.verb, qualified(a.k.resource, a.k.group), where))
		}
	}
	if len(denied) > 0 {
		return []checklist.Result{{Group: "cluster", ID: "permissions", Name: "permission to apply", Status: checklist.Fail,
			Message: "not allowed: " + strings.Join(denied, "; "),
			Hint:    "ask the cluster admins for these permissions, or use a --context that has them"}}
	}
	return []checklist.Result{{Group: "cluster", ID: "permissions", Name: "permission to apply", Status: checklist.OK}}
}

func qualified(resource, group string) string {
	if group == "" {
		return resource
	}
	return resource + "." + group
}

// CheckBundle judges the SPIRE server CA bundle the scaffold will apply (the
// spire-bundle ConfigMap): empty, unparseable, expired or not yet valid
// refuses the apply (the agent would crash-loop); near its end warns.
func CheckBundle(layers []Layer, now time.Time) []checklist.Result {
	const group, id, name = "scaffold", "server-ca-bundle", "the SPIRE server CA bundle is usable"
	hint := "put the server's CA in with `spirepod bundle set SERVER_CA.pem` (ask the SPIRE operators for it)"
	for _, obj := range All(layers) {
		if obj.GetKind() != "ConfigMap" || obj.GetName() != scaffold.BundleConfigMap {
			continue
		}
		data, _, _ := unstructured.NestedString(obj.Object, "data", scaffold.BundleKey)
		var certs []*x509.Certificate
		if strings.TrimSpace(data) != "" {
			var err error
			if certs, err = scaffold.ParseServerCA([]byte(data)); err != nil {
				return []checklist.Result{{Group: group, ID: id, Name: name, Status: checklist.Fail, Message: "ConfigMap " + scaffold.BundleConfigMap + ": " + err.Error(), Hint: hint}}
			}
		}
		switch pr := scaffold.JudgeBundle(certs, now); {
		case pr == nil:
			return []checklist.Result{{Group: group, ID: id, Name: name, Status: checklist.OK, Message: project.Count(len(certs), "CA")}}
		case pr.Fatal:
			return []checklist.Result{{Group: group, ID: id, Name: name, Status: checklist.Fail, Message: pr.Message, Hint: hint}}
		default:
			return []checklist.Result{{Group: group, ID: id, Name: name, Status: checklist.Warn, Message: pr.Message}}
		}
	}
	return []checklist.Result{{Group: group, ID: id, Name: name, Status: checklist.Fail, Message: "the scaffold has no ConfigMap " + scaffold.BundleConfigMap,
		Hint: "re-render the scaffold (`spirepod status` prints the `spirepod init --force` command, run from the directory above it)"}}
}

// CheckPodAdmission asks the API server whether the StatefulSet's pods would
// be admitted in the namespace — Pod Security above all — with a dry-run
// create of its first pod, so a refused pod is named, with the field at
// fault, before anything changes. It is skipped when the namespace does not
// exist yet or the user may not create pods.
func CheckPodAdmission(ctx context.Context, o ClusterOptions) []checklist.Result {
	const group, id, name = "cluster", "pod-admission", "the pods pass the namespace's admission (Pod Security)"
	for _, obj := range All(o.Layers) {
		if obj.GetKind() != "StatefulSet" {
			continue
		}
		var sts appsv1.StatefulSet
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(obj.Object, &sts); err != nil {
			return []checklist.Result{{Group: group, ID: id, Name: name, Status: checklist.Warn, Message: err.Error()}}
		}
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: sts.Name + "-0", Namespace: o.Namespace, Labels: sts.Spec.Template.Labels},
			Spec:       *sts.Spec.Template.Spec.DeepCopy(),
		}
		// The ServiceAccount may not exist yet: admission of the pod's security
		// does not depend on it.
		pod.Spec.ServiceAccountName = ""
		got, err := o.Client.CoreV1().Pods(o.Namespace).Create(ctx, pod, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		switch {
		case err == nil:
			// A server that does not run native sidecars drops an init
			// container's restartPolicy; the admitted pod shows it.
			if c := droppedRestartPolicy(pod, got); c != "" {
				return []checklist.Result{{Group: group, ID: id, Name: name, Status: checklist.Fail,
					Message: fmt.Sprintf("the API server dropped restartPolicy: Always from init container %s: it does not run native sidecars (Kubernetes older than v1.29, or the SidecarContainers feature gate off), and gen-cert would block the pod's start", c),
					Hint:    "upgrade the cluster to v1.29 or later, or pick another --context"}}
			}
			return []checklist.Result{{Group: group, ID: id, Name: name, Status: checklist.OK}}
		case apierrors.IsNotFound(err):
			return []checklist.Result{{Group: group, ID: id, Name: name, Status: checklist.Skipped, Message: "namespace " + o.Namespace + " does not exist yet"}}
		case apierrors.IsForbidden(err) && strings.Contains(err.Error(), "PodSecurity"):
			return []checklist.Result{{Group: group, ID: id, Name: name, Status: checklist.Fail,
				Message: fmt.Sprintf("StatefulSet %s's pods would be refused: %v", sts.Name, apiMessage(err)),
				Hint:    "fix the fields named above in spire-envoy-integration.yaml (`spirepod init --force` renders them restricted), or ask for a namespace whose Pod Security level allows them"}}
		case apierrors.IsForbidden(err):
			return []checklist.Result{{Group: group, ID: id, Name: name, Status: checklist.Skipped, Message: "cannot ask (no permission to create pods): " + apiMessage(err)}}
		case apierrors.IsInvalid(err) || apierrors.IsBadRequest(err):
			return []checklist.Result{{Group: group, ID: id, Name: name, Status: checklist.Fail,
				Message: fmt.Sprintf("StatefulSet %s's pods would be refused: %v", sts.Name, apiMessage(err)), Hint: "fix the pod template"}}
		default:
			return []checklist.Result{{Group: group, ID: id, Name: name, Status: checklist.Warn, Message: "could not ask: " + err.Error()}}
		}
	}
	return nil
}

// droppedRestartPolicy names the first init container of sent with
// restartPolicy: Always that got (the server's answer) lacks, or "".
func droppedRestartPolicy(sent, got *corev1.Pod) string {
	if got == nil {
		return ""
	}
	kept := map[string]bool{}
	for _, c := range got.Spec.InitContainers {
		kept[c.Name] = c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways
	}
	for _, c := range sent.Spec.InitContainers {
		if c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways && !kept[c.Name] {
			return c.Name
		}
	}
	return ""
}

func apiMessage(err error) string {
	var se apierrors.APIStatus
	if errors.As(err, &se) {
		return se.Status().Message
	}
	return err.Error()
}
