// Package gittree reads and edits git trees in a go-git object store without
// a work tree: read one file at a path, write a new tree that replaces a few
// paths on top of a base tree. The local checkout mode of `spirepod pr` and
// the fake GitHub server share it, so both build trees the way git does.
package gittree

import (
	"errors"
	"fmt"
	"io"
	"path"
	"sort"
	"strings"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/storer"
)

// ReadFile returns the content of the file at p (slash-separated) in tree,
// and false when no such file exists.
func ReadFile(s storer.EncodedObjectStorer, tree plumbing.Hash, p string) ([]byte, bool, error) {
	t, err := object.GetTree(s, tree)
	if err != nil {
		return nil, false, fmt.Errorf("read tree %s: %w", tree, err)
	}
	f, err := t.File(strings.Trim(p, "/"))
	if errors.Is(err, object.ErrFileNotFound) || errors.Is(err, object.ErrDirectoryNotFound) || errors.Is(err, object.ErrEntryNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("read %s: %w", p, err)
	}
	r, err := f.Reader()
	if err != nil {
		return nil, false, err
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	return b, err == nil, err
}

// WriteBlob stores data as a blob and returns its hash.
func WriteBlob(s storer.EncodedObjectStorer, data []byte) (plumbing.Hash, error) {
	obj := s.NewEncodedObject()
	obj.SetType(plumbing.BlobObject)
	obj.SetSize(int64(len(data)))
	w, err := obj.Writer()
	if err != nil {
		return plumbing.ZeroHash, err
	}
	if _, err := w.Write(data); err != nil {
		return plumbing.ZeroHash, err
	}
	if err := w.Close(); err != nil {
		return plumbing.ZeroHash, err
	}
	return s.SetEncodedObject(obj)
}

// Entry is one path to set in a new tree: a blob hash with a mode, or
// Delete to remove the path.
type Entry struct {
	Path   string
	Mode   filemode.FileMode
	Hash   plumbing.Hash
	Delete bool
}

// Build writes a new tree: base (ZeroHash for an empty tree) with every
// entry applied, creating intermediate directories as needed. It returns the
// new root tree's hash.
func Build(s storer.EncodedObjectStorer, base plumbing.Hash, entries []Entry) (plumbing.Hash, error) {
	norm := make([]Entry, 0, len(entries))
	for _, e := range entries {
		p := strings.Trim(path.Clean("/"+e.Path), "/")
		if p == "" || p == "." {
			return plumbing.ZeroHash, fmt.Errorf("invalid path %q", e.Path)
		}
		e.Path = p
		norm = append(norm, e)
	}
	h, err := build(s, base, norm)
	if err == nil && h.IsZero() { // everything deleted: an empty tree
		h, err = writeTree(s, nil)
	}
	return h, err
}

func build(s storer.EncodedObjectStorer, base plumbing.Hash, entries []Entry) (plumbing.Hash, error) {
	var cur []object.TreeEntry
	if !base.IsZero() {
		t, err := object.GetTree(s, base)
		if err != nil {
			return plumbing.ZeroHash, fmt.Errorf("read tree %s: %w", base, err)
		}
		cur = append(cur, t.Entries...)
	}
	index := map[string]int{}
	for i, e := range cur {
		index[e.Name] = i
	}
	// Group by first path segment.
	sub := map[string][]Entry{}
	var order []string
	for _, e := range entries {
		first, rest, nested := strings.Cut(e.Path, "/")
		if !nested {
			if e.Delete {
				if i, ok := index[first]; ok {
					cur[i].Name = "" // tombstone
				}
				continue
			}
			te := object.TreeEntry{Name: first, Mode: e.Mode, Hash: e.Hash}
			if i, ok := index[first]; ok {
				cur[i] = te
			} else {
				index[first] = len(cur)
				cur = append(cur, te)
			}
			continue
		}
		if _, ok := sub[first]; !ok {
			order = append(order, first)
		}
		e.Path = rest
		sub[first] = append(sub[first], e)
	}
	for _, dir := range order {
		childBase := plumbing.ZeroHash
		if i, ok := index[dir]; ok && cur[i].Name != "" {
			if cur[i].Mode != filemode.Dir {
				return plumbing.ZeroHash, fmt.Errorf("%s is a file, not a directory", dir)
			}
			childBase = cur[i].Hash
		}
		h, err := build(s, childBase, sub[dir])
		if err != nil {
			return plumbing.ZeroHash, err
		}
		te := object.TreeEntry{Name: dir, Mode: filemode.Dir, Hash: h}
		if h.IsZero() { // empty directory: drop it
			te.Name = ""
		}
		if i, ok := index[dir]; ok {
			cur[i] = te
		} else {
			index[dir] = len(cur)
			cur = append(cur, te)
		}
	}
	out := cur[:0]
	for _, e := range cur {
		if e.Name != "" {
			out = append(out, e)
		}
	}
	if len(out) == 0 && !base.IsZero() {
		return plumbing.ZeroHash, nil
	}
	return writeTree(s, out)
}

func writeTree(s storer.EncodedObjectStorer, out []object.TreeEntry) (plumbing.Hash, error) {
	// git orders entries by name, with directories compared as name + "/".
	sort.Slice(out, func(i, j int) bool { return sortKey(out[i]) < sortKey(out[j]) })
	t := &object.Tree{Entries: out}
	obj := s.NewEncodedObject()
	if err := t.Encode(obj); err != nil {
		return plumbing.ZeroHash, err
	}
	return s.SetEncodedObject(obj)
}

func sortKey(e object.TreeEntry) string {
	if e.Mode == filemode.Dir {
		return e.Name + "/"
	}
	return e.Name
}

// WriteCommit stores a commit and returns its hash.
func WriteCommit(s storer.EncodedObjectStorer, c *object.Commit) (plumbing.Hash, error) {
	obj := s.NewEncodedObject()
	if err := c.Encode(obj); err != nil {
		return plumbing.ZeroHash, err
	}
	return s.SetEncodedObject(obj)
}

// Files lists every file in tree with its blob hash, keyed by slash path.
func Files(s storer.EncodedObjectStorer, tree plumbing.Hash) (map[string]plumbing.Hash, error) {
	return walk(s, tree, func(m filemode.FileMode) bool { return m.IsFile() })
}

// Links lists the symbolic links and submodules of tree: entries a checkout
// follows to content that is not in the tree.
func Links(s storer.EncodedObjectStorer, tree plumbing.Hash) ([]string, error) {
	m, err := walk(s, tree, func(m filemode.FileMode) bool { return m == filemode.Symlink || m == filemode.Submodule })
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(m))
	for p := range m {
		out = append(out, p)
	}
	sort.Strings(out)
	return out, nil
}

func walk(s storer.EncodedObjectStorer, tree plumbing.Hash, keep func(filemode.FileMode) bool) (map[string]plumbing.Hash, error) {
	out := map[string]plumbing.Hash{}
	if tree.IsZero() {
		return out, nil
	}
	t, err := object.GetTree(s, tree)
	if err != nil {
		return nil, err
	}
	w := object.NewTreeWalker(t, true, nil)
	defer w.Close()
	for {
		name, e, err := w.Next()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		if keep(e.Mode) {
			out[name] = e.Hash
		}
	}
}
