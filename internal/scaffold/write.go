package scaffold

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/spirepod/spirepod/internal/atomicfile"
	"github.com/spirepod/spirepod/internal/unidiff"
)

// Action is what writing a plan does to one file.
type Action string

const (
	Create    Action = "create"
	Update    Action = "update"
	Unchanged Action = "unchanged"
)

// FileChange is one file of a plan.
type FileChange struct {
	Path   string `json:"path"`
	Action Action `json:"action"`
	old    []byte
	new    []byte
}

// Plan compares a rendered tree with a directory on disk.
type Plan struct {
	Dir   string       `json:"dir"`
	Files []FileChange `json:"files"`
}

// PlanWrite compares files (slash paths) with what is under dir. Files under
// dir that are not in files are the user's and are never touched.
func PlanWrite(dir string, files map[string][]byte) (*Plan, error) {
	plan := &Plan{Dir: dir}
	for _, p := range SortedPaths(files) {
		want := files[p]
		have, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(p)))
		fc := FileChange{Path: p, new: want}
		switch {
		case errors.Is(err, fs.ErrNotExist):
			fc.Action = Create
		case err != nil:
			return nil, err
		case bytes.Equal(have, want), len(want) == 0:
			// An empty rendered file is a create-only placeholder (the team
			// CA before `pki gen`): whatever is there now stays.
			fc.Action = Unchanged
		default:
			fc.Action, fc.old = Update, have
		}
		plan.Files = append(plan.Files, fc)
	}
	return plan, nil
}

// Count returns how many files take each action.
func (p *Plan) Count(a Action) int {
	n := 0
	for _, f := range p.Files {
		if f.Action == a {
			n++
		}
	}
	return n
}

// Changed reports whether writing the plan would change anything.
func (p *Plan) Changed() bool { return p.Count(Create)+p.Count(Update) > 0 }

// Diff is the unified diff of every file the plan creates or updates.
func (p *Plan) Diff() string {
	var b strings.Builder
	for _, f := range p.Files {
		if f.Action == Unchanged {
			continue
		}
		b.WriteString(unidiff.Diff(unidiff.Side{Name: "a/" + f.Path, Text: f.old, Exists: f.Action != Create},
			unidiff.Side{Name: "b/" + f.Path, Text: f.new, Exists: true}))
	}
	return b.String()
}

// ConflictError lists files that exist with other content.
type ConflictError struct {
	Paths []string
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("%d existing file(s) differ from what would be written: %s", len(e.Paths), strings.Join(e.Paths, ", "))
}

// Write writes the plan: created files always, updated files only with
// force (otherwise a ConflictError and nothing is written), unchanged files
// never (their mtime stays). Each file is written atomically.
func (p *Plan) Write(ctx context.Context, force bool) error {
	var conflicts []string
	for _, f := range p.Files {
		if f.Action == Update {
			conflicts = append(conflicts, f.Path)
		}
	}
	if len(conflicts) > 0 && !force {
		return &ConflictError{Paths: conflicts}
	}
	for _, f := range p.Files {
		if f.Action == Unchanged {
			continue
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		full := filepath.Join(p.Dir, filepath.FromSlash(f.Path))
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			return err
		}
		perm := fs.FileMode(0o644)
		if strings.HasSuffix(f.Path, ".key.pem") || strings.HasSuffix(f.Path, ".key") {
			perm = 0o600
		}
		if err := atomicfile.WriteFile(full, f.new, atomicfile.Options{Perm: perm}); err != nil {
			return fmt.Errorf("write %s: %w", full, err)
		}
	}
	return nil
}
