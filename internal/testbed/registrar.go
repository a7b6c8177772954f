package testbed

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/utils/ptr"
)

// SpiffeIDGVR is the registrar's namespaced SpiffeID resource.
var SpiffeIDGVR = schema.GroupVersionResource{Group: "spiffeid.spiffe.io", Version: "v1beta1", Resource: "spiffeids"}

// RegistrarOptions are what a test varies in the k8s-workload-registrar's
// CRD-mode configuration (HCL).
type RegistrarOptions struct {
	// Cluster is the registrar's cluster name; default "testbed".
	Cluster string
	// Namespace is the registrar's own namespace (MY_POD_NAMESPACE): the
	// webhook's Service lives there, and SpiffeIDs with k8s_psat selectors
	// are only accepted there. Default "spire"; created if missing.
	Namespace string
	// PodController makes the registrar create a SpiffeID for every pod and
	// node itself (upstream's default is true). Off by default here, so the
	// server holds only the entries of the SpiffeIDs a test applies.
	PodController bool
	// NoWebhook runs without the validating webhook (upstream: webhook_enabled).
	NoWebhook bool
}

// WorkloadRegistrar is a running k8s-workload-registrar in CRD mode.
type WorkloadRegistrar struct {
	Proc        *Proc
	ConfigPath  string
	WebhookPort int
	Options     RegistrarOptions
	// WebhookName is the ValidatingWebhookConfiguration it registered.
	WebhookName string
	cluster     *Cluster
}

// The webhook path controller-runtime derives for SpiffeID v1beta1.
const spiffeIDWebhookPath = "/validate-spiffeid-spiffe-io-v1beta1-spiffeid"

// registrarServiceName is webhook_service_name: the registrar mints its
// webhook certificate from SPIRE for <service>.<namespace>.svc.
const registrarServiceName = "k8s-workload-registrar"

// StartWorkloadRegistrar applies the SpiffeID CRD and runs the registrar
// (CRD mode) against the cluster's apiserver and the server's admin socket.
//
// The webhook is wired the way a cluster runs it, except for the route: the
// registrar mints its serving certificate from SPIRE for
// k8s-workload-registrar.<ns>.svc; a ValidatingWebhookConfiguration names
// that Service, with the SPIRE bundle as caBundle; the Service is of type
// ExternalName 127.0.0.1, so the apiserver dials the loopback port the
// test-bed build listens on (and still checks the certificate against the
// Service's DNS name). It returns once the apiserver demonstrably calls the
// webhook (a dry-run SpiffeID with a wrong namespace selector is refused by
// it) and the controller turned a probe SpiffeID into an entry and removed it.
func StartWorkloadRegistrar(ctx context.Context, c *Cluster, srv *SpireServer, dir string, o RegistrarOptions) (*WorkloadRegistrar, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if o.Cluster == "" {
		o.Cluster = "testbed"
	}
	if o.Namespace == "" {
		o.Namespace = "spire"
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	if err := c.ApplyCRDs(ctx, c.Bins.WorkloadRegistrarCRDs()); err != nil {
		return nil, fmt.Errorf("SpiffeID CRD: %w", err)
	}
	if _, err := c.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: o.Namespace}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, err
	}
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	r := &WorkloadRegistrar{ConfigPath: filepath.Join(dir, "k8s-workload-registrar.conf"), WebhookPort: port, Options: o, cluster: c}
	conf := fmt.Sprintf(`log_level = "debug"
mode = "crd"
trust_domain = %q
server_socket_path = %q
cluster = %q
pod_controller = %t
leader_election = false
metrics_bind_addr = "0"
webhook_enabled = %t
webhook_cert_dir = %q
webhook_port = %d
webhook_service_name = %q
`, srv.TrustDomain, srv.Socket, o.Cluster, o.PodController, !o.NoWebhook, filepath.Join(dir, "webhook-certs"), port, registrarServiceName)
	if err := os.WriteFile(r.ConfigPath, []byte(conf), 0o644); err != nil {
		return nil, err
	}
	r.Proc, err = startProcEnv(dir, "k8s-workload-registrar", c.Bins.WorkloadRegistrar(),
		[]string{"MY_POD_NAMESPACE=" + o.Namespace},
		"-config", r.ConfigPath, "-kubeconfig", c.Kubeconfig)
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*WorkloadRegistrar, error) {
		r.Stop()
		return nil, err
	}
	if !o.NoWebhook {
		if err := waitFor(ctx, "k8s-workload-registrar webhook on 127.0.0.1", r.Proc, func(context.Context) bool {
			return tlsServing(port)
		}); err != nil {
			return fail(err)
		}
		if err := r.registerWebhook(ctx, srv); err != nil {
			return fail(err)
		}
	}
	// Its controller-runtime logger is not wired (nothing like "Starting
	// workers" is logged): the controller is up when a SpiffeID gets an entry.
	if err := r.probeController(ctx, srv); err != nil {
		return fail(err)
	}
	return r, nil
}

// probeController creates a SpiffeID in the registrar's namespace, waits
// for the registrar to record its entry ID, then deletes it and waits until
// the object (and, through the registrar's finalizer, its entry) is gone.
func (r *WorkloadRegistrar) probeController(ctx context.Context, srv *SpireServer) error {
	c, ns := r.cluster, r.Options.Namespace
	res := c.Dynamic.Resource(SpiffeIDGVR).Namespace(ns)
	const name = "testbed-registrar-probe"
	probe := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": SpiffeIDGVR.GroupVersion().String(), "kind": "SpiffeID",
		"metadata": map[string]any{"name": name, "namespace": ns},
		"spec": map[string]any{
			"spiffeId": "spiffe://" + srv.TrustDomain + "/testbed/registrar-probe", "parentId": "spiffe://" + srv.TrustDomain + "/spire/server",
			"selector": map[string]any{"namespace": ns},
		},
	}}
	if _, err := res.Create(ctx, probe, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("registrar probe SpiffeID: %w", err)
	}
	if err := waitFor(ctx, "the registrar to create the probe's entry", r.Proc, func(ctx context.Context) bool {
		u, err := res.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false
		}
		id, _, _ := unstructured.NestedString(u.Object, "status", "entryId")
		return id != ""
	}); err != nil {
		return err
	}
	if err := res.Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
		return err
	}
	return waitFor(ctx, "the registrar to finalize the probe", r.Proc, func(ctx context.Context) bool {
		_, err := res.Get(ctx, name, metav1.GetOptions{})
		return apierrors.IsNotFound(err)
	})
}

func (r *WorkloadRegistrar) registerWebhook(ctx context.Context, srv *SpireServer) error {
	c, o := r.cluster, r.Options
	bundle, err := os.ReadFile(srv.BundlePath)
	if err != nil {
		return err
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: registrarServiceName, Namespace: o.Namespace},
		Spec:       corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "127.0.0.1"},
	}
	if _, err := c.Client.CoreV1().Services(o.Namespace).Create(ctx, svc, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("webhook Service: %w", err)
	}
	scope := admissionregistrationv1.NamespacedScope
	none := admissionregistrationv1.SideEffectClassNone
	fail := admissionregistrationv1.Fail
	r.WebhookName = "k8s-workload-registrar-" + o.Namespace
	vwc := &admissionregistrationv1.ValidatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: r.WebhookName},
		Webhooks: []admissionregistrationv1.ValidatingWebhook{{
			Name:                    registrarServiceName + "." + o.Namespace + ".svc",
			AdmissionReviewVersions: []string{"v1", "v1beta1"},
			ClientConfig: admissionregistrationv1.WebhookClientConfig{
				Service: &admissionregistrationv1.ServiceReference{
					Name: registrarServiceName, Namespace: o.Namespace,
					Path: ptr.To(spiffeIDWebhookPath), Port: ptr.To(int32(r.WebhookPort)),
				},
				CABundle: bundle,
			},
			Rules: []admissionregistrationv1.RuleWithOperations{{
				Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create, admissionregistrationv1.Update, admissionregistrationv1.Delete},
				Rule: admissionregistrationv1.Rule{
					APIGroups: []string{SpiffeIDGVR.Group}, APIVersions: []string{SpiffeIDGVR.Version},
					Resources: []string{SpiffeIDGVR.Resource}, Scope: &scope,
				},
			}},
			SideEffects:    &none,
			FailurePolicy:  &fail,
			TimeoutSeconds: ptr.To(int32(10)),
		}},
	}
	if _, err := c.Client.AdmissionregistrationV1().ValidatingWebhookConfigurations().Create(ctx, vwc, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("ValidatingWebhookConfiguration: %w", err)
	}
	// The webhook is live when the apiserver refuses, through it, what only
	// it refuses: a SpiffeID whose selector namespace is not its own.
	probe := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": SpiffeIDGVR.GroupVersion().String(), "kind": "SpiffeID",
		"metadata": map[string]any{"name": "testbed-webhook-probe", "namespace": o.Namespace},
		"spec": map[string]any{
			"spiffeId": "spiffe://" + srv.TrustDomain + "/probe", "parentId": "spiffe://" + srv.TrustDomain + "/spire/server",
			"selector": map[string]any{"namespace": o.Namespace + "-other"},
		},
	}}
	const want = "spec.Selector.Namespace must match namespace of resource"
	var last error
	err = waitFor(ctx, "the apiserver to call the registrar's webhook", r.Proc, func(ctx context.Context) bool {
		_, last = c.Dynamic.Resource(SpiffeIDGVR).Namespace(o.Namespace).Create(ctx, probe, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		return last != nil && strings.Contains(last.Error(), want)
	})
	if err != nil {
		return fmt.Errorf("%w (last answer: %v)", err, last)
	}
	return nil
}

// Stop removes the webhook configuration (so the cluster does not call a
// dead webhook) and stops the registrar.
func (r *WorkloadRegistrar) Stop() {
	if r.WebhookName != "" {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = r.cluster.Client.AdmissionregistrationV1().ValidatingWebhookConfigurations().Delete(ctx, r.WebhookName, metav1.DeleteOptions{})
		cancel()
	}
	r.Proc.Stop()
}
