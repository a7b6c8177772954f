package apply

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"go.yaml.in/yaml/v3"
	"sigs.k8s.io/kustomize/api/provider"
	"sigs.k8s.io/kustomize/api/resource"
	"sigs.k8s.io/kustomize/kyaml/kio"
	"sigs.k8s.io/kustomize/kyaml/resid"
	kyaml "sigs.k8s.io/kustomize/kyaml/yaml"
)

// Why a plain build: kustomize's build costs time quadratic in the number
// of objects of one kustomization. Appending each resource compares its ID
// with every resource already there, the namespace transformer does the same
// per resource, and the name-reference pass compares every name in the
// gen-cert Role's rules.resourceNames (two per pod) with every resource of
// its namespace (one Certificate per pod), reading each one's annotations
// (measured with pprof: at 1,000 pods that pass alone took 5 s of a 6.5 s
// build; kustomize issue #5084 and its pull requests describe the same
// costs). The scaffold uses a small part of kustomize: files, a directory
// with its own kustomization, namespace, labels and a secretGenerator without
// a name hash. For a kustomization that uses only that part, with every
// object already in the kustomization's namespace, kustomize's name-reference
// pass changes nothing (no name or namespace moves), and plainBuild gives the
// same objects, in the same order, in time linear in the objects. Anything
// else is left to kustomize (errPlainUnsupported), which stays the judge:
// TestPlainBuildMatchesKustomize holds the two equal on every scaffold
// variant.

// errPlainUnsupported: the kustomization uses something plainBuild does not
// do; kustomize builds it.
var errPlainUnsupported = errors.New("needs kustomize")

// unsupported says what only kustomize does.
func unsupported(why string, args ...any) error {
	return fmt.Errorf("%w: %s", errPlainUnsupported, fmt.Sprintf(why, args...))
}

// kustomizationNames are the file names kustomize looks for, in its order.
var kustomizationNames = []string{"kustomization.yaml", "kustomization.yml", "Kustomization"}

// plainKeys are the kustomization fields plainBuild handles.
var plainKeys = map[string]bool{
	"apiVersion": true, "kind": true, "namespace": true, "labels": true,
	"resources": true, "generatorOptions": true, "secretGenerator": true,
}

type plainKustomization struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Namespace  string `yaml:"namespace"`
	Labels     []struct {
		Pairs            map[string]string `yaml:"pairs"`
		IncludeSelectors bool              `yaml:"includeSelectors"`
		IncludeTemplates bool              `yaml:"includeTemplates"`
		Fields           []any             `yaml:"fields"`
	} `yaml:"labels"`
	Resources        []string `yaml:"resources"`
	GeneratorOptions *struct {
		DisableNameSuffixHash bool `yaml:"disableNameSuffixHash"`
	} `yaml:"generatorOptions"`
	SecretGenerator []struct {
		Name  string   `yaml:"name"`
		Type  string   `yaml:"type"`
		Files []string `yaml:"files"`
	} `yaml:"secretGenerator"`
}

// plainBuild builds dir's kustomization without kustomize, or returns
// errPlainUnsupported when only kustomize can. root bounds every file it
// reads, as kustomize's LoadRestrictionsRootOnly does.
func plainBuild(rf *resource.Factory, root, dir string, depth int) ([]*kyaml.RNode, error) {
	if depth > 8 {
		return nil, unsupported("kustomizations nested over 8 deep")
	}
	var data []byte
	found := 0
	for _, n := range kustomizationNames {
		b, err := os.ReadFile(filepath.Join(dir, n))
		if err == nil {
			data, found = b, found+1
		} else if !errors.Is(err, fs.ErrNotExist) {
			return nil, unsupported("reading %s: %v", dir, err)
		}
	}
	if found != 1 {
		return nil, unsupported("%d kustomization files in %s", found, dir)
	}
	var keys map[string]any
	if err := yaml.Unmarshal(data, &keys); err != nil {
		return nil, unsupported("kustomization in %s does not parse", dir)
	}
	for k, v := range keys {
		if !plainKeys[k] && v != nil {
			return nil, unsupported("kustomization field %s", k)
		}
	}
	var k plainKustomization
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&k); err != nil {
		return nil, unsupported("kustomization in %s: %v", dir, err)
	}
	var nodes []*kyaml.RNode
	for _, r := range k.Resources {
		p, ok := within(root, dir, r)
		if !ok {
			return nil, unsupported("resource %q", r)
		}
		st, err := os.Lstat(p)
		if err != nil || st.Mode()&fs.ModeSymlink != 0 {
			return nil, unsupported("resource %q (symlink or unreadable)", r)
		}
		if st.IsDir() {
			sub, err := plainBuild(rf, root, p, depth+1)
			if err != nil {
				return nil, err
			}
			nodes = append(nodes, sub...)
			continue
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, unsupported("read %s", p)
		}
		ns, err := rf.RNodesFromBytes(b)
		if err != nil {
			return nil, unsupported("parse %s: %v", p, err)
		}
		nodes = append(nodes, ns...)
	}
	if len(k.SecretGenerator) > 0 && (k.GeneratorOptions == nil || !k.GeneratorOptions.DisableNameSuffixHash) {
		return nil, unsupported("secretGenerator without disableNameSuffixHash")
	}
	generated := map[*kyaml.RNode]bool{}
	for _, g := range k.SecretGenerator {
		s, err := plainSecret(root, dir, g.Name, g.Type, g.Files)
		if err != nil {
			return nil, err
		}
		nodes = append(nodes, s)
		generated[s] = true
	}
	seen := make(map[resid.ResId]bool, len(nodes))
	for _, n := range nodes {
		if err := plainCheck(n); err != nil {
			return nil, err
		}
		id := resid.NewResIdWithNamespace(resid.GvkFromNode(n), n.GetName(), n.GetNamespace())
		if seen[id] {
			return nil, unsupported("duplicate %s", id)
		}
		seen[id] = true
	}
	if k.Namespace != "" {
		for _, n := range nodes {
			if err := plainNamespace(n, k.Namespace, generated[n]); err != nil {
				return nil, err
			}
		}
	}
	for _, l := range k.Labels {
		if l.IncludeSelectors || l.IncludeTemplates || len(l.Fields) > 0 {
			return nil, unsupported("labels with selectors, templates or fields")
		}
		for _, n := range nodes {
			labels := n.GetLabels()
			for key, v := range l.Pairs {
				labels[key] = v
			}
			if err := n.SetLabels(labels); err != nil {
				return nil, unsupported("labels on %s", n.GetName())
			}
		}
	}
	return nodes, nil
}

// within resolves a kustomization entry inside root, refusing anything
// that leaves it (kustomize's root-only load restriction reports that).
func within(root, dir, entry string) (string, bool) {
	if entry == "" || filepath.IsAbs(entry) || strings.Contains(entry, "://") || strings.HasPrefix(entry, "github.com/") {
		return "", false
	}
	p := filepath.Join(dir, filepath.FromSlash(entry))
	rel, err := filepath.Rel(root, p)
	if err != nil || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
		return "", false
	}
	return p, true
}

// plainSecret is kustomize's secretGenerator for files: key=path (or the
// path's base name as the key), type Opaque unless given.
func plainSecret(root, dir, name, typ string, files []string) (*kyaml.RNode, error) {
	if name == "" {
		return nil, unsupported("generated Secret without a name")
	}
	n, err := kyaml.Parse("apiVersion: v1\nkind: Secret\nmetadata:\n  name: " + name + "\n")
	if err != nil || n.GetName() != name {
		return nil, unsupported("generated Secret %q", name)
	}
	if typ == "" {
		typ = "Opaque"
	}
	if err := n.PipeE(kyaml.FieldSetter{Name: "type", Value: kyaml.NewStringRNode(typ)}); err != nil {
		return nil, unsupported("generated Secret type")
	}
	m := map[string]string{}
	for _, f := range files {
		key, path, ok := strings.Cut(f, "=")
		if !ok {
			key, path = filepath.Base(f), f
		}
		if key == "" || strings.ContainsAny(key, "/\\ ") || m[key] != "" {
			return nil, unsupported("secretGenerator key %q", key)
		}
		p, ok := within(root, dir, path)
		if !ok {
			return nil, unsupported("secretGenerator file %q", path)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, unsupported("read %s", p)
		}
		if _, dup := m[key]; dup {
			return nil, unsupported("duplicate key %q", key)
		}
		m[key] = string(b)
	}
	if err := n.LoadMapIntoSecretData(m); err != nil {
		return nil, unsupported("secret data")
	}
	return n, nil
}

// plainCheck refuses the objects whose build only kustomize gets right:
// lists, kinds its namespace transformer rewrites beyond metadata, bindings
// whose subjects its passes would change, and objects carrying kustomize's
// own annotations.
func plainCheck(n *kyaml.RNode) error {
	kind := n.GetKind()
	if n.GetApiVersion() == "" || kind == "" || n.GetName() == "" || strings.HasSuffix(kind, "List") {
		return unsupported("object without apiVersion, kind or name, or a list")
	}
	switch kind {
	case "Namespace", "APIService", "CustomResourceDefinition", "MutatingWebhookConfiguration",
		"ValidatingWebhookConfiguration", "PersistentVolume", "StorageClass":
		return unsupported("kind %s", kind)
	case "RoleBinding", "ClusterRoleBinding":
		subjects, err := n.Pipe(kyaml.Lookup("subjects"))
		if err != nil {
			return unsupported("subjects of %s", n.GetName())
		}
		if subjects != nil {
			els, err := subjects.Elements()
			if err != nil {
				return unsupported("subjects of %s", n.GetName())
			}
			for _, s := range els {
				name, ns := s.Field("name"), s.Field("namespace")
				if name != nil && kyaml.GetValue(name.Value) == "default" {
					return unsupported("subject named default in %s", n.GetName())
				}
				if ns == nil || kyaml.GetValue(ns.Value) == "" {
					return unsupported("subject without namespace in %s", n.GetName())
				}
			}
		}
	}
	for a := range n.GetAnnotations() {
		if strings.Contains(a, "config.kubernetes.io/") || strings.HasPrefix(a, "kustomize.config.k8s.io/") {
			return unsupported("annotation %s", a)
		}
	}
	return nil
}

// plainNamespace is kustomize's namespace transformer for an object already
// in ns (or cluster-scoped): nothing to change; a Secret this
// kustomization generates gets ns. Any other object in another namespace,
// or in none, is kustomize's to move (its name references follow it).
func plainNamespace(n *kyaml.RNode, ns string, generated bool) error {
	if resid.GvkFromNode(n).IsClusterScoped() {
		return nil
	}
	switch have := n.GetNamespace(); {
	case have == ns:
		return nil
	case have == "" && generated:
		if err := n.SetNamespace(ns); err != nil {
			return unsupported("namespace of %s", n.GetName())
		}
		return nil
	}
	return unsupported("%s %s in namespace %q, not %q", n.GetKind(), n.GetName(), n.GetNamespace(), ns)
}

// plainObjects renders nodes as kustomize's Resource.MarshalJSON does
// (YAML decoded into a map, then JSON), without its detour of encoding each
// node to YAML text and parsing it again.
func plainObjects(nodes []*kyaml.RNode) ([][]byte, error) {
	out := make([][]byte, 0, len(nodes))
	for _, n := range nodes {
		m := map[string]any{}
		if err := n.YNode().Decode(&m); err != nil {
			return nil, err
		}
		b, err := json.Marshal(m)
		if err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	return out, nil
}

// newResourceFactory is kustomize's own parser of resource files, so a
// plain build reads YAML exactly as kustomize does.
func newResourceFactory() *resource.Factory {
	return provider.NewDefaultDepProvider().GetResourceFactory()
}

var _ = kio.FromBytes // the factory's RNodesFromBytes is kio.FromBytes plus kustomize's checks

func plainError(dir string, err error) error {
	return fmt.Errorf("build kustomization %s: %w", dir, err)
}
