package main

import (
	"fmt"
	"strings"

	"github.com/spirepod/spirepod/internal/pki"
	"github.com/spirepod/spirepod/internal/project"
	"github.com/spirepod/spirepod/internal/rotate"
)

// caBackupDir is where a replaced team CA is kept (pki.TeamCABackupDir).
func caBackupDir(p *project.Project) string { return pki.TeamCABackupDir(p) }

// checkNoRotationForCA refuses a command that would write the team CA or
// its key, or re-render the scaffold around them, while
// spirepod.rotation.yaml records a rotation that has not finished: the
// rotation trusts the current CA and issues from it (or from the new one)
// until its phase 4, and only `spirepod pki rotate` moves them. The error
// names the phase and how to finish or abort the rotation; exit 2,
// nothing written.
func checkNoRotationForCA(f *Factory, p *project.Project, what string) error {
	s, err := rotate.Load(p)
	if err != nil {
		return usageError("fix or move the file away (`spirepod pki rotate --plan` reads it); nothing was written", "%v", err)
	}
	if s == nil || !s.Done.IsZero() {
		return nil
	}
	rep := rotate.Plan(p, s, p.SpireServer)
	phase := fmt.Sprintf("phase %d of %d (%s)", rep.Phase, rep.Phases, rep.PhaseName)
	next := ""
	if rep.Next != "" {
		next = ", next: " + rep.Next
	}
	hint := []string{"finish the rotation with `spirepod pki rotate` (`--plan` shows what is left" + next + ")"}
	if s.CanAbort() == nil {
		hint = append(hint, "or abort it with `spirepod pki rotate --abort` (it keeps the new CA in "+displayPath(f, caBackupDir(p))+")")
	}
	return usageError(strings.Join(hint, ", "),
		"a team CA rotation is in %s (%s): %s would replace the CA it trusts and issues from; nothing was written",
		phase, displayPath(f, rotate.Path(p.Dir)), what)
}
