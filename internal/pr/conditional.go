package pr

import (
	"bytes"
	"io"
	"net/http"
	"sync"
)

// Conditional keeps GitHub's ETags for GET requests across clients, so a
// caller that polls (spirepod up waiting on a review) asks "changed since?"
// with If-None-Match and gets 304 Not Modified while nothing changed:
// GitHub does not count a 304 against the rate limit ("Best practices for
// using the REST API", use conditional requests:
// https://docs.github.com/rest/using-the-rest-api/best-practices-for-using-the-rest-api#use-conditional-requests-if-appropriate).
// Safe for concurrent use. The zero value is ready.
type Conditional struct {
	mu   sync.Mutex
	seen map[string]cachedResponse
	// Hits counts the 304s answered from the cache.
	hits int
}

type cachedResponse struct {
	etag   string
	status int
	header http.Header
	body   []byte
}

// Hits is how many requests GitHub answered 304 (served from the cache).
func (c *Conditional) Hits() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.hits
}

// conditionalTransport asks with the cached ETag and serves a 304 from
// the cache, as the 200 it stands for.
type conditionalTransport struct {
	base  http.RoundTripper
	cache *Conditional
}

func conditionalKey(r *http.Request) string {
	return r.URL.String() + "\x00" + r.Header.Get("Accept")
}

func (t *conditionalTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Method != http.MethodGet || req.Header.Get("If-None-Match") != "" {
		return t.base.RoundTrip(req)
	}
	key := conditionalKey(req)
	t.cache.mu.Lock()
	prev, ok := t.cache.seen[key]
	t.cache.mu.Unlock()
	if ok {
		req = req.Clone(req.Context())
		req.Header.Set("If-None-Match", prev.etag)
	}
	resp, err := t.base.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	switch {
	case ok && resp.StatusCode == http.StatusNotModified:
		resp.Body.Close()
		t.cache.mu.Lock()
		t.cache.hits++
		t.cache.mu.Unlock()
		h := prev.header.Clone()
		for k, v := range resp.Header { // fresh rate-limit headers
			h[k] = v
		}
		return &http.Response{Status: http.StatusText(prev.status), StatusCode: prev.status, Header: h, Proto: resp.Proto,
			ProtoMajor: resp.ProtoMajor, ProtoMinor: resp.ProtoMinor, Body: io.NopCloser(bytes.NewReader(prev.body)),
			ContentLength: int64(len(prev.body)), Request: req}, nil
	case resp.StatusCode == http.StatusOK && resp.Header.Get("ETag") != "":
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return nil, err
		}
		t.cache.mu.Lock()
		if t.cache.seen == nil {
			t.cache.seen = map[string]cachedResponse{}
		}
		t.cache.seen[key] = cachedResponse{etag: resp.Header.Get("ETag"), status: resp.StatusCode, header: resp.Header.Clone(), body: body}
		t.cache.mu.Unlock()
		resp.Body = io.NopCloser(bytes.NewReader(body))
	}
	return resp, nil
}
