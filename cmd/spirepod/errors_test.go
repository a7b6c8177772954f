package main

import (
	"errors"
	"io/fs"
	"strings"
	"syscall"
	"testing"
)

// TestFileFailure: a file the system refuses is reported by its name, in
// words, with what to do (issue 21 item 9).
func TestFileFailure(t *testing.T) {
	f := newFactory(&IOStreams{}, func(string) string { return "" })
	f.Getwd = func() (string, error) { return "/scaffold", nil }
	for _, tc := range []struct {
		errno     syscall.Errno
		msg, hint string
	}{
		{syscall.EROFS, "cannot write certs/secret/agent-x509pop.key.pem: read-only file system", "the file system is read-only"},
		{syscall.EACCES, "cannot write certs/secret/agent-x509pop.key.pem: permission denied", "check the owner and mode"},
		{syscall.ENOSPC, "cannot write certs/secret/agent-x509pop.key.pem: no space left on device", "the disk (or your quota) is full"},
	} {
		err := fileFailure(f, &fs.PathError{Op: "write", Path: "/scaffold/certs/secret/agent-x509pop.key.pem", Err: tc.errno})
		var ce *cliError
		if !errors.As(err, &ce) || ce.Error() != tc.msg || !strings.Contains(ce.hint, tc.hint) || ce.code != exitFailure {
			t.Errorf("%v: %q (hint %q)", tc.errno, err, ce.hint)
		}
	}
}
