package registration

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/spirepod/spirepod/internal/pki"
	"github.com/spirepod/spirepod/internal/project"
)

// Entries returns, for every pod, the node alias pinned to the team CA and
// the Envoy workload entry parented to it.
func Entries(p *project.Project, ca *x509.Certificate) []Entry {
	return EntriesFor(p, ca)
}

// EntriesFor is Entries for a team that trusts more than one CA at once (a
// CA rotation): for every pod, one node alias per CA — the same alias ID,
// each pinned to its own CA's fingerprint, so an agent with a leaf of
// either CA matches it — then the one Envoy workload entry parented to that
// ID. The first CA's alias keeps the single-CA name and entry_id, so
// loading the file again leaves that entry as it is; every other CA's alias
// is named apart (AliasName), as entry IDs and object names must differ.
func EntriesFor(p *project.Project, primary *x509.Certificate, more ...*x509.Certificate) []Entry {
	td := p.TrustDomain
	server := ServerID(td)
	cas := append([]*x509.Certificate{primary}, more...)
	pods := p.PodNames()
	out := make([]Entry, 0, (1+len(cas))*len(pods))
	for _, pod := range pods {
		cn := p.AgentCN(pod)
		alias := p.NodeAliasID(pod)
		for i, ca := range cas {
			fp := pki.SHA1Fingerprint(ca)
			name := p.CertificateName(pod)
			if i > 0 {
				name = AliasName(p, pod, fp)
			}
			out = append(out, Entry{Name: name, EntryID: EntryID(p.Namespace, name), SpiffeID: alias, ParentID: server, Node: true,
				Selectors: []string{pki.CNSelectorPrefix + cn, pki.SelectorPrefix + fp}})
		}
		out = append(out, Entry{Name: pod + "-envoy", EntryID: EntryID(p.Namespace, pod+"-envoy"), SpiffeID: p.WorkloadSpiffeID(), ParentID: alias,
			Selectors: []string{"unix:uid:" + strconv.Itoa(p.Registration.EnvoyUID), "unix:gid:" + strconv.Itoa(p.Registration.EnvoyGID)}})
	}
	return out
}

// AliasName names pod's node alias pinned to the CA of SHA-1 fingerprint fp
// when it is not the team's first CA: <certificate name>-ca-<first 12 hex
// digits>, a DNS-1123 name (object names) and a valid entry_id suffix.
func AliasName(p *project.Project, pod, fp string) string {
	if len(fp) > 12 {
		fp = fp[:12]
	}
	return p.CertificateName(pod) + "-ca-" + fp
}

// EntryID is the entry_id spirepod gives an entry in entry-json:
// spirepod.<namespace>.<name>, the same on every render, so loading the
// file again finds the same entries (`entry create -data` refuses them as
// AlreadyExists and changes nothing; `entry update -data` updates them in
// place) and two teams' IDs never meet (namespaces are unique in the city).
// SPIRE accepts [A-Za-z0-9._-], at most 255 bytes; DNS names fit.
func EntryID(namespace, name string) string { return EntryIDPrefix + namespace + "." + name }

// EntryIDPrefix starts every entry_id spirepod writes.
const EntryIDPrefix = "spirepod."

type spiffeIDCR struct {
	APIVersion string       `yaml:"apiVersion"`
	Kind       string       `yaml:"kind"`
	Metadata   crMeta       `yaml:"metadata"`
	Spec       spiffeIDSpec `yaml:"spec"`
}

type crMeta struct {
	Name      string            `yaml:"name"`
	Namespace string            `yaml:"namespace,omitempty"`
	Labels    map[string]string `yaml:"labels,omitempty"`
}

type spiffeIDSpec struct {
	SpiffeID string           `yaml:"spiffeId"`
	ParentID string           `yaml:"parentId"`
	Selector spiffeIDSelector `yaml:"selector"`
}

type spiffeIDSelector struct {
	Namespace string   `yaml:"namespace"`
	Arbitrary []string `yaml:"arbitrary"`
}

type clusterStaticEntry struct {
	APIVersion string  `yaml:"apiVersion"`
	Kind       string  `yaml:"kind"`
	Metadata   crMeta  `yaml:"metadata"`
	Spec       cseSpec `yaml:"spec"`
}

type cseSpec struct {
	SpiffeID  string   `yaml:"spiffeID"`
	ParentID  string   `yaml:"parentID"`
	Selectors []string `yaml:"selectors"`
	ClassName string   `yaml:"className,omitempty"`
}

type entryJSON struct {
	EntryID   string         `json:"entry_id,omitempty"`
	Selectors []selectorJSON `json:"selectors"`
	SpiffeID  string         `json:"spiffe_id"`
	ParentID  string         `json:"parent_id"`
}

type selectorJSON struct {
	Type  string `json:"type"`
	Value string `json:"value"`
}

// Render writes the entries in a registration format.
func Render(p *project.Project, es []Entry, format string) ([]byte, error) {
	labels := map[string]string{"app.kubernetes.io/managed-by": "spirepod", "spirepod.dev/team": p.Team}
	switch format {
	case project.FormatEntryJSON:
		var doc struct {
			Entries []entryJSON `json:"entries"`
		}
		for _, e := range es {
			ej := entryJSON{EntryID: e.EntryID, SpiffeID: e.SpiffeID, ParentID: e.ParentID}
			for _, s := range e.Selectors {
				t, v, _ := strings.Cut(s, ":")
				ej.Selectors = append(ej.Selectors, selectorJSON{Type: t, Value: v})
			}
			doc.Entries = append(doc.Entries, ej)
		}
		b, err := json.MarshalIndent(doc, "", "  ")
		return append(b, '\n'), err
	case project.FormatSpiffeID, project.FormatClusterStaticEntry:
		var buf bytes.Buffer
		if rotating(es) {
			buf.WriteString("# Generated by `spirepod pki rotate`: while the team CA is replaced, one node alias per pod and CA (the same ID, each pinned to its CA) and one Envoy entry parented to that ID.\n")
		} else {
			buf.WriteString("# Generated by `spirepod pr spiffe-id`: one node alias per pod (pinned to the team CA) and one Envoy entry parented to it.\n")
		}
		enc := yaml.NewEncoder(&buf)
		enc.SetIndent(2)
		for _, e := range es {
			var doc any
			if format == project.FormatSpiffeID {
				cr := spiffeIDCR{APIVersion: SpiffeIDAPIVersion, Kind: SpiffeIDKind,
					Metadata: crMeta{Name: e.Name, Namespace: p.Namespace, Labels: labels},
					Spec: spiffeIDSpec{SpiffeID: e.SpiffeID, ParentID: e.ParentID,
						Selector: spiffeIDSelector{Namespace: p.Namespace, Arbitrary: e.Selectors}}}
				if cr.Spec.Selector.Namespace != cr.Metadata.Namespace {
					return nil, fmt.Errorf("SpiffeID %s: spec.selector.namespace %q must equal metadata.namespace %q", e.Name, cr.Spec.Selector.Namespace, cr.Metadata.Namespace)
				}
				doc = cr
			} else {
				doc = clusterStaticEntry{APIVersion: ClusterStaticEntryAPIVersion, Kind: ClusterStaticEntryKind,
					Metadata: crMeta{Name: p.Namespace + "-" + e.Name, Labels: labels},
					Spec:     cseSpec{SpiffeID: e.SpiffeID, ParentID: e.ParentID, Selectors: e.Selectors, ClassName: p.Registration.ClassName}}
			}
			if err := enc.Encode(doc); err != nil {
				return nil, err
			}
		}
		if err := enc.Close(); err != nil {
			return nil, err
		}
		return buf.Bytes(), nil
	}
	return nil, fmt.Errorf("registration format %q must be %s, %s or %s", format,
		project.FormatSpiffeID, project.FormatClusterStaticEntry, project.FormatEntryJSON)
}

// rotating reports whether some alias ID is pinned to more than one CA.
func rotating(es []Entry) bool {
	seen := map[string]bool{}
	for _, e := range es {
		if !e.Node {
			continue
		}
		if seen[e.SpiffeID] {
			return true
		}
		seen[e.SpiffeID] = true
	}
	return false
}
