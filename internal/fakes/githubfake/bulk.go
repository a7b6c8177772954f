package githubfake

import (
	"net/http"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
)

// getTree serves "Get a tree" (https://docs.github.com/rest/git/trees#get-a-tree):
// the entries of a tree (by tree SHA, commit SHA or branch), every subtree's
// too with recursive. Its description: "The limit for the tree array is
// 100,000 entries with a maximum size of 7 MB when using the recursive
// parameter"; beyond that (Limits.TreeMaxEntries, TreeMaxBytes) the answer
// is cut and truncated is true.
func (s *Server) getTree(w http.ResponseWriter, req *http.Request, r *Repo, ref string) {
	var h plumbing.Hash
	if c, err := r.resolve(ref); err == nil {
		h = c.TreeHash
	} else if _, terr := object.GetTree(r.store, plumbing.NewHash(ref)); terr == nil && plumbing.IsHash(ref) {
		h = plumbing.NewHash(ref)
	} else {
		writeErr(w, 404, "Not Found")
		return
	}
	s.writeTree(w, 200, r, h, req.URL.Query().Get("recursive") != "")
}

// writeTree answers schema git-tree for tree h.
func (s *Server) writeTree(w http.ResponseWriter, status int, r *Repo, h plumbing.Hash, recursive bool) {
	entries := []obj{}
	truncated := false
	size := 0
	var walk func(prefix string, h plumbing.Hash) bool
	walk = func(prefix string, h plumbing.Hash) bool {
		t, err := object.GetTree(r.store, h)
		if err != nil {
			return false
		}
		for _, e := range t.Entries {
			p := prefix + e.Name
			var o obj
			if e.Mode.IsFile() {
				n := int64(0)
				if b, err := r.store.EncodedObject(plumbing.BlobObject, e.Hash); err == nil {
					n = b.Size()
				}
				o = obj{"path": p, "mode": e.Mode.String()[1:], "type": "blob", "sha": e.Hash.String(), "size": n,
					"url": s.apiURL(r, "git/blobs/"+e.Hash.String())}
			} else {
				o = obj{"path": p, "mode": "040000", "type": "tree", "sha": e.Hash.String(),
					"url": s.apiURL(r, "git/trees/"+e.Hash.String())}
			}
			size += len(p) + len(s.apiURL(r, "")) + 130 // the entry's JSON, near enough
			if recursive && (len(entries) >= s.limits.TreeMaxEntries || size > s.limits.TreeMaxBytes) {
				truncated = true
				return true
			}
			entries = append(entries, o)
			if recursive && !e.Mode.IsFile() && walk(p+"/", e.Hash) {
				return true
			}
		}
		return false
	}
	walk("", h)
	writeJSON(w, status, obj{"sha": h.String(), "url": s.apiURL(r, "git/trees/"+h.String()), "tree": entries, "truncated": truncated})
}
