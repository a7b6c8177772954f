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

// targetError reports a failure about path, the file being written, never
// the temporary file's name: "write certs/x.pem: read-only file system".
func targetError(path string, err error) error {
	if err == nil {
		return nil
	}
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return &fs.PathError{Op: "write", Path: path, Err: pe.Err}
	}
	var le *os.LinkError
	if errors.As(err, &le) {
		return &fs.PathError{Op: "write", Path: path, Err: le.Err}
	}
	return err
}

// WriteFile writes data to path atomically with opts.
func WriteFile(path string, data []byte, opts Options) (err error) {
	defer func() {
		if !errors.Is(err, ErrExists) {
			err = targetError(path, err)
		}
	}()
	tmpName, err := Stage(path, data, opts)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = os.Remove(tmpName)
		}
	}()
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
	syncDir(filepath.Dir(path))
	return nil
}

// Stage writes data to a new temporary file next to path, synced and with
// its final mode, and returns its name: renaming it to path is the commit
// (several files can be staged first and committed together). The caller
// removes it if it does not commit.
func Stage(path string, data []byte, opts Options) (tmpName string, err error) {
	defer func() { err = targetError(path, err) }()
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return "", err
	}
	defer func() {
		if err != nil {
			_ = tmp.Close()
			_ = os.Remove(tmp.Name())
		}
	}()
	perm := opts.Perm
	if perm == 0 {
		perm = 0o644
	}
	// CreateTemp makes the file 0600; set the final mode before any content.
	if err = tmp.Chmod(perm); err != nil {
		return "", err
	}
	if _, err = tmp.Write(data); err != nil {
		return "", err
	}
	if err = tmp.Sync(); err != nil {
		return "", err
	}
	if err = tmp.Close(); err != nil {
		return "", err
	}
	return tmp.Name(), nil
}

// Aside keeps the current content of path under a new name next to it (a
// hard link: no copy, and replacing path later leaves it intact) and
// returns that name, so a change of several files can be undone.
func Aside(path string) (string, error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".old-*")
	if err != nil {
		return "", err
	}
	name := f.Name()
	_ = f.Close()
	if err := os.Remove(name); err != nil {
		return "", err
	}
	if err := os.Link(path, name); err != nil {
		return "", err
	}
	return name, nil
}

func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
}
