package scaffold

import (
	"fmt"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/spirepod/spirepod/internal/project"
)

// Container names in the scaffold's pod.
const (
	ContainerGenCert    = "gen-cert"
	ContainerSpireAgent = "spire-agent"
	ContainerEnvoy      = "envoy"
	ContainerCurl       = "curl"
)

// Paths inside the pod.
const (
	AgentSocketPath = "/run/spire/sockets/agent.sock"
	AgentCertDir    = "/run/spire/agent-certs"
	tokenMountPath  = "/var/run/secrets/kubernetes.io/serviceaccount"
)

// Hardening every container gets when its template lacks it: Pod Security
// "restricted" (no privilege escalation, no capabilities, read-only root)
// and resources, so namespaces with quotas admit the pod.
var containerDefaults = map[string]string{
	ContainerGenCert: `securityContext: {allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: {drop: [ALL]}}
resources: {requests: {cpu: 10m, memory: 32Mi}, limits: {cpu: 200m, memory: 128Mi}}`,
	ContainerSpireAgent: `securityContext: {allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: {drop: [ALL]}}
resources: {requests: {cpu: 50m, memory: 64Mi}, limits: {cpu: 500m, memory: 256Mi}}`,
	ContainerEnvoy: `securityContext: {allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: {drop: [ALL]}}
resources: {requests: {cpu: 50m, memory: 64Mi}, limits: {cpu: 500m, memory: 256Mi}}`,
	ContainerCurl: `securityContext: {allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: {drop: [ALL]}}
resources: {requests: {cpu: 10m, memory: 16Mi}, limits: {cpu: 100m, memory: 64Mi}}`,
}

const podDefaults = `automountServiceAccountToken: false
securityContext: {runAsNonRoot: true, seccompProfile: {type: RuntimeDefault}}`

// The gen-cert sidecar's pieces a guide-era template lacks.
const genCertDefaults = `restartPolicy: Always
startupProbe:
  exec:
    command: ["/bin/sh", "-c", "test -s /run/spire/agent-certs/agent.crt.pem && test -s /run/spire/agent-certs/agent.key.pem"]
  periodSeconds: 2
  failureThreshold: 150`

const genCertVolumes = `- name: gen-cert-tmp
  emptyDir: {}
- name: gen-cert-token
  projected:
    sources:
      - serviceAccountToken: {path: token, expirationSeconds: 3600}
      - configMap: {name: kube-root-ca.crt, items: [{key: ca.crt, path: ca.crt}]}
      - downwardAPI: {items: [{path: namespace, fieldRef: {fieldPath: metadata.namespace}}]}`

const agentTokenVolume = `- name: spire-agent-token
  projected:
    sources:
      - serviceAccountToken: {path: token, expirationSeconds: 3600}
      - configMap: {name: kube-root-ca.crt, items: [{key: ca.crt, path: ca.crt}]}
      - downwardAPI: {items: [{path: namespace, fieldRef: {fieldPath: metadata.namespace}}]}`

// podSpec makes the StatefulSet's pod the project's: images, users, the
// gen-cert sidecar with the pod's only API token, Pod Security restricted,
// resources and probes (kept where the template has its own).
func (rw *rewriter) podSpec(spec *yaml.Node) error {
	p := rw.p
	if spec == nil {
		return nil
	}
	mergeMissing(spec, mustNode(podDefaults))
	setBool(spec, "automountServiceAccountToken", false)
	sc := ensureMap(spec, "securityContext")
	setBool(sc, "runAsNonRoot", true)

	users := map[string][2]int{
		ContainerGenCert:    {p.Agent.UID, p.Agent.GID},
		ContainerSpireAgent: {p.Agent.UID, p.Agent.GID},
		ContainerEnvoy:      {p.Registration.EnvoyUID, p.Registration.EnvoyGID},
		ContainerCurl:       {project.CurlUID, project.CurlUID},
	}
	images := p.Images.List()
	var volumes []string
	for _, list := range []string{"initContainers", "containers"} {
		seq := lookup(spec, list)
		if seq == nil {
			continue
		}
		for _, c := range seq.Content {
			name := scalar(c, "name")
			if img, ok := images[name]; ok {
				setScalar(c, "image", img)
			}
			if d, ok := containerDefaults[name]; ok {
				mergeMissing(c, mustNode(d))
			}
			if u, ok := users[name]; ok {
				csc := ensureMap(c, "securityContext")
				setInt(csc, "runAsUser", u[0])
				setInt(csc, "runAsGroup", u[1])
			}
			switch name {
			case ContainerGenCert:
				mergeMissing(c, mustNode(genCertDefaults))
				setEnv(c, "HOME", "/tmp")
				addMount(c, "gen-cert-token", tokenMountPath, true)
				addMount(c, "gen-cert-tmp", "/tmp", false)
				volumes = append(volumes, genCertVolumes)
			case ContainerSpireAgent:
				if p.Agent.K8sAttestor {
					addEnvFieldRef(c, "MY_NODE_NAME", "spec.nodeName")
					addMount(c, "spire-agent-token", tokenMountPath, true)
					volumes = append(volumes, agentTokenVolume)
				}
			}
		}
	}
	vols := lookup(spec, "volumes")
	if vols == nil {
		vols = &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq"}
		spec.Content = append(spec.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: "volumes"}, vols)
	}
	for _, v := range volumes {
		for _, item := range mustNode(v).Content {
			if namedItem(vols, scalar(item, "name")) == nil {
				vols.Content = append(vols.Content, item)
			}
		}
	}
	return nil
}

// role limits gen-cert's Role to the StatefulSet's own Certificates and
// Secrets, by name.
func (rw *rewriter) role(root *yaml.Node) {
	var names []*yaml.Node
	for _, pod := range rw.p.PodNames() {
		names = append(names, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: rw.p.CertificateName(pod)})
	}
	rules := lookup(root, "rules")
	if rules == nil {
		return
	}
	for _, r := range rules.Content {
		res := lookup(r, "resources")
		if res == nil {
			continue
		}
		for _, x := range res.Content {
			if x.Value == "certificates" || x.Value == "secrets" {
				seq := &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq", Style: yaml.FlowStyle, Content: names}
				setNode(r, "resourceNames", seq)
				break
			}
		}
	}
}

// agentConf renders the k8s workload attestor block when the project asks
// for it (the template has none).
func (rw *rewriter) agentConf(conf string) string {
	const marker = `  WorkloadAttestor "unix" {`
	if !rw.p.Agent.K8sAttestor || strings.Contains(conf, `WorkloadAttestor "k8s"`) || !strings.Contains(conf, marker) {
		return conf
	}
	k8s := `  # The k8s workload attestor asks the kubelet (port 10250, nodes/proxy:
  # the spire-agent-k8s-attestor ClusterRole grants it) for this pod.
  WorkloadAttestor "k8s" {
    plugin_data {
      node_name_env = "MY_NODE_NAME"
      skip_kubelet_verification = true
    }
  }

`
	return strings.Replace(conf, marker, k8s+marker, 1)
}

// K8sAttestorRBACFile is rendered when agent.k8sAttestor is set.
const K8sAttestorRBACFile = "k8s-attestor-rbac.yaml"

// k8sAttestorRBAC grants the pods' service account what SPIRE's k8s workload
// attestor needs: the kubelet's pod list, authorized as nodes/proxy. It is
// cluster-scoped (nodes are), so applying it needs cluster-admin rights.
func k8sAttestorRBAC(p *project.Project) []byte {
	name := "spire-agent-k8s-attestor-" + p.Namespace
	return []byte(fmt.Sprintf(`# agent.k8sAttestor: SPIRE's k8s workload attestor asks the kubelet for the
# pods on its node; the kubelet authorizes that as get nodes/proxy. This is a
# cluster-wide grant to the %[2]s service account: applying it needs
# cluster-admin rights.
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: %[1]s
rules:
  - apiGroups: [""]
    resources: ["nodes/proxy", "nodes"]
    verbs: ["get"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: %[1]s
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: %[1]s
subjects:
  - kind: ServiceAccount
    name: %[2]s
    namespace: %[3]s
`, name, p.ServiceAccount, p.Namespace))
}

// --- YAML node helpers -----------------------------------------------------

func mustNode(text string) *yaml.Node {
	var n yaml.Node
	if err := yaml.Unmarshal([]byte(text), &n); err != nil {
		panic(fmt.Sprintf("scaffold: built-in YAML: %v", err))
	}
	return n.Content[0]
}

// mergeMissing adds to dst every key of src it lacks, recursively for maps.
func mergeMissing(dst, src *yaml.Node) {
	if dst == nil || src == nil || dst.Kind != yaml.MappingNode || src.Kind != yaml.MappingNode {
		return
	}
	for i := 0; i+1 < len(src.Content); i += 2 {
		k, v := src.Content[i], src.Content[i+1]
		if cur := lookup(dst, k.Value); cur != nil {
			mergeMissing(cur, v)
			continue
		}
		dst.Content = append(dst.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: k.Value}, v)
	}
}

func ensureMap(m *yaml.Node, key string) *yaml.Node {
	if v := lookup(m, key); v != nil && v.Kind == yaml.MappingNode {
		return v
	}
	v := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
	setNode(m, key, v)
	return v
}

func setNode(m *yaml.Node, key string, v *yaml.Node) {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			m.Content[i+1] = v
			return
		}
	}
	m.Content = append(m.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: key}, v)
}

func setInt(m *yaml.Node, key string, v int) {
	setNode(m, key, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!int", Value: strconv.Itoa(v)})
}

func setBool(m *yaml.Node, key string, v bool) {
	setNode(m, key, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!bool", Value: strconv.FormatBool(v)})
}

// namedItem is the item of a sequence of maps whose name is name.
func namedItem(seq *yaml.Node, name string) *yaml.Node {
	if seq == nil {
		return nil
	}
	for _, it := range seq.Content {
		if scalar(it, "name") == name {
			return it
		}
	}
	return nil
}

func ensureSeq(m *yaml.Node, key string) *yaml.Node {
	if v := lookup(m, key); v != nil && v.Kind == yaml.SequenceNode {
		return v
	}
	v := &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq"}
	setNode(m, key, v)
	return v
}

func addMount(c *yaml.Node, name, path string, readOnly bool) {
	mounts := ensureSeq(c, "volumeMounts")
	if namedItem(mounts, name) != nil {
		return
	}
	m := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
	setScalar(m, "name", name)
	setScalar(m, "mountPath", path)
	if readOnly {
		setBool(m, "readOnly", true)
	}
	mounts.Content = append(mounts.Content, m)
}

func setEnv(c *yaml.Node, name, value string) {
	env := ensureSeq(c, "env")
	if e := namedItem(env, name); e != nil {
		setScalar(e, "value", value)
		return
	}
	e := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
	setScalar(e, "name", name)
	setNode(e, "value", &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: value})
	env.Content = append(env.Content, e)
}

func addEnvFieldRef(c *yaml.Node, name, field string) {
	env := ensureSeq(c, "env")
	if namedItem(env, name) != nil {
		return
	}
	env.Content = append(env.Content, mustNode(fmt.Sprintf("{name: %s, valueFrom: {fieldRef: {fieldPath: %s}}}", name, field)))
}
