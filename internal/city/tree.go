package city

import (
	"container/list"
	"context"
	"crypto/sha1" //nolint:gosec // git object IDs
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"

	"github.com/go-git/go-billy/v5"
	git "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/storer"
	"github.com/go-git/go-git/v5/storage/filesystem"
)

// Tree is a city at one commit (or a directory, or a commit plus a change):
// slash-separated paths relative to the city root and their contents.
type Tree interface {
	// Files lists every regular file, sorted.
	Files(ctx context.Context) ([]string, error)
	// Read returns the contents of the paths that exist; a path that does
	// not is left out of the map (not an error).
	Read(ctx context.Context, paths []string) (map[string][]byte, error)
}

// LinkLister is a Tree that also lists its entries that are neither
// regular files nor directories (symbolic links, submodules): a checkout
// and kustomize follow them; the judge reads none of them and reports each.
// Every Tree of this package is one; a Tree that is not lists none.
type LinkLister interface {
	Links(ctx context.Context) ([]string, error)
}

func treeLinks(ctx context.Context, t Tree) ([]string, error) {
	if l, ok := t.(LinkLister); ok {
		return l.Links(ctx)
	}
	return nil, nil
}

// MapTree is an in-memory tree: path → content.
type MapTree map[string][]byte

// Files lists the map's paths, sorted.
func (m MapTree) Files(context.Context) ([]string, error) {
	out := make([]string, 0, len(m))
	for p := range m {
		out = append(out, p)
	}
	sort.Strings(out)
	return out, nil
}

// Links: a map holds regular files only.
func (m MapTree) Links(context.Context) ([]string, error) { return nil, nil }

// Read returns the contents of the paths that are in the map.
func (m MapTree) Read(_ context.Context, paths []string) (map[string][]byte, error) {
	out := make(map[string][]byte, len(paths))
	for _, p := range paths {
		if b, ok := m[p]; ok {
			out[p] = b
		}
	}
	return out, nil
}

// Overlay is base with files added or replaced and deleted paths removed:
// the city as it will be once a change merges. The team side (`pr trust-ca`,
// `pr spiffe-id`) judges its change this way, against the base it builds on.
func Overlay(base Tree, files map[string][]byte, deleted []string) Tree {
	o := &overlay{base: base, files: make(map[string][]byte, len(files)), deleted: map[string]bool{}}
	for p, b := range files {
		o.files[clean(p)] = b
	}
	for _, p := range deleted {
		p = clean(p)
		if _, replaced := o.files[p]; !replaced {
			o.deleted[p] = true
		}
	}
	return o
}

type overlay struct {
	base    Tree
	files   map[string][]byte
	deleted map[string]bool
}

func (o *overlay) Files(ctx context.Context) ([]string, error) {
	base, err := o.base.Files(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(base)+len(o.files))
	for _, p := range base {
		if _, replaced := o.files[p]; !replaced && !o.deleted[p] {
			out = append(out, p)
		}
	}
	for p := range o.files {
		out = append(out, p)
	}
	sort.Strings(out)
	return out, nil
}

// Links are the base's, but for paths the change writes or deletes.
func (o *overlay) Links(ctx context.Context) ([]string, error) {
	base, err := treeLinks(ctx, o.base)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, p := range base {
		if _, replaced := o.files[p]; !replaced && !o.deleted[p] {
			out = append(out, p)
		}
	}
	return out, nil
}

func (o *overlay) Read(ctx context.Context, paths []string) (map[string][]byte, error) {
	var fromBase []string
	out := make(map[string][]byte, len(paths))
	for _, p := range paths {
		switch b, ok := o.files[p]; {
		case ok:
			out[p] = b
		case !o.deleted[p]:
			fromBase = append(fromBase, p)
		}
	}
	if len(fromBase) > 0 {
		got, err := o.base.Read(ctx, fromBase)
		if err != nil {
			return nil, err
		}
		for p, b := range got {
			out[p] = b
		}
	}
	return out, nil
}

// history is the overlay's base history (the git log of the trust list).
func (o *overlay) history() historian {
	if h, ok := o.base.(historian); ok {
		return h
	}
	if h, ok := o.base.(interface{ history() historian }); ok {
		return h.history()
	}
	return nil
}

// DirTree is a directory on disk (for a city that is not a git checkout).
// .git directories are skipped; symbolic links are not followed.
func DirTree(dir string) Tree { return dirTree(dir) }

type dirTree string

func (d dirTree) Files(ctx context.Context) ([]string, error) {
	files, _, err := d.walk(ctx)
	return files, err
}

// Links lists the symbolic links (and anything else not a regular file).
func (d dirTree) Links(ctx context.Context) ([]string, error) {
	_, links, err := d.walk(ctx)
	return links, err
}

func (d dirTree) walk(ctx context.Context) (files, links []string, err error) {
	err = filepath.WalkDir(string(d), func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if e.IsDir() {
			if e.Name() == ".git" {
				return filepath.SkipDir
			}
			return ctx.Err()
		}
		rel, err := filepath.Rel(string(d), p)
		if err != nil {
			return err
		}
		if e.Type().IsRegular() {
			files = append(files, filepath.ToSlash(rel))
		} else {
			links = append(links, filepath.ToSlash(rel))
		}
		return nil
	})
	sort.Strings(files)
	sort.Strings(links)
	return files, links, err
}

func (d dirTree) Read(ctx context.Context, paths []string) (map[string][]byte, error) {
	out := make(map[string][]byte, len(paths))
	for _, p := range paths {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		b, err := os.ReadFile(filepath.Join(string(d), filepath.FromSlash(p)))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out[p] = b
	}
	return out, nil
}

// GitTree is one commit of a local git repository, read with go-git (no git
// binary): the committed city, whatever the work tree holds.
type GitTree struct {
	repo   *git.Repository
	commit *object.Commit
	tree   *object.Tree
	// Rev is the revision as asked; Commit its hash.
	Rev    string
	Commit plumbing.Hash

	once  sync.Once
	index map[string]plumbing.Hash // path → blob, filled by Files
	files []string
	links []string                 // symbolic links and submodules, filled by Files
	dirs  map[string]plumbing.Hash // directory → tree hash, filled by Files
	err   error

	mu    sync.Mutex
	extra []*filesystem.Storage // more stores for parallel reads
}

// ErrRevision means a revision does not name a commit of the repository.
var ErrRevision = errors.New("unknown revision")

// ErrNoRepository means a directory is not inside a git repository.
var ErrNoRepository = errors.New("not a git repository")

// OpenGit opens the repository holding dir (found upward, like git does) at
// rev: a branch (main), a remote branch (origin/main), a tag, a full or
// abbreviated commit hash, or HEAD (the default when rev is empty). Paths
// are relative to the repository's root.
func OpenGit(dir, rev string) (*GitTree, error) {
	repo, err := git.PlainOpenWithOptions(dir, &git.PlainOpenOptions{DetectDotGit: true, EnableDotGitCommonDir: true})
	if errors.Is(err, git.ErrRepositoryNotExists) {
		return nil, fmt.Errorf("%s: %w", dir, ErrNoRepository)
	}
	if err != nil {
		return nil, fmt.Errorf("open git repository at %s: %w", dir, err)
	}
	// Re-open the same .git with pack files kept open: go-git otherwise
	// re-opens the pack for every object, which dominates reading a city.
	if st, ok := repo.Storer.(*filesystem.Storage); ok {
		keep := filesystem.NewStorageWithOptions(st.Filesystem(), newObjectCache(),
			filesystem.Options{KeepDescriptors: true, ExclusiveAccess: true})
		var wt billy.Filesystem
		if w, err := repo.Worktree(); err == nil {
			wt = w.Filesystem
		}
		if r, err := git.Open(keep, wt); err == nil {
			repo = r
		}
	}
	return gitTreeAt(repo, rev)
}

// Close releases the pack files the tree keeps open.
func (g *GitTree) Close() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	var errs []error
	for _, e := range g.extra {
		errs = append(errs, e.Close())
	}
	g.extra = nil
	if st, ok := g.repo.Storer.(*filesystem.Storage); ok {
		errs = append(errs, st.Close())
	}
	return errors.Join(errs...)
}

func gitTreeAt(repo *git.Repository, rev string) (*GitTree, error) {
	if rev == "" {
		rev = "HEAD"
	}
	h, err := repo.ResolveRevision(plumbing.Revision(rev))
	if err != nil {
		return nil, fmt.Errorf("%w %q: %v", ErrRevision, rev, err)
	}
	c, err := repo.CommitObject(*h)
	if err != nil {
		return nil, fmt.Errorf("%w %q: not a commit: %v", ErrRevision, rev, err)
	}
	t, err := c.Tree()
	if err != nil {
		return nil, fmt.Errorf("read tree of %s: %w", c.Hash, err)
	}
	return &GitTree{repo: repo, commit: c, tree: t, Rev: rev, Commit: c.Hash}, nil
}

// At is the same repository at another revision (the --base of a check).
func (g *GitTree) At(rev string) (*GitTree, error) { return gitTreeAt(g.repo, rev) }

// Root is the repository's work tree root, or "" for a bare repository.
func (g *GitTree) Root() string {
	wt, err := g.repo.Worktree()
	if err != nil {
		return ""
	}
	return wt.Filesystem.Root()
}

// Files lists the commit's regular files (symbolic links and submodules
// are left out), sorted. Trees are decoded in parallel.
func (g *GitTree) Files(ctx context.Context) ([]string, error) {
	g.once.Do(func() {
		stores := g.stores(min(runtime.GOMAXPROCS(0), 4))
		type job struct {
			prefix string
			hash   plumbing.Hash
		}
		jobs := make(chan job, 1<<16)
		var pending sync.WaitGroup
		var mu sync.Mutex
		var errs []error
		var links []string
		index := map[string]plumbing.Hash{}
		dirs := map[string]plumbing.Hash{}
		pending.Add(1)
		jobs <- job{"", g.tree.Hash}
		done := make(chan struct{})
		var workers sync.WaitGroup
		for _, st := range stores {
			workers.Add(1)
			go func() {
				defer workers.Done()
				local := map[string]plumbing.Hash{}
				defer func() {
					mu.Lock()
					maps.Copy(index, local)
					mu.Unlock()
				}()
				for {
					var j job
					select {
					case j = <-jobs:
					case <-done:
						return
					}
					t, err := object.GetTree(st, j.hash)
					if err == nil {
						err = ctx.Err()
					}
					if err != nil {
						mu.Lock()
						errs = append(errs, fmt.Errorf("walk tree of %s at %q: %w", g.Commit, j.prefix, err))
						mu.Unlock()
						pending.Done()
						continue
					}
					for _, e := range t.Entries {
						p := e.Name
						if j.prefix != "" {
							p = j.prefix + "/" + e.Name
						}
						switch e.Mode {
						case filemode.Dir:
							mu.Lock()
							dirs[p] = e.Hash
							mu.Unlock()
							pending.Add(1)
							select {
							case jobs <- job{p, e.Hash}:
							default: // the queue is full: walk it here
								go func() { jobs <- job{p, e.Hash} }()
							}
						case filemode.Regular, filemode.Executable, filemode.Deprecated:
							local[p] = e.Hash
						default: // symbolic links, submodules
							mu.Lock()
							links = append(links, p)
							mu.Unlock()
						}
					}
					pending.Done()
				}
			}()
		}
		pending.Wait()
		close(done)
		workers.Wait()
		if len(errs) > 0 {
			g.err = errors.Join(errs...)
			return
		}
		g.index = index
		g.dirs = dirs
		sort.Strings(links)
		g.links = links
		g.files = make([]string, 0, len(index))
		for p := range index {
			g.files = append(g.files, p)
		}
		sort.Strings(g.files)
	})
	if g.err != nil {
		return nil, g.err
	}
	return g.files, nil
}

// DirHash is the git tree hash of a directory of the commit: it names
// everything under it (contents, modes, links), so a judgement of the
// directory can be kept by it.
func (g *GitTree) DirHash(ctx context.Context, dir string) (string, bool) {
	if _, err := g.Files(ctx); err != nil {
		return "", false
	}
	h, ok := g.dirs[dir]
	return h.String(), ok
}

// Links lists the commit's symbolic links and submodules, sorted.
func (g *GitTree) Links(ctx context.Context) ([]string, error) {
	if _, err := g.Files(ctx); err != nil {
		return nil, err
	}
	return g.links, nil
}

// Read returns the blobs at paths in the commit, in parallel over several
// object stores (go-git's store is not safe for concurrent use).
func (g *GitTree) Read(ctx context.Context, paths []string) (map[string][]byte, error) {
	if _, err := g.Files(ctx); err != nil {
		return nil, err
	}
	// Each distinct blob is read once (identical files share one).
	byHash := map[plumbing.Hash][]string{}
	var todo []plumbing.Hash
	for _, p := range paths {
		h, ok := g.index[p]
		if !ok {
			continue
		}
		if _, seen := byHash[h]; !seen {
			todo = append(todo, h)
		}
		byHash[h] = append(byHash[h], p)
	}
	stores := g.stores(min(runtime.GOMAXPROCS(0), 4, len(todo)/256+1))
	out := make(map[string][]byte, len(paths))
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make([]error, len(stores))
	per := (len(todo) + len(stores) - 1) / len(stores)
	for w, st := range stores {
		lo, hi := min(w*per, len(todo)), min((w+1)*per, len(todo))
		wg.Add(1)
		go func() { // contiguous ranges keep a folder's objects together in the pack
			defer wg.Done()
			local := make(map[plumbing.Hash][]byte, hi-lo)
			for _, h := range todo[lo:hi] {
				if err := ctx.Err(); err != nil {
					errs[w] = err
					return
				}
				b, err := readBlob(st, h)
				if err != nil {
					errs[w] = fmt.Errorf("read %s at %s: %w", byHash[h][0], g.Commit, err)
					return
				}
				local[h] = b
			}
			mu.Lock()
			for h, b := range local {
				for _, p := range byHash[h] {
					out[p] = b
				}
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return out, nil
}

// stores returns up to n object stores over the same repository: the
// repository's own and, for an on-disk one, independent copies.
func (g *GitTree) stores(n int) []storer.EncodedObjectStorer {
	out := []storer.EncodedObjectStorer{g.repo.Storer}
	st, ok := g.repo.Storer.(*filesystem.Storage)
	if !ok {
		return out
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	for len(g.extra) < n-1 {
		g.extra = append(g.extra, filesystem.NewStorageWithOptions(st.Filesystem(), newObjectCache(),
			filesystem.Options{KeepDescriptors: true, ExclusiveAccess: true}))
	}
	for _, e := range g.extra[:n-1] {
		out = append(out, e)
	}
	return out
}

func readBlob(st storer.EncodedObjectStorer, h plumbing.Hash) ([]byte, error) {
	obj, err := st.EncodedObject(plumbing.BlobObject, h)
	if err != nil {
		return nil, err
	}
	r, err := obj.Reader()
	if err != nil {
		return nil, err
	}
	defer r.Close()
	b := make([]byte, obj.Size())
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, err
	}
	return b, nil
}

// changedPaths lists the files that differ between two commits of the
// same repository, from the trees alone: a subtree whose hash is the same
// on both sides is never opened (go-git's DiffTree opens every child tree of
// a changed directory).
func (g *GitTree) changedPaths(ctx context.Context, base *GitTree) ([]string, error) {
	var out []string
	var walk func(prefix string, a, b plumbing.Hash) error
	entries := func(h plumbing.Hash) (map[string]object.TreeEntry, error) {
		m := map[string]object.TreeEntry{}
		if h.IsZero() {
			return m, nil
		}
		t, err := object.GetTree(g.repo.Storer, h)
		if err != nil {
			return nil, err
		}
		for _, e := range t.Entries {
			m[e.Name] = e
		}
		return m, nil
	}
	walk = func(prefix string, a, b plumbing.Hash) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		ea, err := entries(a)
		if err != nil {
			return err
		}
		eb, err := entries(b)
		if err != nil {
			return err
		}
		names := map[string]bool{}
		for n := range ea {
			names[n] = true
		}
		for n := range eb {
			names[n] = true
		}
		for n := range names {
			x, inA := ea[n]
			y, inB := eb[n]
			if inA && inB && x.Hash == y.Hash && x.Mode == y.Mode {
				continue
			}
			p := path.Join(prefix, n)
			var da, db plumbing.Hash
			if inA && x.Mode == filemode.Dir {
				da = x.Hash
			} else if inA {
				out = append(out, p)
			}
			if inB && y.Mode == filemode.Dir {
				db = y.Hash
			} else if inB && !(inA && x.Mode != filemode.Dir) {
				out = append(out, p)
			}
			if !da.IsZero() || !db.IsZero() {
				if err := walk(p, da, db); err != nil {
					return err
				}
			}
		}
		return nil
	}
	if err := walk("", base.tree.Hash, g.tree.Hash); err != nil {
		return nil, fmt.Errorf("diff %s..%s: %w", base.Commit, g.Commit, err)
	}
	sort.Strings(out)
	return out, nil
}

func (g *GitTree) sameRepo(o *GitTree) bool { return g.repo == o.repo }

func clean(p string) string { return strings.TrimPrefix(filepath.ToSlash(filepath.Clean(p)), "./") }

// objectCache is go-git's object LRU (delta bases are looked up by hash)
// keyed with crypto/sha1 instead of go-git's collision-detecting sha1cd,
// which is several times slower and was a fifth of a city check's CPU. The
// key only finds objects again within this process; no integrity decision
// rests on it (git and GitHub refuse SHAttered-style colliding objects on
// the way in).
type objectCache struct {
	mu   sync.Mutex
	max  int64
	size int64
	ll   *list.List
	m    map[plumbing.Hash]*list.Element
}

type cached struct {
	key plumbing.Hash
	obj plumbing.EncodedObject
}

// objectCacheSize bounds each store's cache.
const objectCacheSize = 16 << 20

func newObjectCache() *objectCache {
	return &objectCache{max: objectCacheSize, ll: list.New(), m: map[plumbing.Hash]*list.Element{}}
}

func objectKey(o plumbing.EncodedObject) (plumbing.Hash, bool) {
	r, err := o.Reader()
	if err != nil {
		return plumbing.ZeroHash, false
	}
	defer r.Close()
	h := sha1.New() //nolint:gosec // git's object ID, as a cache key
	fmt.Fprintf(h, "%s %d\x00", o.Type(), o.Size())
	if _, err := io.Copy(h, r); err != nil {
		return plumbing.ZeroHash, false
	}
	var k plumbing.Hash
	copy(k[:], h.Sum(nil))
	return k, true
}

func (c *objectCache) Put(o plumbing.EncodedObject) {
	if o.Size() > c.max {
		return
	}
	k, ok := objectKey(o)
	if !ok {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.m[k]; ok {
		c.ll.MoveToFront(e)
		return
	}
	c.m[k] = c.ll.PushFront(cached{k, o})
	c.size += o.Size()
	for c.size > c.max {
		last := c.ll.Back()
		v := last.Value.(cached)
		c.ll.Remove(last)
		delete(c.m, v.key)
		c.size -= v.obj.Size()
	}
}

func (c *objectCache) Get(k plumbing.Hash) (plumbing.EncodedObject, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[k]
	if !ok {
		return nil, false
	}
	c.ll.MoveToFront(e)
	return e.Value.(cached).obj, true
}

func (c *objectCache) Clear() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ll.Init()
	c.m = map[plumbing.Hash]*list.Element{}
	c.size = 0
}
