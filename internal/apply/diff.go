package apply

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"

	"golang.org/x/sync/errgroup"
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
	// Err is why the object could not be compared (Outcome Failed): the
	// live read or the dry run failed, or the server refused the dry run.
	// ObjectResult.Error is its text; Err keeps the API status for callers
	// to judge (apierrors.IsForbidden, meta.IsNoMatchError, …).
	Err error `json:"-"`
}

// Diff asks the server what applying would produce (server-side apply with
// dryRun=All) and diffs it against the live object. Secret values are
// replaced by their SHA-256 so no key is ever printed. An object the server
// refuses to apply (a field another manager owns, a namespace that does not
// exist) is Failed with Error and Err, not an error of Diff. Diff fails when
// an object's live state cannot be read (the kind is not served, the read is
// forbidden, the server does not answer): it returns the first such error,
// and with it every object's diff, the unreadable ones Failed with Err.
// The server-side dry run needs get, list and patch on every object.
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
	var g errgroup.Group
	for i := range items {
		g.Go(func() error {
			if errs[i] == nil {
				out[i], errs[i] = diffOne(ctx, opts, items[i].layer, items[i].o, rcs[i], lives[i])
				return nil
			}
			d := ObjectDiff{ObjectResult: newResult(items[i].layer, items[i].o, Failed), Err: errs[i]}
			d.Error = errs[i].Error()
			out[i], errs[i] = d, fmt.Errorf("get %s: %w", d.Ref(), errs[i])
			return nil
		})
	}
	_ = g.Wait()
	for _, err := range errs {
		if err != nil {
			return out, err
		}
	}
	return out, nil
}

// diffOne asks for o's server-side dry-run apply and diffs it with live.
func diffOne(ctx context.Context, opts Options, layer string, o *unstructured.Unstructured, rc dynamic.ResourceInterface, live *unstructured.Unstructured) (ObjectDiff, error) {
	d := ObjectDiff{ObjectResult: newResult(layer, o, Failed)}
	data, err := json.Marshal(o.Object)
	if err != nil {
		d.Error, d.Err = err.Error(), err
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
		d.Error, d.Err, d.Conflicts = patchErr.Error(), patchErr, conflictsOf(patchErr)
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
