package registration

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"

	"github.com/spiffe/spire/proto/spire/common"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// ErrNotRegistration means a file holds no registration entries in any of
// the three formats (it may be any other manifest).
var ErrNotRegistration = errors.New("not a registration file")

// Parse reads the registration entries of a file the way their consumers
// decode it, each entry with its line:
//   - JSON with an "entries" list as `spire-server entry create -data` reads
//     it (DecodeEntryJSON: encoding/json into SPIRE's own
//     common.RegistrationEntries, so key case, escapes and duplicate keys
//     mean what they mean to the server);
//   - Kubernetes objects as kubectl reads a manifest (Objects: documents
//     split like k8s.io/apimachinery's YAMLReader, each converted to JSON
//     with sigs.k8s.io/yaml, `kind: List` expanded), of which SpiffeID and
//     ClusterStaticEntry objects are decoded case-sensitively into the
//     fields their controllers read.
//
// A file that decodes but holds neither is ErrNotRegistration; a file that
// does not decode is another error naming the line.
func Parse(path string, data []byte) ([]Entry, error) {
	var out []Entry
	if looksJSON(path, data) {
		es, err := DecodeEntryJSON(path, data)
		if err != nil && !errors.Is(err, ErrNotRegistration) {
			return nil, err
		}
		out = append(out, es...)
	}
	objs, err := Objects(data)
	if err != nil {
		if len(out) > 0 { // a valid entry-json file is not a manifest as well
			return out, nil
		}
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	for _, o := range objs {
		e, ok, err := o.Entry(path)
		if err != nil {
			return out, fmt.Errorf("%s: line %d: %w", path, o.Line, err)
		}
		if ok {
			out = append(out, e)
		}
	}
	if len(out) == 0 {
		return nil, ErrNotRegistration
	}
	return out, nil
}

func looksJSON(path string, data []byte) bool {
	return strings.HasSuffix(path, ".json") || bytes.HasPrefix(bytes.TrimSpace(data), []byte("{"))
}

// DecodeEntryJSON decodes an entry-json file exactly as SPIRE 1.13's
// `spire-server entry create -data` does (cmd/spire-server/cli/entry/util.go
// parseEntryJSON): json.Unmarshal into common.RegistrationEntries, SPIRE's
// own generated type, then the fields the server keeps. Go's decoder
// matches keys case-insensitively, takes the last of duplicate keys and
// ignores unknown ones: so does the server. A file without an "entries"
// list is ErrNotRegistration; an empty list is no entries (an empty, non-nil
// slice).
func DecodeEntryJSON(path string, data []byte) ([]Entry, error) {
	var doc *common.RegistrationEntries
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("%s: line %d: %w", path, lineOf(data, jsonOffset(err)), err)
	}
	if doc == nil || doc.Entries == nil {
		return nil, ErrNotRegistration
	}
	lines := entryLines(data)
	out := make([]Entry, 0, len(doc.Entries))
	for i, je := range doc.Entries {
		if je == nil {
			return nil, fmt.Errorf("%s: entry %d is null (spire-server refuses it: missing registration entry)", path, i+1)
		}
		e := Entry{Format: FormatEntryJSON, SpiffeID: je.SpiffeId, ParentID: je.ParentId, EntryID: je.EntryId, Name: je.EntryId, File: path,
			Node: IsServerID(je.ParentId), Powers: Powers{Admin: je.Admin, Downstream: je.Downstream, StoreSVID: je.StoreSvid,
				DNSNames: je.DnsNames, FederatesWith: je.FederatesWith}}
		if i < len(lines) {
			e.Line = lines[i]
		}
		for _, s := range je.Selectors {
			if s == nil {
				continue
			}
			e.Selectors = append(e.Selectors, s.Type+":"+s.Value)
		}
		out = append(out, e)
	}
	return out, nil
}

// Object is one Kubernetes object of a manifest, as JSON (what kubectl
// sends), with the line its document starts at.
type Object struct {
	APIVersion string
	Kind       string
	Name       string
	Namespace  string
	JSON       []byte
	Line       int
}

// Objects splits a manifest into Kubernetes objects as kubectl does:
// documents split at `---` lines (k8s.io/apimachinery's YAMLReader), each
// converted to JSON with sigs.k8s.io/yaml (YAML 1.1 scalars, as kubectl
// reads them), `kind: List` expanded into its items. Empty documents are
// skipped; a document that is not an object is an error naming its line.
func Objects(data []byte) ([]Object, error) {
	docs, err := splitDocuments(data)
	if err != nil {
		return nil, err
	}
	var out []Object
	for _, d := range docs {
		j, err := yaml.YAMLToJSON(d.data)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", d.line+yamlErrorLine(err)-1, err)
		}
		j = bytes.TrimSpace(j)
		if len(j) == 0 || bytes.Equal(j, []byte("null")) {
			continue
		}
		objs, err := objectsOf(j, d.line)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", d.line, err)
		}
		out = append(out, objs...)
	}
	return out, nil
}

// ObjectsFromJSON is Objects for one JSON document (an object, or a List).
func ObjectsFromJSON(j []byte) ([]Object, error) {
	return objectsOf(bytes.TrimSpace(j), 0)
}

type typeMeta struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name      string `json:"name"`
		Namespace string `json:"namespace"`
	} `json:"metadata"`
}

func objectsOf(j []byte, line int) ([]Object, error) {
	if j[0] != '{' {
		return nil, errors.New("not a Kubernetes object (a YAML mapping with apiVersion and kind)")
	}
	var tm typeMeta
	if err := kjson.UnmarshalCaseSensitivePreserveInts(j, &tm); err != nil {
		return nil, err
	}
	if tm.Kind == "List" || (strings.HasSuffix(tm.Kind, "List") && tm.APIVersion == "v1") {
		var l struct {
			Items []json.RawMessage `json:"items"`
		}
		if err := kjson.UnmarshalCaseSensitivePreserveInts(j, &l); err != nil {
			return nil, err
		}
		var out []Object
		for _, it := range l.Items {
			objs, err := objectsOf(bytes.TrimSpace(it), line)
			if err != nil {
				return nil, err
			}
			out = append(out, objs...)
		}
		return out, nil
	}
	return []Object{{APIVersion: tm.APIVersion, Kind: tm.Kind, Name: tm.Metadata.Name, Namespace: tm.Metadata.Namespace, JSON: j, Line: line}}, nil
}

// The CR formats' fields as their controllers decode them (JSON names are
// case-sensitive in Kubernetes): ClusterStaticEntrySpec of
// spire-controller-manager v0.6.2 (api/v1alpha1) and SpiffeIDSpec of the
// k8s-workload-registrar v1.5.6 (mode-crd/api/spiffeid/v1beta1).
type cseObject struct {
	Metadata struct {
		Name string `json:"name"`
	} `json:"metadata"`
	Spec struct {
		SPIFFEID      string   `json:"spiffeID"`
		ParentID      string   `json:"parentID"`
		Selectors     []string `json:"selectors"`
		FederatesWith []string `json:"federatesWith"`
		DNSNames      []string `json:"dnsNames"`
		Admin         bool     `json:"admin"`
		Downstream    bool     `json:"downstream"`
		StoreSVID     bool     `json:"storeSVID"`
		ClassName     string   `json:"className"`
	} `json:"spec"`
}

type spiffeIDObject struct {
	Metadata struct {
		Name      string `json:"name"`
		Namespace string `json:"namespace"`
	} `json:"metadata"`
	Spec struct {
		ParentID      string                 `json:"parentId"`
		SpiffeID      string                 `json:"spiffeId"`
		Selector      spiffeIDObjectSelector `json:"selector"`
		Downstream    bool                   `json:"downstream"`
		DNSNames      []string               `json:"dnsNames"`
		FederatesWith []string               `json:"federatesWith"`
	} `json:"spec"`
}

type spiffeIDObjectSelector struct {
	PodLabel       map[string]string `json:"podLabel"`
	PodName        string            `json:"podName"`
	PodUID         string            `json:"podUid"`
	Namespace      string            `json:"namespace"`
	ServiceAccount string            `json:"serviceAccount"`
	ContainerImage string            `json:"containerImage"`
	ContainerName  string            `json:"containerName"`
	NodeName       string            `json:"nodeName"`
	Arbitrary      []string          `json:"arbitrary"`
}

// IsRegistrationKind says whether apiVersion/kind is one of the CR formats.
func IsRegistrationKind(apiVersion, kind string) bool {
	return (kind == SpiffeIDKind && apiVersion == SpiffeIDAPIVersion) ||
		(kind == ClusterStaticEntryKind && apiVersion == ClusterStaticEntryAPIVersion)
}

// Entry decodes a SpiffeID or ClusterStaticEntry object into its entry;
// ok is false for any other object.
func (o Object) Entry(file string) (Entry, bool, error) {
	var e Entry
	switch {
	case o.Kind == ClusterStaticEntryKind && o.APIVersion == ClusterStaticEntryAPIVersion:
		var c cseObject
		if err := kjson.UnmarshalCaseSensitivePreserveInts(o.JSON, &c); err != nil {
			return e, false, fmt.Errorf("ClusterStaticEntry %s: %w", o.Name, err)
		}
		s := c.Spec
		e = Entry{Format: FormatClusterStaticEntry, Name: c.Metadata.Name, SpiffeID: s.SPIFFEID, ParentID: s.ParentID,
			Selectors: s.Selectors, ClassName: s.ClassName,
			Powers: Powers{Admin: s.Admin, Downstream: s.Downstream, StoreSVID: s.StoreSVID, DNSNames: s.DNSNames, FederatesWith: s.FederatesWith}}
	case o.Kind == SpiffeIDKind && o.APIVersion == SpiffeIDAPIVersion:
		var c spiffeIDObject
		if err := kjson.UnmarshalCaseSensitivePreserveInts(o.JSON, &c); err != nil {
			return e, false, fmt.Errorf("SpiffeID %s: %w", o.Name, err)
		}
		s := c.Spec
		e = Entry{Format: FormatSpiffeID, Name: c.Metadata.Name, Namespace: c.Metadata.Namespace, SpiffeID: s.SpiffeID, ParentID: s.ParentID,
			SelectorNamespace: s.Selector.Namespace, Selectors: s.Selector.selectors(),
			Powers: Powers{Downstream: s.Downstream, DNSNames: s.DNSNames, FederatesWith: s.FederatesWith}}
	default:
		return e, false, nil
	}
	e.File, e.Line, e.Node = file, o.Line, IsServerID(e.ParentID)
	return e, true, nil
}

// selectors lists a SpiffeID's selector fields as written: arbitrary values
// as they are, the other fields as k8s:field:value, which is what the
// registrar turns them into (the namespace field is the registrar's own
// namespace rule, not a selector written here).
func (s spiffeIDObjectSelector) selectors() []string {
	var out []string
	add := func(k, v string) {
		if v != "" {
			out = append(out, "k8s:"+k+":"+v)
		}
	}
	add("podName", s.PodName)
	add("podUid", s.PodUID)
	add("serviceAccount", s.ServiceAccount)
	add("containerImage", s.ContainerImage)
	add("containerName", s.ContainerName)
	add("nodeName", s.NodeName)
	for _, k := range slices.Sorted(maps.Keys(s.PodLabel)) {
		out = append(out, "k8s:podLabel:"+k+":"+s.PodLabel[k])
	}
	out = append(out, s.Arbitrary...)
	return out
}

type document struct {
	data []byte
	line int // 1-based line of the document's first content line
}

// splitDocuments splits like k8s.io/apimachinery/pkg/util/yaml's
// YAMLReader: a line that starts with "---" followed by nothing but
// blanks or a comment ends a document.
func splitDocuments(data []byte) ([]document, error) {
	var docs []document
	var cur bytes.Buffer
	lineNo := 0
	first := 0 // first non-blank, non-comment line of the current document
	flush := func() {
		if strings.TrimSpace(cur.String()) != "" {
			docs = append(docs, document{data: append([]byte(nil), cur.Bytes()...), line: first})
		}
		cur.Reset()
		first = 0
	}
	r := bufio.NewReader(bytes.NewReader(data))
	for {
		line, err := r.ReadBytes('\n')
		if len(line) > 0 {
			lineNo++
			if bytes.HasPrefix(line, []byte("---")) {
				rest := strings.TrimSpace(string(line[3:]))
				if rest == "" || rest[0] == '#' {
					flush()
					continue
				}
			}
			if t := strings.TrimSpace(string(line)); first == 0 && t != "" && !strings.HasPrefix(t, "#") {
				first = lineNo
			}
			cur.Write(line)
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
	}
	flush()
	return docs, nil
}

// yamlErrorLine is the 1-based line a sigs.k8s.io/yaml error names, or 1.
func yamlErrorLine(err error) int {
	var n int
	if _, e := fmt.Sscanf(afterString(err.Error(), "line "), "%d", &n); e == nil && n > 0 {
		return n
	}
	return 1
}

func afterString(s, sep string) string {
	if _, after, ok := strings.Cut(s, sep); ok {
		return after
	}
	return ""
}

// entryLines finds the line of each object in the top-level "entries" array
// by walking the JSON tokens. Keys compare as encoding/json matches them
// (case-insensitively); of duplicate keys the last counts.
func entryLines(data []byte) []int {
	dec := json.NewDecoder(bytes.NewReader(data))
	var lines, cur []int
	depth, inEntries, key := 0, false, ""
	// Lines are counted forward from the last offset: offsets only grow, so
	// a file of n entries costs one pass, not n.
	at, line := int64(0), 1
	lineAt := func(off int64) int {
		line += bytes.Count(data[at:off], []byte("\n"))
		at = off
		return line
	}
	for {
		before := dec.InputOffset()
		tok, err := dec.Token()
		if err != nil {
			return lines
		}
		switch t := tok.(type) {
		case json.Delim:
			switch t {
			case '{':
				if inEntries && depth == 2 {
					cur = append(cur, lineAt(int64(bytes.IndexByte(data[before:], '{'))+before))
				}
				depth++
			case '[':
				if depth == 1 && strings.EqualFold(key, "entries") {
					inEntries, cur = true, nil
				}
				depth++
			case '}', ']':
				depth--
				if depth == 1 && inEntries {
					inEntries, lines = false, cur
				}
			}
		case string:
			if depth == 1 && !inEntries {
				key = t
			}
		}
	}
}

func jsonOffset(err error) int64 {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return se.Offset
	case errors.As(err, &te):
		return te.Offset
	}
	return 0
}

func lineOf(data []byte, off int64) int {
	if off < 0 || off > int64(len(data)) {
		off = int64(len(data))
	}
	return bytes.Count(data[:off], []byte("\n")) + 1
}
