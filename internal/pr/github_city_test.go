package pr_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spirepod/spirepod/internal/city"
	"github.com/spirepod/spirepod/internal/city/citytest"
	"github.com/spirepod/spirepod/internal/fakes/githubfake"
	"github.com/spirepod/spirepod/internal/pki"
	"github.com/spirepod/spirepod/internal/pr"
	"github.com/spirepod/spirepod/internal/project"
	"github.com/spirepod/spirepod/internal/registration"
)

// cityVerify runs the city rules on the base plus the change and refuses
// error findings, as `spirepod pr` does (cmd/spirepod/pr_check.go), and
// keeps every finding for the test to read.
func cityVerify(cfg city.Config, seen *[]registration.Finding) func(context.Context, pr.BaseTree, []pr.File) ([]string, error) {
	return func(ctx context.Context, base pr.BaseTree, files []pr.File) ([]string, error) {
		written := map[string][]byte{}
		var deleted []string
		for _, f := range files {
			if f.Delete {
				deleted = append(deleted, f.Path)
			} else {
				written[f.Path] = f.New
			}
		}
		fs, err := city.CheckOverlay(ctx, base, cfg, written, deleted)
		if err != nil {
			return nil, err
		}
		*seen = append(*seen, fs...)
		for _, f := range fs {
			if f.Severity == registration.SeverityError {
				return nil, fmt.Errorf("city check: %s", f.String())
			}
		}
		return nil, nil
	}
}

// TestCityAtGitHubLimits: a new team's pr trust-ca, pr spiffe-id and
// status on a generated 5,000-team city (SPIREPOD_PR_CITY_TEAMS to change)
// held by the fake GitHub with GitHub's limits on. Its trust list (~3.5 MB)
// is above the contents API's 1 MB (content "", encoding "none") and
// GraphQL's 512,000-byte Blob.text; its recursive file list is above the
// trees API's 7 MB (truncated). Each command must still read everything:
// the CA lands on the list exactly once, the city check over the whole city
// finds the merged CA (no "not on the trust list"), and status reads the
// merged list whole.
func TestCityAtGitHubLimits(t *testing.T) {
	if testing.Short() {
		t.Skip("a 5,000-team city: skipped under -short")
	}
	t.Parallel() // its own fake GitHub; the package's other tests go on meanwhile
	teams := 5000
	if n, err := strconv.Atoi(os.Getenv("SPIREPOD_PR_CITY_TEAMS")); err == nil && n > 0 {
		teams = n
	}
	g := citytest.Generate(citytest.Options{Teams: teams, Pods: 3, Scaffold: true})
	files := make(map[string]string, len(g.Tree))
	for p, b := range g.Tree {
		files[p] = string(b)
	}
	fake := githubfake.New("alice", token)
	t.Cleanup(fake.Close)
	if _, err := fake.AddRepo(cityRepo, true, "main", files); err != nil {
		t.Fatal(err)
	}
	lim := fake.Limits()
	bundle := files[citytest.BundlePath]
	if teams == 5000 && (len(bundle) <= lim.ContentsMax || len(bundle) <= lim.BlobTextMax) {
		t.Fatalf("the trust list is %d bytes: not above GitHub's limits (%d, %d), the test proves nothing", len(bundle), lim.ContentsMax, lim.BlobTextMax)
	}
	t.Logf("city: %d teams, %d files, trust list %d bytes", teams, len(files), len(bundle))

	p := testProject(project.TrustListBundle)
	p.Team, p.Namespace = "newteam", "ns-newteam"
	p.City.TeamPath, p.City.TrustList.Path, p.TrustDomain = citytest.TeamPath, citytest.BundlePath, citytest.TrustDomain
	p.Registration.Format = project.FormatEntryJSON
	cfg := g.Config
	cfg.Light = true // as `spirepod pr` reads the city over the API
	caPEM, _ := genCA(t, "newteam CA")
	ca := mustCert(t, caPEM)
	fp := pki.SHA1Fingerprint(ca)

	var progress bytes.Buffer
	opts := pr.GitHubOptions{HTTPClient: &http.Client{Timeout: 60 * time.Second}, BaseURL: fake.URL, Token: token,
		Repo: cityRepo, Base: "main", Progress: &progress}
	ctx := context.Background()

	// pr trust-ca
	var findings []registration.Finding
	ch := trustCA(t, p, caPEM)
	ch.Verify = cityVerify(cfg, &findings)
	fake.ResetRequests()
	res, err := pr.Open(ctx, ch, opts)
	if err != nil {
		t.Fatalf("pr trust-ca: %v\nprogress: %s", err, progress.String())
	}
	t.Logf("pr trust-ca: %d requests", res.Requests)
	log := strings.Join(fake.RequestLog(), "\n")
	if !strings.Contains(log, "GET /repos/"+cityRepo+"/git/blobs/") {
		t.Errorf("the trust list was not read as a blob:\n%s", log)
	}
	got, ok, err := fake.File(cityRepo, "spirepod/newteam/trust-ca", citytest.BundlePath)
	if err != nil || !ok {
		t.Fatalf("no trust list on the branch: %v", err)
	}
	if got != bundle+string(caPEM) {
		t.Fatalf("the branch's trust list is not the base's (%d bytes) plus the CA: %d bytes", len(bundle), len(got))
	}
	if _, err := fake.Merge(cityRepo, res.Number); err != nil {
		t.Fatal(err)
	}

	// pr spiffe-id: the city check reads the merged trust list whole.
	findings = nil
	sp, _, err := pr.SpiffeID(pr.SpiffeIDOptions{Project: p, CA: ca, Format: project.FormatEntryJSON})
	if err != nil {
		t.Fatal(err)
	}
	sp.Verify = cityVerify(cfg, &findings)
	progress.Reset()
	res2, err := pr.Open(ctx, sp, opts)
	if err != nil {
		t.Fatalf("pr spiffe-id: %v\nprogress: %s", err, progress.String())
	}
	t.Logf("pr spiffe-id: %d requests; progress:\n%s", res2.Requests, progress.String())
	for _, f := range findings {
		if f.Code == city.CodePinNotTrusted || strings.Contains(f.Message, fp) {
			t.Errorf("the city check does not see the merged CA %s: %s", fp, f.String())
		}
	}
	if !strings.Contains(progress.String(), "GitHub cut the file list") {
		t.Errorf("the recursive file list was not cut at %d teams: the listing fallback went untested", teams)
	}
	reg, ok, _ := fake.File(cityRepo, "spirepod/newteam/spiffe-id", pr.RegistrationFile(p))
	if !ok || !strings.Contains(reg, "ca:fingerprint:"+fp) {
		t.Errorf("the spiffe-id branch has no registration pinned to %s", fp)
	}

	// status: trust-ca merged, its CA on the base's list.
	st, err := pr.Status(ctx, p.Team, opts, pr.TrustListFile(p), pr.RegistrationFile(p))
	if err != nil {
		t.Fatal(err)
	}
	if st.Pulls[0].State != "merged" || st.Pulls[1].State != "open" {
		t.Errorf("status: %+v", st.Pulls)
	}
	onBase, _, _ := fake.File(cityRepo, "main", citytest.BundlePath)
	if st.Base[citytest.BundlePath] != onBase || !pr.TrustListHolds([]byte(st.Base[citytest.BundlePath]), fp) {
		t.Errorf("status read %d bytes of the trust list (the base has %d) and finds the CA: %v",
			len(st.Base[citytest.BundlePath]), len(onBase), pr.TrustListHolds([]byte(st.Base[citytest.BundlePath]), fp))
	}
	t.Logf("status: %d requests", st.Requests)
}
