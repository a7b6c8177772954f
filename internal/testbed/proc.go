// Package testbed starts real components for spirepod's tests, all on
// 127.0.0.1 and free ports: etcd, kube-apiserver, kube-controller-manager,
// kube-scheduler, kwok (a fake Ready node that runs pods and serves their
// logs), cert-manager's controllers, and SPIRE server and agents. Every
// process it starts is stopped by its PID when the test ends, fails or is
// interrupted. It is imported only by tests.
package testbed

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// Proc is one started process.
type Proc struct {
	Name    string
	Cmd     *exec.Cmd
	LogPath string
	done    chan struct{}
	err     error
}

// registry holds every live process so an interrupt can stop them all.
var registry = struct {
	sync.Mutex
	procs map[*Proc]struct{}
	once  sync.Once
}{procs: map[*Proc]struct{}{}}

func register(p *Proc) {
	registry.Lock()
	registry.procs[p] = struct{}{}
	registry.Unlock()
	registry.once.Do(func() {
		ch := make(chan os.Signal, 1)
		signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
		go func() {
			sig := <-ch
			registry.Lock()
			ps := make([]*Proc, 0, len(registry.procs))
			for p := range registry.procs {
				ps = append(ps, p)
			}
			registry.Unlock()
			// In parallel: each gets SIGTERM now and SIGKILL after 5 s.
			var wg sync.WaitGroup
			for _, p := range ps {
				wg.Add(1)
				go func() { defer wg.Done(); p.Stop() }()
			}
			wg.Wait()
			fmt.Fprintf(os.Stderr, "testbed: %v: stopped %d processes\n", sig, len(ps))
			os.Exit(130)
		}()
	})
}

func unregister(p *Proc) {
	registry.Lock()
	delete(registry.procs, p)
	registry.Unlock()
}

// StartProc runs a binary with its output in dir/<name>.log. The process gets
// its own process group and dies with the test process (Pdeathsig).
func StartProc(dir, name, bin string, args ...string) (*Proc, error) {
	logPath := filepath.Join(dir, name+".log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &Proc{Name: name, Cmd: cmd, LogPath: logPath, done: make(chan struct{})}
	register(p)
	go func() {
		p.err = cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	return p, nil
}

// Exited reports whether the process has ended, and how.
func (p *Proc) Exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.err
	default:
		return false, nil
	}
}

// Stop ends the process (and its group) by PID: SIGTERM, then SIGKILL after 5 s.
func (p *Proc) Stop() {
	defer unregister(p)
	if ok, _ := p.Exited(); ok {
		return
	}
	pid := p.Cmd.Process.Pid
	_ = syscall.Kill(-pid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		<-p.done
	}
}

// Kill ends the process at once with SIGKILL (for fault tests).
func (p *Proc) Kill() {
	defer unregister(p)
	if ok, _ := p.Exited(); ok {
		return
	}
	_ = syscall.Kill(-p.Cmd.Process.Pid, syscall.SIGKILL)
	<-p.done
}

// Tail returns the last n bytes of the process's log.
func (p *Proc) Tail(n int) string {
	b, err := os.ReadFile(p.LogPath)
	if err != nil {
		return ""
	}
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// LogContains reports whether the log holds s.
func (p *Proc) LogContains(s string) bool {
	b, _ := os.ReadFile(p.LogPath)
	return bytes.Contains(b, []byte(s))
}

// FreePort returns a free TCP port on 127.0.0.1.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func freePorts(n int) ([]int, error) {
	// Hold all listeners until every port is chosen, so none repeats.
	ls := make([]net.Listener, 0, n)
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	ports := make([]int, 0, n)
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// waitFor polls cond every 50 ms until it returns true, the process dies or ctx ends.
func waitFor(ctx context.Context, what string, p *Proc, cond func(context.Context) bool) error {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		if cond(ctx) {
			return nil
		}
		if p != nil {
			if ok, err := p.Exited(); ok {
				return fmt.Errorf("%s exited before %s (%v):\n%s", p.Name, what, err, p.Tail(3000))
			}
		}
		select {
		case <-ctx.Done():
			msg := ""
			if p != nil {
				msg = "\n" + p.Tail(3000)
			}
			return fmt.Errorf("timed out waiting for %s: %w%s", what, ctx.Err(), msg)
		case <-t.C:
		}
	}
}

func itoa(i int) string { return strconv.Itoa(i) }
