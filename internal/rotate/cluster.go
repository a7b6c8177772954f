package rotate

import (
	"bufio"
	"context"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	watchtools "k8s.io/client-go/tools/watch"

	"github.com/spirepod/spirepod/internal/apply"
	"github.com/spirepod/spirepod/internal/certmanager"
	"github.com/spirepod/spirepod/internal/pki"
	"github.com/spirepod/spirepod/internal/project"
	"github.com/spirepod/spirepod/internal/retry"
)

// Cluster is the team's cluster as a rotation reads and changes it: the
// issuer's CA Secret, the issuer, the agent Certificates and their Secrets,
// the pods and their agents' logs. KubeCluster is the real one; the rules
// (which Secret may be switched, in what order pods move, what is recorded)
// stay in Run, so a fake of these operations tests them.
type Cluster interface {
	// Name names the cluster in messages (its kubeconfig context).
	Name() string
	// Secret reads a Secret; a NotFound API error when there is none.
	Secret(ctx context.Context, namespace, name string) (*corev1.Secret, error)
	// ApplySecret server-side applies the issuer's CA Secret as certs/
	// renders it (field manager p.FieldManager()) and says what changed.
	ApplySecret(ctx context.Context, p *project.Project, secret *unstructured.Unstructured) (string, error)
	// WaitIssuer waits for the issuer to be Ready with the CA Secret it reads.
	WaitIssuer(ctx context.Context, p *project.Project) error
	// Reissue has cert-manager issue pod's agent Certificate again, unless
	// its Secret already holds a leaf of newCA, and returns that leaf once
	// the Secret holds it.
	Reissue(ctx context.Context, p *project.Project, pod string, newCA *x509.Certificate) (*x509.Certificate, error)
	// RestartPod deletes pod, unless it was created after since, and waits
	// for its successor to be Running and Ready.
	RestartPod(ctx context.Context, p *project.Project, pod string, since time.Time) error
	// WaitAttested follows the pod's spire-agent log until the agent
	// (re-)attests with leaf, and returns that log line.
	WaitAttested(ctx context.Context, p *project.Project, pod string, leaf *x509.Certificate) (string, error)
}

// KubeCluster is the Cluster of a kubeconfig context: its client-go clients.
type KubeCluster struct {
	Context string
	Client  kubernetes.Interface
	Dynamic dynamic.Interface
	Mapper  meta.RESTMapper
}

var _ Cluster = (*KubeCluster)(nil)

// Name is the kubeconfig context.
func (c *KubeCluster) Name() string { return c.Context }

// Secret reads a Secret.
func (c *KubeCluster) Secret(ctx context.Context, namespace, name string) (*corev1.Secret, error) {
	return c.Client.CoreV1().Secrets(namespace).Get(ctx, name, metav1.GetOptions{})
}

// ApplySecret server-side applies the CA Secret.
func (c *KubeCluster) ApplySecret(ctx context.Context, p *project.Project, secret *unstructured.Unstructured) (string, error) {
	res, err := apply.Apply(ctx, apply.Options{Layers: []apply.Layer{{Name: "certs", Objects: []*unstructured.Unstructured{secret}}},
		Dynamic: c.Dynamic, Mapper: c.Mapper, FieldManager: p.FieldManager(), RetryFor: 30 * time.Second})
	if err != nil {
		return "", err
	}
	return string(res.Objects[0].Outcome), nil
}

// WaitIssuer waits for the issuer to be Ready with the CA Secret it reads.
func (c *KubeCluster) WaitIssuer(ctx context.Context, p *project.Project) error {
	_, err := apply.Wait(ctx, apply.WaitOptions{Client: c.Client, Dynamic: c.Dynamic, Issuer: p.Issuer()})
	return err
}

// SecretError refuses to switch a CA Secret that holds neither of the
// rotation's CAs (another team's, or a CA nobody recorded).
type SecretError struct {
	Secret string
	Holds  string
}

func (e *SecretError) Error() string {
	return fmt.Sprintf("Secret %s holds %s, neither the old nor the new CA of this rotation: nothing was changed", e.Secret, e.Holds)
}

// switchSecret server-side applies the issuer's CA Secret as certs/ renders
// it (the scaffold's CA files already hold the new CA), guarded: the live
// Secret must hold the old or the new CA. It reads the live Secret first
// and fails closed when it cannot.
func switchSecret(ctx context.Context, p *project.Project, c Cluster, oldFP, newFP string) (string, error) {
	ref := p.Issuer()
	layers, err := apply.Build(p.Dir)
	if err != nil {
		return "", err
	}
	var secret *unstructured.Unstructured
	for _, o := range apply.All(layers) {
		if o.GetKind() == "Secret" && o.GetNamespace() == ref.SecretNamespace && o.GetName() == ref.SecretName {
			secret = o
		}
	}
	if secret == nil {
		return "", fmt.Errorf("certs/ renders no Secret %s: re-render the scaffold (`spirepod init --force`)", ref.Secret())
	}
	crt, _, _ := unstructured.NestedString(secret.Object, "data", "tls.crt")
	der, _ := base64.StdEncoding.DecodeString(strings.Join(strings.Fields(crt), ""))
	if certs, err := pki.ParseCertificates(der); err != nil || pki.SHA1Fingerprint(certs[0]) != newFP {
		return "", fmt.Errorf("certs/ renders Secret %s without the new CA %s: the scaffold's CA files must hold it first", ref.Secret(), newFP)
	}
	switched, err := guardSecret(ctx, p, c, oldFP, newFP)
	if err != nil {
		return "", err
	}
	if switched {
		return "unchanged", nil
	}
	return c.ApplySecret(ctx, p, secret)
}

// guardSecret reads the issuer's live CA Secret (failing closed when it
// cannot) and says whether it holds the new CA already; it refuses one that
// holds neither of the rotation's CAs.
func guardSecret(ctx context.Context, p *project.Project, c Cluster, oldFP, newFP string) (bool, error) {
	ref := p.Issuer()
	var live *corev1.Secret
	err := retry.Backoff{For: 20 * time.Second}.Do(ctx, func() error {
		var err error
		live, err = c.Secret(ctx, ref.SecretNamespace, ref.SecretName)
		return err
	})
	switch {
	case apierrors.IsNotFound(err):
		return false, &SecretError{Secret: ref.Secret(), Holds: "nothing (it does not exist: was the scaffold ever applied in this context?)"}
	case err != nil:
		return false, fmt.Errorf("read Secret %s to check it holds this team's CA: %w", ref.Secret(), err)
	}
	certs, err := pki.ParseCertificates(live.Data["tls.crt"])
	if err != nil {
		return false, &SecretError{Secret: ref.Secret(), Holds: "no parseable certificate"}
	}
	switch fp := pki.SHA1Fingerprint(certs[0]); fp {
	case newFP:
		return true, nil
	case oldFP:
		return false, nil
	default:
		return false, &SecretError{Secret: ref.Secret(), Holds: fmt.Sprintf("CA %s (sha1 %s)", certs[0].Subject, fp)}
	}
}

// leafOf reads the agent certificate in a pod's Secret when it was issued
// by ca: (leaf, nil); (nil, nil) when it is missing or from another CA.
func leafOf(sec *corev1.Secret, ca *x509.Certificate) *x509.Certificate {
	if sec == nil {
		return nil
	}
	certs, err := pki.ParseCertificates(sec.Data["tls.crt"])
	if err != nil || certs[0].CheckSignatureFrom(ca) != nil {
		return nil
	}
	return certs[0]
}

// Reissue asks cert-manager to issue pod's agent Certificate again (as
// `cmctl renew` does: the Issuing condition, set through the status
// subresource) unless its Secret already holds a leaf of newCA, then
// watches the Secret until it does.
func (c *KubeCluster) Reissue(ctx context.Context, p *project.Project, pod string, newCA *x509.Certificate) (*x509.Certificate, error) {
	name := p.CertificateName(pod)
	certs := c.Dynamic.Resource(certmanager.CertificateGVR).Namespace(p.Namespace)
	crt, err := certs.Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("Certificate %s/%s: %w", p.Namespace, name, err)
	}
	secretName, _, _ := unstructured.NestedString(crt.Object, "spec", "secretName")
	if secretName == "" {
		secretName = name
	}
	sec, err := c.Client.CoreV1().Secrets(p.Namespace).Get(ctx, secretName, metav1.GetOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return nil, err
	}
	if l := leafOf(sec, newCA); l != nil {
		return l, nil
	}
	// cert-manager's lastFailureTime has whole seconds.
	since := time.Now().Truncate(time.Second)
	if !issuing(crt) {
		// One Issuing condition (conditions are a map keyed by type): a
		// failed issuance left one at False; it becomes True, as cmctl
		// renew sets it.
		conds, _, _ := unstructured.NestedSlice(crt.Object, "status", "conditions")
		conds = slices.DeleteFunc(conds, func(c any) bool { m, ok := c.(map[string]any); return ok && m["type"] == "Issuing" })
		conds = append(conds, map[string]any{
			"type": "Issuing", "status": "True", "reason": "ManuallyTriggered",
			"message":            "Certificate re-issuance triggered by spirepod pki rotate (the team CA changed)",
			"lastTransitionTime": time.Now().UTC().Format(time.RFC3339), "observedGeneration": crt.GetGeneration(),
		})
		if err := unstructured.SetNestedSlice(crt.Object, conds, "status", "conditions"); err != nil {
			return nil, err
		}
		if _, err := certs.UpdateStatus(ctx, crt, metav1.UpdateOptions{FieldManager: p.FieldManager()}); err != nil {
			if apierrors.IsForbidden(err) {
				return nil, fmt.Errorf("re-issue Certificate %s/%s: %w (spirepod needs update on certificates/status, as cmctl renew does)", p.Namespace, name, err)
			}
			if apierrors.IsConflict(err) {
				return c.Reissue(ctx, p, pod, newCA)
			}
			return nil, fmt.Errorf("re-issue Certificate %s/%s: %w", p.Namespace, name, err)
		}
	}
	// While the Secret is watched, so is the Certificate: an issuance
	// cert-manager marks failed ends the wait at once (it retries only
	// after a backoff of an hour or more).
	wctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	go func() {
		if err := issuanceFailed(wctx, certs, p.Namespace, name, since); err != nil {
			cancel(err)
		}
	}()
	secrets := c.Client.CoreV1().Secrets(p.Namespace)
	lw := byName(secretName, func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) { return secrets.List(ctx, o) }, secrets.Watch)
	var leaf *x509.Certificate
	_, err = watchtools.UntilWithSync(wctx, lw, &corev1.Secret{}, nil, func(ev watch.Event) (bool, error) {
		s, ok := ev.Object.(*corev1.Secret)
		if !ok || ev.Type == watch.Deleted {
			return false, nil
		}
		leaf = leafOf(s, newCA)
		return leaf != nil, nil
	})
	if err != nil {
		var fe *IssuanceFailedError
		if errors.As(context.Cause(wctx), &fe) {
			return nil, fe
		}
		return nil, fmt.Errorf("Secret %s/%s never held a certificate of the new CA: %w (see `kubectl -n %s describe certificate %s`)", p.Namespace, secretName, err, p.Namespace, name)
	}
	return leaf, nil
}

// IssuanceFailedError is cert-manager's word that it could not issue a
// Certificate: its Issuing condition False with a lastFailureTime since the
// re-issue began (what cert-manager's issuing controller writes when the
// CertificateRequest is denied, invalid or failed).
type IssuanceFailedError struct {
	Certificate     string // namespace/name
	Reason, Message string
	At              time.Time
}

func (e *IssuanceFailedError) Error() string {
	ns, name, _ := strings.Cut(e.Certificate, "/")
	return fmt.Sprintf("cert-manager could not issue Certificate %s (%s at %s): %s (see `kubectl -n %s describe certificate %s`; cert-manager retries only after a backoff of an hour or more, `spirepod pki rotate` triggers it again when run again)",
		e.Certificate, e.Reason, e.At.UTC().Format(time.RFC3339), e.Message, ns, name)
}

// issuanceFailed watches a Certificate until cert-manager marks an issuance
// failed at or after since (an *IssuanceFailedError), or ctx ends (nil).
func issuanceFailed(ctx context.Context, certs dynamic.ResourceInterface, namespace, name string, since time.Time) error {
	var failed *IssuanceFailedError
	_, _ = watchtools.UntilWithSync(ctx, byName(name, func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) { return certs.List(ctx, o) }, certs.Watch),
		&unstructured.Unstructured{}, nil, func(ev watch.Event) (bool, error) {
			crt, ok := ev.Object.(*unstructured.Unstructured)
			if !ok || ev.Type == watch.Deleted {
				return false, nil
			}
			failed = failedSince(crt, since)
			return failed != nil, nil
		})
	if failed == nil {
		return nil
	}
	failed.Certificate = namespace + "/" + name
	return failed
}

// failedSince reads a failed issuance off a Certificate's status: Issuing
// False and status.lastFailureTime not before since; else nil.
func failedSince(crt *unstructured.Unstructured, since time.Time) *IssuanceFailedError {
	at, _, _ := unstructured.NestedString(crt.Object, "status", "lastFailureTime")
	t, err := time.Parse(time.RFC3339, at)
	if err != nil || t.Before(since) {
		return nil
	}
	conds, _, _ := unstructured.NestedSlice(crt.Object, "status", "conditions")
	for _, c := range conds {
		if m, ok := c.(map[string]any); ok && m["type"] == "Issuing" && m["status"] == "False" {
			reason, _ := m["reason"].(string)
			msg, _ := m["message"].(string)
			return &IssuanceFailedError{Reason: reason, Message: msg, At: t}
		}
	}
	return nil
}

// byName lists and watches the one object called name.
func byName(name string, list func(context.Context, metav1.ListOptions) (runtime.Object, error),
	watchFn func(context.Context, metav1.ListOptions) (watch.Interface, error)) *cache.ListWatch {
	sel := fields.OneTermEqualSelector("metadata.name", name).String()
	return &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			o.FieldSelector = sel
			return list(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.FieldSelector = sel
			return watchFn(ctx, o)
		},
	}
}

func issuing(crt *unstructured.Unstructured) bool {
	conds, _, _ := unstructured.NestedSlice(crt.Object, "status", "conditions")
	for _, c := range conds {
		if m, ok := c.(map[string]any); ok && m["type"] == "Issuing" && m["status"] == "True" {
			return true
		}
	}
	return false
}

// RestartPod deletes pod (unless it already started after since) and waits
// for its successor to be Running and Ready: the StatefulSet controller
// recreates it, gen-cert writes the new leaf before the agent starts, and
// the agent's readiness is its health check (attested).
func (c *KubeCluster) RestartPod(ctx context.Context, p *project.Project, pod string, since time.Time) error {
	pods := c.Client.CoreV1().Pods(p.Namespace)
	cur, err := pods.Get(ctx, pod, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
	case err != nil:
		return err
	case cur.CreationTimestamp.Time.Before(since.Truncate(time.Second)):
		uid := cur.UID
		err := pods.Delete(ctx, pod, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}})
		if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			return fmt.Errorf("delete pod %s/%s: %w", p.Namespace, pod, err)
		}
	}
	lw := byName(pod, func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) { return pods.List(ctx, o) }, pods.Watch)
	_, err = watchtools.UntilWithSync(ctx, lw, &corev1.Pod{}, nil, func(ev watch.Event) (bool, error) {
		po, ok := ev.Object.(*corev1.Pod)
		if !ok || ev.Type == watch.Deleted || po.DeletionTimestamp != nil {
			return false, nil
		}
		return !po.CreationTimestamp.Time.Before(since.Truncate(time.Second)) && apply.PodReady(po), nil
	})
	if err != nil {
		return fmt.Errorf("pod %s/%s did not come back Ready: %w", p.Namespace, pod, err)
	}
	return nil
}

// attestLine is a spire-agent log line saying it attested: at start ("Node
// attestation was successful") or at an SVID rotation ("Successfully
// reattested node"), with the agent's SPIFFE ID.
var attestLine = regexp.MustCompile(`(Node attestation was successful|Successfully reattested node).*spiffe_id="?(spiffe://[^"\s]+)`)

var fingerprintID = regexp.MustCompile(`/x509pop/[0-9a-f]{40}$`)

// AgentContainer is the agent's container in the scaffold's pods.
const AgentContainer = "spire-agent"

// WaitAttested follows the spire-agent container's log of pod until the
// agent (re-)attests with leaf, or with a later leaf its Secret holds (a
// renewal meanwhile: the agent attests with whatever the Secret held last):
// a line whose agent ID is spiffe://<td>/spire/agent/x509pop/<SHA-1 of the
// leaf> (SPIRE's default agent_path_template), or, when the server names
// agents otherwise, any attestation line stamped after the leaf was issued.
// It returns the line.
//
// A followed log stream can stay open without delivering what the agent
// writes (a stalled kubelet stream, a proxy's idle connection); the wait
// therefore reads the log again from the leaf's issue every
// logReopenEvery, as well as whenever a stream ends, and reads the Secret
// again each time.
func (c *KubeCluster) WaitAttested(ctx context.Context, p *project.Project, pod string, leaf *x509.Certificate) (string, error) {
	want := map[string]bool{"/x509pop/" + pki.SHA1Fingerprint(leaf): true}
	first := "/x509pop/" + pki.SHA1Fingerprint(leaf)
	since := metav1.NewTime(leaf.NotBefore.Add(-time.Minute))
	var lastErr error
	for {
		sctx, cancel := context.WithTimeout(ctx, logReopenEvery)
		line, err := scanAgentLog(sctx, p, c, pod, since, want, leaf.NotBefore)
		cancel()
		if line != "" {
			return line, nil
		}
		if err != nil && ctx.Err() == nil && !errors.Is(err, context.DeadlineExceeded) {
			lastErr = err
		}
		if ctx.Err() != nil {
			if lastErr != nil {
				return "", fmt.Errorf("the spire-agent of %s never logged an attestation with the new certificate (%s…): %w (last log error: %v)", pod, first[9:21], ctx.Err(), lastErr)
			}
			return "", fmt.Errorf("the spire-agent of %s never logged an attestation with the new certificate (%s…): %w", pod, first[9:21], ctx.Err())
		}
		// The Secret's leaf now (a renewal since the last read).
		if sec, err := c.Secret(ctx, p.Namespace, p.CertificateName(pod)); err == nil {
			if certs, err := pki.ParseCertificates(sec.Data["tls.crt"]); err == nil && len(certs) > 0 && !certs[0].NotBefore.Before(leaf.NotBefore) {
				want["/x509pop/"+pki.SHA1Fingerprint(certs[0])] = true
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(logReopenPause): // the log stream ended: open it again
		}
	}
}

// logReopenEvery bounds how long one followed log stream is trusted to
// deliver the agent's lines before the log is read again; logReopenPause
// is the pause before it is opened again.
var logReopenEvery, logReopenPause = 20 * time.Second, time.Second

// scanAgentLog reads one log stream (follow) until a matching line or its end.
func scanAgentLog(ctx context.Context, p *project.Project, c *KubeCluster, pod string, since metav1.Time, want map[string]bool, issued time.Time) (string, error) {
	rc, err := c.Client.CoreV1().Pods(p.Namespace).GetLogs(pod, &corev1.PodLogOptions{Container: AgentContainer, Follow: true, Timestamps: true, SinceTime: &since}).Stream(ctx)
	if err != nil {
		return "", err
	}
	defer rc.Close()
	sc := bufio.NewScanner(rc)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		line := sc.Text()
		m := attestLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		id := m[2]
		if i := strings.LastIndex(id, "/x509pop/"); i >= 0 && want[id[i:]] {
			return line, nil
		}
		if fingerprintID.MatchString(id) {
			continue // another certificate's agent ID (the old leaf)
		}
		// Not a fingerprint ID: the line's own time must be after the leaf.
		ts, _, _ := strings.Cut(line, " ")
		if t, err := time.Parse(time.RFC3339Nano, ts); err == nil && !t.Before(issued) {
			return line, nil
		}
	}
	return "", sc.Err()
}

// rollOrder is the order pods move in: highest ordinal first, as a
// StatefulSet rolling update does.
func rollOrder(p *project.Project) []string {
	pods := p.PodNames()
	out := make([]string, len(pods))
	for i := range pods {
		out[i] = pods[len(pods)-1-i]
	}
	return out
}

// ErrNoCluster is returned when phase 3 needs a cluster and none is given.
var ErrNoCluster = errors.New("this phase changes the cluster: no cluster was given")
