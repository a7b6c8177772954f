package main

import (
	"encoding/json"
	"fmt"
	"io"

	"github.com/spirepod/spirepod/internal/checklist"
)

// writeJSONLine writes v as one line of JSON (a stream of events).
func writeJSONLine(w io.Writer, v any) error { return json.NewEncoder(w).Encode(v) }

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// printChecks renders a checklist like `linkerd check`: grouped, marked
// √ ‼ × (or - for skipped), one hint under each failure or warning.
func printChecks(s *IOStreams, w io.Writer, rs []checklist.Result) {
	group := "\x00"
	for _, r := range rs {
		if r.Group != group {
			if group != "\x00" {
				fmt.Fprintln(w)
			}
			group = r.Group
			if group != "" {
				fmt.Fprintln(w, s.bold(group))
				fmt.Fprintln(w, s.bold(dashes(len(group))))
			}
		}
		line := statusMark(s, r.Status) + " " + r.Name
		if r.Message != "" && r.Status != checklist.OK {
			line += "\n    " + r.Message
		} else if r.Message != "" {
			line += " (" + r.Message + ")"
		}
		fmt.Fprintln(w, line)
		if r.Hint != "" && (r.Status == checklist.Fail || r.Status == checklist.Warn || r.Status == checklist.Todo) {
			fmt.Fprintf(w, "    hint: %s\n", r.Hint)
		}
	}
}

// statusMark is a check's mark: √ ok, ‼ warning or to do, × failed, -
// skipped.
func statusMark(s *IOStreams, st checklist.Status) string {
	switch st {
	case checklist.OK:
		return s.green("√")
	case checklist.Warn, checklist.Todo:
		return s.yellow("‼")
	case checklist.Fail:
		return s.red("×")
	}
	return "-"
}

func dashes(n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = '-'
	}
	return string(b)
}

// checkStatusLine is the closing line of a checklist.
func checkStatusLine(s *IOStreams, rs []checklist.Result) string {
	c := checklist.Count(rs)
	status := s.green("Status check results are √")
	if c.Fail > 0 {
		status = s.red("Status check results are ×")
	}
	todo := ""
	if c.Todo > 0 {
		todo = fmt.Sprintf("%d to do, ", c.Todo)
	}
	return fmt.Sprintf("%s (%d ok, %d warnings, %s%d failed, %d skipped)", status, c.OK, c.Warn, todo, c.Fail, c.Skipped)
}

// printWarnings prints the warnings of a checklist on stderr (text output).
func printWarnings(f *Factory, rs []checklist.Result) {
	if f.JSON() {
		return
	}
	for _, r := range rs {
		if r.Status == checklist.Warn {
			fmt.Fprintf(f.IO.ErrOut, "warning: %s\n", r.Message)
		}
	}
}
