package main

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/spf13/pflag"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// TestKubeFlagsOnlyThree: of cli-runtime's ConfigFlags only --kubeconfig,
// --context and -n/--namespace are registered.
func TestKubeFlagsOnlyThree(t *testing.T) {
	fs := pflag.NewFlagSet("x", pflag.ContinueOnError)
	newKubeFlags().AddFlags(fs)
	var got []string
	fs.VisitAll(func(f *pflag.Flag) { got = append(got, f.Name) })
	if strings.Join(got, ",") != "context,kubeconfig,namespace" {
		t.Fatalf("registered flags %v, want context, kubeconfig, namespace", got)
	}
}

// TestKubeDiscoveryCachedOnDisk: discovery is cached where kubectl caches
// it ($KUBECACHEDIR/discovery/<server>), so a second command against the
// same server maps kinds without asking the server again; every request
// carries the client's own settings (its stop transport, by the wrap).
func TestKubeDiscoveryCachedOnDisk(t *testing.T) {
	var discoveries atomic.Int32
	srv := discoveryServer(t, &discoveries)
	dir := t.TempDir()
	kc := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(kc, []byte(kubeconfigFor(srv.URL, "token: test")), 0o600); err != nil {
		t.Fatal(err)
	}
	cache := filepath.Join(dir, "cache")
	t.Setenv("KUBECACHEDIR", cache)

	gvk := schema.GroupVersionKind{Version: "v1", Kind: "ConfigMap"}
	for run := 1; run <= 2; run++ {
		tg := kubeTargetFor(t, kc)
		m, err := tg.Mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			t.Fatalf("run %d: %v", run, err)
		}
		if m.Resource.Resource != "configmaps" {
			t.Fatalf("run %d: ConfigMap maps to %v", run, m.Resource)
		}
		if tg.Config.QPS != 100 || tg.Config.Burst != 200 {
			t.Errorf("run %d: client QPS %v burst %d, want 100 and 200", run, tg.Config.QPS, tg.Config.Burst)
		}
	}
	if n := discoveries.Load(); n != 1 {
		t.Errorf("the server was asked for discovery %d times in two runs, want 1 (the second from the disk cache)", n)
	}
	entries, err := os.ReadDir(filepath.Join(cache, "discovery"))
	if err != nil || len(entries) != 1 || !strings.HasPrefix(entries[0].Name(), "127.0.0.1_") {
		t.Errorf("discovery cache %s: %v %v, want one folder for the server", filepath.Join(cache, "discovery"), entries, err)
	}
}

// TestKubeDiscoveryNoHome: with neither HOME nor KUBECACHEDIR, discovery is
// cached in memory, not in ./.kube/cache of the working directory.
func TestKubeDiscoveryNoHome(t *testing.T) {
	srv := discoveryServer(t, nil)
	dir := t.TempDir()
	kc := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(kc, []byte(kubeconfigFor(srv.URL, "token: test")), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Chdir(dir)
	t.Setenv("HOME", "")
	t.Setenv("KUBECACHEDIR", "")
	tg := kubeTargetFor(t, kc)
	if _, err := tg.Mapper.RESTMapping(schema.GroupKind{Kind: "ConfigMap"}, "v1"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, ".kube")); !os.IsNotExist(err) {
		t.Errorf("discovery was cached in the working directory (%v)", err)
	}
}

// discoveryServer serves the discovery of one kind (ConfigMap, v1) and
// counts the requests for /api.
func discoveryServer(t *testing.T, discoveries *atomic.Int32) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		var v any
		switch r.URL.Path {
		case "/api":
			if discoveries != nil {
				discoveries.Add(1)
			}
			v = metav1.APIVersions{TypeMeta: metav1.TypeMeta{Kind: "APIVersions"}, Versions: []string{"v1"}}
		case "/apis":
			v = metav1.APIGroupList{TypeMeta: metav1.TypeMeta{Kind: "APIGroupList", APIVersion: "v1"}}
		case "/api/v1":
			v = metav1.APIResourceList{TypeMeta: metav1.TypeMeta{Kind: "APIResourceList"}, GroupVersion: "v1",
				APIResources: []metav1.APIResource{{Name: "configmaps", Namespaced: true, Kind: "ConfigMap", Verbs: []string{"get", "list", "patch"}}}}
		default:
			http.NotFound(w, r)
			return
		}
		_ = json.NewEncoder(w).Encode(v)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// kubeTargetFor parses --kubeconfig kc as a command would and connects.
func kubeTargetFor(t *testing.T, kc string) *kubeTarget {
	t.Helper()
	kf := newKubeFlags()
	fs := pflag.NewFlagSet("x", pflag.ContinueOnError)
	kf.AddFlags(fs)
	if err := fs.Parse([]string{"--kubeconfig", kc}); err != nil {
		t.Fatal(err)
	}
	tg, err := kf.Target(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return tg
}
