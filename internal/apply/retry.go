package apply

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

// Transient reports whether err is worth retrying: the API server is
// unreachable, overloaded or restarting.
func Transient(err error) bool {
	if err == nil {
		return false
	}
	if apierrors.IsServerTimeout(err) || apierrors.IsServiceUnavailable(err) || apierrors.IsTooManyRequests(err) ||
		apierrors.IsInternalError(err) || apierrors.IsTimeout(err) {
		return true
	}
	if errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, io.EOF) ||
		errors.Is(err, io.ErrUnexpectedEOF) {
		return true
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return true
	}
	m := err.Error()
	return strings.Contains(m, "connection refused") || strings.Contains(m, "connection reset") ||
		strings.Contains(m, "http2: client connection lost") || strings.Contains(m, "the server is currently unable")
}

// retry runs fn until it succeeds, fails permanently, or transient failures
// have lasted RetryFor. Backoff doubles from 100 ms to 2 s.
func retry(ctx context.Context, opts Options, fn func() error) error {
	sleep := opts.Sleep
	if sleep == nil {
		sleep = func(ctx context.Context, d time.Duration) error {
			t := time.NewTimer(d)
			defer t.Stop()
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-t.C:
				return nil
			}
		}
	}
	var start time.Time
	delay := 100 * time.Millisecond
	for {
		err := fn()
		if err == nil || !Transient(err) {
			return err
		}
		if start.IsZero() {
			start = time.Now()
		}
		if time.Since(start) >= opts.RetryFor {
			return err
		}
		if serr := sleep(ctx, delay); serr != nil {
			return err
		}
		if delay *= 2; delay > 2*time.Second {
			delay = 2 * time.Second
		}
	}
}
