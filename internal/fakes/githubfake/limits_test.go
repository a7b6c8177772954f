package githubfake_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/spirepod/spirepod/internal/fakes/githubfake"
)

// raw sends one request to the fake with the token and returns the answer
// and its body.
func raw(t *testing.T, s *githubfake.Server, method, path, body string, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	u := s.URL + strings.TrimPrefix(path, "/")
	if strings.HasPrefix(path, "http") {
		u = path
	}
	req, err := http.NewRequest(method, u, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	c := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

func decodeJSON(t *testing.T, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%v: %s", err, b)
	}
	return m
}

// TestContentsSizeLimits: above 1 MB the contents API answers content ""
// and encoding "none" (raw still works), the blobs API serves the file, and
// above 100 MB both refuse with too_large.
func TestContentsSizeLimits(t *testing.T) {
	big := strings.Repeat("0123456789abcdef", 1<<16) + "tail\n" // 1 MiB + 5 bytes
	e := newEnv(t, true, map[string]string{"big.pem": big, "small.txt": "small\n"})
	resp, b := raw(t, e.s, "GET", "repos/"+city+"/contents/big.pem?ref=main", "")
	m := decodeJSON(t, b)
	if resp.StatusCode != 200 || m["content"] != "" || m["encoding"] != "none" || int(m["size"].(float64)) != len(big) {
		t.Fatalf("contents of a 1 MiB+ file: %d encoding %v size %v content %.20v", resp.StatusCode, m["encoding"], m["size"], m["content"])
	}
	_, rawBody := raw(t, e.s, "GET", "repos/"+city+"/contents/big.pem", "", "Accept", "application/vnd.github.raw+json")
	if string(rawBody) != big {
		t.Errorf("raw media type: %d bytes", len(rawBody))
	}
	resp, b = raw(t, e.s, "GET", "repos/"+city+"/git/blobs/"+m["sha"].(string), "")
	bm := decodeJSON(t, b)
	got, err := base64.StdEncoding.DecodeString(strings.ReplaceAll(bm["content"].(string), "\n", ""))
	if resp.StatusCode != 200 || err != nil || string(got) != big || bm["encoding"] != "base64" {
		t.Errorf("blob: %d %v %d bytes", resp.StatusCode, err, len(got))
	}
	_, b = raw(t, e.s, "GET", "repos/"+city+"/contents/small.txt", "")
	if sm := decodeJSON(t, b); sm["encoding"] != "base64" {
		t.Errorf("a small file: %v", sm)
	}
	l := e.s.Limits()
	l.BlobMax = 1000
	e.s.SetLimits(l)
	for _, p := range []string{"repos/" + city + "/contents/big.pem", "repos/" + city + "/git/blobs/" + m["sha"].(string)} {
		resp, b = raw(t, e.s, "GET", p, "")
		if resp.StatusCode != 403 || !strings.Contains(string(b), "too_large") || !strings.Contains(string(b), "documentation_url") {
			t.Errorf("%s above the blob limit: %d %s", p, resp.StatusCode, b)
		}
	}
}

// TestGraphQLBlobText: Blob.text is cut at 512,000 bytes with isTruncated;
// an unknown field is a GraphQL error, as GitHub answers it.
func TestGraphQLBlobText(t *testing.T) {
	big := strings.Repeat("x", 512000) + "é" + strings.Repeat("y", 10)
	e := newEnv(t, true, map[string]string{"big.txt": big, "small.txt": "small\n"})
	q := `query($o: String!, $n: String!) { repository(owner: $o, name: $n) {
	  big: object(expression: "main:big.txt") { __typename ... on Blob { text isTruncated byteSize oid } }
	  small: object(expression: "main:small.txt") { ... on Blob { text isTruncated byteSize } }
	  none: object(expression: "main:nope") { ... on Blob { text } } } }`
	body, _ := json.Marshal(map[string]any{"query": q, "variables": map[string]string{"o": owner, "n": name}})
	resp, b := raw(t, e.s, "POST", strings.TrimSuffix(e.s.URL, "v3/")+"graphql", string(body))
	var out struct {
		Data struct {
			Repository map[string]*struct {
				Typename    string `json:"__typename"`
				Text        string
				IsTruncated bool
				ByteSize    int
			}
		}
		Errors []any
	}
	if err := json.Unmarshal(b, &out); err != nil || resp.StatusCode != 200 || len(out.Errors) > 0 {
		t.Fatalf("%d %v %s", resp.StatusCode, err, b[:min(len(b), 300)])
	}
	r := out.Data.Repository
	if r["big"].Typename != "Blob" || !r["big"].IsTruncated || len(r["big"].Text) != 512000 || r["big"].ByteSize != len(big) {
		t.Errorf("big: truncated %v, %d bytes of text, byteSize %d", r["big"].IsTruncated, len(r["big"].Text), r["big"].ByteSize)
	}
	if r["small"].IsTruncated || r["small"].Text != "small\n" || r["none"] != nil {
		t.Errorf("small %+v none %+v", r["small"], r["none"])
	}

	body, _ = json.Marshal(map[string]any{"query": `{ repository(owner: "wp-wcm", name: "city") { object(expression: "main:small.txt") { ... on Blob { txt } } } }`})
	resp, b = raw(t, e.s, "POST", strings.TrimSuffix(e.s.URL, "v3/")+"graphql", string(body))
	m := decodeJSON(t, b)
	errs, _ := m["errors"].([]any)
	if resp.StatusCode != 200 || len(errs) != 1 || m["data"] != nil ||
		errs[0].(map[string]any)["message"] != "Field 'txt' doesn't exist on type 'Blob'" {
		t.Errorf("unknown field: %d %s", resp.StatusCode, b)
	}
}

// TestConditionalRequests: a GET answers an ETag; If-None-Match with it
// answers 304 without a body and without using the rate limit.
func TestConditionalRequests(t *testing.T) {
	e := newEnv(t, true, nil)
	resp, _ := raw(t, e.s, "GET", "repos/"+city+"/branches/main", "")
	etag := resp.Header.Get("ETag")
	used := resp.Header.Get("X-RateLimit-Used")
	if etag == "" || used != "1" || resp.Header.Get("X-RateLimit-Remaining") != "4999" || resp.Header.Get("X-RateLimit-Resource") != "core" {
		t.Fatalf("headers %v", resp.Header)
	}
	resp, b := raw(t, e.s, "GET", "repos/"+city+"/branches/main", "", "If-None-Match", etag)
	if resp.StatusCode != 304 || len(b) != 0 || resp.Header.Get("X-RateLimit-Used") != "1" {
		t.Errorf("conditional GET: %d, %d bytes, used %s", resp.StatusCode, len(b), resp.Header.Get("X-RateLimit-Used"))
	}
	if _, err := e.s.Commit(city, "main", map[string]string{"x": "y\n"}, "move"); err != nil {
		t.Fatal(err)
	}
	resp, _ = raw(t, e.s, "GET", "repos/"+city+"/branches/main", "", "If-None-Match", etag)
	if resp.StatusCode != 200 || resp.Header.Get("ETag") == etag {
		t.Errorf("after a change: %d, etag %s", resp.StatusCode, resp.Header.Get("ETag"))
	}
}

// TestRenamedRepository: the old name answers 301 (GET) or 307 (other
// methods) to the repository by id, which serves it.
func TestRenamedRepository(t *testing.T) {
	e := newEnv(t, true, nil)
	if err := e.s.Rename(city, "wp-wcm/city-renamed"); err != nil {
		t.Fatal(err)
	}
	resp, b := raw(t, e.s, "GET", "repos/"+city+"/branches/main", "")
	loc := resp.Header.Get("Location")
	if resp.StatusCode != 301 || !strings.Contains(loc, "/repositories/") || !strings.Contains(string(b), "documentation_url") {
		t.Fatalf("GET old name: %d %s %s", resp.StatusCode, loc, b)
	}
	resp, _ = raw(t, e.s, "GET", loc, "")
	if resp.StatusCode != 200 {
		t.Errorf("GET by id: %d", resp.StatusCode)
	}
	resp, _ = raw(t, e.s, "POST", "repos/"+city+"/git/blobs", `{"content":"x","encoding":"utf-8"}`)
	if resp.StatusCode != 307 {
		t.Errorf("POST old name: %d", resp.StatusCode)
	}
	// go-github follows both, keeping the body of the POST.
	ref, _, err := e.gh.Git.GetRef(t.Context(), owner, name, "heads/main")
	if err != nil || ref.GetObject().GetSHA() != e.s.Ref("wp-wcm/city-renamed", "main") {
		t.Errorf("through the redirect: %v %v", err, ref)
	}
}

// TestSecondaryRateLimitFault: the switchable secondary limit answers
// 403/429 with retry-after and GitHub's message and documentation_url.
func TestSecondaryRateLimitFault(t *testing.T) {
	e := newEnv(t, true, nil)
	e.s.Inject(&githubfake.Fault{Status: 429, Secondary: true, RetryAfter: 42 * time.Second})
	resp, b := raw(t, e.s, "GET", "repos/"+city, "")
	m := decodeJSON(t, b)
	if resp.StatusCode != 429 || resp.Header.Get("Retry-After") != "42" ||
		!strings.Contains(m["message"].(string), "secondary rate limit") || !strings.HasSuffix(m["documentation_url"].(string), "secondary-rate-limits") {
		t.Errorf("%d %v %s", resp.StatusCode, resp.Header, b)
	}
	resp, _ = raw(t, e.s, "GET", "repos/"+city, "")
	if resp.StatusCode != 200 {
		t.Errorf("after the fault: %d", resp.StatusCode)
	}
}

// TestCreatedHasLocation: a 201 names the created object in Location.
func TestCreatedHasLocation(t *testing.T) {
	e := newEnv(t, true, nil)
	resp, b := raw(t, e.s, "POST", "repos/"+city+"/git/blobs", `{"content":"x","encoding":"utf-8"}`)
	m := decodeJSON(t, b)
	if resp.StatusCode != 201 || resp.Header.Get("Location") != m["url"] || !strings.HasSuffix(m["url"].(string), "/git/blobs/"+m["sha"].(string)) {
		t.Errorf("%d %v %s", resp.StatusCode, resp.Header.Get("Location"), b)
	}
}

// TestExchangesObserved: every exchange reaches an observer as sent.
func TestExchangesObserved(t *testing.T) {
	e := newEnv(t, true, nil)
	var got []githubfake.Exchange
	stop := githubfake.Observe(func(ex githubfake.Exchange) {
		if ex.Server == e.s.URL {
			got = append(got, ex)
		}
	})
	_, b := raw(t, e.s, "POST", "repos/"+city+"/git/blobs", `{"content":"x","encoding":"utf-8"}`)
	stop()
	raw(t, e.s, "GET", "repos/"+city, "")
	if len(got) != 1 || got[0].Method != "POST" || !bytes.Equal(got[0].RespBody, b) || string(got[0].Body) != `{"content":"x","encoding":"utf-8"}` || got[0].Status != 201 {
		t.Errorf("%+v", got)
	}
}
