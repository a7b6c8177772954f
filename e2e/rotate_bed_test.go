package e2e_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/utils/ptr"

	"github.com/spirepod/spirepod/internal/certmanager"
	"github.com/spirepod/spirepod/internal/pki"
	"github.com/spirepod/spirepod/internal/pr"
	"github.com/spirepod/spirepod/internal/project"
	"github.com/spirepod/spirepod/internal/rotate"
	"github.com/spirepod/spirepod/internal/testbed"
)

// The rotation test bed: one team of two pods, onboarded; a real
// spire-server whose x509pop trust list lives in a plugin_data_file (so it
// reloads on SIGUSR1, no restart); per pod, the scaffold's gen_cert.sh as
// the gen-cert sidecar runs it (follow mode, the pods' service account) and
// a real spire-agent reading what it writes, its log copied into the log
// kwok serves for the pod's spire-agent container (so `pki rotate` reads it
// through the real apiserver → kubelet-API path); a fake GitHub whose
// merges the test makes, acting as the platform team after each one.

// agentTTL makes agents rotate (x509pop: re-attest, reading their
// certificate again) every ~15 s instead of every 30 minutes.
const agentTTL = "30s"

type rotBed struct {
	*chain
	name, dir string
	p         *project.Project
	kube      []string
	upCert    string
	upKey     string
	srv       *rotServer
	agentConf string
	// iv are the SPIRE intervals the bed runs with.
	iv   spireIntervals
	pods map[string]*rotPod
	// agentLogs are every agent log of each pod (one per incarnation).
	agentLogs map[string][]string
	// fetch is the loop fetching every pod's SVID every 500 ms.
	fetch *fetchLoop
}

// newRotBed starts everything and onboards the team: CA, bundle, both pull
// requests merged and loaded by the server, applied, agents serving SVIDs.
func newRotBed(t *testing.T, replicas int) *rotBed {
	c := newChain(t, "sprot-", 20*time.Minute, testbed.Bins.KubeSet, testbed.Bins.SpireSet)
	root, ctx := c.root, c.ctx

	r := &rotBed{chain: c, name: "rot-" + randHex(t, 3), pods: map[string]*rotPod{}, agentLogs: map[string][]string{}}
	r.dir = filepath.Join(root, r.name)
	r.kube = []string{"--kubeconfig", c.cluster.Kubeconfig, "--context", c.cluster.Context}
	r.upCert, r.upKey = c.upstreamCA()
	c.run(root, "init", "--team", r.name, "--namespace", r.name, "--replicas", fmt.Sprint(replicas), r.dir)
	c.run(r.dir, "pki", "gen")
	c.run(r.dir, "bundle", "set", r.upCert)
	c.merge(c.run(r.dir, "pr", "trust-ca"))
	c.merge(c.run(r.dir, "pr", "spiffe-id", "--format", "entry-json"))
	c.run(r.dir, append([]string{"apply", "--create-namespace", "--timeout", "2m"}, r.kube...)...)
	r.p = loadProject(t, r.dir)
	r.iv = bedIntervals(t)
	r.agentConf = agentTestConf(t, configMapKey(t, filepath.Join(r.dir, "spire-agent-configmap.yaml"), "agent.conf"))

	files := r.mainFiles()
	r.srv = startRotServer(t, c, filepath.Join(root, "server"), r.p.TrustDomain, r.upCert, r.upKey)
	r.srv.setTrust(files[r.p.City.TrustList.Path])
	r.srv.syncEntries(files[r.entriesPath()], r.p.Namespace)

	tok, err := c.cluster.Client.CoreV1().ServiceAccounts(r.p.Namespace).CreateToken(ctx, r.p.ServiceAccount,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](7200)}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c.saToken = tok.Status.Token
	for _, name := range r.p.PodNames() {
		r.pods[name] = r.startPod(name)
	}
	for _, name := range r.p.PodNames() {
		pd := r.pods[name]
		c.fetchSVID(pd.socket, filepath.Join(pd.root, "first-svid"), syncBound)
		r.logEcho(pd)
	}
	return r
}

// logEcho is the pod's curl container logging the upstream's echo: the XFCC
// element the upstream (the project's upstream SPIFFE ID) appended for the
// workload's SVID, the line `spirepod verify` judges.
func (r *rotBed) logEcho(pd *rotPod) {
	appendCRILog(r.t, pd.logs["curl"], fmt.Sprintf(`X-Forwarded-Client-Cert: By=%s;Hash=0;URI=%s`, r.p.Upstream.SpiffeID, r.p.WorkloadSpiffeID()))
}

func (r *rotBed) entriesPath() string { return pr.TeamPath(r.p) + "/spiffe-ids.json" }

func (r *rotBed) mainFiles() map[string]string {
	files, err := r.gh.Files(cityRepo, "main")
	if err != nil {
		r.t.Fatal(err)
	}
	return files
}

// --- the SPIRE server ---

type rotServer struct {
	t        *testing.T
	c        *chain
	dir      string
	td       string
	port     int
	socket   string
	conf     string
	dataFile string
	proc     *testbed.Proc
	n        int
	// trustFile is the trust list the server was last told to load.
	trustFile string
}

// startRotServer writes a server config whose x509pop plugin reads its
// data from a plugin_data_file (ca_bundle_paths, agent_path_template: the
// default, the leaf's fingerprint) and starts spire-server.
func startRotServer(t *testing.T, c *chain, dir, td, upCert, upKey string) *rotServer {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	port, err := testbed.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	s := &rotServer{t: t, c: c, dir: dir, td: td, port: port, socket: filepath.Join(dir, "api.sock"), dataFile: filepath.Join(dir, "x509pop.hcl")}
	s.conf = filepath.Join(dir, "server.conf")
	writeFile(t, s.conf, fmt.Sprintf(`server {
  bind_address = "127.0.0.1"
  bind_port = "%d"
  socket_path = %q
  trust_domain = %q
  data_dir = %q
  log_level = "DEBUG"
  ca_ttl = "24h"
  default_x509_svid_ttl = "1h"
  agent_ttl = %q
%s}
plugins {
  UpstreamAuthority "disk" {
    plugin_data {
      cert_file_path = %q
      key_file_path = %q
    }
  }
  DataStore "sql" {
    plugin_data {
      database_type = "sqlite3"
      connection_string = %q
    }
  }
  KeyManager "memory" {
    plugin_data {}
  }
  NodeAttestor "x509pop" {
    plugin_data_file = %q
  }
}
health_checks {
  listener_enabled = false
}
`, port, s.socket, td, filepath.Join(dir, "data"), agentTTL, cacheReload(), upCert, upKey, filepath.Join(dir, "data", "datastore.sqlite3"), s.dataFile), 0o644)
	return s
}

// cacheReload is the server config's experimental block setting
// cache_reload_interval when SPIREPOD_E2E_CACHE_RELOAD asks for one (see
// bedIntervals); empty for SPIRE's default.
func cacheReload() string {
	if v := os.Getenv(cacheReloadEnv); v != "" {
		return fmt.Sprintf("  experimental {\n    cache_reload_interval = %q\n  }\n", v)
	}
	return ""
}

// The two SPIRE settings that bound how long a moved agent's workloads go
// without SVIDs, and the test bed's knobs for them (measurements only: the
// scaffold's agent config and the platform's server config are untouched).
const (
	cacheReloadEnv = "SPIREPOD_E2E_CACHE_RELOAD" // server experimental.cache_reload_interval, e.g. 1s
	agentSyncEnv   = "SPIREPOD_E2E_AGENT_SYNC"   // agent experimental.sync_interval, e.g. 1s
)

// spireIntervals are the server's entry-cache reload interval and the
// agent's sync interval the bed runs with: SPIRE 1.13's defaults (5 s
// each: pkg/server/endpoints/endpoints.go defaultCacheReloadInterval,
// pkg/agent/manager/config.go SyncInterval) unless the knobs say otherwise.
type spireIntervals struct {
	CacheReload, AgentSync time.Duration
}

func bedIntervals(t *testing.T) spireIntervals {
	iv := spireIntervals{CacheReload: 5 * time.Second, AgentSync: 5 * time.Second}
	for env, d := range map[string]*time.Duration{cacheReloadEnv: &iv.CacheReload, agentSyncEnv: &iv.AgentSync} {
		if v := os.Getenv(env); v != "" {
			p, err := time.ParseDuration(v)
			if err != nil || p <= 0 {
				t.Fatalf("%s=%q: want a positive duration such as 1s", env, v)
			}
			*d = p
		}
	}
	return iv
}

// windowSlack is what the measured windows needed on top of the two SPIRE
// intervals (the DEBUG logs of 8 runs on the loaded 2-core bed, README
// "Rotating the team CA"): minting the workload's SVID after its entry is
// back, the cache rebuild itself, and the fetch loop's 500 ms pace.
const windowSlack = 3 * time.Second

// excusedWindow bounds, per agent move, how long after the agent
// re-attested under its new agent ID a fetch of its workload may fail:
// SPIRE's full entry cache (the default; events_based_cache is off) knows
// the new agent's selectors, and so the node aliases they reach, only from
// its next reload, at most cache_reload_interval later
// (pkg/server/cache/entrycache/fullcache.go Build); the agent's sync that
// comes first drops the workload entries, and the first sync after the
// reload brings them back, at most one sync interval (+10 % jitter,
// pkg/common/backoff) later. SPIRE issues 2287 and 6257.
func (iv spireIntervals) excusedWindow() time.Duration {
	return iv.CacheReload + iv.AgentSync*11/10 + windowSlack
}

func (iv spireIntervals) String() string {
	return fmt.Sprintf("server cache_reload_interval %v, agent sync_interval %v", iv.CacheReload, iv.AgentSync)
}

// agentTestConf is the scaffold's agent.conf as the bed runs it: DEBUG
// (the agent's "Entry removed"/"Entry created" lines are the evidence when
// a fetch fails), log_format "text" (logrus then stamps nanoseconds, not
// whole seconds: the re-attestation times the window is measured from),
// and sync_interval when SPIREPOD_E2E_AGENT_SYNC sets one.
func agentTestConf(t *testing.T, conf string) string {
	if n := strings.Count(conf, `log_level = "INFO"`); n != 1 {
		t.Fatalf("agent.conf: %d log_level = \"INFO\" lines, want 1: the template changed", n)
	}
	if strings.Contains(conf, "log_format") || strings.Contains(conf, "experimental") {
		t.Fatalf("agent.conf already sets log_format or experimental: the template changed:\n%s", conf)
	}
	add := `log_level = "DEBUG"` + "\n  log_format = \"text\""
	if v := os.Getenv(agentSyncEnv); v != "" {
		add += fmt.Sprintf("\n  experimental {\n    sync_interval = %q\n  }", v)
	}
	return strings.Replace(conf, `log_level = "INFO"`, add, 1)
}

// setTrust makes the server trust exactly the CAs of pem: a new file, named
// in the plugin data file; the first call starts the server, later ones
// send SIGUSR1 and wait for the server to log that the plugin reconfigured.
func (s *rotServer) setTrust(pem string) time.Duration {
	s.t.Helper()
	s.n++
	s.trustFile = filepath.Join(s.dir, fmt.Sprintf("trust-%d.pem", s.n))
	writeFile(s.t, s.trustFile, pem, 0o644)
	writeFile(s.t, s.dataFile, fmt.Sprintf("ca_bundle_paths = [%q]\nagent_path_template = %q\n", s.trustFile, defaultAgentPathTemplate), 0o644)
	start := time.Now()
	if s.proc == nil {
		s.start()
		return time.Since(start)
	}
	before := strings.Count(s.log(), "Plugin reconfigured")
	if err := syscall.Kill(s.proc.Cmd.Process.Pid, syscall.SIGUSR1); err != nil {
		s.t.Fatal(err)
	}
	// Read the server's log every 20 ms for its answer to the signal.
	for strings.Count(s.log(), "Plugin reconfigured") <= before {
		if time.Since(start) > 30*time.Second {
			s.t.Fatalf("spire-server did not reconfigure x509pop on SIGUSR1:\n%s", s.proc.Tail(3000))
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Since(start)
}

func (s *rotServer) log() string {
	b, _ := os.ReadFile(s.proc.LogPath)
	return string(b)
}

func (s *rotServer) start() {
	s.t.Helper()
	p, err := testbed.StartProc(s.dir, "spire-server", s.c.bins.SpireServer(), "run", "-config", s.conf)
	if err != nil {
		s.t.Fatal(err)
	}
	s.proc = p
	s.t.Cleanup(p.Stop)
	if !waitFor(s.t, 60*time.Second, func() bool {
		_, err := s.Run("healthcheck")
		return err == nil
	}) {
		s.t.Fatalf("spire-server never healthy:\n%s", p.Tail(3000))
	}
}

// restart stops and starts the server (the other way to reload).
func (s *rotServer) restart() time.Duration {
	start := time.Now()
	s.proc.Stop()
	s.start()
	return time.Since(start)
}

func (s *rotServer) Run(args ...string) (string, error) {
	i := 0
	for i < len(args) && !strings.HasPrefix(args[i], "-") {
		i++
	}
	full := append(append(append([]string{}, args[:i]...), "-socketPath", s.socket), args[i:]...)
	out, err := exec.CommandContext(s.c.ctx, s.c.bins.SpireServer(), full...).CombinedOutput()
	return string(out), err
}

type entryJSONFile struct {
	Entries []entryJSONItem `json:"entries"`
}

type entryJSONItem struct {
	EntryID   string `json:"entry_id"`
	SpiffeID  string `json:"spiffe_id"`
	ParentID  string `json:"parent_id"`
	Selectors []struct {
		Type  string `json:"type"`
		Value string `json:"value"`
	} `json:"selectors"`
}

func (e entryJSONItem) key() string {
	var sel []string
	for _, s := range e.Selectors {
		sel = append(sel, s.Type+":"+s.Value)
	}
	sort.Strings(sel)
	return e.SpiffeID + "|" + e.ParentID + "|" + strings.Join(sel, ",")
}

// serverEntries lists the entries whose entry_id starts with prefix.
func (s *rotServer) serverEntries(prefix string) map[string]entryJSONItem {
	s.t.Helper()
	out, err := s.Run("entry", "show", "-output", "json")
	if err != nil {
		s.t.Fatalf("entry show: %v\n%s", err, out)
	}
	var list struct {
		Entries []struct {
			ID       string `json:"id"`
			SpiffeID struct {
				TrustDomain string `json:"trust_domain"`
				Path        string `json:"path"`
			} `json:"spiffe_id"`
			ParentID struct {
				TrustDomain string `json:"trust_domain"`
				Path        string `json:"path"`
			} `json:"parent_id"`
			Selectors []struct {
				Type  string `json:"type"`
				Value string `json:"value"`
			} `json:"selectors"`
		} `json:"entries"`
	}
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		s.t.Fatalf("entry show -output json: %v\n%s", err, out)
	}
	m := map[string]entryJSONItem{}
	for _, e := range list.Entries {
		if !strings.HasPrefix(e.ID, prefix) {
			continue
		}
		it := entryJSONItem{EntryID: e.ID, SpiffeID: "spiffe://" + e.SpiffeID.TrustDomain + e.SpiffeID.Path, ParentID: "spiffe://" + e.ParentID.TrustDomain + e.ParentID.Path}
		it.Selectors = e.Selectors
		m[e.ID] = it
	}
	return m
}

// syncEntries loads a merged spiffe-ids.json the way a platform reconciles
// a team folder: create what is new, update what changed (by entry_id),
// then delete the team's entries the file no longer has — updates before
// deletions, so an alias ID never goes missing in between.
func (s *rotServer) syncEntries(file, namespace string) (created, updated, deleted int) {
	s.t.Helper()
	var want entryJSONFile
	if err := json.Unmarshal([]byte(file), &want); err != nil {
		s.t.Fatalf("spiffe-ids.json: %v", err)
	}
	have := s.serverEntries("spirepod." + namespace + ".")
	var toCreate, toUpdate entryJSONFile
	keep := map[string]bool{}
	for _, e := range want.Entries {
		keep[e.EntryID] = true
		h, ok := have[e.EntryID]
		switch {
		case !ok:
			toCreate.Entries = append(toCreate.Entries, e)
		case h.key() != e.key():
			toUpdate.Entries = append(toUpdate.Entries, e)
		}
	}
	for _, step := range []struct {
		verb string
		f    entryJSONFile
	}{{"create", toCreate}, {"update", toUpdate}} {
		if len(step.f.Entries) == 0 {
			continue
		}
		data, _ := json.Marshal(step.f)
		path := filepath.Join(s.dir, "entries-"+step.verb+".json")
		writeFile(s.t, path, string(data), 0o644)
		if out, err := s.Run("entry", step.verb, "-data", path); err != nil {
			s.t.Fatalf("entry %s -data: %v\n%s", step.verb, err, out)
		}
	}
	for id := range have {
		if keep[id] {
			continue
		}
		if out, err := s.Run("entry", "delete", "-entryID", id); err != nil {
			s.t.Fatalf("entry delete %s: %v\n%s", id, err, out)
		}
		deleted++
	}
	return len(toCreate.Entries), len(toUpdate.Entries), deleted
}

// --- the pods ---

type rotPod struct {
	name, root, certDir, socket string
	logs                        map[string]string
	gen                         *exec.Cmd
	genDone                     chan struct{}
	agent                       *testbed.SpireAgent
	pumpStop                    chan struct{}
	pumpDone                    chan struct{}
}

// startPod runs a pod's gen-cert sidecar and spire-agent, and makes kwok
// serve the pod's curl and spire-agent logs.
func (r *rotBed) startPod(name string) *rotPod {
	t := r.t
	pd := &rotPod{name: name, root: filepath.Join(r.root, name)}
	pd.certDir = filepath.Join(pd.root, "run", "spire", "agent-certs")
	if err := os.MkdirAll(pd.certDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if r.pods[name] == nil {
		logs, err := r.cluster.PodLogs(r.ctx, r.root, r.p.Namespace, name, "curl", rotate.AgentContainer)
		if err != nil {
			t.Fatal(err)
		}
		pd.logs = logs
	} else {
		pd.logs = r.pods[name].logs
	}
	r.startGenCert(pd)
	waitFile(t, filepath.Join(pd.certDir, "agent.crt.pem"), time.Minute)
	pd.agent = r.startAgent(name, r.agentConf, pd.root, &testbed.SpireServer{Port: r.srv.port}, mustRead(t, r.upCert))
	pd.socket = pd.agent.Socket
	r.agentLogs[name] = append(r.agentLogs[name], pd.agent.Proc.LogPath)
	pd.pumpStop, pd.pumpDone = make(chan struct{}), make(chan struct{})
	go pumpLog(pd.agent.Proc.LogPath, pd.logs[rotate.AgentContainer], pd.pumpStop, pd.pumpDone)
	return pd
}

func (r *rotBed) startGenCert(pd *rotPod) {
	t := r.t
	cm, err := r.cluster.Client.CoreV1().ConfigMaps(r.p.Namespace).Get(r.ctx, "init-gen-cert", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	kc, err := r.cluster.ServiceAccountKubeconfig(r.ctx, pd.root, r.p.Namespace, r.p.ServiceAccount)
	if err != nil {
		t.Fatal(err)
	}
	script := filepath.Join(pd.root, "gen_cert.sh")
	writeFile(t, script, cm.Data["gen_cert.sh"], 0o755)
	logf, err := os.OpenFile(filepath.Join(pd.root, "gen-cert.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	gen := exec.Command("/bin/sh", script)
	gen.Env = append(os.Environ(), "POD_NAME="+pd.name, "POD_NAMESPACE="+r.p.Namespace, "CERT_DIR="+pd.certDir,
		"KUBECTL="+r.bins.Kubectl()+" --kubeconfig "+kc, "REWATCH_SECONDS=1")
	gen.Stdout, gen.Stderr = logf, logf
	gen.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := gen.Start(); err != nil {
		t.Fatal(err)
	}
	pd.gen, pd.genDone = gen, make(chan struct{})
	go func() { _ = gen.Wait(); logf.Close(); close(pd.genDone) }()
	t.Cleanup(func() { stopGen(pd) })
}

// stopGen ends the sidecar's process group (by its PID).
func stopGen(pd *rotPod) {
	select {
	case <-pd.genDone:
		return
	default:
	}
	_ = syscall.Kill(-pd.gen.Process.Pid, syscall.SIGKILL)
	<-pd.genDone
}

// stopPod is the pod going away: its sidecar and agent end, the pump drains.
func (r *rotBed) stopPod(pd *rotPod) {
	stopGen(pd)
	pd.agent.Stop()
	close(pd.pumpStop)
	<-pd.pumpDone
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// pumpLog copies the lines the agent writes to its log into the CRI log
// file kwok serves for the pod's spire-agent container: what the container
// runtime does with a container's stderr. It reads every 100 ms (a copy,
// not a synchronisation) until stop, then copies what is left.
func pumpLog(src, dst string, stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	var off int64
	var partial string
	copyNew := func() {
		f, err := os.Open(src)
		if err != nil {
			return
		}
		defer f.Close()
		if _, err := f.Seek(off, io.SeekStart); err != nil {
			return
		}
		br := bufio.NewReader(f)
		var lines []string
		for {
			s, err := br.ReadString('\n')
			off += int64(len(s))
			if err != nil {
				partial += s
				break
			}
			lines = append(lines, strings.TrimRight(partial+s, "\n"))
			partial = ""
		}
		if len(lines) > 0 {
			_ = testbed.AppendLog(dst, time.Now(), lines...)
		}
	}
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-stop:
			copyNew()
			return
		case <-t.C:
			copyNew()
		}
	}
}

// --- the fetch loop ---

type fetchRec struct {
	At   time.Time
	Pod  string
	OK   bool
	Info string
	// WrongID: the fetch answered, with an SVID of another ID (never excused).
	WrongID bool
}

// fetchLoop fetches every pod's SVID through its agent every 500 ms, as
// the workload (the Envoy uid), for as long as it runs.
type fetchLoop struct {
	mu   sync.Mutex
	recs []fetchRec
	stop chan struct{}
	done chan struct{}
}

func (r *rotBed) startFetchLoop() *fetchLoop {
	fl := &fetchLoop{stop: make(chan struct{}), done: make(chan struct{})}
	want := r.p.WorkloadSpiffeID()
	dirs, socks := map[string]string{}, map[string]string{}
	var names []string
	for name, pd := range r.pods {
		names = append(names, name)
		socks[name] = pd.socket // the same path for the pod's next incarnation
		d := filepath.Join(pd.root, "loop-svid")
		if err := os.MkdirAll(d, 0o755); err != nil {
			r.t.Fatal(err)
		}
		if err := os.Chown(d, envoyUID, envoyUID); err != nil {
			r.t.Fatal(err)
		}
		dirs[name] = d
	}
	sort.Strings(names)
	go func() {
		defer close(fl.done)
		tick := time.NewTicker(500 * time.Millisecond) // the loop's pace, not a synchronisation
		defer tick.Stop()
		for {
			for _, name := range names {
				sock := socks[name]
				_ = os.Remove(filepath.Join(dirs[name], "svid.0.pem"))
				out, err := r.fetchOnce(sock, dirs[name])
				rec := fetchRec{At: time.Now(), Pod: name, OK: err == nil}
				if err == nil {
					if uri := uriOf(filepath.Join(dirs[name], "svid.0.pem")); uri != want {
						rec.OK, rec.Info, rec.WrongID = false, "SVID "+uri, true
					}
				} else {
					rec.Info = strings.TrimSpace(out)
				}
				fl.mu.Lock()
				fl.recs = append(fl.recs, rec)
				fl.mu.Unlock()
			}
			select {
			case <-fl.stop:
				return
			case <-tick.C:
			}
		}
	}()
	return fl
}

func (fl *fetchLoop) Stop() []fetchRec {
	select {
	case <-fl.stop:
	default:
		close(fl.stop)
	}
	<-fl.done
	fl.mu.Lock()
	defer fl.mu.Unlock()
	return append([]fetchRec(nil), fl.recs...)
}

func uriOf(file string) string {
	c, err := os.ReadFile(file)
	if err != nil {
		return "(none)"
	}
	certs, err := pki.ParseCertificates(c)
	if err != nil || len(certs) == 0 || len(certs[0].URIs) == 0 {
		return "(unparsable)"
	}
	return certs[0].URIs[0].String()
}

// --- rotate runs ---

// rotReport is the -o json of pki rotate the tests read.
type rotReport struct {
	State        string                 `json:"state"`
	Phase        int                    `json:"phase"`
	Phases       int                    `json:"phases"`
	Next         string                 `json:"next"`
	Waiting      string                 `json:"waiting"`
	Old          rotate.CA              `json:"old"`
	New          rotate.CA              `json:"new"`
	Did          []string               `json:"did"`
	PRs          []rotate.PR            `json:"pullRequests"`
	Pods         map[string]*rotate.Pod `json:"pods"`
	LoseIdentity []string               `json:"loseIdentity"`
	Durations    map[string]string      `json:"durations"`
}

// rotate runs `spirepod pki rotate ARGS -o json` and reads its report; the
// exit code must be want.
func (r *rotBed) rotate(want int, args ...string) (*rotReport, time.Duration) {
	r.t.Helper()
	full := append([]string{"pki", "rotate", "-o", "json", "--server", fmt.Sprintf("127.0.0.1:%d", r.srv.port), "--timeout", "5m"}, args...)
	full = append(full, r.kube...)
	start := time.Now()
	out, errOut, code := r.exec(r.dir, full...)
	took := time.Since(start)
	if code != want {
		r.t.Fatalf("spirepod %s: exit %d, want %d\nstderr:\n%s\n%s\nstdout:\n%s", strings.Join(full, " "), code, want, errOut, r.evidence(), out)
	}
	var rep rotReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		r.t.Fatalf("spirepod %s -o json: %v\n%s\n%s", strings.Join(full, " "), err, out, errOut)
	}
	r.t.Logf("pki rotate %s: exit %d in %v: phase %d/%d %s, next %q, waiting %q", strings.Join(args, " "), code, took.Round(time.Millisecond), rep.Phase, rep.Phases, rep.State, rep.Next, rep.Waiting)
	return &rep, took
}

// evidence is what a failed rotate run is judged by: per pod, the leaf its
// Secret holds, the certificate gen-cert last wrote, gen-cert's log and
// the agent's attestation and error lines (the tails).
func (r *rotBed) evidence() string {
	var b strings.Builder
	for _, name := range r.p.PodNames() {
		pd := r.pods[name]
		fmt.Fprintf(&b, "--- pod %s\n", name)
		if sec, err := r.cluster.Client.CoreV1().Secrets(r.p.Namespace).Get(r.ctx, r.p.CertificateName(name), metav1.GetOptions{}); err != nil {
			fmt.Fprintf(&b, "Secret: %v\n", err)
		} else if certs, err := pki.ParseCertificates(sec.Data["tls.crt"]); err != nil || len(certs) == 0 {
			fmt.Fprintf(&b, "Secret tls.crt: %v\n", err)
		} else {
			fmt.Fprintf(&b, "Secret leaf sha1 %s notBefore %s (resourceVersion %s)\n", pki.SHA1Fingerprint(certs[0]), certs[0].NotBefore.Format(time.RFC3339), sec.ResourceVersion)
		}
		if crt, err := r.cluster.Dynamic.Resource(certmanager.CertificateGVR).Namespace(r.p.Namespace).Get(r.ctx, r.p.CertificateName(name), metav1.GetOptions{}); err != nil {
			fmt.Fprintf(&b, "Certificate: %v\n", err)
		} else {
			st, _ := json.Marshal(crt.Object["status"])
			fmt.Fprintf(&b, "Certificate status: %s\n", st)
		}
		if pd == nil {
			continue
		}
		if c, err := os.ReadFile(filepath.Join(pd.certDir, "agent.crt.pem")); err != nil {
			fmt.Fprintf(&b, "written leaf: %v\n", err)
		} else if certs, err := pki.ParseCertificates(c); err == nil && len(certs) > 0 {
			fmt.Fprintf(&b, "written leaf sha1 %s\n", pki.SHA1Fingerprint(certs[0]))
		}
		if g, err := os.ReadFile(filepath.Join(pd.root, "gen-cert.log")); err == nil {
			fmt.Fprintf(&b, "gen-cert.log (tail):\n%s\n", tailLines(string(g), 15))
		}
		for _, path := range r.agentLogs[name] {
			if a, err := os.ReadFile(path); err == nil {
				fmt.Fprintf(&b, "%s (events; tail):\n%s\n", filepath.Base(path), tailLines(strings.Join(agentEvents(string(a)), "\n"), 20))
			}
		}
	}
	return b.String()
}

// agentEvents are the lines of an agent log that tell what it did:
// attestations, SVID rotations, entry changes, warnings and errors.
func agentEvents(log string) []string {
	var ev []string
	for _, line := range strings.Split(log, "\n") {
		if strings.Contains(line, "reattest") || strings.Contains(line, "Entry ") || strings.Contains(line, "attestation") ||
			strings.Contains(line, "rotat") || strings.Contains(line, "level=error") || strings.Contains(line, "level=warn") {
			ev = append(ev, line)
		}
	}
	return ev
}

func tailLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// mergeRotationPRs merges the report's pull requests of the given steps.
func (r *rotBed) mergeRotationPRs(rep *rotReport, steps ...string) {
	r.t.Helper()
	for _, step := range steps {
		found := false
		for _, p := range rep.PRs {
			if p.Step == step {
				found = true
				if _, err := r.gh.Merge(cityRepo, p.Number); err != nil {
					r.t.Fatalf("merge %s (#%d): %v", step, p.Number, err)
				}
			}
		}
		if !found {
			r.t.Fatalf("the report has no pull request of step %s: %+v", step, rep.PRs)
		}
	}
}

// watchPodRestarts plays the kubelet for pods the StatefulSet recreates:
// when a pod of the team comes back with a new UID, its old sidecar and
// agent are gone (the old pod's), and the new pod's start: a fresh
// certificate directory, gen-cert, the agent; once the agent serves the
// workload's SVID, the curl container logs the echo line `spirepod verify`
// waits for.
func (r *rotBed) watchPodRestarts() (stop func() map[string]int) {
	ctx, cancel := context.WithCancel(r.ctx)
	uids := map[string]string{}
	for name := range r.pods {
		po, err := r.cluster.Client.CoreV1().Pods(r.p.Namespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			r.t.Fatal(err)
		}
		uids[name] = string(po.UID)
	}
	restarts := map[string]int{}
	var mu sync.Mutex
	done := make(chan struct{})
	w, err := r.cluster.Client.CoreV1().Pods(r.p.Namespace).Watch(ctx, metav1.ListOptions{})
	if err != nil {
		r.t.Fatal(err)
	}
	go func() {
		defer close(done)
		for ev := range w.ResultChan() {
			po, ok := ev.Object.(*corev1.Pod)
			if !ok || r.pods[po.Name] == nil {
				continue
			}
			if ev.Type == watch.Deleted || po.DeletionTimestamp != nil {
				continue
			}
			if string(po.UID) == uids[po.Name] || po.Status.Phase != corev1.PodRunning {
				continue
			}
			uids[po.Name] = string(po.UID)
			r.t.Logf("restart watch: %s back with uid %s: starting its sidecar and agent", po.Name, po.UID)
			old := r.pods[po.Name]
			r.stopPod(old)
			// The new pod's emptyDirs: no certificate, no agent data.
			_ = os.RemoveAll(old.certDir)
			_ = os.RemoveAll(filepath.Join(old.root, "run", "spire", "data"))
			np := r.startPod(po.Name)
			r.pods[po.Name] = np
			d := filepath.Join(np.root, fmt.Sprintf("restart-svid-%s", po.UID))
			r.fetchSVID(np.socket, d, syncBound)
			r.logEcho(np)
			r.t.Logf("restart watch: %s serves the SVID; curl line logged", po.Name)
			mu.Lock()
			restarts[po.Name]++
			mu.Unlock()
		}
	}()
	var once sync.Once
	stop = func() map[string]int {
		once.Do(func() {
			cancel()
			w.Stop()
			<-done
		})
		mu.Lock()
		defer mu.Unlock()
		return restarts
	}
	// A failing test stops the watch too, before its cluster goes.
	r.t.Cleanup(func() { stop() })
	return stop
}
