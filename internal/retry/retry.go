// Package retry owns waiting and retrying: a context-aware sleep, the one
// judgement of which API failures are worth retrying, and a bounded
// exponential backoff loop. apply, pr and verify use it.
package retry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

// Sleep waits d or until ctx is done; it returns ctx's error, wrapped, if
// the context ended first.
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return fmt.Errorf("waiting %s: %w", d, ctx.Err())
	case <-t.C:
		return nil
	}
}

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
	if Unreachable(err) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return true
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return true
	}
	m := err.Error()
	return strings.Contains(m, "http2: client connection lost") || strings.Contains(m, "the server is currently unable")
}

// Unreachable reports whether err says nothing answers at the address: the
// connection was refused or reset, the host is unknown or unroutable, or the
// dial timed out. A server that answered with an error is not unreachable.
func Unreachable(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EHOSTUNREACH) ||
		errors.Is(err, syscall.ENETUNREACH) {
		return true
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return true
	}
	var opErr *net.OpError
	if errors.As(err, &opErr) && opErr.Op == "dial" {
		return true
	}
	m := err.Error()
	return strings.Contains(m, "connection refused") || strings.Contains(m, "connection reset") ||
		strings.Contains(m, "no such host") || strings.Contains(m, "i/o timeout")
}

// Backoff is a bounded exponential backoff.
type Backoff struct {
	// Min is the first delay (default 100 ms), doubled up to Max (default 2 s).
	Min, Max time.Duration
	// For bounds how long transient failures are retried.
	For time.Duration
	// Sleep waits between tries (tests may shorten it); nil means Sleep.
	Sleep func(context.Context, time.Duration) error
	// Retry says which errors are worth another try (default Transient).
	Retry func(error) bool
	// Tries, when above zero, bounds the number of tries as well.
	Tries int
}

// Do runs fn until it succeeds, fails with an error b.Retry refuses (by
// default one that is not Transient), or failures have lasted b.For or
// b.Tries tries. It returns fn's last error.
func (b Backoff) Do(ctx context.Context, fn func() error) error {
	sleep := b.Sleep
	if sleep == nil {
		sleep = Sleep
	}
	retry := b.Retry
	if retry == nil {
		retry = Transient
	}
	delay, maxDelay := b.Min, b.Max
	if delay <= 0 {
		delay = 100 * time.Millisecond
	}
	if maxDelay <= 0 {
		maxDelay = 2 * time.Second
	}
	var start time.Time
	for try := 1; ; try++ {
		err := fn()
		if err == nil || !retry(err) {
			return err
		}
		if start.IsZero() {
			start = time.Now()
		}
		if time.Since(start) >= b.For || (b.Tries > 0 && try >= b.Tries) {
			return err
		}
		if serr := sleep(ctx, delay); serr != nil {
			return err
		}
		delay = min(delay*2, maxDelay)
	}
}
