package githubfake

import (
	"encoding/json"
	"net/http"
	"regexp"
	"sort"
	"strings"
	"unicode/utf8"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/google/go-github/v60/github"

	"github.com/spirepod/spirepod/internal/pr/gittree"
)

// getTree serves GET /repos/{o}/{r}/git/trees/{sha}[?recursive=1]: with
// recursive, every blob of the tree (GitHub also lists the subtrees; only
// blobs are listed here, which is what a client reading files needs).
func (s *Server) getTree(w http.ResponseWriter, req *http.Request, r *Repo, ref string) {
	c, err := r.resolve(ref)
	if err != nil {
		writeErr(w, 404, "Not Found")
		return
	}
	files, err := gittree.Files(r.store, c.TreeHash)
	if err != nil {
		writeErr(w, 500, err.Error())
		return
	}
	if req.URL.Query().Get("recursive") == "" {
		writeErr(w, 422, "the fake serves recursive trees only")
		return
	}
	paths := make([]string, 0, len(files))
	for p := range files {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	t := &github.Tree{SHA: github.String(c.TreeHash.String()), Truncated: github.Bool(false)}
	for _, p := range paths {
		t.Entries = append(t.Entries, &github.TreeEntry{Path: github.String(p), Mode: github.String("100644"),
			Type: github.String("blob"), SHA: github.String(files[p].String())})
	}
	writeJSON(w, 200, t)
}

// An alias of an object(expression: $var) field in a GraphQL query.
var graphqlObject = regexp.MustCompile(`(\w+)\s*:\s*object\s*\(\s*expression\s*:\s*\$(\w+)\s*\)`)

// graphql serves the one GraphQL query shape spirepod sends: blobs of a
// repository by "<rev>:<path>" expressions, many per request,
//
//	query($owner: String!, $name: String!, $e0: String!, …) {
//	  repository(owner: $owner, name: $name) {
//	    f0: object(expression: $e0) { ... on Blob { text isBinary } } …
//	  }
//	}
//
// answered from the real git objects. Anything else is a GraphQL error.
func (s *Server) graphql(w http.ResponseWriter, req *http.Request) {
	var body struct {
		Query     string            `json:"query"`
		Variables map[string]string `json:"variables"`
	}
	if err := json.NewDecoder(req.Body).Decode(&body); err != nil {
		writeErr(w, 400, "Problems parsing JSON")
		return
	}
	gqlErr := func(msg string) {
		writeJSON(w, 200, map[string]any{"errors": []map[string]string{{"message": msg}}})
	}
	if !strings.Contains(body.Query, "repository(owner: $owner, name: $name)") || !strings.Contains(body.Query, "... on Blob") {
		gqlErr("the fake answers only blob queries by expression")
		return
	}
	r := s.repos[body.Variables["owner"]+"/"+body.Variables["name"]]
	if r == nil {
		gqlErr("Could not resolve to a Repository with the name '" + body.Variables["owner"] + "/" + body.Variables["name"] + "'.")
		return
	}
	out := map[string]any{}
	for _, m := range graphqlObject.FindAllStringSubmatch(body.Query, -1) {
		alias, expr := m[1], body.Variables[m[2]]
		rev, p, ok := strings.Cut(expr, ":")
		if !ok {
			out[alias] = nil
			continue
		}
		c, err := r.resolve(rev)
		if err != nil {
			out[alias] = nil
			continue
		}
		b, found, err := gittree.ReadFile(r.store, c.TreeHash, p)
		if err != nil || !found {
			out[alias] = nil
			continue
		}
		bin := !utf8.Valid(b)
		blob := map[string]any{"isBinary": bin, "byteSize": len(b), "oid": plumbing.ComputeHash(plumbing.BlobObject, b).String()}
		if !bin {
			blob["text"] = string(b)
		}
		out[alias] = blob
	}
	writeJSON(w, 200, map[string]any{"data": map[string]any{"repository": out}})
}
