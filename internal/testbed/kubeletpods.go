package testbed

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
)

// PodListServer stands in for the one kubelet endpoint kwok does not serve:
// GET /pods, which SPIRE's k8s workload attestor reads to turn a caller's
// container into k8s: selectors. It serves, over TLS on 127.0.0.1, the pods
// the real apiserver has bound to one node, exactly as stored there, and it
// authenticates and authorizes the caller the way a kubelet in webhook mode
// does: TokenReview of the bearer token, then a SubjectAccessReview for
// get nodes/proxy on that node, both decided by the real apiserver.
type PodListServer struct {
	Port int
	Node string

	srv *http.Server
	mu  sync.Mutex
	// codes counts the HTTP status codes answered.
	codes map[int]int
}

// StartPodListServer serves node's pods on a free 127.0.0.1 port, with a
// self-signed certificate (the attestor runs with skip_kubelet_verification).
func (c *Cluster) StartPodListServer(node string) (*PodListServer, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	ca := newCA("testbed-kubelet-ca")
	leaf := ca.issue(node, nil, true)
	pair, err := tls.X509KeyPair(leaf.CertPEM, leaf.KeyPEM)
	if err != nil {
		ln.Close()
		return nil, err
	}
	s := &PodListServer{Port: ln.Addr().(*net.TCPAddr).Port, Node: node, codes: map[int]int{}}
	s.srv = &http.Server{
		Handler:           http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { s.serve(c, w, r) }),
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12},
		ReadHeaderTimeout: 5 * time.Second,
	}
	go func() { _ = s.srv.ServeTLS(ln, "", "") }()
	return s, nil
}

func (s *PodListServer) answer(w http.ResponseWriter, code int, msg string) {
	s.mu.Lock()
	s.codes[code]++
	s.mu.Unlock()
	if code != http.StatusOK {
		http.Error(w, msg, code)
	}
}

func (s *PodListServer) serve(c *Cluster, w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/pods" && r.URL.Path != "/pods/" {
		s.answer(w, http.StatusNotFound, "only /pods is served")
		return
	}
	ctx := r.Context()
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || token == "" {
		s.answer(w, http.StatusUnauthorized, "Unauthorized")
		return
	}
	tr, err := c.Client.AuthenticationV1().TokenReviews().Create(ctx, &authenticationv1.TokenReview{Spec: authenticationv1.TokenReviewSpec{Token: token}}, metav1.CreateOptions{})
	if err != nil || !tr.Status.Authenticated {
		s.answer(w, http.StatusUnauthorized, "Unauthorized")
		return
	}
	u := tr.Status.User
	extra := map[string]authorizationv1.ExtraValue{}
	for k, v := range u.Extra {
		extra[k] = authorizationv1.ExtraValue(v)
	}
	sar, err := c.Client.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
		User: u.Username, UID: u.UID, Groups: u.Groups, Extra: extra,
		ResourceAttributes: &authorizationv1.ResourceAttributes{Verb: "get", Resource: "nodes", Subresource: "proxy", Name: s.Node},
	}}, metav1.CreateOptions{})
	if err != nil || !sar.Status.Allowed {
		s.answer(w, http.StatusForbidden, fmt.Sprintf("Forbidden (user=%s, verb=get, resource=nodes, subresource=proxy)", u.Username))
		return
	}
	pods, err := c.Client.CoreV1().Pods("").List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=" + s.Node})
	if err != nil {
		s.answer(w, http.StatusInternalServerError, err.Error())
		return
	}
	pods.Kind, pods.APIVersion = "PodList", "v1"
	w.Header().Set("Content-Type", "application/json")
	s.answer(w, http.StatusOK, "")
	_ = json.NewEncoder(w).Encode(pods)
}

// Answered returns how many requests got each HTTP status code.
func (s *PodListServer) Answered() map[int]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[int]int, len(s.codes))
	for k, v := range s.codes {
		out[k] = v
	}
	return out
}

// Close stops serving.
func (s *PodListServer) Close() { _ = s.srv.Close() }

// NewContainerID returns a random 64-hex-digit container ID, the form
// container runtimes use and SPIRE's container locator looks for.
func NewContainerID() string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

// SetContainerID records, in the pod's status in the apiserver, the runtime
// ID of one of its containers ("containerd://<id>"), as a kubelet does once
// the container runs (kwok leaves it empty).
func (c *Cluster) SetContainerID(ctx context.Context, ns, pod, container, id string) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		p, err := c.Client.CoreV1().Pods(ns).Get(ctx, pod, metav1.GetOptions{})
		if err != nil {
			return err
		}
		found := false
		for i := range p.Status.ContainerStatuses {
			if p.Status.ContainerStatuses[i].Name == container {
				p.Status.ContainerStatuses[i].ContainerID = "containerd://" + id
				found = true
			}
		}
		if !found {
			return fmt.Errorf("pod %s/%s has no status for container %s", ns, pod, container)
		}
		_, err = c.Client.CoreV1().Pods(ns).UpdateStatus(ctx, p, metav1.UpdateOptions{})
		return err
	})
}

// ContainerCgroup is a cgroup whose path names a pod UID and a container ID
// (.../pod<uid>/<container id>), as the kubelet's cgroup layout does, so
// that SPIRE's container locator attributes the processes in it to that
// container. It lives in the pids hierarchy (cgroup v1) or the unified one.
type ContainerCgroup struct {
	PodUID, ContainerID string
	// Dir is the cgroup directory; Procs its cgroup.procs file.
	Dir, Procs string
	top        string
}

// NewContainerCgroup creates the cgroup under a fresh top directory.
func NewContainerCgroup(podUID, containerID string) (*ContainerCgroup, error) {
	var base string
	for _, b := range []string{"/sys/fs/cgroup/pids", "/sys/fs/cgroup/unified", "/sys/fs/cgroup"} {
		if _, err := os.Stat(filepath.Join(b, "cgroup.procs")); err == nil {
			base = b
			break
		}
	}
	if base == "" {
		return nil, errors.New("no writable cgroup hierarchy (pids or unified) under /sys/fs/cgroup")
	}
	top := filepath.Join(base, "spirepod-testbed-"+NewContainerID()[:12])
	dir := filepath.Join(top, "kubepods", "besteffort", "pod"+podUID, containerID)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("cgroup %s: %w", dir, err)
	}
	return &ContainerCgroup{PodUID: podUID, ContainerID: containerID, Dir: dir, Procs: filepath.Join(dir, "cgroup.procs"), top: top}, nil
}

// Command runs bin with args inside the cgroup as uid:gid: a root shell
// moves itself into the cgroup, then setpriv drops to the uid and execs bin.
func (cg *ContainerCgroup) Command(ctx context.Context, uid, gid int, bin string, args ...string) *exec.Cmd {
	// sh -c SCRIPT procs uid gid bin args...: $0 is procs; after shift 2, "$@" is bin and its args.
	const script = `procs=$0; uid=$1; gid=$2; shift 2; echo $$ > "$procs" && exec setpriv --reuid="$uid" --regid="$gid" --clear-groups -- "$@"`
	return exec.CommandContext(ctx, "/bin/sh", append([]string{"-c", script, cg.Procs, fmt.Sprint(uid), fmt.Sprint(gid), bin}, args...)...)
}

// Remove deletes the cgroup directories (they must hold no process).
func (cg *ContainerCgroup) Remove() error {
	var errs []error
	for d := cg.Dir; strings.HasPrefix(d, cg.top); d = filepath.Dir(d) {
		if err := os.Remove(d); err != nil && !os.IsNotExist(err) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// PodUIDOf returns a pod's UID.
func (c *Cluster) PodUIDOf(ctx context.Context, ns, name string) (string, error) {
	p, err := c.Client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return "", err
	}
	return string(p.UID), nil
}
