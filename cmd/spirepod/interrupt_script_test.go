package main

import (
	"flag"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/rogpeppe/go-internal/testscript"
)

// hangServers are the hanging servers of each running script, by name.
var hangServers sync.Map // *testscript.TestScript -> map[string]*hangServer

// hangServer answers no request: each one waits until its client goes away
// (or the script ends). It stands for an API server or GitHub that accepts
// connections and never replies.
type hangServer struct {
	srv *httptest.Server
	mu  sync.Mutex
	// arrived is closed by the first request since the last reset.
	arrived chan struct{}
	closed  bool
}

func (h *hangServer) arrive() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.closed {
		close(h.arrived)
		h.closed = true
	}
}

func (h *hangServer) wait() <-chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.arrived
}

// reset forgets the requests so far: the next `interrupt` waits for the next
// command's request.
func (h *hangServer) reset() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.arrived, h.closed = make(chan struct{}), false
}

// cmdHangServer starts a hanging server on 127.0.0.1:
//
//	hang-server NAME URLVAR [KUBECONFIG]
//
// URLVAR is set to its URL; with KUBECONFIG a kubeconfig for it is written
// there (context "hang").
func cmdHangServer(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 2 || len(args) > 3 {
		ts.Fatalf("usage: hang-server NAME URLVAR [KUBECONFIG]")
	}
	h := &hangServer{arrived: make(chan struct{})}
	stop := make(chan struct{})
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.arrive()
		select {
		case <-r.Context().Done():
		case <-stop:
		}
	}))
	ts.Defer(func() {
		close(stop)
		h.srv.Close()
	})
	m, _ := hangServers.LoadOrStore(ts, &sync.Map{})
	m.(*sync.Map).Store(args[0], h)
	ts.Setenv(args[1], h.srv.URL)
	if len(args) == 3 {
		kc := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: hang
  cluster: {server: %q}
users:
- name: hang
  user: {token: test}
contexts:
- name: hang
  context: {cluster: hang, user: hang}
current-context: hang
`, h.srv.URL)
		ts.Check(os.WriteFile(ts.MkAbs(args[2]), []byte(kc), 0o600))
	}
}

// cmdMkfifo makes a named pipe: a program that opens it for reading blocks
// until `interrupt fifo:PATH` opens it for writing, which pins the moment the
// program is mid-run.
//
//	mkfifo PATH
func cmdMkfifo(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: mkfifo PATH")
	}
	ts.Check(syscall.Mkfifo(ts.MkAbs(args[0]), 0o600))
}

// interrupted remembers, per script, the background command `interrupt`
// signalled, for `interrupted-exit`.
var interrupted sync.Map // *testscript.TestScript -> *exec.Cmd

// cmdInterrupt sends a real signal to the last command the script started
// in the background (`exec spirepod … &name&`), once it is mid-run, and
// waits until the process is gone:
//
//	interrupt [-signal INT|TERM] [-within 5s] hang:NAME|fifo:PATH
//
// hang:NAME: when the hanging server NAME has a request in flight.
// fifo:PATH: when the program has opened the named pipe PATH (it then stays
// blocked reading it: nothing is ever written).
// The script fails if the process is still there -within after the signal
// (a bound on "it stopped", not a benchmark: the time is logged). Then `wait
// NAME` collects its output and `interrupted-exit CODE` checks its exit code.
func cmdInterrupt(ts *testscript.TestScript, neg bool, args []string) {
	if neg {
		ts.Fatalf("unsupported: ! interrupt")
	}
	fs := flag.NewFlagSet("interrupt", flag.ContinueOnError)
	sigName := fs.String("signal", "INT", "INT or TERM")
	within := fs.Duration("within", 5*time.Second, "fail if the process is not gone by then")
	if err := fs.Parse(args); err != nil || fs.NArg() != 1 {
		ts.Fatalf("usage: interrupt [-signal INT|TERM] [-within 5s] hang:NAME|fifo:PATH")
	}
	sig := map[string]syscall.Signal{"INT": syscall.SIGINT, "TERM": syscall.SIGTERM}[*sigName]
	if sig == 0 {
		ts.Fatalf("interrupt: -signal must be INT or TERM")
	}
	bg := ts.BackgroundCmds()
	if len(bg) == 0 {
		ts.Fatalf("interrupt: no background command (start one with `exec … &name&`)")
	}
	cmd := bg[len(bg)-1]
	interrupted.Store(ts, cmd)
	deadline := time.After(30 * time.Second)
	gone := make(chan struct{}) // the program ended before it was interrupted
	go func() {
		for syscall.Kill(cmd.Process.Pid, 0) == nil {
			time.Sleep(20 * time.Millisecond)
		}
		close(gone)
	}()
	kind, what, _ := strings.Cut(fs.Arg(0), ":")
	var hang *hangServer
	switch kind {
	case "hang":
		m, ok := hangServers.Load(ts)
		if !ok {
			ts.Fatalf("interrupt: no hang-server")
		}
		h, ok := m.(*sync.Map).Load(what)
		if !ok {
			ts.Fatalf("interrupt: no hang-server %q", what)
		}
		hang = h.(*hangServer)
		select {
		case <-hang.wait():
		case <-gone:
			ts.Fatalf("interrupt: the program ended before any request reached hang-server %s", what)
		case <-deadline:
			ts.Fatalf("interrupt: no request reached hang-server %s in 30s", what)
		}
	case "fifo":
		opened := make(chan error, 1)
		var f *os.File
		go func() {
			var err error
			f, err = os.OpenFile(ts.MkAbs(what), os.O_WRONLY, 0) // blocks until the program opens it
			opened <- err
		}()
		select {
		case err := <-opened:
			ts.Check(err)
			ts.Defer(func() { f.Close() })
		case <-gone:
			ts.Fatalf("interrupt: the program ended before it opened %s", what)
		case <-deadline:
			ts.Fatalf("interrupt: the program did not open %s in 30s", what)
		}
	default:
		ts.Fatalf("interrupt: wait for hang:NAME or fifo:PATH, got %q", fs.Arg(0))
	}
	pid := cmd.Process.Pid
	sent := time.Now()
	ts.Check(cmd.Process.Signal(sig))
	// The process is gone once testscript's waiter has reaped it.
	for syscall.Kill(pid, 0) == nil {
		if time.Since(sent) > *within {
			ts.Fatalf("interrupt: still running %s after SIG%s", *within, *sigName)
		}
		time.Sleep(5 * time.Millisecond) // polling for the exit, not ordering events
	}
	ts.Logf("stopped %d ms after SIG%s", time.Since(sent).Milliseconds(), *sigName)
	if hang != nil {
		hang.reset()
	}
}

// cmdInterruptedExit checks the exit code of the command `interrupt`
// signalled, after `wait`:
//
//	interrupted-exit 130
func cmdInterruptedExit(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: interrupted-exit CODE")
	}
	want, err := strconv.Atoi(args[0])
	ts.Check(err)
	v, ok := interrupted.Load(ts)
	if !ok {
		ts.Fatalf("interrupted-exit: nothing was interrupted")
	}
	st := v.(*exec.Cmd).ProcessState
	if st == nil {
		ts.Fatalf("interrupted-exit: run `wait` first")
	}
	if got := st.ExitCode(); got != want {
		ts.Fatalf("exit code %d, want %d", got, want)
	}
}
