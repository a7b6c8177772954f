package rotate

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/spirepod/spirepod/internal/apply"
	"github.com/spirepod/spirepod/internal/city"
	"github.com/spirepod/spirepod/internal/pki"
	"github.com/spirepod/spirepod/internal/pr"
	"github.com/spirepod/spirepod/internal/project"
	"github.com/spirepod/spirepod/internal/scaffold"
	"github.com/spirepod/spirepod/scaffoldfs"
)

// The fakes of Run's ports keep real state, so a test reads the outcome
// rather than the calls: fakeCity is the city repository (its base branch's
// files, the open branches), fakeServer the SPIRE server (the trust list it
// last loaded, x509pop's signature check), fakeCluster the team's cluster
// (Secrets, cert-manager signing with whatever CA the issuer's Secret holds,
// pods, agents that attest only when the server trusts their leaf's CA).
// Every side effect is counted so a resumed rotation can be shown to repeat
// none.

// world is everything outside the scaffold a rotation meets.
type world struct {
	t       *testing.T
	p       *project.Project
	clock   *clock
	city    *fakeCity
	server  *fakeServer
	cluster *fakeCluster
	// events is the order of the cluster's and the server's side effects.
	mu     sync.Mutex
	events []string
}

func (w *world) event(format string, args ...any) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.events = append(w.events, fmt.Sprintf(format, args...))
}

// clock advances a second each time it is read, so step times are ordered.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(time.Second)
	return c.t
}

// newWorld renders a scaffold for team payments (3 pods, namespaced
// issuer, entry-json), makes its CA, and sets up what onboarding left: the
// city's trust list and registration file holding the CA, the SPIRE server
// trusting it, the issuer's CA Secret and every pod's agent certificate.
func newWorld(t *testing.T) *world {
	t.Helper()
	dir := t.TempDir()
	p := &project.Project{APIVersion: project.APIVersion, Kind: project.Kind, Team: "payments", Namespace: "payments",
		Environment: "dev", StatefulSet: "spire-envoy-integration", Replicas: 3, ServiceAccount: "httpbin-client",
		Naming: project.NamingNamespaced, IssuerScope: project.IssuerNamespaced,
		TrustDomain: "example.org", SpireServer: "spire.example.org:8081",
		City: project.City{Repo: "wp-wcm/city", BaseBranch: "main", TeamPath: "ns/{namespace}",
			TrustList: project.TrustList{Mode: project.TrustListBundle, Path: "spire/dev/agent-ca-bundle.pem"}},
		Registration: project.Registration{Format: project.FormatEntryJSON, EnvoyUID: 101},
		Paths:        project.DefaultPaths, Dir: dir}
	p.ApplyDefaults()
	files, err := scaffold.Render(scaffold.Options{Source: scaffoldfs.Scaffold(), Project: p})
	if err != nil {
		t.Fatal(err)
	}
	plan, err := scaffold.PlanWrite(dir, files)
	if err != nil {
		t.Fatal(err)
	}
	if err := plan.Write(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	ck := &clock{t: time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)}
	if _, err := pki.Generate(context.Background(), pki.GenerateOptions{CertPath: p.Path(p.Paths.CACert), KeyPath: p.Path(p.Paths.CAKey),
		KeyType: pki.KeyECP256, Validity: 400 * 24 * time.Hour, Subject: pki.DefaultSubject(p.Team), Rand: rand.Reader, Now: ck.Now}); err != nil {
		t.Fatal(err)
	}
	w := &world{t: t, p: p, clock: ck}
	w.city = &fakeCity{w: w, base: map[string][]byte{}, branches: map[string][]pr.File{}, opened: map[string]int{}}
	w.server = &fakeServer{w: w}
	w.cluster = &fakeCluster{w: w, secrets: map[string]*corev1.Secret{}, created: map[string]time.Time{},
		issued: map[string]int{}, restarts: map[string]int{}, attested: map[string]int{}}

	// Onboarding: `pr trust-ca` and `pr spiffe-id` merged, the server
	// reloaded, `spirepod apply` done and cert-manager issued every leaf.
	old := w.currentCA()
	fp := pki.SHA1Fingerprint(old.Cert)
	trust, _, err := pr.TrustCA(pr.TrustCAOptions{Project: p, CA: old.Cert, OwnerComment: city.OwnerComment(p.Team, p.Namespace, fp)})
	if err != nil {
		t.Fatal(err)
	}
	ids, _, err := pr.SpiffeID(pr.SpiffeIDOptions{Project: p, CA: old.Cert, Format: p.Registration.Format})
	if err != nil {
		t.Fatal(err)
	}
	for _, ch := range []*pr.Change{trust, ids} {
		fs, err := ch.Compute(context.Background(), w.city.read)
		if err != nil {
			t.Fatal(err)
		}
		w.city.write(fs)
	}
	w.server.reload()
	w.cluster.secrets[key(p.Namespace, p.Issuer().SecretName)] = w.renderedCASecret()
	for _, pod := range p.PodNames() {
		w.cluster.created[pod] = ck.Now()
		if _, err := w.cluster.sign(pod); err != nil {
			t.Fatal(err)
		}
	}
	w.cluster.issued = map[string]int{}
	return w
}

// currentCA is the scaffold's team CA with its key.
func (w *world) currentCA() *loaded {
	w.t.Helper()
	l, err := readCA(CurrentFiles(w.p), true)
	if err != nil || l == nil || l.Key == nil {
		w.t.Fatalf("the scaffold's CA: %v %v", l, err)
	}
	return l
}

// renderedCASecret is the issuer's CA Secret as certs/ renders it now.
func (w *world) renderedCASecret() *corev1.Secret {
	w.t.Helper()
	layers, err := apply.Build(w.p.Dir)
	if err != nil {
		w.t.Fatal(err)
	}
	ref := w.p.Issuer()
	for _, o := range apply.All(layers) {
		if o.GetKind() == "Secret" && o.GetNamespace() == ref.SecretNamespace && o.GetName() == ref.SecretName {
			s, err := toSecret(o)
			if err != nil {
				w.t.Fatal(err)
			}
			return s
		}
	}
	w.t.Fatalf("certs/ renders no Secret %s", ref.Secret())
	return nil
}

func toSecret(u *unstructured.Unstructured) (*corev1.Secret, error) {
	var s corev1.Secret
	err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &s)
	return &s, err
}

func key(ns, name string) string { return ns + "/" + name }

// options are Run's options wired to the world.
func (w *world) options() Options {
	return Options{Project: w.p, Now: w.clock.Now, Rand: rand.Reader, PRs: w.city, Probe: w.server.probe,
		Cluster: func(context.Context) (Cluster, error) { return w.cluster, nil }}
}

// --- the city repository ---

type fakeCity struct {
	w    *world
	mu   sync.Mutex
	base map[string][]byte
	// branches are the open pull requests' files, by branch; order the
	// branches in the order they were opened (pull request n is order[n-1]).
	branches map[string][]pr.File
	order    []string
	opened   map[string]int // Open calls that sent something, by branch
	inBase   int            // InBase calls
	// autoMerge merges every pull request as it opens (and autoReload on
	// the server reloads at each merge): a platform that answers at once.
	autoMerge bool
	// onInBase runs before each InBase answer (a merge while Run polls);
	// an error it returns is InBase's answer (GitHub failing).
	onInBase func(n int) error
}

func (c *fakeCity) read(_ context.Context, path string) ([]byte, bool, error) {
	b, ok := c.base[path]
	return b, ok, nil
}

func (c *fakeCity) write(files []pr.File) {
	for _, f := range files {
		if f.Delete {
			delete(c.base, f.Path)
			continue
		}
		c.base[f.Path] = f.New
	}
}

func (c *fakeCity) url(branch string) string {
	for i, b := range c.order {
		if b == branch {
			return fmt.Sprintf("https://github.example/wp-wcm/city/pull/%d", i+1)
		}
	}
	return ""
}

func (c *fakeCity) Open(ctx context.Context, ch *Change) (*pr.Result, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	res, err := pr.Plan(ctx, ch.Change, c.read, "main")
	if err != nil {
		return nil, err
	}
	if res.Action == pr.ActionInBase {
		return res, nil
	}
	files, err := ch.Compute(ctx, c.read)
	if err != nil {
		return nil, err
	}
	if _, ok := c.branches[ch.Branch]; !ok && c.url(ch.Branch) == "" {
		c.order = append(c.order, ch.Branch)
	}
	c.branches[ch.Branch] = files
	c.opened[ch.Branch]++
	res.Action, res.Branch, res.URL = pr.ActionCreated, ch.Branch, c.url(ch.Branch)
	fmt.Sscanf(res.URL[strings.LastIndex(res.URL, "/")+1:], "%d", &res.Number)
	if c.autoMerge {
		c.mergeLocked(ch.Branch)
	}
	return res, nil
}

func (c *fakeCity) InBase(ctx context.Context, ch *Change) (bool, error) {
	c.mu.Lock()
	c.inBase++
	n, hook := c.inBase, c.onInBase
	c.mu.Unlock()
	if hook != nil {
		if err := hook(n); err != nil {
			return false, err
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	res, err := pr.Plan(ctx, ch.Change, c.read, "main")
	if err != nil {
		return false, err
	}
	return res.Action == pr.ActionInBase, nil
}

// merge merges the open pull request of the branch whose name holds part.
func (c *fakeCity) merge(part string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for b := range c.branches {
		if strings.Contains(b, part) {
			c.mergeLocked(b)
			return
		}
	}
	c.w.t.Fatalf("no open pull request %q (open: %v)", part, c.openBranches())
}

func (c *fakeCity) mergeLocked(branch string) {
	c.write(c.branches[branch])
	delete(c.branches, branch)
	c.w.event("merge %s", branch)
	if c.w.server.autoReload {
		c.w.server.reloadLocked(c.base)
	}
}

func (c *fakeCity) openBranches() []string {
	var out []string
	for b := range c.branches {
		out = append(out, b)
	}
	sort.Strings(out)
	return out
}

// trusted are the CA fingerprints of the base branch's trust list.
func (c *fakeCity) trusted() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return fingerprints(c.base[c.w.p.City.TrustList.Path])
}

func fingerprints(pemData []byte) []string {
	certs, err := pki.ParseCertificates(pemData)
	if err != nil {
		return nil
	}
	var out []string
	for _, c := range certs {
		out = append(out, pki.SHA1Fingerprint(c))
	}
	sort.Strings(out)
	return out
}

// --- the SPIRE server ---

type fakeServer struct {
	w  *world
	mu sync.Mutex
	// trusted is the x509pop trust list as last loaded.
	trusted    []*x509.Certificate
	autoReload bool
	probes     int
	// lastChain is the chain of the last probe.
	lastChain []*x509.Certificate
	// down makes every probe unreachable.
	down bool
	// before runs ahead of probe n (1-based), outside the lock: a platform
	// that restarts the server between probes.
	before func(n int)
	calls  int
}

// reload loads the city's trust list (the platform reloading the server).
func (s *fakeServer) reload() {
	s.w.city.mu.Lock()
	defer s.w.city.mu.Unlock()
	s.reloadLocked(s.w.city.base)
}

func (s *fakeServer) reloadLocked(base map[string][]byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.trusted, _ = pki.ParseCertificates(base[s.w.p.City.TrustList.Path])
	s.w.event("reload")
}

func (s *fakeServer) trusts(leaf *x509.Certificate) bool {
	for _, ca := range s.trusted {
		if leaf.CheckSignatureFrom(ca) == nil {
			return true
		}
	}
	return false
}

// probe is x509pop's check: the chain's leaf signed by a trusted CA, and
// the key its own.
func (s *fakeServer) probe(_ context.Context, chain []*x509.Certificate, key crypto.Signer) (string, error) {
	if s.before != nil {
		s.calls++
		s.before(s.calls)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.probes++
	s.lastChain = chain
	if s.down {
		return "", &UnreachableError{Server: s.w.p.SpireServer, Err: errors.New("connection refused")}
	}
	if !pki.KeyMatches(chain[0], key) {
		return "", &RefusedError{Err: errors.New("x509pop: the challenge answer does not verify")}
	}
	if !s.trusts(chain[0]) {
		return "", &RefusedError{Err: errors.New("x509pop: certificate verification failed: x509: certificate signed by unknown authority")}
	}
	return agentID(s.w.p, chain[0]), nil
}

func agentID(p *project.Project, leaf *x509.Certificate) string {
	return "spiffe://" + p.TrustDomain + "/spire/agent/x509pop/" + pki.SHA1Fingerprint(leaf)
}

// --- the cluster ---

type fakeCluster struct {
	w       *world
	mu      sync.Mutex
	secrets map[string]*corev1.Secret
	// created is each pod's creation time.
	created map[string]time.Time
	// Counts of side effects.
	applied  int
	issued   map[string]int // leaves cert-manager signed, by pod
	restarts map[string]int // pods deleted, by pod
	attested map[string]int // agent attestations seen, by pod
	// issuerErr is WaitIssuer's answer.
	issuerErr error
	// afterDelete runs once a pod is deleted, before it is Ready again
	// (where an interrupt leaves a pod deleted and the step unfinished).
	afterDelete func(pod string)
}

var _ Cluster = (*fakeCluster)(nil)

func (c *fakeCluster) Name() string { return "kind-payments" }

func (c *fakeCluster) Secret(ctx context.Context, ns, name string) (*corev1.Secret, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	s, ok := c.secrets[key(ns, name)]
	if !ok {
		return nil, apierrors.NewNotFound(corev1.Resource("secrets"), name)
	}
	return s.DeepCopy(), nil
}

func (c *fakeCluster) ApplySecret(ctx context.Context, p *project.Project, u *unstructured.Unstructured) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
	s, err := toSecret(u)
	if err != nil {
		return "", err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	k := key(s.Namespace, s.Name)
	if have, ok := c.secrets[k]; ok && string(have.Data["tls.crt"]) == string(s.Data["tls.crt"]) && string(have.Data["tls.key"]) == string(s.Data["tls.key"]) {
		return string(apply.Unchanged), nil
	}
	c.secrets[k] = s
	c.applied++
	c.w.event("apply %s %s", k, caOf(s))
	return string(apply.Configured), nil
}

// caOf is the SHA-1 of the CA a CA Secret holds.
func caOf(s *corev1.Secret) string {
	certs, err := pki.ParseCertificates(s.Data["tls.crt"])
	if err != nil {
		return "none"
	}
	return pki.SHA1Fingerprint(certs[0])
}

func (c *fakeCluster) WaitIssuer(ctx context.Context, p *project.Project) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.w.event("issuer ready %s", caOf(c.secrets[key(p.Namespace, p.Issuer().SecretName)]))
	return c.issuerErr
}

// sign is cert-manager issuing pod's agent certificate with the CA the
// issuer's Secret holds.
func (c *fakeCluster) sign(pod string) (*x509.Certificate, error) {
	p := c.w.p
	ca := c.secrets[key(p.Namespace, p.Issuer().SecretName)]
	certs, err := pki.ParseCertificates(ca.Data["tls.crt"])
	if err != nil {
		return nil, err
	}
	caKey, err := pki.ParsePrivateKey(ca.Data["tls.key"])
	if err != nil {
		return nil, err
	}
	chain, _, err := ProbeLeaf(certs[0], caKey, p.Namespace, c.w.clock.Now(), rand.Reader) // any leaf of the CA will do
	if err != nil {
		return nil, err
	}
	c.secrets[key(p.Namespace, p.CertificateName(pod))] = &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: p.Namespace, Name: p.CertificateName(pod)},
		Data:       map[string][]byte{"tls.crt": pki.EncodeCertificate(chain[0])}}
	c.issued[pod]++
	return chain[0], nil
}

func (c *fakeCluster) Reissue(ctx context.Context, p *project.Project, pod string, newCA *x509.Certificate) (*x509.Certificate, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if l := leafOf(c.secrets[key(p.Namespace, p.CertificateName(pod))], newCA); l != nil {
		return l, nil
	}
	leaf, err := c.sign(pod)
	if err != nil {
		return nil, err
	}
	if leaf.CheckSignatureFrom(newCA) != nil {
		// The real one watches until its context ends.
		return nil, fmt.Errorf("Secret %s never held a certificate of the new CA (the issuer signs with %s)", p.CertificateName(pod),
			caOf(c.secrets[key(p.Namespace, p.Issuer().SecretName)]))
	}
	c.w.event("issue %s", pod)
	return leaf, nil
}

func (c *fakeCluster) RestartPod(ctx context.Context, p *project.Project, pod string, since time.Time) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c.mu.Lock()
	if c.created[pod].Before(since.Truncate(time.Second)) {
		c.created[pod] = c.w.clock.Now()
		c.restarts[pod]++
		c.w.event("restart %s", pod)
	}
	hook := c.afterDelete
	c.mu.Unlock()
	if hook != nil {
		hook(pod)
	}
	return ctx.Err() // the real one waits for Ready until ctx ends
}

// WaitAttested: the pod's agent attests with the leaf its Secret holds, and
// the server lets it only if it trusts the leaf's CA.
func (c *fakeCluster) WaitAttested(ctx context.Context, p *project.Project, pod string, leaf *x509.Certificate) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
	c.w.server.mu.Lock()
	ok := c.w.server.trusts(leaf)
	c.w.server.mu.Unlock()
	if !ok {
		return "", fmt.Errorf("the spire-agent of %s never logged an attestation with the new certificate", pod)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.attested[pod]++
	c.w.event("attest %s", pod)
	return fmt.Sprintf(`2026-03-02T09:00:00Z level=info msg="Node attestation was successful" spiffe_id="%s"`+"\n", agentID(p, leaf)), nil
}

// otherTeamCA makes a CA of another team (in a directory of its own).
func otherTeamCA(t *testing.T) *loaded {
	t.Helper()
	dir := t.TempDir()
	f := Files{Cert: filepath.Join(dir, "ca.crt.pem"), Key: filepath.Join(dir, "ca.key.pem")}
	if _, err := pki.Generate(context.Background(), pki.GenerateOptions{CertPath: f.Cert, KeyPath: f.Key, KeyType: pki.KeyECP256,
		Validity: 400 * 24 * time.Hour, Subject: pkix.Name{CommonName: "billing CA"}, Rand: rand.Reader, Now: time.Now}); err != nil {
		t.Fatal(err)
	}
	l, err := readCA(f, true)
	if err != nil {
		t.Fatal(err)
	}
	return l
}
