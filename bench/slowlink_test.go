package bench

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"k8s.io/client-go/tools/clientcmd"

	"github.com/spirepod/spirepod/internal/testbed"
)

// delayProxy is a TCP relay on 127.0.0.1 that holds every chunk for delay
// in each direction (round trip +2×delay), in order: a remote API server.
type delayProxy struct {
	ln     net.Listener
	target string
	delay  time.Duration
	wg     sync.WaitGroup
	conns  int
	mu     sync.Mutex
}

func startDelayProxy(t *testing.T, target string, delay time.Duration) *delayProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &delayProxy{ln: ln, target: target, delay: delay}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			p.conns++
			p.mu.Unlock()
			go p.serve(c)
		}
	}()
	t.Cleanup(func() { ln.Close(); p.wg.Wait() })
	return p
}

func (p *delayProxy) addr() string { return p.ln.Addr().String() }

func (p *delayProxy) serve(c net.Conn) {
	u, err := net.Dial("tcp", p.target)
	if err != nil {
		c.Close()
		return
	}
	go p.pipe(u, c)
	p.pipe(c, u)
}

// pipe copies src to dst, each chunk written delay after it was read.
func (p *delayProxy) pipe(dst, src net.Conn) {
	type chunk struct {
		due  time.Time
		data []byte
	}
	q := make(chan chunk, 1024)
	go func() {
		defer dst.Close()
		for ch := range q {
			time.Sleep(time.Until(ch.due))
			if _, err := dst.Write(ch.data); err != nil {
				return
			}
		}
	}()
	buf := make([]byte, 64<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			q <- chunk{time.Now().Add(p.delay), append([]byte(nil), buf[:n]...)}
		}
		if err != nil {
			close(q)
			if !errors.Is(err, io.EOF) {
				src.Close()
			}
			return
		}
	}
}

// runCode runs a command and returns its time; exit codes in ok are fine.
func runCode(t *testing.T, env []string, dir, name string, ok []int, args ...string) time.Duration {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir, cmd.Env = dir, env
	t0 := time.Now()
	out, err := cmd.CombinedOutput()
	d := time.Since(t0)
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("%s %v: %v", name, args, err)
	}
	for _, c := range ok {
		if c == code {
			return d
		}
	}
	t.Fatalf("%s %v: exit %d\n%s", name, args, code, out)
	return d
}

// TestBenchSlowLink measures spirepod apply --wait=false, status and diff
// against kubectl (apply -k certs && apply -k ., diff -k .) with a 50 ms
// each-way delay in front of the test bed's API server, and the same
// commands without it: (slow − direct) / RTT is the number of sequential
// round trips a command needs.
func TestBenchSlowLink(t *testing.T) {
	if os.Getenv("SPIREPOD_BENCH") != "1" {
		t.Skip("benchmark: set SPIREPOD_BENCH=1 (bench/slow-link.sh)")
	}
	runs := 5
	if n, err := strconv.Atoi(os.Getenv("BENCH_RUNS")); err == nil && n > 0 {
		runs = n
	}
	const oneWay = 50 * time.Millisecond
	rtt := 2 * oneWay
	b := testbed.Require(t)
	c := testbed.StartCluster(t, b, testbed.Options{})
	work := t.TempDir()
	bin := filepath.Join(work, "spirepod")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/spirepod").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	env := append(os.Environ(), "HOME="+work, "XDG_CONFIG_HOME="+filepath.Join(work, ".config"), "NO_COLOR=1")

	// A kubeconfig whose server is the delaying proxy (the serving
	// certificate names 127.0.0.1, so TLS verifies as before).
	cfg, err := clientcmd.LoadFromFile(c.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	cl := cfg.Clusters[cfg.Contexts[c.Context].Cluster]
	target := cl.Server[len("https://"):]
	proxy := startDelayProxy(t, target, oneWay)
	slowCfg := filepath.Join(work, "slow-kubeconfig")
	cl.Server = "https://" + proxy.addr()
	if err := clientcmd.WriteToFile(*cfg, slowCfg); err != nil {
		t.Fatal(err)
	}

	scaffold := teamScaffolds(t, c, env, work, bin)
	kcFor := func(kubeconfig string) []string { return []string{"--kubeconfig", kubeconfig, "--context", c.Context} }

	type arm struct {
		name string
		run  func(kubeconfig, dir string) time.Duration
	}
	spApply := func(kubeconfig, dir string) time.Duration {
		return mustRun(t, env, dir, bin, append([]string{"apply", "--wait=false", "--force-conflicts", "--skip-image-check"}, kcFor(kubeconfig)...)...)
	}
	kcApply := func(kubeconfig, dir string) time.Duration {
		d := mustRun(t, env, dir, b.Kubectl(), append([]string{"apply", "-k", "certs"}, kcFor(kubeconfig)...)...)
		return d + mustRun(t, env, dir, b.Kubectl(), append([]string{"apply", "-k", "."}, kcFor(kubeconfig)...)...)
	}
	spStatus := func(kubeconfig, dir string) time.Duration {
		return runCode(t, env, dir, bin, []int{0, 1}, append([]string{"status"}, kcFor(kubeconfig)...)...)
	}
	spDiff := func(kubeconfig, dir string) time.Duration {
		return runCode(t, env, dir, bin, []int{0, 1}, append([]string{"diff"}, kcFor(kubeconfig)...)...)
	}
	kcDiff := func(kubeconfig, dir string) time.Duration {
		return runCode(t, env, dir, b.Kubectl(), []int{0, 1}, append([]string{"diff", "-k", "."}, kcFor(kubeconfig)...)...)
	}

	// Warm the discovery caches (both tools keep theirs under HOME) and the
	// cluster-wide objects, on both links.
	warm := scaffold("warm")
	for _, k := range []string{c.Kubeconfig, slowCfg} {
		kcApply(k, warm)
		spApply(k, warm)
	}

	results := map[string]map[string][]time.Duration{}
	add := func(name, link string, d time.Duration) {
		if results[name] == nil {
			results[name] = map[string][]time.Duration{}
		}
		results[name][link] = append(results[name][link], d)
	}
	for i := 0; i < runs; i++ {
		for _, link := range []struct{ name, kubeconfig string }{{"direct", c.Kubeconfig}, {"slow", slowCfg}} {
			// apply into fresh namespaces (creates), then status and diff
			// on what was just applied.
			d1 := scaffold(fmt.Sprintf("sp-%s-%d", link.name, i))
			add("spirepod apply --wait=false", link.name, spApply(link.kubeconfig, d1))
			d2 := scaffold(fmt.Sprintf("kc-%s-%d", link.name, i))
			add("kubectl apply -k certs && kubectl apply -k .", link.name, kcApply(link.kubeconfig, d2))
			add("spirepod status", link.name, spStatus(link.kubeconfig, d1))
			add("spirepod diff", link.name, spDiff(link.kubeconfig, d1))
			add("kubectl diff -k .", link.name, kcDiff(link.kubeconfig, d1))
		}
	}
	order := []string{"spirepod apply --wait=false", "kubectl apply -k certs && kubectl apply -k .", "spirepod diff", "kubectl diff -k .", "spirepod status"}
	t.Logf("RTT added by the proxy: %v (%v each way); medians over %d runs", rtt, oneWay, runs)
	for _, name := range order {
		direct, slow := median(results[name]["direct"]), median(results[name]["slow"])
		trips := float64(slow-direct) / float64(rtt)
		t.Logf("%-48s direct median %7.1f ms, slow median %7.1f ms, sequential round trips ≈ %.1f",
			name, float64(direct)/1e6, float64(slow)/1e6, trips)
	}
	ratio := func(a, b string) float64 {
		return float64(median(results[a]["slow"])) / float64(median(results[b]["slow"]))
	}
	t.Logf("ratio on the slow link: spirepod apply / kubectl apply×2 = %.2f; spirepod diff / kubectl diff = %.2f",
		ratio("spirepod apply --wait=false", "kubectl apply -k certs && kubectl apply -k ."), ratio("spirepod diff", "kubectl diff -k ."))
	t.Logf("proxy connections: %d", proxy.conns)

	// BENCH_TRACE=1: each spirepod command once more on the slow link with
	// SPIREPOD_HTTP_TRACE, to see its requests and which wait for which.
	if os.Getenv("BENCH_TRACE") != "" {
		tenv := append(append([]string(nil), env...), "SPIREPOD_HTTP_TRACE=1")
		d := scaffold("trace")
		for _, args := range [][]string{
			{"apply", "--wait=false", "--force-conflicts", "--skip-image-check"}, {"diff"}, {"status"},
		} {
			cmd := exec.Command(bin, append(args, kcFor(slowCfg)...)...)
			cmd.Dir, cmd.Env = d, tenv
			out, _ := cmd.CombinedOutput()
			t.Logf("trace of spirepod %v:\n%s", args, out)
		}
	}
}
