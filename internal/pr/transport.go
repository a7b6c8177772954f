package pr

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// transport adds the token, counts requests, retries 5xx with exponential
// backoff and waits out rate limits (bounded). The token is only ever put in
// the Authorization header, and only on requests to the API's own scheme and
// host: never on a redirect elsewhere (archive downloads, another host,
// https to http).
//
// Rate limits follow "Rate limits for the REST API"
// (https://docs.github.com/rest/using-the-rest-api/rate-limits-for-the-rest-api#exceeding-the-primary-rate-limit
// and #about-secondary-rate-limits): a 403 or 429 with retry-after waits that
// many seconds; with x-ratelimit-remaining 0 it waits until
// x-ratelimit-reset; a secondary-rate-limit answer without either waits a
// minute. A wait longer than maxWait, or past the context's deadline, is not
// made: the answer goes back to the caller, which reports the limit. Any
// other 4xx is never retried.
type apiTransport struct {
	base  http.RoundTripper
	token string
	// api is the REST root the token belongs to.
	api      *url.URL
	sleep    func(context.Context, time.Duration) error
	now      func() time.Time
	count    atomic.Int64
	retries  int
	minDelay time.Duration
	// attemptTimeout bounds each attempt; 0 means no bound.
	attemptTimeout time.Duration
	// maxWait bounds one rate-limit wait.
	maxWait time.Duration
	// progress gets a line for each wait.
	progress io.Writer
}

// noServerRetry marks a request whose 5xx answers go back at once: a
// GraphQL batch that timed out is split by its caller, not sent again whole.
type noServerRetry struct{}

func withoutServerRetry(ctx context.Context) context.Context {
	return context.WithValue(ctx, noServerRetry{}, true)
}

func (t *apiTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	delay := t.minDelay
	noRetry5xx, _ := ctx.Value(noServerRetry{}).(bool)
	for attempt := 0; ; attempt++ {
		r := req.Clone(ctx)
		if attempt > 0 && req.GetBody != nil {
			body, err := req.GetBody()
			if err != nil {
				return nil, err
			}
			r.Body = body
		}
		r.Header.Del("Authorization")
		if t.token != "" && t.forAPI(r.URL) {
			r.Header.Set("Authorization", "Bearer "+t.token)
		}
		t.count.Add(1)
		resp, err := t.attempt(r)
		if err != nil {
			if ctx.Err() != nil || attempt >= t.retries || req.Method != http.MethodGet {
				return nil, err
			}
			if serr := t.sleep(ctx, delay); serr != nil {
				return nil, err
			}
			delay *= 2
			continue
		}
		var wait time.Duration
		switch {
		case resp.StatusCode >= 500:
			if noRetry5xx || attempt >= t.retries {
				return resp, nil
			}
			wait = delay
			delay *= 2
		case resp.StatusCode == http.StatusForbidden || resp.StatusCode == http.StatusTooManyRequests:
			w, kind := t.rateLimitWait(resp)
			if kind == "" {
				return resp, nil // a refusal, not a rate limit
			}
			if attempt >= t.retries {
				fmt.Fprintf(t.progress, "GitHub %s rate limit: giving up after %d tries of %s %s\n", kind, attempt+1, req.Method, req.URL.Path)
				return resp, nil
			}
			if w > t.maxWait {
				fmt.Fprintf(t.progress, "GitHub %s rate limit: it asks to wait %s, longer than spirepod waits (%s)\n", kind, roundWait(w), t.maxWait)
				return resp, nil // the caller reports the rate limit
			}
			if dl, ok := ctx.Deadline(); ok && t.now().Add(w).After(dl) {
				fmt.Fprintf(t.progress, "GitHub %s rate limit: it asks to wait %s, past the deadline\n", kind, roundWait(w))
				return resp, nil
			}
			fmt.Fprintf(t.progress, "GitHub %s rate limit: waiting %s before retrying %s %s\n", kind, roundWait(w), req.Method, req.URL.Path)
			wait = w
		default:
			return resp, nil
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err := t.sleep(ctx, wait); err != nil {
			return nil, err
		}
	}
}

func roundWait(d time.Duration) time.Duration {
	if d > time.Second {
		return d.Round(time.Second)
	}
	return d
}

// forAPI reports whether u is on the API's scheme and host (port included).
func (t *apiTransport) forAPI(u *url.URL) bool {
	return t.api != nil && strings.EqualFold(u.Scheme, t.api.Scheme) && strings.EqualFold(u.Host, t.api.Host)
}

func (t *apiTransport) attempt(r *http.Request) (*http.Response, error) {
	if t.attemptTimeout <= 0 {
		return t.base.RoundTrip(r)
	}
	ctx, cancel := context.WithTimeout(r.Context(), t.attemptTimeout)
	resp, err := t.base.RoundTrip(r.WithContext(ctx))
	if err != nil {
		cancel()
		return nil, err
	}
	resp.Body = &cancelBody{ReadCloser: resp.Body, cancel: cancel}
	return resp, nil
}

type cancelBody struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (b *cancelBody) Close() error {
	err := b.ReadCloser.Close()
	b.cancel()
	return err
}

// rateLimitWait says how long a 403 or 429 asks to wait, and which limit
// it is ("primary" or "secondary"); "" means it is no rate limit. It reads
// Retry-After (seconds or an HTTP date), then X-RateLimit-Remaining: 0 with
// X-RateLimit-Reset, then the body: GitHub's secondary-rate-limit message
// or documentation_url without either header means "wait at least a minute".
func (t *apiTransport) rateLimitWait(resp *http.Response) (time.Duration, string) {
	if ra := strings.TrimSpace(resp.Header.Get("Retry-After")); ra != "" {
		if s, err := strconv.Atoi(ra); err == nil && s >= 0 {
			return time.Duration(s) * time.Second, "secondary"
		}
		if at, err := http.ParseTime(ra); err == nil {
			return max(at.Sub(t.now()), 0), "secondary"
		}
	}
	if resp.Header.Get("X-RateLimit-Remaining") == "0" {
		if reset, err := strconv.ParseInt(resp.Header.Get("X-RateLimit-Reset"), 10, 64); err == nil {
			return max(time.Unix(reset, 0).Sub(t.now())+time.Second, time.Second), "primary"
		}
	}
	if secondaryLimitBody(resp) {
		return time.Minute, "secondary"
	}
	return 0, ""
}

// secondaryLimitBody reads (and puts back) an error body and reports
// whether it is GitHub's secondary rate limit.
func secondaryLimitBody(resp *http.Response) bool {
	if resp.Body == nil {
		return false
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	resp.Body = struct {
		io.Reader
		io.Closer
	}{io.MultiReader(bytes.NewReader(b), resp.Body), resp.Body}
	if err != nil {
		return false
	}
	var e struct {
		Message string `json:"message"`
		Doc     string `json:"documentation_url"`
	}
	_ = json.Unmarshal(b, &e)
	return strings.Contains(strings.ToLower(e.Message), "secondary rate limit") ||
		strings.Contains(e.Doc, "secondary-rate-limits") || strings.HasSuffix(e.Doc, "#abuse-rate-limits")
}
