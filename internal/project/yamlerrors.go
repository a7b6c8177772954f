package project

import (
	"fmt"
	"reflect"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"
)

// explainYAML re-reads a document that did not decode into a value of
// type t and says, per problem, the key's path, its line and what it
// should be in the user's words: an unknown key with the nearest known one
// ("did you mean"), or a value of the wrong type ("replicas must be a whole
// number, got \"abc\""). nil when it finds nothing to say (the decoder's own
// error is then used).
func explainYAML(data []byte, t reflect.Type) error {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil || len(doc.Content) == 0 {
		return nil
	}
	var msgs []string
	walkYAML(doc.Content[0], t, "", &msgs)
	if len(msgs) == 0 {
		return nil
	}
	return fmt.Errorf("%s", strings.Join(msgs, "; "))
}

func walkYAML(n *yaml.Node, t reflect.Type, path string, msgs *[]string) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			*msgs = append(*msgs, fmt.Sprintf("line %d: %s must be a mapping (key: value lines)", n.Line, orTop(path)))
			return
		}
		fields := yamlFields(t)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			f, ok := fields[k.Value]
			if !ok {
				known := make([]string, 0, len(fields))
				for name := range fields {
					known = append(known, name)
				}
				msg := fmt.Sprintf("line %d: unknown key %s", k.Line, join(path, k.Value))
				if s := Closest(k.Value, known); s != "" {
					msg += fmt.Sprintf(" (did you mean %s?)", join(path, s))
				}
				*msgs = append(*msgs, msg)
				continue
			}
			walkYAML(v, f, join(path, k.Value), msgs)
		}
	case reflect.Slice:
		if n.Kind == yaml.SequenceNode {
			for i, e := range n.Content {
				walkYAML(e, t.Elem(), fmt.Sprintf("%s[%d]", path, i), msgs)
			}
			return
		}
		if n.Tag != "!!null" {
			*msgs = append(*msgs, fmt.Sprintf("line %d: %s must be a list", n.Line, orTop(path)))
		}
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			*msgs = append(*msgs, fmt.Sprintf("line %d: %s must be a mapping", n.Line, orTop(path)))
			return
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			walkYAML(n.Content[i+1], t.Elem(), join(path, n.Content[i].Value), msgs)
		}
	default:
		v := reflect.New(t)
		if err := n.Decode(v.Interface()); err != nil {
			*msgs = append(*msgs, fmt.Sprintf("line %d: %s must be %s, got %q", n.Line, orTop(path), kindWords(t), n.Value))
		}
	}
}

// yamlFields maps each YAML key of struct t (inline structs included) to
// its field's type.
func yamlFields(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		tag := f.Tag.Get("yaml")
		name, opts, _ := strings.Cut(tag, ",")
		if name == "-" {
			continue
		}
		if strings.Contains(opts, "inline") {
			ft := f.Type
			for ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			for k, v := range yamlFields(ft) {
				out[k] = v
			}
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		out[name] = f.Type
	}
	return out
}

func kindWords(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Int, reflect.Int32, reflect.Int64, reflect.Uint, reflect.Uint32, reflect.Uint64:
		return "a whole number"
	case reflect.Bool:
		return "true or false"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.String:
		return "a string"
	}
	return "a " + t.String()
}

func join(path, k string) string {
	if path == "" {
		return k
	}
	return path + "." + k
}

func orTop(path string) string {
	if path == "" {
		return "the document"
	}
	return path
}

// Closest is the name in known nearest to s by edit distance, if near
// enough to be a typo ("" otherwise): the "did you mean" of unknown keys.
func Closest(s string, known []string) string {
	best, bestD := "", len(s)/2+1
	sorted := append([]string(nil), known...)
	sort.Strings(sorted)
	for _, k := range sorted {
		if d := editDistance(strings.ToLower(s), strings.ToLower(k)); d < bestD {
			best, bestD = k, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}
