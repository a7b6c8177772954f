package scaffold

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"testing/fstest"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing/object"
)

// CityTemplatePath is the template folder inside the city repository.
const CityTemplatePath = "ns/spire/docs-k8s/spire-envoy-integration"

// Source is a template tree and where it came from.
type Source struct {
	FS fs.FS
	// Origin is "embedded" or "<dir>@<commit>".
	Origin string
}

// FromCity reads the template folder from a local city checkout at HEAD
// with go-git: committed content only, never the work tree's edits.
func FromCity(dir string) (*Source, error) {
	repo, err := git.PlainOpenWithOptions(dir, &git.PlainOpenOptions{DetectDotGit: true})
	if err != nil {
		return nil, fmt.Errorf("open git repository %s: %w", dir, err)
	}
	head, err := repo.Head()
	if err != nil {
		return nil, fmt.Errorf("%s: read HEAD: %w", dir, err)
	}
	commit, err := repo.CommitObject(head.Hash())
	if err != nil {
		return nil, fmt.Errorf("%s: read HEAD commit: %w", dir, err)
	}
	root, err := commit.Tree()
	if err != nil {
		return nil, err
	}
	tree, err := root.Tree(CityTemplatePath)
	if errors.Is(err, object.ErrDirectoryNotFound) {
		return nil, fmt.Errorf("%s has no %s at HEAD (%s)", dir, CityTemplatePath, head.Hash().String()[:12])
	}
	if err != nil {
		return nil, err
	}
	files := fstest.MapFS{}
	err = tree.Files().ForEach(func(f *object.File) error {
		if !f.Mode.IsFile() {
			return nil
		}
		r, err := f.Reader()
		if err != nil {
			return err
		}
		defer r.Close()
		data, err := io.ReadAll(r)
		if err != nil {
			return err
		}
		files[f.Name] = &fstest.MapFile{Data: data, Mode: 0o644}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", CityTemplatePath, err)
	}
	return &Source{FS: files, Origin: fmt.Sprintf("%s@%s", dir, head.Hash().String()[:12])}, nil
}
