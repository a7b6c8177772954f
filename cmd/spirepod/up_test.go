package main

import (
	"errors"
	"fmt"
	"net"
	"syscall"
	"testing"

	"github.com/spirepod/spirepod/internal/pr"
)

// TestWaitThrough: what `up` waits through while it polls a step that
// waits on people, and what still ends the run.
func TestWaitThrough(t *testing.T) {
	for _, c := range []struct {
		name string
		err  error
		want bool
	}{
		{"GitHub 502 after the client's retries", fmt.Errorf("read pull requests: %w", &pr.APIError{Status: 502, Op: "GET pulls"}), true},
		{"GitHub's rate limit, longer than the client waits", &pr.APIError{Status: 403, Op: "GET pulls", RateLimited: true}, true},
		{"connection refused", &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}, true},
		{"a bad token", &pr.APIError{Status: 401, Op: "GET pulls"}, false},
		{"no access", &pr.APIError{Status: 403, Op: "GET pulls", Permission: "pull_requests:read"}, false},
		{"the repository is gone", &pr.APIError{Status: 404, Op: "GET pulls"}, false},
		{"anything else", errors.New("spirepod.yaml: unknown key"), false},
	} {
		if got := waitThrough(c.err); got != c.want {
			t.Errorf("%s: waitThrough = %v, want %v", c.name, got, c.want)
		}
	}
}
