package githubfake

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Exchange is one API request and the fake's answer, as sent on the wire.
type Exchange struct {
	// Server is the answering fake's URL.
	Server string
	Method string
	// Path is the escaped request path as received (with the fake's
	// /api/v3 or /api/graphql prefix); Query the raw query string.
	Path, Query string
	Header      http.Header
	Body        []byte
	Status      int
	RespHeader  http.Header
	RespBody    []byte
}

var (
	observersMu sync.Mutex
	observers   = map[int]func(Exchange){}
	observerID  int
)

// Observe calls fn with every exchange of every fake in this process until
// stop is called (conformance tests judge them all). fn is called from the
// servers' goroutines, possibly at once: it must be safe for that.
func Observe(fn func(Exchange)) (stop func()) {
	observersMu.Lock()
	defer observersMu.Unlock()
	observerID++
	id := observerID
	observers[id] = fn
	return func() {
		observersMu.Lock()
		defer observersMu.Unlock()
		delete(observers, id)
	}
}

// MutateResponses makes the fake pass every answer through fn before it is
// sent: for tests proving that the conformance checks catch a wrong answer.
func (s *Server) MutateResponses(fn func(*Exchange)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.mutate = fn
}

// Documentation URLs the fake's errors carry, as GitHub's do (OpenAPI
// schemas basic-error and validation-error have documentation_url).
const (
	docRoot           = "https://docs.github.com/rest"
	docSecondaryLimit = "https://docs.github.com/rest/using-the-rest-api/rate-limits-for-the-rest-api#about-secondary-rate-limits"
	docPrimaryLimit   = "https://docs.github.com/rest/using-the-rest-api/rate-limits-for-the-rest-api#about-primary-rate-limits"
	docRedirects      = "https://docs.github.com/rest/using-the-rest-api/best-practices-for-using-the-rest-api#follow-redirects"
	docGraphQL        = "https://docs.github.com/graphql"
)

// exchangeWriter buffers an answer so the fake can add what GitHub adds to
// every response (rate-limit headers, ETag) and record it.
type exchangeWriter struct {
	header http.Header
	status int
	body   bytes.Buffer
	// doc is the documentation_url of errors written for this request.
	doc string
}

func (w *exchangeWriter) Header() http.Header { return w.header }
func (w *exchangeWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
}
func (w *exchangeWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.body.Write(b)
}

// setDoc names the documentation page of the endpoint being served.
func setDoc(w http.ResponseWriter, doc string) {
	if ew, ok := w.(*exchangeWriter); ok {
		ew.doc = doc
	}
}

type apiError struct {
	Message string            `json:"message"`
	Errors  []json.RawMessage `json:"errors,omitempty"`
	DocURL  string            `json:"documentation_url"`
	Status  string            `json:"status"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// writeErr answers GitHub's error shape: message, documentation_url and
// status (basic-error), with validation errors (validation-error) when given.
func writeErr(w http.ResponseWriter, status int, msg string, errs ...string) {
	writeErrResource(w, status, msg, "PullRequest", errs...)
}

func writeErrResource(w http.ResponseWriter, status int, msg, resource string, errs ...string) {
	e := apiError{Message: msg, DocURL: docRoot, Status: strconv.Itoa(status)}
	if ew, ok := w.(*exchangeWriter); ok && ew.doc != "" {
		e.DocURL = ew.doc
	}
	for _, m := range errs {
		b, _ := json.Marshal(map[string]string{"resource": resource, "code": "custom", "message": m})
		e.Errors = append(e.Errors, b)
	}
	writeJSON(w, status, e)
}

func (s *Server) serve(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	req.Body = io.NopCloser(bytes.NewReader(body))
	ew := &exchangeWriter{header: http.Header{}}
	s.mu.Lock()
	s.handle(ew, req)
	if ew.status == 0 {
		ew.status = http.StatusOK
	}
	ex := Exchange{Server: s.URL, Method: req.Method, Path: req.URL.EscapedPath(), Query: req.URL.RawQuery, Header: req.Header.Clone(),
		Body: body, Status: ew.status, RespHeader: ew.header, RespBody: ew.body.Bytes()}
	s.finish(&ex, req)
	if s.mutate != nil {
		s.mutate(&ex)
	}
	s.mu.Unlock()
	observersMu.Lock()
	obs := make([]func(Exchange), 0, len(observers))
	for _, fn := range observers {
		obs = append(obs, fn)
	}
	observersMu.Unlock()
	for _, fn := range obs {
		fn(ex)
	}
	for k, v := range ex.RespHeader {
		w.Header()[k] = v
	}
	w.WriteHeader(ex.Status)
	_, _ = w.Write(ex.RespBody)
}

// finish adds what GitHub adds to every answer:
//   - an ETag on a successful GET, and 304 Not Modified with no body when the
//     request's If-None-Match names it ("Best practices for using the REST
//     API", use conditional requests:
//     https://docs.github.com/rest/using-the-rest-api/best-practices-for-using-the-rest-api#use-conditional-requests-if-appropriate);
//     a 304 does not count against the rate limit (same page);
//   - the x-ratelimit-* headers ("Rate limits for the REST API", checking
//     the status of your rate limit:
//     https://docs.github.com/rest/using-the-rest-api/rate-limits-for-the-rest-api#checking-the-status-of-your-rate-limit),
//     unless the answer is a rate limit that set its own.
func (s *Server) finish(ex *Exchange, req *http.Request) {
	h := ex.RespHeader
	if (req.Method == http.MethodGet || req.Method == http.MethodHead) && ex.Status == http.StatusOK {
		sum := sha256.Sum256(ex.RespBody)
		etag := `"` + hex.EncodeToString(sum[:16]) + `"`
		h.Set("ETag", etag)
		if etagMatch(req.Header.Get("If-None-Match"), etag) {
			ex.Status, ex.RespBody = http.StatusNotModified, nil
			h.Del("Content-Type")
		}
	}
	if h.Get("X-RateLimit-Remaining") != "" {
		return
	}
	resource := "core"
	if strings.HasSuffix(strings.TrimSuffix(ex.Path, "/"), "/graphql") {
		resource = "graphql"
	}
	if ex.Status != http.StatusNotModified {
		s.rate[resource]++
	}
	used := s.rate[resource]
	limit := s.limits.RateLimit
	h.Set("X-RateLimit-Limit", strconv.Itoa(limit))
	h.Set("X-RateLimit-Remaining", strconv.Itoa(max(limit-used, 0)))
	h.Set("X-RateLimit-Used", strconv.Itoa(used))
	h.Set("X-RateLimit-Reset", strconv.FormatInt(s.now().Truncate(time.Hour).Add(time.Hour).Unix(), 10))
	h.Set("X-RateLimit-Resource", resource)
}

// etagMatch reads If-None-Match: a list of entity tags (weak ones compare
// equal to strong ones for GET, RFC 9110 13.1.2), or "*".
func etagMatch(header, etag string) bool {
	if header == "" {
		return false
	}
	for _, t := range strings.Split(header, ",") {
		t = strings.TrimPrefix(strings.TrimSpace(t), "W/")
		if t == "*" || t == etag {
			return true
		}
	}
	return false
}

// handle answers one request with the server locked.
func (s *Server) handle(w http.ResponseWriter, req *http.Request) {
	path := strings.TrimPrefix(req.URL.EscapedPath(), "/api/v3")
	s.requests = append(s.requests, req.Method+" "+path)
	for _, f := range s.faults {
		times := f.Times
		if times == 0 {
			times = 1
		}
		if f.hits >= times || (f.Method != "" && f.Method != req.Method) || !strings.Contains(path, f.Path) {
			continue
		}
		f.hits++
		if f.Before != nil {
			f.Before(s)
		}
		if s.fault(w, f) {
			return
		}
		break
	}
	if s.token != "" {
		auth := req.Header.Get("Authorization")
		if auth != "Bearer "+s.token && auth != "token "+s.token {
			setDoc(w, docRoot)
			writeErr(w, http.StatusUnauthorized, "Bad credentials")
			return
		}
	}
	seg := strings.Split(strings.Trim(path, "/"), "/")
	for i := range seg {
		if u, err := url.PathUnescape(seg[i]); err == nil {
			seg[i] = u
		}
	}
	if len(seg) >= 1 && seg[len(seg)-1] == "graphql" && req.Method == http.MethodPost {
		s.graphql(w, req)
		return
	}
	if len(seg) == 1 && seg[0] == "user" && req.Method == http.MethodGet {
		setDoc(w, "https://docs.github.com/rest/users/users#get-the-authenticated-user")
		writeJSON(w, 200, s.privateUserJSON())
		return
	}
	if len(seg) >= 2 && seg[0] == "repositories" {
		for _, r := range s.repos {
			if strconv.FormatInt(r.ID, 10) == seg[1] && r == s.repos[r.FullName()] {
				s.route(w, req, r, seg[2:])
				return
			}
		}
		writeErr(w, 404, "Not Found")
		return
	}
	if len(seg) < 3 || seg[0] != "repos" {
		writeErr(w, 404, "Not Found")
		return
	}
	r := s.repos[seg[1]+"/"+seg[2]]
	if r == nil {
		if moved := s.renamed[seg[1]+"/"+seg[2]]; moved != nil {
			s.redirect(w, req, moved, seg[3:])
			return
		}
		writeErr(w, 404, "Not Found")
		return
	}
	s.route(w, req, r, seg[3:])
}

// fault answers an injected fault; false means serve the request normally.
func (s *Server) fault(w http.ResponseWriter, f *Fault) bool {
	status := f.Status
	switch {
	case f.RateLimitReset > 0:
		// A primary rate limit: 403 or 429 with x-ratelimit-remaining 0
		// ("Rate limits for the REST API", exceeding the primary rate limit).
		if status == 0 {
			status = http.StatusForbidden
		}
		w.Header().Set("X-RateLimit-Limit", strconv.Itoa(s.limits.RateLimit))
		w.Header().Set("X-RateLimit-Remaining", "0")
		w.Header().Set("X-RateLimit-Used", strconv.Itoa(s.limits.RateLimit))
		w.Header().Set("X-RateLimit-Reset", fmt.Sprint(s.now().Add(f.RateLimitReset).Unix()))
		w.Header().Set("X-RateLimit-Resource", "core")
		setDoc(w, docPrimaryLimit)
		writeErr(w, status, "API rate limit exceeded for user ID 1.")
		return true
	case f.Secondary:
		// A secondary rate limit: 403 or 429, retry-after when GitHub
		// sends it ("Rate limits for the REST API", exceeding the
		// secondary rate limit: "If the retry-after response header is
		// present, you should not retry your request until after that many
		// seconds has elapsed ... Otherwise, wait for at least one minute").
		if status == 0 {
			status = http.StatusForbidden
		}
		if f.RetryAfter > 0 {
			w.Header().Set("Retry-After", strconv.Itoa(int(f.RetryAfter/time.Second)))
		}
		setDoc(w, docSecondaryLimit)
		writeErr(w, status, "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.")
		return true
	case status != 0:
		msg := f.Message
		if msg == "" {
			msg = http.StatusText(status)
		}
		writeErr(w, status, msg, f.Errors...)
		return true
	}
	return false
}

// Rename renames a repository, as a user does in its settings: the old
// name keeps answering with a redirect to the repository by id.
func (s *Server) Rename(oldFullName, newFullName string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.repos[oldFullName]
	if r == nil {
		return fmt.Errorf("no repo %s", oldFullName)
	}
	owner, name, ok := strings.Cut(newFullName, "/")
	if !ok {
		return fmt.Errorf("repo %q is not owner/name", newFullName)
	}
	delete(s.repos, oldFullName)
	r.Owner, r.Name = owner, name
	s.repos[newFullName] = r
	s.renamed[oldFullName] = r
	return nil
}

// redirect answers a request to a renamed repository's old name: 301 for
// GET and HEAD, 307 for other methods (so the method and body are kept), to
// the repository by id. GitHub's "Follow redirects" in "Best practices for
// using the REST API" (docRedirects), and the OpenAPI responses
// moved_permanently and temporary_redirect (basic-error bodies).
func (s *Server) redirect(w http.ResponseWriter, req *http.Request, r *Repo, rest []string) {
	loc := fmt.Sprintf("%s/api/v3/repositories/%d", s.srv.URL, r.ID)
	for _, p := range rest {
		loc += "/" + url.PathEscape(p)
	}
	if req.URL.RawQuery != "" {
		loc += "?" + req.URL.RawQuery
	}
	status, msg := http.StatusMovedPermanently, "Moved Permanently"
	if req.Method != http.MethodGet && req.Method != http.MethodHead {
		status, msg = http.StatusTemporaryRedirect, "Temporary Redirect"
	}
	w.Header().Set("Location", loc)
	writeJSON(w, status, map[string]string{"message": msg, "url": loc, "documentation_url": docRedirects})
}

// apiURL is the REST URL of a repository path, as GitHub puts in url fields
// and Location headers.
func (s *Server) apiURL(r *Repo, rest string) string {
	u := s.URL + "repos/" + r.FullName()
	if rest != "" {
		u += "/" + rest
	}
	return u
}
