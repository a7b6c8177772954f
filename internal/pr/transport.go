package pr

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// transport adds the token, counts requests, retries 5xx with exponential
// backoff and waits out rate limits when the reset falls within the
// context's deadline. The token is only ever put in the Authorization header,
// and only on requests to the API's own scheme and host: never on a redirect
// elsewhere (archive downloads, another host, https to http).
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
}

func (t *apiTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	delay := t.minDelay
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
		if attempt >= t.retries {
			return resp, nil
		}
		var wait time.Duration
		switch {
		case resp.StatusCode >= 500:
			wait = delay
			delay *= 2
		case resp.StatusCode == http.StatusForbidden || resp.StatusCode == http.StatusTooManyRequests:
			w, limited := t.rateLimitWait(resp)
			if !limited {
				return resp, nil
			}
			if dl, ok := ctx.Deadline(); ok && t.now().Add(w).After(dl) {
				return resp, nil // the caller reports the rate limit
			}
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

// rateLimitWait reads Retry-After (secondary limits) or X-RateLimit-Reset
// with X-RateLimit-Remaining: 0 (primary limits).
func (t *apiTransport) rateLimitWait(resp *http.Response) (time.Duration, bool) {
	if ra := resp.Header.Get("Retry-After"); ra != "" {
		if s, err := strconv.Atoi(ra); err == nil {
			return time.Duration(s) * time.Second, true
		}
	}
	if resp.Header.Get("X-RateLimit-Remaining") != "0" {
		return 0, false
	}
	reset, err := strconv.ParseInt(resp.Header.Get("X-RateLimit-Reset"), 10, 64)
	if err != nil {
		return 0, false
	}
	w := time.Unix(reset, 0).Sub(t.now()) + time.Second
	if w < 0 {
		w = time.Second
	}
	return w, true
}
