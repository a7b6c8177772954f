package pr

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
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

// graphqlBatch is how many blobs one GraphQL request reads.
const graphqlBatch = 250

// remoteTree reads the base through GitHub cheaply: the whole file list in
// one recursive tree request, then file contents in GraphQL requests of up
// to graphqlBatch blobs each, so a 1,000-team city costs a handful of
// requests, not one per team.
type remoteTree struct {
	c   *client
	sha string
}

func (t *remoteTree) Files(ctx context.Context) ([]string, error) {
	tree, _, err := t.c.gh.Git.GetTree(ctx, t.c.owner, t.c.name, t.sha, true)
	if err != nil {
		return nil, translate(err, "list the files of "+t.c.repo()+" at "+shortRef(t.sha), t.c.repo(), "contents:read")
	}
	if tree.GetTruncated() {
		return nil, fmt.Errorf("GitHub truncated the file list of %s at %s (over 100,000 files): run the check on a local checkout with --local", t.c.repo(), shortRef(t.sha))
	}
	var out []string
	for _, e := range tree.Entries {
		if e.GetType() == "blob" {
			out = append(out, e.GetPath())
		}
	}
	sort.Strings(out)
	return out, nil
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

func (t *remoteTree) readBatch(ctx context.Context, paths []string, out map[string][]byte) error {
	var q strings.Builder
	vars := map[string]string{"owner": t.c.owner, "name": t.c.name}
	q.WriteString("query($owner: String!, $name: String!")
	for i := range paths {
		fmt.Fprintf(&q, ", $e%d: String!", i)
	}
	q.WriteString(") { repository(owner: $owner, name: $name) {")
	for i, p := range paths {
		fmt.Fprintf(&q, " f%d: object(expression: $e%d) { ... on Blob { text isBinary } }", i, i)
		vars[fmt.Sprintf("e%d", i)] = t.sha + ":" + p
	}
	q.WriteString(" } }")
	body, err := json.Marshal(map[string]any{"query": q.String(), "variables": vars})
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.c.graphqlURL, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := t.c.gh.Client().Do(req)
	if err != nil {
		return fmt.Errorf("read %d files of %s through GraphQL: %w", len(paths), t.c.repo(), err)
	}
	defer resp.Body.Close()
	var res struct {
		Data struct {
			Repository map[string]*struct {
				Text     *string `json:"text"`
				IsBinary bool    `json:"isBinary"`
			} `json:"repository"`
		} `json:"data"`
		Errors []struct {
			Message string `json:"message"`
		} `json:"errors"`
	}
	if resp.StatusCode != http.StatusOK {
		return &APIError{Op: "read files of " + t.c.repo() + " through GraphQL", Status: resp.StatusCode,
			Hint: "the token needs read access to " + t.c.repo() + " (GraphQL is used to read many files in one request)"}
	}
	if err := json.NewDecoder(resp.Body).Decode(&res); err != nil {
		return fmt.Errorf("read files of %s through GraphQL: %w", t.c.repo(), err)
	}
	if len(res.Errors) > 0 {
		return fmt.Errorf("read files of %s through GraphQL: %s", t.c.repo(), res.Errors[0].Message)
	}
	for i, p := range paths {
		b := res.Data.Repository[fmt.Sprintf("f%d", i)]
		if b == nil || b.IsBinary || b.Text == nil {
			continue
		}
		out[p] = []byte(*b.Text)
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

func (t *localTree) Files(context.Context) ([]string, error) {
	c, err := t.l.repo.CommitObject(plumbing.NewHash(t.sha))
	if err != nil {
		return nil, err
	}
	files, err := gittree.Files(t.l.repo.Storer, c.TreeHash)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(files))
	for p := range files {
		out = append(out, p)
	}
	sort.Strings(out)
	return out, nil
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
