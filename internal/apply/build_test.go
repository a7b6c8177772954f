package apply_test

import (
	"os"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/spirepod/spirepod/internal/apply"
)

// TestConfigHash: the StatefulSet's pod template carries the hash of the
// ConfigMaps its pods mount, so a change to one of them (and only that)
// changes the template and rolls the pods.
func TestConfigHash(t *testing.T) {
	p := newScaffold(t, "hash", 1)
	hash := func() string {
		t.Helper()
		objs, err := apply.BuildDir(p.Dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range objs {
			if o.GetKind() == "StatefulSet" {
				h, _, _ := unstructured.NestedString(o.Object, "spec", "template", "metadata", "annotations", apply.ConfigHashAnnotation)
				return h
			}
		}
		t.Fatal("no StatefulSet")
		return ""
	}
	first := hash()
	if len(first) != 64 {
		t.Fatalf("hash %q, want 64 hex digits", first)
	}
	if again := hash(); again != first {
		t.Fatalf("two builds of the same scaffold: %s then %s", first, again)
	}
	edit := func(file, old, new string) {
		t.Helper()
		b, err := os.ReadFile(p.Path(file))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), old) {
			t.Fatalf("%s has no %q", file, old)
		}
		if err := os.WriteFile(p.Path(file), []byte(strings.Replace(string(b), old, new, 1)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// A change outside every ConfigMap: same hash.
	edit("spire-envoy-integration.yaml", "cpu: 10m", "cpu: 11m")
	if h := hash(); h != first {
		t.Fatalf("a resources change moved the config hash")
	}
	// The Envoy config (a ConfigMap the pods mount): a new hash.
	edit("envoy-configmap.yaml", "8443", "9443")
	if h := hash(); h == first {
		t.Fatal("an Envoy config change left the config hash as it was")
	}
}
