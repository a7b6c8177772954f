// Package pr makes the pull requests of steps 4 and 5 of the guide in the
// city repository: the team CA added to the SPIRE server's x509pop trust list
// (trust-ca), and the node aliases and workload entries (spiffe-id).
//
// A change is computed from the base branch's current files (a Change), then
// upserted on a fixed branch spirepod/<team>/<kind>: through the GitHub Git
// Data and Pulls APIs without a clone (Open), or in a local checkout with
// go-git (OpenLocal). Running twice with the same content changes nothing.
//
// The package never prints, exits or reads flags: it takes a context, options
// and an *http.Client, and returns result structs the CLI renders.
package pr

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/spirepod/spirepod/internal/pki"
)

// Kinds of pull request.
const (
	KindTrustCA  = "trust-ca"
	KindSpiffeID = "spiffe-id"
)

// BranchName is the branch a team's pull request of a kind lives on.
func BranchName(team, kind string) string { return "spirepod/" + team + "/" + kind }

// ReadFunc reads a file of the base branch: its content and whether it exists.
type ReadFunc func(ctx context.Context, path string) ([]byte, bool, error)

// File is one file a change writes, with its content on the base branch.
type File struct {
	Path      string `json:"path"`
	OldExists bool   `json:"oldExists"`
	Old       []byte `json:"-"`
	New       []byte `json:"-"`
	// Delete removes the file (New is ignored).
	Delete bool `json:"delete,omitempty"`
}

// Change is a pull request to make: what it is called and how to compute its
// files from the base branch.
type Change struct {
	Kind    string
	Team    string
	Branch  string
	Title   string
	Body    string
	Message string // commit message (without the base trailer)
	// Warnings are facts a reviewer must know, rendered by the CLI on stderr.
	Warnings []string
	// Compute returns the files to write, reading the base with read. Files
	// whose content equals the base are dropped by the caller.
	Compute func(ctx context.Context, read ReadFunc) ([]File, error)
	// Verify, when set, judges the files against the whole base (the rules
	// the platform's city check runs) before anything is written; an error
	// refuses the change; the warnings it returns join Result.Warnings.
	Verify func(ctx context.Context, base BaseTree, files []File) ([]string, error)
}

// verify runs c.Verify and returns the change's warnings with its own.
func verify(ctx context.Context, c *Change, base BaseTree, files []File) ([]string, error) {
	warnings := append([]string(nil), c.Warnings...)
	if c.Verify == nil {
		return warnings, nil
	}
	w, err := c.Verify(ctx, memoTree(base, files), files)
	return append(warnings, w...), err
}

// Actions a run can end with.
const (
	ActionCreated   = "created"   // new branch and pull request
	ActionUpdated   = "updated"   // new commit on the existing branch, PR body updated
	ActionRebuilt   = "rebuilt"   // the base moved: the branch was rebuilt on it
	ActionUnchanged = "unchanged" // the branch already holds this content; nothing sent
	ActionInBase    = "in-base"   // the base branch already contains the change; nothing opened
	ActionPlanned   = "planned"   // --dry-run: nothing sent
)

// Result is what a run did.
type Result struct {
	Kind     string   `json:"kind"`
	Repo     string   `json:"repo,omitempty"`
	Base     string   `json:"base"`
	BaseSHA  string   `json:"baseSHA,omitempty"`
	Branch   string   `json:"branch"`
	HeadRepo string   `json:"headRepo,omitempty"` // owner/name of the fork, when one was used
	Action   string   `json:"action"`
	Commit   string   `json:"commit,omitempty"`
	URL      string   `json:"url,omitempty"`
	Number   int      `json:"number,omitempty"`
	Files    []string `json:"files"`
	// Requests is the number of HTTP requests sent to GitHub (retries included).
	Requests int    `json:"requests"`
	Pushed   bool   `json:"pushed,omitempty"`
	Title    string `json:"title"`
	Body     string `json:"body,omitempty"`
	// Diff is the unified diff of every file, for --dry-run.
	Diff     string   `json:"diff,omitempty"`
	Warnings []string `json:"warnings,omitempty"`
}

// ErrPrivateKey means content about to be committed holds a private key.
var ErrPrivateKey = errors.New("refusing to commit: the content holds a PEM private key")

// PrivateKeyError names the file that held a private key.
type PrivateKeyError struct{ Path string }

func (e *PrivateKeyError) Error() string {
	return fmt.Sprintf("refusing to commit %s: it holds a PEM private key", e.Path)
}
func (e *PrivateKeyError) Unwrap() error { return ErrPrivateKey }

// guard is the last check before anything is committed or pushed.
func guard(files []File) error {
	for _, f := range files {
		if pki.ContainsPrivateKey(f.New) {
			return &PrivateKeyError{Path: f.Path}
		}
	}
	return nil
}

// compute runs the change against read and drops files equal to the base.
func compute(ctx context.Context, c *Change, read ReadFunc) ([]File, error) {
	files, err := c.Compute(ctx, read)
	if err != nil {
		return nil, err
	}
	out := files[:0]
	for _, f := range files {
		if (f.Delete && !f.OldExists) || (!f.Delete && f.OldExists && string(f.Old) == string(f.New)) {
			continue
		}
		out = append(out, f)
	}
	if err := guard(out); err != nil {
		return nil, err
	}
	return out, nil
}

// baseTrailer records, in each commit spirepod makes, the base commit the
// branch was computed from; a later run compares it with the base's tip.
const baseTrailer = "Spirepod-Base: "

func commitMessage(c *Change, baseSHA string) string {
	return strings.TrimRight(c.Message, "\n") + "\n\n" + baseTrailer + baseSHA + "\n"
}

func trailerBase(msg string) string {
	for _, line := range strings.Split(msg, "\n") {
		if v, ok := strings.CutPrefix(line, baseTrailer); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func paths(files []File) []string {
	out := make([]string, len(files))
	for i, f := range files {
		out[i] = f.Path
	}
	return out
}

// memoRead caches reads of the base so a change may read a path twice.
func memoRead(read ReadFunc) ReadFunc {
	type entry struct {
		b  []byte
		ok bool
	}
	cache := map[string]entry{}
	return func(ctx context.Context, p string) ([]byte, bool, error) {
		if e, ok := cache[p]; ok {
			return e.b, e.ok, nil
		}
		b, ok, err := read(ctx, p)
		if err == nil {
			cache[p] = entry{b, ok}
		}
		return b, ok, err
	}
}
