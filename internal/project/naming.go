package project

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/spirepod/spirepod/internal/certmanager"
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

// Naming forms of agent common names and node aliases.
const (
	// NamingNamespaced scopes both by the team's namespace: the agent CN is
	// <pod>.<namespace> and the alias spiffe://<td>/ns/<namespace>/spire-agent-x509pop-<pod>.
	// Two teams never share a name, whatever their StatefulSets are called.
	NamingNamespaced = "namespaced"
	// NamingGuide is the guide's literal form: CN spire-agent-x509pop-<pod>,
	// alias spiffe://<td>/spire-agent-x509pop-<pod>. Unique only if the
	// StatefulSet name is unique across every team of the SPIRE server.
	NamingGuide = "guide"
)

// Issuer scopes.
const (
	// IssuerNamespaced: a cert-manager Issuer and its CA Secret in the
	// team's namespace. No cluster-wide object; no other namespace can use it.
	IssuerNamespaced = "namespaced"
	// IssuerCluster: the guide's ClusterIssuer, with team-scoped names
	// (spire-agent-x509pop-<namespace>, cert-manager/agent-x509pop-root-<namespace>).
	IssuerCluster = "cluster"
)

// The naming and issuer scope `spirepod init` chooses by default.
const (
	DefaultNaming      = NamingNamespaced
	DefaultIssuerScope = IssuerNamespaced
)

// HelpExample is a project made with init's defaults, its values left as
// the placeholders help texts show (<namespace>, <name>, <td>): help that
// names a scaffold fact renders it through the same methods the scaffold
// does, so it cannot describe an older scaffold.
func HelpExample() *Project {
	return &Project{Team: "<team>", Namespace: "<namespace>", StatefulSet: "<name>", TrustDomain: "<td>",
		Naming: DefaultNaming, IssuerScope: DefaultIssuerScope, ServiceAccount: "<service-account>"}
}

// DefaultStatefulSet is the StatefulSet name every scaffold starts with.
const DefaultStatefulSet = "spire-envoy-integration"

// Legacy reports whether the project file predates team-scoped names: it
// sets neither naming nor issuer, so it uses the guide's shared names
// (alias spiffe://<td>/spire-agent-x509pop-<pod>, ClusterIssuer
// spire-agent-x509pop-issuer, Secret cert-manager/agent-x509pop-root).
func (p *Project) Legacy() bool { return p.Naming == "" || p.IssuerScope == "" }

// naming is the effective naming form.
func (p *Project) naming() string {
	if p.Naming == "" {
		return NamingGuide
	}
	return p.Naming
}

// AgentCN is the common name of pod's x509pop agent certificate: what
// gen-cert asks cert-manager for and what the node alias selects.
func (p *Project) AgentCN(pod string) string {
	if p.naming() == NamingNamespaced {
		return pod + "." + p.Namespace
	}
	return AgentCNPrefix + pod
}

// AgentCNs are the agent common names of every pod.
func (p *Project) AgentCNs() []string {
	out := make([]string, 0, p.Replicas)
	for _, pod := range p.PodNames() {
		out = append(out, p.AgentCN(pod))
	}
	return out
}

// AgentCNTemplate is AgentCN with the pod's name and namespace left as the
// ${POD_NAME} and ${POD_NAMESPACE} that gen-cert fills in.
func (p *Project) AgentCNTemplate() string {
	if p.naming() == NamingNamespaced {
		return "${POD_NAME}.${POD_NAMESPACE}"
	}
	return AgentCNPrefix + "${POD_NAME}"
}

// NodeAliasID is the SPIFFE ID of pod's node alias: the parent of the pod's
// workload entry, matched by the agent that holds the pod's certificate.
func (p *Project) NodeAliasID(pod string) string {
	if p.naming() == NamingNamespaced {
		return "spiffe://" + p.TrustDomain + "/ns/" + p.Namespace + "/" + AgentCNPrefix + pod
	}
	return "spiffe://" + p.TrustDomain + "/" + AgentCNPrefix + pod
}

// Scope is the SPIFFE ID path prefix the team owns: every ID it registers
// (aliases and workloads) starts with it. spiffe://<td>/ns/<namespace>/.
func (p *Project) Scope() string { return "spiffe://" + p.TrustDomain + "/ns/" + p.Namespace + "/" }

// CertificateName names pod's cert-manager Certificate and its Secret, in the
// team's namespace.
func (p *Project) CertificateName(pod string) string { return AgentCNPrefix + pod }

// Issuer is the issuer that signs the team's agent certificates, and where
// its CA Secret lives.
func (p *Project) Issuer() certmanager.IssuerRef {
	switch p.IssuerScope {
	case IssuerNamespaced:
		return certmanager.IssuerRef{Kind: certmanager.KindIssuer, Name: GuideIssuerName, Namespace: p.Namespace,
			SecretNamespace: p.Namespace, SecretName: GuideCASecretName}
	case IssuerCluster:
		return certmanager.IssuerRef{Kind: certmanager.KindClusterIssuer, Name: "spire-agent-x509pop-" + p.Namespace,
			SecretNamespace: certmanager.ClusterResourceNamespace, SecretName: GuideCASecretName + "-" + p.Namespace}
	}
	return certmanager.IssuerRef{Kind: certmanager.KindClusterIssuer, Name: GuideIssuerName,
		SecretNamespace: certmanager.ClusterResourceNamespace, SecretName: GuideCASecretName}
}

// ReinitCommand is the `spirepod init … --force` that re-renders this
// scaffold with its own values (naming and issuer the current defaults when
// the file predates them), run from the scaffold's parent directory so it
// re-renders this scaffold rather than nesting a new one inside it.
func (p *Project) ReinitCommand() string {
	naming, issuer := p.Naming, p.IssuerScope
	if naming == "" {
		naming = NamingNamespaced
	}
	if issuer == "" {
		issuer = IssuerNamespaced
	}
	return fmt.Sprintf("cd %s && spirepod init %s --team %s --namespace %s --env %s --name %s --replicas %d --service-account %s --naming %s --issuer %s --force",
		filepath.Dir(p.Dir), filepath.Base(p.Dir), p.Team, p.Namespace, p.Environment, p.StatefulSet, p.Replicas, p.ServiceAccount, naming, issuer)
}

// FieldManager is the server-side-apply field manager of the team's objects:
// one per team, so the API server reports a cross-team overwrite as a conflict.
func (p *Project) FieldManager() string { return "spirepod-" + p.Namespace }

// CheckPodName checks a pod name as Kubernetes does (a DNS-1123 subdomain).
func CheckPodName(pod string) error {
	if pod == "" {
		return errors.New("pod name is empty")
	}
	return notSubdomain("pod name", pod)
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

// AgentName is what an agent common name says.
type AgentName struct {
	Pod string
	// Namespace is empty for the guide's form.
	Namespace string
}

// ParseAgentCN reads an agent common name in either naming form:
// <pod>.<namespace> (two DNS-1123 labels) or spire-agent-x509pop-<pod>.
func ParseAgentCN(cn string) (AgentName, error) {
	if pod, ok := strings.CutPrefix(cn, AgentCNPrefix); ok && !strings.Contains(pod, ".") {
		if pod == "" {
			return AgentName{}, errors.New("no pod name after " + AgentCNPrefix)
		}
		if err := notLabel("pod name", pod); err != nil {
			return AgentName{}, err
		}
		return AgentName{Pod: pod}, nil
	}
	pod, ns, ok := strings.Cut(cn, ".")
	if !ok || strings.Contains(ns, ".") {
		return AgentName{}, fmt.Errorf("not <pod>.<namespace> nor %s<pod>", AgentCNPrefix)
	}
	for what, v := range map[string]string{"pod": pod, "namespace": ns} {
		if err := notLabel(what+" name", v); err != nil {
			return AgentName{}, err
		}
	}
	return AgentName{Pod: pod, Namespace: ns}, nil
}
