// Command envoy is a STAND-IN for Envoy, not Envoy: no Envoy binary can be
// had on the test bed's machines, so the test bed runs this small program in
// the envoy container's place (image spirepod.test/envoy-standin). It takes
// Envoy's arguments (-c/--config-path, -l/--log-level; others are accepted
// and ignored), parses the bootstrap with Envoy's own API types
// (go-control-plane, validated like Envoy does), and does exactly what the
// scaffold's bootstrap asks of Envoy, no more:
//
//   - the admin listener: GET /ready answers 200 "LIVE" once every SDS
//     secret is loaded (503 "PRE_INITIALIZING" before), like Envoy's;
//   - each static listener with an HTTP connection manager: its routes
//     (domains, path prefix) forward every request to their cluster;
//   - each cluster with an UpstreamTlsContext: mTLS with the client
//     certificate and the validation context fetched over SDS (StreamSecrets
//     on the SDS cluster's gRPC pipe, one stream per secret, using the exact
//     resource names of the bootstrap), SNI from `sni`, the server's chain
//     checked against the SDS bundle (trusted_ca or SPIRE's SPIFFE validator
//     config) and match_typed_subject_alt_names;
//   - the SDS streams stay open: rotated secrets apply to new connections.
//
// Its log lines follow Envoy's format and wording where spirepod's `verify`
// reads them ("StreamSecrets gRPC config stream to <cluster> closed: ...",
// the "upstream connect error ... TLS_error ... CERTIFICATE_VERIFY_FAILED"
// response body curl prints).
package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"
)

// standinVersion is what the stand-in reports to the SDS server as Envoy's
// build version: the scaffold's Envoy image (envoyproxy/envoy:v1.32.3), so
// SPIRE answers with the SPIFFE certificate validator, as it would Envoy.
var standinVersion = [3]uint32{1, 32, 3}

func main() {
	cfgPath, level, err := parseArgs(os.Args[1:])
	if err != nil {
		fmt.Fprintf(os.Stderr, "envoy (stand-in): %v\n", err)
		os.Exit(1)
	}
	lg := newLogger(level)
	lg.infof("main", "envoy STAND-IN (spirepod test bed, not Envoy) emulating version %d.%d.%d; config %s",
		standinVersion[0], standinVersion[1], standinVersion[2], cfgPath)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := run(ctx, cfgPath, lg); err != nil {
		lg.criticalf("main", "error initializing configuration '%s': %v", cfgPath, err)
		os.Exit(1)
	}
	lg.infof("main", "exiting")
}

// parseArgs takes Envoy's command line: -c/--config-path FILE and
// -l/--log-level LEVEL; every other flag (with its value when it takes one)
// is ignored.
func parseArgs(args []string) (cfg, level string, err error) {
	level = "info"
	withValue := map[string]bool{
		"--base-id": true, "--concurrency": true, "--service-cluster": true, "--service-node": true,
		"--service-zone": true, "--component-log-level": true, "--log-format": true, "--log-path": true,
		"--drain-time-s": true, "--parent-shutdown-time-s": true, "--mode": true, "--restart-epoch": true,
		"--config-yaml": true, "--local-address-ip-version": true, "--file-flush-interval-msec": true,
		"--drain-strategy": true, "--socket-path": true, "--socket-mode": true, "--base-id-path": true,
	}
	for i := 0; i < len(args); i++ {
		a := args[i]
		name, val, hasVal := strings.Cut(a, "=")
		next := func() (string, error) {
			if hasVal {
				return val, nil
			}
			if i+1 >= len(args) {
				return "", fmt.Errorf("flag %s needs a value", name)
			}
			i++
			return args[i], nil
		}
		switch name {
		case "-c", "--config-path":
			if cfg, err = next(); err != nil {
				return
			}
		case "-l", "--log-level":
			if level, err = next(); err != nil {
				return
			}
		default:
			if withValue[name] && !hasVal {
				i++
			}
		}
	}
	if cfg == "" {
		err = fmt.Errorf("no bootstrap: pass -c /etc/envoy/envoy.yaml")
	}
	return
}

func run(ctx context.Context, cfgPath string, lg *logger) error {
	raw, err := os.ReadFile(cfgPath)
	if err != nil {
		return err
	}
	bs, err := loadBootstrap(raw)
	if err != nil {
		return err
	}
	plan, err := planFrom(bs)
	if err != nil {
		return err
	}
	store := newSecretStore()
	state := &serverState{}

	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	// admin
	if plan.admin != "" {
		ln, err := net.Listen("tcp", plan.admin)
		if err != nil {
			return fmt.Errorf("admin address %s: %w", plan.admin, err)
		}
		lg.infof("main", "admin address: %s", ln.Addr())
		srv := &http.Server{Handler: adminHandler(state, store), ReadHeaderTimeout: 10 * time.Second}
		wg.Add(1)
		go func() { defer wg.Done(); srv.Serve(ln) }()
		defer srv.Close()
	}

	// SDS: one stream per secret name, like Envoy's per-secret subscriptions.
	for _, sub := range plan.sds {
		wg.Add(1)
		go func() { defer wg.Done(); streamSecrets(ctx, bs.GetNode(), sub, store, lg) }()
	}

	// Listeners are bound now; they accept once initialization is done (all
	// secrets, or each secret's initial fetch timed out), as Envoy's workers.
	type bound struct {
		l  listenerPlan
		ln net.Listener
	}
	var lns []bound
	for _, l := range plan.listeners {
		ln, err := net.Listen("tcp", l.addr)
		if err != nil {
			return fmt.Errorf("listener %s: cannot bind %s: %w", l.name, l.addr, err)
		}
		lns = append(lns, bound{l, ln})
	}
	lg.infof("main", "starting main dispatch loop")
	lg.infof("upstream", "cm init: initializing cds")
	if !waitInit(ctx, plan, store, lg) {
		return nil
	}
	state.setLive()
	lg.infof("main", "all clusters initialized. initializing init manager")
	lg.infof("main", "all dependencies initialized. starting workers")
	for _, b := range lns {
		srv := &http.Server{Handler: proxyHandler(b.l, plan.clusters, store, lg), ReadHeaderTimeout: 10 * time.Second}
		wg.Add(1)
		go func() { defer wg.Done(); srv.Serve(b.ln) }()
		defer srv.Close()
	}
	<-ctx.Done()
	lg.infof("main", "caught ENVOY_SIGTERM")
	return nil
}

// waitInit waits until every secret is loaded or its initial fetch timed
// out; false when ctx ended first.
func waitInit(ctx context.Context, plan *plan, store *secretStore, lg *logger) bool {
	pending := map[string]sdsSub{}
	for _, s := range plan.sds {
		pending[s.name] = s
	}
	start := time.Now()
	for len(pending) > 0 {
		ch := store.changed()
		next := time.Duration(-1)
		for name, s := range pending {
			if store.has(name) {
				delete(pending, name)
				continue
			}
			left := s.initialFetchTimeout - time.Since(start)
			if s.initialFetchTimeout > 0 && left <= 0 {
				lg.warnf("config", "gRPC config: initial fetch timed out for %s (secret %s)", secretTypeURL, name)
				delete(pending, name)
				continue
			}
			if s.initialFetchTimeout > 0 && (next < 0 || left < next) {
				next = left
			}
		}
		if len(pending) == 0 {
			break
		}
		var timer <-chan time.Time
		if next > 0 {
			t := time.NewTimer(next)
			defer t.Stop()
			timer = t.C
		}
		select {
		case <-ctx.Done():
			return false
		case <-ch:
		case <-timer:
		}
	}
	return true
}

type serverState struct {
	mu   sync.Mutex
	live bool
}

func (s *serverState) setLive() { s.mu.Lock(); s.live = true; s.mu.Unlock() }
func (s *serverState) isLive() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.live
}

// adminHandler serves Envoy's /ready (and /server_info's state) only.
func adminHandler(state *serverState, store *secretStore) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/ready", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=UTF-8")
		if !state.isLive() {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, "PRE_INITIALIZING")
			return
		}
		fmt.Fprintln(w, "LIVE")
	})
	mux.HandleFunc("/server_info", func(w http.ResponseWriter, r *http.Request) {
		st := "PRE_INITIALIZING"
		if state.isLive() {
			st = "LIVE"
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, "{\"state\": %q, \"version\": \"spirepod-envoy-standin/%d.%d.%d\", \"secrets\": %q}\n",
			st, standinVersion[0], standinVersion[1], standinVersion[2], store.names())
	})
	return mux
}

// logger writes Envoy's default log format:
// [%Y-%m-%d %T.%e][%t][%l][%n] [%g:%#] %v
type logger struct {
	mu    sync.Mutex
	level int
}

var levels = map[string]int{"trace": 0, "debug": 1, "info": 2, "warning": 3, "warn": 3, "error": 4, "critical": 5, "off": 6}

func newLogger(level string) *logger {
	l, ok := levels[strings.ToLower(level)]
	if !ok {
		l = 2
	}
	return &logger{level: l}
}

func (l *logger) logf(lvl int, name, component, format string, args ...any) {
	if lvl < l.level {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprintf(os.Stderr, "[%s][%d][%s][%s] [standin/envoy] %s\n",
		time.Now().UTC().Format("2006-01-02 15:04:05.000"), os.Getpid(), name, component, fmt.Sprintf(format, args...))
}

func (l *logger) debugf(c, f string, a ...any)    { l.logf(1, "debug", c, f, a...) }
func (l *logger) infof(c, f string, a ...any)     { l.logf(2, "info", c, f, a...) }
func (l *logger) warnf(c, f string, a ...any)     { l.logf(3, "warning", c, f, a...) }
func (l *logger) criticalf(c, f string, a ...any) { l.logf(5, "critical", c, f, a...) }
