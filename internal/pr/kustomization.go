package pr

import (
	"fmt"
	"strings"

	"sigs.k8s.io/kustomize/kyaml/yaml"
)

const newKustomization = "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"

func parseKustomization(data []byte, exists bool, path string) (*yaml.RNode, error) {
	if !exists || strings.TrimSpace(string(data)) == "" {
		data = []byte(newKustomization)
	}
	n, err := yaml.Parse(string(data))
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", path, err)
	}
	return n, nil
}

func appendOnce(seq *yaml.RNode, item string, same func(existing string) bool) bool {
	for _, e := range seq.YNode().Content {
		if same(e.Value) {
			return false
		}
	}
	seq.YNode().Content = append(seq.YNode().Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: yaml.NodeTagString, Value: item})
	return true
}

// addResource lists item once under resources: of a kustomization (created
// when missing), editing the YAML structurally.
func addResource(data []byte, exists bool, path, item string) ([]byte, error) {
	n, err := parseKustomization(data, exists, path)
	if err != nil {
		return nil, err
	}
	seq, err := n.Pipe(yaml.LookupCreate(yaml.SequenceNode, "resources"))
	if err != nil {
		return nil, fmt.Errorf("%s: resources: %w", path, err)
	}
	if !appendOnce(seq, item, func(e string) bool { return strings.TrimPrefix(e, "./") == item }) && exists {
		return data, nil
	}
	s, err := n.String()
	return []byte(s), err
}

// removeResource drops item from resources: of a kustomization; unchanged
// data when it is not listed.
func removeResource(data []byte, path, item string) ([]byte, error) {
	n, err := parseKustomization(data, true, path)
	if err != nil {
		return nil, err
	}
	seq, err := n.Pipe(yaml.Lookup("resources"))
	if err != nil || seq == nil {
		return data, err
	}
	var kept []*yaml.Node
	for _, e := range seq.YNode().Content {
		if strings.TrimPrefix(e.Value, "./") != item {
			kept = append(kept, e)
		}
	}
	if len(kept) == len(seq.YNode().Content) {
		return data, nil
	}
	seq.YNode().Content = kept
	s, err := n.String()
	return []byte(s), err
}

// DefaultTrustListGenerator names the configMapGenerator spirepod creates in
// a trust-list directory whose kustomization has no generator yet.
const DefaultTrustListGenerator = "spire-x509pop-trust-list"

// addGeneratorFile lists file once in the files: of the kustomization's
// first configMapGenerator (else secretGenerator; else a new configMapGenerator).
func addGeneratorFile(data []byte, exists bool, path, file string) ([]byte, error) {
	n, err := parseKustomization(data, exists, path)
	if err != nil {
		return nil, err
	}
	var gen *yaml.RNode
	for _, field := range []string{"configMapGenerator", "secretGenerator"} {
		seq, err := n.Pipe(yaml.Lookup(field))
		if err != nil {
			return nil, fmt.Errorf("%s: %s: %w", path, field, err)
		}
		if seq != nil && len(seq.YNode().Content) > 0 {
			gen = yaml.NewRNode(seq.YNode().Content[0])
			break
		}
	}
	if gen == nil {
		seq, err := n.Pipe(yaml.LookupCreate(yaml.SequenceNode, "configMapGenerator"))
		if err != nil {
			return nil, err
		}
		gen = yaml.NewMapRNode(&map[string]string{"name": DefaultTrustListGenerator})
		seq.YNode().Content = append(seq.YNode().Content, gen.YNode())
	}
	files, err := gen.Pipe(yaml.LookupCreate(yaml.SequenceNode, "files"))
	if err != nil {
		return nil, fmt.Errorf("%s: files: %w", path, err)
	}
	same := func(e string) bool {
		if _, p, ok := strings.Cut(e, "="); ok {
			e = p
		}
		return strings.TrimPrefix(e, "./") == file
	}
	if !appendOnce(files, file, same) && exists {
		return data, nil
	}
	s, err := n.String()
	return []byte(s), err
}
