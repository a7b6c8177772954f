package project

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spirepod/spirepod/internal/certmanager"
	"k8s.io/apimachinery/pkg/util/validation"
)

// The guide's fixed names.
const (
	// GuideIssuerName is the guide's ClusterIssuer.
	GuideIssuerName = "spire-agent-x509pop-issuer"
	// GuideCASecretName is the guide's CA Secret, in cert-manager's namespace.
	GuideCASecretName = "agent-x509pop-root"
)

// PodNames returns <statefulSet>-0 … <statefulSet>-(replicas-1).
func (p *Project) PodNames() []string {
	names := make([]string, p.Replicas)
	for i := range names {
		names[i] = p.PodName(i)
	}
	return names
}

// PodName is the name of the StatefulSet's pod with ordinal i.
func (p *Project) PodName(i int) string { return fmt.Sprintf("%s-%d", p.StatefulSet, i) }

// AgentCN is the common name of pod's x509pop agent certificate: what
// gen-cert asks cert-manager for and what the node alias selects.
func (p *Project) AgentCN(pod string) string { return AgentCNPrefix + pod }

// NodeAliasID is the SPIFFE ID of pod's node alias: the parent of the pod's
// workload entry, matched by the agent that holds the pod's certificate.
func (p *Project) NodeAliasID(pod string) string {
	return "spiffe://" + p.TrustDomain + "/" + p.AgentCN(pod)
}

// CertificateName names pod's cert-manager Certificate and its Secret, in the
// team's namespace.
func (p *Project) CertificateName(pod string) string { return AgentCNPrefix + pod }

// Issuer is the issuer that signs the team's agent certificates, and where
// its CA Secret lives.
func (p *Project) Issuer() certmanager.IssuerRef {
	return certmanager.IssuerRef{Kind: certmanager.KindClusterIssuer, Name: GuideIssuerName,
		SecretNamespace: certmanager.ClusterResourceNamespace, SecretName: GuideCASecretName}
}

// CheckPodName checks a pod name as Kubernetes does (a DNS-1123 subdomain).
func CheckPodName(pod string) error {
	if pod == "" {
		return errors.New("pod name is empty")
	}
	if errs := validation.IsDNS1123Subdomain(pod); len(errs) > 0 {
		return fmt.Errorf("%q is not a valid pod name: %s", pod, strings.Join(errs, "; "))
	}
	return nil
}

// CheckAgentCN checks that an agent common name is not empty and fits the
// 64 bytes cert-manager (RFC 5280's ub-common-name) allows.
func CheckAgentCN(cn string) error {
	if cn == "" {
		return errors.New("agent common name is empty")
	}
	if len(cn) > MaxCNBytes {
		return fmt.Errorf("agent common name %q is %d bytes; the limit is %d", cn, len(cn), MaxCNBytes)
	}
	return nil
}
