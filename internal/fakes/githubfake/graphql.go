package githubfake

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"unicode/utf8"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/vektah/gqlparser/v2"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/gqlerror"
	"github.com/vektah/gqlparser/v2/validator"
)

// SchemaSDL is the part of GitHub's GraphQL schema the fake serves.
//
//go:embed schema.graphql
var SchemaSDL string

var schema = gqlparser.MustLoadSchema(&ast.Source{Name: "githubfake/schema.graphql", Input: SchemaSDL})

// gqlErr is one GraphQL error as GitHub shapes them (message, locations,
// path, and type or extensions).
type gqlErr struct {
	Message    string         `json:"message"`
	Type       string         `json:"type,omitempty"`
	Path       []any          `json:"path,omitempty"`
	Locations  []obj          `json:"locations,omitempty"`
	Extensions map[string]any `json:"extensions,omitempty"`
}

var cannotQuery = regexp.MustCompile(`^Cannot query field "([^"]+)" on type "([^"]+)"`)

// graphql serves POST /api/graphql: the query is parsed and validated with
// a GraphQL parser against SchemaSDL (GitHub answers an invalid query with
// 200 and errors, no data: "Field 'x' doesn't exist on type 'Blob'"), then
// executed against the real git objects. Served: repository(owner, name)
// { object(expression | oid) } with Blob, Tree (entries) and Commit fields.
// Blob.text is cut at Limits.BlobTextMax with isTruncated.
func (s *Server) graphql(w http.ResponseWriter, req *http.Request) {
	setDoc(w, docGraphQL)
	var body struct {
		Query         string         `json:"query"`
		Variables     map[string]any `json:"variables"`
		OperationName string         `json:"operationName"`
	}
	if err := json.NewDecoder(req.Body).Decode(&body); err != nil {
		writeErr(w, 400, "Problems parsing JSON")
		return
	}
	answer := func(status int, data any, errs []gqlErr) {
		out := obj{}
		if data != nil || len(errs) == 0 {
			out["data"] = data
		}
		if len(errs) > 0 {
			out["errors"] = errs
		}
		writeJSON(w, status, out)
	}
	doc, list := gqlparser.LoadQuery(schema, body.Query)
	if len(list) > 0 {
		answer(200, nil, fromGQL(list))
		return
	}
	op := doc.Operations.ForName(body.OperationName)
	if op == nil {
		answer(200, nil, []gqlErr{{Message: "No operation named " + body.OperationName}})
		return
	}
	if op.Operation != ast.Query {
		answer(200, nil, []gqlErr{{Message: "the fake serves queries only"}})
		return
	}
	vars, err := validator.VariableValues(schema, op, body.Variables)
	if err != nil {
		var ge *gqlerror.Error
		if e, ok := err.(*gqlerror.Error); ok {
			ge = e
		} else {
			ge = gqlerror.Errorf("%v", err)
		}
		answer(200, nil, fromGQL(gqlerror.List{ge}))
		return
	}
	if max := s.limits.GraphQLMaxObjects; max > 0 && countField(op.SelectionSet, "object") > max {
		// GitHub's answer to a query it could not finish in time (see Limits.GraphQLMaxObjects).
		answer(http.StatusBadGateway, nil, []gqlErr{{Message: "Something went wrong while executing your query. This may be the result of a timeout, or it could be a GitHub bug. Please include `FAKE:0000:0000000:0000000:00000000` when reporting this issue."}})
		return
	}
	x := &gqlExec{s: s, vars: vars}
	data := x.selection(op.SelectionSet, gqlValue{typ: "Query"}, nil)
	answer(200, data, x.errs)
}

func fromGQL(list gqlerror.List) []gqlErr {
	var out []gqlErr
	for _, e := range list {
		g := gqlErr{Message: e.Message}
		for _, l := range e.Locations {
			g.Locations = append(g.Locations, obj{"line": l.Line, "column": l.Column})
		}
		if m := cannotQuery.FindStringSubmatch(e.Message); m != nil {
			g.Message = fmt.Sprintf("Field '%s' doesn't exist on type '%s'", m[1], m[2])
			g.Extensions = map[string]any{"code": "undefinedField", "typeName": m[2], "fieldName": m[1]}
		}
		out = append(out, g)
	}
	return out
}

func countField(set ast.SelectionSet, name string) int {
	n := 0
	for _, sel := range set {
		switch v := sel.(type) {
		case *ast.Field:
			if v.Name == name {
				n++
			}
			n += countField(v.SelectionSet, name)
		case *ast.InlineFragment:
			n += countField(v.SelectionSet, name)
		case *ast.FragmentSpread:
			n += countField(v.Definition.SelectionSet, name)
		}
	}
	return n
}

// gqlValue is a resolved object: its GraphQL type and what backs it.
type gqlValue struct {
	typ  string
	repo *Repo
	hash plumbing.Hash
	// path and mode of a tree entry (TreeEntry).
	path string
	mode filemode.FileMode
	name string
}

type gqlExec struct {
	s    *Server
	vars map[string]any
	errs []gqlErr
}

func (x *gqlExec) selection(set ast.SelectionSet, v gqlValue, path []any) obj {
	out := obj{}
	for _, sel := range set {
		switch f := sel.(type) {
		case *ast.Field:
			key := f.Alias
			if key == "" {
				key = f.Name
			}
			out[key] = x.field(f, v, append(append([]any(nil), path...), key))
		case *ast.InlineFragment:
			if f.TypeCondition == "" || f.TypeCondition == v.typ || x.implements(v.typ, f.TypeCondition) {
				for k, val := range x.selection(f.SelectionSet, v, path) {
					out[k] = val
				}
			}
		case *ast.FragmentSpread:
			if f.Definition.TypeCondition == v.typ || x.implements(v.typ, f.Definition.TypeCondition) {
				for k, val := range x.selection(f.Definition.SelectionSet, v, path) {
					out[k] = val
				}
			}
		}
	}
	return out
}

func (x *gqlExec) implements(typ, iface string) bool {
	for _, d := range schema.GetImplements(schema.Types[typ]) {
		if d.Name == iface {
			return true
		}
	}
	return false
}

// object resolves an object-typed field's value and its sub-selection.
func (x *gqlExec) object(f *ast.Field, v gqlValue, path []any) any {
	if v.typ == "" {
		return nil
	}
	return x.selection(f.SelectionSet, v, path)
}

func (x *gqlExec) field(f *ast.Field, v gqlValue, path []any) any {
	args := f.ArgumentMap(x.vars)
	if f.Name == "__typename" {
		return v.typ
	}
	switch v.typ {
	case "Query":
		if f.Name == "repository" {
			owner, _ := args["owner"].(string)
			name, _ := args["name"].(string)
			r := x.s.repos[owner+"/"+name]
			if r == nil {
				if follow, _ := args["followRenames"].(bool); follow {
					r = x.s.renamed[owner+"/"+name]
				}
			}
			if r == nil {
				x.errs = append(x.errs, gqlErr{Type: "NOT_FOUND", Path: path,
					Message: fmt.Sprintf("Could not resolve to a Repository with the name '%s/%s'.", owner, name)})
				return nil
			}
			return x.object(f, gqlValue{typ: "Repository", repo: r}, path)
		}
	case "Repository":
		r := v.repo
		switch f.Name {
		case "id":
			return nodeID("R", r.ID)
		case "name":
			return r.Name
		case "nameWithOwner":
			return r.FullName()
		case "object":
			return x.object(f, x.resolveObject(r, args), path)
		}
	case "Blob", "Tree", "Commit":
		if val, ok := x.gitObjectField(f, v, path); ok {
			return val
		}
	case "TreeEntry":
		return x.treeEntryField(f, v, path)
	}
	x.errs = append(x.errs, gqlErr{Path: path, Message: fmt.Sprintf("the fake does not serve %s.%s", v.typ, f.Name)})
	return nil
}

// resolveObject finds Repository.object(expression: "<rev>:<path>" | oid).
func (x *gqlExec) resolveObject(r *Repo, args map[string]any) gqlValue {
	var h plumbing.Hash
	dir := ""
	if oid, ok := args["oid"].(string); ok && plumbing.IsHash(oid) {
		h = plumbing.NewHash(oid)
	} else if expr, ok := args["expression"].(string); ok {
		rev, p, hasPath := strings.Cut(expr, ":")
		c, err := r.resolve(rev)
		if err != nil {
			return gqlValue{}
		}
		if !hasPath {
			h = c.Hash
		} else if p == "" {
			h = c.TreeHash
		} else {
			t, err := object.GetTree(r.store, c.TreeHash)
			if err != nil {
				return gqlValue{}
			}
			e, err := t.FindEntry(strings.Trim(p, "/"))
			if err != nil {
				return gqlValue{}
			}
			h, dir = e.Hash, strings.Trim(p, "/")
		}
	} else {
		return gqlValue{}
	}
	o, err := r.store.EncodedObject(plumbing.AnyObject, h)
	if err != nil {
		return gqlValue{}
	}
	switch o.Type() {
	case plumbing.BlobObject:
		return gqlValue{typ: "Blob", repo: r, hash: h}
	case plumbing.TreeObject:
		return gqlValue{typ: "Tree", repo: r, hash: h, path: dir}
	case plumbing.CommitObject:
		return gqlValue{typ: "Commit", repo: r, hash: h}
	}
	return gqlValue{}
}

func (x *gqlExec) gitObjectField(f *ast.Field, v gqlValue, path []any) (any, bool) {
	r, sha := v.repo, v.hash.String()
	switch f.Name {
	case "oid":
		return sha, true
	case "abbreviatedOid":
		return sha[:7], true
	case "id":
		return nodeID(v.typ, sha), true
	case "commitResourcePath":
		return "/" + r.FullName() + "/commit/" + sha, true
	case "commitUrl":
		return x.s.webURL(r.FullName() + "/commit/" + sha), true
	case "repository":
		return x.object(f, gqlValue{typ: "Repository", repo: r}, path), true
	}
	switch v.typ {
	case "Blob":
		b, err := readBlob(r, v.hash)
		if err != nil {
			return nil, true
		}
		bin := !utf8.Valid(b)
		switch f.Name {
		case "byteSize":
			return len(b), true
		case "isBinary":
			return bin, true
		case "isTruncated":
			return len(b) > x.s.limits.BlobTextMax, true
		case "text":
			if bin {
				return nil, true
			}
			if len(b) > x.s.limits.BlobTextMax {
				cut := x.s.limits.BlobTextMax
				for cut > 0 && !utf8.RuneStart(b[cut]) {
					cut--
				}
				b = b[:cut]
			}
			return string(b), true
		}
	case "Tree":
		if f.Name == "entries" {
			t, err := object.GetTree(r.store, v.hash)
			if err != nil {
				return nil, true
			}
			out := []any{}
			for _, e := range t.Entries {
				p := e.Name
				if v.path != "" {
					p = v.path + "/" + e.Name
				}
				out = append(out, x.selection(f.SelectionSet, gqlValue{typ: "TreeEntry", repo: r, hash: e.Hash, path: p, mode: e.Mode, name: e.Name}, path))
			}
			return out, true
		}
	case "Commit":
		c, err := object.GetCommit(r.store, v.hash)
		if err != nil {
			return nil, true
		}
		switch f.Name {
		case "message":
			return c.Message, true
		case "tree":
			return x.object(f, gqlValue{typ: "Tree", repo: r, hash: c.TreeHash}, path), true
		}
	}
	return nil, false
}

func (x *gqlExec) treeEntryField(f *ast.Field, v gqlValue, path []any) any {
	switch f.Name {
	case "name":
		return v.name
	case "path":
		return v.path
	case "oid":
		return v.hash.String()
	case "mode":
		return int(v.mode)
	case "extension":
		if i := strings.LastIndex(v.name, "."); i > 0 {
			return v.name[i:]
		}
		return nil
	case "isGenerated":
		return false
	case "size":
		if o, err := v.repo.store.EncodedObject(plumbing.AnyObject, v.hash); err == nil && v.mode.IsFile() {
			return int(o.Size())
		}
		return 0
	case "type":
		switch {
		case v.mode == filemode.Dir:
			return "tree"
		case v.mode == filemode.Submodule:
			return "commit"
		}
		return "blob"
	case "repository":
		return x.object(f, gqlValue{typ: "Repository", repo: v.repo}, path)
	case "object":
		if v.mode == filemode.Submodule {
			return nil
		}
		typ := "Blob"
		if v.mode == filemode.Dir {
			typ = "Tree"
		}
		return x.object(f, gqlValue{typ: typ, repo: v.repo, hash: v.hash, path: v.path}, path)
	}
	x.errs = append(x.errs, gqlErr{Path: path, Message: "the fake does not serve TreeEntry." + f.Name})
	return nil
}
