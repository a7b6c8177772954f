package apply

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
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
	var out []ObjectDiff
	for _, layer := range opts.Layers {
		for _, o := range layer.Objects {
			d := ObjectDiff{ObjectResult: newResult(layer.Name, o, Failed)}
			rc, err := resourceFor(opts, o)
			if err != nil {
				return out, err
			}
			var live *unstructured.Unstructured
			err = retryOp(ctx, opts, func() error {
				live, err = rc.Get(ctx, o.GetName(), metav1.GetOptions{})
				if apierrors.IsNotFound(err) {
					live, err = nil, nil
				}
				return err
			})
			if err != nil {
				return out, fmt.Errorf("get %s: %w", d.Ref(), err)
			}
			data, err := json.Marshal(o.Object)
			if err != nil {
				return out, err
			}
			var want *unstructured.Unstructured
			err = retryOp(ctx, opts, func() error {
				want, err = rc.Patch(ctx, o.GetName(), types.ApplyPatchType, data, metav1.PatchOptions{
					FieldManager: opts.FieldManager, Force: &opts.ForceConflicts, DryRun: []string{metav1.DryRunAll}})
				return err
			})
			if err != nil {
				d.Error, d.Conflicts = err.Error(), conflictsOf(err)
				out = append(out, d)
				continue
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
			out = append(out, d)
		}
	}
	return out, nil
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
