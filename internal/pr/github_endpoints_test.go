package pr

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/go-git/go-git/v5/plumbing"
)

func TestAPIEndpoints(t *testing.T) {
	for _, tc := range []struct {
		host, rest, graphql, err string
	}{
		{host: "", rest: "https://api.github.com/", graphql: "https://api.github.com/graphql"},
		{host: "github.com", rest: "https://api.github.com/", graphql: "https://api.github.com/graphql"},
		{host: "GitHub.com", rest: "https://api.github.com/", graphql: "https://api.github.com/graphql"},
		{host: "octocorp.ghe.com", rest: "https://api.octocorp.ghe.com/", graphql: "https://api.octocorp.ghe.com/graphql"},
		{host: "api.octocorp.ghe.com", rest: "https://api.octocorp.ghe.com/", graphql: "https://api.octocorp.ghe.com/graphql"},
		{host: "github.example.com", rest: "https://github.example.com/api/v3/", graphql: "https://github.example.com/api/graphql"},
		{host: "github.example.com:8443", rest: "https://github.example.com:8443/api/v3/", graphql: "https://github.example.com:8443/api/graphql"},
		{host: "https://github.example.com", err: "not a URL"},
		{host: "github.example.com/api/v3", err: "not a URL"},
		{host: "a.b.ghe.com", err: "<tenant>.ghe.com"},
		{host: ".ghe.com", err: "not a host name"},
	} {
		t.Run(tc.host, func(t *testing.T) {
			rest, gql, err := APIEndpoints(tc.host)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want one saying %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if rest.String() != tc.rest || gql.String() != tc.graphql {
				t.Errorf("got %s and %s, want %s and %s", rest, gql, tc.rest, tc.graphql)
			}
		})
	}
}

// recordingTransport answers as GitHub would for a few endpoints and
// records every request: its URL and its Authorization header.
type recordingTransport struct {
	mu   sync.Mutex
	seen []string // "METHOD URL | Authorization"
	blob []byte
}

func (rt *recordingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	rt.mu.Lock()
	rt.seen = append(rt.seen, req.Method+" "+req.URL.String()+" | "+req.Header.Get("Authorization"))
	rt.mu.Unlock()
	sha := plumbing.ComputeHash(plumbing.BlobObject, rt.blob).String()
	var body any
	p := req.URL.Path
	switch {
	case req.Method == http.MethodPost && strings.HasSuffix(p, "/graphql"):
		body = map[string]any{"data": map[string]any{"repository": map[string]any{
			"f0": map[string]any{"text": "small\n", "isBinary": false, "isTruncated": false, "byteSize": 6, "oid": "0123456789012345678901234567890123456789"}}}}
	case strings.HasSuffix(p, "/repos/o/r/branches/main"):
		body = map[string]any{"name": "main", "commit": map[string]any{"sha": "c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1",
			"commit": map[string]any{"tree": map[string]any{"sha": "7777777777777777777777777777777777777777"}}}}
	case strings.HasSuffix(p, "/repos/o/r/contents/big.pem"):
		body = map[string]any{"type": "file", "encoding": "none", "content": "", "size": len(rt.blob), "sha": sha, "path": "big.pem"}
	case strings.HasSuffix(p, "/repos/o/r/git/blobs/"+sha):
		body = map[string]any{"sha": sha, "size": len(rt.blob), "encoding": "base64", "content": base64.StdEncoding.EncodeToString(rt.blob)}
	default:
		return jsonResponse(req, 404, map[string]any{"message": "Not Found", "documentation_url": "https://docs.github.com/rest"}), nil
	}
	return jsonResponse(req, 200, body), nil
}

func jsonResponse(req *http.Request, status int, v any) *http.Response {
	b, _ := json.Marshal(v)
	return &http.Response{StatusCode: status, Header: http.Header{"Content-Type": {"application/json"}},
		Body: io.NopCloser(strings.NewReader(string(b))), Request: req}
}

// TestTokenGoesToTheHostsAPIOnly: for each form of GitHub host, the REST
// and GraphQL requests of a read (a branch, a large file by blob, files
// through GraphQL) go to that host's API endpoints and nowhere else, and
// each carries the token.
func TestTokenGoesToTheHostsAPIOnly(t *testing.T) {
	for _, tc := range []struct {
		host, rest, graphql string
	}{
		{"github.com", "https://api.github.com/", "https://api.github.com/graphql"},
		{"octocorp.ghe.com", "https://api.octocorp.ghe.com/", "https://api.octocorp.ghe.com/graphql"},
		{"github.example.com", "https://github.example.com/api/v3/", "https://github.example.com/api/graphql"},
	} {
		t.Run(tc.host, func(t *testing.T) {
			rt := &recordingTransport{blob: []byte(strings.Repeat("large file\n", 100))}
			c, err := newClient(GitHubOptions{Host: tc.host, HTTPClient: &http.Client{Transport: rt}, Token: "s3cret", Repo: "o/r", Base: "main", Retries: 1})
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			sha, _, err := c.base(ctx)
			if err != nil {
				t.Fatal(err)
			}
			got, ok, err := c.read(ctx, sha, "big.pem", false)
			if err != nil || !ok || string(got) != string(rt.blob) {
				t.Fatalf("read big.pem: %v, %v, %d bytes", err, ok, len(got))
			}
			files, err := c.tree(sha).Read(ctx, []string{"small.txt"})
			if err != nil || string(files["small.txt"]) != "small\n" {
				t.Fatalf("GraphQL read: %v %q", err, files)
			}
			if len(rt.seen) != 4 {
				t.Errorf("%d requests, want 4: %v", len(rt.seen), rt.seen)
			}
			for _, s := range rt.seen {
				u, auth, _ := strings.Cut(s, " | ")
				_, u, _ = strings.Cut(u, " ")
				if !strings.HasPrefix(u, tc.rest) && u != tc.graphql {
					t.Errorf("a request went to %s, not to %s's API (%s, %s)", u, tc.host, tc.rest, tc.graphql)
				}
				if auth != "Bearer s3cret" {
					t.Errorf("%s carried Authorization %q", u, auth)
				}
			}
		})
	}
}

func TestIsGitHubCloud(t *testing.T) {
	for host, want := range map[string]bool{"": true, "github.com": true, "octocorp.ghe.com": true, "api.octocorp.ghe.com": true,
		"github.example.com": false, "github.example.com:8443": false, "ghe.com.example.net": false} {
		if got := IsGitHubCloud(host); got != want {
			t.Errorf("IsGitHubCloud(%q) = %v, want %v", host, got, want)
		}
	}
}
