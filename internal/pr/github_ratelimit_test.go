package pr

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/spirepod/spirepod/internal/fakes/githubfake"
	"github.com/spirepod/spirepod/internal/fakes/githubfake/conformance"
)

// rateEnv is a fake GitHub with one repository and a client whose sleeps
// are recorded, not slept.
type rateEnv struct {
	fake     *githubfake.Server
	c        *client
	sleeps   []time.Duration
	progress bytes.Buffer
}

func newRateEnv(t *testing.T, o GitHubOptions) *rateEnv {
	t.Helper()
	e := &rateEnv{fake: githubfake.New("alice", "tok")}
	t.Cleanup(e.fake.Close)
	if _, err := e.fake.AddRepo("o/r", true, "main", map[string]string{"README.md": "hi\n"}); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	o.HTTPClient, o.BaseURL, o.Token, o.Repo, o.Base = &http.Client{Timeout: 10 * time.Second}, e.fake.URL, "tok", "o/r", "main"
	o.Now = func() time.Time { return now }
	o.Progress = &e.progress
	o.Sleep = func(_ context.Context, d time.Duration) error {
		e.sleeps = append(e.sleeps, d)
		now = now.Add(d)
		return nil
	}
	c, err := newClient(o)
	if err != nil {
		t.Fatal(err)
	}
	e.c = c
	return e
}

// TestRateLimits: a 403 or 429 rate limit is waited out (retry-after, or
// x-ratelimit-reset, or a minute for a secondary limit that gives neither)
// with a progress line, within a bound; past the bound, or when it does not
// pass, the error says it is GitHub's rate limit. Nothing else is retried.
func TestRateLimits(t *testing.T) {
	for _, tc := range []struct {
		name  string
		fault githubfake.Fault
		// wait is the sleep expected before the retry that succeeds; 0: no
		// retry, the request fails with an error naming the rate limit.
		wait     time.Duration
		progress string
	}{
		{name: "secondary 403 retry-after", fault: githubfake.Fault{Secondary: true, RetryAfter: 30 * time.Second}, wait: 30 * time.Second, progress: "secondary rate limit: waiting 30s"},
		{name: "secondary 429 retry-after", fault: githubfake.Fault{Status: 429, Secondary: true, RetryAfter: 7 * time.Second}, wait: 7 * time.Second, progress: "waiting 7s"},
		{name: "secondary without retry-after", fault: githubfake.Fault{Secondary: true}, wait: time.Minute, progress: "waiting 1m0s"},
		{name: "primary 403 reset", fault: githubfake.Fault{RateLimitReset: 20 * time.Second}, wait: 21 * time.Second, progress: "primary rate limit: waiting"},
		{name: "primary 429 reset", fault: githubfake.Fault{Status: 429, RateLimitReset: 20 * time.Second}, wait: 21 * time.Second, progress: "primary rate limit: waiting"},
		{name: "primary reset past the bound", fault: githubfake.Fault{RateLimitReset: time.Hour}, progress: "longer than spirepod waits (2m0s)"},
		{name: "secondary past the bound", fault: githubfake.Fault{Status: 429, Secondary: true, RetryAfter: 10 * time.Minute}, progress: "longer than spirepod waits"},
		{name: "secondary that does not pass", fault: githubfake.Fault{Secondary: true, RetryAfter: time.Second, Times: 100}, progress: "giving up after 5 tries"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newRateEnv(t, GitHubOptions{})
			f := tc.fault
			f.Path = "/branches/"
			e.fake.Inject(&f)
			_, _, err := e.c.base(context.Background())
			if !strings.Contains(e.progress.String(), tc.progress) {
				t.Errorf("progress %q lacks %q", e.progress.String(), tc.progress)
			}
			if tc.wait == 0 {
				var ae *APIError
				if !errors.As(err, &ae) || (ae.Status != 403 && ae.Status != 429) || !strings.Contains(strings.ToLower(ae.Error()+ae.Hint), "rate limit") {
					t.Fatalf("err = %v (%#v), want GitHub's rate limit named", err, ae)
				}
				if ae.Hint == "" {
					t.Errorf("no hint: %v", ae)
				}
				for _, s := range e.sleeps {
					if s > 2*time.Minute {
						t.Errorf("slept %s, past the bound", s)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("after the wait: %v", err)
			}
			// The fake's reset is whole seconds of its own clock: within a second.
			if len(e.sleeps) != 1 || e.sleeps[0] < tc.wait-time.Second || e.sleeps[0] > tc.wait {
				t.Errorf("sleeps %v, want one of about %s", e.sleeps, tc.wait)
			}
			if n := e.fake.Requests(); n != 2 {
				t.Errorf("%d requests, want 2: %v", n, e.fake.RequestLog())
			}
		})
	}
}

// TestNoRetryOfOther4xx: a 4xx other than a rate limit is answered at once:
// one request, no sleep.
func TestNoRetryOfOther4xx(t *testing.T) {
	for _, st := range []int{400, 401, 403, 404, 409, 410, 422} {
		e := newRateEnv(t, GitHubOptions{})
		// Statuses GitHub does not document for this endpoint, on purpose:
		// kept out of the package's conformance judging.
		conformance.Exempt(e.fake.URL)
		e.fake.Inject(&githubfake.Fault{Path: "/branches/", Status: st, Times: 10})
		_, _, err := e.c.base(context.Background())
		if err == nil {
			t.Errorf("%d: no error", st)
		}
		if n := e.fake.Requests(); n != 1 || len(e.sleeps) != 0 {
			t.Errorf("%d: %d requests and sleeps %v, want 1 and none", st, n, e.sleeps)
		}
		if Retryable(err) {
			t.Errorf("%d: %v is Retryable: a poll would wait on an answer that will not change", st, err)
		}
	}
}

// TestRetryableAfterTheClientGivesUp: what the client's own retries and
// waits could not get past is Retryable for a caller that polls (`up`
// waiting on a review): a 5xx on every try, a rate limit longer than the
// client waits, or past its deadline.
func TestRetryableAfterTheClientGivesUp(t *testing.T) {
	for name, f := range map[string]githubfake.Fault{
		"502 on every try":         {Path: "/branches/", Status: 502, Times: 20},
		"secondary, past deadline": {Path: "/branches/", Secondary: true, RetryAfter: 90 * time.Second},
		"primary, past deadline":   {Path: "/branches/", RateLimitReset: time.Hour},
		"429, past deadline":       {Path: "/branches/", Status: 429, Secondary: true, RetryAfter: 90 * time.Second},
	} {
		t.Run(name, func(t *testing.T) {
			e := newRateEnv(t, GitHubOptions{MaxRateLimitWait: time.Hour})
			e.fake.Inject(&f)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			_, _, err := e.c.base(ctx)
			if err == nil || !Retryable(err) {
				t.Errorf("%v: want a Retryable error", err)
			}
		})
	}
}

// TestRateLimitWaitBoundedByDeadline: a wait that would end past the
// context's deadline is not started.
func TestRateLimitWaitBoundedByDeadline(t *testing.T) {
	e := newRateEnv(t, GitHubOptions{MaxRateLimitWait: time.Hour})
	e.fake.Inject(&githubfake.Fault{Path: "/branches/", Secondary: true, RetryAfter: 90 * time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, _, err := e.c.base(ctx)
	if err == nil || len(e.sleeps) != 0 || !strings.Contains(e.progress.String(), "past the deadline") {
		t.Errorf("err %v, sleeps %v, progress %q", err, e.sleeps, e.progress.String())
	}
}
