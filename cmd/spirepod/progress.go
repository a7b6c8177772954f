package main

import (
	"fmt"
	"sync"
	"time"
)

// progress prints status lines on stderr: on a terminal one line rewritten
// in place with a spinner, otherwise plain lines (only when the text changes).
type progress struct {
	s     *IOStreams
	mu    sync.Mutex
	last  string
	start time.Time
	frame int
}

func newProgress(s *IOStreams) *progress { return &progress{s: s, start: time.Now()} }

var spinner = []string{"⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"}

// Update shows msg.
func (p *progress) Update(msg string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.s.ErrTTY {
		if msg != p.last {
			fmt.Fprintln(p.s.ErrOut, msg)
		}
		p.last = msg
		return
	}
	p.frame++
	p.last = msg
	fmt.Fprintf(p.s.ErrOut, "\r\x1b[K%s %s (%s)", spinner[p.frame%len(spinner)], msg, time.Since(p.start).Round(100*time.Millisecond))
}

// Done ends the progress line on a terminal.
func (p *progress) Done() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.s.ErrTTY && p.last != "" {
		fmt.Fprint(p.s.ErrOut, "\r\x1b[K")
	}
}
