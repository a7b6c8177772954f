// Package atomicfile writes files so that a reader, a crash or an interrupt
// never sees half of one: the content goes to a temporary file in the same
// directory, is synced, gets its final mode, and is then renamed (or, when an
// existing file must not be replaced, hard-linked) into place.
package atomicfile

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// ErrExists is returned (wrapped) when NoClobber is set and the file exists.
var ErrExists = fs.ErrExist

// Options tune one write.
type Options struct {
	// Perm is the final mode of the file, set before it becomes visible.
	Perm fs.FileMode
	// NoClobber refuses to replace an existing file, atomically (link(2)).
	NoClobber bool
	// beforeCommit, when set, runs after the temp file is written and before
	// it is moved into place; tests use it to inject failures.
	beforeCommit func(tmp string) error
	// TestHookBeforeCommit is the same hook for tests in other packages
	// (pki injects write failures with it). Never set it in production code.
	TestHookBeforeCommit func(tmp string) error
}

// WriteFile writes data to path atomically with opts.
func WriteFile(path string, data []byte, opts Options) (err error) {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmpName := tmp.Name()
	defer func() {
		if err != nil {
			_ = tmp.Close()
			_ = os.Remove(tmpName)
		}
	}()
	perm := opts.Perm
	if perm == 0 {
		perm = 0o644
	}
	// CreateTemp makes the file 0600; set the final mode before any content.
	if err = tmp.Chmod(perm); err != nil {
		return err
	}
	if _, err = tmp.Write(data); err != nil {
		return err
	}
	if err = tmp.Sync(); err != nil {
		return err
	}
	if err = tmp.Close(); err != nil {
		return err
	}
	for _, hook := range []func(string) error{opts.beforeCommit, opts.TestHookBeforeCommit} {
		if hook != nil {
			if err = hook(tmpName); err != nil {
				return err
			}
		}
	}
	if opts.NoClobber {
		if err = os.Link(tmpName, path); err != nil {
			if errors.Is(err, fs.ErrExist) {
				return fmt.Errorf("%s: %w", path, ErrExists)
			}
			return err
		}
		return os.Remove(tmpName)
	}
	if err = os.Rename(tmpName, path); err != nil {
		return err
	}
	syncDir(dir)
	return nil
}

func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
}
