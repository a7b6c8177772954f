// Package certmanager owns what spirepod knows about cert-manager's API: the
// resources it reads and writes, how an issuer is named, and how readiness
// is reported. It knows nothing of a team: project decides which issuer a
// team uses.
package certmanager

import (
	"context"
	"errors"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
)

// Group is cert-manager's API group.
const Group = "cert-manager.io"

// ClusterResourceNamespace is where a ClusterIssuer reads its CA Secret
// (cert-manager's default --cluster-resource-namespace).
const ClusterResourceNamespace = "cert-manager"

// Kinds of issuer.
const (
	KindIssuer        = "Issuer"
	KindClusterIssuer = "ClusterIssuer"
)

// The resources spirepod reads.
var (
	CertificateGVR   = schema.GroupVersionResource{Group: Group, Version: "v1", Resource: "certificates"}
	IssuerGVR        = schema.GroupVersionResource{Group: Group, Version: "v1", Resource: "issuers"}
	ClusterIssuerGVR = schema.GroupVersionResource{Group: Group, Version: "v1", Resource: "clusterissuers"}
)

// IssuerRef names the issuer that signs a team's agent certificates and the
// Secret holding its CA.
type IssuerRef struct {
	Kind string `json:"kind"`
	Name string `json:"name"`
	// Namespace is the Issuer's namespace; empty for a ClusterIssuer.
	Namespace string `json:"namespace,omitempty"`
	// SecretNamespace and SecretName locate the CA Secret (tls.crt, tls.key).
	SecretNamespace string `json:"secretNamespace"`
	SecretName      string `json:"secretName"`
}

// Cluster reports whether the issuer is a ClusterIssuer.
func (r IssuerRef) Cluster() bool { return r.Kind == KindClusterIssuer }

// GVR is the issuer's resource.
func (r IssuerRef) GVR() schema.GroupVersionResource {
	if r.Cluster() {
		return ClusterIssuerGVR
	}
	return IssuerGVR
}

// String is "ClusterIssuer NAME" or "Issuer NAMESPACE/NAME".
func (r IssuerRef) String() string {
	if r.Cluster() {
		return r.Kind + " " + r.Name
	}
	return r.Kind + " " + r.Namespace + "/" + r.Name
}

// Secret is "NAMESPACE/NAME" of the CA Secret.
func (r IssuerRef) Secret() string { return r.SecretNamespace + "/" + r.SecretName }

// Get reads the issuer.
func (r IssuerRef) Get(ctx context.Context, dyn dynamic.Interface) (*unstructured.Unstructured, error) {
	if r.Cluster() {
		return dyn.Resource(ClusterIssuerGVR).Get(ctx, r.Name, metav1.GetOptions{})
	}
	return dyn.Resource(IssuerGVR).Namespace(r.Namespace).Get(ctx, r.Name, metav1.GetOptions{})
}

// ReadyCondition reads status.conditions[type=Ready] of a cert-manager
// object (or any object with conditions).
func ReadyCondition(u *unstructured.Unstructured) (ready bool, reason, message string) {
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, c := range conds {
		m, ok := c.(map[string]any)
		if !ok || m["type"] != "Ready" {
			continue
		}
		reason, _ = m["reason"].(string)
		message, _ = m["message"].(string)
		return m["status"] == "True", reason, message
	}
	return false, "", ""
}

// NotInstalled reports whether err says the resource's kind is not served
// (cert-manager's CRDs are missing), as opposed to one object not existing.
func NotInstalled(err error) bool {
	if meta.IsNoMatchError(err) {
		return true
	}
	if !apierrors.IsNotFound(err) {
		return false
	}
	var se apierrors.APIStatus
	if !errors.As(err, &se) {
		return false
	}
	d := se.Status().Details
	return d == nil || d.Name == ""
}
