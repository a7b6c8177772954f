package scaffold

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
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

// Limits on a --from template: its manifests are a few KiB each.
const (
	MaxTemplateFile  = 1 << 20  // one file
	MaxTemplateTotal = 16 << 20 // the whole folder
)

// TooLargeError refuses a template file (or folder) over the limit.
type TooLargeError struct {
	Path        string
	Size, Limit int64
}

func (e *TooLargeError) Error() string {
	return fmt.Sprintf("%s is %d bytes, over the %d-byte limit for template files: it is not a manifest", e.Path, e.Size, e.Limit)
}

// FromCity reads the template folder from a local city checkout at HEAD
// with go-git: committed content only, never the work tree's edits; a file
// over MaxTemplateFile (or a folder over MaxTemplateTotal) is refused by its
// size before anything is read.
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
	var total int64
	err = tree.Files().ForEach(func(f *object.File) error {
		if !f.Mode.IsFile() {
			return nil
		}
		// Sizes first, contents after: a large blob in the template folder
		// must not be read into memory.
		if f.Size > MaxTemplateFile {
			return &TooLargeError{Path: path.Join(CityTemplatePath, f.Name), Size: f.Size, Limit: MaxTemplateFile}
		}
		if total += f.Size; total > MaxTemplateTotal {
			return &TooLargeError{Path: CityTemplatePath, Size: total, Limit: MaxTemplateTotal}
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
