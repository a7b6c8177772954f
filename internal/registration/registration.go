// Package registration owns the SPIRE registration entries a team registers
// (step 5 of the guide) in the three formats spirepod writes and reads:
// SpiffeID custom resources (the k8s-workload-registrar's), ClusterStaticEntry
// (spire-controller-manager's) and the JSON of `spire-server entry create
// -data`. It renders a project's entries, parses any file in those formats
// with line numbers (spirepod's own and hand-written ones), and validates
// entries offline. `pr spiffe-id` and `city check` both use it.
package registration

import "github.com/spirepod/spirepod/internal/project"

// Formats, as in spirepod.yaml's registration.format.
const (
	FormatSpiffeID           = project.FormatSpiffeID
	FormatClusterStaticEntry = project.FormatClusterStaticEntry
	FormatEntryJSON          = project.FormatEntryJSON
)

// API versions and kinds of the CR formats.
const (
	SpiffeIDAPIVersion           = "spiffeid.spiffe.io/v1beta1"
	SpiffeIDKind                 = "SpiffeID"
	ClusterStaticEntryAPIVersion = "spire.spiffe.io/v1alpha1"
	ClusterStaticEntryKind       = "ClusterStaticEntry"
)

// Entry is one SPIRE registration entry.
type Entry struct {
	// Name is the Kubernetes object name for the CR formats.
	Name      string   `json:"name"`
	SpiffeID  string   `json:"spiffeID"`
	ParentID  string   `json:"parentID"`
	Selectors []string `json:"selectors"` // "type:value"
	Node      bool     `json:"node"`      // a node alias (parent is the server)

	// Set when parsed from a file.
	Format string `json:"format,omitempty"`
	// Namespace is a SpiffeID's metadata.namespace.
	Namespace string `json:"namespace,omitempty"`
	// SelectorNamespace is a SpiffeID's spec.selector.namespace.
	SelectorNamespace string `json:"selectorNamespace,omitempty"`
	// ClassName is a ClusterStaticEntry's spec.className.
	ClassName string `json:"className,omitempty"`
	// EntryID is entry-json's entry_id.
	EntryID string `json:"entryID,omitempty"`
	// Powers are the fields that reach beyond a workload's own SVID.
	Powers Powers `json:"powers,omitzero"`
	// File and Line locate the entry.
	File string `json:"file,omitempty"`
	Line int    `json:"line,omitempty"`
}

// ServerID is the SPIRE server's ID: the parent of every node alias.
func ServerID(td string) string { return "spiffe://" + td + "/spire/server" }

// File is the registration file's name in a team folder for a format.
func File(format string) string {
	if format == FormatEntryJSON {
		return "spiffe-ids.json"
	}
	return "spiffe-ids.yaml"
}

// Powers are the entry fields that give a workload more than its own SVID:
// SPIRE's admin (its SVID may call the server's management APIs),
// downstream (it may get an intermediate CA of the trust domain),
// store_svid (its SVID is written by an SVIDStore plugin), DNS names (its
// SVID passes host-name checks for them) and federates_with (it receives
// the bundles of other trust domains).
type Powers struct {
	Admin         bool     `json:"admin,omitempty"`
	Downstream    bool     `json:"downstream,omitempty"`
	StoreSVID     bool     `json:"storeSVID,omitempty"`
	DNSNames      []string `json:"dnsNames,omitempty"`
	FederatesWith []string `json:"federatesWith,omitempty"`
}
