package scaffold_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/util/jsonpath"
	"sigs.k8s.io/yaml"

	"github.com/spirepod/spirepod/internal/scaffold"
)

// fakeKubectlEnv, when set, makes this test binary gen_cert.sh's kubectl: it
// sends its arguments to the fake API server listening on that unix socket
// (the test's process) and prints what it answers.
const fakeKubectlEnv = "SPIREPOD_TEST_FAKE_KUBECTL"

func TestMain(m *testing.M) {
	if sock := os.Getenv(fakeKubectlEnv); sock != "" {
		os.Exit(fakeKubectl(sock, os.Args[1:]))
	}
	os.Exit(m.Run())
}

// TestGenCertRenewalNeverShowsMixedPair: cert-manager renews the agent
// certificate (rotationPolicy: Always, so every renewal brings a new key)
// while the SPIRE agent attests in a loop. The agent's x509pop plugin loads
// the pair at every attestation with tls.LoadX509KeyPair (SPIRE
// pkg/agent/plugin/nodeattestor/x509pop: loadConfigData), which reads the
// certificate file, then the key file. Whenever the certificate did not
// change across the reader's read of the key (it reads the certificate again
// after), the two files it read were in the directory together, and they
// must be a pair: that is the state an attestation can see. A reader whose
// reads straddle a renewal is counted, not judged: no file layout can serve
// two opens by name one version (the agent's next attestation reads again).
//
// The scaffold's own gen_cert.sh runs in follow mode with the host's /bin/sh
// and, when busybox is installed, with busybox's sh and only busybox's tools
// on PATH (the test-bed gen-cert image). Its kubectl is a fake API server in
// this process serving one Secret through client-go's jsonpath (kubectl's)
// and a watch; each renewal waits for the script's "wrote" line.
func TestGenCertRenewalNeverShowsMixedPair(t *testing.T) {
	script := genCertScript(t)
	renewals := 300
	if testing.Short() {
		renewals = 60
	}
	for _, sh := range genCertShells(t) {
		t.Run(sh.name, func(t *testing.T) {
			g := startGenCert(t, sh, script, "follow")
			g.waitWrote(t, 0)
			g.api.waitWatch(t, g.ctx)

			g.pair(renewals) // every version, made before the agent starts
			r := startAttester(g.certDir, g.pairs)
			defer r.stop()
			for i := 1; i <= renewals; i++ {
				g.api.setSecret(g.secret(i))
				g.waitWrote(t, i)
				if err := r.waitSeen(g.ctx, i); err != nil {
					t.Fatalf("renewal %d of %d: %v", i, renewals, err)
				}
			}
			res := r.stop()
			t.Logf("%d renewals; the agent loaded the pair %d times: %d while the files stood still, %d straddling a renewal (%d of those a mismatch: the reader's own two opens)",
				renewals, res.loads, res.checked, res.straddled, res.straddledMismatch)
			if res.failure != "" {
				t.Error(res.failure)
			}
			g.checkEndState(t, renewals)
		})
	}
}

// TestGenCertOnce: one write, from files an older gen_cert.sh left in place
// (regular files, not links) or from nothing; a Secret without a key leaves
// the pod's files as they were.
func TestGenCertOnce(t *testing.T) {
	script := genCertScript(t)
	for _, sh := range genCertShells(t) {
		t.Run(sh.name, func(t *testing.T) {
			t.Run("empty directory", func(t *testing.T) {
				g := startGenCert(t, sh, script, "once")
				g.waitWrote(t, 0)
				g.waitExit(t, 0)
				g.checkEndState(t, 0)
			})
			t.Run("files written in place by an older script", func(t *testing.T) {
				g := newGenCert(t, sh, script)
				g.writePlain(t, 0)
				g.api.setSecret(g.secret(1))
				g.start(t, "once")
				g.waitWrote(t, 1)
				g.waitExit(t, 0)
				g.checkEndState(t, 1)
			})
			t.Run("same Secret: nothing written", func(t *testing.T) {
				g := newGenCert(t, sh, script)
				g.writePlain(t, 0)
				g.start(t, "once")
				g.waitExit(t, 0)
				if w := g.wroteLines(); len(w) != 0 {
					t.Errorf("gen_cert.sh wrote an unchanged pair: %q", w)
				}
				g.checkEndState(t, 0)
			})
			t.Run("Secret whose key is not base64", func(t *testing.T) {
				g := newGenCert(t, sh, script)
				g.writePlain(t, 0)
				s := g.secret(1)
				s["data"].(map[string]any)["tls.key"] = base64.StdEncoding.EncodeToString(g.pair(1).key)[:40] + "!!!not base64"
				g.api.setSecret(s)
				g.start(t, "once")
				if code := g.wait(t); code == 0 {
					t.Fatalf("gen_cert.sh once exited 0 for a tls.key that is not base64")
				}
				g.checkEndState(t, 0)
			})
			t.Run("Secret without a key", func(t *testing.T) {
				g := newGenCert(t, sh, script)
				g.writePlain(t, 0)
				s := g.secret(1)
				delete(s["data"].(map[string]any), "tls.key")
				g.api.setSecret(s)
				g.start(t, "once")
				if code := g.wait(t); code == 0 {
					t.Fatalf("gen_cert.sh once exited 0 for a Secret without tls.key")
				}
				if !strings.Contains(g.stderr.String(), "has no tls.crt/tls.key") {
					t.Errorf("stderr does not name the missing key:\n%s", g.stderr.String())
				}
				g.checkEndState(t, 0)
			})
		})
	}
}

// TestGenCertRenewalBeforeWatch: cert-manager renews the Secret after
// gen_cert.sh's first read and before its watch starts. The watch begins
// with the Secret as it is, so that renewal is written at once, not when
// the API server next closes the watch (30-60 minutes later).
func TestGenCertRenewalBeforeWatch(t *testing.T) {
	script := genCertScript(t)
	for _, sh := range genCertShells(t) {
		t.Run(sh.name, func(t *testing.T) {
			g := newGenCert(t, sh, script)
			g.pair(1)
			var once sync.Once
			g.api.afterGet = func() { once.Do(func() { g.api.setSecret(g.secret(1)) }) }
			g.start(t, "follow")
			g.waitWrote(t, 0)
			g.waitWrote(t, 1)
			g.checkEndState(t, 1)
		})
	}
}

// TestGenCertRenewalDuringRead: cert-manager renews the Secret right after
// each of gen_cert.sh's reads of it. The pair it writes is still one
// version's: the one its log line names.
func TestGenCertRenewalDuringRead(t *testing.T) {
	script := genCertScript(t)
	for _, sh := range genCertShells(t) {
		t.Run(sh.name, func(t *testing.T) {
			g := newGenCert(t, sh, script)
			g.pair(5)
			var mu sync.Mutex
			next := 1
			g.api.afterGet = func() {
				mu.Lock()
				defer mu.Unlock()
				if next <= 5 {
					g.api.setSecret(g.secret(next))
					next++
				}
			}
			g.start(t, "once")
			g.waitExit(t, 0)
			if len(g.wrote) != 1 {
				t.Fatalf("gen_cert.sh once printed %d wrote lines, want 1: %q", len(g.wrote), g.wrote)
			}
			v := -1
			for i := range g.pairs {
				if strings.HasSuffix(g.wrote[0], " ("+rv(i)+")") {
					v = i
				}
			}
			if v < 0 {
				t.Fatalf("gen_cert.sh names no version the Secret had: %q", g.wrote[0])
			}
			if _, err := tls.LoadX509KeyPair(filepath.Join(g.certDir, "agent.crt.pem"), filepath.Join(g.certDir, "agent.key.pem")); err != nil {
				t.Errorf("the pair gen_cert.sh left: %v", err)
			}
			g.checkEndState(t, v)
		})
	}
}

// genCertScript is gen_cert.sh of the default scaffold, as rendered.
func genCertScript(t *testing.T) string {
	t.Helper()
	files := render(t, testProject("/x"))
	var cm corev1.ConfigMap
	if err := yaml.Unmarshal(files["init-gen-cert-configmap.yaml"], &cm); err != nil {
		t.Fatal(err)
	}
	s := cm.Data[scaffold.GenCertScriptKey]
	if s == "" {
		t.Fatal("the rendered init-gen-cert ConfigMap has no gen_cert.sh")
	}
	return s
}

type genCertShell struct {
	name string
	argv []string // the shell; the script's path is appended
	path string   // PATH
}

// genCertShells are the host's /bin/sh with the host's tools, and busybox's
// sh with only busybox's applets on PATH (as in the test-bed gen-cert image),
// when busybox is installed.
func genCertShells(t *testing.T) []genCertShell {
	t.Helper()
	shells := []genCertShell{{name: "sh", argv: []string{"/bin/sh"}, path: os.Getenv("PATH")}}
	bb, err := exec.LookPath("busybox")
	if err != nil {
		t.Logf("busybox not installed: gen_cert.sh runs with /bin/sh only")
		return shells
	}
	out, err := exec.Command(bb, "--list").Output()
	if err != nil {
		t.Fatalf("busybox --list: %v", err)
	}
	bin := t.TempDir()
	for _, a := range strings.Fields(string(out)) {
		if err := os.Symlink(bb, filepath.Join(bin, a)); err != nil {
			t.Fatal(err)
		}
	}
	return append(shells, genCertShell{name: "busybox", argv: []string{bb, "sh"}, path: bin})
}

// pairPEM is one version of the Secret: a certificate and its own key.
type pairPEM struct{ cert, key []byte }

// genCert is one run of gen_cert.sh against a fake API server.
type genCert struct {
	ctx             context.Context
	sh              genCertShell
	script, certDir string
	ns, name, pod   string
	api             *fakeAPI
	ca              *x509.Certificate
	caKey           *ecdsa.PrivateKey
	pairs           []pairPEM
	cmd             *exec.Cmd
	lines           chan string
	stdout, stderr  lockedBuffer
	exited          chan struct{}
	exitCode        int
	wrote           []string
}

func newGenCert(t *testing.T, sh genCertShell, script string) *genCert {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	t.Cleanup(cancel)
	p := testProject("/x")
	pod := p.PodName(0)
	dir := t.TempDir()
	g := &genCert{
		ctx: ctx, sh: sh, script: filepath.Join(dir, "gen_cert.sh"), certDir: filepath.Join(dir, "run", "agent-certs"),
		ns: p.Namespace, pod: pod, name: p.CertificateName(pod),
	}
	if err := os.WriteFile(g.script, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "team CA"},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	if g.ca, err = x509.ParseCertificate(der); err != nil {
		t.Fatal(err)
	}
	g.caKey = key
	// A unix socket's path is short: not under t.TempDir's long name.
	sockDir, err := os.MkdirTemp("", "gencert")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	g.api = startFakeAPI(t, filepath.Join(sockDir, "kube.sock"), g.ns, g.name)
	g.api.setSecret(g.secret(0))
	return g
}

func startGenCert(t *testing.T, sh genCertShell, script, mode string) *genCert {
	t.Helper()
	g := newGenCert(t, sh, script)
	g.start(t, mode)
	return g
}

// pair returns version i (made on first use): a new key every time, as
// cert-manager's rotationPolicy: Always.
func (g *genCert) pair(i int) pairPEM {
	for len(g.pairs) <= i {
		n := len(g.pairs)
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			panic(err)
		}
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(int64(n + 2)), Subject: pkix.Name{CommonName: g.name},
			NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, g.ca, &key.PublicKey, g.caKey)
		if err != nil {
			panic(err)
		}
		kder, err := x509.MarshalECPrivateKey(key)
		if err != nil {
			panic(err)
		}
		p := pairPEM{
			cert: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
			key:  pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}),
		}
		g.pairs = append(g.pairs, p)
	}
	return g.pairs[i]
}

// secret is the Secret cert-manager writes for version i.
func (g *genCert) secret(i int) map[string]any {
	p := g.pair(i)
	b64 := base64.StdEncoding.EncodeToString
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: g.ca.Raw})
	return map[string]any{
		"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
		"metadata": map[string]any{"name": g.name, "namespace": g.ns, "resourceVersion": rv(i)},
		"data":     map[string]any{"tls.crt": b64(p.cert), "tls.key": b64(p.key), "ca.crt": b64(caPEM)},
	}
}

func rv(i int) string { return strconv.Itoa(1000 + i) }

// writePlain puts version i in the directory as a gen_cert.sh before links
// wrote it: regular files, key 0600, certificate 0644.
func (g *genCert) writePlain(t *testing.T, i int) {
	t.Helper()
	p := g.pair(i)
	if err := os.MkdirAll(g.certDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(g.certDir, "agent.key.pem"), p.key, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(g.certDir, "agent.crt.pem"), p.cert, 0o644); err != nil {
		t.Fatal(err)
	}
}

func (g *genCert) start(t *testing.T, mode string) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	argv := append(append([]string{}, g.sh.argv...), g.script)
	if mode == "once" {
		argv = append(argv, "once")
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = []string{"PATH=" + g.sh.path, "HOME=" + filepath.Dir(g.script),
		"POD_NAME=" + g.pod, "POD_NAMESPACE=" + g.ns, "CERT_DIR=" + g.certDir, "CERT_TIMEOUT=60s",
		"KUBECTL=" + self, fakeKubectlEnv + "=" + g.api.sock}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = &g.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	g.cmd, g.lines, g.exited = cmd, make(chan string, 16), make(chan struct{})
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			g.stdout.Write([]byte(sc.Text() + "\n"))
			g.lines <- sc.Text()
		}
		close(g.lines)
		err := cmd.Wait()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			g.exitCode = ee.ExitCode()
		} else if err != nil {
			g.exitCode = -1
		}
		close(g.exited)
	}()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // the script and its kubectl watch
		<-g.exited
		if t.Failed() {
			t.Logf("gen_cert.sh (%s) stdout:\n%s\nstderr:\n%s", g.sh.name, g.stdout.String(), g.stderr.String())
		}
	})
}

// waitWrote waits for gen_cert.sh's line for version i.
func (g *genCert) waitWrote(t *testing.T, i int) {
	t.Helper()
	want := fmt.Sprintf("gen-cert: wrote %s/agent.crt.pem for %s (%s)", g.certDir, g.name, rv(i))
	for {
		select {
		case l, ok := <-g.lines:
			if !ok {
				t.Fatalf("gen_cert.sh ended before %q", want)
			}
			if strings.HasPrefix(l, "gen-cert: wrote ") {
				g.wrote = append(g.wrote, l)
				if l == want {
					return
				}
				t.Fatalf("gen_cert.sh printed %q, want %q", l, want)
			}
		case <-g.ctx.Done():
			t.Fatalf("no %q: %v", want, g.ctx.Err())
		}
	}
}

// waitExit waits for gen_cert.sh to end with the code, its output drained.
func (g *genCert) waitExit(t *testing.T, code int) {
	t.Helper()
	if got := g.wait(t); got != code {
		t.Fatalf("gen_cert.sh exited %d, want %d", got, code)
	}
}

func (g *genCert) wait(t *testing.T) int {
	t.Helper()
	for l := range g.lines {
		if strings.HasPrefix(l, "gen-cert: wrote ") {
			g.wrote = append(g.wrote, l)
		}
	}
	select {
	case <-g.exited:
		return g.exitCode
	case <-g.ctx.Done():
		t.Fatalf("gen_cert.sh did not exit: %v", g.ctx.Err())
		return -1
	}
}

func (g *genCert) wroteLines() []string { return g.wrote }

// checkEndState: the agent's files hold version i, the key 0600 and the
// certificate 0644; no copy of the Secret or of the key is left beside them,
// and renewals do not pile files up.
func (g *genCert) checkEndState(t *testing.T, i int) {
	t.Helper()
	want := g.pair(i)
	for _, f := range []struct {
		name string
		data []byte
		mode os.FileMode
	}{{"agent.crt.pem", want.cert, 0o644}, {"agent.key.pem", want.key, 0o600}} {
		path := filepath.Join(g.certDir, f.name)
		got, err := os.ReadFile(path)
		if err != nil {
			t.Errorf("read %s: %v", f.name, err)
			continue
		}
		if !bytes.Equal(got, f.data) {
			t.Errorf("%s is not version %d's", f.name, i)
		}
		if st, err := os.Stat(path); err != nil {
			t.Error(err)
		} else if st.Mode().Perm() != f.mode {
			t.Errorf("%s is %v, want %v", f.name, st.Mode().Perm(), f.mode)
		}
	}
	var entries, stray []string
	err := filepath.WalkDir(g.certDir, func(path string, d os.DirEntry, err error) error {
		if err != nil || path == g.certDir {
			return err
		}
		rel, _ := filepath.Rel(g.certDir, path)
		if filepath.Dir(rel) == "." {
			entries = append(entries, rel)
		}
		if d.Type().IsRegular() && d.Name() != "agent.crt.pem" && d.Name() != "agent.key.pem" {
			stray = append(stray, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(stray) > 0 {
		t.Errorf("files left beside the pair: %q", stray)
	}
	if len(entries) > 5 {
		t.Errorf("%d entries in the certificate directory (renewals pile up): %q", len(entries), entries)
	}
}

// attester loads the pair in a loop as the SPIRE agent's x509pop plugin does
// at every attestation.
type attester struct {
	dir            string
	versions, keys map[string]int // certificate or key PEM -> version
	done           chan struct{}
	finished       chan attestResult
	seen           chan int
	failed         chan string
}

type attestResult struct {
	loads, checked, straddled, straddledMismatch int
	failure                                      string // the first
}

// startAttester starts loading the pair in dir in a loop; pairs are every
// version the Secret will hold.
func startAttester(dir string, pairs []pairPEM) *attester {
	a := &attester{dir: dir, versions: map[string]int{}, keys: map[string]int{}, done: make(chan struct{}),
		finished: make(chan attestResult, 1), seen: make(chan int, 1), failed: make(chan string, 1)}
	for i, p := range pairs {
		a.versions[string(p.cert)], a.keys[string(p.key)] = i, i
	}
	go a.run()
	return a
}

func (a *attester) run() {
	var res attestResult
	certPath, keyPath := filepath.Join(a.dir, "agent.crt.pem"), filepath.Join(a.dir, "agent.key.pem")
	last := -1
	fail := func(msg string) {
		if res.failure == "" {
			res.failure = msg
		}
		select {
		case a.failed <- msg:
		default:
		}
	}
	for {
		select {
		case <-a.done:
			a.finished <- res
			return
		default:
		}
		// tls.LoadX509KeyPair(certificate_path, private_key_path): the
		// certificate file, then the key file.
		c1, err := os.ReadFile(certPath)
		if err != nil {
			fail(fmt.Sprintf("attestation %d: %v", res.loads, err))
			continue
		}
		k, err := os.ReadFile(keyPath)
		if err != nil {
			fail(fmt.Sprintf("attestation %d: %v", res.loads, err))
			continue
		}
		_, loadErr := tls.X509KeyPair(c1, k)
		res.loads++
		c2, err := os.ReadFile(certPath)
		if err != nil {
			fail(fmt.Sprintf("attestation %d: %v", res.loads, err))
			continue
		}
		if !bytes.Equal(c1, c2) {
			res.straddled++
			if loadErr != nil {
				res.straddledMismatch++
			}
			continue
		}
		res.checked++
		v, ok := a.versions[string(c1)]
		switch {
		case loadErr != nil:
			kv := "an unknown"
			if i, ok := a.keys[string(k)]; ok {
				kv = fmt.Sprintf("version %d's", i)
			}
			fail(fmt.Sprintf("attestation %d: the certificate of version %d with %s key, both in the directory at once: %v", res.loads, v, kv, loadErr))
		case !ok:
			fail(fmt.Sprintf("attestation %d: a certificate the Secret never held", res.loads))
		case v > last:
			last = v
			select {
			case <-a.seen:
			default:
			}
			a.seen <- v
		}
	}
}

// waitSeen waits until the attester has loaded version i (or a later one)
// as a pair; it fails on the attester's first failure.
func (a *attester) waitSeen(ctx context.Context, i int) error {
	for {
		select {
		case v := <-a.seen:
			if v >= i {
				return nil
			}
		case msg := <-a.failed:
			return errors.New(msg)
		case <-ctx.Done():
			return fmt.Errorf("the agent never loaded version %d: %w", i, ctx.Err())
		}
	}
}

func (a *attester) stop() attestResult {
	select {
	case <-a.done:
	default:
		close(a.done)
	}
	res := <-a.finished
	a.finished <- res
	return res
}

// fakeAPI serves one Secret to the fake kubectl: get with -o jsonpath
// (client-go's jsonpath, as kubectl), get --watch (the Secret as it is,
// then each new version) or --watch-only (only the new versions from the
// moment the watch starts), and wait for the Certificate.
type fakeAPI struct {
	sock, ns, name string
	mu             sync.Mutex
	secret         map[string]any
	watchers       []chan map[string]any
	watchStarted   chan struct{}
	// afterGet, when set, runs after each get is answered (before the
	// connection closes), as a renewal landing right after the read.
	afterGet func()
}

func startFakeAPI(t *testing.T, sock, ns, name string) *fakeAPI {
	t.Helper()
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeAPI{sock: sock, ns: ns, name: name, watchStarted: make(chan struct{}, 64)}
	done := make(chan struct{})
	var conns sync.WaitGroup
	t.Cleanup(func() {
		close(done)
		ln.Close()
		conns.Wait()
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			go func() {
				defer conns.Done()
				defer c.Close()
				f.serve(c, done)
			}()
		}
	}()
	return f
}

func (f *fakeAPI) setSecret(s map[string]any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.secret = s
	for _, w := range f.watchers {
		select {
		case w <- s:
		default: // a watcher that stopped reading
		}
	}
}

func (f *fakeAPI) waitWatch(t *testing.T, ctx context.Context) {
	t.Helper()
	select {
	case <-f.watchStarted:
	case <-ctx.Done():
		t.Fatalf("gen_cert.sh never watched the Secret: %v", ctx.Err())
	}
}

type fakeReply struct {
	Code   int    `json:"code"`
	Stderr string `json:"stderr,omitempty"`
}

func (f *fakeAPI) serve(c net.Conn, done <-chan struct{}) {
	var args []string
	if err := json.NewDecoder(bufio.NewReader(c)).Decode(&args); err != nil {
		return
	}
	reply := func(code int, stderr string) {
		b, _ := json.Marshal(fakeReply{Code: code, Stderr: stderr})
		c.Write(append(b, '\n'))
	}
	var ns, output string
	var watch, withCurrent bool
	var pos []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case (a == "-n" || a == "-o") && i+1 < len(args):
			if a == "-n" {
				ns = args[i+1]
			} else {
				output = args[i+1]
			}
			i++
		case a == "--watch-only":
			watch = true
		case a == "--watch": // kubectl prints the object first, then each change
			watch, withCurrent = true, true
		case a == "--request-timeout=0", a == "--for=condition=Ready", strings.HasPrefix(a, "--timeout="):
		case strings.HasPrefix(a, "-"):
			reply(1, fmt.Sprintf("error: unknown flag: %s\n", a))
			return
		default:
			pos = append(pos, a)
		}
	}
	if ns != f.ns {
		reply(1, fmt.Sprintf("Error from server (NotFound): namespace %q\n", ns))
		return
	}
	switch {
	case len(pos) == 2 && pos[0] == "wait" && pos[1] == "certificate/"+f.name:
		reply(0, "")
		c.Write([]byte("certificate.cert-manager.io/" + f.name + " condition met\n"))
		return
	case len(pos) == 3 && pos[0] == "get" && pos[1] == "secret" && pos[2] == f.name && strings.HasPrefix(output, "jsonpath="):
	default:
		reply(1, fmt.Sprintf("fake kubectl: unexpected call %q\n", args))
		return
	}
	j := jsonpath.New("out")
	j.AllowMissingKeys(true)
	if err := j.Parse(strings.TrimPrefix(output, "jsonpath=")); err != nil {
		reply(1, fmt.Sprintf("error: error parsing jsonpath %s: %v\n", output, err))
		return
	}
	if !watch {
		f.mu.Lock()
		s := f.secret
		f.mu.Unlock()
		var out bytes.Buffer
		if err := j.Execute(&out, s); err != nil {
			reply(1, err.Error()+"\n")
			return
		}
		reply(0, "")
		c.Write(out.Bytes())
		if f.afterGet != nil {
			f.afterGet()
		}
		return
	}
	w := make(chan map[string]any, 1024)
	f.mu.Lock()
	f.watchers = append(f.watchers, w)
	if withCurrent {
		w <- f.secret
	}
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		for i, x := range f.watchers {
			if x == w {
				f.watchers = append(f.watchers[:i], f.watchers[i+1:]...)
				break
			}
		}
		f.mu.Unlock()
	}()
	reply(0, "")
	f.watchStarted <- struct{}{}
	for {
		select {
		case s := <-w:
			var out bytes.Buffer
			if err := j.Execute(&out, s); err != nil {
				return
			}
			if _, err := c.Write(out.Bytes()); err != nil {
				return
			}
		case <-done:
			return
		}
	}
}

// fakeKubectl is this binary as kubectl: its arguments to the fake API, the
// answer to stdout and stderr, its exit code.
func fakeKubectl(sock string, args []string) int {
	c, err := net.Dial("unix", sock)
	if err != nil {
		fmt.Fprintln(os.Stderr, "fake kubectl:", err)
		return 1
	}
	defer c.Close()
	if err := json.NewEncoder(c).Encode(args); err != nil {
		fmt.Fprintln(os.Stderr, "fake kubectl:", err)
		return 1
	}
	r := bufio.NewReader(c)
	line, err := r.ReadBytes('\n')
	var rep fakeReply
	if err != nil || json.Unmarshal(line, &rep) != nil {
		fmt.Fprintln(os.Stderr, "fake kubectl: no answer from the fake API server")
		return 1
	}
	fmt.Fprint(os.Stderr, rep.Stderr)
	if _, err := io.Copy(os.Stdout, r); err != nil {
		return 1
	}
	return rep.Code
}

// lockedBuffer is a bytes.Buffer safe for the process's writers and the test.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
