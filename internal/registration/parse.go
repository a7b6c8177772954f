package registration

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"go.yaml.in/yaml/v3"
)

// ErrNotRegistration means a file holds no registration entries in any of
// the three formats (it may be any other manifest).
var ErrNotRegistration = errors.New("not a registration file")

// Parse reads the registration entries of a file in any of the three
// formats, each with its line. A YAML file may mix other objects with
// SpiffeID and ClusterStaticEntry ones; only those are returned. A file with
// none (or not YAML/JSON) is ErrNotRegistration; a registration file that is
// malformed is another error naming the line.
func Parse(path string, data []byte) ([]Entry, error) {
	trimmed := bytes.TrimSpace(data)
	if strings.HasSuffix(path, ".json") || bytes.HasPrefix(trimmed, []byte("{")) {
		return parseJSON(path, data)
	}
	return parseYAML(path, data)
}

func parseYAML(path string, data []byte) ([]Entry, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var out []Entry
	found := false
	for {
		var doc yaml.Node
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			if !found {
				return nil, ErrNotRegistration // not YAML we can read: not ours to judge
			}
			return out, fmt.Errorf("%s: %w", path, err)
		}
		if len(doc.Content) == 0 {
			continue
		}
		root := doc.Content[0]
		kind, api := str(root, "kind"), str(root, "apiVersion")
		var e Entry
		switch {
		case kind == SpiffeIDKind && strings.HasPrefix(api, "spiffeid.spiffe.io/"):
			e = Entry{Format: FormatSpiffeID}
			md, spec := get(root, "metadata"), get(root, "spec")
			e.Name, e.Namespace = str(md, "name"), str(md, "namespace")
			e.SpiffeID, e.ParentID = str(spec, "spiffeId"), str(spec, "parentId")
			sel := get(spec, "selector")
			e.SelectorNamespace = str(sel, "namespace")
			e.Selectors = spiffeIDSelectors(sel)
		case kind == ClusterStaticEntryKind && strings.HasPrefix(api, "spire.spiffe.io/"):
			e = Entry{Format: FormatClusterStaticEntry}
			md, spec := get(root, "metadata"), get(root, "spec")
			e.Name = str(md, "name")
			e.SpiffeID, e.ParentID, e.ClassName = str(spec, "spiffeID"), str(spec, "parentID"), str(spec, "className")
			if s := get(spec, "selectors"); s != nil {
				for _, v := range s.Content {
					e.Selectors = append(e.Selectors, v.Value)
				}
			}
		default:
			continue
		}
		found = true
		e.File, e.Line, e.Node = path, root.Line, IsServerID(e.ParentID)
		out = append(out, e)
	}
	if !found {
		return nil, ErrNotRegistration
	}
	return out, nil
}

// spiffeIDSelectors lists a SpiffeID's selector fields as written: arbitrary
// values as they are, the other fields as field:value (e.g. namespace:ns),
// which the registrar turns into k8s: selectors.
func spiffeIDSelectors(sel *yaml.Node) []string {
	var out []string
	if sel == nil || sel.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(sel.Content); i += 2 {
		k, v := sel.Content[i].Value, sel.Content[i+1]
		switch {
		case k == "arbitrary":
			for _, a := range v.Content {
				out = append(out, a.Value)
			}
		case k == "namespace":
			// the registrar's own namespace rule, not a selector written here
		case v.Kind == yaml.ScalarNode:
			out = append(out, "k8s:"+k+":"+v.Value)
		case v.Kind == yaml.MappingNode: // podLabel
			for j := 0; j+1 < len(v.Content); j += 2 {
				out = append(out, "k8s:"+k+":"+v.Content[j].Value+":"+v.Content[j+1].Value)
			}
		}
	}
	return out
}

func parseJSON(path string, data []byte) ([]Entry, error) {
	var doc struct {
		Entries []struct {
			SpiffeID  string `json:"spiffe_id"`
			ParentID  string `json:"parent_id"`
			EntryID   string `json:"entry_id"`
			Selectors []struct {
				Type  string `json:"type"`
				Value string `json:"value"`
			} `json:"selectors"`
		} `json:"entries"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		var se *json.SyntaxError
		if errors.As(err, &se) && !bytes.Contains(data, []byte(`"entries"`)) {
			return nil, ErrNotRegistration
		}
		return nil, fmt.Errorf("%s: line %d: %w", path, lineOf(data, jsonOffset(err)), err)
	}
	if doc.Entries == nil {
		return nil, ErrNotRegistration
	}
	lines := entryLines(data)
	out := make([]Entry, 0, len(doc.Entries))
	for i, je := range doc.Entries {
		e := Entry{Format: FormatEntryJSON, SpiffeID: je.SpiffeID, ParentID: je.ParentID, EntryID: je.EntryID, Name: je.EntryID, File: path,
			Node: IsServerID(je.ParentID)}
		if i < len(lines) {
			e.Line = lines[i]
		}
		for _, s := range je.Selectors {
			e.Selectors = append(e.Selectors, s.Type+":"+s.Value)
		}
		out = append(out, e)
	}
	return out, nil
}

// entryLines finds the line of each object in the top-level "entries" array
// by walking the JSON tokens.
func entryLines(data []byte) []int {
	dec := json.NewDecoder(bytes.NewReader(data))
	var lines []int
	depth, inEntries, key := 0, false, ""
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
					lines = append(lines, lineOf(data, int64(bytes.IndexByte(data[before:], '{'))+before))
				}
				depth++
			case '[':
				if depth == 1 && key == "entries" {
					inEntries = true
				}
				depth++
			case '}', ']':
				depth--
				if depth == 1 {
					inEntries = false
				}
			}
		case string:
			if depth == 1 {
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

func get(m *yaml.Node, key string) *yaml.Node {
	if m == nil || m.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}

func str(m *yaml.Node, key string) string {
	if v := get(m, key); v != nil && v.Kind == yaml.ScalarNode {
		return v.Value
	}
	return ""
}
