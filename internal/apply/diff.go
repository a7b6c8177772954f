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
	// Every object's read and dry-run apply are independent: all at once,
	// one round trip to a remote API server.
	out := make([]ObjectDiff, len(items))
	errs := make([]error, len(items))
	parallel(len(items), func(i int) { out[i], errs[i] = diffOne(ctx, opts, items[i].layer, items[i].o) })
	for i, err := range errs {
		if err != nil {
			return out[:i], err
		}
	}
	return out, nil
}

// diffOne reads o's live object and its server-side dry-run apply, together.
func diffOne(ctx context.Context, opts Options, layer string, o *unstructured.Unstructured) (ObjectDiff, error) {
	d := ObjectDiff{ObjectResult: newResult(layer, o, Failed)}
	var rc dynamic.ResourceInterface
	if err := retryOp(ctx, opts, func() error {
		var err error
		rc, err = resourceFor(opts, o)
		return err
	}); err != nil {
		return d, err
	}
	data, err := json.Marshal(o.Object)
	if err != nil {
		return d, err
	}
	var live, want *unstructured.Unstructured
	var getErr, patchErr error
	parallel(2, func(k int) {
		if k == 0 {
			getErr = retryOp(ctx, opts, func() error {
				var err error
				live, err = rc.Get(ctx, o.GetName(), metav1.GetOptions{})
				if apierrors.IsNotFound(err) {
					live, err = nil, nil
				}
				return err
			})
			return
		}
		patchErr = retryOp(ctx, opts, func() error {
			var err error
			want, err = rc.Patch(ctx, o.GetName(), types.ApplyPatchType, data, metav1.PatchOptions{
				FieldManager: opts.FieldManager, Force: &opts.ForceConflicts, DryRun: []string{metav1.DryRunAll}})
			return err
		})
	})
	if getErr != nil {
		return d, fmt.Errorf("get %s: %w", d.Ref(), getErr)
	}
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
