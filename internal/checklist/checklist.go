// Package checklist holds a checklist's items: the result of one check (its
// status, message and hint), the shape shared by `pki inspect`, `verify`
// diagnosis, `status` and the preflights. The CLI renders it in the style of `linkerd check`.
package checklist

// Status of a check.
type Status string

const (
	OK      Status = "ok"      // √
	Warn    Status = "warn"    // ‼
	Todo    Status = "todo"    // ‼, a step not reached yet (status: nothing is broken)
	Fail    Status = "fail"    // ×
	Skipped Status = "skipped" // -, with the reason in Message
)

// Result is one line of a checklist.
type Result struct {
	Group   string `json:"group,omitempty"`
	ID      string `json:"id"`
	Name    string `json:"name"`
	Status  Status `json:"status"`
	Message string `json:"message,omitempty"`
	Hint    string `json:"hint,omitempty"`
}

// Failed reports whether any result is a hard failure.
func Failed(rs []Result) bool {
	for _, r := range rs {
		if r.Status == Fail {
			return true
		}
	}
	return false
}

// Find returns the result with the given ID.
func Find(rs []Result, id string) (Result, bool) {
	for _, r := range rs {
		if r.ID == id {
			return r, true
		}
	}
	return Result{}, false
}

// Counts are how many results have each status.
type Counts struct{ OK, Warn, Todo, Fail, Skipped int }

// Count counts results by status.
func Count(rs []Result) Counts {
	var c Counts
	for _, r := range rs {
		switch r.Status {
		case OK:
			c.OK++
		case Warn:
			c.Warn++
		case Todo:
			c.Todo++
		case Fail:
			c.Fail++
		default:
			c.Skipped++
		}
	}
	return c
}
