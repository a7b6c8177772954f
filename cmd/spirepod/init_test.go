package main

import (
	"strings"
	"testing"
)

// TestInitAsksAgain: on a terminal, init asks for a missing --team and
// --namespace and checks each answer at once: "Bad_Team" is refused with
// the reason and asked again, not taken and failed on later (issue 21
// item 13).
func TestInitAsksAgain(t *testing.T) {
	var errOut strings.Builder
	f := newFactory(&IOStreams{In: strings.NewReader("Bad_Team\nbad-team\nns_1\nteam-ns\n"), Out: &strings.Builder{}, ErrOut: &errOut,
		InTTY: true, ErrTTY: true}, func(string) string { return "" })
	var got *initOptions
	cmd := newCmdInit(f, func(o *initOptions) error { got = o; return nil })
	cmd.SetArgs([]string{})
	if err := cmd.Execute(); err != nil {
		t.Fatalf("%v\n%s", err, errOut.String())
	}
	if got.Team != "bad-team" || got.Namespace != "team-ns" {
		t.Fatalf("team %q namespace %q", got.Team, got.Namespace)
	}
	for _, want := range []string{`"Bad_Team" is not a valid team name`, `"ns_1" is not a valid namespace`} {
		if !strings.Contains(errOut.String(), want) {
			t.Errorf("stderr lacks %q:\n%s", want, errOut.String())
		}
	}
	if n := strings.Count(errOut.String(), "? team: "); n != 2 {
		t.Errorf("asked for the team %d times, want 2", n)
	}
}
