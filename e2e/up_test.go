package e2e_test

// `spirepod up` on the real node (issue 22): the whole guide as one
// command, on the default scaffold, with the test playing the platform team
// (it merges the pull requests in the fake city repository, reloads the
// SPIRE server's trust list from the merged city and loads the merged
// entries, each after a delay of its own). Real cert-manager, spire-server,
// spire-agent, curl and the Envoy stand-in; verify through apiserver →
// kubelet.

import (
	"bufio"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/spirepod/spirepod/internal/fakes/githubfake"
	"github.com/spirepod/spirepod/internal/pki"
	"github.com/spirepod/spirepod/internal/project"
	"github.com/spirepod/spirepod/internal/testbed"
	"github.com/spirepod/spirepod/internal/up"
)

// upBed is one team's world for `spirepod up`: the real node, a fake
// GitHub, a SPIRE server (started with a trust list that does not hold the
// team CA yet) and the upstream echo, and a platform that acts on the city.
type upBed struct {
	*realPod
	team, ns    string
	serverPort  int
	upCert      string
	upKey       string
	trustFile   string
	args        []string // up's arguments, but --no-wait
	mu          sync.Mutex
	reloaded    bool
	entriesDone bool
}

func newUpBed(t *testing.T, b testbed.Bins, cl *testbed.Cluster) *upBed {
	c := &chain{t: t, bins: b, home: t.TempDir(), cluster: cl}
	c.ctx = t.Context()
	c.cli = buildCLI(t)
	root, err := os.MkdirTemp("", "spup-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	c.root = root
	c.gh = githubfake.New("alice", ghToken)
	t.Cleanup(c.gh.Close)
	if _, err := c.gh.AddRepo(cityRepo, true, "main", map[string]string{"README.md": "city\n"}); err != nil {
		t.Fatal(err)
	}
	u := &upBed{realPod: &realPod{chain: c, tm: &timings{}}}
	u.team, u.ns = "t"+randHex(t, 3), "up-"+randHex(t, 3)
	u.dir = filepath.Join(root, u.team)
	a := c.realNodeProfile(t, cl)
	u.serverPort, u.echoID = a.serverPort, a.echoID
	echoPort := a.echoPort
	td := project.MergeProfiles(nil)[project.DefaultEnvironment].TrustDomain
	var upKey string
	u.upCert, upKey = c.upstreamCA()
	u.upKey = upKey

	// The SPIRE server runs from the start, trusting an unrelated CA: up's
	// probe is refused (the platform has not reloaded yet), not unreachable.
	sdir := filepath.Join(root, "server")
	u.trustFile = filepath.Join(sdir, "x509pop-trust-list.pem")
	other := writeCAFile(t, filepath.Join(root, "other-ca"))
	writeFile(t, u.trustFile, other, 0o644)
	u.startServer(td, upKey)
	u.startEcho(echoPort)

	// The namespace, as the platform hands it out: Pod Security "restricted".
	if err := cl.CreateNamespace(c.ctx, u.ns); err != nil {
		t.Fatal(err)
	}
	nsObj, err := cl.Client.CoreV1().Namespaces().Get(c.ctx, u.ns, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if nsObj.Labels == nil {
		nsObj.Labels = map[string]string{}
	}
	nsObj.Labels["pod-security.kubernetes.io/enforce"] = "restricted"
	if _, err := cl.Client.CoreV1().Namespaces().Update(c.ctx, nsObj, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	u.kube = []string{"--kubeconfig", cl.Kubeconfig, "--context", cl.Context}
	u.args = append([]string{"up", "--team", u.team, "-n", u.ns, "--dir", u.dir, "--server-ca", u.upCert,
		"--upstream-host", realUpstreamHost, "--upstream-port", fmt.Sprint(echoPort), "--upstream-id", u.echoID,
		"--server", fmt.Sprintf("127.0.0.1:%d", u.serverPort), "--poll", "1s", "--timeout", "4m", "-o", "json"}, u.kube...)
	return u
}

func (u *upBed) startServer(td, upKey string) {
	srv, err := testbed.StartSpireServer(u.ctx, u.bins, filepath.Dir(u.trustFile), testbed.SpireServerConfig{TrustDomain: td,
		CABundlePath: u.trustFile, AgentPathTemplate: defaultAgentPathTemplate, UpstreamCACert: u.upCert, UpstreamCAKey: upKey, Port: u.serverPort})
	if err != nil {
		u.t.Fatalf("spire-server: %v", err)
	}
	u.t.Cleanup(srv.Stop)
	u.srv = srv
}

// writeCAFile makes a CA certificate (its key stays in dir) and returns its PEM.
func writeCAFile(t *testing.T, dir string) string {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	cert := filepath.Join(dir, "ca.crt.pem")
	if _, err := pki.Generate(t.Context(), pki.GenerateOptions{CertPath: cert, KeyPath: filepath.Join(dir, "ca.key.pem"),
		Subject: pki.DefaultSubject("other"), Validity: 24 * time.Hour, Rand: rand.Reader, Now: time.Now}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(cert)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// mergeOpen merges the open pull request of kind (trust-ca, spiffe-id), if
// any; it reports whether it merged one.
func (u *upBed) mergeOpen(kind string) bool {
	for _, p := range u.gh.Pulls(cityRepo) {
		if p.State == "open" && strings.HasSuffix(p.HeadRef, "/"+kind) {
			if _, err := u.gh.Merge(cityRepo, p.Number); err != nil {
				u.t.Fatalf("merge #%d: %v", p.Number, err)
			}
			return true
		}
	}
	return false
}

// reload restarts the SPIRE server with the merged trust list (a restart
// always reloads x509pop's trust list: README "Rotating the team CA").
func (u *upBed) reload(td, upKey string) { u.reloadAfter(td, upKey, nil) }

// closed: ch is closed (without waiting).
func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// reloadAfter stops the server, waits for gap (if not nil) to close,
// loads the merged trust list and starts the server again.
func (u *upBed) reloadAfter(td, upKey string, gap <-chan struct{}) {
	files, err := u.gh.Files(cityRepo, "main")
	if err != nil {
		u.t.Fatal(err)
	}
	p := project.MergeProfiles(nil)[project.DefaultEnvironment]
	list, ok := files[p.TrustList.Path]
	if !ok {
		u.t.Fatalf("merged main has no %s", p.TrustList.Path)
	}
	u.srv.Stop()
	if gap != nil {
		select {
		case <-gap:
		case <-u.ctx.Done():
			return
		case <-time.After(3 * time.Minute):
			u.t.Errorf("spirepod up never probed the stopped server")
		}
	}
	writeFile(u.t, u.trustFile, list, 0o644)
	u.startServer(td, upKey)
}

// loadEntries loads the merged spiffe-ids.json into the server, as the
// platform's pipeline does.
func (u *upBed) loadEntries() {
	files, err := u.gh.Files(cityRepo, "main")
	if err != nil {
		u.t.Fatal(err)
	}
	path := "ns/" + u.ns + "/spire-envoy-integration/spiffe-ids.json"
	data, ok := files[path]
	if !ok {
		u.t.Fatalf("merged main has no %s", path)
	}
	f := filepath.Join(filepath.Dir(u.trustFile), "entries.json")
	writeFile(u.t, f, data, 0o644)
	if out, err := u.srv.Run(u.ctx, "entry", "create", "-data", f); err != nil {
		u.t.Fatalf("entry create -data: %v\n%s", err, out)
	}
}

// upRun runs `spirepod up` (args added to the bed's), its JSON events read
// as they come; onEvent may kill it (return true). It returns the events
// and the exit code.
func (u *upBed) upRun(extra []string, onEvent func(up.Event) bool) ([]up.Event, int) {
	t := u.t
	cmd := exec.CommandContext(u.ctx, u.cli, append(append([]string{}, u.args...), extra...)...)
	cmd.Dir = u.root
	cmd.Env = append(cliBaseEnv(), "HOME="+u.home, "XDG_CONFIG_HOME="+filepath.Join(u.home, ".config"), "NO_COLOR=1",
		"SPIREPOD_GITHUB_API_URL="+u.gh.URL, "GH_TOKEN="+ghToken)
	cmd.Env = append(cmd.Env, u.chain.env...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var errOut strings.Builder
	cmd.Stderr = &errOut
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var events []up.Event
	sc := bufio.NewScanner(out)
	killed := false
	for sc.Scan() {
		var ev up.Event
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("up -o json: a line that is not an event: %q", sc.Text())
		}
		events = append(events, ev)
		t.Logf("up: %s %s %s %s %s", ev.Step, ev.Kind, ev.Message, ev.URL, ev.Error)
		if !killed && onEvent != nil && onEvent(ev) {
			killed = true
			_ = cmd.Process.Signal(syscall.SIGKILL)
		}
	}
	err = cmd.Wait()
	code := 0
	if err != nil {
		code = cmd.ProcessState.ExitCode()
		if killed {
			code = -9
		}
	}
	if code != 0 && code != -9 {
		t.Logf("up exit %d; stderr:\n%s", code, errOut.String())
	}
	return events, code
}

// TestUpRealPod: `spirepod up` from nothing to verified in one run while
// the platform merges each pull request 2 s after it opens, and reloads the
// server 3 s after the trust-list merge (and after up's probe was refused:
// up must have met the server before) by restarting it, leaving it down
// until up has probed it once in the gap (a wait on the restart, not a
// failure: CI once failed on exactly that gap); every step runs once. Then a
// second `up` skips every step. The time to verified is reported as machine
// time (the waits on the platform left out).
func TestUpRealPod(t *testing.T) {
	t.Parallel()
	b, _ := testbed.RequireRealNode(t)
	buildCLI(t) // in the parent: the child InNetns starts reuses it
	if !testbed.InNetns(t) {
		return
	}
	cl := startRealNode(t, b)
	u := newUpBed(t, b, cl)
	td := project.MergeProfiles(nil)[project.DefaultEnvironment].TrustDomain
	upKey := u.upKey
	// The platform: merge after 2 s, reload 3 s after the trust-list merge,
	// load the entries once the registration is merged.
	stop, gap, refused := make(chan struct{}), make(chan struct{}), make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		var caMerged, idMerged time.Time
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		seen := map[string]time.Time{}
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			for _, kind := range []string{"trust-ca", "spiffe-id"} {
				for _, p := range u.gh.Pulls(cityRepo) {
					if p.State == "open" && strings.HasSuffix(p.HeadRef, "/"+kind) {
						if seen[kind].IsZero() {
							seen[kind] = time.Now()
						} else if time.Since(seen[kind]) > 2*time.Second && u.mergeOpen(kind) {
							if kind == "trust-ca" {
								caMerged = time.Now()
							} else {
								idMerged = time.Now()
							}
						}
					}
				}
			}
			u.mu.Lock()
			if !caMerged.IsZero() && !u.reloaded && time.Since(caMerged) > 3*time.Second && closed(refused) {
				u.reloadAfter(td, upKey, gap)
				u.reloaded = true
			}
			if !idMerged.IsZero() && u.reloaded && !u.entriesDone {
				u.loadEntries()
				u.entriesDone = true
			}
			u.mu.Unlock()
		}
	}()
	t.Cleanup(func() { close(stop); wg.Wait() })

	start := time.Now()
	gapSeen, refusedSeen := false, false
	events, code := u.upRun(nil, func(ev up.Event) bool {
		if !refusedSeen && ev.Step == "server-trust" && ev.Kind == up.EventWaiting && strings.Contains(ev.Message, "refused the attestation") {
			refusedSeen = true
			close(refused)
		}
		if !gapSeen && ev.Step == "server-trust" && ev.Kind == up.EventWaiting && strings.Contains(ev.Message, "answered before and does not answer now") {
			gapSeen = true
			close(gap)
		}
		return false
	})
	total := time.Since(start)
	if code != 0 {
		u.dumpPods()
		t.Fatalf("spirepod up: exit %d", code)
	}
	if !gapSeen {
		t.Errorf("up never waited on the restarting server (no server-trust event saying it answered before)")
	}
	ran, waited := map[string]int{}, time.Duration(0)
	var waitStart time.Time
	for _, ev := range events {
		switch ev.Kind {
		case up.EventRunning:
			ran[ev.Step]++
		case up.EventWaiting:
			if waitStart.IsZero() {
				waitStart = ev.Time
			}
		case up.EventDone:
			if !waitStart.IsZero() {
				waited += ev.Time.Sub(waitStart)
				waitStart = time.Time{}
			}
		case up.EventFailed:
			t.Fatalf("a step failed: %+v", ev)
		}
	}
	for _, s := range []string{"init", "pki", "trust-ca", "spiffe-id", "apply", "verify"} {
		if ran[s] != 1 {
			t.Errorf("step %s ran %d times, want once", s, ran[s])
		}
	}
	if pulls := u.gh.Pulls(cityRepo); len(pulls) != 2 {
		t.Fatalf("pull requests: %+v (want exactly two)", pulls)
	}
	u.p = loadProject(t, u.dir)
	if !u.p.Registration.WatchClassless && u.p.Registration.Format != project.FormatEntryJSON {
		t.Fatalf("the defaults changed: format %s", u.p.Registration.Format)
	}
	for _, pod := range u.p.PodNames() {
		u.checkAgentAttested(pod)
	}
	t.Logf("UP TIMINGS: up to verified %v wall, %v of it waiting on the platform (merges 2 s after each PR, reload 3 s after the merge): machine time %v",
		total.Round(time.Millisecond), waited.Round(time.Millisecond), (total - waited).Round(time.Millisecond))

	// Again: everything is in place; nothing runs, and the server is not
	// probed again (the team's agents' verification is the proof): no new
	// attested-agent record on the shared server.
	agentsBefore := u.agentCount()
	events, code = u.upRun([]string{"--no-wait"}, nil)
	if code != 0 {
		t.Fatalf("second up: exit %d", code)
	}
	for _, ev := range events {
		if ev.Kind != up.EventSkipped {
			t.Errorf("second up: %s %s, want every step skipped", ev.Step, ev.Kind)
		}
	}
	if n := u.agentCount(); n != agentsBefore {
		t.Errorf("second up: the server has %d attested agents, %d before: a probe ran although the team verified", n, agentsBefore)
	}
}

// TestUpResumesRealPod: `up --no-wait` stops at each wait with exit 75 and
// who must act; after each merge or reload the next `up --no-wait` goes on;
// then a run killed (SIGKILL) at every step boundary and once in the middle
// of apply is started again each time, and the end state is the
// uninterrupted run's: verified, exactly two pull requests, one team CA,
// each pod's agent attested.
func TestUpResumesRealPod(t *testing.T) {
	t.Parallel()
	b, _ := testbed.RequireRealNode(t)
	buildCLI(t)
	if !testbed.InNetns(t) {
		return
	}
	cl := startRealNode(t, b)
	u := newUpBed(t, b, cl)
	td := project.MergeProfiles(nil)[project.DefaultEnvironment].TrustDomain
	upKey := u.upKey

	expectWait := func(step string) {
		t.Helper()
		events, code := u.upRun([]string{"--no-wait"}, nil)
		last := events[len(events)-1]
		if code != 75 || last.Kind != up.EventWaiting || last.Step != step || last.Who == "" {
			t.Fatalf("up --no-wait: exit %d, last event %+v; want 75 waiting at %s", code, last, step)
		}
	}
	expectWait("trust-ca")
	expectWait("trust-ca") // nothing changed: the same wait, no second PR
	if !u.mergeOpen("trust-ca") {
		t.Fatal("no open trust-ca PR")
	}
	expectWait("server-trust")
	u.reload(td, upKey)
	expectWait("spiffe-id")
	if !u.mergeOpen("spiffe-id") {
		t.Fatal("no open spiffe-id PR")
	}
	u.loadEntries()
	caBefore, err := os.ReadFile(filepath.Join(u.dir, "certs", "secret", "agent-x509pop.crt.pem"))
	if err != nil {
		t.Fatal(err)
	}

	// Kill at every step boundary from here on (apply and verify run),
	// and once in the middle of apply; each next run starts over from
	// where the world is.
	boundaries := 0
	for attempt := 0; attempt < 20; attempt++ {
		var seen int
		events, code := u.upRun(nil, func(ev up.Event) bool {
			if ev.Kind == up.EventRunning && ev.Step == "apply" && attempt == 0 {
				return true // mid-step
			}
			if ev.Kind == up.EventSkipped || ev.Kind == up.EventDone {
				seen++
				return seen > boundaries
			}
			return false
		})
		if code == 0 {
			t.Logf("verified after %d interrupted runs", attempt)
			break
		}
		if code != -9 {
			t.Fatalf("up: exit %d (events %+v)", code, events)
		}
		if attempt > 0 {
			boundaries++
		}
	}
	if _, code := u.upRun([]string{"--no-wait"}, nil); code != 0 {
		t.Fatalf("after the interrupted runs up --no-wait exits %d, want 0 (verified)", code)
	}
	if pulls := u.gh.Pulls(cityRepo); len(pulls) != 2 {
		t.Fatalf("pull requests: %+v (want exactly two)", pulls)
	}
	caAfter, err := os.ReadFile(filepath.Join(u.dir, "certs", "secret", "agent-x509pop.crt.pem"))
	if err != nil || string(caAfter) != string(caBefore) {
		t.Fatalf("the team CA changed across the interrupted runs")
	}
	u.p = loadProject(t, u.dir)
	for _, pod := range u.p.PodNames() {
		u.checkAgentAttested(pod)
	}
}

// agentCount is how many attested agents the SPIRE server lists.
func (u *upBed) agentCount() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	out, err := u.srv.Run(u.ctx, "agent", "count")
	if err != nil {
		u.t.Fatalf("agent count: %v\n%s", err, out)
	}
	var n int
	if _, err := fmt.Sscanf(strings.TrimSpace(out), "%d attested", &n); err != nil {
		u.t.Fatalf("agent count: %q: %v", out, err)
	}
	return n
}
