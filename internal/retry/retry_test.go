package retry_test

import (
	"context"
	"errors"
	"syscall"
	"testing"
	"time"

	"github.com/spirepod/spirepod/internal/retry"
)

// TestBackoff: Do retries what Retry accepts (Transient by default), with
// delays doubling up to Max, and stops at the first other error, at Tries,
// or when the caller's context ends.
func TestBackoff(t *testing.T) {
	errBusy := errors.New("busy")
	errFatal := errors.New("fatal")
	record := func(slept *[]time.Duration) func(context.Context, time.Duration) error {
		return func(ctx context.Context, d time.Duration) error { *slept = append(*slept, d); return ctx.Err() }
	}

	t.Run("transient by default, then success", func(t *testing.T) {
		var slept []time.Duration
		n := 0
		err := retry.Backoff{Min: time.Second, Max: 3 * time.Second, For: time.Hour, Sleep: record(&slept)}.Do(t.Context(), func() error {
			if n++; n < 5 {
				return syscall.ECONNREFUSED
			}
			return nil
		})
		if err != nil || n != 5 {
			t.Fatalf("err %v after %d tries, want success at the 5th", err, n)
		}
		want := []time.Duration{time.Second, 2 * time.Second, 3 * time.Second, 3 * time.Second}
		if len(slept) != len(want) {
			t.Fatalf("slept %v, want %v", slept, want)
		}
		for i := range want {
			if slept[i] != want[i] {
				t.Fatalf("slept %v, want %v", slept, want)
			}
		}
	})

	t.Run("a custom Retry and Tries", func(t *testing.T) {
		var slept []time.Duration
		n := 0
		err := retry.Backoff{For: time.Hour, Tries: 3, Sleep: record(&slept), Retry: func(err error) bool { return err == errBusy }}.Do(t.Context(), func() error {
			n++
			return errBusy
		})
		if err != errBusy || n != 3 || len(slept) != 2 {
			t.Fatalf("err %v, %d tries, %d sleeps; want busy after 3 tries, 2 sleeps", err, n, len(slept))
		}
	})

	t.Run("an error Retry refuses ends it", func(t *testing.T) {
		n := 0
		err := retry.Backoff{For: time.Hour, Retry: func(err error) bool { return err == errBusy }}.Do(t.Context(), func() error {
			if n++; n == 1 {
				return errBusy
			}
			return errFatal
		})
		if err != errFatal || n != 2 {
			t.Fatalf("err %v after %d tries, want fatal at the 2nd", err, n)
		}
	})

	t.Run("the caller's context ends it", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		n := 0
		err := retry.Backoff{For: time.Hour, Sleep: func(ctx context.Context, d time.Duration) error { cancel(); return ctx.Err() }}.Do(ctx, func() error {
			n++
			return syscall.ECONNRESET
		})
		if !errors.Is(err, syscall.ECONNRESET) || n != 1 {
			t.Fatalf("err %v after %d tries, want the last error after 1 try", err, n)
		}
	})
}
