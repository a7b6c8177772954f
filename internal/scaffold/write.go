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
	"github.com/spirepod/spirepod/internal/project"
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
	// Diff is the plan's unified diff (every file it creates or updates),
	// for the user to review before --force.
	Diff string
}

func (e *ConflictError) Error() string {
	n := project.Count(len(e.Paths), "existing file")
	verb := "differ"
	if len(e.Paths) == 1 {
		verb = "differs"
	}
	return fmt.Sprintf("%s %s from what would be written: %s", n, verb, strings.Join(e.Paths, ", "))
}

// Write writes the plan: created files always, updated files only with
// force (otherwise a ConflictError and nothing is written), unchanged files
// never (their mtime stays).
//
// It is all or nothing, so an interrupt (ctx) or a failure never leaves
// half a scaffold. A directory that does not exist yet is written whole
// into a temporary sibling and renamed into place. Into an existing
// directory, every file is first written next to its target under a
// temporary name (interruptible: ctx is checked before each), then all are
// renamed into place in one quick pass that ctx no longer stops; if a rename
// fails, the files already replaced are put back from copies kept aside.
func (p *Plan) Write(ctx context.Context, force bool) error {
	var conflicts []string
	for _, f := range p.Files {
		if f.Action == Update {
			conflicts = append(conflicts, f.Path)
		}
	}
	if len(conflicts) > 0 && !force {
		return &ConflictError{Paths: conflicts, Diff: p.Diff()}
	}
	if !p.Changed() {
		return nil
	}
	if _, err := os.Lstat(p.Dir); errors.Is(err, fs.ErrNotExist) {
		return p.writeNewDir(ctx)
	}
	return p.writeInto(ctx)
}

func perm(path string) fs.FileMode {
	if strings.HasSuffix(path, ".key.pem") || strings.HasSuffix(path, ".key") {
		return 0o600
	}
	return 0o644
}

// writeNewDir writes every file into a temporary directory next to p.Dir,
// then renames it to p.Dir.
func (p *Plan) writeNewDir(ctx context.Context) (err error) {
	parent := filepath.Dir(p.Dir)
	madeParents, err := mkdirAll(parent)
	defer func() {
		if err != nil {
			for i := len(madeParents) - 1; i >= 0; i-- {
				_ = os.Remove(madeParents[i]) // only if still empty
			}
		}
	}()
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(parent, "."+filepath.Base(p.Dir)+".spirepod-*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = os.RemoveAll(tmp)
		}
	}()
	if err := os.Chmod(tmp, 0o755); err != nil {
		return err
	}
	for _, f := range p.Files {
		if err := ctx.Err(); err != nil {
			return err
		}
		full := filepath.Join(tmp, filepath.FromSlash(f.Path))
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			return err
		}
		if err := atomicfile.WriteFile(full, f.new, atomicfile.Options{Perm: perm(f.Path)}); err != nil {
			return fmt.Errorf("write %s: %w", filepath.Join(p.Dir, filepath.FromSlash(f.Path)), err)
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := os.Rename(tmp, p.Dir); err != nil {
		return fmt.Errorf("move the scaffold into %s: %w", p.Dir, err)
	}
	return nil
}

// staged is one file written next to its target, waiting to be renamed.
type staged struct {
	full, tmp string
	// aside is a copy of the file it replaces ("" when it creates one).
	aside string
}

// writeInto stages every file next to its target, then renames them all.
func (p *Plan) writeInto(ctx context.Context) (err error) {
	var stage []staged
	var madeDirs []string
	defer func() {
		if err == nil {
			return
		}
		for _, s := range stage {
			_ = os.Remove(s.tmp)
			if s.aside != "" {
				_ = os.Remove(s.aside)
			}
		}
		for i := len(madeDirs) - 1; i >= 0; i-- {
			_ = os.Remove(madeDirs[i]) // only if still empty
		}
	}()
	for _, f := range p.Files {
		if f.Action == Unchanged {
			continue
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		full := filepath.Join(p.Dir, filepath.FromSlash(f.Path))
		made, err := mkdirAll(filepath.Dir(full))
		madeDirs = append(madeDirs, made...)
		if err != nil {
			return err
		}
		tmp, err := atomicfile.Stage(full, f.new, atomicfile.Options{Perm: perm(f.Path)})
		if err != nil {
			return fmt.Errorf("write %s: %w", full, err)
		}
		s := staged{full: full, tmp: tmp}
		if f.Action == Update {
			if s.aside, err = atomicfile.Aside(full); err != nil {
				stage = append(stage, s)
				return fmt.Errorf("keep %s aside: %w", full, err)
			}
		}
		stage = append(stage, s)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	// Commit: renames only, not stopped by ctx.
	for i, s := range stage {
		if rerr := os.Rename(s.tmp, s.full); rerr != nil {
			for _, done := range stage[:i] {
				if done.aside != "" {
					_ = os.Rename(done.aside, done.full)
				} else {
					_ = os.Remove(done.full)
				}
			}
			return fmt.Errorf("write %s: %w (the scaffold was put back as it was)", s.full, rerr)
		}
	}
	for _, s := range stage {
		if s.aside != "" {
			_ = os.Remove(s.aside)
		}
	}
	stage = nil
	return nil
}

// mkdirAll is os.MkdirAll that returns the directories it made, outermost
// first.
func mkdirAll(dir string) ([]string, error) {
	var missing []string
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Lstat(d); err == nil {
			break
		}
		missing = append([]string{d}, missing...)
		if filepath.Dir(d) == d {
			break
		}
	}
	var made []string
	for _, d := range missing {
		if err := os.Mkdir(d, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			return made, err
		}
		made = append(made, d)
	}
	return made, nil
}
