package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strings"
	"syscall"
)

// Exit codes, documented in `spirepod --help`.
const (
	exitOK          = 0
	exitFailure     = 1
	exitUsage       = 2
	exitTimeout     = 124
	exitInterrupted = 130
)

const exitCodesHelp = `Exit codes:
  0    success
  1    failure (a check failed, an API refused, a file could not be written)
  2    usage (a bad flag, argument or input file; nothing was changed)
  124  timed out (verify, apply --wait)
  130  interrupted`

// cliError is an error with an exit code and an optional hint, printed once
// at the top by run.
type cliError struct {
	code int
	err  error
	hint string
}

func (e *cliError) Error() string { return e.err.Error() }
func (e *cliError) Unwrap() error { return e.err }

// usageError names the flag or file at fault; exit 2.
func usageError(hint, format string, args ...any) error {
	return &cliError{code: exitUsage, err: fmt.Errorf(format, args...), hint: hint}
}

// failure is a non-usage failure with a hint; exit 1.
func failure(err error, hint string) error {
	return &cliError{code: exitFailure, err: err, hint: hint}
}

// timeoutError is for waits that ran out; exit 124.
func timeoutError(err error, hint string) error {
	return &cliError{code: exitTimeout, err: err, hint: hint}
}

// silentError carries an exit code when the output already said everything
// (a checklist with a failing line).
type silentError struct{ code int }

func (e *silentError) Error() string { return fmt.Sprintf("exit %d", e.code) }

// exitCodeFor maps an error to an exit code and prints it with its hint.
func reportError(ctx context.Context, w io.Writer, err error) int {
	if ctx.Err() != nil {
		// SIGINT or SIGTERM: whatever the command ran into while stopping
		// (a cancelled request, a half-read log), it was interrupted.
		fmt.Fprintln(w, "interrupted")
		return exitInterrupted
	}
	var se *silentError
	if errors.As(err, &se) {
		return se.code
	}
	code := exitFailure
	hint := ""
	var ce *cliError
	if errors.As(err, &ce) {
		code, hint = ce.code, ce.hint
	}
	msg := strings.TrimSpace(err.Error())
	fmt.Fprintf(w, "error: %s\n", msg)
	if hint != "" {
		fmt.Fprintf(w, "hint: %s\n", hint)
	}
	return code
}

// fileFailure reports a file that could not be read or written in the
// user's words: the file (never a temporary name), what the system said,
// and what to do. An error that is not about a file is a plain failure.
func fileFailure(f *Factory, err error) error {
	var pe *fs.PathError
	if !errors.As(err, &pe) {
		return failure(err, "")
	}
	verb := "read"
	if pe.Op == "write" || pe.Op == "mkdir" || pe.Op == "rename" || pe.Op == "link" || pe.Op == "remove" {
		verb = "write"
	}
	hint := ""
	switch {
	case errors.Is(pe.Err, syscall.EROFS):
		hint = "the file system is read-only: run spirepod where the scaffold can be written; nothing was half-written"
	case errors.Is(pe.Err, syscall.EACCES), errors.Is(pe.Err, syscall.EPERM):
		hint = "you may not " + verb + " there: check the owner and mode of the file and its directory (ls -ld)"
	case errors.Is(pe.Err, syscall.ENOSPC), errors.Is(pe.Err, syscall.EDQUOT):
		hint = "the disk (or your quota) is full: free some space and run again; nothing was half-written"
	}
	return failure(fmt.Errorf("cannot %s %s: %v", verb, displayPath(f, pe.Path), pe.Err), hint)
}

// pathErr drops the path from an *fs.PathError ("open PATH: no such file"),
// for messages that name the file themselves.
func pathErr(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
