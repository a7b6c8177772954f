package apply

import (
	"context"

	"github.com/spirepod/spirepod/internal/retry"
)

// retryOp runs fn until it succeeds, fails permanently, or transient failures
// have lasted RetryFor. Backoff doubles from 100 ms to 2 s.
func retryOp(ctx context.Context, opts Options, fn func() error) error {
	return retry.Backoff{For: opts.RetryFor, Sleep: opts.Sleep}.Do(ctx, fn)
}
