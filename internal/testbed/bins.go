package testbed

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Versions of the components, as pinned in hack/testbin.
const (
	EtcdVersion        = "v3.6.16"
	KubernetesVersion  = "v1.37.2"
	KwokVersion        = "v0.8.0"
	CertManagerVersion = "v1.21.2"
	SpireVersion       = "v1.13.3"
)

// Bins locates the binaries `make testbin` (hack/testbin.sh) built.
type Bins struct {
	Root string
}

// DefaultRoot is $SPIREPOD_TESTBIN, else the cache hack/testbin.sh uses.
func DefaultRoot() string {
	if r := os.Getenv("SPIREPOD_TESTBIN"); r != "" {
		return r
	}
	if r := os.Getenv("SPIREPOD_TESTBIN_CACHE"); r != "" {
		return r
	}
	base := os.Getenv("XDG_CACHE_HOME")
	if base == "" {
		home, _ := os.UserHomeDir()
		base = filepath.Join(home, ".cache")
	}
	return filepath.Join(base, "spirepod", "testbin")
}

func (b Bins) dir(component, version string) string {
	return filepath.Join(b.Root, component+"-"+version)
}

func (b Bins) Etcd() string { return filepath.Join(b.dir("etcd", EtcdVersion), "bin", "etcd") }
func (b Bins) Kube(name string) string {
	return filepath.Join(b.dir("kubernetes", KubernetesVersion), "bin", name)
}
func (b Bins) Kubectl() string    { return b.Kube("kubectl") }
func (b Bins) Kwok() string       { return filepath.Join(b.dir("kwok", KwokVersion), "bin", "kwok") }
func (b Bins) KwokStages() string { return filepath.Join(b.dir("kwok", KwokVersion), "stages") }
func (b Bins) KwokCRDs() string   { return filepath.Join(b.dir("kwok", KwokVersion), "crds") }
func (b Bins) CertManager() string {
	return filepath.Join(b.dir("certmanager", CertManagerVersion), "bin", "cert-manager-controller")
}
func (b Bins) CertManagerCRDs() string {
	return filepath.Join(b.dir("certmanager", CertManagerVersion), "crds")
}
func (b Bins) SpireServer() string {
	return filepath.Join(b.dir("spire", SpireVersion), "bin", "spire-server")
}
func (b Bins) SpireAgent() string {
	return filepath.Join(b.dir("spire", SpireVersion), "bin", "spire-agent")
}

// Missing lists the binaries that are not there.
func (b Bins) Missing(paths ...string) []string {
	var out []string
	for _, p := range paths {
		if st, err := os.Stat(p); err != nil || st.IsDir() {
			out = append(out, p)
		}
	}
	return out
}

// KubeSet is every binary a cluster with cert-manager needs.
func (b Bins) KubeSet() []string { return append(b.ControlPlaneSet(), b.CertManager()) }

// ControlPlaneSet is a cluster without cert-manager.
func (b Bins) ControlPlaneSet() []string {
	return []string{b.Etcd(), b.Kube("kube-apiserver"), b.Kube("kube-controller-manager"), b.Kube("kube-scheduler"),
		b.Kubectl(), b.Kwok()}
}

// SpireSet is the SPIRE binaries.
func (b Bins) SpireSet() []string { return []string{b.SpireServer(), b.SpireAgent()} }

// Require returns the binaries, or skips the test with a clear message when
// they are missing (or under -short). With SPIREPOD_REQUIRE_TESTBED=1, as
// `make test` sets, missing binaries fail the test instead.
//
// Pass the sets needed, e.g. Require(t, Bins.KubeSet, Bins.SpireSet); none means KubeSet.
func Require(t testing.TB, sets ...func(Bins) []string) Bins {
	t.Helper()
	b := Bins{Root: DefaultRoot()}
	if testing.Short() {
		t.Skip("test bed: skipped under -short")
	}
	var want []string
	if len(sets) == 0 {
		want = b.KubeSet()
	}
	for _, s := range sets {
		want = append(want, s(b)...)
	}
	if missing := b.Missing(want...); len(missing) > 0 {
		msg := fmt.Sprintf("test bed: %d binaries missing under %s (run `make testbin`): %s",
			len(missing), b.Root, strings.Join(missing, ", "))
		if os.Getenv("SPIREPOD_REQUIRE_TESTBED") == "1" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return b
}
