package citytest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"path"
	"strings"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/spirepod/spirepod/internal/city"
	"github.com/spirepod/spirepod/internal/pki"
	"github.com/spirepod/spirepod/internal/registration"
)

// Hostile is one change a team could submit against another, as the
// platform would receive it in a pull request. Every one must fail `city
// check` (full and with --base) and, where it lies in the team's own PR
// (TeamSide), the checks `pr trust-ca` / `pr spiffe-id` run.
type Hostile struct {
	Name string
	// Class is the class of issue 20 it belongs to: 1 parsing, 2 kustomize,
	// 3 allow-list, 4 parents, 5 cluster-wide names, 6 trust list, 7 the
	// platform's controller.
	Class int
	// Apply makes the change on a city of the layout Corpus describes.
	Apply func(h *HostileCity) Want
}

// Want is what a hostile change must be refused with.
type Want struct {
	// Codes: at least one error finding with one of these codes.
	Codes []string
	// Files must each be named by some error finding (as its file or in its
	// message): the attacker's file and, where two folders are involved,
	// the victim's.
	Files []string
	// TeamSide: the change is what the attacker's own pull request carries
	// (its folder, or its trust-list block), so the team-side check must
	// refuse it too.
	TeamSide bool
}

// HostileCity is a clean city to break: Victim (entry-json, the scaffold's
// names), Kustomized (cluster-static-entry, with a kustomization) and Plain
// (entry-json, no kustomization). Links are symbolic links to add (path →
// target); Deleted are paths the change removes.
type HostileCity struct {
	Tree       city.MapTree
	Config     city.Config
	Victim     *Team
	Kustomized *Team
	Plain      *Team
	Links      map[string]string
	Deleted    []string
	Now        time.Time
}

// Corpus lays out the generated city the hostile changes expect.
var Corpus = Options{Teams: 3, Formats: []string{FormatEntryJSON, FormatClusterStaticEntry, FormatEntryJSON}}

// NewHostileCity wraps a city of Corpus's layout.
func NewHostileCity(c *City) *HostileCity {
	return &HostileCity{Tree: c.Tree, Config: c.Config, Victim: c.Teams[0], Kustomized: c.Teams[1], Plain: c.Teams[2],
		Links: map[string]string{}, Now: time.Now()}
}

func (h *HostileCity) put(t *Team, name, data string) string {
	p := path.Join(t.Folder, name)
	h.Tree[p] = []byte(data)
	return p
}

// listResource adds a file to the kustomized team's resources.
func (h *HostileCity) listResource(name string) string {
	k := path.Join(h.Kustomized.Folder, "kustomization.yaml")
	var m map[string]any
	if err := yaml.Unmarshal(h.Tree[k], &m); err != nil {
		panic(err)
	}
	res, _ := m["resources"].([]any)
	m["resources"] = append(res, name)
	b, err := yaml.Marshal(m)
	if err != nil {
		panic(err)
	}
	h.Tree[k] = b
	return k
}

// appendKustomization appends top-level YAML fields to a team's
// kustomization.
func (h *HostileCity) appendKustomization(t *Team, text string) string {
	k := path.Join(t.Folder, "kustomization.yaml")
	b := append([]byte(nil), h.Tree[k]...)
	if len(b) > 0 && b[len(b)-1] != '\n' {
		b = append(b, '\n')
	}
	h.Tree[k] = append(b, text...)
	return k
}

func (h *HostileCity) id(p string) string { return "spiffe://" + h.Config.TrustDomain + "/" + p }

func (h *HostileCity) victimAlias() string {
	return h.Victim.Proj.NodeAliasID(h.Victim.Proj.PodName(0))
}

func (h *HostileCity) ownAlias(t *Team) string { return t.Proj.NodeAliasID(t.Proj.PodName(0)) }

func (h *HostileCity) server() string { return registration.ServerID(h.Config.TrustDomain) }

// aliasJSON is an entry-json node alias with the given ID, pinned to t's CA.
func (h *HostileCity) aliasJSON(id string, t *Team, extra map[string]any) map[string]any {
	e := map[string]any{"spiffe_id": id, "parent_id": h.server(), "entry_id": registration.EntryID(t.Namespace, "x-alias"),
		"selectors": []map[string]string{{"type": "x509pop", "value": "subject:cn:x-0." + t.Namespace}, {"type": "x509pop", "value": "ca:fingerprint:" + t.SHA1}}}
	for k, v := range extra {
		e[k] = v
	}
	return e
}

// workloadJSON is an entry-json workload of t's scope under parent.
func (h *HostileCity) workloadJSON(t *Team, parent string, extra map[string]any) map[string]any {
	e := map[string]any{"spiffe_id": h.id("ns/" + t.Namespace + "/sa/extra"), "parent_id": parent, "entry_id": registration.EntryID(t.Namespace, "x-extra"),
		"selectors": []map[string]string{{"type": "unix", "value": "uid:1234"}}}
	for k, v := range extra {
		e[k] = v
	}
	return e
}

func entriesJSON(es ...map[string]any) string {
	b, err := json.MarshalIndent(map[string]any{"entries": es}, "", "  ")
	if err != nil {
		panic(err)
	}
	return string(b) + "\n"
}

// cse is a ClusterStaticEntry object as YAML.
func (h *HostileCity) cse(name, id, parent string, selectors []string, spec string) string {
	var sel strings.Builder
	for _, s := range selectors {
		fmt.Fprintf(&sel, "    - %q\n", s)
	}
	return fmt.Sprintf("apiVersion: spire.spiffe.io/v1alpha1\nkind: ClusterStaticEntry\nmetadata:\n  name: %s\nspec:\n  className: %s\n  spiffeID: %s\n  parentID: %s\n  selectors:\n%s%s",
		name, ClassName, id, parent, sel.String(), spec)
}

func (h *HostileCity) stealAliasCSE(name string, t *Team) string {
	return h.cse(name, h.victimAlias(), h.server(), []string{pki.CNSelectorPrefix + "x-0." + t.Namespace, pki.SelectorPrefix + t.SHA1}, "")
}

func (h *HostileCity) victimFile() string { return h.Victim.Files[0] }

// bundle appends text to the bundle trust list.
func (h *HostileCity) bundle(text string) {
	h.Tree[BundlePath] = append(append([]byte(nil), h.Tree[BundlePath]...), text...)
}

func (h *HostileCity) addCA(owner *Team, edit func(*x509.Certificate)) string {
	ca := NewCA(owner.Name+" extra CA", h.Now, edit)
	fp := pki.SHA1Fingerprint(ca)
	h.bundle(city.OwnerComment(owner.Name, owner.Namespace, fp) + "\n" + string(pki.EncodeCertificate(ca)))
	return fp
}

// freshKeyPEM is a new EC private key in PEM (SEC1), made at run time: no
// key is ever committed.
func freshKeyPEM() string {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		panic(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}))
}

// Hostiles lists the corpus: at least one change per class of issue 20 and
// per example it names.
func Hostiles() []Hostile {
	return []Hostile{
		// 1. Parsing is the consumer's parsing.
		{Name: "entry-json with escaped keys registers another team's alias", Class: 1, Apply: func(h *HostileCity) Want {
			body := strings.Replace(entriesJSON(h.aliasJSON(h.victimAlias(), h.Plain, nil)), `"entries"`, `"\u0065ntries"`, 1)
			body = strings.Replace(body, `"spiffe_id"`, `"spiffe\u005fid"`, 1)
			p := h.put(h.Plain, "extra.json", body)
			return Want{Codes: []string{city.CodeAliasShared}, Files: []string{p, h.victimFile()}, TeamSide: true}
		}},
		{Name: "entry-json with upper-case keys and a decoy duplicate", Class: 1, Apply: func(h *HostileCity) Want {
			p := h.put(h.Plain, "extra.json", fmt.Sprintf(`{"ENTRIES": [{"SPIFFE_ID": %q, "spiffe_id": %q, "Parent_ID": %q,
  "selectors": [{"type": "x509pop", "value": "subject:cn:x-0.%s"}, {"type": "x509pop", "value": "ca:fingerprint:%s"}]}]}`,
				h.id("ns/"+h.Plain.Namespace+"/decoy"), h.victimAlias(), h.server(), h.Plain.Namespace, h.Plain.SHA1))
			return Want{Codes: []string{city.CodeAliasShared}, Files: []string{p, h.victimFile()}, TeamSide: true}
		}},
		{Name: "a ClusterStaticEntry written as JSON", Class: 1, Apply: func(h *HostileCity) Want {
			obj := map[string]any{"apiVersion": registration.ClusterStaticEntryAPIVersion, "kind": registration.ClusterStaticEntryKind,
				"metadata": map[string]any{"name": h.Plain.Namespace + "-steal"},
				"spec": map[string]any{"className": ClassName, "spiffeID": h.victimAlias(), "parentID": h.server(),
					"selectors": []string{pki.CNSelectorPrefix + "x-0." + h.Plain.Namespace, pki.SelectorPrefix + h.Plain.SHA1}}}
			b, _ := json.Marshal(obj)
			p := h.put(h.Plain, "steal.json", string(b))
			return Want{Codes: []string{city.CodeAliasShared}, Files: []string{p, h.victimFile()}, TeamSide: true}
		}},
		{Name: "a kind: List wrapper", Class: 1, Apply: func(h *HostileCity) Want {
			item := strings.ReplaceAll(h.stealAliasCSE(h.Plain.Namespace+"-steal", h.Plain), "\n", "\n    ")
			p := h.put(h.Plain, "list.yaml", "apiVersion: v1\nkind: List\nitems:\n  - "+strings.TrimRight(item, " ")+"\n")
			return Want{Codes: []string{city.CodeAliasShared}, Files: []string{p, h.victimFile()}, TeamSide: true}
		}},
		{Name: "several documents in one file", Class: 1, Apply: func(h *HostileCity) Want {
			p := h.put(h.Plain, "docs.yaml", fmt.Sprintf("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: harmless\n  namespace: %s\n--- # and then\n%s",
				h.Plain.Namespace, h.stealAliasCSE(h.Plain.Namespace+"-steal", h.Plain)))
			return Want{Codes: []string{city.CodeAliasShared}, Files: []string{p, h.victimFile()}, TeamSide: true}
		}},
		{Name: "a file that does not decode", Class: 1, Apply: func(h *HostileCity) Want {
			p := h.put(h.Plain, "broken.yaml", "kind: ClusterStaticEntry\n\t: : :\n")
			return Want{Codes: []string{city.CodeUnparsable}, Files: []string{p}, TeamSide: true}
		}},

		// 2. The cluster sees the kustomize build.
		{Name: "a patch rewrites an entry into another team's alias", Class: 2, Apply: func(h *HostileCity) Want {
			t := h.Kustomized
			name := t.Namespace + "-" + t.Proj.CertificateName(t.Proj.PodName(0))
			h.put(t, "patch.yaml", fmt.Sprintf("- op: replace\n  path: /spec/spiffeID\n  value: %s\n", h.victimAlias()))
			h.appendKustomization(t, fmt.Sprintf("patches:\n  - path: patch.yaml\n    target:\n      kind: ClusterStaticEntry\n      name: %s\n", name))
			return Want{Codes: []string{city.CodeAliasShared}, Files: []string{path.Join(t.Folder, registration.File(registration.FormatClusterStaticEntry)), h.victimFile()}, TeamSide: true}
		}},
		{Name: "a name prefix takes another team's object names", Class: 2, Apply: func(h *HostileCity) Want {
			h.appendKustomization(h.Kustomized, "namePrefix: "+h.Victim.Namespace+"-\n")
			return Want{Codes: []string{city.CodeCSEName}, Files: []string{path.Join(h.Kustomized.Folder, registration.File(registration.FormatClusterStaticEntry))}, TeamSide: true}
		}},
		{Name: "resources pointing into another team's folder", Class: 2, Apply: func(h *HostileCity) Want {
			rel := strings.Repeat("../", strings.Count(h.Kustomized.Folder, "/")+1) + h.Victim.Folder
			k := h.listResource(rel)
			return Want{Codes: []string{city.CodeOutsideRef}, Files: []string{k}, TeamSide: true}
		}},
		{Name: "a remote resource", Class: 2, Apply: func(h *HostileCity) Want {
			k := h.listResource("https://github.com/attacker/manifests//spire?ref=main")
			return Want{Codes: []string{city.CodeOutsideRef}, Files: []string{k}, TeamSide: true}
		}},
		{Name: "a generator makes a Secret", Class: 2, Apply: func(h *HostileCity) Want {
			k := h.appendKustomization(h.Kustomized, "secretGenerator:\n  - name: sneaky\n    literals:\n      - token=abc\n")
			return Want{Codes: []string{city.CodeSecretInCity}, Files: []string{k}, TeamSide: true}
		}},
		{Name: "a folder that does not build", Class: 2, Apply: func(h *HostileCity) Want {
			k := h.listResource("missing.yaml")
			return Want{Codes: []string{city.CodeNoBuild}, Files: []string{k}, TeamSide: true}
		}},

		// 3. Allow-list.
		{Name: "a ClusterSPIFFEID", Class: 3, Apply: func(h *HostileCity) Want {
			p := h.put(h.Kustomized, "cspiffeid.yaml", "apiVersion: spire.spiffe.io/v1alpha1\nkind: ClusterSPIFFEID\nmetadata:\n  name: everyone\nspec:\n  spiffeIDTemplate: \"spiffe://{{ .TrustDomain }}/ns/{{ .PodMeta.Namespace }}/sa/{{ .PodSpec.ServiceAccountName }}\"\n  podSelector: {}\n")
			h.listResource("cspiffeid.yaml")
			return Want{Codes: []string{city.CodeKind}, Files: []string{p}, TeamSide: true}
		}},
		{Name: "a ClusterFederatedTrustDomain", Class: 3, Apply: func(h *HostileCity) Want {
			p := h.put(h.Plain, "federation.yaml", "apiVersion: spire.spiffe.io/v1alpha1\nkind: ClusterFederatedTrustDomain\nmetadata:\n  name: evil\nspec:\n  trustDomain: evil.example\n  bundleEndpointURL: https://evil.example/bundle\n  bundleEndpointProfile:\n    type: https_web\n")
			return Want{Codes: []string{city.CodeKind}, Files: []string{p}, TeamSide: true}
		}},
		{Name: "a Role that reads every Secret", Class: 3, Apply: func(h *HostileCity) Want {
			p := h.put(h.Kustomized, "role.yaml", fmt.Sprintf("apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata:\n  name: wide\n  namespace: %s\nrules:\n  - apiGroups: [\"\"]\n    resources: [\"secrets\"]\n    verbs: [\"*\"]\n", h.Kustomized.Namespace))
			h.listResource("role.yaml")
			return Want{Codes: []string{city.CodeShape}, Files: []string{p}, TeamSide: true}
		}},
		{Name: "a RoleBinding to cluster-admin", Class: 3, Apply: func(h *HostileCity) Want {
			p := h.put(h.Plain, "binding.yaml", fmt.Sprintf("apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata:\n  name: admin\n  namespace: %s\nroleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: ClusterRole\n  name: cluster-admin\nsubjects:\n  - kind: Group\n    name: system:authenticated\n", h.Plain.Namespace))
			return Want{Codes: []string{city.CodeShape}, Files: []string{p}, TeamSide: true}
		}},
		{Name: "a ConfigMap in another team's namespace", Class: 3, Apply: func(h *HostileCity) Want {
			p := h.put(h.Plain, "cm.yaml", fmt.Sprintf("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: spire-agent\n  namespace: %s\ndata:\n  agent.conf: hijacked\n", h.Victim.Namespace))
			return Want{Codes: []string{city.CodeNamespace}, Files: []string{p}, TeamSide: true}
		}},
		{Name: "a privileged StatefulSet", Class: 3, Apply: func(h *HostileCity) Want {
			p := h.put(h.Plain, "sts.yaml", fmt.Sprintf(`apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: escape
  namespace: %s
spec:
  serviceName: escape
  selector: {matchLabels: {app: escape}}
  template:
    metadata: {labels: {app: escape}}
    spec:
      hostPID: true
      containers:
        - name: shell
          image: busybox
          securityContext: {privileged: true}
          volumeMounts: [{name: host, mountPath: /host}]
      volumes: [{name: host, hostPath: {path: /}}]
`, h.Plain.Namespace))
			return Want{Codes: []string{city.CodePodSecurity}, Files: []string{p}, TeamSide: true}
		}},
		{Name: "a Certificate from another team's ClusterIssuer", Class: 3, Apply: func(h *HostileCity) Want {
			p := h.put(h.Plain, "cert.yaml", fmt.Sprintf("apiVersion: cert-manager.io/v1\nkind: Certificate\nmetadata:\n  name: mint\n  namespace: %s\nspec:\n  secretName: mint\n  commonName: %s\n  issuerRef:\n    group: cert-manager.io\n    kind: ClusterIssuer\n    name: spire-agent-x509pop-%s\n",
				h.Plain.Namespace, h.Victim.Proj.AgentCN(h.Victim.Proj.PodName(0)), h.Victim.Namespace))
			return Want{Codes: []string{city.CodeShape}, Files: []string{p}, TeamSide: true}
		}},
		{Name: "an admin entry", Class: 3, Apply: func(h *HostileCity) Want {
			p := h.put(h.Plain, "admin.json", entriesJSON(h.workloadJSON(h.Plain, h.ownAlias(h.Plain), map[string]any{"admin": true})))
			return Want{Codes: []string{city.CodePower}, Files: []string{p}, TeamSide: true}
		}},
		{Name: "a downstream entry", Class: 3, Apply: func(h *HostileCity) Want {
			p := h.put(h.Plain, "downstream.json", entriesJSON(h.workloadJSON(h.Plain, h.ownAlias(h.Plain), map[string]any{"downstream": true})))
			return Want{Codes: []string{city.CodePower}, Files: []string{p}, TeamSide: true}
		}},
		{Name: "a ClusterStaticEntry that stores its SVID", Class: 3, Apply: func(h *HostileCity) Want {
			t := h.Kustomized
			p := h.put(t, "store.yaml", h.cse(t.Namespace+"-store", h.id("ns/"+t.Namespace+"/sa/store"), h.ownAlias(t), []string{"unix:uid:1"}, "  storeSVID: true\n"))
			h.listResource("store.yaml")
			return Want{Codes: []string{city.CodePower}, Files: []string{p}, TeamSide: true}
		}},
		{Name: "a DNS name of another team's service", Class: 3, Apply: func(h *HostileCity) Want {
			p := h.put(h.Plain, "dns.json", entriesJSON(h.workloadJSON(h.Plain, h.ownAlias(h.Plain), map[string]any{"dns_names": []string{"httpbin." + h.Victim.Namespace + ".svc.cluster.local"}})))
			return Want{Codes: []string{city.CodeDNSName}, Files: []string{p}, TeamSide: true}
		}},
		{Name: "federation the platform does not allow", Class: 3, Apply: func(h *HostileCity) Want {
			p := h.put(h.Plain, "fed.json", entriesJSON(h.workloadJSON(h.Plain, h.ownAlias(h.Plain), map[string]any{"federates_with": []string{"spiffe://evil.example"}})))
			return Want{Codes: []string{city.CodeFederation}, Files: []string{p}, TeamSide: true}
		}},
		{Name: "a file no consumer reads", Class: 3, Apply: func(h *HostileCity) Want {
			p := h.put(h.Plain, "notes.txt", "load me with entry create -data, please\n")
			return Want{Codes: []string{city.CodeUnjudged}, Files: []string{p}, TeamSide: true}
		}},
		{Name: "a private key", Class: 3, Apply: func(h *HostileCity) Want {
			p := h.put(h.Plain, "agent-x509pop.key.pem", freshKeyPEM())
			return Want{Codes: []string{city.CodeSecretInCity}, Files: []string{p}, TeamSide: true}
		}},
		{Name: "a symbolic link into another team's folder", Class: 3, Apply: func(h *HostileCity) Want {
			p := path.Join(h.Plain.Folder, "victim")
			h.Links[p] = strings.Repeat("../", strings.Count(h.Plain.Folder, "/")+1) + h.Victim.Folder
			return Want{Codes: []string{city.CodeLink}, Files: []string{p}, TeamSide: true}
		}},
		{Name: "a symbolic link in the trust list", Class: 3, Apply: func(h *HostileCity) Want {
			p := path.Join(path.Dir(BundlePath), "more.pem")
			h.Links[p] = "/etc/ssl/certs/ca-certificates.crt"
			return Want{Codes: []string{city.CodeLink}, Files: []string{p}}
		}},

		// 4. Parents.
		{Name: "a workload parented to another team's workload", Class: 4, Apply: func(h *HostileCity) Want {
			p := h.put(h.Plain, "chain.json", entriesJSON(h.workloadJSON(h.Plain, h.Victim.Proj.WorkloadSpiffeID(), nil)))
			return Want{Codes: []string{city.CodeParentNowhere}, Files: []string{p, h.victimFile()}, TeamSide: true}
		}},
		{Name: "a workload parented to a raw agent ID", Class: 4, Apply: func(h *HostileCity) Want {
			p := h.put(h.Plain, "agent.json", entriesJSON(h.workloadJSON(h.Plain, h.id("spire/agent/x509pop/"+h.Victim.SHA1), nil)))
			return Want{Codes: []string{city.CodeParentNowhere}, Files: []string{p}, TeamSide: true}
		}},
		{Name: "a workload under another team's alias", Class: 4, Apply: func(h *HostileCity) Want {
			p := h.put(h.Plain, "under.json", entriesJSON(h.workloadJSON(h.Plain, h.victimAlias(), nil)))
			return Want{Codes: []string{city.CodeParentOtherFolder}, Files: []string{p, h.victimFile()}, TeamSide: true}
		}},

		// 5. Cluster-wide names.
		{Name: "an entry ID another team uses", Class: 5, Apply: func(h *HostileCity) Want {
			p := h.put(h.Plain, "id.json", entriesJSON(h.workloadJSON(h.Plain, h.ownAlias(h.Plain), map[string]any{"entry_id": registration.EntryID(h.Victim.Namespace, h.Victim.Proj.PodName(0)+"-envoy")})))
			return Want{Codes: []string{city.CodeEntryIDShared}, Files: []string{p, h.victimFile()}, TeamSide: true}
		}},
		{Name: "a ClusterStaticEntry name without the team's prefix", Class: 5, Apply: func(h *HostileCity) Want {
			t := h.Kustomized
			p := h.put(t, "bare.yaml", h.cse("spire-agent-x509pop-global", h.id("ns/"+t.Namespace+"/sa/bare"), h.ownAlias(t), []string{"unix:uid:1"}, ""))
			h.listResource("bare.yaml")
			return Want{Codes: []string{city.CodeCSEName}, Files: []string{p}, TeamSide: true}
		}},
		{Name: "a ClusterStaticEntry name another folder uses", Class: 5, Apply: func(h *HostileCity) Want {
			t := h.Kustomized
			name := t.Namespace + "-" + t.Proj.CertificateName(t.Proj.PodName(0))
			p := h.put(h.Plain, "same.yaml", h.cse(name, h.id("ns/"+h.Plain.Namespace+"/sa/same"), h.ownAlias(h.Plain), []string{"unix:uid:1"}, ""))
			return Want{Codes: []string{city.CodeCSEName}, Files: []string{p, path.Join(t.Folder, registration.File(registration.FormatClusterStaticEntry))}, TeamSide: true}
		}},

		// 6. The trust list is shared state.
		{Name: "a CA with another team's subject", Class: 6, Apply: func(h *HostileCity) Want {
			h.addCA(h.Plain, func(c *x509.Certificate) { c.Subject = h.Victim.CA.Subject })
			return Want{Codes: []string{city.CodeLookAlikeCA}, Files: []string{BundlePath}, TeamSide: true}
		}},
		{Name: "a CA with another team's subject key ID", Class: 6, Apply: func(h *HostileCity) Want {
			h.addCA(h.Plain, func(c *x509.Certificate) { c.SubjectKeyId = h.Victim.CA.SubjectKeyId })
			return Want{Codes: []string{city.CodeLookAlikeCA}, Files: []string{BundlePath}, TeamSide: true}
		}},
		{Name: "more CAs than the limit", Class: 6, Apply: func(h *HostileCity) Want {
			for i := 0; i < 3; i++ {
				h.addCA(h.Plain, func(c *x509.Certificate) {
					c.Subject = pkix.Name{CommonName: fmt.Sprintf("%s extra %d", h.Plain.Name, i)}
				})
			}
			return Want{Codes: []string{city.CodeTooManyCAs}, Files: []string{BundlePath}, TeamSide: true}
		}},
		{Name: "removing another team's CA", Class: 6, Apply: func(h *HostileCity) Want {
			h.Tree[BundlePath] = removeBlock(h.Tree[BundlePath], h.Victim)
			h.addCA(h.Plain, nil)
			// A full check sees the victim's pins left without their CA.
			return Want{Codes: []string{city.CodeOtherTeamsCA, city.CodePinNotTrusted}, Files: []string{BundlePath}, TeamSide: true}
		}},
		{Name: "re-owning another team's CA", Class: 6, Apply: func(h *HostileCity) Want {
			h.Tree[BundlePath] = []byte(strings.Replace(string(h.Tree[BundlePath]),
				city.OwnerComment(h.Victim.Name, h.Victim.Namespace, h.Victim.SHA1), city.OwnerComment(h.Plain.Name, h.Plain.Namespace, h.Victim.SHA1), 1))
			// A full check sees the victim's pins on a CA another team owns now.
			return Want{Codes: []string{city.CodeOtherTeamsCA, city.CodePinOtherTeam}, Files: []string{BundlePath}, TeamSide: true}
		}},

		// 7. The platform's controller.
		{Name: "a controller without entryIDPrefix", Class: 7, Apply: func(h *HostileCity) Want {
			p := "ns/spire/controller/controller-manager-config.yaml"
			h.Tree[p] = []byte("apiVersion: spire.spiffe.io/v1alpha1\nkind: ControllerManagerConfig\nclusterName: city\ntrustDomain: " + h.Config.TrustDomain + "\nclassName: " + ClassName + "\n")
			return Want{Codes: []string{city.CodeControllerPrefix}, Files: []string{p}}
		}},
		{Name: "a ClusterStaticEntry of a class no controller watches", Class: 7, Apply: func(h *HostileCity) Want {
			h.Tree["ns/spire/controller/controller-manager-config.yaml"] = []byte("apiVersion: spire.spiffe.io/v1alpha1\nkind: ControllerManagerConfig\nclusterName: city\nentryIDPrefix: scm.\nclassName: " + ClassName + "\n")
			t := h.Kustomized
			p := h.put(t, "other.yaml", strings.Replace(h.cse(t.Namespace+"-other", h.id("ns/"+t.Namespace+"/sa/other"), h.ownAlias(t), []string{"unix:uid:1"}, ""), "className: "+ClassName, "className: elsewhere", 1))
			h.listResource("other.yaml")
			return Want{Codes: []string{registration.CodeNoClassName}, Files: []string{p}}
		}},
	}
}

// removeBlock drops team t's owner comment and CA block from a bundle.
func removeBlock(bundle []byte, t *Team) []byte {
	s := string(bundle)
	comment := city.OwnerComment(t.Name, t.Namespace, t.SHA1) + "\n"
	block := string(pki.EncodeCertificate(t.CA))
	s = strings.Replace(s, comment, "", 1)
	return []byte(strings.Replace(s, block, "", 1))
}
