package e2e_test

import (
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/spirepod/spirepod/internal/pki"
	"github.com/spirepod/spirepod/internal/project"
	"github.com/spirepod/spirepod/internal/testbed"
)

// x509Cert is a parsed certificate with its PEM.
type x509Cert struct {
	Cert *x509.Certificate
	PEM  []byte
}

func readCert(t interface {
	Helper()
	Fatalf(string, ...any)
}, file string) *x509Cert {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("%v", err)
	}
	certs, err := pki.ParseCertificates(data)
	if err != nil || len(certs) == 0 {
		t.Fatalf("%s: no certificate: %v", file, err)
	}
	return &x509Cert{Cert: certs[0], PEM: data}
}

// fingerprints returns the SHA-1 fingerprints of every certificate in a PEM bundle.
func fingerprints(t interface{ Fatalf(string, ...any) }, bundle []byte) map[string]bool {
	out := map[string]bool{}
	for {
		var blk *pem.Block
		blk, bundle = pem.Decode(bundle)
		if blk == nil {
			return out
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			t.Fatalf("trust list: %v", err)
		}
		out[pki.SHA1Fingerprint(c)] = true
	}
}

// team is the second team of the negative chain.
type team struct {
	dir string
	p   *project.Project
	ca  *x509Cert
}

// secondTeam onboards another team up to its merged trust-ca PR, the way it
// would have before the first team arrived.
func (c *chain) secondTeam() *team {
	t := c.t
	dir := filepath.Join(c.root, "beta")
	c.run(c.root, "init", "--team", "b"+randHex(t, 4), "--namespace", "e2e-b-"+randHex(t, 4), dir)
	c.run(dir, "pki", "gen")
	url := c.run(dir, "pr", "trust-ca")
	if _, err := c.gh.Merge(cityRepo, prNumber(t, url)); err != nil {
		t.Fatalf("merge the second team's trust-ca PR: %v", err)
	}
	p := loadProject(t, dir)
	return &team{dir: dir, p: p, ca: readCert(t, p.Path(p.Paths.CACert))}
}

// mapAgentConf maps the scaffold's agent.conf to this machine: every
// /run/spire/... path (the pod's volume mounts) under root, the server at
// 127.0.0.1:serverPort, the health listener on healthPort (agents of several
// pods share this host's loopback). Each rewrite must apply exactly once, so
// a changed template fails here rather than silently running something else.
func mapAgentConf(t interface {
	Helper()
	Fatalf(string, ...any)
}, conf, root string, serverPort, healthPort int) string {
	t.Helper()
	rewrites := []struct {
		re   *regexp.Regexp
		repl string
		n    int // exact number of matches expected; 0 means at least one
	}{
		{regexp.MustCompile(`(?m)^(\s*server_address\s*=\s*)"[^"]*"`), `${1}"127.0.0.1"`, 1},
		{regexp.MustCompile(`(?m)^(\s*server_port\s*=\s*)"?[0-9]+"?`), fmt.Sprintf(`${1}"%d"`, serverPort), 1},
		{regexp.MustCompile(`(?m)^(\s*bind_port\s*=\s*)"?[0-9]+"?`), fmt.Sprintf(`${1}"%d"`, healthPort), 1},
		{regexp.MustCompile(`"/run/spire/`), `"` + root + `/run/spire/`, 0},
		// The k8s workload attestor reads the pod's service account token at
		// start ("unable to load token: open /var/run/secrets/kubernetes.io/
		// serviceaccount/token" otherwise, and the agent crashes). The pod has
		// it mounted there; here the same mount lives under root, so the
		// plugin is told where (token_path) and startAgent writes a real token.
		{regexp.MustCompile(`(?m)^(\s*)WorkloadAttestor "k8s" \{\n(\s*)plugin_data \{\n`),
			"${0}${2}  token_path = \"" + root + saTokenPath + "\"\n", -1},
	}
	for _, r := range rewrites {
		n := len(r.re.FindAllStringIndex(conf, -1))
		if r.n >= 0 && ((r.n > 0 && n != r.n) || n == 0) {
			t.Fatalf("agent.conf: %d matches of %s, want %d: the template changed", n, r.re, r.n)
		}
		conf = r.re.ReplaceAllString(conf, r.repl)
	}
	return conf
}

// saTokenPath is where a pod has its service account token.
const saTokenPath = "/var/run/secrets/kubernetes.io/serviceaccount/token"

// hclString reads a quoted string attribute of agent.conf.
func hclString(t interface {
	Helper()
	Fatalf(string, ...any)
}, conf, key string) string {
	t.Helper()
	m := regexp.MustCompile(`(?m)^\s*`+regexp.QuoteMeta(key)+`\s*=\s*"([^"]*)"`).FindAllStringSubmatch(conf, -1)
	if len(m) != 1 {
		t.Fatalf("agent.conf: %d %s attributes, want 1", len(m), key)
	}
	return m[0][1]
}

// x509popAgentID is the agent ID SPIRE's default x509pop template gives the
// agent using the certificate in file: /spire/agent/x509pop/<SHA-1 of the leaf>.
func x509popAgentID(t interface {
	Helper()
	Fatalf(string, ...any)
}, td, file string) string {
	t.Helper()
	leaf := readCert(t, file)
	return fmt.Sprintf("spiffe://%s/spire/agent/x509pop/%s", td, pki.SHA1Fingerprint(leaf.Cert))
}

// agentValidate runs the real `spire-agent validate` on a config.
func (c *chain) agentValidate(conf, dir string) string {
	c.t.Helper()
	path := filepath.Join(dir, "agent.conf")
	writeFile(c.t, path, conf, 0o644)
	out, err := exec.CommandContext(c.ctx, c.bins.SpireAgent(), "validate", "-config", path).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "is valid") {
		c.t.Fatalf("spire-agent validate %s: %v\n%s\n--- config ---\n%s", path, err, out, conf)
	}
	return path
}

// statefulSetEnv reads a literal env value of a container of the applied StatefulSet.
func statefulSetEnv(t interface {
	Helper()
	Fatalf(string, ...any)
}, c *chain, ns, name, container, env string) string {
	t.Helper()
	sts, err := c.cluster.Client.AppsV1().StatefulSets(ns).Get(c.ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("StatefulSet %s/%s: %v", ns, name, err)
	}
	for _, ct := range append(sts.Spec.Template.Spec.InitContainers, sts.Spec.Template.Spec.Containers...) {
		if ct.Name != container {
			continue
		}
		for _, e := range ct.Env {
			if e.Name == env && e.Value != "" {
				return e.Value
			}
		}
	}
	t.Fatalf("StatefulSet %s: container %s has no literal %s", name, container, env)
	return ""
}

// checkIssuerReady: the team's issuer is Ready through real cert-manager, with the team CA.
func (c *chain) checkIssuerReady(p *project.Project, ca *x509Cert) {
	t := c.t
	t.Helper()
	ref := p.Issuer()
	ci, err := ref.Get(c.ctx, c.cluster.Dynamic)
	if err != nil {
		t.Fatalf("%s: %v", ref, err)
	}
	conds, _, _ := unstructured.NestedSlice(ci.Object, "status", "conditions")
	ready := false
	for _, cd := range conds {
		m, _ := cd.(map[string]any)
		if m["type"] == "Ready" && m["status"] == "True" {
			ready = true
		}
	}
	if !ready {
		t.Fatalf("%s not Ready: %v", ref, conds)
	}
	secretName, _, _ := unstructured.NestedString(ci.Object, "spec", "ca", "secretName")
	sec, err := c.cluster.Client.CoreV1().Secrets(ref.SecretNamespace).Get(c.ctx, secretName, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("CA Secret %s/%s: %v", ref.SecretNamespace, secretName, err)
	}
	if got := fingerprints(t, sec.Data["tls.crt"]); !got[pki.SHA1Fingerprint(ca.Cert)] || len(got) != 1 {
		t.Fatalf("%s's CA Secret holds %v, want the team CA %s", ref, got, pki.SHA1Fingerprint(ca.Cert))
	}
}

func (c *chain) checkPodsRunning(ns string, pods []string) {
	t := c.t
	t.Helper()
	for _, name := range pods {
		pod, err := c.cluster.Client.CoreV1().Pods(ns).Get(c.ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatalf("pod %s: %v", name, err)
		}
		if pod.Status.Phase != corev1.PodRunning {
			t.Fatalf("pod %s is %s, want Running", name, pod.Status.Phase)
		}
	}
}

// genCert runs the scaffold's own gen_cert.sh for one pod, as its gen-cert
// init container would, with kubectl pointed at the test API server.
func (c *chain) genCert(p *project.Project, pod, ns string, cm *corev1.ConfigMap, certDir string, ca *x509Cert) {
	t := c.t
	t.Helper()
	mount := filepath.Join(c.root, pod, "opt", "gen-cert")
	writeFile(t, filepath.Join(mount, "gen_cert.sh"), cm.Data["gen_cert.sh"], 0o755)
	cmd := exec.CommandContext(c.ctx, "/bin/sh", filepath.Join(mount, "gen_cert.sh"), "once")
	cmd.Env = append(os.Environ(),
		"POD_NAME="+pod, "POD_NAMESPACE="+ns, "CERT_DIR="+certDir,
		"CERT_TIMEOUT=60s",
		fmt.Sprintf("KUBECTL=%s --kubeconfig %s --context %s", c.bins.Kubectl(), c.cluster.Kubeconfig, c.cluster.Context))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("gen_cert.sh for %s: %v\n%s", pod, err, out)
	}
	leaf := readCert(t, filepath.Join(certDir, "agent.crt.pem"))
	if want := p.AgentCN(pod); leaf.Cert.Subject.CommonName != want {
		t.Fatalf("%s: agent certificate CN %q, want %q", pod, leaf.Cert.Subject.CommonName, want)
	}
	// Issued by real cert-manager from the team CA. (Key usages are left to
	// the real judge, SPIRE's x509pop, in step 6.)
	if err := leaf.Cert.CheckSignatureFrom(ca.Cert); err != nil {
		t.Fatalf("%s: agent certificate not issued by the team CA: %v", pod, err)
	}
	if _, err := os.Stat(filepath.Join(certDir, "agent.key.pem")); err != nil {
		t.Fatalf("%s: %v", pod, err)
	}
}

// startAgent runs a real spire-agent for one pod from the scaffold's agent
// config, mapped under podRoot, with the bundle ConfigMap's content where the
// pod mounts it.
func (c *chain) startAgent(name, agentConf, podRoot string, srv *testbed.SpireServer, bundle string) *testbed.SpireAgent {
	t := c.t
	t.Helper()
	health, err := testbed.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	conf := mapAgentConf(t, agentConf, podRoot, srv.Port, health)
	writeFile(t, hclString(t, conf, "trust_bundle_path"), bundle, 0o644)
	if strings.Contains(conf, "token_path") {
		writeFile(t, hclString(t, conf, "token_path"), c.saToken, 0o600)
	}
	sock := hclString(t, conf, "socket_path")
	for _, d := range []string{filepath.Dir(sock), hclString(t, conf, "data_dir")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	confDir := filepath.Join(podRoot, "run", "spire", "config")
	if err := os.MkdirAll(confDir, 0o755); err != nil {
		t.Fatal(err)
	}
	confPath := c.agentValidate(conf, confDir)
	a, err := testbed.StartSpireAgent(c.ctx, c.bins, podRoot, "spire-agent-"+name, confPath, sock)
	if err != nil {
		t.Fatalf("spire-agent for %s: %v", name, err)
	}
	t.Cleanup(a.Stop)
	return a
}

// checkAliasResolves: the node alias exists, parented to the server, selects
// this pod's CN, and every one of its selectors is on the attested agent, so
// the alias applies to it. (Whether the alias is pinned tightly enough is
// judged by behaviour, in the negative chain.)
func (c *chain) checkAliasResolves(p *project.Project, srv *testbed.SpireServer, pod, agentID string) {
	t := c.t
	t.Helper()
	td := p.TrustDomain
	alias := p.NodeAliasID(pod)
	out, err := srv.Run(c.ctx, "entry", "show", "-spiffeID", alias)
	if err != nil || !strings.Contains(out, "Parent ID        : spiffe://"+td+"/spire/server") {
		t.Fatalf("node alias %s: %v\n%s", alias, err, out)
	}
	aliasSel := selectorLines(out)
	if !contains(aliasSel, "x509pop:subject:cn:"+p.AgentCN(pod)) {
		t.Fatalf("node alias %s does not select CN %s:\n%s", alias, p.AgentCN(pod), out)
	}
	out, err = srv.Run(c.ctx, "agent", "show", "-spiffeID", agentID)
	if err != nil {
		t.Fatalf("agent show %s: %v\n%s", agentID, err, out)
	}
	agentSel := selectorLines(out)
	for _, s := range aliasSel {
		if !contains(agentSel, s) {
			t.Fatalf("agent %s lacks selector %s, so alias %s does not apply:\n%s", agentID, s, alias, out)
		}
	}
}

// selectorLines reads the "Selector(s) : type:value" lines of spire-server's pretty output.
func selectorLines(out string) []string {
	var sel []string
	for _, line := range strings.Split(out, "\n") {
		k, v, ok := strings.Cut(line, ":")
		if ok && strings.HasPrefix(strings.TrimSpace(k), "Selector") {
			sel = append(sel, strings.TrimSpace(v))
		}
	}
	return sel
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// fetchSVID polls `spire-agent api fetch x509` as the Envoy uid until the
// agent hands out an SVID, up to bound; it returns how long that took.
func (c *chain) fetchSVID(socket, outDir string, bound time.Duration) (time.Duration, string) {
	t := c.t
	t.Helper()
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(outDir, envoyUID, envoyUID); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	var last string
	for time.Since(start) < bound {
		out, err := c.fetchOnce(socket, outDir)
		if err == nil {
			return time.Since(start), outDir
		}
		last = out
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("no SVID from %s for uid %d within %v: %s", socket, envoyUID, bound, last)
	return 0, ""
}

func (c *chain) fetchOnce(socket, outDir string) (string, error) {
	cmd := exec.CommandContext(c.ctx, c.agentBin, "api", "fetch", "x509", "-socketPath", socket, "-write", outDir, "-timeout", "2s")
	cmd.SysProcAttr = uidCred()
	out, err := cmd.CombinedOutput()
	if err == nil {
		if _, serr := os.Stat(filepath.Join(outDir, "svid.0.pem")); serr != nil {
			return string(out), serr
		}
	}
	return string(out), err
}

func svidURI(t interface {
	Helper()
	Fatalf(string, ...any)
}, file string) string {
	t.Helper()
	c := readCert(t, file)
	if len(c.Cert.URIs) != 1 {
		t.Fatalf("%s: %d URI SANs", file, len(c.Cert.URIs))
	}
	return c.Cert.URIs[0].String()
}

// verifyAndStatus: `spirepod verify` reads every pod's curl log through the
// real apiserver → kwok path and succeeds; `spirepod status` then shows every
// step √, the PR states read from the fake GitHub after the merges.
//
// verify judges only lines logged after it started (as the scaffold's curl
// logs every 10 s): curlOut is each pod's curl output, appended to its log
// once verify reports it follows every pod's log; lines logged before then
// must be reported as ignored.
func (c *chain) verifyAndStatus(dir string, kubeFlags, pods []string, wantID string, logFiles, curlOut map[string]string) {
	t := c.t
	t.Helper()
	out, errOut, code := c.execWatch(dir, func(line string) bool {
		for _, pod := range pods {
			if !strings.Contains(line, pod+" streaming") {
				return false
			}
		}
		for _, pod := range pods {
			appendCRILog(t, logFiles[pod], curlOut[pod])
		}
		return true
	}, append([]string{"verify", "--timeout", "30s", "-o", "json"}, kubeFlags...)...)
	if !strings.Contains(errOut, "ignored a line from before verify started") {
		t.Errorf("spirepod verify did not report the lines logged before it started as ignored:\n%s", errOut)
	}
	var v struct {
		Expected string `json:"expected"`
		Success  bool   `json:"success"`
		Pods     []struct {
			Pod     string `json:"pod"`
			Matched bool   `json:"matched"`
		} `json:"pods"`
	}
	if err := json.Unmarshal([]byte(out), &v); err != nil || code != 0 {
		t.Fatalf("spirepod verify: exit %d (%v)\n%s\n%s", code, err, out, errOut)
	}
	matched := map[string]bool{}
	for _, p := range v.Pods {
		matched[p.Pod] = p.Matched
	}
	for _, pod := range pods {
		if !matched[pod] {
			t.Fatalf("spirepod verify: %s not matched:\n%s", pod, out)
		}
	}
	if !v.Success || v.Expected != wantID {
		t.Fatalf("spirepod verify: success %v, expected %q (want %q)", v.Success, v.Expected, wantID)
	}

	out, errOut, code = c.exec(dir, append([]string{"status", "-o", "json"}, kubeFlags...)...)
	var st struct {
		Checks []struct{ Group, ID, Name, Status, Message string }
		Steps  []struct{ Step, Status, Message string }
		Failed bool
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil || code != 0 || st.Failed {
		t.Fatalf("spirepod status: exit %d failed %v (%v)\n%s\n%s", code, st.Failed, err, out, errOut)
	}
	if len(st.Steps) < 7 {
		t.Fatalf("spirepod status: %d steps, want every step of the guide:\n%s", len(st.Steps), out)
	}
	for _, s := range st.Steps {
		if s.Status != "ok" {
			t.Errorf("spirepod status: step %q is %s: %s", s.Step, s.Status, s.Message)
		}
	}
	for _, ch := range st.Checks {
		if ch.Status != "ok" {
			t.Errorf("spirepod status: check %s/%s is %s: %s", ch.Group, ch.ID, ch.Status, ch.Message)
		}
	}
	if len(st.Checks) < len(st.Steps) {
		t.Errorf("spirepod status: only %d checks", len(st.Checks))
	}
	text, textErr, _ := c.exec(dir, append([]string{"status", "--short"}, kubeFlags...)...)
	t.Logf("spirepod status --short (%d checks):\n%s%s", len(st.Checks), text, textErr)
}
