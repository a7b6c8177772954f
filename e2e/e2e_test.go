// Package e2e proves the whole onboarding on real components: the real
// spirepod binary drives init → pki gen → apply → pr trust-ca / spiffe-id →
// verify against a real kube-apiserver, cert-manager, kwok and SPIRE, with a
// stateful fake GitHub standing in for the city repository.
//
// Where a pod and this machine differ, the test maps rather than edits: the
// agent config's /run/spire/... mounts live under a temp root, the server is
// 127.0.0.1:<port>, the health listener gets a free port, and the k8s
// workload attestor is told (token_path) where the pod's service-account
// token mount lives; a real token from the TokenRequest API is written there.
// Envoy is not available: its bootstrap is checked against Envoy's API
// schema, and the SVID Envoy would get over SDS is fetched from the real
// agent under Envoy's uid and used by real curl.
package e2e_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	"github.com/spirepod/spirepod/internal/fakes/githubfake"
	"github.com/spirepod/spirepod/internal/pki"
	"github.com/spirepod/spirepod/internal/project"
	"github.com/spirepod/spirepod/internal/testbed"
)

const (
	cityRepo  = "wp-wcm/city"
	ghToken   = "e2e-token"
	envoyUID  = 101 // registration.envoyUID in spirepod.yaml; the template's Envoy runs as 101
	replicas  = 2
	syncBound = 30 * time.Second // bound on the wait for an entry to reach an agent
	// absenceWindow is how long the negative chain watches for an SVID that
	// must never come: longer than two agent sync periods (5 s each).
	absenceWindow = 12 * time.Second
	// defaultAgentPathTemplate is SPIRE's x509pop default: agent IDs from the leaf's SHA-1.
	defaultAgentPathTemplate = "/{{ .PluginName }}/{{ .Fingerprint }}"
)

var (
	gvrClusterIssuer = schema.GroupVersionResource{Group: "cert-manager.io", Version: "v1", Resource: "clusterissuers"}
)

// chain holds what the steps share.
type chain struct {
	t       *testing.T
	ctx     context.Context
	bins    testbed.Bins
	cluster *testbed.Cluster
	gh      *githubfake.Server
	cli     string // the spirepod binary
	home    string
	root    string // short temp root: unix socket paths stay under 108 bytes
	// agentBin is spire-agent reachable by an unprivileged uid (the cache may be under /root).
	agentBin string
	// saToken is a real token of the pods' service account, for the agent's k8s workload attestor.
	saToken string
	// env is added to the environment of every spirepod run (tests run in
	// parallel, so none changes the test process's environment).
	env []string
}

// newChain gathers what the end-to-end tests share: the spirepod binary, a
// short temp root (unix socket paths stay under 108 bytes; 0755 so fetches
// as the Envoy uid reach the agent sockets), spire-agent reachable by that
// uid, the package's test bed (see bed) and a fake GitHub of the test's own
// with an empty city repo. ctx ends after timeout.
func newChain(t *testing.T, tmpPrefix string, timeout time.Duration, sets ...func(testbed.Bins) []string) *chain {
	t.Helper()
	b := testbed.Require(t, sets...)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	t.Cleanup(cancel)
	c := &chain{t: t, ctx: ctx, bins: b, home: t.TempDir()}
	c.cli = buildCLI(t)
	root, err := os.MkdirTemp("", tmpPrefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	if err := os.Chmod(root, 0o755); err != nil {
		t.Fatal(err)
	}
	c.root = root
	c.agentBin = reachableBinary(t, b.SpireAgent(), filepath.Join(root, "bin"))
	c.cluster = bed.Get(t)
	c.gh = githubfake.New("alice", ghToken)
	t.Cleanup(c.gh.Close)
	if _, err := c.gh.AddRepo(cityRepo, true, "main", map[string]string{"README.md": "city\n"}); err != nil {
		t.Fatal(err)
	}
	return c
}

// timings records the wall time of each step.
type timings struct {
	names []string
	d     map[string]time.Duration
}

func (tm *timings) add(name string, d time.Duration) {
	if tm.d == nil {
		tm.d = map[string]time.Duration{}
	}
	if _, ok := tm.d[name]; !ok {
		tm.names = append(tm.names, name)
	}
	tm.d[name] += d
}

func (tm *timings) String() string {
	var parts []string
	for _, n := range tm.names {
		parts = append(parts, fmt.Sprintf("%s=%v", n, tm.d[n].Round(time.Millisecond)))
	}
	return strings.Join(parts, " ")
}

// TestE2E is issue 7's chain, steps 1–9, in order.
func TestE2E(t *testing.T) {
	t.Parallel()
	b := testbed.Require(t, testbed.Bins.KubeSet, testbed.Bins.SpireSet)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c := &chain{t: t, ctx: ctx, bins: b, home: t.TempDir()}

	// Set-up, timed apart from the chain: the CLI binary, the control plane,
	// the fake GitHub.
	setup := time.Now()
	c.cli = buildCLI(t)
	tBuild := time.Since(setup)
	root, err := os.MkdirTemp("", "spe2e-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	// The fetch runs as the Envoy uid: it must reach the agent sockets under root.
	if err := os.Chmod(root, 0o755); err != nil {
		t.Fatal(err)
	}
	c.root = root
	c.agentBin = reachableBinary(t, b.SpireAgent(), filepath.Join(root, "bin"))
	t0 := time.Now()
	c.cluster = bed.Get(t) // the package's bed: started here when this test is the first
	tCluster := time.Since(t0)
	c.gh = githubfake.New("alice", ghToken)
	t.Cleanup(c.gh.Close)
	if _, err := c.gh.AddRepo(cityRepo, true, "main", map[string]string{"README.md": "city\n"}); err != nil {
		t.Fatal(err)
	}

	// The second team of the negative chain joined the city earlier: its CA is
	// already on the shared trust list when the first team onboards.
	t0 = time.Now()
	beta := c.secondTeam()
	tBetaPrep := time.Since(t0)

	var tm timings
	step := func(name string, f func()) {
		t.Helper()
		t0 := time.Now()
		f()
		tm.add(name, time.Since(t0))
		if t.Failed() {
			t.FailNow()
		}
	}

	team, ns := "t"+randHex(t, 4), "e2e-"+randHex(t, 4)
	dir := filepath.Join(root, "alpha")
	var p *project.Project
	var teamCA *x509Cert

	upCert, upKey := c.upstreamCA()
	step("1-init+pki", func() {
		c.run(root, "init", "--team", team, "--namespace", ns, "--replicas", fmt.Sprint(replicas), dir)
		c.run(dir, "pki", "gen")
		// Guide step 3: the SPIRE server's CA, handed out by its operators
		// (here the server's upstream root, so it is known before it starts).
		c.run(dir, "bundle", "set", upCert)
		p = loadProject(t, dir)
		if p.Registration.EnvoyUID != envoyUID || p.Replicas != replicas || p.Namespace != ns {
			t.Fatalf("spirepod.yaml: envoyUID %d replicas %d namespace %q", p.Registration.EnvoyUID, p.Replicas, p.Namespace)
		}
		teamCA = readCert(t, p.Path(p.Paths.CACert))
	})
	wantID := p.WorkloadSpiffeID()
	if wantID != fmt.Sprintf("spiffe://%s/ns/%s/sa/%s", p.TrustDomain, ns, p.ServiceAccount) {
		t.Fatalf("workload SPIFFE ID %q", wantID)
	}

	var agentConf string
	step("2-config-checks", func() {
		agentConf = configMapKey(t, filepath.Join(dir, "spire-agent-configmap.yaml"), "agent.conf")
		// Before the server exists: a placeholder port and the path the bundle
		// ConfigMap will be mounted at. Step 6 validates the exact files agents run with.
		mapped := mapAgentConf(t, agentConf, filepath.Join(root, "validate"), 8081, 8088)
		c.agentValidate(mapped, filepath.Join(root, "validate"))
		checkEnvoyBootstrap(t, configMapKey(t, filepath.Join(dir, "envoy-configmap.yaml"), "envoy.yaml"), envoyWant{
			SecretName:     wantID,
			ValidationName: "spiffe://" + p.TrustDomain,
			SDSPipe:        hclString(t, agentConf, "socket_path"),
		})
	})

	pods := p.PodNames()
	kubeFlags := []string{"--kubeconfig", c.cluster.Kubeconfig, "--context", c.cluster.Context}
	logFiles := map[string]string{}
	step("3-apply", func() {
		c.run(dir, append([]string{"apply", "--create-namespace", "--timeout", "2m"}, kubeFlags...)...)
		c.checkIssuerReady(p, teamCA)
		c.checkPodsRunning(ns, pods)
		// kwok serves each pod's curl container log from a file step 7 writes.
		for _, pod := range pods {
			files, err := c.cluster.PodLogs(c.ctx, root, ns, pod, "curl")
			if err != nil {
				t.Fatal(err)
			}
			logFiles[pod] = files["curl"]
		}
	})

	podRoot := func(pod string) string { return filepath.Join(root, pod) }
	step("4-gen-cert", func() {
		// The script and template exactly as the pods mount them: the ConfigMap in the cluster.
		cm, err := c.cluster.Client.CoreV1().ConfigMaps(ns).Get(c.ctx, "init-gen-cert", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		certDir := statefulSetEnv(t, c, ns, p.StatefulSet, "gen-cert", "CERT_DIR")
		for _, pod := range pods {
			c.genCert(p, pod, ns, cm, filepath.Join(podRoot(pod), certDir), teamCA)
		}
	})

	var srv *testbed.SpireServer
	var entriesFile, trustListFile string
	step("5-prs+server", func() {
		caURL := c.run(dir, "pr", "trust-ca")
		idURL := c.run(dir, "pr", "spiffe-id", "--format", "entry-json")
		for _, u := range []string{caURL, idURL} {
			if _, err := c.gh.Merge(cityRepo, prNumber(t, u)); err != nil {
				t.Fatalf("merge %s: %v", u, err)
			}
		}
		files, err := c.gh.Files(cityRepo, "main")
		if err != nil {
			t.Fatal(err)
		}
		trustList, ok := files[p.City.TrustList.Path]
		if !ok {
			t.Fatalf("merged main has no %s", p.City.TrustList.Path)
		}
		if fps := fingerprints(t, []byte(trustList)); len(fps) != 2 || !fps[pki.SHA1Fingerprint(teamCA.Cert)] || !fps[pki.SHA1Fingerprint(beta.ca.Cert)] {
			t.Fatalf("merged trust list holds %v, want both teams' CAs", fps)
		}
		entries, ok := files[filepath.ToSlash(filepath.Join(strings.NewReplacer("{namespace}", ns, "{team}", team).Replace(p.City.TeamPath), "spiffe-ids.json"))]
		if !ok {
			t.Fatalf("merged main has no spiffe-ids.json: %v", keys(files))
		}
		sdir := filepath.Join(root, "server")
		if err := os.MkdirAll(sdir, 0o700); err != nil {
			t.Fatal(err)
		}
		trustListFile, entriesFile = filepath.Join(sdir, "x509pop-trust-list.pem"), filepath.Join(sdir, "entries.json")
		writeFile(t, trustListFile, trustList, 0o644)
		writeFile(t, entriesFile, entries, 0o644)
		// SPIRE's default agent_path_template (the leaf's SHA-1), not the test
		// bed's CN template: with CN-derived agent IDs another team's leaf
		// with the same CN takes over this agent's ID and, for up to one
		// server entry-cache reload (~5 s), inherits its node selectors, so it
		// receives this team's SVIDs despite the CA-fingerprint pin (seen here
		// with SPIRE 1.13.3). The fingerprint pin only protects when agent IDs
		// are unique per certificate.
		srv, err = testbed.StartSpireServer(c.ctx, c.bins, sdir, testbed.SpireServerConfig{TrustDomain: p.TrustDomain, CABundlePath: trustListFile,
			AgentPathTemplate: defaultAgentPathTemplate, UpstreamCACert: upCert, UpstreamCAKey: upKey})
		if err != nil {
			t.Fatalf("spire-server: %v", err)
		}
		t.Cleanup(srv.Stop)
		out, err := srv.Run(c.ctx, "entry", "create", "-data", entriesFile)
		if err != nil {
			t.Fatalf("entry create -data: %v\n%s", err, out)
		}
		if n := strings.Count(out, "Entry ID"); n != 2*replicas {
			t.Fatalf("entry create made %d entries, want %d:\n%s", n, 2*replicas, out)
		}
		// Guide step 3: the server's CA into the bundle ConfigMap, applied again.
		c.run(dir, "bundle", "set", srv.BundlePath)
		c.run(dir, append([]string{"apply", "--timeout", "2m"}, kubeFlags...)...)
	})

	agents := map[string]*testbed.SpireAgent{}
	step("6-agents", func() {
		bundleCM, err := c.cluster.Client.CoreV1().ConfigMaps(ns).Get(c.ctx, "spire-bundle", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		tok, err := c.cluster.Client.CoreV1().ServiceAccounts(ns).CreateToken(c.ctx, p.ServiceAccount,
			&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](3600)}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("token for service account %s: %v", p.ServiceAccount, err)
		}
		c.saToken = tok.Status.Token
		for _, pod := range pods {
			agents[pod] = c.startAgent(pod, agentConf, podRoot(pod), srv, bundleCM.Data["bundle.crt"])
		}
		out, err := srv.Run(c.ctx, "agent", "list")
		if err != nil {
			t.Fatalf("agent list: %v\n%s", err, out)
		}
		for _, pod := range pods {
			agentID := x509popAgentID(t, p.TrustDomain, filepath.Join(podRoot(pod), hclString(t, agentConf, "certificate_path")))
			if !strings.Contains(out, agentID) {
				t.Fatalf("agent list lacks %s:\n%s", agentID, out)
			}
			c.checkAliasResolves(p, srv, pod, agentID)
		}
	})

	var syncWait time.Duration
	svids := map[string]string{}
	curlOut := map[string]string{}
	step("7-workload", func() {
		var firstSync time.Duration
		for _, pod := range pods {
			w, dir := c.fetchSVID(agents[pod].Socket, filepath.Join(root, pod+"-svid"), syncBound)
			if w > firstSync {
				firstSync = w
			}
			svids[pod] = dir
			if got := svidURI(t, filepath.Join(dir, "svid.0.pem")); got != wantID {
				t.Fatalf("%s: SVID URI SAN %q, want %q", pod, got, wantID)
			}
		}
		syncWait = firstSync
		echo := c.startEcho(srv, p.TrustDomain)
		for _, pod := range pods {
			out := c.curl(echo, svids[pod])
			if !strings.Contains(out, "URI="+wantID+`"`) {
				t.Fatalf("%s: curl output lacks URI=%s:\n%s", pod, wantID, out)
			}
			appendCRILog(t, logFiles[pod], out) // before verify starts: it must ignore this one
			curlOut[pod] = out
		}
	})
	tm.d["7-workload"] -= syncWait

	step("8-verify+status", func() {
		c.verifyAndStatus(dir, kubeFlags, pods, wantID, logFiles, curlOut)
	})

	var chainTotal time.Duration
	for _, n := range tm.names {
		chainTotal += tm.d[n]
	}
	t.Logf("E2E TIMINGS: steps 1-8 %v excluding entry sync | entry sync wait %v | set-up: cli build %v, cluster %v, second team %v | %s",
		chainTotal.Round(time.Millisecond), syncWait.Round(time.Millisecond), tBuild.Round(time.Millisecond),
		tCluster.Round(time.Millisecond), tBetaPrep.Round(time.Millisecond), tm.String())

	t.Run("9-negative-other-team-ca", func(t *testing.T) {
		c := c.with(t)
		c.negativeOtherTeam(beta, p, pods[0], agentConf, srv, svids[pods[0]])
	})
	t.Run("9-negative-ca-without-keycertsign", func(t *testing.T) {
		c := c.with(t)
		c.negativeNoKeyCertSign(p, teamCA)
	})
}

func (c *chain) with(t *testing.T) *chain {
	cc := *c
	cc.t = t
	return &cc
}

// run runs the spirepod binary in dir and returns its stdout, trimmed; a
// non-zero exit fails the test.
func (c *chain) run(dir string, args ...string) string {
	c.t.Helper()
	out, errOut, code := c.exec(dir, args...)
	if code != 0 {
		c.t.Fatalf("spirepod %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, out, errOut)
	}
	return strings.TrimSpace(out)
}

// execWatch is exec that calls onLine with each stderr line until it
// returns true (the test's stimulus, synchronised on the CLI's progress).
func (c *chain) execWatch(dir string, onLine func(string) bool, args ...string) (stdout, stderr string, code int) {
	cmd := exec.CommandContext(c.ctx, c.cli, args...)
	cmd.Dir = dir
	cmd.Env = append(cliBaseEnv(),
		"HOME="+c.home, "XDG_CONFIG_HOME="+filepath.Join(c.home, ".config"), "NO_COLOR=1",
		"SPIREPOD_GITHUB_API_URL="+c.gh.URL, "GH_TOKEN="+ghToken)
	cmd.Env = append(cmd.Env, c.env...)
	var o, e bytes.Buffer
	cmd.Stdout = &o
	pipe, err := cmd.StderrPipe()
	if err != nil {
		c.t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		c.t.Fatalf("spirepod %s: %v", strings.Join(args, " "), err)
	}
	sc := bufio.NewScanner(pipe)
	done := false
	for sc.Scan() {
		e.WriteString(sc.Text() + "\n")
		if !done {
			done = onLine(sc.Text())
		}
	}
	err = cmd.Wait()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		code = ee.ExitCode()
	default:
		c.t.Fatalf("spirepod %s: %v", strings.Join(args, " "), err)
	}
	return o.String(), e.String(), code
}

func (c *chain) exec(dir string, args ...string) (stdout, stderr string, code int) {
	cmd := exec.CommandContext(c.ctx, c.cli, args...)
	cmd.Dir = dir
	cmd.Env = append(cliBaseEnv(),
		"HOME="+c.home, "XDG_CONFIG_HOME="+filepath.Join(c.home, ".config"), "NO_COLOR=1",
		"SPIREPOD_GITHUB_API_URL="+c.gh.URL, "GH_TOKEN="+ghToken)
	cmd.Env = append(cmd.Env, c.env...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		code = ee.ExitCode()
	default:
		c.t.Fatalf("spirepod %s: %v", strings.Join(args, " "), err)
	}
	return o.String(), e.String(), code
}

// cliBaseEnv is this process's environment without what would point the
// spirepod under test at something other than the test's own files: the
// user's config file (SPIREPOD_CONFIG, which the standing bed's env sets)
// and kubeconfig (tests pass --kubeconfig).
func cliBaseEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "SPIREPOD_CONFIG=") || strings.HasPrefix(kv, "KUBECONFIG=") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

// upstreamCA makes the SPIRE server's upstream root (made at run time, as
// every test key is): the bundle teams put in their scaffold before applying.
func (c *chain) upstreamCA() (cert, key string) {
	c.t.Helper()
	dir := filepath.Join(c.root, "upstream")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		c.t.Fatal(err)
	}
	cert, key = filepath.Join(dir, "upstream.crt"), filepath.Join(dir, "upstream.key")
	if _, err := os.Stat(cert); err == nil {
		return cert, key
	}
	cert, key, err := testbed.WriteUpstreamCA(dir, "upstream")
	if err != nil {
		c.t.Fatal(err)
	}
	return cert, key
}

// reachableBinary gives bin a path an unprivileged uid can execute: a hard
// link (or copy) under dir, since the test-bin cache may sit under /root (0700).
func reachableBinary(t *testing.T, bin, dir string) string {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(dir, filepath.Base(bin))
	if err := os.Link(bin, dst); err != nil {
		src, err := os.Open(bin)
		if err != nil {
			t.Fatal(err)
		}
		defer src.Close()
		f, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(f, src); err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

func randHex(t *testing.T, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func loadProject(t *testing.T, dir string) *project.Project {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, project.FileName))
	if err != nil {
		t.Fatal(err)
	}
	var p project.Project
	if err := yaml.Unmarshal(data, &p); err != nil {
		t.Fatalf("spirepod.yaml: %v", err)
	}
	p.Dir = dir
	return &p
}

// configMapKey reads one data key of a ConfigMap manifest of the scaffold.
func configMapKey(t *testing.T, file, key string) string {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var cm corev1.ConfigMap
	if err := yaml.Unmarshal(data, &cm); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	v, ok := cm.Data[key]
	if !ok {
		t.Fatalf("%s has no data key %q", file, key)
	}
	return v
}

func writeFile(t *testing.T, path, content string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
}

func keys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

var prURL = regexp.MustCompile(`/pull/(\d+)$`)

func prNumber(t *testing.T, url string) int {
	t.Helper()
	m := prURL.FindStringSubmatch(strings.TrimSpace(url))
	if m == nil {
		t.Fatalf("no pull request URL in %q", url)
	}
	var n int
	fmt.Sscan(m[1], &n)
	return n
}

// appendCRILog writes text, line by line, as CRI log lines (what kwok serves).
func appendCRILog(t *testing.T, file, text string) {
	t.Helper()
	if err := testbed.AppendLog(file, time.Now(), strings.Split(strings.TrimRight(text, "\n"), "\n")...); err != nil {
		t.Fatal(err)
	}
}

// uidCred runs a command as the Envoy uid.
func uidCred() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: envoyUID, Gid: envoyUID}}
}
