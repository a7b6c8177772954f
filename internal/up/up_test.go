package up

import (
	"context"
	"errors"
	"testing"
	"time"
)

// world is a fake world: each step's state, and what running it does.
type world struct {
	state map[string]Check
	// after maps a step to the state its Run leaves.
	after map[string]Check
	// merges: after this many checks of a waiting step, it is done.
	merges map[string]int
	runs   map[string]int
	checks map[string]int
	failOn string
}

func newWorld() *world {
	return &world{state: map[string]Check{}, after: map[string]Check{}, merges: map[string]int{}, runs: map[string]int{}, checks: map[string]int{}}
}

func (w *world) steps(ids ...string) []Step {
	var out []Step
	for _, id := range ids {
		out = append(out, Step{ID: id, Title: "step " + id,
			Check: func(context.Context) (Check, error) {
				w.checks[id]++
				c := w.state[id]
				if c.State == Waiting && w.merges[id] > 0 {
					w.merges[id]--
					if w.merges[id] == 0 {
						w.state[id] = Check{State: Done}
						return w.state[id], nil
					}
				}
				return c, nil
			},
			Run: func(context.Context) error {
				w.runs[id]++
				if w.failOn == id {
					return errors.New("boom")
				}
				w.state[id] = w.after[id]
				return nil
			}})
	}
	return out
}

func noSleep(context.Context, time.Duration) error { return nil }

// TestUpSkipsWhatIsInPlace: steps in place are skipped, the rest run once,
// in order, and the run ends verified.
func TestUpSkipsWhatIsInPlace(t *testing.T) {
	w := newWorld()
	w.state["a"] = Check{State: Done}
	w.state["b"] = Check{State: Todo}
	w.after["b"] = Check{State: Done}
	w.state["c"] = Check{State: Todo}
	w.after["c"] = Check{State: Done}
	var events []EventKind
	res, err := Run(context.Background(), Options{Steps: w.steps("a", "b", "c"), Sleep: noSleep, Event: func(e Event) { events = append(events, e.Kind) }})
	if err != nil || !res.Verified {
		t.Fatalf("%v %+v", err, res)
	}
	if w.runs["a"] != 0 || w.runs["b"] != 1 || w.runs["c"] != 1 {
		t.Errorf("runs %v", w.runs)
	}
	want := []EventKind{EventSkipped, EventRunning, EventDone, EventRunning, EventDone}
	if len(events) != len(want) {
		t.Fatalf("events %v, want %v", events, want)
	}
	for i := range want {
		if events[i] != want[i] {
			t.Errorf("event %d %s, want %s", i, events[i], want[i])
		}
	}
	// A second run changes nothing: everything is in place.
	res, err = Run(context.Background(), Options{Steps: w.steps("a", "b", "c"), Sleep: noSleep})
	if err != nil || !res.Verified || w.runs["b"] != 1 || w.runs["c"] != 1 {
		t.Errorf("second run: %v runs %v", err, w.runs)
	}
	for _, s := range res.Steps {
		if !s.Skipped {
			t.Errorf("second run: %s not skipped", s.ID)
		}
	}
}

// TestUpNoWaitStopsAtTheFirstWait: a step that opens a pull request and
// then waits on its merge ends a --no-wait run with a WaitingError naming
// who and where; the steps after it do not run; the next run, after the
// merge, goes on from there and nothing runs twice.
func TestUpNoWaitStopsAtTheFirstWait(t *testing.T) {
	w := newWorld()
	w.state["pr"] = Check{State: Todo}
	w.after["pr"] = Check{State: Waiting, Who: "the city's reviewers", What: "merge the pull request", URL: "https://x/pull/1"}
	w.state["apply"] = Check{State: Todo}
	w.after["apply"] = Check{State: Done}
	_, err := Run(context.Background(), Options{Steps: w.steps("pr", "apply"), NoWait: true, Sleep: noSleep})
	var we *WaitingError
	if !errors.As(err, &we) || we.Step != "pr" || we.URL != "https://x/pull/1" || we.Who == "" {
		t.Fatalf("%v", err)
	}
	if w.runs["apply"] != 0 {
		t.Fatalf("apply ran before the merge")
	}
	// Still waiting: the same answer, and the PR is not opened again.
	if _, err := Run(context.Background(), Options{Steps: w.steps("pr", "apply"), NoWait: true, Sleep: noSleep}); !errors.As(err, &we) || w.runs["pr"] != 1 {
		t.Fatalf("still waiting: %v, runs %v", err, w.runs)
	}
	w.state["pr"] = Check{State: Done} // merged
	res, err := Run(context.Background(), Options{Steps: w.steps("pr", "apply"), NoWait: true, Sleep: noSleep})
	if err != nil || !res.Verified || w.runs["pr"] != 1 || w.runs["apply"] != 1 {
		t.Fatalf("after the merge: %v, runs %v", err, w.runs)
	}
}

// TestUpWaitsWithBackoff: without NoWait a waiting step is polled, the
// waits doubling up to MaxPoll, until it is done.
func TestUpWaitsWithBackoff(t *testing.T) {
	w := newWorld()
	w.state["pr"] = Check{State: Waiting, Who: "reviewers", What: "merge"}
	w.merges["pr"] = 6 // done at the 6th check
	var slept []time.Duration
	sleep := func(_ context.Context, d time.Duration) error { slept = append(slept, d); return nil }
	res, err := Run(context.Background(), Options{Steps: w.steps("pr"), Poll: time.Second, MaxPoll: 4 * time.Second, Sleep: sleep})
	if err != nil || !res.Verified || !res.Steps[0].Waited {
		t.Fatalf("%v %+v", err, res)
	}
	want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 4 * time.Second, 4 * time.Second}
	if len(slept) != len(want) {
		t.Fatalf("slept %v, want %v", slept, want)
	}
	for i := range want {
		if slept[i] != want[i] {
			t.Errorf("wait %d: %v, want %v", i, slept[i], want[i])
		}
	}
}

// TestUpStopsOnCancel: an interrupt during a wait ends the run with the
// context's error, not a step failure.
func TestUpStopsOnCancel(t *testing.T) {
	w := newWorld()
	w.state["pr"] = Check{State: Waiting, Who: "reviewers", What: "merge"}
	ctx, cancel := context.WithCancel(context.Background())
	sleep := func(ctx context.Context, _ time.Duration) error { cancel(); return ctx.Err() }
	_, err := Run(ctx, Options{Steps: w.steps("pr"), Sleep: sleep})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("%v", err)
	}
}

// TestUpFailures: a failed Run, a broken world and a Run without effect
// are StepErrors naming the step; nothing after them runs.
func TestUpFailures(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(w *world)
		want  error
	}{
		{"run fails", func(w *world) { w.state["a"] = Check{State: Todo}; w.failOn = "a" }, nil},
		{"broken", func(w *world) { w.state["a"] = Check{State: Broken, Message: "the CA expired", Hint: "pki rotate"} }, nil},
		{"no effect", func(w *world) { w.state["a"] = Check{State: Todo}; w.after["a"] = Check{State: Todo} }, ErrNoEffect},
		{"waited-for went away", func(w *world) {
			w.state["a"] = Check{State: Waiting, Who: "r", What: "merge"}
			w.after["a"] = Check{}
		}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld()
			tc.setup(w)
			w.state["b"] = Check{State: Todo}
			w.after["b"] = Check{State: Done}
			if tc.name == "waited-for went away" {
				w.merges["a"] = 0
				orig := w.steps("a", "b")
				calls := 0
				orig[0].Check = func(context.Context) (Check, error) {
					calls++
					if calls > 1 {
						return Check{State: Todo, Message: "the pull request was closed"}, nil
					}
					return w.state["a"], nil
				}
				_, err := Run(context.Background(), Options{Steps: orig, Sleep: noSleep})
				var se *StepError
				if !errors.As(err, &se) || se.Step != "a" || w.runs["b"] != 0 {
					t.Fatalf("%v", err)
				}
				return
			}
			_, err := Run(context.Background(), Options{Steps: w.steps("a", "b"), Sleep: noSleep})
			var se *StepError
			if !errors.As(err, &se) || se.Step != "a" || w.runs["b"] != 0 {
				t.Fatalf("%v (runs %v)", err, w.runs)
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("%v, want %v", err, tc.want)
			}
		})
	}
}

// TestUpWaitsThroughTransientErrors: while a step waits (hours, for a
// review), a check that fails for a transient cause (GitHub's 502, a
// dropped connection) is one more wait, reported once per cause, and the
// wait goes on; the next good check is reported again. Any other error
// still fails the step, and so does a transient one outside a wait.
func TestUpWaitsThroughTransientErrors(t *testing.T) {
	errBadGateway := errors.New("GET /repos/wp-wcm/city/pulls: 502 Bad Gateway")
	errDenied := errors.New("GET /repos/wp-wcm/city/pulls: 401 Bad credentials")
	transient := func(err error) bool { return errors.Is(err, errBadGateway) }
	run := func(answers []error, first error) ([]Event, *Result, error, int) {
		checks := 0
		steps := []Step{{ID: "pr", Title: "4. trust-list PR", Check: func(context.Context) (Check, error) {
			checks++
			if checks == 1 {
				if first != nil {
					return Check{}, first
				}
				return Check{State: Waiting, Who: "the city's reviewers", What: "merge the pull request", URL: "https://github.com/wp-wcm/city/pull/7"}, nil
			}
			if i := checks - 2; i < len(answers) {
				if answers[i] != nil {
					return Check{}, answers[i]
				}
				return Check{State: Waiting, Who: "the city's reviewers", What: "merge the pull request", URL: "https://github.com/wp-wcm/city/pull/7"}, nil
			}
			return Check{State: Done, Message: "merged"}, nil
		}}}
		var evs []Event
		res, err := Run(context.Background(), Options{Steps: steps, Sleep: noSleep, Transient: transient, Event: func(e Event) { evs = append(evs, e) }})
		return evs, res, err, checks
	}

	evs, res, err, checks := run([]error{errBadGateway, errBadGateway, nil, errBadGateway}, nil)
	if err != nil || !res.Verified || checks != 6 {
		t.Fatalf("%v %+v after %d checks, want verified after 6", err, res, checks)
	}
	var kinds []string
	for _, e := range evs {
		kinds = append(kinds, string(e.Kind)+":"+e.Message)
		if e.Kind == EventWaiting && (e.Who != "the city's reviewers" || e.URL == "") {
			t.Errorf("a wait event lost who and where: %+v", e)
		}
	}
	want := []string{"waiting:", "waiting:could not check (checking again): " + errBadGateway.Error(), "waiting:",
		"waiting:could not check (checking again): " + errBadGateway.Error(), "done:merged"}
	if len(kinds) != len(want) {
		t.Fatalf("events %q, want %q", kinds, want)
	}
	for i := range want {
		if kinds[i] != want[i] {
			t.Errorf("event %d: %q, want %q", i, kinds[i], want[i])
		}
	}

	_, _, err, _ = run([]error{errBadGateway, errDenied}, nil)
	var se *StepError
	if !errors.As(err, &se) || !errors.Is(err, errDenied) {
		t.Errorf("a refusal during the wait: %v, want a StepError with it", err)
	}
	_, _, err, _ = run(nil, errBadGateway)
	if !errors.As(err, &se) || !errors.Is(err, errBadGateway) {
		t.Errorf("a transient error at the first check: %v, want a StepError (nothing to wait on yet)", err)
	}
}
