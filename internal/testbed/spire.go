package testbed

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// SpireServerConfig is what a test varies in a real spire-server's config.
type SpireServerConfig struct {
	TrustDomain string
	// CABundlePath is the x509pop trust list (one PEM file, may hold several CAs).
	CABundlePath string
	// AgentPathTemplate is x509pop's agent_path_template. Empty leaves it
	// out, so SPIRE's own default applies (/{{ .PluginName }}/{{ .Fingerprint }}:
	// the agent ID is the leaf's SHA-1), which is what a correct platform
	// runs (issue 21.16). Only the tests that prove SPD401 set a template
	// built from the subject's common name.
	AgentPathTemplate string
	// UpstreamCACert and UpstreamCAKey, when set, sign the server's CA (the
	// UpstreamAuthority "disk" plugin): the trust bundle is then that
	// upstream root, known before the server starts and kept across restarts,
	// as when the SPIRE operators hand a team "the server CA" in advance.
	UpstreamCACert, UpstreamCAKey string
	// AgentTTL is the agents' SVID lifetime (default: SPIRE's, 1h). Agents
	// rotate (x509pop: re-attest) at half of it.
	AgentTTL string
	// Port, when not 0, is the port to bind (a restart keeps the address).
	Port int
}

// SpireServer is a running spire-server.
type SpireServer struct {
	Proc        *Proc
	Dir         string
	Socket      string
	Port        int
	TrustDomain string
	// BundlePath holds the server's CA bundle (PEM), written after start:
	// agents use it as trust_bundle_path.
	BundlePath string
	bin        string
}

// StartSpireServer writes a config (sqlite datastore, memory key manager,
// x509pop node attestor) and starts spire-server on 127.0.0.1.
func StartSpireServer(ctx context.Context, b Bins, dir string, cfg SpireServerConfig) (*SpireServer, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	port := cfg.Port
	if port == 0 {
		var err error
		if port, err = FreePort(); err != nil {
			return nil, err
		}
	}
	var extraServer, extraPlugins string
	if cfg.AgentTTL != "" {
		extraServer = fmt.Sprintf("  agent_ttl = %q\n", cfg.AgentTTL)
	}
	if cfg.UpstreamCACert != "" {
		extraPlugins = fmt.Sprintf("  UpstreamAuthority \"disk\" {\n    plugin_data {\n      cert_file_path = %q\n      key_file_path = %q\n    }\n  }\n", cfg.UpstreamCACert, cfg.UpstreamCAKey)
	}
	var tmpl string
	if cfg.AgentPathTemplate != "" {
		tmpl = fmt.Sprintf("\n      agent_path_template = %q", cfg.AgentPathTemplate)
	}
	s := &SpireServer{Dir: dir, Socket: filepath.Join(dir, "api.sock"), Port: port, TrustDomain: cfg.TrustDomain, bin: b.SpireServer()}
	conf := fmt.Sprintf(`server {
  bind_address = "127.0.0.1"
  bind_port = "%d"
  socket_path = %q
  trust_domain = %q
  data_dir = %q
  log_level = "DEBUG"
  ca_ttl = "24h"
  default_x509_svid_ttl = "1h"
%s}
plugins {
%s
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
    plugin_data {
      ca_bundle_path = %q%s
    }
  }
}
health_checks {
  listener_enabled = false
}
`, port, s.Socket, cfg.TrustDomain, filepath.Join(dir, "data"), extraServer, extraPlugins, filepath.Join(dir, "data", "datastore.sqlite3"), cfg.CABundlePath, tmpl)
	confPath := filepath.Join(dir, "server.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		return nil, err
	}
	var err error
	s.Proc, err = StartProc(dir, "spire-server", s.bin, "run", "-config", confPath)
	if err != nil {
		return nil, err
	}
	if err := waitFor(ctx, "spire-server healthy", s.Proc, func(ctx context.Context) bool {
		_, err := s.Run(ctx, "healthcheck")
		return err == nil
	}); err != nil {
		s.Proc.Stop()
		return nil, err
	}
	out, err := s.Run(ctx, "bundle", "show", "-format", "pem")
	if err != nil {
		s.Proc.Stop()
		return nil, fmt.Errorf("bundle show: %v: %s", err, out)
	}
	s.BundlePath = filepath.Join(dir, "bundle.pem")
	if err := os.WriteFile(s.BundlePath, []byte(out), 0o644); err != nil {
		return nil, err
	}
	return s, nil
}

// Run runs `spire-server <sub...> -socketPath <sock> <rest...>`: the first
// word(s) up to the first flag are the subcommand.
func (s *SpireServer) Run(ctx context.Context, args ...string) (string, error) {
	i := 0
	for i < len(args) && !strings.HasPrefix(args[i], "-") {
		i++
	}
	full := append(append(append([]string{}, args[:i]...), "-socketPath", s.Socket), args[i:]...)
	cmd := exec.CommandContext(ctx, s.bin, full...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// Stop stops the server.
func (s *SpireServer) Stop() { s.Proc.Stop() }

// SpireAgent is a running spire-agent.
type SpireAgent struct {
	Proc   *Proc
	Socket string
	bin    string
}

// StartSpireAgent starts spire-agent with a config file the test wrote and
// waits until it is healthy (attested).
func StartSpireAgent(ctx context.Context, b Bins, dir, name, confPath, socketPath string) (*SpireAgent, error) {
	return StartSpireAgentEnv(ctx, b, dir, name, confPath, socketPath, nil)
}

// StartSpireAgentEnv is StartSpireAgent with extra environment variables
// for the agent alone (e.g. MY_NODE_NAME for its k8s workload attestor), so
// tests running in parallel need not change the test process's environment.
func StartSpireAgentEnv(ctx context.Context, b Bins, dir, name, confPath, socketPath string, env []string) (*SpireAgent, error) {
	a := &SpireAgent{Socket: socketPath, bin: b.SpireAgent()}
	var err error
	a.Proc, err = startProcEnv(dir, name, a.bin, env, "run", "-config", confPath)
	if err != nil {
		return nil, err
	}
	if err := waitFor(ctx, name+" healthy", a.Proc, func(ctx context.Context) bool {
		out, err := exec.CommandContext(ctx, a.bin, "healthcheck", "-socketPath", socketPath).CombinedOutput()
		return err == nil && strings.Contains(string(out), "healthy")
	}); err != nil {
		a.Proc.Stop()
		return nil, err
	}
	return a, nil
}

// Stop stops the agent.
func (a *SpireAgent) Stop() { a.Proc.Stop() }
