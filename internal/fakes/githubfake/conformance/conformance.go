// Package conformance judges GitHub API traffic (the githubfake's recorded
// exchanges) against GitHub's own published descriptions of its APIs: the
// REST OpenAPI descriptions of api.github.com and GitHub Enterprise Server
// 3.19 (npm @octokit/openapi) and the public GraphQL schema (npm
// @octokit/graphql-schema), fetched pinned into the test-bin cache by
// `make testbin` (hack/testbin/github-api). The judging is done by
// maintained validators: kin-openapi's openapi3filter for REST requests and
// responses, gqlparser's validator for GraphQL documents.
//
// What is checked, per exchange:
//   - the request: an operation exists for its method and path in both
//     REST descriptions, and its path and query parameters and JSON body
//     validate against that operation's (openapi3filter.ValidateRequest);
//   - the answer (against api.github.com, the GitHub the fake models): a
//     documented status validates against the documented response,
//     required fields included (openapi3filter.ValidateResponse); a status
//     GitHub may answer any request with (redirects, 304, 401, 403, 429,
//     5xx) must be GitHub's error shape with a documentation_url; any other
//     undocumented status is a problem; a documented Location header of a
//     201 must be there; every answer carries the x-ratelimit-* headers;
//   - a GraphQL request: its document and variables validate against the
//     schema (gqlparser.LoadQuery, validator.VariableValues).
//
// Descriptions load once per test binary (about 1.5 s each).
package conformance

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/vektah/gqlparser/v2"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/parser"
	"github.com/vektah/gqlparser/v2/validator"

	"github.com/spirepod/spirepod/internal/fakes/githubfake"
)

// Component and Version name the test-bin cache directory
// <root>/github-api-<Version>; hack/testbin/github-api/component.sh pins
// the same npm versions.
const (
	Component = "github-api"
	Version   = "openapi-23.0.2-graphql-15.26.1"
)

// Files of the component, relative to Dir.
const (
	RESTGitHubCom = "openapi/api.github.com.json"
	RESTGHES      = "openapi/ghes-3.19.json"
	GraphQLSchema = "graphql/schema.graphql"
)

// Root is the test-bin cache, located as internal/testbed.DefaultRoot does:
// $SPIREPOD_TESTBIN, else $SPIREPOD_TESTBIN_CACHE, else
// $XDG_CACHE_HOME/spirepod/testbin (~/.cache without XDG_CACHE_HOME).
func Root() string {
	if r := os.Getenv("SPIREPOD_TESTBIN"); r != "" {
		return r
	}
	if r := os.Getenv("SPIREPOD_TESTBIN_CACHE"); r != "" {
		return r
	}
	base := os.Getenv("XDG_CACHE_HOME")
	if base == "" {
		home, _ := os.UserHomeDir()
		base = filepath.Join(home, ".cache")
	}
	return filepath.Join(base, "spirepod", "testbin")
}

// Dir is the component's directory in the cache.
func Dir() string { return filepath.Join(Root(), Component+"-"+Version) }

// Missing lists the description files that are not in the cache.
func Missing() []string {
	var out []string
	for _, f := range []string{RESTGitHubCom, RESTGHES, GraphQLSchema} {
		if _, err := os.Stat(filepath.Join(Dir(), f)); err != nil {
			out = append(out, f)
		}
	}
	return out
}

// MissingMessage says what is missing and how to get it; "" when nothing is.
func MissingMessage() string {
	m := Missing()
	if len(m) == 0 {
		return ""
	}
	return fmt.Sprintf("GitHub API descriptions missing under %s (run `make testbin`, or hack/testbin.sh %s): %s",
		Dir(), Component, strings.Join(m, ", "))
}

// Required reports whether missing descriptions fail instead of skipping:
// SPIREPOD_REQUIRE_TESTBED=1, as `make test` sets (internal/testbed.Require's convention).
func Required() bool { return os.Getenv("SPIREPOD_REQUIRE_TESTBED") == "1" }

// Require loads the descriptions, or skips the test when they are missing
// (fails it under SPIREPOD_REQUIRE_TESTBED=1).
func Require(t testing.TB) *Descriptions {
	t.Helper()
	if msg := MissingMessage(); msg != "" {
		if Required() {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	d, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// Descriptions are GitHub's API descriptions, loaded.
type Descriptions struct {
	// REST are api.github.com's (requests and answers are judged) and GHES
	// 3.19's (requests are judged).
	REST    []*API
	GraphQL *ast.Schema
}

// API is one OpenAPI description with its operations indexed by path.
//
// The description is read with encoding/json into its raw parts, and the
// routes are built from every path of it; an operation is loaded with
// kin-openapi only when a request first matches it, as a description of
// that one path item with every component it refers to (transitively).
// kin-openapi then judges the request and the answer as it would with the
// whole description, but the whole 13 MB is never loaded (which took 2.6 s
// of CPU per process for two descriptions).
type API struct {
	Name   string
	raw    rawDescription
	routes []*route
}

// rawDescription is an OpenAPI description's parts as JSON.
type rawDescription struct {
	OpenAPI    json.RawMessage                       `json:"openapi"`
	Info       json.RawMessage                       `json:"info"`
	Paths      map[string]map[string]json.RawMessage `json:"paths"`
	Components map[string]map[string]json.RawMessage `json:"components"`
}

type route struct {
	method string
	tmpl   string
	segs   []string
	// multi marks parameters whose value spans segments (x-multi-segment,
	// and a contents path).
	multi    map[string]bool
	literals int
	api      *API
	// The operation, loaded on first use (resolve).
	once    sync.Once
	loadErr error
	doc     *openapi3.T
	item    *openapi3.PathItem
	op      *openapi3.Operation
}

var (
	loadOnce sync.Once
	loaded   *Descriptions
	loadErr  error
)

// Load reads the descriptions from Dir, once per process.
func Load() (*Descriptions, error) {
	loadOnce.Do(func() {
		if msg := MissingMessage(); msg != "" {
			loadErr = errors.New(msg)
			return
		}
		d := &Descriptions{}
		for _, f := range []struct{ name, file string }{{"api.github.com", RESTGitHubCom}, {"GHES 3.19", RESTGHES}} {
			a, err := loadAPI(f.name, filepath.Join(Dir(), f.file))
			if err != nil {
				loadErr = err
				return
			}
			d.REST = append(d.REST, a)
		}
		b, err := os.ReadFile(filepath.Join(Dir(), GraphQLSchema))
		if err != nil {
			loadErr = err
			return
		}
		if d.GraphQL, err = loadGraphQL(string(b)); err != nil {
			loadErr = fmt.Errorf("load %s: %w", GraphQLSchema, err)
			return
		}
		loaded = d
	})
	return loaded, loadErr
}

// loadGraphQL parses GitHub's schema and validates it with gqlparser.
// GitHub's published schema defines a few fields twice with the same
// type (EnterpriseOwnerInfo.repositoryDeployKeySetting in 15.26.1), which
// GraphQL's rules refuse; the second definition of a field that is the
// same as the first is dropped before validation. A duplicate that
// differs stays, and fails the load.
func loadGraphQL(sdl string) (*ast.Schema, error) {
	sd, err := parser.ParseSchemas(validator.Prelude, &ast.Source{Name: GraphQLSchema, Input: sdl})
	if err != nil {
		return nil, err
	}
	for _, defs := range []ast.DefinitionList{sd.Definitions, sd.Extensions} {
		for _, def := range defs {
			seen := map[string]*ast.FieldDefinition{}
			var fields ast.FieldList
			for _, f := range def.Fields {
				if first := seen[f.Name]; first != nil && first.Type.String() == f.Type.String() && len(first.Arguments) == len(f.Arguments) {
					continue
				}
				seen[f.Name] = f
				fields = append(fields, f)
			}
			def.Fields = fields
		}
	}
	return validator.ValidateSchemaDocument(sd)
}

var httpMethods = map[string]string{"get": "GET", "put": "PUT", "post": "POST", "delete": "DELETE",
	"options": "OPTIONS", "head": "HEAD", "patch": "PATCH", "trace": "TRACE"}

func loadAPI(name, file string) (*API, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	a := &API{Name: name}
	if err := json.Unmarshal(b, &a.raw); err != nil {
		return nil, fmt.Errorf("load %s: %w", file, err)
	}
	if len(a.raw.Paths) == 0 {
		return nil, fmt.Errorf("load %s: no paths", file)
	}
	for tmpl, item := range a.raw.Paths {
		itemParams, err := a.pathParams(item["parameters"])
		if err != nil {
			return nil, fmt.Errorf("load %s: %s: %w", file, tmpl, err)
		}
		for key, opRaw := range item {
			method, ok := httpMethods[key]
			if !ok {
				continue
			}
			var op struct {
				Parameters json.RawMessage `json:"parameters"`
			}
			if err := json.Unmarshal(opRaw, &op); err != nil {
				return nil, fmt.Errorf("load %s: %s %s: %w", file, method, tmpl, err)
			}
			opParams, err := a.pathParams(op.Parameters)
			if err != nil {
				return nil, fmt.Errorf("load %s: %s %s: %w", file, method, tmpl, err)
			}
			rt := &route{method: method, tmpl: tmpl, segs: strings.Split(strings.Trim(tmpl, "/"), "/"), multi: map[string]bool{}, api: a}
			for _, ps := range [][]rawParam{itemParams, opParams} {
				for _, p := range ps {
					if p.XMultiSegment || p.Name == "path" {
						rt.multi[p.Name] = true
					}
				}
			}
			for _, s := range rt.segs {
				if !strings.HasPrefix(s, "{") {
					rt.literals++
				}
			}
			a.routes = append(a.routes, rt)
		}
	}
	// Most literal segments first: .../commits/{ref}/check-runs before
	// .../commits/{ref}, whose multi-segment {ref} would also match it.
	sort.Slice(a.routes, func(i, j int) bool {
		if a.routes[i].literals != a.routes[j].literals {
			return a.routes[i].literals > a.routes[j].literals
		}
		if a.routes[i].tmpl != a.routes[j].tmpl {
			return a.routes[i].tmpl < a.routes[j].tmpl
		}
		return a.routes[i].method < a.routes[j].method
	})
	return a, nil
}

type rawParam struct {
	Ref           string `json:"$ref"`
	Name          string `json:"name"`
	In            string `json:"in"`
	XMultiSegment bool   `json:"x-multi-segment"`
}

// pathParams are the path parameters of a parameters list, references to
// components resolved.
func (a *API) pathParams(list json.RawMessage) ([]rawParam, error) {
	if len(list) == 0 {
		return nil, nil
	}
	var ps []rawParam
	if err := json.Unmarshal(list, &ps); err != nil {
		return nil, err
	}
	var out []rawParam
	for _, p := range ps {
		if p.Ref != "" {
			section, name, ok := componentRef(p.Ref)
			raw := a.raw.Components[section][name]
			if !ok || raw == nil {
				return nil, fmt.Errorf("parameter %s: not in the description", p.Ref)
			}
			if err := json.Unmarshal(raw, &p); err != nil {
				return nil, err
			}
		}
		if p.In == "path" {
			out = append(out, p)
		}
	}
	return out, nil
}

// componentRef splits "#/components/<section>/<name>" (JSON pointer
// escapes undone).
func componentRef(ref string) (section, name string, ok bool) {
	rest, ok := strings.CutPrefix(ref, "#/components/")
	if !ok {
		return "", "", false
	}
	section, name, ok = strings.Cut(rest, "/")
	if !ok || strings.Contains(name, "/") {
		return "", "", false
	}
	return section, strings.NewReplacer("~1", "/", "~0", "~").Replace(name), true
}

var refRE = regexp.MustCompile(`"\$ref"\s*:\s*"([^"]*)"`)

// resolve loads the route's operation: a description holding its path
// item and, transitively, every component it refers to (and basic-error,
// GitHub's error answer).
func (rt *route) resolve() error {
	rt.once.Do(func() {
		a := rt.api
		item := a.raw.Paths[rt.tmpl]
		comps := map[string]map[string]json.RawMessage{}
		var queue []json.RawMessage
		add := func(section, name string) error {
			if comps[section][name] != nil {
				return nil
			}
			raw := a.raw.Components[section][name]
			if raw == nil {
				return fmt.Errorf("#/components/%s/%s is not in %s's description", section, name, a.Name)
			}
			if comps[section] == nil {
				comps[section] = map[string]json.RawMessage{}
			}
			comps[section][name] = raw
			queue = append(queue, raw)
			return nil
		}
		for _, raw := range item {
			queue = append(queue, raw)
		}
		if err := add("schemas", "basic-error"); err != nil {
			rt.loadErr = err
			return
		}
		for len(queue) > 0 {
			raw := queue[0]
			queue = queue[1:]
			for _, m := range refRE.FindAllSubmatch(raw, -1) {
				section, name, ok := componentRef(string(m[1]))
				if !ok {
					rt.loadErr = fmt.Errorf("%s %s: reference %s outside the description's components", rt.method, rt.tmpl, m[1])
					return
				}
				if err := add(section, name); err != nil {
					rt.loadErr = err
					return
				}
			}
		}
		mini, err := json.Marshal(map[string]any{"openapi": a.raw.OpenAPI, "info": a.raw.Info,
			"paths": map[string]any{rt.tmpl: item}, "components": comps})
		if err != nil {
			rt.loadErr = err
			return
		}
		doc, err := openapi3.NewLoader().LoadFromData(mini)
		if err != nil {
			rt.loadErr = fmt.Errorf("load %s %s of %s's description: %w", rt.method, rt.tmpl, a.Name, err)
			return
		}
		rt.doc = doc
		rt.item = doc.Paths.Value(rt.tmpl)
		if rt.item != nil {
			rt.op = rt.item.GetOperation(rt.method)
		}
		if rt.op == nil {
			rt.loadErr = fmt.Errorf("%s %s: no operation in %s's description", rt.method, rt.tmpl, a.Name)
		}
	})
	return rt.loadErr
}

// match finds the operation for method and a path (segments unescaped).
func (a *API) match(method string, segs []string) (*route, map[string]string) {
	for i := range a.routes {
		rt := a.routes[i]
		if rt.method != method {
			continue
		}
		params := map[string]string{}
		if matchSegs(rt, rt.segs, segs, params) {
			return rt, params
		}
	}
	return nil, nil
}

func matchSegs(rt *route, tmpl, segs []string, params map[string]string) bool {
	if len(tmpl) == 0 {
		return len(segs) == 0
	}
	t := tmpl[0]
	if !strings.HasPrefix(t, "{") || !strings.HasSuffix(t, "}") {
		return len(segs) > 0 && segs[0] == t && matchSegs(rt, tmpl[1:], segs[1:], params)
	}
	name := t[1 : len(t)-1]
	n := 1
	if rt.multi[name] {
		n = len(segs) - (len(tmpl) - 1)
	}
	for ; n >= 1; n-- {
		if n > len(segs) {
			continue
		}
		params[name] = strings.Join(segs[:n], "/")
		if matchSegs(rt, tmpl[1:], segs[n:], params) {
			return true
		}
		if !rt.multi[name] {
			break
		}
	}
	delete(params, name)
	return false
}

// Check judges one exchange and returns its problems (none: conforming).
func (d *Descriptions) Check(ex githubfake.Exchange) []string {
	p := strings.TrimPrefix(ex.Path, "/api/v3")
	if strings.HasSuffix(strings.TrimSuffix(p, "/"), "/graphql") {
		return d.checkGraphQL(ex)
	}
	segs := strings.Split(strings.Trim(p, "/"), "/")
	for i := range segs {
		if u, err := url.PathUnescape(segs[i]); err == nil {
			segs[i] = u
		}
	}
	// A renamed repository's requests are redirected to /repositories/{id}/…
	// (GitHub's answer to its old name); that alias of /repos/{owner}/{repo}/…
	// is not in the description, so it is judged as the operation it stands for.
	if len(segs) >= 2 && segs[0] == "repositories" {
		segs = append([]string{"repos", "renamed-owner", "renamed-repo"}, segs[2:]...)
	}
	what := ex.Method + " " + ex.Path
	if ex.Query != "" {
		what += "?" + ex.Query
	}
	var problems []string
	for i, a := range d.REST {
		rt, params := a.match(ex.Method, segs)
		if rt == nil {
			problems = append(problems, fmt.Sprintf("%s: no operation in %s's REST description", what, a.Name))
			continue
		}
		if err := rt.resolve(); err != nil {
			problems = append(problems, fmt.Sprintf("%s: %v", what, err))
			continue
		}
		in := requestInput(a, rt, params, ex)
		if err := openapi3filter.ValidateRequest(context.Background(), in); err != nil {
			problems = append(problems, fmt.Sprintf("%s: request does not conform to %s %s (%s): %s", what, a.Name, rt.op.OperationID, rt.tmpl, oneLine(err)))
		}
		if i == 0 {
			problems = append(problems, d.checkResponse(a, rt, in, ex, what)...)
		}
	}
	return problems
}

func requestInput(a *API, rt *route, params map[string]string, ex githubfake.Exchange) *openapi3filter.RequestValidationInput {
	target := ex.Path
	if ex.Query != "" {
		target += "?" + ex.Query
	}
	req := httptest.NewRequest(ex.Method, "http://github.test"+target, bytes.NewReader(ex.Body))
	for k, v := range ex.Header {
		req.Header[k] = v
	}
	return &openapi3filter.RequestValidationInput{
		Request: req, PathParams: params,
		Route:   &routers.Route{Spec: rt.doc, Path: rt.tmpl, PathItem: rt.item, Method: rt.method, Operation: rt.op},
		Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc, MultiError: true},
	}
}

// anyStatus are the answers GitHub may give any request (rate limits,
// authentication, redirects, conditional GETs, server errors), documented
// in "Troubleshooting the REST API" and "Rate limits for the REST API"
// rather than per operation.
func anyStatus(method string, st int) bool {
	switch {
	case st == http.StatusMovedPermanently || st == http.StatusFound || st == http.StatusTemporaryRedirect:
		return true
	case st == http.StatusNotModified:
		return method == http.MethodGet || method == http.MethodHead
	case st == http.StatusUnauthorized || st == http.StatusForbidden || st == http.StatusTooManyRequests:
		return true
	case st >= 500:
		return true
	}
	return false
}

func (d *Descriptions) checkResponse(a *API, rt *route, in *openapi3filter.RequestValidationInput, ex githubfake.Exchange, what string) []string {
	var problems []string
	bad := func(format string, args ...any) {
		problems = append(problems, what+": answer "+fmt.Sprint(ex.Status)+": "+fmt.Sprintf(format, args...))
	}
	for _, h := range []string{"X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"} {
		if ex.RespHeader.Get(h) == "" {
			bad("no %s header (GitHub sends it on every API answer)", h)
		}
	}
	documented := rt.op.Responses.Status(ex.Status)
	if documented == nil && !anyStatus(ex.Method, ex.Status) {
		bad("status not documented for %s (%s)", rt.op.OperationID, rt.tmpl)
		return problems
	}
	if ex.Status == http.StatusNotModified && len(ex.RespBody) > 0 {
		bad("a 304 has a body")
	}
	if documented != nil && documented.Value != nil {
		out := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: ex.Status, Header: ex.RespHeader,
			Body:    io.NopCloser(bytes.NewReader(ex.RespBody)),
			Options: &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true}}
		if err := openapi3filter.ValidateResponse(context.Background(), out); err != nil {
			bad("does not conform to %s's response of %s: %s", a.Name, rt.op.OperationID, oneLine(err))
		}
		if ex.Status == http.StatusCreated && documented.Value.Headers["Location"] != nil && ex.RespHeader.Get("Location") == "" {
			bad("no Location header (documented for %s)", rt.op.OperationID)
		}
	}
	if ex.Status >= 300 && ex.Status != http.StatusNotModified {
		var e struct {
			Message *string `json:"message"`
			Doc     *string `json:"documentation_url"`
		}
		if err := json.Unmarshal(ex.RespBody, &e); err != nil || e.Message == nil || e.Doc == nil || *e.Doc == "" {
			bad("not GitHub's error shape (message and documentation_url): %.200s", ex.RespBody)
		} else if documented == nil {
			if err := rt.doc.Components.Schemas["basic-error"].Value.VisitJSON(jsonValue(ex.RespBody)); err != nil {
				bad("not a basic-error: %s", oneLine(err))
			}
		}
	}
	return problems
}

func jsonValue(b []byte) any {
	var v any
	_ = json.Unmarshal(b, &v)
	return v
}

func (d *Descriptions) checkGraphQL(ex githubfake.Exchange) []string {
	what := ex.Method + " " + ex.Path
	var body struct {
		Query         string         `json:"query"`
		Variables     map[string]any `json:"variables"`
		OperationName string         `json:"operationName"`
	}
	if err := json.Unmarshal(ex.Body, &body); err != nil {
		return []string{what + ": the body is not a GraphQL request: " + err.Error()}
	}
	doc, list := gqlparser.LoadQuery(d.GraphQL, body.Query)
	if len(list) > 0 {
		var out []string
		for _, e := range list {
			out = append(out, fmt.Sprintf("%s: the GraphQL document does not validate against GitHub's schema: %s", what, e.Message))
		}
		return out
	}
	op := doc.Operations.ForName(body.OperationName)
	if op == nil {
		return []string{what + ": no operation " + body.OperationName}
	}
	if _, err := validator.VariableValues(d.GraphQL, op, body.Variables); err != nil {
		return []string{fmt.Sprintf("%s: the GraphQL variables do not validate against GitHub's schema: %v", what, err)}
	}
	return nil
}

// CheckGraphQL validates one GraphQL document against GitHub's schema.
func (d *Descriptions) CheckGraphQL(query string) error {
	if _, list := gqlparser.LoadQuery(d.GraphQL, query); len(list) > 0 {
		return list
	}
	return nil
}

func oneLine(err error) string {
	s := strings.Join(strings.Fields(err.Error()), " ")
	if len(s) > 600 {
		s = s[:600] + "…"
	}
	return s
}

// Recorder collects problems of every exchange of every fake while it runs.
type Recorder struct {
	mu       sync.Mutex
	d        *Descriptions
	n        int
	problems map[string]int // problem -> times seen
	stop     func()
}

var exempt sync.Map // fake URL -> true

// Exempt keeps a fake's exchanges out of every Recorder: for a test that
// sends wrong traffic on purpose and judges it itself.
func Exempt(serverURL string) { exempt.Store(serverURL, true) }

// Record starts judging every exchange of every fake in the process (the
// problems are kept, each once, with a count). d nil records nothing.
func Record(d *Descriptions) *Recorder {
	r := &Recorder{d: d, problems: map[string]int{}}
	if d == nil {
		r.stop = func() {}
		return r
	}
	r.stop = githubfake.Observe(func(ex githubfake.Exchange) {
		if _, ok := exempt.Load(ex.Server); ok {
			return
		}
		ps := d.Check(ex)
		r.mu.Lock()
		defer r.mu.Unlock()
		r.n++
		for _, p := range ps {
			r.problems[p]++
		}
	})
	return r
}

// Stop ends the recording and returns how many exchanges were judged and
// the problems found (sorted).
func (r *Recorder) Stop() (int, []string) {
	r.stop()
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for p, n := range r.problems {
		if n > 1 {
			p = fmt.Sprintf("%s (%d times)", p, n)
		}
		out = append(out, p)
	}
	sort.Strings(out)
	return r.n, out
}

// Main is a TestMain body: it runs the package's tests while judging every
// fake exchange they cause, then fails the run when any did not conform.
// Without the descriptions it says so and only runs the tests (fails under
// SPIREPOD_REQUIRE_TESTBED=1).
func Main(m *testing.M, pkg string) int {
	var d *Descriptions
	msg := MissingMessage()
	if msg == "" {
		var err error
		if d, err = Load(); err != nil {
			fmt.Fprintf(os.Stderr, "conformance: %v\n", err)
			return 1
		}
	}
	rec := Record(d)
	code := m.Run()
	n, problems := rec.Stop()
	if d == nil {
		fmt.Fprintf(os.Stderr, "conformance: %s: GitHub traffic not judged: %s\n", pkg, msg)
		if Required() && code == 0 {
			code = 1
		}
		return code
	}
	if len(problems) > 0 {
		fmt.Fprintf(os.Stderr, "conformance: %s: %d of GitHub API traffic does not conform to GitHub's descriptions (%s):\n", pkg, len(problems), Version)
		for _, p := range problems {
			fmt.Fprintln(os.Stderr, "  "+p)
		}
		if code == 0 {
			code = 1
		}
	} else {
		fmt.Fprintf(os.Stderr, "conformance: %s: %d GitHub API exchanges conform to GitHub's descriptions (%s)\n", pkg, n, Version)
	}
	return code
}
