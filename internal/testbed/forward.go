package testbed

import (
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"testing"
)

func listenTCP(addr string) (net.Listener, error) { return net.Listen("tcp", addr) }

// Forwarder relays TCP connections from an address pods reach (on the
// bridge, inside the test's network namespace) to a server the test runs on
// 127.0.0.1, which pods cannot reach: e.g. the SPIRE server of
// StartSpireServer.
type Forwarder struct {
	// Addr is host:port on BridgeIP; pods connect here.
	Addr   string
	Target string
	ln     net.Listener
	wg     sync.WaitGroup
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
}

// ExposeToPods relays BridgeIP:<port> to target (host:port on 127.0.0.1),
// with the same port number when it is free on the bridge, else another. It
// works only inside the test's network namespace (InNetns) and stops when
// the test ends.
func ExposeToPods(t testing.TB, target string) *Forwarder {
	t.Helper()
	f, err := StartForwarder(target)
	if err != nil {
		t.Fatalf("expose %s to pods: %v", target, err)
	}
	t.Cleanup(f.Close)
	return f
}

// StartForwarder is ExposeToPods without a test: Close stops it.
func StartForwarder(target string) (*Forwarder, error) {
	if !inNetns() {
		return nil, errors.New("pods are reachable only inside the test's network namespace (call InNetns first)")
	}
	_, port, err := net.SplitHostPort(target)
	if err != nil {
		return nil, err
	}
	ln, err := listenTCP(net.JoinHostPort(BridgeIP, port))
	if err != nil {
		if ln, err = listenTCP(BridgeIP + ":0"); err != nil {
			return nil, err
		}
	}
	f := &Forwarder{Addr: ln.Addr().String(), Target: target, ln: ln, conns: map[net.Conn]struct{}{}}
	f.wg.Add(1)
	go f.serve()
	return f, nil
}

// Port is the port pods connect to (on BridgeIP).
func (f *Forwarder) Port() int {
	_, p, _ := net.SplitHostPort(f.Addr)
	n, _ := strconv.Atoi(p)
	return n
}

func (f *Forwarder) track(c net.Conn, add bool) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if add {
		if f.closed {
			return false
		}
		f.conns[c] = struct{}{}
	} else {
		delete(f.conns, c)
	}
	return true
}

func (f *Forwarder) serve() {
	defer f.wg.Done()
	for {
		in, err := f.ln.Accept()
		if err != nil {
			return
		}
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			out, err := net.Dial("tcp", f.Target)
			if err != nil {
				in.Close()
				return
			}
			if !f.track(in, true) || !f.track(out, true) {
				in.Close()
				out.Close()
				return
			}
			defer func() {
				f.track(in, false)
				f.track(out, false)
				in.Close()
				out.Close()
			}()
			done := make(chan struct{}, 2)
			pipe := func(dst, src net.Conn) {
				io.Copy(dst, src)
				if tc, ok := dst.(*net.TCPConn); ok {
					tc.CloseWrite()
				}
				done <- struct{}{}
			}
			go pipe(out, in)
			go pipe(in, out)
			<-done
			<-done
		}()
	}
}

// Close stops listening, ends open connections and waits for the relays.
func (f *Forwarder) Close() {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return
	}
	f.closed = true
	for c := range f.conns {
		c.Close()
	}
	f.mu.Unlock()
	f.ln.Close()
	f.wg.Wait()
}

func (f *Forwarder) String() string { return fmt.Sprintf("%s -> %s", f.Addr, f.Target) }
