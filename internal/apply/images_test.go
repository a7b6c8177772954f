package apply_test

import (
	"context"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/spirepod/spirepod/internal/apply"
	"github.com/spirepod/spirepod/internal/checklist"
)

// anonymous is a keychain with no credentials, so that no test reads the
// docker config of the machine it runs on.
var anonymous = authn.NewMultiKeychain()

// startRegistry serves go-containerregistry's in-process registry on
// 127.0.0.1, behind wrap if given, and returns its host:port.
func startRegistry(t *testing.T, wrap func(http.Handler) http.Handler) string {
	t.Helper()
	var h http.Handler = registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	if wrap != nil {
		h = wrap(h)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

// pushImage pushes a random image as ref and returns its digest.
func pushImage(t *testing.T, ref string, opts ...remote.Option) v1.Hash {
	t.Helper()
	img, err := random.Image(256, 1)
	if err != nil {
		t.Fatal(err)
	}
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r, img, append(opts, remote.WithContext(t.Context()))...); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// container is a container (or init container) of a workload.
type container struct {
	name, image string
	init        bool
}

// workload builds a Pod (kind "Pod") or an apps/v1 kind with containers.
func workload(kind, name string, cs ...container) *unstructured.Unstructured {
	spec := map[string]any{}
	for _, c := range cs {
		field := "containers"
		if c.init {
			field = "initContainers"
		}
		list, _ := spec[field].([]any)
		spec[field] = append(list, map[string]any{"name": c.name, "image": c.image})
	}
	obj := map[string]any{"kind": kind, "metadata": map[string]any{"name": name}}
	if kind == "Pod" {
		obj["apiVersion"], obj["spec"] = "v1", spec
	} else {
		obj["apiVersion"], obj["spec"] = "apps/v1", map[string]any{"template": map[string]any{"spec": spec}}
	}
	return &unstructured.Unstructured{Object: obj}
}

// checkOne checks the single image of a StatefulSet's container "envoy" and
// returns its result, which must name the image.
func checkOne(t *testing.T, image string, o apply.ImageCheckOptions) checklist.Result {
	t.Helper()
	if o.Keychain == nil {
		o.Keychain = anonymous
	}
	rs := apply.CheckImages(t.Context(), []*unstructured.Unstructured{
		workload("StatefulSet", "web", container{name: "envoy", image: image}),
	}, o)
	if len(rs) != 1 {
		t.Fatalf("got %d results, want 1: %+v", len(rs), rs)
	}
	r := rs[0]
	t.Logf("%s: %s", r.Status, r.Message)
	if r.Group != "images" || !strings.Contains(r.Name, image) || !strings.Contains(r.Message, image) {
		t.Errorf("result does not name image %s in group images: %+v", image, r)
	}
	return r
}

func wantStatus(t *testing.T, r checklist.Result, want checklist.Status, in ...string) {
	t.Helper()
	if r.Status != want {
		t.Errorf("status %s, want %s: %+v", r.Status, want, r)
	}
	for _, s := range in {
		if !strings.Contains(r.Message, s) {
			t.Errorf("message %q does not contain %q", r.Message, s)
		}
	}
}

func wantFixHint(t *testing.T, r checklist.Result) {
	t.Helper()
	if !strings.Contains(r.Hint, "images:") || !strings.Contains(r.Hint, "--skip-image-check") {
		t.Errorf("hint %q does not point to images: and --skip-image-check", r.Hint)
	}
}

func TestImageCheckExistingTag(t *testing.T) {
	host := startRegistry(t, nil)
	d := pushImage(t, host+"/spire/agent:1.13.3")
	r := checkOne(t, host+"/spire/agent:1.13.3", apply.ImageCheckOptions{})
	wantStatus(t, r, checklist.OK, d.String(), "container envoy of StatefulSet/web")
}

func TestImageCheckMissingTag(t *testing.T) {
	host := startRegistry(t, nil)
	pushImage(t, host+"/bitnami/kubectl:latest")
	r := checkOne(t, host+"/bitnami/kubectl:1.31", apply.ImageCheckOptions{})
	wantStatus(t, r, checklist.Fail, "tag 1.31 not found", "MANIFEST_UNKNOWN", "container envoy of StatefulSet/web")
	wantFixHint(t, r)
}

func TestImageCheckMissingRepository(t *testing.T) {
	host := startRegistry(t, nil)
	pushImage(t, host+"/envoyproxy/envoy:v1.31.0")
	r := checkOne(t, host+"/envoyproxy/nothing:v1.31.0", apply.ImageCheckOptions{})
	wantStatus(t, r, checklist.Fail, "repository "+host+"/envoyproxy/nothing not found", "container envoy")
	wantFixHint(t, r)
}

func TestImageCheckDigest(t *testing.T) {
	host := startRegistry(t, nil)
	d := pushImage(t, host+"/curl:8")
	other, err := random.Image(256, 1) // never pushed
	if err != nil {
		t.Fatal(err)
	}
	missing, err := other.Digest()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, image string
		want        checklist.Status
	}{
		{"pinned", host + "/curl@" + d.String(), checklist.OK},
		{"tag and digest", host + "/curl:8@" + d.String(), checklist.OK},
		{"missing digest", host + "/curl@" + missing.String(), checklist.Fail},
		{"tag and missing digest", host + "/curl:8@" + missing.String(), checklist.Fail},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := checkOne(t, tc.image, apply.ImageCheckOptions{})
			if tc.want == checklist.OK {
				wantStatus(t, r, checklist.OK, "resolves to "+d.String())
				return
			}
			wantStatus(t, r, checklist.Fail, "digest "+missing.String()+" not found")
			wantFixHint(t, r)
		})
	}
}

// A registry that answers a digest with another manifest fails the check.
func TestImageCheckDigestMismatch(t *testing.T) {
	host := startRegistry(t, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if repo, _, ok := strings.Cut(r.URL.Path, "/manifests/sha256:"); ok && r.Method != http.MethodPut {
				r.URL.Path = repo + "/manifests/other"
			}
			h.ServeHTTP(w, r)
		})
	})
	pinned := pushImage(t, host+"/app:pinned")
	served := pushImage(t, host+"/app:other")
	r := checkOne(t, host+"/app@"+pinned.String(), apply.ImageCheckOptions{})
	wantStatus(t, r, checklist.Fail, "serves "+served.String())
	wantFixHint(t, r)
}

func TestImageCheckInvalidReference(t *testing.T) {
	r := checkOne(t, "Not/A Valid:ref", apply.ImageCheckOptions{})
	wantStatus(t, r, checklist.Fail, "not a valid image reference", "container envoy")
	wantFixHint(t, r)
}

func TestImageCheckUnreachableRegistry(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	host := l.Addr().String()
	l.Close() // nothing listens on host any more
	done := make(chan checklist.Result, 1)
	go func() {
		done <- checkOne(t, host+"/spire/agent:1.13.3", apply.ImageCheckOptions{Timeout: 5 * time.Second})
	}()
	select {
	case r := <-done:
		wantStatus(t, r, checklist.Warn, "could not be checked", "connection to "+host+" refused")
	case <-time.After(10 * time.Second):
		t.Fatal("the check of an unreachable registry did not return within 10s")
	}
}

// A registry host that does not resolve (an air-gapped or offline machine)
// is one DNS failure, said at once: neither retried with backoff (which
// cost `apply` about 9 s) nor asked again with GET.
func TestImageCheckUnresolvableRegistryNotRetried(t *testing.T) {
	var dials atomic.Int32
	tr := &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		dials.Add(1)
		host, _, _ := net.SplitHostPort(addr)
		return nil, &net.OpError{Op: "dial", Net: network, Err: &net.DNSError{Err: "server misbehaving", Name: host, IsTemporary: true}}
	}}
	r := checkOne(t, "registry.invalid/spire/agent:1.13.3", apply.ImageCheckOptions{Transport: tr})
	wantStatus(t, r, checklist.Warn, "could not be checked", "cannot resolve the registry host registry.invalid")
	if n := dials.Load(); n != 1 {
		t.Errorf("%d connection attempts to a host that does not resolve, want 1", n)
	}
}

func TestImageCheckRegistryTimeout(t *testing.T) {
	var hang atomic.Bool // once the image is pushed
	host := startRegistry(t, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if hang.Load() && strings.Contains(r.URL.Path, "/manifests/") {
				<-r.Context().Done() // answers nothing until the client gives up
				return
			}
			h.ServeHTTP(w, r)
		})
	})
	pushImage(t, host+"/slow:1")
	hang.Store(true)
	done := make(chan checklist.Result, 1)
	go func() {
		done <- checkOne(t, host+"/slow:1", apply.ImageCheckOptions{Timeout: 200 * time.Millisecond})
	}()
	select {
	case r := <-done:
		wantStatus(t, r, checklist.Warn, "could not be checked", "no answer from "+host+" within 200ms")
	case <-time.After(10 * time.Second):
		t.Fatal("the check of a registry that does not answer did not return within 10s")
	}
}

// A registry that does not answer HEAD is checked with GET.
func TestImageCheckHeadNotAllowed(t *testing.T) {
	var refuseHead atomic.Bool // once the image is pushed
	host := startRegistry(t, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodHead && refuseHead.Load() {
				w.WriteHeader(http.StatusMethodNotAllowed)
				return
			}
			h.ServeHTTP(w, r)
		})
	})
	d := pushImage(t, host+"/envoy:v1")
	refuseHead.Store(true)
	wantStatus(t, checkOne(t, host+"/envoy:v1", apply.ImageCheckOptions{}), checklist.OK, d.String())
	wantStatus(t, checkOne(t, host+"/envoy:v2", apply.ImageCheckOptions{}), checklist.Fail, "MANIFEST_UNKNOWN")
}

// staticKeychain hands out credentials by registry host.
type staticKeychain map[string]authn.AuthConfig

func (k staticKeychain) Resolve(r authn.Resource) (authn.Authenticator, error) {
	if c, ok := k[r.RegistryStr()]; ok {
		return authn.FromConfig(c), nil
	}
	return authn.Anonymous, nil
}

func TestImageCheckAuth(t *testing.T) {
	const user, pass = "team", "s3cret"
	host := startRegistry(t, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if u, p, ok := r.BasicAuth(); !ok || u != user || p != pass {
				w.Header().Set("WWW-Authenticate", `Basic realm="registry"`)
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusUnauthorized)
				io.WriteString(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`)
				return
			}
			h.ServeHTTP(w, r)
		})
	})
	image := host + "/private/agent:1.13.3"
	d := pushImage(t, image, remote.WithAuth(&authn.Basic{Username: user, Password: pass}))

	for _, tc := range []struct {
		name     string
		keychain authn.Keychain
		want     checklist.Status
	}{
		{"no credentials", anonymous, checklist.Warn},
		{"wrong credentials", staticKeychain{host: {Username: user, Password: "wrong"}}, checklist.Warn},
		{"keychain", authn.NewMultiKeychain(anonymous, staticKeychain{host: {Username: user, Password: pass}}), checklist.OK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := checkOne(t, image, apply.ImageCheckOptions{Keychain: tc.keychain})
			if tc.want == checklist.OK {
				wantStatus(t, r, checklist.OK, d.String())
				return
			}
			wantStatus(t, r, checklist.Warn, "could not be checked", "401 Unauthorized")
			if !strings.Contains(r.Hint, "docker login "+host) {
				t.Errorf("hint %q does not suggest docker login %s", r.Hint, host)
			}
		})
	}
}

// An image used by two containers is resolved once and names both; results
// come in order of first use whatever order the parallel checks end in.
func TestImageCheckSharedImage(t *testing.T) {
	var agentRequests atomic.Int32
	host := startRegistry(t, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if strings.Contains(r.URL.Path, "/spire/agent/manifests/") {
				agentRequests.Add(1)
			}
			h.ServeHTTP(w, r)
		})
	})
	agent, genCert := host+"/spire/agent:1.13.3", host+"/tools/gen-cert:1"
	pushImage(t, agent)
	pushImage(t, genCert)
	var images []string
	for _, tag := range []string{"a", "b", "c", "d", "e"} {
		pushImage(t, host+"/sidecar:"+tag)
		images = append(images, host+"/sidecar:"+tag)
	}
	objs := []*unstructured.Unstructured{
		workload("StatefulSet", "web",
			container{name: "gen-cert", image: genCert, init: true},
			container{name: "spire-agent", image: agent},
			container{name: "agent-copy", image: agent},
			container{name: "envoy", image: images[0]},
		),
		workload("Pod", "debug",
			container{name: "a", image: images[1]}, container{name: "b", image: images[2]},
			container{name: "c", image: images[3]}, container{name: "d", image: images[4]},
			container{name: "agent", image: agent}),
		{Object: map[string]any{"apiVersion": "v1", "kind": "ConfigMap", "metadata": map[string]any{"name": "cm"}}},
	}

	agentRequests.Store(0) // count the check's requests, not the pushes'
	rs := apply.CheckImages(t.Context(), objs, apply.ImageCheckOptions{Keychain: anonymous})
	want := append([]string{genCert, agent}, images...)
	if len(rs) != len(want) {
		t.Fatalf("got %d results, want %d: %+v", len(rs), len(want), rs)
	}
	for i, r := range rs {
		if r.ID != "image:"+want[i] || !strings.Contains(r.Message, want[i]) {
			t.Errorf("result %d is %s (%q), want image %s", i, r.ID, r.Message, want[i])
		}
		if r.Status != checklist.OK {
			t.Errorf("%s: status %s: %s", want[i], r.Status, r.Message)
		}
	}
	wantStatus(t, rs[0], checklist.OK, "container gen-cert of StatefulSet/web")
	wantStatus(t, rs[1], checklist.OK, "containers spire-agent, agent-copy of StatefulSet/web; container agent of Pod/debug")
	if n := agentRequests.Load(); n != 1 {
		t.Errorf("the shared image was requested %d times, want once", n)
	}
}

func TestImageCheckNoWorkloads(t *testing.T) {
	rs := apply.CheckImages(context.Background(), nil, apply.ImageCheckOptions{Keychain: anonymous})
	if len(rs) != 0 {
		t.Errorf("got %+v, want no results", rs)
	}
}
