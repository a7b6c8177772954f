package pr

import (
	"context"
	"fmt"
	"net/url"
	"slices"
	"sort"
	"strings"

	"github.com/go-git/go-git/v5/plumbing"

	"github.com/spirepod/spirepod/internal/pr/gittree"
)

// BaseTree is the base branch at the commit a change is computed on, for
// checks that read the whole city (a collision check reads every team's
// registrations). Files lists every path; Read reads many at once.
type BaseTree interface {
	Files(ctx context.Context) ([]string, error)
	Read(ctx context.Context, paths []string) (map[string][]byte, error)
}

// memoTree reads each path of base at most once and lists it once: the city
// rules read the trust list and the changed files before the whole city,
// and over the GitHub API every read is a request. The change's own files
// were read already (File.Old is the base's content): they seed it.
func memoTree(base BaseTree, files []File) BaseTree {
	m := &memo{base: base, got: map[string][]byte{}, seen: map[string]bool{}}
	for _, f := range files {
		m.seen[f.Path] = true
		if f.OldExists {
			m.got[f.Path] = f.Old
		}
	}
	return m
}

type memo struct {
	base   BaseTree
	files  []string
	listed bool
	got    map[string][]byte
	seen   map[string]bool // read (found or not)
}

func (m *memo) Files(ctx context.Context) ([]string, error) {
	if !m.listed {
		fs, err := m.base.Files(ctx)
		if err != nil {
			return nil, err
		}
		m.files, m.listed = fs, true
	}
	return append([]string(nil), m.files...), nil
}

// Links are the base's symbolic links and submodules (city.LinkLister).
func (m *memo) Links(ctx context.Context) ([]string, error) {
	if l, ok := m.base.(interface {
		Links(context.Context) ([]string, error)
	}); ok {
		return l.Links(ctx)
	}
	return nil, nil
}

func (m *memo) Read(ctx context.Context, paths []string) (map[string][]byte, error) {
	var missing []string
	for _, p := range paths {
		if !m.seen[p] {
			missing = append(missing, p)
		}
	}
	if len(missing) > 0 {
		got, err := m.base.Read(ctx, missing)
		if err != nil {
			return nil, err
		}
		for _, p := range missing {
			m.seen[p] = true
			if b, ok := got[p]; ok {
				m.got[p] = b
			}
		}
	}
	out := make(map[string][]byte, len(paths))
	for _, p := range paths {
		if b, ok := m.got[p]; ok {
			out[p] = b
		}
	}
	return out, nil
}

// graphqlBatch is how many blobs one GraphQL request reads at most; a
// batch GitHub cannot answer in time is split.
const graphqlBatch = 250

// Listing a tree GitHub cut (see Files): treeBatch directories per GraphQL
// request, each treeDepth levels deep; both shrink when GitHub cannot answer.
const (
	treeBatch = 50
	treeDepth = 6
)

// remoteTree reads the base through GitHub cheaply: the whole file list in
// one recursive tree request, then file contents in GraphQL requests of up
// to graphqlBatch blobs each, so a 1,000-team city costs a handful of
// requests, not one per team.
type remoteTree struct {
	c   *client
	sha string
	// links are the symbolic links (mode 120000) and submodules (type
	// commit) Files found: not files, and not to be read as files.
	links  []string
	listed bool
}

// Links lists the base's symbolic links and submodules.
func (t *remoteTree) Links(ctx context.Context) ([]string, error) {
	if !t.listed {
		if _, err := t.Files(ctx); err != nil {
			return nil, err
		}
	}
	return t.links, nil
}

// isLink: a tree entry a checkout follows elsewhere: a symbolic link (mode
// 120000, which GitHub lists as a blob) or a submodule (type commit).
func isLink(typ, mode string) bool { return typ == "commit" || mode == "120000" }

// Files lists every file. A recursive tree listing is cut by GitHub above
// 100,000 entries or 7 MB (truncated: true; "Get a tree",
// https://docs.github.com/rest/git/trees#get-a-tree); the tree is then
// listed through GraphQL, many directories and levels per request.
func (t *remoteTree) Files(ctx context.Context) ([]string, error) {
	tree, _, err := t.c.gh.Git.GetTree(ctx, t.c.owner, t.c.name, t.sha, true)
	if err != nil {
		return nil, translate(err, "list the files of "+t.c.repo()+" at "+shortRef(t.sha), t.c.repo(), "contents:read")
	}
	var out []string
	t.links, t.listed = nil, true
	if !tree.GetTruncated() {
		for _, e := range tree.Entries {
			switch {
			case isLink(e.GetType(), e.GetMode()):
				t.links = append(t.links, e.GetPath())
			case e.GetType() == "blob":
				out = append(out, e.GetPath())
			}
		}
		sort.Strings(out)
		return out, nil
	}
	fmt.Fprintf(t.c.progress, "GitHub cut the file list of %s (over 100,000 entries or 7 MB): listing it through GraphQL\n", t.c.repo())
	pending := []treeDir{{oid: tree.GetSHA()}}
	for len(pending) > 0 {
		batch := pending[:min(treeBatch, len(pending))]
		pending = pending[len(batch):]
		more, err := t.listDirs(ctx, batch, treeDepth, &out)
		if err != nil {
			return nil, err
		}
		pending = append(pending, more...)
	}
	sort.Strings(out)
	return out, nil
}

// treeDir is a directory still to list: its path ("" is the root) and tree SHA.
type treeDir struct{ path, oid string }

// gqlTreeEntry is a GraphQL TreeEntry, with its subtree's entries when asked.
type gqlTreeEntry struct {
	Name   string  `json:"name"`
	Path   *string `json:"path"`
	Type   string  `json:"type"`
	Mode   int     `json:"mode"`
	Oid    string  `json:"oid"`
	Object *struct {
		Entries []gqlTreeEntry `json:"entries"`
	} `json:"object"`
}

// listDirs lists dirs depth levels deep into files and returns the
// directories below that depth. A query GitHub cannot answer is split by
// directories, then by depth, then read through REST one level at a time.
func (t *remoteTree) listDirs(ctx context.Context, dirs []treeDir, depth int, files *[]string) ([]treeDir, error) {
	var q strings.Builder
	vars := map[string]any{"owner": t.c.owner, "name": t.c.name}
	q.WriteString("query($owner: String!, $name: String!")
	for i := range dirs {
		fmt.Fprintf(&q, ", $e%d: String!", i)
	}
	q.WriteString(") { repository(owner: $owner, name: $name) {")
	for i, d := range dirs {
		fmt.Fprintf(&q, " d%d: object(expression: $e%d) { ... on Tree { %s } }", i, i, entriesSelection(depth))
		vars[fmt.Sprintf("e%d", i)] = t.sha + ":" + d.path
	}
	q.WriteString(" } }")
	var data struct {
		Repository map[string]*struct {
			Entries []gqlTreeEntry `json:"entries"`
		} `json:"repository"`
	}
	err := t.c.graphql(ctx, fmt.Sprintf("list %d directories of %s", len(dirs), t.c.repo()), q.String(), vars, &data)
	switch {
	case isTooBig(err) && len(dirs) > 1:
		half := len(dirs) / 2
		a, err := t.listDirs(ctx, dirs[:half], depth, files)
		if err != nil {
			return nil, err
		}
		b, err := t.listDirs(ctx, dirs[half:], depth, files)
		return append(a, b...), err
	case isTooBig(err) && depth > 1:
		return t.listDirs(ctx, dirs, depth/2, files)
	case isTooBig(err):
		return t.listDirREST(ctx, dirs[0], files)
	case err != nil:
		return nil, err
	}
	var more []treeDir
	var walk func(parent string, es []gqlTreeEntry, level int)
	walk = func(parent string, es []gqlTreeEntry, level int) {
		for _, e := range es {
			p := e.Name
			if parent != "" {
				p = parent + "/" + e.Name
			}
			if e.Path != nil && *e.Path != "" {
				p = *e.Path
			}
			switch {
			case isLink(e.Type, fmt.Sprintf("%o", e.Mode)):
				t.links = append(t.links, p)
			case e.Type == "blob":
				*files = append(*files, p)
			case e.Type == "tree" && level < depth && e.Object != nil:
				walk(p, e.Object.Entries, level+1)
			case e.Type == "tree":
				more = append(more, treeDir{path: p, oid: e.Oid})
			}
		}
	}
	for i, d := range dirs {
		got := data.Repository[fmt.Sprintf("d%d", i)]
		if got == nil {
			return nil, fmt.Errorf("list %s of %s at %s: GitHub has no such directory", d.path, t.c.repo(), shortRef(t.sha))
		}
		walk(d.path, got.Entries, 1)
	}
	return more, nil
}

// entriesSelection is a TreeEntry selection depth levels deep.
func entriesSelection(depth int) string {
	s := "entries { name path type mode oid }"
	for i := 1; i < depth; i++ {
		s = "entries { name path type mode oid object { ... on Tree { " + s + " } } }"
	}
	return s
}

// listDirREST lists one directory one level deep through "Get a tree".
func (t *remoteTree) listDirREST(ctx context.Context, d treeDir, files *[]string) ([]treeDir, error) {
	tree, _, err := t.c.gh.Git.GetTree(ctx, t.c.owner, t.c.name, d.oid, false)
	if err != nil {
		return nil, translate(err, "list "+d.path+" of "+t.c.repo(), t.c.repo(), "contents:read")
	}
	var more []treeDir
	for _, e := range tree.Entries {
		p := e.GetPath()
		if d.path != "" {
			p = d.path + "/" + p
		}
		switch {
		case isLink(e.GetType(), e.GetMode()):
			t.links = append(t.links, p)
		case e.GetType() == "blob":
			*files = append(*files, p)
		case e.GetType() == "tree":
			more = append(more, treeDir{path: p, oid: e.GetSHA()})
		}
	}
	return more, nil
}

func (t *remoteTree) Read(ctx context.Context, paths []string) (map[string][]byte, error) {
	out := map[string][]byte{}
	for start := 0; start < len(paths); start += graphqlBatch {
		batch := paths[start:min(start+graphqlBatch, len(paths))]
		if err := t.readBatch(ctx, batch, out); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// readBatch reads files in one GraphQL request. A file whose Blob.text
// GitHub cut (isTruncated: GraphQL cuts text at 512,000 bytes) is read by
// its oid through the Git Data API. A batch GitHub cannot answer in time is
// split in halves; a single file that still fails is read through REST.
func (t *remoteTree) readBatch(ctx context.Context, paths []string, out map[string][]byte) error {
	err := t.queryBlobs(ctx, paths, out)
	if !isTooBig(err) {
		return err
	}
	if len(paths) == 1 {
		b, ok, err := t.c.read(ctx, t.sha, paths[0], false)
		if ok {
			out[paths[0]] = b
		}
		return err
	}
	fmt.Fprintf(t.c.progress, "GitHub could not answer a GraphQL read of %d files: splitting it\n", len(paths))
	half := len(paths) / 2
	if err := t.readBatch(ctx, paths[:half], out); err != nil {
		return err
	}
	return t.readBatch(ctx, paths[half:], out)
}

func (t *remoteTree) queryBlobs(ctx context.Context, paths []string, out map[string][]byte) error {
	var q strings.Builder
	vars := map[string]any{"owner": t.c.owner, "name": t.c.name}
	q.WriteString("query($owner: String!, $name: String!")
	for i := range paths {
		fmt.Fprintf(&q, ", $e%d: String!", i)
	}
	q.WriteString(") { repository(owner: $owner, name: $name) {")
	for i, p := range paths {
		fmt.Fprintf(&q, " f%d: object(expression: $e%d) { ... on Blob { text isBinary isTruncated byteSize oid } }", i, i)
		vars[fmt.Sprintf("e%d", i)] = t.sha + ":" + p
	}
	q.WriteString(" } }")
	var data struct {
		Repository map[string]*struct {
			Text        *string `json:"text"`
			IsBinary    *bool   `json:"isBinary"`
			IsTruncated bool    `json:"isTruncated"`
			ByteSize    int     `json:"byteSize"`
			Oid         string  `json:"oid"`
		} `json:"repository"`
	}
	if err := t.c.graphql(ctx, fmt.Sprintf("read %d files of %s", len(paths), t.c.repo()), q.String(), vars, &data); err != nil {
		return err
	}
	for i, p := range paths {
		b := data.Repository[fmt.Sprintf("f%d", i)]
		switch {
		case b == nil || (b.IsBinary != nil && *b.IsBinary):
			continue // not there (or not a file), or binary: no text to judge
		case b.IsTruncated || b.Text == nil || len(*b.Text) != b.ByteSize:
			blob, err := t.c.blob(ctx, t.c.owner, t.c.name, b.Oid, p)
			if err != nil {
				return err
			}
			out[p] = blob
		default:
			out[p] = []byte(*b.Text)
		}
	}
	return nil
}

// graphqlURL is GitHub's GraphQL endpoint for a REST root: a root ending in
// /api/v3/ (Enterprise Server, or the fake) has it at /api/graphql, and
// api.github.com at https://api.github.com/graphql.
func graphqlURL(rest *url.URL) string {
	u := *rest
	if p, ok := strings.CutSuffix(strings.TrimSuffix(u.Path, "/"), "/v3"); ok {
		u.Path = p + "/graphql"
	} else {
		u.Path = strings.TrimSuffix(u.Path, "/") + "/graphql"
	}
	return u.String()
}

func shortRef(sha string) string {
	if len(sha) > 12 {
		return sha[:12]
	}
	return sha
}

// localTree reads the base of a local checkout with go-git.
type localTree struct {
	l   *local
	sha string
}

func (t *localTree) Files(ctx context.Context) ([]string, error) {
	c, err := t.l.repo.CommitObject(plumbing.NewHash(t.sha))
	if err != nil {
		return nil, err
	}
	files, err := gittree.Files(t.l.repo.Storer, c.TreeHash)
	if err != nil {
		return nil, err
	}
	links, err := t.Links(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(files))
	for p := range files {
		if !slices.Contains(links, p) {
			out = append(out, p)
		}
	}
	sort.Strings(out)
	return out, nil
}

// Links lists the base's symbolic links and submodules.
func (t *localTree) Links(context.Context) ([]string, error) {
	c, err := t.l.repo.CommitObject(plumbing.NewHash(t.sha))
	if err != nil {
		return nil, err
	}
	return gittree.Links(t.l.repo.Storer, c.TreeHash)
}

func (t *localTree) Read(ctx context.Context, paths []string) (map[string][]byte, error) {
	out := map[string][]byte{}
	for _, p := range paths {
		b, ok, err := t.l.read(ctx, t.sha, p, false)
		if err != nil {
			return nil, err
		}
		if ok {
			out[p] = b
		}
	}
	return out, nil
}

// emptyTree is the base when there is none to read (a dry run without a token).
type emptyTree struct{}

func (emptyTree) Files(context.Context) ([]string, error) { return nil, nil }
func (emptyTree) Read(context.Context, []string) (map[string][]byte, error) {
	return map[string][]byte{}, nil
}
