package apply

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"sigs.k8s.io/yaml"

	"github.com/spirepod/spirepod/internal/unidiff"
)

// ObjectDiff is live versus desired for one object.
type ObjectDiff struct {
	ObjectResult
	Diff string `json:"diff,omitempty"`
}

// Diff asks the server what applying would produce (server-side apply with
// dryRun=All) and diffs it against the live object. Secret values are
// replaced by their SHA-256 so no key is ever printed.
func Diff(ctx context.Context, opts Options) ([]ObjectDiff, error) {
	type item struct {
		layer string
		o     *unstructured.Unstructured
	}
	var items []item
	for _, layer := range opts.Layers {
		for _, o := range layer.Objects {
			items = append(items, item{layer.Name, o})
		}
	}
	// The live objects in a few Lists; every dry-run apply at once, one
	// round trip to a remote API server.
	objs := make([]*unstructured.Unstructured, len(items))
	for i, it := range items {
		objs[i] = it.o
	}
	rcs, lives, errs := readAllLive(ctx, opts, objs)
	out := make([]ObjectDiff, len(items))
	parallel(len(items), func(i int) {
		if errs[i] == nil {
			out[i], errs[i] = diffOne(ctx, opts, items[i].layer, items[i].o, rcs[i], lives[i])
		} else {
			out[i] = ObjectDiff{ObjectResult: newResult(items[i].layer, items[i].o, Failed)}
			errs[i] = fmt.Errorf("get %s: %w", out[i].Ref(), errs[i])
		}
	})
	for i, err := range errs {
		if err != nil {
			return out[:i], err
		}
	}
	return out, nil
}

// diffOne asks for o's server-side dry-run apply and diffs it with live.
func diffOne(ctx context.Context, opts Options, layer string, o *unstructured.Unstructured, rc dynamic.ResourceInterface, live *unstructured.Unstructured) (ObjectDiff, error) {
	d := ObjectDiff{ObjectResult: newResult(layer, o, Failed)}
	data, err := json.Marshal(o.Object)
	if err != nil {
		return d, err
	}
	var want *unstructured.Unstructured
	patchErr := retryOp(ctx, opts, func() error {
		var err error
		want, err = rc.Patch(ctx, o.GetName(), types.ApplyPatchType, data, metav1.PatchOptions{
			FieldManager: opts.FieldManager, Force: &opts.ForceConflicts, DryRun: []string{metav1.DryRunAll}})
		return err
	})
	if patchErr != nil {
		d.Error, d.Conflicts = patchErr.Error(), conflictsOf(patchErr)
		return d, nil
	}
	a, b := renderForDiff(live), renderForDiff(want)
	switch {
	case live == nil:
		d.Outcome = Created
	case a == b:
		d.Outcome = Unchanged
	default:
		d.Outcome = Configured
	}
	d.Diff = unidiff.Diff(unidiff.Side{Name: "live/" + d.Ref(), Text: []byte(a), Exists: live != nil},
		unidiff.Side{Name: "desired/" + d.Ref(), Text: []byte(b), Exists: true})
	return d, nil
}

func renderForDiff(o *unstructured.Unstructured) string {
	if o == nil {
		return ""
	}
	m := Clean(o)
	if o.GetKind() == "Secret" {
		masked := &unstructured.Unstructured{Object: m}
		for _, field := range []string{"data", "stringData"} {
			vals, _, _ := unstructured.NestedStringMap(m, field)
			for k, v := range vals {
				sum := sha256.Sum256([]byte(v))
				vals[k] = fmt.Sprintf("(hidden: %d bytes, sha256 %s)", len(v), hex.EncodeToString(sum[:8]))
			}
			if vals != nil {
				_ = unstructured.SetNestedStringMap(m, vals, field)
			}
		}
		ann := masked.GetAnnotations()
		if _, ok := ann["kubectl.kubernetes.io/last-applied-configuration"]; ok {
			ann["kubectl.kubernetes.io/last-applied-configuration"] = "(hidden: may hold secret data)"
			masked.SetAnnotations(ann)
		}
	}
	b, err := yaml.Marshal(m)
	if err != nil {
		return fmt.Sprintf("(cannot render: %v)", err)
	}
	return string(b)
}
