// Package up takes a team from wherever it is to verified: the guide's
// steps in order, each skipped when its result is already in place, each
// waited for when it waits on people (a review, the platform reloading the
// SPIRE server), each run with the same library call its own command
// makes. Every decision is read from the world (the project, the city's
// base branch, the cluster, the SPIRE server) at the moment it is made, so
// an interrupted run resumes where the world is, and no step runs twice to
// a different result.
//
// The engine knows nothing of GitHub or Kubernetes: a Step is a Check that
// reads the world and a Run that changes it. The CLI builds the steps.
package up

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spirepod/spirepod/internal/retry"
)

// State is what a step's Check found.
type State string

const (
	// Done: the step's result is in place; nothing to run.
	Done State = "done"
	// Todo: the step can run now.
	Todo State = "todo"
	// Waiting: the step waits on someone (a reviewer, the platform); Who
	// and What say on whom and for what, URL where.
	Waiting State = "waiting"
	// Broken: the world is in a state the step cannot fix by running; the
	// Message says what, the Hint what to do.
	Broken State = "broken"
)

// Check is a step's reading of the world.
type Check struct {
	State   State  `json:"state"`
	Message string `json:"message,omitempty"`
	Hint    string `json:"hint,omitempty"`
	// Who and What: on whom the step waits, and for what ("the city's
	// reviewers", "merge the pull request"); URL where.
	Who  string `json:"who,omitempty"`
	What string `json:"what,omitempty"`
	URL  string `json:"url,omitempty"`
}

// Step is one step of the guide.
type Step struct {
	// ID names the step in events and JSON ("trust-ca"); Title as status
	// groups it ("4. trust-list PR").
	ID, Title string
	// Check reads the world.
	Check func(ctx context.Context) (Check, error)
	// Run makes the step's change (nil: the step only waits). After Run,
	// the step is checked again: Done, or Waiting on someone.
	Run func(ctx context.Context) error
}

// EventKind says what happened to a step.
type EventKind string

const (
	EventSkipped EventKind = "skipped" // already in place
	EventRunning EventKind = "running" // its Run starts
	EventDone    EventKind = "done"    // in place after running or waiting
	EventWaiting EventKind = "waiting" // waits on someone (polled; with NoWait, up stops here)
	EventFailed  EventKind = "failed"  // its Run or Check failed, or the world is broken
)

// Event is one line of up's progress: the live checklist in a terminal,
// one JSON object per line for CI.
type Event struct {
	Time  time.Time `json:"time"`
	Step  string    `json:"step"`
	Title string    `json:"title"`
	Kind  EventKind `json:"event"`
	Check
	// Error is a failed step's error.
	Error string `json:"error,omitempty"`
	// Elapsed is how long the step's Run or wait took.
	Elapsed time.Duration `json:"elapsedNs,omitempty"`
}

// Options for Run.
type Options struct {
	Steps []Step
	// NoWait stops at the first step that waits on someone, with a
	// *WaitingError, instead of polling until it is done.
	NoWait bool
	// Poll is the first wait between checks of a waiting step (default
	// 10 s); each further wait doubles it up to MaxPoll (default 2 min).
	// Checks of a waiting step should be cheap (conditional requests).
	Poll, MaxPoll time.Duration
	// Sleep waits (tests pass one that does not); it returns ctx's error
	// when ctx ends first.
	Sleep func(context.Context, time.Duration) error
	Now   func() time.Time
	// Event receives every event (nil: none).
	Event func(Event)
	// Transient says a check's error is worth waiting through (a network
	// failure, a 5xx): a waiting step whose check fails so is reported as
	// still waiting ("could not check: …") and checked again at the next
	// poll. Any other error, or any error outside a wait, fails the step.
	// nil: every error fails.
	Transient func(error) bool
}

// Result is what a run did, step by step.
type Result struct {
	Steps []StepResult `json:"steps"`
	// Verified: every step is done.
	Verified bool `json:"verified"`
}

// StepResult is one step's outcome in a run.
type StepResult struct {
	ID    string `json:"id"`
	Title string `json:"title"`
	// Ran: the step's Run ran in this run; Skipped: it was in place.
	Ran     bool `json:"ran"`
	Skipped bool `json:"skipped"`
	Waited  bool `json:"waited"`
	Check   `json:"check"`
}

// WaitingError is up stopping at a step that waits on someone (NoWait).
type WaitingError struct {
	Step, Title string
	Check
}

func (e *WaitingError) Error() string {
	msg := fmt.Sprintf("%s waits on %s: %s", e.Title, e.Who, e.What)
	if e.URL != "" {
		msg += " (" + e.URL + ")"
	}
	return msg
}

// StepError is a step that failed: its Run or Check returned an error,
// or the world is in a state it cannot fix (Broken).
type StepError struct {
	Step, Title string
	Check
	Err error
}

func (e *StepError) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%s: %v", e.Title, e.Err)
	}
	return fmt.Sprintf("%s: %s", e.Title, e.Message)
}

func (e *StepError) Unwrap() error { return e.Err }

// ErrNoEffect means a step ran and its check still finds it to do: the
// step would run forever.
var ErrNoEffect = errors.New("the step ran, but its result is not in place")

// Run takes the steps in order: each is checked; one in place is skipped,
// one to do is run and checked again, one waiting on someone is polled
// (with backoff) until done, or, with NoWait, ends the run with a
// *WaitingError. A broken step or a failed Run ends it with a *StepError.
func Run(ctx context.Context, o Options) (*Result, error) {
	if o.Poll <= 0 {
		o.Poll = 10 * time.Second
	}
	if o.MaxPoll <= 0 {
		o.MaxPoll = 2 * time.Minute
	}
	if o.MaxPoll < o.Poll {
		o.MaxPoll = o.Poll
	}
	if o.Sleep == nil {
		o.Sleep = retry.Sleep
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	emit := func(s Step, kind EventKind, c Check, err error, elapsed time.Duration) {
		if o.Event == nil {
			return
		}
		ev := Event{Time: o.Now(), Step: s.ID, Title: s.Title, Kind: kind, Check: c, Elapsed: elapsed}
		if err != nil {
			ev.Error = err.Error()
		}
		o.Event(ev)
	}
	res := &Result{}
	for _, s := range o.Steps {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		sr := StepResult{ID: s.ID, Title: s.Title}
		c, err := s.Check(ctx)
		if err != nil {
			return res, fail(s, emit, Check{}, err)
		}
		if c.State == Todo {
			if s.Run == nil {
				return res, fail(s, emit, c, fmt.Errorf("nothing can run this step: %s", c.Message))
			}
			emit(s, EventRunning, c, nil, 0)
			start := o.Now()
			if err := s.Run(ctx); err != nil {
				res.Steps = append(res.Steps, sr)
				return res, fail(s, emit, c, err)
			}
			sr.Ran = true
			if c, err = s.Check(ctx); err != nil {
				return res, fail(s, emit, Check{}, err)
			}
			if c.State == Todo {
				return res, fail(s, emit, c, ErrNoEffect)
			}
			if c.State == Done {
				emit(s, EventDone, c, nil, o.Now().Sub(start))
			}
		} else if c.State == Done {
			sr.Skipped = true
			emit(s, EventSkipped, c, nil, 0)
		}
		if c.State == Waiting {
			emit(s, EventWaiting, c, nil, 0)
			if o.NoWait {
				sr.Check = c
				res.Steps = append(res.Steps, sr)
				return res, &WaitingError{Step: s.ID, Title: s.Title, Check: c}
			}
			sr.Waited = true
			start := o.Now()
			if c, err = wait(ctx, o, s, c); err != nil {
				res.Steps = append(res.Steps, sr)
				if ctx.Err() != nil {
					return res, ctx.Err()
				}
				return res, fail(s, emit, c, err)
			}
			emit(s, EventDone, c, nil, o.Now().Sub(start))
		}
		if c.State == Broken {
			sr.Check = c
			res.Steps = append(res.Steps, sr)
			return res, fail(s, emit, c, nil)
		}
		sr.Check = c
		res.Steps = append(res.Steps, sr)
	}
	res.Verified = true
	return res, nil
}

// wait polls a waiting step's check, with backoff, until it is done (or
// broken, or to do: what it waited for went away).
func wait(ctx context.Context, o Options, s Step, c Check) (Check, error) {
	d := o.Poll
	reported := "" // the last check error reported as a wait
	for {
		if err := o.Sleep(ctx, d); err != nil {
			return c, err
		}
		next, err := s.Check(ctx)
		if err != nil {
			if ctx.Err() != nil || o.Transient == nil || !o.Transient(err) {
				return c, err
			}
			// Still waiting on the same people; say why this poll told
			// nothing, once per cause.
			if msg := "could not check (checking again): " + err.Error(); msg != reported {
				reported = msg
				if o.Event != nil {
					o.Event(Event{Time: o.Now(), Step: s.ID, Title: s.Title, Kind: EventWaiting,
						Check: Check{State: Waiting, Who: c.Who, What: c.What, URL: c.URL, Message: msg, Hint: c.Hint}})
				}
			}
			d = min(2*d, o.MaxPoll)
			continue
		}
		switch next.State {
		case Done:
			return next, nil
		case Broken:
			return next, fmt.Errorf("%s", next.Message)
		case Todo:
			return next, fmt.Errorf("what this step waited for went away: %s", next.Message)
		}
		if next.What != c.What || next.URL != c.URL || reported != "" {
			c, reported = next, ""
			if o.Event != nil {
				o.Event(Event{Time: o.Now(), Step: s.ID, Title: s.Title, Kind: EventWaiting, Check: c})
			}
		}
		d = min(2*d, o.MaxPoll)
	}
}

func fail(s Step, emit func(Step, EventKind, Check, error, time.Duration), c Check, err error) error {
	emit(s, EventFailed, c, err, 0)
	return &StepError{Step: s.ID, Title: s.Title, Check: c, Err: err}
}
