// Package apply builds a scaffold's two kustomizations in-process and
// applies them with server-side apply, in dependency order, then waits for
// the ClusterIssuer and the StatefulSet's pods.
package apply

import (
	"fmt"
	"path/filepath"

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

// BuildDir runs kustomize on one directory.
func BuildDir(dir string) ([]*unstructured.Unstructured, error) {
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
	return out, nil
}

// All flattens the layers in apply order.
func All(layers []Layer) []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	for _, l := range layers {
		out = append(out, l.Objects...)
	}
	return out
}
