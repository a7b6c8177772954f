// Package githubfake is a fake GitHub REST API for tests. It keeps real state:
// git objects in an in-memory go-git store (shared by a repository and its
// forks, like GitHub's fork networks), refs, repositories with the caller's
// permissions, forks and pull requests. Merging a pull request makes a real
// merge commit on the base branch, so a test reads the tree the PR merged.
// Responses carry every field GitHub's OpenAPI description marks required
// (shapes.go), and the fake keeps GitHub's documented limits and habits
// (http.go, limits.go): contents API size limits, GraphQL Blob.text
// truncation, rate-limit headers, ETags, Location on 201s, documentation_url
// on errors, redirects for renamed repositories. Faults can be injected, and
// every API request is counted and recorded (Exchanges, Observe) so
// conformance tests can judge it against GitHub's own descriptions.
//
// Only the endpoints spirepod uses are served; anything else answers 404.
package githubfake

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/storage/memory"
	"github.com/google/go-github/v60/github"

	"github.com/spirepod/spirepod/internal/pr/gittree"
)

// Server is a running fake. Create it with New and Close it when done.
type Server struct {
	// URL is the API base URL, ending in a slash (what go-github's BaseURL wants).
	URL string

	mu       sync.Mutex
	srv      *httptest.Server
	repos    map[string]*Repo
	faults   []*Fault
	requests []string
	user     string
	token    string
	// ForkPolls is how many requests to a new fork's git data answer 409
	// "Git Repository is empty." before the fork is ready (GitHub forks asynchronously).
	ForkPolls int
	now       func() time.Time

	limits    Limits
	nextID    int64
	renamed   map[string]*Repo // old owner/name -> the repository now
	rate      map[string]int   // rate-limit resource -> requests used
	exchanges []Exchange
	// mutate, when set, edits each response before it is sent (tests of
	// the conformance checks make a fake answer wrong on purpose).
	mutate func(*Exchange)
}

// Repo is one repository.
type Repo struct {
	// ID is the repository's numeric id (GET /repositories/{id} after a rename).
	ID            int64
	Owner, Name   string
	DefaultBranch string
	// Push is whether the authenticated user may push.
	Push bool

	parent   *Repo
	store    *memory.Storage
	refs     map[string]plumbing.Hash // "refs/heads/main"
	pulls    []*Pull
	notReady int
	checks   map[string][]*github.CheckRun
}

// FullName is owner/name.
func (r *Repo) FullName() string { return r.Owner + "/" + r.Name }

// Pull is one pull request.
type Pull struct {
	Number        int
	Title, Body   string
	HeadRepo      *Repo
	HeadRef       string
	BaseRef       string
	State         string // open, closed
	Merged        bool
	MergeCommit   plumbing.Hash
	mergedHeadSHA plumbing.Hash
	base          *Repo
	// createdAt, closedAt and mergedAt back created_at, closed_at and merged_at.
	createdAt, closedAt, mergedAt time.Time
}

// Fault is an injected failure, matched against each request in order.
type Fault struct {
	Method string // "" matches any method
	Path   string // substring of the path after the API prefix; "" matches any
	// Status is the HTTP status to answer; 0 serves the request normally
	// (after Before ran).
	Status  int
	Message string
	// Errors are GitHub validation errors ("A pull request already exists for ...").
	Errors []string
	// RateLimitReset, when set, answers a primary rate limit: Status (403
	// by default; GitHub also uses 429) with X-RateLimit-Remaining: 0 and
	// X-RateLimit-Reset this far in the future.
	RateLimitReset time.Duration
	// Secondary answers GitHub's secondary rate limit: Status (403 by
	// default, or 429) with its message and documentation_url, and a
	// Retry-After of RetryAfter when that is set (GitHub sends none at times).
	Secondary  bool
	RetryAfter time.Duration
	// Times is how many requests this fault answers; 0 means once.
	Times int
	// Before runs before the request is answered (e.g. to move a branch).
	Before func(*Server)

	hits int
}

// New starts a fake on 127.0.0.1. token, when not empty, is the only token
// accepted; user is the authenticated login.
func New(user, token string) *Server {
	s := &Server{repos: map[string]*Repo{}, user: user, token: token, ForkPolls: 1, now: time.Now,
		limits: DefaultLimits(), renamed: map[string]*Repo{}, rate: map[string]int{}}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	s.URL = s.srv.URL + "/api/v3/"
	return s
}

// Close stops the server.
func (s *Server) Close() { s.srv.Close() }

// User is the authenticated login.
func (s *Server) User() string { return s.user }

// Requests is the number of API requests served so far (faulted ones included).
func (s *Server) Requests() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.requests)
}

// RequestLog lists "METHOD path" for every API request so far.
func (s *Server) RequestLog() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.requests...)
}

// ResetRequests zeroes the request counter.
func (s *Server) ResetRequests() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests = nil
}

// Inject adds a fault.
func (s *Server) Inject(f *Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = append(s.faults, f)
}

// AddRepo creates a repository whose default branch holds files in one commit.
func (s *Server) AddRepo(fullName string, push bool, branch string, files map[string]string) (*Repo, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	owner, name, ok := strings.Cut(fullName, "/")
	if !ok {
		return nil, fmt.Errorf("repo %q is not owner/name", fullName)
	}
	s.nextID++
	r := &Repo{ID: 1000 + s.nextID, Owner: owner, Name: name, DefaultBranch: branch, Push: push, store: memory.NewStorage(),
		refs: map[string]plumbing.Hash{}, checks: map[string][]*github.CheckRun{}}
	s.repos[fullName] = r
	if _, err := s.commitLocked(r, branch, files, "initial commit"); err != nil {
		return nil, err
	}
	return r, nil
}

// Commit adds a commit on branch setting files (an empty content deletes the
// path), as another contributor would; it returns the commit's SHA.
func (s *Server) Commit(fullName, branch string, files map[string]string, msg string) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.repos[fullName]
	if r == nil {
		return "", fmt.Errorf("no repo %s", fullName)
	}
	h, err := s.commitLocked(r, branch, files, msg)
	return h.String(), err
}

func (s *Server) commitLocked(r *Repo, branch string, files map[string]string, msg string) (plumbing.Hash, error) {
	parent := r.refs["refs/heads/"+branch]
	baseTree := plumbing.ZeroHash
	var parents []plumbing.Hash
	if !parent.IsZero() {
		c, err := object.GetCommit(r.store, parent)
		if err != nil {
			return plumbing.ZeroHash, err
		}
		baseTree = c.TreeHash
		parents = []plumbing.Hash{parent}
	}
	var entries []gittree.Entry
	paths := make([]string, 0, len(files))
	for p := range files {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, p := range paths {
		if files[p] == "" {
			entries = append(entries, gittree.Entry{Path: p, Delete: true})
			continue
		}
		h, err := gittree.WriteBlob(r.store, []byte(files[p]))
		if err != nil {
			return plumbing.ZeroHash, err
		}
		entries = append(entries, gittree.Entry{Path: p, Mode: filemode.Regular, Hash: h})
	}
	tree, err := gittree.Build(r.store, baseTree, entries)
	if err != nil {
		return plumbing.ZeroHash, err
	}
	sig := object.Signature{Name: "Someone Else", Email: "someone@example.com", When: s.now()}
	h, err := gittree.WriteCommit(r.store, &object.Commit{Author: sig, Committer: sig, Message: msg, TreeHash: tree, ParentHashes: parents})
	if err != nil {
		return plumbing.ZeroHash, err
	}
	r.refs["refs/heads/"+branch] = h
	return h, nil
}

// Files returns every file at ref (a branch name or a SHA) with its content.
func (s *Server) Files(fullName, ref string) (map[string]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.repos[fullName]
	if r == nil {
		return nil, fmt.Errorf("no repo %s", fullName)
	}
	c, err := r.resolve(ref)
	if err != nil {
		return nil, err
	}
	hashes, err := gittree.Files(r.store, c.TreeHash)
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for p := range hashes {
		b, _, err := gittree.ReadFile(r.store, c.TreeHash, p)
		if err != nil {
			return nil, err
		}
		out[p] = string(b)
	}
	return out, nil
}

// File returns one file at ref (a branch name or a SHA) and whether it exists.
func (s *Server) File(fullName, ref, path string) (string, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.repos[fullName]
	if r == nil {
		return "", false, fmt.Errorf("no repo %s", fullName)
	}
	c, err := r.resolve(ref)
	if err != nil {
		return "", false, err
	}
	b, ok, err := gittree.ReadFile(r.store, c.TreeHash, path)
	return string(b), ok, err
}

// Ref returns the SHA a branch points at, or "".
func (s *Server) Ref(fullName, branch string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.repos[fullName]
	if r == nil {
		return ""
	}
	h, ok := r.refs["refs/heads/"+branch]
	if !ok {
		return ""
	}
	return h.String()
}

// CommitParents returns a commit's parent SHAs.
func (s *Server) CommitParents(fullName, sha string) ([]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.repos[fullName]
	if r == nil {
		return nil, fmt.Errorf("no repo %s", fullName)
	}
	c, err := object.GetCommit(r.store, plumbing.NewHash(sha))
	if err != nil {
		return nil, err
	}
	var out []string
	for _, p := range c.ParentHashes {
		out = append(out, p.String())
	}
	return out, nil
}

// Pulls returns copies of a repository's pull requests.
func (s *Server) Pulls(fullName string) []Pull {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.repos[fullName]
	if r == nil {
		return nil
	}
	out := make([]Pull, len(r.pulls))
	for i, p := range r.pulls {
		out[i] = *p
	}
	return out
}

// Repo returns a repository by owner/name, or nil.
func (s *Server) Repo(fullName string) *Repo {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.repos[fullName]
}

// SetCheckRuns records check runs for a commit SHA.
func (s *Server) SetCheckRuns(fullName, sha string, runs ...*github.CheckRun) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r := s.repos[fullName]; r != nil {
		r.checks[sha] = runs
	}
}

// Merge merges pull request number with a real merge commit on its base
// branch (a file-level three-way merge; a file changed on both sides is a conflict).
func (s *Server) Merge(fullName string, number int) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.repos[fullName]
	if r == nil {
		return "", fmt.Errorf("no repo %s", fullName)
	}
	var p *Pull
	for _, q := range r.pulls {
		if q.Number == number {
			p = q
		}
	}
	if p == nil || p.State != "open" {
		return "", fmt.Errorf("no open pull request #%d", number)
	}
	h, err := s.mergeLocked(r, p)
	if err != nil {
		return "", err
	}
	return h.String(), nil
}

func (s *Server) mergeLocked(r *Repo, p *Pull) (plumbing.Hash, error) {
	baseSHA := r.refs["refs/heads/"+p.BaseRef]
	headSHA := p.HeadRepo.refs["refs/heads/"+p.HeadRef]
	base, err := object.GetCommit(r.store, baseSHA)
	if err != nil {
		return plumbing.ZeroHash, err
	}
	head, err := object.GetCommit(r.store, headSHA)
	if err != nil {
		return plumbing.ZeroHash, err
	}
	mbs, err := base.MergeBase(head)
	if err != nil || len(mbs) == 0 {
		return plumbing.ZeroHash, fmt.Errorf("no merge base: %v", err)
	}
	mb := mbs[0]
	mbFiles, err := gittree.Files(r.store, mb.TreeHash)
	if err != nil {
		return plumbing.ZeroHash, err
	}
	baseFiles, err := gittree.Files(r.store, base.TreeHash)
	if err != nil {
		return plumbing.ZeroHash, err
	}
	headFiles, err := gittree.Files(r.store, head.TreeHash)
	if err != nil {
		return plumbing.ZeroHash, err
	}
	var entries []gittree.Entry
	seen := map[string]bool{}
	for _, m := range []map[string]plumbing.Hash{mbFiles, headFiles} {
		for path := range m {
			if seen[path] {
				continue
			}
			seen[path] = true
			hv, mv, bv := headFiles[path], mbFiles[path], baseFiles[path]
			if hv == mv {
				continue // unchanged on the PR side
			}
			if bv != mv && bv != hv {
				return plumbing.ZeroHash, fmt.Errorf("merge conflict in %s", path)
			}
			if hv.IsZero() {
				entries = append(entries, gittree.Entry{Path: path, Delete: true})
			} else {
				entries = append(entries, gittree.Entry{Path: path, Mode: filemode.Regular, Hash: hv})
			}
		}
	}
	tree, err := gittree.Build(r.store, base.TreeHash, entries)
	if err != nil {
		return plumbing.ZeroHash, err
	}
	sig := object.Signature{Name: "GitHub", Email: "noreply@github.com", When: s.now()}
	msg := fmt.Sprintf("Merge pull request #%d from %s:%s\n\n%s", p.Number, p.HeadRepo.Owner, p.HeadRef, p.Title)
	h, err := gittree.WriteCommit(r.store, &object.Commit{Author: sig, Committer: sig, Message: msg, TreeHash: tree,
		ParentHashes: []plumbing.Hash{baseSHA, headSHA}})
	if err != nil {
		return plumbing.ZeroHash, err
	}
	r.refs["refs/heads/"+p.BaseRef] = h
	p.State, p.Merged, p.MergeCommit, p.mergedHeadSHA = "closed", true, h, headSHA
	p.closedAt, p.mergedAt = s.now(), s.now()
	return h, nil
}

// ClosePull closes a pull request without merging.
func (s *Server) ClosePull(fullName string, number int) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.repos[fullName]
	if r == nil {
		return fmt.Errorf("no repo %s", fullName)
	}
	for _, p := range r.pulls {
		if p.Number == number {
			p.State, p.closedAt = "closed", s.now()
			return nil
		}
	}
	return fmt.Errorf("no pull request #%d", number)
}

func (r *Repo) resolve(ref string) (*object.Commit, error) {
	h, ok := r.refs["refs/heads/"+strings.TrimPrefix(ref, "refs/heads/")]
	if !ok {
		if !plumbing.IsHash(ref) {
			return nil, fmt.Errorf("no ref %s", ref)
		}
		h = plumbing.NewHash(ref)
	}
	return object.GetCommit(r.store, h)
}

func (s *Server) route(w http.ResponseWriter, req *http.Request, r *Repo, rest []string) {
	m := req.Method
	at := func(n int, name string) bool { return len(rest) > n && rest[n] == name }
	isWrite := m != http.MethodGet
	if isWrite && !r.Push && !(len(rest) >= 1 && (rest[0] == "forks" || rest[0] == "pulls")) {
		writeErr(w, http.StatusForbidden, fmt.Sprintf("Permission to %s denied to %s.", r.FullName(), s.user))
		return
	}
	if r.notReady > 0 && len(rest) > 0 && rest[0] != "forks" {
		r.notReady--
		writeErr(w, http.StatusConflict, "Git Repository is empty.")
		return
	}
	setDoc(w, endpointDoc(m, rest))
	switch {
	case len(rest) == 0 && m == http.MethodGet:
		writeJSON(w, 200, s.repoJSON(r))
	case at(0, "forks") && m == http.MethodPost:
		s.fork(w, r)
	case at(0, "branches") && len(rest) >= 2 && m == http.MethodGet:
		s.getBranch(w, r, strings.Join(rest[1:], "/"))
	case at(0, "contents") && m == http.MethodGet:
		s.getContents(w, req, r, strings.Join(rest[1:], "/"))
	case at(0, "git") && at(1, "ref") && len(rest) >= 3 && m == http.MethodGet:
		s.getRef(w, r, "refs/"+strings.Join(rest[2:], "/"))
	case at(0, "git") && at(1, "refs") && len(rest) == 2 && m == http.MethodPost:
		s.createRef(w, req, r)
	case at(0, "git") && at(1, "refs") && len(rest) >= 3 && m == http.MethodPatch:
		s.updateRef(w, req, r, "refs/"+strings.Join(rest[2:], "/"))
	case at(0, "git") && at(1, "blobs") && len(rest) == 2 && m == http.MethodPost:
		s.createBlob(w, req, r)
	case at(0, "git") && at(1, "blobs") && len(rest) == 3 && m == http.MethodGet:
		s.getBlob(w, r, rest[2])
	case at(0, "git") && at(1, "trees") && len(rest) == 2 && m == http.MethodPost:
		s.createTree(w, req, r)
	case at(0, "git") && at(1, "trees") && len(rest) == 3 && m == http.MethodGet:
		s.getTree(w, req, r, rest[2])
	case at(0, "git") && at(1, "commits") && len(rest) == 3 && m == http.MethodGet:
		s.getCommit(w, r, rest[2])
	case at(0, "git") && at(1, "commits") && len(rest) == 2 && m == http.MethodPost:
		s.createCommit(w, req, r)
	case at(0, "pulls") && len(rest) == 1 && m == http.MethodGet:
		s.listPulls(w, req, r)
	case at(0, "pulls") && len(rest) == 1 && m == http.MethodPost:
		s.createPull(w, req, r)
	case at(0, "pulls") && len(rest) == 2 && (m == http.MethodGet || m == http.MethodPatch):
		s.pull(w, req, r, rest[1])
	case at(0, "commits") && len(rest) == 3 && rest[2] == "check-runs" && m == http.MethodGet:
		sha := rest[1]
		if c, err := r.resolve(rest[1]); err == nil {
			sha = c.Hash.String()
		}
		writeJSON(w, 200, s.checkRunsJSON(r, sha, r.checks[sha]))
	default:
		writeErr(w, 404, "Not Found")
	}
}

func (s *Server) fork(w http.ResponseWriter, r *Repo) {
	name := s.user + "/" + r.Name
	f := s.repos[name]
	if f == nil {
		f = &Repo{Owner: s.user, Name: r.Name, DefaultBranch: r.DefaultBranch, Push: true, parent: r,
			store: r.store, refs: map[string]plumbing.Hash{}, checks: map[string][]*github.CheckRun{}, notReady: s.ForkPolls}
		for k, v := range r.refs {
			f.refs[k] = v
		}
		s.repos[name] = f
	}
	writeJSON(w, http.StatusAccepted, s.repoJSON(f))
}

func (s *Server) getBranch(w http.ResponseWriter, r *Repo, branch string) {
	h, ok := r.refs["refs/heads/"+branch]
	if !ok {
		writeErr(w, 404, "Branch not found")
		return
	}
	c, err := object.GetCommit(r.store, h)
	if err != nil {
		writeErr(w, 500, err.Error())
		return
	}
	writeJSON(w, 200, s.branchJSON(r, branch, c))
}

// getContents serves "Get repository content" with its documented size
// limits (Limits.ContentsMax, Limits.BlobMax): a file above 1 MB comes back
// with content "" and encoding "none" (the default and object media types),
// or raw with the raw media type; above 100 MB the endpoint refuses.
// https://docs.github.com/rest/repos/contents#get-repository-content
func (s *Server) getContents(w http.ResponseWriter, req *http.Request, r *Repo, p string) {
	ref := req.URL.Query().Get("ref")
	if ref == "" {
		ref = r.DefaultBranch
	}
	c, err := r.resolve(ref)
	if err != nil {
		writeErr(w, 404, "No commit found for the ref "+ref)
		return
	}
	root, err := object.GetTree(r.store, c.TreeHash)
	if err != nil {
		writeErr(w, 500, err.Error())
		return
	}
	dir := root
	if p != "" {
		e, err := root.FindEntry(p)
		if err != nil {
			writeErr(w, 404, "Not Found")
			return
		}
		if e.Mode.IsFile() {
			s.contentFile(w, req, r, ref, p, e.Hash)
			return
		}
		if dir, err = object.GetTree(r.store, e.Hash); err != nil {
			writeErr(w, 500, err.Error())
			return
		}
	}
	out := []obj{}
	for _, e := range dir.Entries {
		ep := e.Name
		if p != "" {
			ep = p + "/" + e.Name
		}
		if e.Mode.IsFile() {
			size, _ := r.store.EncodedObject(plumbing.BlobObject, e.Hash)
			n := 0
			if size != nil {
				n = int(size.Size())
			}
			out = append(out, s.contentJSON(r, ref, "file", ep, e.Hash.String(), n))
		} else {
			out = append(out, s.contentJSON(r, ref, "dir", ep, e.Hash.String(), 0))
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i]["name"].(string) < out[j]["name"].(string) })
	writeJSON(w, 200, out)
}

// rawMedia reports whether Accept asks for the raw media type
// ("Media types", https://docs.github.com/rest/using-the-rest-api/getting-started-with-the-rest-api#media-types).
func rawMedia(accept string) bool {
	for _, a := range strings.Split(accept, ",") {
		a, _, _ = strings.Cut(strings.TrimSpace(a), ";")
		switch a {
		case "application/vnd.github.raw", "application/vnd.github.raw+json", "application/vnd.github.v3.raw":
			return true
		}
	}
	return false
}

func (s *Server) contentFile(w http.ResponseWriter, req *http.Request, r *Repo, ref, p string, h plumbing.Hash) {
	b, err := readBlob(r, h)
	if err != nil {
		writeErr(w, 500, err.Error())
		return
	}
	if len(b) > s.limits.BlobMax {
		writeErrResource(w, 403, "This API returns blobs up to 100 MB in size. The requested blob is too large to fetch via the API.", "Blob", "too_large")
		return
	}
	if rawMedia(req.Header.Get("Accept")) {
		w.Header().Set("Content-Type", "application/vnd.github.raw")
		w.WriteHeader(200)
		_, _ = w.Write(b)
		return
	}
	f := s.contentJSON(r, ref, "file", p, h.String(), len(b))
	f["content"], f["encoding"] = encodeBase64(b), "base64"
	if len(b) > s.limits.ContentsMax {
		f["content"], f["encoding"] = "", "none"
	}
	writeJSON(w, 200, f)
}

func readBlob(r *Repo, h plumbing.Hash) ([]byte, error) {
	blob, err := object.GetBlob(r.store, h)
	if err != nil {
		return nil, err
	}
	rd, err := blob.Reader()
	if err != nil {
		return nil, err
	}
	defer rd.Close()
	return io.ReadAll(rd)
}

// getBlob serves "Get a blob" (base64, the default media type), up to
// Limits.BlobMax. https://docs.github.com/rest/git/blobs#get-a-blob
func (s *Server) getBlob(w http.ResponseWriter, r *Repo, sha string) {
	if !plumbing.IsHash(sha) {
		writeErr(w, 422, "Validation Failed")
		return
	}
	b, err := readBlob(r, plumbing.NewHash(sha))
	if err != nil {
		writeErr(w, 404, "Not Found")
		return
	}
	if len(b) > s.limits.BlobMax {
		writeErrResource(w, 403, "This API returns blobs up to 100 MB in size.", "Blob", "too_large")
		return
	}
	writeJSON(w, 200, s.blobJSON(r, sha, b))
}

// endpointDoc is the documentation page of the endpoint a request is for,
// the documentation_url of its errors (each operation's externalDocs in
// GitHub's OpenAPI description).
func endpointDoc(m string, rest []string) string {
	at := func(n int, name string) bool { return len(rest) > n && rest[n] == name }
	switch {
	case len(rest) == 0:
		return "https://docs.github.com/rest/repos/repos#get-a-repository"
	case at(0, "forks"):
		return "https://docs.github.com/rest/repos/forks#create-a-fork"
	case at(0, "branches"):
		return "https://docs.github.com/rest/branches/branches#get-a-branch"
	case at(0, "contents"):
		return "https://docs.github.com/rest/repos/contents#get-repository-content"
	case at(0, "git") && at(1, "ref"):
		return "https://docs.github.com/rest/git/refs#get-a-reference"
	case at(0, "git") && at(1, "refs") && m == http.MethodPost:
		return "https://docs.github.com/rest/git/refs#create-a-reference"
	case at(0, "git") && at(1, "refs"):
		return "https://docs.github.com/rest/git/refs#update-a-reference"
	case at(0, "git") && at(1, "blobs") && m == http.MethodPost:
		return "https://docs.github.com/rest/git/blobs#create-a-blob"
	case at(0, "git") && at(1, "blobs"):
		return "https://docs.github.com/rest/git/blobs#get-a-blob"
	case at(0, "git") && at(1, "trees") && m == http.MethodPost:
		return "https://docs.github.com/rest/git/trees#create-a-tree"
	case at(0, "git") && at(1, "trees"):
		return "https://docs.github.com/rest/git/trees#get-a-tree"
	case at(0, "git") && at(1, "commits") && m == http.MethodPost:
		return "https://docs.github.com/rest/git/commits#create-a-commit"
	case at(0, "git") && at(1, "commits"):
		return "https://docs.github.com/rest/git/commits#get-a-commit-object"
	case at(0, "pulls") && len(rest) == 1 && m == http.MethodPost:
		return "https://docs.github.com/rest/pulls/pulls#create-a-pull-request"
	case at(0, "pulls") && len(rest) == 1:
		return "https://docs.github.com/rest/pulls/pulls#list-pull-requests"
	case at(0, "pulls") && m == http.MethodPatch:
		return "https://docs.github.com/rest/pulls/pulls#update-a-pull-request"
	case at(0, "pulls"):
		return "https://docs.github.com/rest/pulls/pulls#get-a-pull-request"
	case at(0, "commits"):
		return "https://docs.github.com/rest/checks/runs#list-check-runs-for-a-git-reference"
	}
	return docRoot
}

func (s *Server) getRef(w http.ResponseWriter, r *Repo, name string) {
	h, ok := r.refs[name]
	if !ok {
		writeErr(w, 404, "Not Found")
		return
	}
	writeJSON(w, 200, s.refJSON(r, name, h))
}

func decode(w http.ResponseWriter, req *http.Request, v any) bool {
	if err := json.NewDecoder(req.Body).Decode(v); err != nil {
		writeErr(w, 400, "Problems parsing JSON")
		return false
	}
	return true
}

func (s *Server) hasCommit(r *Repo, sha string) bool {
	_, err := object.GetCommit(r.store, plumbing.NewHash(sha))
	return plumbing.IsHash(sha) && err == nil
}

func (s *Server) createRef(w http.ResponseWriter, req *http.Request, r *Repo) {
	var in struct {
		Ref string `json:"ref"`
		SHA string `json:"sha"`
	}
	if !decode(w, req, &in) {
		return
	}
	if !strings.HasPrefix(in.Ref, "refs/") || strings.Count(in.Ref, "/") < 2 {
		writeErr(w, 422, "Reference name must start with 'refs/' and have at least two slashes.")
		return
	}
	if _, ok := r.refs[in.Ref]; ok {
		writeErr(w, 422, "Reference already exists")
		return
	}
	if !s.hasCommit(r, in.SHA) {
		writeErr(w, 422, "Object does not exist")
		return
	}
	h := plumbing.NewHash(in.SHA)
	r.refs[in.Ref] = h
	w.Header().Set("Location", s.apiURL(r, "git/"+in.Ref))
	writeJSON(w, 201, s.refJSON(r, in.Ref, h))
}

func (s *Server) updateRef(w http.ResponseWriter, req *http.Request, r *Repo, name string) {
	var in struct {
		SHA   string `json:"sha"`
		Force bool   `json:"force"`
	}
	if !decode(w, req, &in) {
		return
	}
	old, ok := r.refs[name]
	if !ok {
		writeErr(w, 422, "Reference does not exist")
		return
	}
	if !s.hasCommit(r, in.SHA) {
		writeErr(w, 422, "Object does not exist")
		return
	}
	h := plumbing.NewHash(in.SHA)
	if !in.Force {
		nc, _ := object.GetCommit(r.store, h)
		oc, _ := object.GetCommit(r.store, old)
		if ok, err := oc.IsAncestor(nc); err != nil || !ok {
			writeErr(w, 422, "Update is not a fast forward")
			return
		}
	}
	r.refs[name] = h
	writeJSON(w, 200, s.refJSON(r, name, h))
}

func (s *Server) createBlob(w http.ResponseWriter, req *http.Request, r *Repo) {
	var in github.Blob
	if !decode(w, req, &in) {
		return
	}
	data := []byte(in.GetContent())
	if in.GetEncoding() == "base64" {
		var err error
		if data, err = decodeBase64(in.GetContent()); err != nil {
			writeErr(w, 422, "bad base64")
			return
		}
	}
	h, err := gittree.WriteBlob(r.store, data)
	if err != nil {
		writeErr(w, 500, err.Error())
		return
	}
	// schema short-blob
	w.Header().Set("Location", s.apiURL(r, "git/blobs/"+h.String()))
	writeJSON(w, 201, obj{"sha": h.String(), "url": s.apiURL(r, "git/blobs/"+h.String())})
}

func (s *Server) createTree(w http.ResponseWriter, req *http.Request, r *Repo) {
	var in struct {
		BaseTree string              `json:"base_tree"`
		Tree     []*github.TreeEntry `json:"tree"`
	}
	if !decode(w, req, &in) {
		return
	}
	base := plumbing.ZeroHash
	if in.BaseTree != "" {
		base = plumbing.NewHash(in.BaseTree)
		if _, err := object.GetTree(r.store, base); err != nil {
			writeErr(w, 422, "base_tree is not a valid tree oid")
			return
		}
	}
	var entries []gittree.Entry
	for _, e := range in.Tree {
		mode, err := filemode.New(e.GetMode())
		// A blob entry is a file, an executable or a symlink (GitHub refuses other modes).
		if err != nil || e.GetType() != "blob" || (mode != filemode.Regular && mode != filemode.Executable && mode != filemode.Symlink) {
			writeErr(w, 422, "tree.mode or tree.type invalid for "+e.GetPath())
			return
		}
		switch {
		case e.Content != nil:
			h, err := gittree.WriteBlob(r.store, []byte(e.GetContent()))
			if err != nil {
				writeErr(w, 500, err.Error())
				return
			}
			entries = append(entries, gittree.Entry{Path: e.GetPath(), Mode: mode, Hash: h})
		case e.SHA != nil:
			h := plumbing.NewHash(e.GetSHA())
			if _, err := r.store.EncodedObject(plumbing.BlobObject, h); err != nil {
				writeErr(w, 422, "tree.sha "+e.GetSHA()+" is not a valid blob")
				return
			}
			entries = append(entries, gittree.Entry{Path: e.GetPath(), Mode: mode, Hash: h})
		default:
			entries = append(entries, gittree.Entry{Path: e.GetPath(), Delete: true})
		}
	}
	h, err := gittree.Build(r.store, base, entries)
	if err != nil {
		writeErr(w, 422, err.Error())
		return
	}
	w.Header().Set("Location", s.apiURL(r, "git/trees/"+h.String()))
	s.writeTree(w, 201, r, h, false)
}

func (s *Server) getCommit(w http.ResponseWriter, r *Repo, sha string) {
	if !s.hasCommit(r, sha) {
		writeErr(w, 404, "Not Found")
		return
	}
	c, _ := object.GetCommit(r.store, plumbing.NewHash(sha))
	writeJSON(w, 200, s.commitJSON(r, c))
}

func (s *Server) createCommit(w http.ResponseWriter, req *http.Request, r *Repo) {
	var in struct {
		Message string   `json:"message"`
		Tree    string   `json:"tree"`
		Parents []string `json:"parents"`
	}
	if !decode(w, req, &in) {
		return
	}
	tree := plumbing.NewHash(in.Tree)
	if _, err := object.GetTree(r.store, tree); err != nil {
		writeErr(w, 422, "Tree SHA does not exist")
		return
	}
	var parents []plumbing.Hash
	for _, p := range in.Parents {
		if !s.hasCommit(r, p) {
			writeErr(w, 422, "Parent SHA does not exist or is not a commit object")
			return
		}
		parents = append(parents, plumbing.NewHash(p))
	}
	sig := object.Signature{Name: s.user, Email: s.user + "@users.noreply.github.com", When: s.now()}
	h, err := gittree.WriteCommit(r.store, &object.Commit{Author: sig, Committer: sig, Message: in.Message, TreeHash: tree, ParentHashes: parents})
	if err != nil {
		writeErr(w, 500, err.Error())
		return
	}
	c, _ := object.GetCommit(r.store, h)
	w.Header().Set("Location", s.apiURL(r, "git/commits/"+h.String()))
	writeJSON(w, 201, s.commitJSON(r, c))
}

func (s *Server) headRepo(r *Repo, head string) (*Repo, string) {
	owner, ref, ok := strings.Cut(head, ":")
	if !ok {
		return r, head
	}
	if owner == r.Owner {
		return r, ref
	}
	return s.repos[owner+"/"+r.Name], ref
}

func (s *Server) listPulls(w http.ResponseWriter, req *http.Request, r *Repo) {
	q := req.URL.Query()
	state := q.Get("state")
	if state == "" {
		state = "open"
	}
	out := []obj{}
	for i := len(r.pulls) - 1; i >= 0; i-- { // newest first
		p := r.pulls[i]
		if state != "all" && p.State != state {
			continue
		}
		// GitHub ignores a head without its "owner:" prefix.
		if h := q.Get("head"); strings.Contains(h, ":") {
			hr, ref := s.headRepo(r, h)
			if hr != p.HeadRepo || ref != p.HeadRef {
				continue
			}
		}
		if b := q.Get("base"); b != "" && b != p.BaseRef {
			continue
		}
		// A listed pull request is GitHub's "pull-request-simple": it has
		// merged_at but no merged field.
		out = append(out, s.pullJSON(p, true))
	}
	writeJSON(w, 200, out)
}

func (s *Server) createPull(w http.ResponseWriter, req *http.Request, r *Repo) {
	var in github.NewPullRequest
	if !decode(w, req, &in) {
		return
	}
	hr, ref := s.headRepo(r, in.GetHead())
	if hr == nil || (hr != r && hr.parent != r) {
		writeErr(w, 422, "Validation Failed", "head is invalid")
		return
	}
	headSHA, ok := hr.refs["refs/heads/"+ref]
	if !ok {
		writeErr(w, 422, "Validation Failed", "head does not exist")
		return
	}
	baseSHA, ok := r.refs["refs/heads/"+in.GetBase()]
	if !ok {
		writeErr(w, 422, "Validation Failed", "base does not exist")
		return
	}
	for _, p := range r.pulls {
		if p.State == "open" && p.HeadRepo == hr && p.HeadRef == ref && p.BaseRef == in.GetBase() {
			writeErr(w, 422, "Validation Failed", fmt.Sprintf("A pull request already exists for %s:%s.", hr.Owner, ref))
			return
		}
	}
	hc, _ := object.GetCommit(r.store, headSHA)
	bc, _ := object.GetCommit(r.store, baseSHA)
	// No commits between: the head is already in the base (as GitHub judges).
	inBase := hc == nil || bc == nil
	if !inBase {
		inBase, _ = hc.IsAncestor(bc)
	}
	if inBase {
		writeErr(w, 422, "Validation Failed", "No commits between "+in.GetBase()+" and "+ref)
		return
	}
	p := &Pull{Number: len(r.pulls) + 1, Title: in.GetTitle(), Body: in.GetBody(), HeadRepo: hr, HeadRef: ref,
		BaseRef: in.GetBase(), State: "open", base: r, createdAt: s.now()}
	r.pulls = append(r.pulls, p)
	w.Header().Set("Location", s.apiURL(r, fmt.Sprintf("pulls/%d", p.Number)))
	writeJSON(w, 201, s.pullJSON(p, false))
}

func (s *Server) pull(w http.ResponseWriter, req *http.Request, r *Repo, num string) {
	var p *Pull
	for _, q := range r.pulls {
		if fmt.Sprint(q.Number) == num {
			p = q
		}
	}
	if p == nil {
		writeErr(w, 404, "Not Found")
		return
	}
	if req.Method == http.MethodPatch {
		var in github.PullRequest
		if !decode(w, req, &in) {
			return
		}
		if in.Title != nil {
			p.Title = in.GetTitle()
		}
		if in.Body != nil {
			p.Body = in.GetBody()
		}
		if in.State != nil && in.GetState() != p.State {
			p.State = in.GetState()
			p.closedAt = time.Time{}
			if p.State == "closed" {
				p.closedAt = s.now()
			}
		}
	}
	writeJSON(w, 200, s.pullJSON(p, false))
}

// OpenPullLocked opens a pull request from a branch of the same repository;
// for Fault.Before hooks, which run with the server locked.
func (s *Server) OpenPullLocked(fullName, head, base, title, body string) {
	r := s.repos[fullName]
	r.pulls = append(r.pulls, &Pull{Number: len(r.pulls) + 1, Title: title, Body: body, HeadRepo: r, HeadRef: head,
		BaseRef: base, State: "open", base: r, createdAt: s.now()})
}

// CommitLocked is Commit for Fault.Before hooks.
func (s *Server) CommitLocked(fullName, branch string, files map[string]string) {
	if r := s.repos[fullName]; r != nil {
		_, _ = s.commitLocked(r, branch, files, "concurrent change")
	}
}
