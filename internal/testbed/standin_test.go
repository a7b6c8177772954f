package testbed

import (
	"bytes"
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"text/template"
	"time"

	"github.com/spirepod/spirepod/internal/verify"
)

// standinBootstrap is the scaffold's Envoy bootstrap (scaffoldfs/templates/
// spire-envoy-integration/envoy-configmap.yaml) with this machine's
// addresses: the same listener, clusters, SDS names and SAN matcher shape.
var standinBootstrap = template.Must(template.New("envoy").Parse(`node:
  id: spire-envoy-integration
  cluster: spire-envoy-integration
admin:
  address:
    socket_address: {address: 127.0.0.1, port_value: {{.Admin}}}
static_resources:
  listeners:
    - name: local_http
      address:
        socket_address: {address: 127.0.0.1, port_value: {{.Listen}}}
      filter_chains:
        - filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                stat_prefix: local_http
                route_config:
                  name: local_route
                  virtual_hosts:
                    - name: upstream
                      domains: ["*"]
                      routes:
                        - match: {prefix: "/"}
                          route: {cluster: upstream_mtls}
                http_filters:
                  - name: envoy.filters.http.router
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
    - name: spire_agent
      connect_timeout: 1s
      type: STATIC
      typed_extension_protocol_options:
        envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
          "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
          explicit_http_config:
            http2_protocol_options: {}
      load_assignment:
        cluster_name: spire_agent
        endpoints:
          - lb_endpoints:
              - endpoint:
                  address:
                    pipe: {path: {{.Pipe}}}
    - name: upstream_mtls
      connect_timeout: 5s
      type: LOGICAL_DNS
      dns_lookup_family: V4_ONLY
      load_assignment:
        cluster_name: upstream_mtls
        endpoints:
          - lb_endpoints:
              - endpoint:
                  address:
                    socket_address: {address: {{.UpstreamHost}}, port_value: {{.UpstreamPort}}}
      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
          common_tls_context:
            tls_certificate_sds_secret_configs:
              - name: "{{.Secret}}"
                sds_config:
                  resource_api_version: V3
                  api_config_source:
                    api_type: GRPC
                    transport_api_version: V3
                    grpc_services:
                      - envoy_grpc: {cluster_name: spire_agent}
            combined_validation_context:
              default_validation_context:
                match_typed_subject_alt_names:
                  - san_type: URI
                    matcher: {prefix: "{{.SANPrefix}}"}
              validation_context_sds_secret_config:
                name: "{{.Validation}}"
                sds_config:
                  resource_api_version: V3
                  api_config_source:
                    api_type: GRPC
                    transport_api_version: V3
                    grpc_services:
                      - envoy_grpc: {cluster_name: spire_agent}
`))

type standin struct {
	proc        *Proc
	admin, port int
}

// startStandin writes a bootstrap and starts the Envoy stand-in binary.
func startStandin(t *testing.T, bin, dir, name string, vals map[string]any) *standin {
	t.Helper()
	ports, err := freePorts(2)
	if err != nil {
		t.Fatal(err)
	}
	vals["Admin"], vals["Listen"] = ports[0], ports[1]
	var buf bytes.Buffer
	if err := standinBootstrap.Execute(&buf, vals); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, name+".yaml")
	if err := os.WriteFile(cfg, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	// Envoy's own arguments, and one it takes that the stand-in ignores.
	p, err := StartProc(dir, name, bin, "-c", cfg, "-l", "debug", "--service-cluster", "ignored")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Stop)
	return &standin{proc: p, admin: ports[0], port: ports[1]}
}

func (s *standin) get(ctx context.Context, path string) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d%s", s.port, path), nil)
	if err != nil {
		return 0, "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

func (s *standin) waitReady(ctx context.Context, t *testing.T) {
	t.Helper()
	if err := waitFor(ctx, s.proc.Name+" /ready LIVE", s.proc, func(ctx context.Context) bool {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/ready", s.admin), nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode == 200 && strings.TrimSpace(string(b)) == "LIVE"
	}); err != nil {
		t.Fatal(err)
	}
}

var xfccHash = regexp.MustCompile(`Hash=([0-9a-f]{64});URI=(\S+?)"`)

// TestEnvoyStandin runs the Envoy stand-in against a real SPIRE agent's SDS
// (unix workload attestation of the stand-in's process) and the xfccecho
// upstream, with the scaffold's bootstrap: the XFCC line names the SVID the
// agent issued; a rotated SVID is picked up on the open stream; a SAN
// matcher for another trust domain fails the handshake with Envoy's
// CERTIFICATE_VERIFY_FAILED reply; and when the agent goes away the
// stand-in logs Envoy's "StreamSecrets ... closed" line, which spirepod's
// verify diagnoses, and keeps serving with the secrets it has.
func TestEnvoyStandin(t *testing.T) {
	b := Require(t, Bins.SpireSet)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	dir := t.TempDir()
	const td = "standin.test"

	// x509pop: a team CA and this agent's leaf.
	ca := newCA("team-ca")
	caPath, _, err := ca.write(dir, "team-ca")
	if err != nil {
		t.Fatal(err)
	}
	const cn = "spire-agent-x509pop-standin-0"
	leafCrt, leafKey, err := ca.issue(cn, nil, false).write(dir, "agent")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := StartSpireServer(ctx, b, filepath.Join(dir, "server"), SpireServerConfig{TrustDomain: td, CABundlePath: caPath})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)

	sock := filepath.Join(dir, "agent.sock")
	conf := fmt.Sprintf(`agent {
  data_dir = %q
  log_level = "DEBUG"
  server_address = "127.0.0.1"
  server_port = "%d"
  socket_path = %q
  trust_bundle_path = %q
  trust_domain = %q
}
plugins {
  NodeAttestor "x509pop" {
    plugin_data {
      certificate_path = %q
      private_key_path = %q
    }
  }
  KeyManager "memory" {
    plugin_data {}
  }
  WorkloadAttestor "unix" {
    plugin_data {}
  }
}
`, filepath.Join(dir, "agent-data"), srv.Port, sock, srv.BundlePath, td, leafCrt, leafKey)
	confPath := filepath.Join(dir, "agent.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	agent, err := StartSpireAgent(ctx, b, dir, "spire-agent", confPath, sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(agent.Stop)

	// Two identities for this uid: a long-lived one, and one rotating every
	// few seconds (SPIRE renews an SVID at half its TTL).
	// The bed's server runs SPIRE's default agent_path_template: the
	// agent's ID is its leaf's SHA-1, not its common name (issue 21.16).
	leafPEM, err := os.ReadFile(leafCrt)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(leafPEM)
	if blk == nil {
		t.Fatalf("%s: no PEM block", leafCrt)
	}
	agentID := fmt.Sprintf("spiffe://%s/spire/agent/x509pop/%x", td, sha1.Sum(blk.Bytes))
	if out, err := srv.Run(ctx, "agent", "list"); err != nil || !strings.Contains(string(out), agentID) {
		t.Fatalf("agent list: want the fingerprint ID %s (SPIRE's default template); err %v\n%s", agentID, err, out)
	}
	parent := nodeAlias(ctx, t, srv, td, cn)
	clientID := fmt.Sprintf("spiffe://%s/ns/team/sa/httpbin-client", td)
	rotID := fmt.Sprintf("spiffe://%s/ns/team/sa/rotating", td)
	sel := fmt.Sprintf("unix:uid:%d", os.Getuid())
	for _, e := range []struct{ id, ttl string }{{clientID, "3600"}, {rotID, "10"}} {
		if out, err := srv.Run(ctx, "entry", "create", "-parentID", parent, "-spiffeID", e.id, "-selector", sel, "-x509SVIDTTL", e.ttl); err != nil {
			t.Fatalf("entry create %s: %v\n%s", e.id, err, out)
		}
	}

	// The upstream: xfccecho with a minted SVID.
	echoDir := filepath.Join(dir, "echo")
	if err := os.MkdirAll(echoDir, 0o700); err != nil {
		t.Fatal(err)
	}
	echoID := fmt.Sprintf("spiffe://%s/ns/spire-sample/sa/httpbin", td)
	if out, err := srv.Run(ctx, "x509", "mint", "-spiffeID", echoID, "-write", echoDir); err != nil {
		t.Fatalf("x509 mint: %v\n%s", err, out)
	}
	t0 := time.Now()
	echoBin, err := StandinBinary(ctx, dir, "xfccecho")
	if err != nil {
		t.Fatal(err)
	}
	envoyBin, err := StandinBinary(ctx, dir, "envoy")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("stand-ins built in %v", time.Since(t0).Round(time.Millisecond))
	echoPort, err := FreePort()
	if err != nil {
		t.Fatal(err)
	}
	echo, err := StartProc(dir, "xfccecho", echoBin, "-listen", fmt.Sprintf("127.0.0.1:%d", echoPort),
		"-cert", filepath.Join(echoDir, "svid.pem"), "-key", filepath.Join(echoDir, "key.pem"), "-bundle", filepath.Join(echoDir, "bundle.pem"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(echo.Stop)

	vals := func(secret, sanPrefix string) map[string]any {
		return map[string]any{"Pipe": sock, "UpstreamHost": "localhost", "UpstreamPort": echoPort,
			"Secret": secret, "Validation": "spiffe://" + td, "SANPrefix": sanPrefix}
	}
	main := startStandin(t, envoyBin, dir, "envoy-main", vals(clientID, "spiffe://"+td+"/"))
	rot := startStandin(t, envoyBin, dir, "envoy-rotating", vals(rotID, "spiffe://"+td+"/"))
	wrong := startStandin(t, envoyBin, dir, "envoy-wrong-san", vals(clientID, "spiffe://other.test/"))
	for _, s := range []*standin{main, rot, wrong} {
		s.waitReady(ctx, t)
	}

	// 1. The XFCC line names the client SVID the agent issued to the stand-in.
	code, body, err := main.get(ctx, "/headers")
	if err != nil || code != 200 {
		t.Fatalf("GET /headers through the stand-in: %d %v\n%s\n%s", code, err, body, main.proc.Tail(3000))
	}
	m := xfccHash.FindStringSubmatch(body)
	if m == nil || m[2] != clientID || !strings.Contains(body, "By="+echoID+";") {
		t.Fatalf("XFCC does not name By=%s and URI=%s:\n%s", echoID, clientID, body)
	}
	fetchDir := filepath.Join(dir, "fetched")
	if err := os.MkdirAll(fetchDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.CommandContext(ctx, b.SpireAgent(), "api", "fetch", "x509", "-socketPath", sock, "-write", fetchDir).CombinedOutput(); err != nil {
		t.Fatalf("api fetch x509: %v\n%s", err, out)
	}
	if !svidHashIn(t, fetchDir, m[1]) {
		t.Fatalf("XFCC Hash=%s is none of the SVIDs the agent hands this uid (%s)", m[1], fetchDir)
	}
	t.Logf("XFCC: %s", regexp.MustCompile(`By=[^"]+`).FindString(body))

	// 2. Rotation: the rotating identity's certificate changes while the
	// stream stays open.
	closes := strings.Count(rot.proc.Tail(1<<20), "StreamSecrets gRPC config stream")
	hashes := map[string]bool{}
	if err := waitFor(ctx, "a rotated SVID in the XFCC Hash", rot.proc, func(ctx context.Context) bool {
		code, body, err := rot.get(ctx, "/headers")
		if err != nil || code != 200 {
			return false
		}
		if m := xfccHash.FindStringSubmatch(body); m != nil && m[2] == rotID {
			hashes[m[1]] = true
		}
		return len(hashes) >= 2
	}); err != nil {
		t.Fatalf("%v (hashes seen: %v)\n--- stand-in log:\n%s\n--- agent log:\n%s", err, hashes, rot.proc.Tail(4000), agent.Proc.Tail(4000))
	}
	if n := strings.Count(rot.proc.Tail(1<<20), "StreamSecrets gRPC config stream") - closes; n != 0 {
		t.Errorf("the SDS stream was re-opened %d times during rotation; Envoy keeps it open", n)
	}

	// 3. A SAN matcher for another trust domain: Envoy's TLS failure reply,
	// which verify diagnoses in curl's log.
	code, body, err = wrong.get(ctx, "/headers")
	if err != nil || code != http.StatusServiceUnavailable || !strings.Contains(body, "CERTIFICATE_VERIFY_FAILED") {
		t.Fatalf("wrong SAN matcher: %d %v %q, want 503 with CERTIFICATE_VERIFY_FAILED\n--- stand-in log:\n%s", code, err, body, wrong.proc.Tail(4000))
	}
	if p, ok := verify.MatchPattern(verify.ContainerCurl, body); !ok || p.ID != "curl-upstream-tls" {
		t.Errorf("verify diagnoses the stand-in's TLS failure reply as %q, want curl-upstream-tls", p.ID)
	}

	// 4. The agent goes away: Envoy's stream-closed warning, diagnosed by
	// verify; the stand-in keeps serving with the secrets it has.
	agent.Stop()
	if err := waitFor(ctx, "StreamSecrets closed in the stand-in's log", main.proc, func(context.Context) bool {
		return main.proc.LogContains("StreamSecrets gRPC config stream to spire_agent closed")
	}); err != nil {
		t.Fatal(err)
	}
	f, ok := verify.MatchLog(verify.ContainerEnvoy, strings.Split(main.proc.Tail(1<<20), "\n"))
	if !ok || f.Pattern.ID != "envoy-sds-rejected" {
		t.Errorf("verify's diagnosis of the stand-in's log: %q (%s), want envoy-sds-rejected", f.Pattern.ID, f.Line)
	}
	if code, body, err := main.get(ctx, "/headers"); err != nil || code != 200 || !strings.Contains(body, "URI="+clientID) {
		t.Errorf("after the agent stopped, the stand-in should still serve with its last secrets: %d %v %s", code, err, body)
	}
}

// svidHashIn reports whether one of the svid.N.pem leaf certificates in dir
// has this sha256.
func svidHashIn(t *testing.T, dir, hash string) bool {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(dir, "svid.*.pem"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if blk, _ := pem.Decode(b); blk != nil {
			sum := sha256.Sum256(blk.Bytes)
			if hex.EncodeToString(sum[:]) == hash {
				return true
			}
		}
	}
	return false
}

// nodeAlias registers a node alias for the agent whose x509pop leaf has
// common name cn, as the scaffold's registration does, and returns its ID:
// the server runs SPIRE's default agent_path_template (the leaf's
// fingerprint), so an agent's own ID is not known before cert-manager
// issues its leaf.
func nodeAlias(ctx context.Context, t *testing.T, srv *SpireServer, td, cn string) string {
	t.Helper()
	id := fmt.Sprintf("spiffe://%s/node-alias/%s", td, cn)
	if out, err := srv.Run(ctx, "entry", "create", "-node", "-spiffeID", id, "-selector", "x509pop:subject:cn:"+cn); err != nil {
		t.Fatalf("entry create -node %s: %v\n%s", id, err, out)
	}
	return id
}
