package e2e_test

import (
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/spirepod/spirepod/internal/testbed"
)

// echoHost is the remote service the template's Envoy calls.
const echoHost = "httpbin.spire-sample.svc.cluster.local"

// echoServer stands in for the remote httpbin behind its own Envoy: mTLS
// with a real SPIRE-minted SVID, the client's SVID verified against the
// trust bundle, and an httpbin /headers body whose X-Forwarded-Client-Cert is
// what Envoy writes: By=<server ID>;Hash=<hex SHA-256 of the client
// certificate's DER>;URI=<client SPIFFE ID>.
type echoServer struct {
	port int
	id   string
}

func (c *chain) startEcho(srv *testbed.SpireServer, td string) *echoServer {
	t := c.t
	t.Helper()
	id := fmt.Sprintf("spiffe://%s/ns/spire-sample/sa/httpbin", td)
	dir := filepath.Join(c.root, "echo")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	out, err := srv.Run(c.ctx, "x509", "mint", "-spiffeID", id, "-dns", echoHost, "-write", dir)
	if err != nil {
		t.Fatalf("x509 mint: %v\n%s", err, out)
	}
	svid, err := x509svid.Load(filepath.Join(dir, "svid.pem"), filepath.Join(dir, "key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	tdID, err := spiffeid.TrustDomainFromString(td)
	if err != nil {
		t.Fatal(err)
	}
	bundle, err := x509bundle.Load(tdID, filepath.Join(dir, "bundle.pem"))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{
		TLSConfig:         tlsconfig.MTLSServerConfig(svid, bundle, tlsconfig.AuthorizeMemberOf(tdID)),
		ReadHeaderTimeout: 5 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			peer := r.TLS.PeerCertificates[0]
			clientID, err := x509svid.IDFromCert(peer)
			if err != nil {
				http.Error(w, err.Error(), http.StatusForbidden)
				return
			}
			sum := sha256.Sum256(peer.Raw)
			headers := map[string]string{
				"Accept": r.Header.Get("Accept"), "Host": r.Host, "User-Agent": r.UserAgent(),
				"X-Forwarded-Client-Cert": fmt.Sprintf("By=%s;Hash=%s;URI=%s", id, hex.EncodeToString(sum[:]), clientID),
			}
			body, _ := json.MarshalIndent(map[string]any{"headers": headers}, "", "  ")
			w.Header().Set("Content-Type", "application/json")
			w.Write(append(body, '\n'))
		}),
	}
	go func() {
		if err := hs.ServeTLS(ln, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("echo server: %v", err)
		}
	}()
	t.Cleanup(func() { hs.Close() })
	return &echoServer{port: ln.Addr().(*net.TCPAddr).Port, id: id}
}

// curl calls the echo server with real curl and the SVID the agent handed
// out, as Envoy would, and checks the XFCC hash against that certificate.
func (c *chain) curl(e *echoServer, svidDir string) string {
	t := c.t
	t.Helper()
	hostPort := fmt.Sprintf("%s:%d", echoHost, e.port)
	cmd := exec.CommandContext(c.ctx, "curl", "-sS", "--max-time", "10",
		"--cert", filepath.Join(svidDir, "svid.0.pem"), "--key", filepath.Join(svidDir, "svid.0.key"),
		"--cacert", filepath.Join(svidDir, "bundle.0.pem"),
		"--resolve", hostPort+":127.0.0.1", "https://"+hostPort+"/headers")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("curl: %v\n%s", err, out)
	}
	pair, err := tls.LoadX509KeyPair(filepath.Join(svidDir, "svid.0.pem"), filepath.Join(svidDir, "svid.0.key"))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(pair.Certificate[0])
	if want := "By=" + e.id + ";Hash=" + hex.EncodeToString(sum[:]) + ";URI="; !strings.Contains(string(out), want) {
		t.Fatalf("curl output lacks %s…:\n%s", want, out)
	}
	return string(out)
}
