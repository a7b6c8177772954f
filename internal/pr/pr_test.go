package pr_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-github/v60/github"

	"github.com/spirepod/spirepod/internal/checklist"
	"github.com/spirepod/spirepod/internal/fakes/githubfake"
	"github.com/spirepod/spirepod/internal/pki"
	"github.com/spirepod/spirepod/internal/pr"
	"github.com/spirepod/spirepod/internal/project"
	"github.com/spirepod/spirepod/internal/registration"
)

const (
	cityRepo   = "wp-wcm/city"
	bundlePath = "ns/spire/server/dev/x509pop/agent-ca-bundle.pem"
	token      = "test-token"
)

// genCA makes a CA certificate at run time; its key never leaves memory
// except when a test asks for it to check the private-key guard.
func genCA(t testing.TB, cn string) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn, Organization: []string{"spirepod test"}},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(365 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kd, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kd})
}

func testProject(mode string) *project.Project {
	p := &project.Project{
		APIVersion: project.APIVersion, Kind: project.Kind, Team: "payments", Namespace: "payments",
		Environment: "dev", StatefulSet: "spire-envoy-integration", Replicas: 3, ServiceAccount: "httpbin-client",
		TrustDomain: "spire.cityos-dev.woven-planet.tech", SpireServer: "spire-server:8081",
		City: project.City{Repo: cityRepo, BaseBranch: "main", TeamPath: "ns/{namespace}/spire-envoy-integration",
			TrustList: project.TrustList{Mode: mode, Path: bundlePath}},
		Naming: project.NamingNamespaced, IssuerScope: project.IssuerNamespaced,
		Registration: project.Registration{Format: project.FormatSpiffeID, EnvoyUID: 101},
		Paths:        project.DefaultPaths,
	}
	if mode == project.TrustListDirectory {
		p.City.TrustList.Path = "ns/spire/server/dev/x509pop/cas"
	}
	p.ApplyDefaults()
	return p
}

type env struct {
	t      *testing.T
	fake   *githubfake.Server
	sleeps []time.Duration
	mu     sync.Mutex
}

func newEnv(t *testing.T, push bool, files map[string]string) *env {
	t.Helper()
	f := githubfake.New("alice", token)
	t.Cleanup(f.Close)
	if files == nil {
		files = map[string]string{"README.md": "city\n"}
	}
	if _, err := f.AddRepo(cityRepo, push, "main", files); err != nil {
		t.Fatal(err)
	}
	return &env{t: t, fake: f}
}

func (e *env) opts() pr.GitHubOptions {
	return pr.GitHubOptions{HTTPClient: &http.Client{Timeout: 10 * time.Second}, BaseURL: e.fake.URL, Token: token,
		Repo: cityRepo, Base: "main", Sleep: func(_ context.Context, d time.Duration) error {
			e.mu.Lock()
			e.sleeps = append(e.sleeps, d)
			e.mu.Unlock()
			return nil
		}}
}

func trustCA(t *testing.T, p *project.Project, certPEM []byte) *pr.Change {
	t.Helper()
	ch, _, err := pr.TrustCA(pr.TrustCAOptions{Project: p, CA: mustCert(t, certPEM)})
	if err != nil {
		t.Fatal(err)
	}
	return ch
}

func (e *env) open(ch *pr.Change) *pr.Result {
	e.t.Helper()
	e.fake.ResetRequests()
	res, err := pr.Open(context.Background(), ch, e.opts())
	if err != nil {
		e.t.Fatalf("Open: %v\nrequests: %v", err, e.fake.RequestLog())
	}
	if res.Requests != e.fake.Requests() {
		e.t.Errorf("result says %d requests, the server counted %d: %v", res.Requests, e.fake.Requests(), e.fake.RequestLog())
	}
	return res
}

// changedFiles compares two refs of the fake's repository.
func changedFiles(t *testing.T, f *githubfake.Server, repo, from, to string) map[string][2]string {
	t.Helper()
	a, err := f.Files(repo, from)
	if err != nil {
		t.Fatal(err)
	}
	b, err := f.Files(repo, to)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][2]string{}
	for p, v := range b {
		if a[p] != v {
			out[p] = [2]string{a[p], v}
		}
	}
	for p, v := range a {
		if _, ok := b[p]; !ok {
			out[p] = [2]string{v, ""}
		}
	}
	return out
}

func TestTrustCABundle(t *testing.T) {
	otherCA, _ := genCA(t, "other team CA")
	e := newEnv(t, true, map[string]string{"README.md": "city\n", bundlePath: string(otherCA)})
	ca, _ := genCA(t, "payments CA")
	p := testProject(project.TrustListBundle)
	branch := "spirepod/payments/trust-ca"

	res := e.open(trustCA(t, p, ca))
	if res.Action != pr.ActionCreated || res.URL == "" {
		t.Fatalf("first run: %+v", res)
	}
	if res.Requests > 7 {
		t.Errorf("first run took %d requests, want <= 7: %v", res.Requests, e.fake.RequestLog())
	}
	t.Logf("trust-ca first run: %d requests: %v", res.Requests, e.fake.RequestLog())
	diff := changedFiles(t, e.fake, cityRepo, "main", branch)
	if len(diff) != 1 {
		t.Fatalf("the branch changes %d files, want exactly the bundle: %v", len(diff), diff)
	}
	got := diff[bundlePath]
	if got[1] != got[0]+string(ca) {
		t.Errorf("bundle on the branch is not the old bundle plus exactly the CA PEM:\n%s", got[1])
	}
	pulls := e.fake.Pulls(cityRepo)
	if len(pulls) != 1 || pulls[0].Title != "Add payments CA certificate to trust list" {
		t.Fatalf("pulls: %+v", pulls)
	}
	sum := pki.SHA1Fingerprint(mustCert(t, ca))
	for _, want := range []string{"payments", "SHA-256", sum, "restarted", "ca_bundle_path"} {
		if !strings.Contains(pulls[0].Body, want) {
			t.Errorf("PR body lacks %q", want)
		}
	}

	// Re-run: nothing new, same URL.
	again := e.open(trustCA(t, p, ca))
	if again.Action != pr.ActionUnchanged || again.URL != res.URL {
		t.Errorf("re-run: %+v", again)
	}
	t.Logf("trust-ca re-run: %d requests: %v", again.Requests, e.fake.RequestLog())
	if n := len(e.fake.Pulls(cityRepo)); n != 1 {
		t.Errorf("re-run opened a pull request: %d", n)
	}
	for _, r := range e.fake.RequestLog() {
		if !strings.HasPrefix(r, "GET ") {
			t.Errorf("re-run wrote: %s", r)
		}
	}

	// New content (a rotated CA): a new commit on the branch, PR body updated.
	oldHead := e.fake.Ref(cityRepo, branch)
	ca2, _ := genCA(t, "payments CA 2")
	upd := e.open(trustCA(t, p, ca2))
	if upd.Action != pr.ActionUpdated || upd.URL != res.URL {
		t.Fatalf("new content: %+v", upd)
	}
	parents, _ := e.fake.CommitParents(cityRepo, e.fake.Ref(cityRepo, branch))
	if len(parents) != 1 || parents[0] != oldHead {
		t.Errorf("new commit's parents %v, want the old head %s", parents, oldHead)
	}
	if b := e.fake.Pulls(cityRepo)[0].Body; !strings.Contains(b, pki.SHA1Fingerprint(mustCert(t, ca2))) {
		t.Errorf("PR body not updated")
	}

	// The base moved (another team's CA merged): the branch is rebuilt on it.
	thirdCA, _ := genCA(t, "third team CA")
	files, _ := e.fake.Files(cityRepo, "main")
	if _, err := e.fake.Commit(cityRepo, "main", map[string]string{bundlePath: files[bundlePath] + string(thirdCA)}, "add third"); err != nil {
		t.Fatal(err)
	}
	reb := e.open(trustCA(t, p, ca2))
	if reb.Action != pr.ActionRebuilt {
		t.Fatalf("base moved: %+v", reb)
	}
	parents, _ = e.fake.CommitParents(cityRepo, e.fake.Ref(cityRepo, branch))
	if len(parents) != 1 || parents[0] != e.fake.Ref(cityRepo, "main") {
		t.Errorf("rebuilt commit's parent %v, want the new base", parents)
	}
	diff = changedFiles(t, e.fake, cityRepo, "main", branch)
	if len(diff) != 1 || diff[bundlePath][1] != diff[bundlePath][0]+string(ca2) {
		t.Errorf("rebuilt branch diff: %v", diff)
	}

	// Merge: the base now contains the change; nothing is opened.
	if _, err := e.fake.Merge(cityRepo, 1); err != nil {
		t.Fatal(err)
	}
	merged, _ := e.fake.Files(cityRepo, "main")
	if !strings.Contains(merged[bundlePath], string(ca2)) || !strings.Contains(merged[bundlePath], string(thirdCA)) {
		t.Errorf("merged bundle lacks a CA")
	}
	in := e.open(trustCA(t, p, ca2))
	if in.Action != pr.ActionInBase || in.URL != "" {
		t.Errorf("after merge: %+v", in)
	}
	if n := len(e.fake.Pulls(cityRepo)); n != 1 {
		t.Errorf("after merge, %d pulls", n)
	}

	st, err := pr.Status(context.Background(), "payments", e.opts())
	if err != nil {
		t.Fatal(err)
	}
	if st.Pulls[0].State != "merged" || st.Pulls[1].State != "none" {
		t.Errorf("status: %+v", st.Pulls)
	}
}

func mustCert(t *testing.T, b []byte) *x509.Certificate {
	t.Helper()
	c, err := pki.ParseCertificates(b)
	if err != nil {
		t.Fatal(err)
	}
	return c[0]
}

func TestTrustCABundleMissingFile(t *testing.T) {
	e := newEnv(t, true, nil)
	ca, _ := genCA(t, "payments CA")
	res := e.open(trustCA(t, testProject(project.TrustListBundle), ca))
	if res.Action != pr.ActionCreated || res.Requests > 7 {
		t.Fatalf("%+v", res)
	}
	diff := changedFiles(t, e.fake, cityRepo, "main", "spirepod/payments/trust-ca")
	if len(diff) != 1 || diff[bundlePath][1] != string(ca) {
		t.Errorf("diff: %v", diff)
	}
}

func TestTrustCADirectory(t *testing.T) {
	dir := "ns/spire/server/dev/x509pop/cas"
	e := newEnv(t, true, map[string]string{dir + "/kustomization.yaml": "# trust list\nconfigMapGenerator:\n- name: x509pop-cas\n  files:\n  - other.crt.pem\n", dir + "/other.crt.pem": "x"})
	ca, _ := genCA(t, "payments CA")
	p := testProject(project.TrustListDirectory)
	res := e.open(trustCA(t, p, ca))
	if res.Action != pr.ActionCreated || res.Requests > 7 {
		t.Fatalf("%+v (%v)", res, e.fake.RequestLog())
	}
	t.Logf("trust-ca directory first run: %d requests", res.Requests)
	files, _ := e.fake.Files(cityRepo, "spirepod/payments/trust-ca")
	if files[dir+"/payments.crt.pem"] != string(ca) {
		t.Errorf("cert file: %q", files[dir+"/payments.crt.pem"])
	}
	k := files[dir+"/kustomization.yaml"]
	if strings.Count(k, "payments.crt.pem") != 1 || !strings.Contains(k, "other.crt.pem") || !strings.Contains(k, "# trust list") {
		t.Errorf("kustomization:\n%s", k)
	}
	if again := e.open(trustCA(t, p, ca)); again.Action != pr.ActionUnchanged {
		t.Errorf("re-run: %+v", again)
	}
}

func TestForkPath(t *testing.T) {
	e := newEnv(t, false, nil)
	e.fake.ForkPolls = 2
	ca, _ := genCA(t, "payments CA")
	p := testProject(project.TrustListBundle)
	res := e.open(trustCA(t, p, ca))
	if res.Action != pr.ActionCreated || res.HeadRepo != "alice/city" {
		t.Fatalf("%+v", res)
	}
	t.Logf("fork path first run: %d requests", res.Requests)
	pulls := e.fake.Pulls(cityRepo)
	if len(pulls) != 1 || pulls[0].HeadRepo.FullName() != "alice/city" {
		t.Fatalf("pulls: %+v", pulls)
	}
	if e.fake.Ref(cityRepo, "spirepod/payments/trust-ca") != "" {
		t.Errorf("the branch was made in the upstream repository")
	}
	if again := e.open(trustCA(t, p, ca)); again.Action != pr.ActionUnchanged || again.URL != res.URL {
		t.Errorf("fork re-run: %+v", again)
	}
	if _, err := e.fake.Merge(cityRepo, 1); err != nil {
		t.Fatal(err)
	}
	files, _ := e.fake.Files(cityRepo, "main")
	if files[bundlePath] != string(ca) {
		t.Errorf("merged tree: %v", files)
	}
}

func TestFaults(t *testing.T) {
	ca, _ := genCA(t, "payments CA")
	p := testProject(project.TrustListBundle)
	cases := []struct {
		name   string
		fault  *githubfake.Fault
		token  string
		repo   string
		status int
		perm   string
	}{
		{name: "401", token: "wrong", status: 401},
		{name: "403 tree", fault: &githubfake.Fault{Method: "POST", Path: "/git/trees", Status: 403, Message: "Resource not accessible by personal access token"}, status: 403, perm: "contents:write"},
		{name: "403 pulls", fault: &githubfake.Fault{Method: "POST", Path: "/pulls", Status: 403, Message: "Resource not accessible by personal access token"}, status: 403, perm: "pull_requests:write"},
		{name: "404 repo", repo: "wp-wcm/nope", status: 404},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, true, nil)
			if tc.fault != nil {
				e.fake.Inject(tc.fault)
			}
			o := e.opts()
			if tc.token != "" {
				o.Token = tc.token
			}
			if tc.repo != "" {
				o.Repo = tc.repo
			}
			_, err := pr.Open(context.Background(), trustCA(t, p, ca), o)
			var ae *pr.APIError
			if !errors.As(err, &ae) {
				t.Fatalf("got %v, want an APIError", err)
			}
			if ae.Status != tc.status || ae.Permission != tc.perm || ae.Hint == "" {
				t.Errorf("got %+v", ae)
			}
			if strings.Contains(err.Error(), token) || strings.Contains(ae.Hint, token) {
				t.Errorf("the token leaked into the error")
			}
		})
	}

	t.Run("5xx then success", func(t *testing.T) {
		e := newEnv(t, true, nil)
		e.fake.Inject(&githubfake.Fault{Method: "POST", Path: "/git/commits", Status: 502, Times: 2})
		res := e.open(trustCA(t, p, ca))
		if res.Action != pr.ActionCreated || res.Requests != 9 || len(e.sleeps) != 2 || e.sleeps[1] <= e.sleeps[0] {
			t.Errorf("%+v sleeps %v", res, e.sleeps)
		}
	})
	t.Run("rate limit with reset", func(t *testing.T) {
		e := newEnv(t, true, nil)
		e.fake.Inject(&githubfake.Fault{Path: "/branches/", RateLimitReset: 30 * time.Second})
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		res, err := pr.Open(ctx, trustCA(t, p, ca), e.opts())
		if err != nil || res.Action != pr.ActionCreated {
			t.Fatalf("%v %+v", err, res)
		}
		if len(e.sleeps) != 1 || e.sleeps[0] < 25*time.Second || e.sleeps[0] > 35*time.Second {
			t.Errorf("slept %v, want about the 30s to the reset", e.sleeps)
		}
	})
	t.Run("rate limit past the deadline", func(t *testing.T) {
		e := newEnv(t, true, nil)
		e.fake.Inject(&githubfake.Fault{Path: "/branches/", RateLimitReset: time.Hour})
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err := pr.Open(ctx, trustCA(t, p, ca), e.opts())
		var ae *pr.APIError
		if !errors.As(err, &ae) || !strings.Contains(ae.Hint, "rate limit") || len(e.sleeps) != 0 {
			t.Errorf("got %v (sleeps %v)", err, e.sleeps)
		}
	})
	t.Run("422 pull request already exists", func(t *testing.T) {
		e := newEnv(t, true, nil)
		e.fake.Inject(&githubfake.Fault{Method: "POST", Path: "/pulls", Before: func(s *githubfake.Server) {
			s.OpenPullLocked(cityRepo, "spirepod/payments/trust-ca", "main", "by hand", "old body")
		}, Status: 422, Message: "Validation Failed", Errors: []string{"A pull request already exists for wp-wcm:spirepod/payments/trust-ca."}})
		res := e.open(trustCA(t, p, ca))
		pulls := e.fake.Pulls(cityRepo)
		if res.URL == "" || len(pulls) != 1 || !strings.Contains(pulls[0].Body, "Reviewer checklist") {
			t.Errorf("%+v %+v", res, pulls)
		}
	})
	t.Run("422 on a moved ref", func(t *testing.T) {
		e := newEnv(t, true, nil)
		e.open(trustCA(t, p, ca))
		ca2, _ := genCA(t, "payments CA 2")
		e.fake.Inject(&githubfake.Fault{Method: "PATCH", Path: "/git/refs/", Status: 422, Message: "Update is not a fast forward"})
		res := e.open(trustCA(t, p, ca2))
		if res.Action != pr.ActionUpdated {
			t.Errorf("%+v", res)
		}
		files, _ := e.fake.Files(cityRepo, "spirepod/payments/trust-ca")
		if files[bundlePath] != string(ca2) {
			t.Errorf("bundle: %q", files[bundlePath])
		}
	})
	t.Run("409 and base moved mid-flight", func(t *testing.T) {
		e := newEnv(t, true, nil)
		e.fake.Inject(&githubfake.Fault{Method: "POST", Path: "/git/refs", Status: 409, Message: "Reference update failed", Before: func(s *githubfake.Server) {
			s.CommitLocked(cityRepo, "main", map[string]string{"other.txt": "x\n"})
		}})
		res := e.open(trustCA(t, p, ca))
		if res.Action != pr.ActionCreated || res.BaseSHA != e.fake.Ref(cityRepo, "main") {
			t.Errorf("%+v", res)
		}
	})
}

func TestPrivateKeyRefused(t *testing.T) {
	e := newEnv(t, true, nil)
	ca, key := genCA(t, "payments CA")
	p := testProject(project.TrustListBundle)
	// The last guard (pki.LoadTeamCA refuses a key in the CA file before this):: a change whose computed content holds a key.
	ch := trustCA(t, p, ca)
	ch.Compute = func(context.Context, pr.ReadFunc) ([]pr.File, error) {
		return []pr.File{{Path: "x.pem", New: key}}, nil
	}
	e.fake.ResetRequests()
	_, err := pr.Open(context.Background(), ch, e.opts())
	if !errors.Is(err, pr.ErrPrivateKey) {
		t.Fatalf("guard: %v", err)
	}
	for _, r := range e.fake.RequestLog() {
		if !strings.HasPrefix(r, "GET ") {
			t.Errorf("sent %s before refusing", r)
		}
	}
}

func TestInspectRefuses(t *testing.T) {
	ca, _ := genCA(t, "payments CA")
	_, _, err := pr.TrustCA(pr.TrustCAOptions{Project: testProject(project.TrustListBundle), CA: mustCert(t, ca),
		Inspect: []checklist.Result{{ID: "ku", Name: "key usage", Status: checklist.Fail, Message: "no keyCertSign"}}})
	if err == nil || !strings.Contains(err.Error(), "fails pki inspect") {
		t.Fatalf("got %v", err)
	}
}

func TestSpiffeIDFormats(t *testing.T) {
	ca, _ := genCA(t, "payments CA")
	cert := mustCert(t, ca)
	fp := pki.SHA1Fingerprint(cert)
	// spiffeid is refused (the registrar cannot express x509pop aliases):
	// TestSpiffeIDFormatRefused.
	for _, format := range []string{project.FormatEntryJSON, project.FormatClusterStaticEntry} {
		t.Run(format, func(t *testing.T) {
			e := newEnv(t, true, map[string]string{"ns/payments/spire-envoy-integration/kustomization.yaml": "resources:\n- statefulset.yaml\n"})
			p := testProject(project.TrustListBundle)
			p.Registration.ClassName = "agora"
			ch, es, err := pr.SpiffeID(pr.SpiffeIDOptions{Project: p, CA: cert, Format: format})
			if err != nil {
				t.Fatal(err)
			}
			if len(es) != 6 {
				t.Fatalf("%d entries", len(es))
			}
			res := e.open(ch)
			t.Logf("spiffe-id %s first run: %d requests", format, res.Requests)
			files, _ := e.fake.Files(cityRepo, "spirepod/payments/spiffe-id")
			dir := "ns/payments/spire-envoy-integration/"
			body := files[dir+registration.File(format)]
			if body == "" {
				t.Fatalf("no registration file: %v", files)
			}
			switch format {
			case project.FormatEntryJSON:
				var doc struct {
					Entries []struct {
						SpiffeID  string `json:"spiffe_id"`
						ParentID  string `json:"parent_id"`
						Selectors []struct{ Type, Value string }
					}
				}
				if err := json.Unmarshal([]byte(body), &doc); err != nil {
					t.Fatal(err)
				}
				aliases := 0
				for _, en := range doc.Entries {
					if en.ParentID == "spiffe://spire.cityos-dev.woven-planet.tech/spire/server" {
						aliases++
						if len(en.Selectors) != 2 || en.Selectors[1].Type != "x509pop" || en.Selectors[1].Value != "ca:fingerprint:"+fp {
							t.Errorf("alias selectors %+v", en.Selectors)
						}
					} else if !strings.HasPrefix(en.ParentID, "spiffe://spire.cityos-dev.woven-planet.tech/ns/payments/spire-agent-x509pop-spire-envoy-integration-") ||
						en.SpiffeID != "spiffe://spire.cityos-dev.woven-planet.tech/ns/payments/sa/httpbin-client" {
						t.Errorf("workload entry %+v", en)
					}
				}
				if aliases != 3 || len(doc.Entries) != 6 {
					t.Errorf("%d aliases of %d entries", aliases, len(doc.Entries))
				}
				if files[dir+"kustomization.yaml"] != "resources:\n- statefulset.yaml\n" {
					t.Errorf("entry-json touched the kustomization")
				}
			case project.FormatSpiffeID:
				if strings.Count(body, "kind: SpiffeID") != 6 || strings.Count(body, "namespace: payments") != 12 {
					t.Errorf("SpiffeIDs:\n%s", body)
				}
				if len(ch.Warnings) == 0 {
					t.Errorf("no warning about the upstream registrar")
				}
			case project.FormatClusterStaticEntry:
				if strings.Count(body, "kind: ClusterStaticEntry") != 6 || strings.Count(body, "className: agora") != 6 || strings.Contains(body, "namespace:") {
					t.Errorf("ClusterStaticEntries:\n%s", body)
				}
			}
			if format != project.FormatEntryJSON {
				k := files[dir+"kustomization.yaml"]
				if strings.Count(k, "spiffe-ids.yaml") != 1 || !strings.Contains(k, "statefulset.yaml") {
					t.Errorf("kustomization:\n%s", k)
				}
			}
			again := e.open(ch)
			if again.Action != pr.ActionUnchanged {
				t.Errorf("re-run: %+v", again)
			}
			t.Logf("spiffe-id %s re-run: %d requests", format, again.Requests)
		})
	}
}

func TestSpiffeIDFormatRefused(t *testing.T) {
	ca, _ := genCA(t, "payments CA")
	p := testProject(project.TrustListBundle)
	_, _, err := pr.SpiffeID(pr.SpiffeIDOptions{Project: p, CA: mustCert(t, ca), Format: project.FormatSpiffeID})
	var ve *pr.ValidationError
	if !errors.As(err, &ve) || !strings.Contains(err.Error(), registration.CodeRegistrarRewrites) {
		t.Fatalf("spiffeid: %v, want a ValidationError with %s", err, registration.CodeRegistrarRewrites)
	}
	// cluster-static-entry without className, unless the controller is classless
	_, _, err = pr.SpiffeID(pr.SpiffeIDOptions{Project: p, CA: mustCert(t, ca), Format: project.FormatClusterStaticEntry})
	if !errors.As(err, &ve) || !strings.Contains(err.Error(), registration.CodeNoClassName) {
		t.Fatalf("cluster-static-entry without className: %v", err)
	}
	p.Registration.WatchClassless = true
	if _, _, err = pr.SpiffeID(pr.SpiffeIDOptions{Project: p, CA: mustCert(t, ca), Format: project.FormatClusterStaticEntry}); err != nil {
		t.Fatalf("classless controller: %v", err)
	}
}

// TestSpiffeIDSwitchFormat: switching --format leaves exactly one format's
// file in the branch, and the kustomization lists only what exists.
func TestSpiffeIDSwitchFormat(t *testing.T) {
	e := newEnv(t, true, map[string]string{"ns/payments/spire-envoy-integration/kustomization.yaml": "resources:\n- statefulset.yaml\n"})
	ca, _ := genCA(t, "payments CA")
	p := testProject(project.TrustListBundle)
	p.Registration.ClassName = "agora"
	dir := "ns/payments/spire-envoy-integration/"
	open := func(format string) map[string]string {
		ch, _, err := pr.SpiffeID(pr.SpiffeIDOptions{Project: p, CA: mustCert(t, ca), Format: format})
		if err != nil {
			t.Fatal(err)
		}
		e.open(ch)
		files, err := e.fake.Files(cityRepo, "spirepod/payments/spiffe-id")
		if err != nil {
			t.Fatal(err)
		}
		return files
	}
	files := open(project.FormatClusterStaticEntry)
	if _, ok := files[dir+"spiffe-ids.yaml"]; !ok || !strings.Contains(files[dir+"kustomization.yaml"], "- spiffe-ids.yaml") {
		t.Fatalf("first run: %v", keysOf(files))
	}
	files = open(project.FormatEntryJSON)
	if _, ok := files[dir+"spiffe-ids.yaml"]; ok {
		t.Errorf("switching to entry-json left spiffe-ids.yaml in the branch")
	}
	if _, ok := files[dir+"spiffe-ids.json"]; !ok {
		t.Errorf("no spiffe-ids.json after switching")
	}
	if k := files[dir+"kustomization.yaml"]; strings.Contains(k, "spiffe-ids") || !strings.Contains(k, "statefulset.yaml") {
		t.Errorf("kustomization after switching:\n%s", k)
	}
	files = open(project.FormatClusterStaticEntry)
	if _, ok := files[dir+"spiffe-ids.json"]; ok {
		t.Errorf("switching back left spiffe-ids.json")
	}
}

func keysOf(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func TestStatusChecks(t *testing.T) {
	e := newEnv(t, true, nil)
	ca, _ := genCA(t, "payments CA")
	res := e.open(trustCA(t, testProject(project.TrustListBundle), ca))
	e.fake.SetCheckRuns(cityRepo, res.Commit,
		&github.CheckRun{Name: github.String("lint"), Status: github.String("completed"), Conclusion: github.String("success")},
		&github.CheckRun{Name: github.String("test"), Status: github.String("in_progress")})
	st, err := pr.Status(context.Background(), "payments", e.opts())
	if err != nil {
		t.Fatal(err)
	}
	got := st.Pulls[0]
	if got.State != "open" || got.Checks != "pending" || got.ChecksPassed != 1 || got.ChecksPending != 1 || got.URL != res.URL {
		t.Errorf("%+v", got)
	}
}

// TestStatusConditional: polling a pull request's state (what `spirepod up`
// does while it waits on a review) with one Conditional sends conditional
// requests: while nothing changes every request is a 304, which GitHub does
// not count against the rate limit; a change (the merge) is seen at once.
func TestStatusConditional(t *testing.T) {
	e := newEnv(t, true, nil)
	ca, _ := genCA(t, "payments CA")
	res := e.open(trustCA(t, testProject(project.TrustListBundle), ca))
	cond := &pr.Conditional{}
	o := e.opts()
	o.Conditional = cond
	first, err := pr.Status(context.Background(), "payments", o)
	if err != nil || first.Pulls[0].State != "open" {
		t.Fatalf("%v %+v", err, first)
	}
	if cond.Hits() != 0 {
		t.Fatalf("hits %d on the first call", cond.Hits())
	}
	again, err := pr.Status(context.Background(), "payments", o)
	if err != nil || again.Pulls[0].State != "open" || again.Pulls[0].URL != res.URL {
		t.Fatalf("%v %+v", err, again)
	}
	if cond.Hits() != again.Requests || again.Requests == 0 {
		t.Fatalf("second poll: %d of %d requests answered 304", cond.Hits(), again.Requests)
	}
	if _, err := e.fake.Merge(cityRepo, prNumberOf(t, res.URL)); err != nil {
		t.Fatal(err)
	}
	merged, err := pr.Status(context.Background(), "payments", o)
	if err != nil || merged.Pulls[0].State != "merged" {
		t.Fatalf("after the merge: %v %+v", err, merged)
	}
}

func prNumberOf(t *testing.T, url string) int {
	t.Helper()
	i := strings.LastIndex(url, "/")
	n, err := strconv.Atoi(url[i+1:])
	if err != nil {
		t.Fatalf("PR URL %q: %v", url, err)
	}
	return n
}
