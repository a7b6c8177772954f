package pr

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
)

// TestTokenOnlyToAPIHost: the token goes to the API's own scheme and host,
// and never along a redirect to another host (as archive downloads are), to
// another port, or from https to http.
func TestTokenOnlyToAPIHost(t *testing.T) {
	var mu sync.Mutex
	seen := map[string]string{} // server -> Authorization it received
	record := func(name string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			seen[name] = r.Header.Get("Authorization")
			mu.Unlock()
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"full_name":"o/r"}`))
		}
	}
	other := httptest.NewServer(record("other"))
	defer other.Close()
	plain := httptest.NewServer(record("plain"))
	defer plain.Close()
	var api *httptest.Server
	api = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/api/v3/repos/o/to-other":
			http.Redirect(w, r, other.URL+"/archive", http.StatusFound)
		case "/api/v3/repos/o/to-http":
			// same host, plain http (another port: httptest cannot serve both on one)
			http.Redirect(w, r, plain.URL+"/downgraded", http.StatusFound)
		case "/api/v3/repos/o/to-self":
			http.Redirect(w, r, api.URL+"/api/v3/repos/o/r", http.StatusFound)
		default:
			record("api")(w, r)
		}
	}))
	defer api.Close()

	c, err := newClient(GitHubOptions{HTTPClient: api.Client(), BaseURL: api.URL + "/api/v3/", Repo: "o/r", Token: "s3cret", Retries: 1})
	if err != nil {
		t.Fatal(err)
	}
	for _, repo := range []string{"to-other", "to-http", "to-self"} {
		mu.Lock()
		clear(seen)
		mu.Unlock()
		if _, _, err := c.gh.Repositories.Get(context.Background(), "o", repo); err != nil {
			t.Fatalf("%s: %v", repo, err)
		}
		mu.Lock()
		switch repo {
		case "to-self":
			if seen["api"] != "Bearer s3cret" {
				t.Errorf("a redirect within the API lost the token: %q", seen["api"])
			}
		default:
			for name, auth := range seen {
				if auth != "" {
					t.Errorf("%s: the redirect target %s received Authorization %q", repo, name, auth)
				}
			}
			if len(seen) == 0 {
				t.Errorf("%s: the redirect was not followed", repo)
			}
		}
		mu.Unlock()
	}
}
