// Package unidiff renders unified diffs the way git prints them: no phantom
// empty line for empty or newline-terminated text, "\ No newline at end of
// file" for a missing final newline, and /dev/null for a side that does not
// exist. Every command that shows a diff (init, pr, diff, apply) uses it.
package unidiff

import (
	"strings"

	"github.com/pmezard/go-difflib/difflib"
)

// Side is one side of a diff: its name, its text, and whether it exists.
type Side struct {
	Name   string
	Text   []byte
	Exists bool
}

// Diff renders the unified diff from a to b with 3 lines of context, or ""
// when they are equal. A side that does not exist is named /dev/null.
func Diff(a, b Side) string {
	if a.Exists == b.Exists && string(a.Text) == string(b.Text) {
		return ""
	}
	from, to := a.Name, b.Name
	if !a.Exists {
		from = "/dev/null"
	}
	if !b.Exists {
		to = "/dev/null"
	}
	d, err := difflib.GetUnifiedDiffString(difflib.UnifiedDiff{
		A: Lines(a.Text), B: Lines(b.Text), FromFile: from, ToFile: to, Context: 3,
	})
	if err != nil || d == "" {
		// No hunks (difflib fails only on a failing writer): only existence
		// differs, an empty file created or removed. Say so with the header.
		return "--- " + from + "\n+++ " + to + "\n"
	}
	return d
}

// Lines splits text into lines that keep their endings, with no empty last
// line; a missing final newline is marked as git marks it.
func Lines(b []byte) []string {
	if len(b) == 0 {
		return nil
	}
	lines := strings.SplitAfter(string(b), "\n")
	if lines[len(lines)-1] == "" {
		return lines[:len(lines)-1]
	}
	lines[len(lines)-1] += "\n\\ No newline at end of file\n"
	return lines
}
