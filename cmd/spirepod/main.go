// Command spirepod takes a service team from nothing to a verified SPIFFE
// identity on a shared SPIRE deployment, with the SPIRE Agent, Envoy and the
// workload in one Pod and the agent attesting with x509pop.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() { os.Exit(processMain()) }

// processMain is the whole program: GC tuning, then the command line.
// The CLI scripts exec it as `spirepod` too.
func processMain() int {
	tuneGC(os.Getenv)
	return mainRun(newFactory(systemStreams(), os.Getenv), os.Args[1:])
}

// tuneGC: a command lives well under a second and its heap is parsed
// manifests that stay live until it ends, so Go's default (a collection
// each time the heap doubles) spends a fifth of a large project's time
// collecting (pprof, `pr spiffe-id --dry-run` at 1,000 replicas). It
// collects at 5x the live heap instead, under a soft limit of 1 GiB, or
// half the container's memory (cgroup v2 memory.max) when that is less, so
// a CI container that fit before still does. GOGC and GOMEMLIMIT, when
// set, win (bench/scale.sh measures both ways).
func tuneGC(getenv func(string) string) {
	if getenv("GOGC") == "" {
		debug.SetGCPercent(400)
	}
	if getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(gcLimit(cgroupMemoryMax()))
	}
}

// gcLimit is the soft memory limit: 1 GiB, or half of a smaller
// container limit (0: none known).
func gcLimit(containerMax int64) int64 {
	const limit = 1 << 30
	if containerMax > 0 && containerMax/2 < limit {
		return containerMax / 2
	}
	return limit
}

// cgroupMemoryMax is this process's cgroup v2 memory limit, 0 when there
// is none ("max") or it cannot be read.
func cgroupMemoryMax() int64 {
	b, err := os.ReadFile("/sys/fs/cgroup/memory.max")
	if err != nil {
		return 0
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0
	}
	return n
}

// interruptGrace is how long a command has, after SIGINT or SIGTERM, to
// notice its cancelled context and return. Every step that changes
// something outside the process checks the context just before it (and
// takes milliseconds), so a command still running after the grace is in a
// step that changes nothing: it is abandoned, with exit 130.
const interruptGrace = 700 * time.Millisecond

// mainRun is main without os.Exit: the signal-cancelled context, the run, and
// the guarantee that the process ends within a second of an interrupt. The
// testscript `spirepod` command runs it too, so scripts can send real
// signals.
func mainRun(f *Factory, args []string) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	done := make(chan int, 1)
	go func() { done <- run(ctx, f, args) }()
	select {
	case code := <-done:
		return code
	case <-ctx.Done():
	}
	stop() // a second Ctrl-C now kills the process the default way
	select {
	case code := <-done:
		return code
	case <-time.After(interruptGrace):
		fmt.Fprintln(f.IO.ErrOut, "interrupted")
		if f.JSON() && f.running != nil && f.running.n.Load() == 0 {
			_ = writeJSON(f.running, jsonError{Error: "interrupted", ExitCode: exitInterrupted, Interrupted: true})
		}
		return exitInterrupted
	}
}
