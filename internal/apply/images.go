package apply

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"golang.org/x/sync/errgroup"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/spirepod/spirepod/internal/checklist"
)

// ImageCheckOptions are the inputs of CheckImages.
type ImageCheckOptions struct {
	// Keychain finds registry credentials (default authn.DefaultKeychain:
	// the user's docker config and credential helpers).
	Keychain authn.Keychain
	// Transport carries the registry requests (default remote.DefaultTransport).
	Transport http.RoundTripper
	// Timeout bounds the check of one image (default 10 s).
	Timeout time.Duration
}

// imageCheckJobs is how many images are checked at a time.
const imageCheckJobs = 4

const imageHint = "fix `images:` in spirepod.yaml (or the profile's override), or pass --skip-image-check"

// podSpecPaths are where each workload kind keeps its pod spec.
var podSpecPaths = map[schema.GroupKind][]string{
	{Kind: "Pod"}:                        {"spec"},
	{Group: "apps", Kind: "StatefulSet"}: {"spec", "template", "spec"},
	{Group: "apps", Kind: "Deployment"}:  {"spec", "template", "spec"},
	{Group: "apps", Kind: "DaemonSet"}:   {"spec", "template", "spec"},
	{Group: "apps", Kind: "ReplicaSet"}:  {"spec", "template", "spec"},
	{Group: "batch", Kind: "Job"}:        {"spec", "template", "spec"},
	{Group: "batch", Kind: "CronJob"}:    {"spec", "jobTemplate", "spec", "template", "spec"},
}

// CheckImages resolves every container and init container image of the
// objects' pod templates in its registry, before anything is applied. It
// returns one result per distinct image, in order of first use: Fail when
// the reference is invalid or the registry says the image does not exist,
// Warn when the image could not be checked (registry unreachable, slow, or
// refusing the credentials), OK with the digest the image resolves to.
func CheckImages(ctx context.Context, objs []*unstructured.Unstructured, o ImageCheckOptions) []checklist.Result {
	if o.Keychain == nil {
		o.Keychain = authn.DefaultKeychain
	}
	if o.Transport == nil {
		o.Transport = remote.DefaultTransport
	}
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
	imgs := podImages(objs)
	out := make([]checklist.Result, len(imgs))
	var g errgroup.Group
	g.SetLimit(imageCheckJobs)
	for i, img := range imgs {
		g.Go(func() error {
			out[i] = checkImage(ctx, img, o)
			return nil // a failure is a check result
		})
	}
	_ = g.Wait()
	return out
}

// podImage is one image and who uses it.
type podImage struct {
	ref   string
	users []imageUser
}

// imageUser is an object and those of its containers that use an image.
type imageUser struct {
	object     string // Kind/name
	containers []string
}

func podImages(objs []*unstructured.Unstructured) []*podImage {
	var imgs []*podImage
	byRef := map[string]*podImage{}
	for _, obj := range objs {
		path, ok := podSpecPaths[obj.GroupVersionKind().GroupKind()]
		if !ok {
			continue
		}
		object := obj.GetKind() + "/" + obj.GetName()
		for _, field := range []string{"initContainers", "containers"} {
			cs, _, _ := unstructured.NestedSlice(obj.Object, slices.Concat(path, []string{field})...)
			for _, c := range cs {
				c, _ := c.(map[string]any)
				ref, _ := c["image"].(string)
				container, _ := c["name"].(string)
				img := byRef[ref]
				if img == nil {
					img = &podImage{ref: ref}
					byRef[ref] = img
					imgs = append(imgs, img)
				}
				if n := len(img.users); n > 0 && img.users[n-1].object == object {
					img.users[n-1].containers = append(img.users[n-1].containers, container)
				} else {
					img.users = append(img.users, imageUser{object: object, containers: []string{container}})
				}
			}
		}
	}
	return imgs
}

// usedBy reads "used by containers envoy, curl of StatefulSet/web".
func (img *podImage) usedBy() string {
	parts := make([]string, len(img.users))
	for i, u := range img.users {
		noun := "container"
		if len(u.containers) > 1 {
			noun = "containers"
		}
		parts[i] = fmt.Sprintf("%s %s of %s", noun, strings.Join(u.containers, ", "), u.object)
	}
	return "used by " + strings.Join(parts, "; ")
}

func checkImage(ctx context.Context, img *podImage, o ImageCheckOptions) checklist.Result {
	r := checklist.Result{Group: "images", ID: "image:" + img.ref, Name: fmt.Sprintf("image %s exists", img.ref)}
	ref, err := name.ParseReference(img.ref)
	if err != nil {
		r.Status, r.Hint = checklist.Fail, imageHint
		r.Message = fmt.Sprintf("%q is not a valid image reference (%s): %v", img.ref, img.usedBy(), err)
		return r
	}
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	got, err := resolve(ctx, ref, o)
	switch d, pinned := ref.(name.Digest); {
	case err != nil:
		var reason string
		r.Status, reason = classify(err, ref, o.Timeout)
		if r.Status == checklist.Fail {
			r.Message = fmt.Sprintf("%s does not exist: %s (%s)", img.ref, reason, img.usedBy())
			r.Hint = imageHint
			return r
		}
		r.Message = fmt.Sprintf("%s could not be checked: %s (%s)", img.ref, reason, img.usedBy())
		var terr *transport.Error
		if errors.As(err, &terr) && (terr.StatusCode == http.StatusUnauthorized || terr.StatusCode == http.StatusForbidden) {
			r.Hint = fmt.Sprintf("`docker login %s` lets spirepod check it; to an anonymous client a private and a missing repository look alike",
				ref.Context().RegistryStr())
		}
	case pinned && got.String() != d.DigestStr():
		r.Status, r.Hint = checklist.Fail, imageHint
		r.Message = fmt.Sprintf("%s does not exist: the registry serves %s for digest %s (%s)", img.ref, got, d.DigestStr(), img.usedBy())
	default:
		r.Status = checklist.OK
		r.Message = fmt.Sprintf("%s resolves to %s (%s)", img.ref, got, img.usedBy())
	}
	return r
}

// unpinned hides that a reference is a name.Digest: remote rejects a
// digest mismatch with an untyped error, and checkImage compares itself.
type unpinned struct{ name.Reference }

// resolve returns the digest of ref's manifest: HEAD, then GET for
// registries that do not answer HEAD, and for the error code a HEAD
// response cannot carry.
func resolve(ctx context.Context, ref name.Reference, o ImageCheckOptions) (v1.Hash, error) {
	opts := []remote.Option{remote.WithContext(ctx), remote.WithAuthFromKeychain(o.Keychain), remote.WithTransport(o.Transport),
		remote.WithRetryPredicate(retryable)}
	desc, err := remote.Head(unpinned{ref}, opts...)
	if err == nil {
		return desc.Digest, nil
	}
	// GET only when the registry answered HEAD: a host that does not
	// resolve or answer fails GET the same way.
	var terr *transport.Error
	if ctx.Err() != nil || !errors.As(err, &terr) {
		return v1.Hash{}, err
	}
	got, err := remote.Get(unpinned{ref}, opts...)
	if err != nil {
		return v1.Hash{}, err
	}
	return got.Digest, nil
}

// retryable is go-containerregistry's default retry predicate (v0.20,
// remote/options.go: temporary errors, EOFs, EPIPE, ECONNRESET, a closed
// connection) without the errors another try cannot fix within one check: a
// registry host that does not resolve, refuses the connection or has no
// route. Retried, those cost about 4 s per request (its backoff is 1 s then
// 3 s) and end as the same warning; `apply` on a machine that cannot reach
// the registry (air-gapped, offline) waited about 9 s for it.
func retryable(err error) bool {
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ENETUNREACH) || errors.Is(err, syscall.EHOSTUNREACH) {
		return false
	}
	var tmp interface{ Temporary() bool }
	if errors.As(err, &tmp) && tmp.Temporary() && !errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	return errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) || errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, net.ErrClosed)
}

// classify says whether err means the image does not exist (Fail) or could
// not be checked (Warn), and why.
func classify(err error, ref name.Reference, timeout time.Duration) (checklist.Status, string) {
	registry := ref.Context().RegistryStr()
	var (
		terr   *transport.Error
		dnsErr *net.DNSError
		netErr net.Error
	)
	switch {
	case errors.As(err, &terr):
		return classifyResponse(terr, ref)
	case errors.As(err, &dnsErr):
		return checklist.Warn, fmt.Sprintf("cannot resolve the registry host %s (%s)", dnsErr.Name, dnsErr.Err)
	case errors.Is(err, syscall.ECONNREFUSED):
		return checklist.Warn, fmt.Sprintf("connection to %s refused", registry)
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &netErr) && netErr.Timeout():
		return checklist.Warn, fmt.Sprintf("no answer from %s within %s", registry, timeout)
	case errors.Is(err, context.Canceled):
		return checklist.Warn, "interrupted"
	}
	return checklist.Warn, err.Error()
}

func classifyResponse(e *transport.Error, ref name.Reference) (checklist.Status, string) {
	status := fmt.Sprintf("%d %s", e.StatusCode, http.StatusText(e.StatusCode))
	identifier := "tag " + ref.Identifier()
	if _, ok := ref.(name.Digest); ok {
		identifier = "digest " + ref.Identifier()
	}
	switch {
	case e.StatusCode == http.StatusUnauthorized || hasCode(e, transport.UnauthorizedErrorCode):
		return checklist.Warn, fmt.Sprintf("%s answered %s: no credentials it accepts in your docker config", ref.Context().RegistryStr(), status)
	case e.StatusCode == http.StatusForbidden || hasCode(e, transport.DeniedErrorCode):
		return checklist.Warn, fmt.Sprintf("%s answered %s: the credentials may not pull %s", ref.Context().RegistryStr(), status, ref.Context())
	case hasCode(e, transport.NameUnknownErrorCode):
		return checklist.Fail, fmt.Sprintf("repository %s not found (NAME_UNKNOWN)", ref.Context())
	case hasCode(e, transport.ManifestUnknownErrorCode):
		return checklist.Fail, fmt.Sprintf("%s not found in %s (MANIFEST_UNKNOWN)", identifier, ref.Context())
	case e.StatusCode == http.StatusNotFound:
		return checklist.Fail, fmt.Sprintf("%s not found in %s (%s)", identifier, ref.Context(), status)
	}
	return checklist.Warn, e.Error()
}

func hasCode(e *transport.Error, code transport.ErrorCode) bool {
	return slices.ContainsFunc(e.Errors, func(d transport.Diagnostic) bool { return d.Code == code })
}
