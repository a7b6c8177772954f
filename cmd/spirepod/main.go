// Command spirepod takes a service team from nothing to a verified SPIFFE
// identity on a shared SPIRE deployment, with the SPIRE Agent, Envoy and the
// workload in one Pod and the agent attesting with x509pop.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, newFactory(systemStreams(), os.Getenv), os.Args[1:])
	stop()
	os.Exit(code)
}
