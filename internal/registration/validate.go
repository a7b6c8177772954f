package registration

import (
	"fmt"
	"regexp"
	"sort"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/spirepod/spirepod/internal/project"
)

// Severity of a finding.
type Severity string

const (
	SeverityError   Severity = "error"
	SeverityWarning Severity = "warning"
	SeverityNote    Severity = "note"
)

// Finding is one problem with a stable code, a severity and a place.
type Finding struct {
	Code     string   `json:"code"`
	Severity Severity `json:"severity"`
	File     string   `json:"file,omitempty"`
	Line     int      `json:"line,omitempty"`
	Message  string   `json:"message"`
	// CA is the SHA-1 fingerprint of the CA the finding is about (an
	// alias's pin, a trust-list block), so callers decide by it, never by
	// the message.
	CA string `json:"ca,omitempty"`
}

func (f Finding) String() string {
	where := f.File
	if f.Line > 0 {
		where = fmt.Sprintf("%s:%d", f.File, f.Line)
	}
	if where != "" {
		where += ": "
	}
	return fmt.Sprintf("%s%s %s: %s", where, f.Code, f.Severity, f.Message)
}

// Codes of the offline validator (the format and syntax of entries). They
// are stable; README's "city check rules" documents each.
const (
	CodeBadSpiffeID       = "SPD201" // not a SPIFFE ID (go-spiffe refuses it)
	CodeOtherTrustDomain  = "SPD202" // an ID outside the trust domain
	CodeBadSelector       = "SPD203" // not type:value
	CodeBadFingerprint    = "SPD204" // x509pop:ca:fingerprint not 40 lowercase hex (SHA-1)
	CodeBadUnixID         = "SPD205" // unix:uid/gid not a number
	CodeNoSelectors       = "SPD206" // an entry without selectors
	CodeDuplicate         = "SPD207" // the same entry twice
	CodeAliasUnpinned     = "SPD208" // a node alias without x509pop:ca:fingerprint
	CodeNoClassName       = "SPD209" // a ClusterStaticEntry without className
	CodeSpiffeIDNamespace = "SPD210" // a SpiffeID whose selector namespace is not its own
	CodeRegistrarRewrites = "SPD211" // a SpiffeID the k8s-workload-registrar cannot turn into a working entry
	CodeBadCN             = "SPD212" // x509pop:subject:cn empty or over 64 bytes
	CodeBadEntryID        = "SPD213" // an entry_id SPIRE refuses ([A-Za-z0-9._-], at most 255 bytes)
	CodeDuplicateEntryID  = "SPD214" // one entry_id on two entries
)

var (
	selectorType = regexp.MustCompile(`^[a-z0-9_]+$`)
	sha1Hex      = regexp.MustCompile(`^[0-9a-f]{40}$`)
	number       = regexp.MustCompile(`^[0-9]+$`)
	// An entry ID's characters; its length (1 to 255 bytes) is checked
	// apart: a counted repetition compiles to 255 copies of the class, which
	// cost every spirepod process 2 ms at start.
	entryIDChars = regexp.MustCompile(`^[A-Za-z0-9._-]+$`)
)

// ValidateOptions tune the validator.
type ValidateOptions struct {
	// TrustDomain every ID must be in; empty accepts any.
	TrustDomain string
	// Classless says the spire-controller-manager watches ClusterStaticEntry
	// objects without className (watchClassless: true).
	Classless bool
}

// Validate checks entries offline: SPIFFE IDs parsed with go-spiffe, the
// trust domain, selector syntax and values, node aliases pinned to a CA,
// duplicates, className, and what the k8s-workload-registrar does to
// SpiffeIDs. Findings are sorted by file and line.
func Validate(es []Entry, o ValidateOptions) []Finding {
	var out []Finding
	add := func(e Entry, code string, sev Severity, format string, args ...any) {
		out = append(out, Finding{Code: code, Severity: sev, File: e.File, Line: e.Line, Message: fmt.Sprintf(format, args...)})
	}
	var want spiffeid.TrustDomain
	if o.TrustDomain != "" {
		td, err := spiffeid.TrustDomainFromString(o.TrustDomain)
		if err == nil {
			want = td
		}
	}
	seen := map[string]Entry{}
	seenID := map[string]Entry{}
	for _, e := range es {
		name := e.Describe()
		for _, id := range []struct{ field, v string }{{"spiffeID", e.SpiffeID}, {"parentID", e.ParentID}} {
			parsed, err := spiffeid.FromString(id.v)
			if err != nil {
				add(e, CodeBadSpiffeID, SeverityError, "%s: %s %q is not a SPIFFE ID: %v", name, id.field, id.v, err)
				continue
			}
			if !want.IsZero() && parsed.TrustDomain() != want {
				add(e, CodeOtherTrustDomain, SeverityError, "%s: %s %q is not in trust domain %s", name, id.field, id.v, want)
			}
		}
		if len(e.Selectors) == 0 {
			add(e, CodeNoSelectors, SeverityError, "%s has no selectors: no agent or workload can ever match it", name)
		}
		for _, s := range e.Selectors {
			if f, ok := selectorFinding(s); !ok {
				add(e, f.Code, SeverityError, "%s: %s", name, f.Message)
			}
		}
		if e.Node && !hasPrefix(e.Selectors, "x509pop:ca:fingerprint:") {
			add(e, CodeAliasUnpinned, SeverityError,
				"node alias %s has no x509pop:ca:fingerprint selector: any team whose CA is on the trust list can mint its common name and receive its workloads' SVIDs", e.SpiffeID)
		}
		switch e.Format {
		case FormatClusterStaticEntry:
			if e.ClassName == "" && !o.Classless {
				add(e, CodeNoClassName, SeverityError,
					"ClusterStaticEntry %s has no spec.className: spire-controller-manager ignores it unless it runs with watchClassless (the Helm chart sets className <namespace>-<release> and watchClassless false)", e.Name)
			}
		case FormatSpiffeID:
			if e.SelectorNamespace != e.Namespace {
				add(e, CodeSpiffeIDNamespace, SeverityError, "SpiffeID %s: spec.selector.namespace %q must equal metadata.namespace %q", e.Name, e.SelectorNamespace, e.Namespace)
			}
			if why := RegistrarRewrite(e); why != "" {
				add(e, CodeRegistrarRewrites, SeverityError, "SpiffeID %s: %s", e.Name, why)
			}
		}
		if e.EntryID != "" {
			if len(e.EntryID) > 255 || !entryIDChars.MatchString(e.EntryID) {
				add(e, CodeBadEntryID, SeverityError, "%s: entry_id %q is refused by spire-server: letters, digits, '.', '_' and '-' only, at most 255 bytes", name, e.EntryID)
			} else if first, dup := seenID[e.EntryID]; dup {
				add(e, CodeDuplicateEntryID, SeverityError, "%s: entry_id %q is also the entry at %s:%d: spire-server keeps one and refuses (or, with entry update, overwrites with) the other", name, e.EntryID, first.File, first.Line)
			} else {
				seenID[e.EntryID] = e
			}
		}
		key := e.SpiffeID + "\x00" + e.ParentID + "\x00" + strings.Join(sorted(e.Selectors), ",")
		if first, dup := seen[key]; dup {
			add(e, CodeDuplicate, SeverityError, "%s duplicates the entry at %s:%d (same SPIFFE ID, parent and selectors)", name, first.File, first.Line)
		} else {
			seen[key] = e
		}
	}
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].File != out[j].File {
			return out[i].File < out[j].File
		}
		return out[i].Line < out[j].Line
	})
	return out
}

// RegistrarRewrite says why the k8s-workload-registrar (CRD mode) cannot turn
// a SpiffeID into a working entry, or "" when it can: it rewrites every
// selector into k8s:<value> and adds k8s:ns:<namespace>, so x509pop and unix
// selectors never match, and a node alias (parent the server) never matches
// an x509pop agent.
func RegistrarRewrite(e Entry) string {
	if e.Node {
		return "a node alias cannot be a SpiffeID: the registrar adds k8s:ns:" + e.Namespace + " and rewrites x509pop selectors into k8s: ones, so no x509pop agent ever matches it (register aliases as entry-json or ClusterStaticEntry)"
	}
	for _, s := range e.Selectors {
		typ, _, _ := strings.Cut(s, ":")
		if typ != "k8s" {
			return fmt.Sprintf("the registrar rewrites selector %q into k8s:%s, which no workload attestor produces (only k8s: selectors survive it)", s, s)
		}
	}
	return ""
}

func selectorFinding(s string) (Finding, bool) {
	typ, val, ok := strings.Cut(s, ":")
	if !ok || !selectorType.MatchString(typ) || val == "" {
		return Finding{Code: CodeBadSelector, Message: fmt.Sprintf("selector %q is not type:value", s)}, false
	}
	switch typ {
	case "x509pop":
		switch {
		case strings.HasPrefix(val, "subject:cn:"):
			cn := strings.TrimPrefix(val, "subject:cn:")
			if cn == "" || len(cn) > project.MaxCNBytes {
				return Finding{Code: CodeBadCN, Message: fmt.Sprintf("selector %q: the common name must be 1 to %d bytes", s, project.MaxCNBytes)}, false
			}
		case strings.HasPrefix(val, "ca:fingerprint:"):
			if !sha1Hex.MatchString(strings.TrimPrefix(val, "ca:fingerprint:")) {
				return Finding{Code: CodeBadFingerprint, Message: fmt.Sprintf("selector %q: the fingerprint must be 40 lowercase hex digits (SHA-1 of the CA's DER, no colons); SPIRE matches it byte for byte", s)}, false
			}
		}
	case "unix":
		for _, k := range []string{"uid:", "gid:"} {
			if v, ok := strings.CutPrefix(val, k); ok && !number.MatchString(v) {
				return Finding{Code: CodeBadUnixID, Message: fmt.Sprintf("selector %q: %s must be a non-negative number (the unix attestor reports numeric IDs)", s, strings.TrimSuffix(k, ":"))}, false
			}
		}
	}
	return Finding{}, true
}

// IsServerID reports whether id is a trust domain's SPIRE server ID, the
// parent of node aliases.
func IsServerID(id string) bool {
	p, err := spiffeid.FromString(id)
	return err == nil && p.Path() == "/spire/server"
}

// Describe names an entry for a message.
func (e Entry) Describe() string {
	if e.Node {
		return "node alias " + e.SpiffeID
	}
	return "entry " + e.SpiffeID + " (parent " + e.ParentID + ")"
}

func hasPrefix(ss []string, prefix string) bool {
	for _, s := range ss {
		if strings.HasPrefix(s, prefix) {
			return true
		}
	}
	return false
}

func sorted(ss []string) []string {
	out := append([]string(nil), ss...)
	sort.Strings(out)
	return out
}
