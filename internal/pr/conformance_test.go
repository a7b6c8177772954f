package pr_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spirepod/spirepod/internal/fakes/githubfake"
	"github.com/spirepod/spirepod/internal/fakes/githubfake/conformance"
	"github.com/spirepod/spirepod/internal/pr"
	"github.com/spirepod/spirepod/internal/project"
)

// TestMain judges every exchange with the fake GitHub that this package's
// tests cause (spirepod's requests and the fake's answers) against GitHub's
// published descriptions: a request or answer that does not conform fails
// the run, naming it. See internal/fakes/githubfake/conformance.
func TestMain(m *testing.M) {
	os.Exit(conformance.Main(m, "internal/pr"))
}

// mutatingTransport edits spirepod's requests on the wire: a test-only
// mutation proving the conformance checks catch a request GitHub does not
// document.
type mutatingTransport struct {
	body  *strings.Replacer
	query *strings.Replacer
}

func (m *mutatingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	r := req.Clone(req.Context())
	if req.Body != nil {
		b, err := io.ReadAll(req.Body)
		if err != nil {
			return nil, err
		}
		b = []byte(m.body.Replace(string(b)))
		r.Body, r.ContentLength = io.NopCloser(bytes.NewReader(b)), int64(len(b))
	}
	r.URL.RawQuery = m.query.Replace(r.URL.RawQuery)
	return http.DefaultTransport.RoundTrip(r)
}

// TestConformanceCatchesMutations: the checks that judge this package's
// GitHub traffic can fail. Deliberately wrong requests (an undocumented
// tree-entry mode, an undocumented state filter, a misspelt GraphQL field)
// and wrong answers (a git ref without its sha, a 201 without Location) are
// each reported. The fake is exempt from the package-wide judging in
// TestMain: this test judges its traffic itself.
func TestConformanceCatchesMutations(t *testing.T) {
	d := conformance.Require(t)
	e := newEnv(t, true, map[string]string{"README.md": "city\n", bundlePath: "# empty trust list\n"})
	conformance.Exempt(e.fake.URL)
	var mu sync.Mutex
	var problems []string
	stop := githubfake.Observe(func(ex githubfake.Exchange) {
		if ex.Server != e.fake.URL {
			return
		}
		ps := d.Check(ex)
		mu.Lock()
		problems = append(problems, ps...)
		mu.Unlock()
	})
	defer stop()
	e.fake.MutateResponses(func(ex *githubfake.Exchange) {
		if ex.Method == http.MethodPost && strings.HasSuffix(ex.Path, "/git/refs") {
			ex.RespBody = []byte(strings.Replace(string(ex.RespBody), `"sha":`, `"shaa":`, 1))
		}
		if ex.Method == http.MethodPost && strings.HasSuffix(ex.Path, "/pulls") {
			ex.RespHeader.Del("Location")
		}
	})
	mutated := func(body, query *strings.Replacer) pr.GitHubOptions {
		o := e.opts()
		o.HTTPClient = &http.Client{Timeout: 10 * time.Second, Transport: &mutatingTransport{body: body, query: query}}
		return o
	}
	none := strings.NewReplacer()
	p := testProject(project.TrustListBundle)
	ca, _ := genCA(t, "payments CA")
	ctx := context.Background()
	// Answers: a created ref without its sha, a created pull request without Location.
	if _, err := pr.Open(ctx, trustCA(t, p, ca), mutated(none, none)); err != nil {
		t.Fatalf("an unmutated run: %v", err)
	}
	e.fake.MutateResponses(nil)
	// Requests: a tree entry mode GitHub does not document (the fake refuses it too).
	other, _ := genCA(t, "payments CA 2")
	_, _ = pr.Open(ctx, trustCA(t, p, other), mutated(strings.NewReplacer(`"mode":"100644"`, `"mode":"100640"`), none))
	// A pull-request state filter GitHub does not document.
	_, _ = pr.Status(ctx, p.Team, mutated(none, strings.NewReplacer("state=all", "state=any")))
	// A GraphQL field GitHub does not have.
	ch := trustCA(t, p, other)
	ch.Verify = func(ctx context.Context, base pr.BaseTree, files []pr.File) ([]string, error) {
		_, err := base.Read(ctx, []string{"README.md"})
		return nil, err
	}
	_, _ = pr.Open(ctx, ch, mutated(strings.NewReplacer("isTruncated", "isTrunkated"), none))
	mu.Lock()
	defer mu.Unlock()
	all := strings.Join(problems, "\n")
	for _, want := range []string{
		"request does not conform to api.github.com git/create-tree",
		"request does not conform to GHES 3.19 git/create-tree",
		"request does not conform to api.github.com pulls/list",
		"the GraphQL document does not validate against GitHub's schema",
		"does not conform to api.github.com's response of git/create-ref",
		"no Location header (documented for pulls/create)",
	} {
		if !strings.Contains(all, want) {
			t.Errorf("not caught: %s\nproblems:\n%s", want, all)
		}
	}
}
