package city

import (
	"fmt"
	"slices"
	"strings"
	"sync"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/pod-security-admission/api"
	"k8s.io/pod-security-admission/policy"
	kjson "sigs.k8s.io/json"

	"github.com/spirepod/spirepod/internal/project"
	"github.com/spirepod/spirepod/internal/registration"
)

// What a team folder's build may produce: the kinds the scaffold makes and
// the registration kinds, each judged against what spirepod renders for
// the folder's namespace. Everything else is refused: an allow-list, so a
// kind nobody thought of (ClusterSPIFFEID, a webhook, a CRD) is an error,
// not a pass.
type objectRule struct {
	namespaced bool
	judge      func(c *City, o *folderOutcome, f Folder, file string, line int, obj registration.Object)
}

var objectRules = map[string]objectRule{
	"v1/ServiceAccount":                                               {namespaced: true},
	"v1/ConfigMap":                                                    {namespaced: true},
	"rbac.authorization.k8s.io/v1/Role":                               {namespaced: true, judge: judgeRole},
	"rbac.authorization.k8s.io/v1/RoleBinding":                        {namespaced: true, judge: judgeRoleBinding},
	"rbac.authorization.k8s.io/v1/ClusterRole":                        {judge: judgeClusterRole},
	"rbac.authorization.k8s.io/v1/ClusterRoleBinding":                 {judge: judgeClusterRoleBinding},
	"apps/v1/StatefulSet":                                             {namespaced: true, judge: judgeStatefulSet},
	"cert-manager.io/v1/Certificate":                                  {namespaced: true, judge: judgeCertificate},
	"cert-manager.io/v1/Issuer":                                       {namespaced: true, judge: judgeIssuer},
	"cert-manager.io/v1/ClusterIssuer":                                {judge: judgeClusterIssuer},
	"v1/Namespace":                                                    {judge: judgeNamespace},
	registration.SpiffeIDAPIVersion + "/" + registration.SpiffeIDKind: {namespaced: true},
	registration.ClusterStaticEntryAPIVersion + "/" + registration.ClusterStaticEntryKind: {},
}

// identityKinds register identities or trust on the SPIRE server: named in
// the refusal, as they are the reason the list is closed.
var identityKinds = map[string]bool{"ClusterSPIFFEID": true, "ClusterFederatedTrustDomain": true, "ControllerManagerConfig": true, "SpiffeID": true, "ClusterStaticEntry": true}

func (c *City) judgeObject(o *folderOutcome, f Folder, file string, line int, obj registration.Object) {
	inv := []string{fileKey(file)}
	name := obj.Kind + " " + obj.Name
	if obj.Kind == "Secret" && obj.APIVersion == "v1" {
		o.add(CodeSecretInCity, sevE, file, line, inv,
			"%s: a Secret in the city repository is readable by everyone who can read the repository (the team CA's Secret is applied from the team's machine with `spirepod apply`, never from the city)", name)
		return
	}
	rule, ok := objectRules[obj.APIVersion+"/"+obj.Kind]
	if !ok {
		why := "spirepod cannot judge it, so it does not belong in a team folder"
		if identityKinds[obj.Kind] {
			why = "it registers identities or trust on the shared SPIRE server beyond the team's own entries"
		}
		o.add(CodeKind, sevE, file, line, inv, "%s (%s) is not a kind a team folder may hold: %s", name, obj.APIVersion, why)
		return
	}
	if rule.namespaced {
		switch {
		case f.Namespace == "":
			o.add(CodeNamespace, sevW, file, line, inv, "%s: the team path has no {namespace}, so the object's namespace cannot be judged", name)
		case obj.Namespace != f.Namespace:
			got := obj.Namespace
			if got == "" {
				got = "none (it lands in whatever namespace the applier defaults to)"
			}
			o.add(CodeNamespace, sevE, file, line, inv, "%s is in namespace %s, not the folder's namespace %s", name, got, f.Namespace)
		}
	}
	if rule.judge != nil {
		rule.judge(c, o, f, file, line, obj)
	}
}

func decodeInto(o *folderOutcome, file string, line int, obj registration.Object, into any) bool {
	if err := kjson.UnmarshalCaseSensitivePreserveInts(obj.JSON, into); err != nil {
		o.add(CodeUnparsable, sevE, file, line, []string{fileKey(file)}, "%s %s does not decode as the API server reads it: %v", obj.Kind, obj.Name, err)
		return false
	}
	return true
}

func shape(o *folderOutcome, file string, line int, obj registration.Object, format string, args ...any) {
	o.add(CodeShape, sevE, file, line, []string{fileKey(file)}, "%s %s: %s", obj.Kind, obj.Name, fmt.Sprintf(format, args...))
}

// judgeRole: what the scaffold's gen-cert Role grants, and no more: read
// (get, list, watch) of named cert-manager Certificates and Secrets.
func judgeRole(_ *City, o *folderOutcome, _ Folder, file string, line int, obj registration.Object) {
	var r rbacv1.Role
	if !decodeInto(o, file, line, obj, &r) {
		return
	}
	for i, rule := range r.Rules {
		if why := scaffoldRule(rule); why != "" {
			shape(o, file, line, obj, "rule %d %s (the scaffold's Role reads only its own pods' Certificates and Secrets, by name)", i+1, why)
		}
	}
}

func scaffoldRule(r rbacv1.PolicyRule) string {
	if len(r.NonResourceURLs) > 0 {
		return "grants non-resource URLs"
	}
	for _, v := range r.Verbs {
		if v != "get" && v != "list" && v != "watch" {
			return fmt.Sprintf("grants verb %q", v)
		}
	}
	if len(r.ResourceNames) == 0 {
		return "is not limited to named objects (resourceNames)"
	}
	for _, g := range r.APIGroups {
		for _, res := range r.Resources {
			ok := (g == "cert-manager.io" && res == "certificates") || (g == "" && res == "secrets")
			if !ok {
				return fmt.Sprintf("grants %q in API group %q", res, g)
			}
		}
	}
	return ""
}

// judgeRoleBinding: a Role of the folder to service accounts of the
// folder's namespace.
func judgeRoleBinding(_ *City, o *folderOutcome, f Folder, file string, line int, obj registration.Object) {
	var b rbacv1.RoleBinding
	if !decodeInto(o, file, line, obj, &b) {
		return
	}
	if b.RoleRef.Kind != "Role" || b.RoleRef.APIGroup != rbacv1.GroupName {
		shape(o, file, line, obj, "binds %s %q; the scaffold binds its own Role only", b.RoleRef.Kind, b.RoleRef.Name)
	}
	judgeSubjects(o, f, file, line, obj, b.Subjects, b.Namespace)
}

func judgeSubjects(o *folderOutcome, f Folder, file string, line int, obj registration.Object, subjects []rbacv1.Subject, defaultNS string) {
	for _, s := range subjects {
		ns := s.Namespace
		if ns == "" {
			ns = defaultNS
		}
		if s.Kind != rbacv1.ServiceAccountKind || (f.Namespace != "" && ns != f.Namespace) {
			shape(o, file, line, obj, "binds %s %q in namespace %q; the scaffold binds service accounts of namespace %s only", s.Kind, s.Name, ns, f.Namespace)
		}
	}
}

// k8sAttestorRole is the scaffold's optional ClusterRole (agent.k8sAttestor):
// get nodes and nodes/proxy, named for the team's namespace.
func k8sAttestorRole(ns string) string { return "spire-agent-k8s-attestor-" + ns }

func judgeClusterRole(_ *City, o *folderOutcome, f Folder, file string, line int, obj registration.Object) {
	var r rbacv1.ClusterRole
	if !decodeInto(o, file, line, obj, &r) {
		return
	}
	if r.Name != k8sAttestorRole(f.Namespace) || r.AggregationRule != nil {
		shape(o, file, line, obj, "the only cluster-wide role a team folder may hold is the scaffold's %s (agent.k8sAttestor)", k8sAttestorRole(f.Namespace))
		return
	}
	for i, rule := range r.Rules {
		bad := len(rule.NonResourceURLs) > 0 || len(rule.APIGroups) != 1 || rule.APIGroups[0] != ""
		for _, v := range rule.Verbs {
			bad = bad || v != "get"
		}
		for _, res := range rule.Resources {
			bad = bad || (res != "nodes" && res != "nodes/proxy")
		}
		if bad {
			shape(o, file, line, obj, "rule %d grants more than the k8s workload attestor's get on nodes and nodes/proxy", i+1)
		}
	}
}

func judgeClusterRoleBinding(_ *City, o *folderOutcome, f Folder, file string, line int, obj registration.Object) {
	var b rbacv1.ClusterRoleBinding
	if !decodeInto(o, file, line, obj, &b) {
		return
	}
	if b.Name != k8sAttestorRole(f.Namespace) || b.RoleRef.Kind != "ClusterRole" || b.RoleRef.Name != k8sAttestorRole(f.Namespace) || b.RoleRef.APIGroup != rbacv1.GroupName {
		shape(o, file, line, obj, "the only cluster-wide binding a team folder may hold binds ClusterRole %s (agent.k8sAttestor) under the same name", k8sAttestorRole(f.Namespace))
	}
	judgeSubjects(o, f, file, line, obj, b.Subjects, "")
}

// judgeStatefulSet: the pods pass Pod Security "restricted", judged by the
// API server's own PodSecurity checks (k8s.io/pod-security-admission): a
// privileged pod or a hostPath reaches the node every team shares.
func judgeStatefulSet(_ *City, o *folderOutcome, _ Folder, file string, line int, obj registration.Object) {
	var s appsv1.StatefulSet
	if !decodeInto(o, file, line, obj, &s) {
		return
	}
	judgePodSpec(o, file, line, obj, &s.Spec.Template)
}

// podEvaluator is Pod Security's evaluator, made on first use (not at
// every spirepod process's start).
var podEvaluator = sync.OnceValue(func() policy.Evaluator {
	e, err := policy.NewEvaluator(policy.DefaultChecks(), nil)
	if err != nil {
		panic(err)
	}
	return e
})

func judgePodSpec(o *folderOutcome, file string, line int, obj registration.Object, t *corev1.PodTemplateSpec) {
	lv := api.LevelVersion{Level: api.LevelRestricted, Version: api.LatestVersion()}
	for _, r := range podEvaluator().EvaluatePod(lv, &t.ObjectMeta, &t.Spec) {
		if !r.Allowed {
			o.add(CodePodSecurity, sevE, file, line, []string{fileKey(file)},
				"%s %s: its pods violate Pod Security \"restricted\": %s (%s)", obj.Kind, obj.Name, r.ForbiddenReason, r.ForbiddenDetail)
		}
	}
}

// cert-manager objects, decoded into the fields the judge needs (the
// module is not a dependency; the JSON names are cert-manager.io/v1's).
type issuerRef struct {
	Name  string `json:"name"`
	Kind  string `json:"kind"`
	Group string `json:"group"`
}

type certificate struct {
	Spec struct {
		IssuerRef issuerRef `json:"issuerRef"`
	} `json:"spec"`
}

type issuer struct {
	Metadata struct {
		Name string `json:"name"`
	} `json:"metadata"`
	Spec map[string]any `json:"spec"`
}

// judgeCertificate: a Certificate is issued by the team's own issuer. A
// ClusterIssuer is any namespace's to use: naming another team's would mint
// leaves of that team's CA, which its pinned aliases accept.
func judgeCertificate(_ *City, o *folderOutcome, f Folder, file string, line int, obj registration.Object) {
	var crt certificate
	if !decodeInto(o, file, line, obj, &crt) {
		return
	}
	ref := crt.Spec.IssuerRef
	if ref.Group != "" && ref.Group != "cert-manager.io" {
		shape(o, file, line, obj, "is issued by an external issuer (group %q); the scaffold uses the team's cert-manager CA issuer", ref.Group)
		return
	}
	switch ref.Kind {
	case "", "Issuer": // namespaced: only this namespace's issuers
	case "ClusterIssuer":
		if want := clusterIssuerName(f.Namespace); ref.Name != want {
			shape(o, file, line, obj, "is issued by ClusterIssuer %q; a team's certificates come from its own Issuer (or ClusterIssuer %q): another team's would issue leaves of that team's CA", ref.Name, want)
		}
	default:
		shape(o, file, line, obj, "issuerRef kind %q is neither Issuer nor ClusterIssuer", ref.Kind)
	}
}

func clusterIssuerName(ns string) string { return "spire-agent-x509pop-" + ns }
func clusterCASecret(ns string) string   { return project.GuideCASecretName + "-" + ns }

// judgeIssuer: a CA issuer (the scaffold's only kind of issuer).
func judgeIssuer(_ *City, o *folderOutcome, _ Folder, file string, line int, obj registration.Object) {
	var is issuer
	if !decodeInto(o, file, line, obj, &is) {
		return
	}
	if _, ok := is.Spec["ca"]; !ok || len(is.Spec) != 1 {
		shape(o, file, line, obj, "is not a CA issuer (spec.ca only): the scaffold's issuer signs with the team CA")
	}
}

// judgeClusterIssuer: only the team-scoped ClusterIssuer of --issuer
// cluster, reading the team-scoped CA Secret: a ClusterIssuer naming
// another team's CA Secret would sign with that team's key.
func judgeClusterIssuer(_ *City, o *folderOutcome, f Folder, file string, line int, obj registration.Object) {
	var is issuer
	if !decodeInto(o, file, line, obj, &is) {
		return
	}
	if want := clusterIssuerName(f.Namespace); is.Metadata.Name != want {
		shape(o, file, line, obj, "a team folder's ClusterIssuer is %q (cluster-wide names are the team's own)", want)
	}
	ca, _ := is.Spec["ca"].(map[string]any)
	secret, _ := ca["secretName"].(string)
	if len(is.Spec) != 1 || secret != clusterCASecret(f.Namespace) {
		shape(o, file, line, obj, "reads CA Secret %q; a team's ClusterIssuer reads only cert-manager/%s (another team's Secret would sign with that team's CA key)", secret, clusterCASecret(f.Namespace))
	}
}

// judgeNamespace: the folder's own namespace, not made weaker than Pod
// Security "restricted".
func judgeNamespace(_ *City, o *folderOutcome, f Folder, file string, line int, obj registration.Object) {
	var ns corev1.Namespace
	if !decodeInto(o, file, line, obj, &ns) {
		return
	}
	if ns.Name != f.Namespace {
		shape(o, file, line, obj, "a team folder may create its own namespace %q only", f.Namespace)
	}
	for _, k := range []string{api.EnforceLevelLabel, api.WarnLevelLabel, api.AuditLevelLabel} {
		if v, ok := ns.Labels[k]; ok && k == api.EnforceLevelLabel && v != string(api.LevelRestricted) {
			o.add(CodePodSecurity, sevE, file, line, []string{fileKey(file)},
				"Namespace %s: %s=%s lets its pods run weaker than Pod Security \"restricted\" (privileged pods reach the node every team shares)", ns.Name, k, v)
		}
	}
}

// dnsNameOwn says whether a DNS name is the team's own: a Kubernetes
// service name of the team's namespace, <service>.<namespace>,
// <service>.<namespace>.svc or <service>.<namespace>.svc.<cluster domain>
// (a wildcard service label included). Anything else is a name another
// team, or the world, may rely on.
func dnsNameOwn(name, ns string) bool {
	if ns == "" {
		return false
	}
	labels := strings.Split(strings.ToLower(strings.TrimSuffix(name, ".")), ".")
	if len(labels) < 2 || labels[0] == "" || labels[1] != ns {
		return false
	}
	if len(labels) == 2 {
		return true
	}
	return labels[2] == "svc" && !slices.Contains(labels[3:], "")
}
