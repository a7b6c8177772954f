package pr

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"regexp"
	"strconv"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"go.yaml.in/yaml/v3"

	"github.com/spirepod/spirepod/internal/pki"
	"github.com/spirepod/spirepod/internal/project"
)

// Entry is one SPIRE registration entry.
type Entry struct {
	// Name is the Kubernetes object name for the CR formats.
	Name      string   `json:"name"`
	SpiffeID  string   `json:"spiffeID"`
	ParentID  string   `json:"parentID"`
	Selectors []string `json:"selectors"` // "type:value"
	Node      bool     `json:"node"`      // a node alias (parent is the server)
}

// Entries returns, for every pod, the node alias pinned to the team CA and
// the Envoy workload entry parented to it.
func Entries(p *project.Project, ca *x509.Certificate) []Entry {
	td := p.TrustDomain
	server := "spiffe://" + td + "/spire/server"
	fp := pki.SHA1Fingerprint(ca)
	pods := p.PodNames()
	out := make([]Entry, 0, 2*len(pods))
	for _, pod := range pods {
		cn := p.AgentCN(pod)
		alias := p.NodeAliasID(pod)
		out = append(out,
			Entry{Name: p.CertificateName(pod), SpiffeID: alias, ParentID: server, Node: true,
				Selectors: []string{"x509pop:subject:cn:" + cn, pki.SelectorPrefix + fp}},
			Entry{Name: pod + "-envoy", SpiffeID: p.WorkloadSpiffeID(), ParentID: alias,
				Selectors: []string{"unix:uid:" + strconv.Itoa(p.Registration.EnvoyUID)}},
		)
	}
	return out
}

var (
	selectorType = regexp.MustCompile(`^[a-z0-9_]+$`)
	sha1Hex      = regexp.MustCompile(`^[0-9a-f]{40}$`)
	uidValue     = regexp.MustCompile(`^[0-9]+$`)
)

// ValidateEntries checks every ID with go-spiffe and every selector's syntax.
func ValidateEntries(td string, es []Entry) error {
	var errs []error
	want, err := spiffeid.TrustDomainFromString(td)
	if err != nil {
		return fmt.Errorf("trust domain %q: %w", td, err)
	}
	for _, e := range es {
		for _, id := range []string{e.SpiffeID, e.ParentID} {
			parsed, err := spiffeid.FromString(id)
			if err != nil {
				errs = append(errs, fmt.Errorf("entry %s: SPIFFE ID %q: %w", e.Name, id, err))
				continue
			}
			if parsed.TrustDomain() != want {
				errs = append(errs, fmt.Errorf("entry %s: %q is not in trust domain %s", e.Name, id, td))
			}
		}
		if len(e.Selectors) == 0 {
			errs = append(errs, fmt.Errorf("entry %s: no selectors", e.Name))
		}
		for _, s := range e.Selectors {
			if err := ValidateSelector(s); err != nil {
				errs = append(errs, fmt.Errorf("entry %s: %w", e.Name, err))
			}
		}
	}
	return errors.Join(errs...)
}

// ValidateSelector checks "type:value" syntax and, for the types spirepod
// writes, the value's exact form (SPIRE matches selectors byte for byte).
func ValidateSelector(s string) error {
	typ, val, ok := strings.Cut(s, ":")
	if !ok || !selectorType.MatchString(typ) || val == "" {
		return fmt.Errorf("selector %q is not type:value", s)
	}
	switch typ {
	case "x509pop":
		switch {
		case strings.HasPrefix(val, "subject:cn:"):
			cn := strings.TrimPrefix(val, "subject:cn:")
			if cn == "" || len(cn) > project.MaxCNBytes {
				return fmt.Errorf("selector %q: common name must be 1 to %d bytes", s, project.MaxCNBytes)
			}
		case strings.HasPrefix(val, "ca:fingerprint:"):
			if !sha1Hex.MatchString(strings.TrimPrefix(val, "ca:fingerprint:")) {
				return fmt.Errorf("selector %q: the fingerprint must be 40 lowercase hex digits (SHA-1, no colons)", s)
			}
		}
	case "unix":
		if v, ok := strings.CutPrefix(val, "uid:"); ok && !uidValue.MatchString(v) {
			return fmt.Errorf("selector %q: uid must be a number", s)
		}
	}
	return nil
}

// SpiffeIDOptions are the inputs of the spiffe-id change.
type SpiffeIDOptions struct {
	Project *project.Project
	CA      *x509.Certificate
	// Format is spiffeid, cluster-static-entry or entry-json.
	Format string
}

// SpiffeIDFile is the registration file's name in the team folder.
func SpiffeIDFile(format string) string {
	if format == project.FormatEntryJSON {
		return "spiffe-ids.json"
	}
	return "spiffe-ids.yaml"
}

// TeamPath is the team folder, with {namespace} and {team} replaced.
func TeamPath(p *project.Project) string {
	return strings.NewReplacer("{namespace}", p.Namespace, "{team}", p.Team).Replace(p.City.TeamPath)
}

// SpiffeID builds the change registering node aliases and workload entries.
func SpiffeID(o SpiffeIDOptions) (*Change, []Entry, error) {
	p := o.Project
	if p.Legacy() {
		return nil, nil, ErrLegacyNames
	}
	es := Entries(p, o.CA)
	if err := ValidateEntries(p.TrustDomain, es); err != nil {
		return nil, nil, err
	}
	content, err := RenderEntries(p, es, o.Format)
	if err != nil {
		return nil, nil, err
	}
	dir := TeamPath(p)
	if dir == "" {
		return nil, nil, errors.New("city.teamPath is empty in spirepod.yaml")
	}
	file := SpiffeIDFile(o.Format)
	ch := &Change{
		Kind: KindSpiffeID, Team: p.Team, Branch: BranchName(p.Team, KindSpiffeID),
		Title:   fmt.Sprintf("Register SPIFFE IDs for %s (%s)", p.Team, p.Namespace),
		Message: fmt.Sprintf("Register SPIFFE IDs for %s\n\n%d node aliases pinned to CA %s and %d workload entries, format %s.", p.Team, p.Replicas, pki.SHA1Fingerprint(o.CA), p.Replicas, o.Format),
		Body:    spiffeIDBody(p, o.CA, o.Format, path.Join(dir, file)),
	}
	if o.Format == project.FormatSpiffeID {
		ch.Warnings = append(ch.Warnings, "the upstream k8s-workload-registrar turns every selector.arbitrary value into a k8s: selector and adds k8s:ns to every SpiffeID; "+
			"the x509pop node aliases and unix:uid selectors here only work with a registrar that passes arbitrary selectors through unchanged (check with the SPIRE admins, or use --format entry-json / cluster-static-entry)")
	}
	ch.Compute = func(ctx context.Context, read ReadFunc) ([]File, error) {
		fp := path.Join(dir, file)
		old, ok, err := read(ctx, fp)
		if err != nil {
			return nil, err
		}
		files := []File{{Path: fp, Old: old, OldExists: ok, New: content}}
		if o.Format != project.FormatEntryJSON {
			kp := path.Join(dir, "kustomization.yaml")
			oldK, kOK, err := read(ctx, kp)
			if err != nil {
				return nil, err
			}
			newK, err := addResource(oldK, kOK, kp, file)
			if err != nil {
				return nil, err
			}
			files = append(files, File{Path: kp, Old: oldK, OldExists: kOK, New: newK})
		}
		return files, nil
	}
	return ch, es, nil
}

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
	Selectors []selectorJSON `json:"selectors"`
	SpiffeID  string         `json:"spiffe_id"`
	ParentID  string         `json:"parent_id"`
}

type selectorJSON struct {
	Type  string `json:"type"`
	Value string `json:"value"`
}

// RenderEntries writes the entries in a registration format.
func RenderEntries(p *project.Project, es []Entry, format string) ([]byte, error) {
	labels := map[string]string{"app.kubernetes.io/managed-by": "spirepod", "spirepod.dev/team": p.Team}
	switch format {
	case project.FormatEntryJSON:
		var doc struct {
			Entries []entryJSON `json:"entries"`
		}
		for _, e := range es {
			ej := entryJSON{SpiffeID: e.SpiffeID, ParentID: e.ParentID}
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
		buf.WriteString("# Generated by `spirepod pr spiffe-id`: one node alias per pod (pinned to the team CA) and one Envoy entry parented to it.\n")
		enc := yaml.NewEncoder(&buf)
		enc.SetIndent(2)
		for _, e := range es {
			var doc any
			if format == project.FormatSpiffeID {
				cr := spiffeIDCR{APIVersion: "spiffeid.spiffe.io/v1beta1", Kind: "SpiffeID",
					Metadata: crMeta{Name: e.Name, Namespace: p.Namespace, Labels: labels},
					Spec: spiffeIDSpec{SpiffeID: e.SpiffeID, ParentID: e.ParentID,
						Selector: spiffeIDSelector{Namespace: p.Namespace, Arbitrary: e.Selectors}}}
				if cr.Spec.Selector.Namespace != cr.Metadata.Namespace {
					return nil, fmt.Errorf("SpiffeID %s: spec.selector.namespace %q must equal metadata.namespace %q", e.Name, cr.Spec.Selector.Namespace, cr.Metadata.Namespace)
				}
				doc = cr
			} else {
				doc = clusterStaticEntry{APIVersion: "spire.spiffe.io/v1alpha1", Kind: "ClusterStaticEntry",
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

func spiffeIDBody(p *project.Project, ca *x509.Certificate, format, file string) string {
	var b strings.Builder
	td := p.TrustDomain
	fmt.Fprintf(&b, "Registers the SPIFFE IDs of team **%s** (namespace `%s`, environment %s) in `%s` (format %s).\n\n", p.Team, p.Namespace, p.Environment, file, format)
	fmt.Fprintf(&b, "For each of the %d pods `%s-<i>` of StatefulSet `%s`:\n", p.Replicas, p.StatefulSet, p.StatefulSet)
	pod0 := p.PodName(0)
	fmt.Fprintf(&b, "- a node alias `%s` (for pod `%s`), parent `spiffe://%s/spire/server`, selectors `x509pop:subject:cn:%s` and `x509pop:ca:fingerprint:%s`\n",
		p.NodeAliasID(pod0), pod0, td, p.AgentCN(pod0), pki.SHA1Fingerprint(ca))
	fmt.Fprintf(&b, "- a workload entry `%s` for Envoy, parented to that alias, selector `unix:uid:%d`\n\n", p.WorkloadSpiffeID(), p.Registration.EnvoyUID)
	b.WriteString("### Reviewer checklist\n")
	b.WriteString("- [ ] The trust-ca PR of this team is merged and the SPIRE server restarted\n")
	b.WriteString("- [ ] Every node alias carries the `x509pop:ca:fingerprint` selector of this team's CA (without it any team on the trust list could mint these agents' common names)\n")
	fmt.Fprintf(&b, "- [ ] Every ID is under this team's scope `%s` and no other folder registers it (spirepod checked the base branch; `spirepod city check` does it in CI)\n", p.Scope())
	b.WriteString("- [ ] The SPIRE server's x509pop `agent_path_template` names agents by certificate fingerprint (the default): with a common-name template another trusted CA could take these agents' IDs\n")
	b.WriteString("\n_Opened by `spirepod pr spiffe-id`._\n")
	return b.String()
}
