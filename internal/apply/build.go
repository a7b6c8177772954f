// Package apply builds a scaffold's two kustomizations in-process and
// applies them with server-side apply, in dependency order, then waits for
// the issuer and the StatefulSet's pods.
package apply

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"sort"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// Layer is one kustomization of the scaffold, applied in order.
type Layer struct {
	// Name is "certs" or "app".
	Name    string
	Dir     string
	Objects []*unstructured.Unstructured
}

// Build renders certs/ then the scaffold root, as `kubectl apply -k ./certs`
// and `kubectl apply -k .` would.
func Build(dir string) ([]Layer, error) {
	var layers []Layer
	for _, l := range []struct{ name, dir string }{{"certs", filepath.Join(dir, "certs")}, {"app", dir}} {
		objs, err := BuildDir(l.dir)
		if err != nil {
			return nil, err
		}
		layers = append(layers, Layer{Name: l.name, Dir: l.dir, Objects: objs})
	}
	return layers, nil
}

// BuildDir builds one directory's kustomization: what `kubectl apply -k DIR`
// would apply. A kustomization within what plainBuild does (the scaffold's)
// is built in time linear in its objects; any other goes to kustomize.
func BuildDir(dir string) ([]*unstructured.Unstructured, error) {
	objs, _, err := buildDir(dir)
	return objs, err
}

// buildDir is BuildDir, saying whether the plain build made the objects.
func buildDir(dir string) ([]*unstructured.Unstructured, bool, error) {
	nodes, err := plainBuild(newResourceFactory(), dir, dir, 0)
	if errors.Is(err, errPlainUnsupported) {
		objs, err := kustomizeBuild(dir)
		return objs, false, err
	}
	if err != nil {
		return nil, true, plainError(dir, err)
	}
	docs, err := plainObjects(nodes)
	if err != nil {
		return nil, true, plainError(dir, err)
	}
	out := make([]*unstructured.Unstructured, 0, len(docs))
	for _, data := range docs {
		u := &unstructured.Unstructured{}
		if err := u.UnmarshalJSON(data); err != nil {
			return nil, true, plainError(dir, err)
		}
		out = append(out, u)
	}
	annotateConfigHash(out)
	return out, true, nil
}

// kustomizeBuild runs kustomize on one directory.
func kustomizeBuild(dir string) ([]*unstructured.Unstructured, error) {
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	m, err := k.Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		return nil, fmt.Errorf("build kustomization %s: %w", dir, err)
	}
	var out []*unstructured.Unstructured
	for _, r := range m.Resources() {
		// Through JSON, so numbers are int64/float64 as client-go expects.
		data, err := r.MarshalJSON()
		if err != nil {
			return nil, fmt.Errorf("build kustomization %s: %s/%s: %w", dir, r.GetKind(), r.GetName(), err)
		}
		u := &unstructured.Unstructured{}
		if err := u.UnmarshalJSON(data); err != nil {
			return nil, fmt.Errorf("build kustomization %s: %s/%s: %w", dir, r.GetKind(), r.GetName(), err)
		}
		out = append(out, u)
	}
	annotateConfigHash(out)
	return out, nil
}

// ConfigHashAnnotation is set on each workload's pod template: the SHA-256 of
// the ConfigMaps its pods mount. A change to them (a new upstream, agent
// setting or bundle) changes the template, so the StatefulSet rolls its pods
// (ConfigMap volumes alone are re-read late or, for subPath and env, never).
const ConfigHashAnnotation = "spirepod.dev/config-hash"

// annotateConfigHash sets ConfigHashAnnotation on every StatefulSet of a
// build from the ConfigMaps of the same build its pod template names.
func annotateConfigHash(objs []*unstructured.Unstructured) {
	cms := map[string]*unstructured.Unstructured{}
	for _, o := range objs {
		if o.GetKind() == "ConfigMap" && o.GetAPIVersion() == "v1" {
			cms[o.GetNamespace()+"/"+o.GetName()] = o
		}
	}
	for _, o := range objs {
		if o.GetKind() != "StatefulSet" {
			continue
		}
		vols, _, _ := unstructured.NestedSlice(o.Object, "spec", "template", "spec", "volumes")
		var names []string
		for _, v := range vols {
			if n, ok, _ := unstructured.NestedString(v.(map[string]any), "configMap", "name"); ok {
				names = append(names, n)
			}
		}
		if len(names) == 0 {
			continue
		}
		sort.Strings(names)
		h := sha256.New()
		for _, n := range names {
			cm := cms[o.GetNamespace()+"/"+n]
			if cm == nil {
				continue // not ours to hash (created by someone else)
			}
			data, _ := json.Marshal([]any{n, cm.Object["data"], cm.Object["binaryData"]})
			h.Write(data)
		}
		_ = unstructured.SetNestedField(o.Object, hex.EncodeToString(h.Sum(nil)), "spec", "template", "metadata", "annotations", ConfigHashAnnotation)
	}
}

// All flattens the layers in apply order.
func All(layers []Layer) []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	for _, l := range layers {
		out = append(out, l.Objects...)
	}
	return out
}
