// Command bed runs the standing test bed: the real components the tests
// start (etcd, kube-apiserver, controller-manager, scheduler, kwok's node,
// cert-manager), a real SPIRE server and the fake GitHub with an empty city
// repository, started once and kept until it is stopped. It prints
// environment lines (kubeconfig, SPIRE server address and bundle, the fake
// GitHub's URL and token) and writes them to <dir>/bed.env, with
// <dir>/bed.json for the tests: with SPIREPOD_BED=<dir> the test packages
// that share a bed use this one instead of starting their own.
//
// The bed plays the platform team: it merges every pull request opened on
// the city repository and loads what main then holds into its SPIRE server
// (the trust list, each team's spiffe-ids.json), so a newcomer can walk
// through the guide against it (see the README).
//
//	hack/bed.sh start   (make bed)       in the background; prints the env lines
//	hack/bed.sh stop    (make bed-stop)  stops it; no process is left
//	go run ./hack/bed -dir DIR           in the foreground until interrupted
//
// Every process is started by PID with Pdeathsig: when this command ends,
// however it ends, they end with it.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/spirepod/spirepod/internal/fakes/githubfake"
	"github.com/spirepod/spirepod/internal/project"
	"github.com/spirepod/spirepod/internal/testbed"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("bed", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dirFlag := fs.String("dir", "", "the bed's directory (default: a new one under $TMPDIR); bed.json and bed.env go there")
	ghUser := fs.String("github-user", "alice", "the fake GitHub's authenticated user")
	ghToken := fs.String("github-token", "bed-token", "the only token the fake GitHub accepts")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	logf := func(f string, a ...any) { fmt.Fprintf(stderr, "bed: "+f+"\n", a...) }

	b := testbed.Bins{Root: testbed.DefaultRoot()}
	if missing := b.Missing(append(b.KubeSet(), b.SpireSet()...)...); len(missing) > 0 {
		logf("%d test-bed binaries missing under %s: %s\nhint: run `make testbin` first", len(missing), b.Root, strings.Join(missing, ", "))
		return 1
	}
	dir := *dirFlag
	if dir == "" {
		d, err := os.MkdirTemp("", "spirepod-bed-")
		if err != nil {
			logf("%v", err)
			return 1
		}
		dir = d
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		logf("-dir %s: %v", dir, err)
		return 1
	}
	// Agents and fetches in a team's walkthrough may run as another uid.
	if err := os.Chmod(dir, 0o755); err != nil {
		logf("%v", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	bed, err := start(ctx, b, dir, *ghUser, *ghToken, logf)
	if bed != nil {
		defer bed.stop()
	}
	if err != nil {
		logf("%v", err)
		return 1
	}
	env := bed.env()
	if err := os.WriteFile(filepath.Join(dir, "bed.env"), []byte(env), 0o600); err != nil {
		logf("%v", err)
		return 1
	}
	if err := testbed.WriteBedInfo(dir, bed.info); err != nil {
		logf("%v", err)
		return 1
	}
	fmt.Fprint(stdout, env)
	logf("ready (pid %d); stop with `hack/bed.sh stop` or an interrupt", os.Getpid())
	bed.platform(ctx)
	logf("stopping")
	return 0
}

type standing struct {
	dir     string
	cluster *testbed.Cluster
	gh      *githubfake.Server
	srv     *testbed.SpireServer
	srvCfg  testbed.SpireServerConfig
	bins    testbed.Bins
	profile project.Profile
	config  string // the user config pointing the dev profile at this bed
	info    testbed.BedInfo
	logf    func(string, ...any)
}

func start(ctx context.Context, b testbed.Bins, dir, ghUser, ghToken string, logf func(string, ...any)) (*standing, error) {
	s := &standing{dir: dir, bins: b, logf: logf, profile: project.MergeProfiles(nil)[project.DefaultEnvironment]}
	sctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	cdir := filepath.Join(dir, "cluster")
	if err := os.MkdirAll(cdir, 0o700); err != nil {
		return s, err
	}
	c, err := testbed.Start(sctx, b, cdir, testbed.Options{Logf: logf})
	s.cluster = c
	if err != nil {
		if c != nil {
			c.DumpLogs(logf)
		}
		return s, fmt.Errorf("cluster: %w", err)
	}

	s.gh = githubfake.New(ghUser, ghToken)
	if _, err := s.gh.AddRepo(s.profile.CityRepo, true, s.profile.BaseBranch, map[string]string{"README.md": "city\n"}); err != nil {
		return s, fmt.Errorf("fake GitHub: %w", err)
	}

	// The SPIRE server: the profile's trust domain, an upstream root made
	// now (the bundle teams set before the server has seen them, stable
	// across the restarts that load a new trust list), and a placeholder CA
	// on the trust list until a team's trust-ca pull request merges.
	sdir := filepath.Join(dir, "spire")
	if err := os.MkdirAll(sdir, 0o700); err != nil {
		return s, err
	}
	upCert, upKey, err := testbed.WriteUpstreamCA(filepath.Join(dir, "upstream"), "upstream")
	if err != nil {
		return s, err
	}
	placeholder, _, err := testbed.WriteUpstreamCA(filepath.Join(dir, "placeholder"), "placeholder")
	if err != nil {
		return s, err
	}
	data, err := os.ReadFile(placeholder)
	if err != nil {
		return s, err
	}
	trust := filepath.Join(sdir, "x509pop-trust-list.pem")
	if err := os.WriteFile(trust, data, 0o644); err != nil {
		return s, err
	}
	port, err := testbed.FreePort()
	if err != nil {
		return s, err
	}
	s.srvCfg = testbed.SpireServerConfig{TrustDomain: s.profile.TrustDomain, CABundlePath: trust,
		AgentPathTemplate: "/{{ .PluginName }}/{{ .Fingerprint }}", UpstreamCACert: upCert, UpstreamCAKey: upKey, Port: port}
	if s.srv, err = testbed.StartSpireServer(sctx, b, sdir, s.srvCfg); err != nil {
		return s, fmt.Errorf("spire-server: %w", err)
	}

	// A user config that points the default profile at this bed's server.
	s.config = filepath.Join(dir, "config.yaml")
	cfg := fmt.Sprintf("profiles:\n  %s:\n    spireServer: 127.0.0.1:%d\n", project.DefaultEnvironment, port)
	if err := os.WriteFile(s.config, []byte(cfg), 0o644); err != nil {
		return s, err
	}
	s.info = testbed.BedInfo{PID: os.Getpid(), Dir: dir, Kubeconfig: c.Kubeconfig, Context: c.Context, Server: c.Server,
		TestbinRoot: b.Root, CertManager: true,
		SpireServerAddress: fmt.Sprintf("127.0.0.1:%d", port), SpireServerSocket: s.srv.Socket, SpireServerBundle: upCert,
		TrustDomain: s.profile.TrustDomain, GitHubURL: s.gh.URL, GitHubToken: ghToken, GitHubRepo: s.profile.CityRepo}
	return s, nil
}

// env is the bed as shell lines (`eval "$(hack/bed.sh env)"`).
func (s *standing) env() string {
	i := s.info
	lines := []string{
		"SPIREPOD_BED=" + i.Dir,
		"KUBECONFIG=" + i.Kubeconfig,
		"SPIREPOD_BED_CONTEXT=" + i.Context,
		"SPIREPOD_CONFIG=" + s.config,
		"SPIRE_SERVER_ADDRESS=" + i.SpireServerAddress,
		"SPIRE_SERVER_SOCKET=" + i.SpireServerSocket,
		"SPIRE_SERVER_BUNDLE=" + i.SpireServerBundle,
		"SPIREPOD_GITHUB_API_URL=" + i.GitHubURL,
		"GH_TOKEN=" + i.GitHubToken,
		"SPIREPOD_TESTBIN=" + i.TestbinRoot,
	}
	var b strings.Builder
	for _, l := range lines {
		b.WriteString("export " + l + "\n")
	}
	return b.String()
}

func (s *standing) stop() {
	os.Remove(filepath.Join(s.dir, testbed.BedFile))
	if s.srv != nil {
		s.srv.Stop()
	}
	if s.gh != nil {
		s.gh.Close()
	}
	if s.cluster != nil {
		s.cluster.Stop()
	}
}

// platform is the platform team: every second it merges the open pull
// requests and, when main changed, loads the trust list (a server restart:
// the upstream root, so the bundle, stays) and each team's spiffe-ids.json
// (`entry create -data`, then `entry update -data` for entries that exist).
func (s *standing) platform(ctx context.Context) {
	repo := s.profile.CityRepo
	var lastTrust string
	loaded := map[string]string{}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		for _, p := range s.gh.Pulls(repo) {
			if p.State != "open" {
				continue
			}
			if _, err := s.gh.Merge(repo, p.Number); err != nil {
				s.logf("merge #%d: %v", p.Number, err)
				continue
			}
			s.logf("merged #%d %q", p.Number, p.Title)
		}
		files, err := s.gh.Files(repo, s.profile.BaseBranch)
		if err != nil {
			s.logf("read main: %v", err)
			continue
		}
		if t := files[s.profile.TrustList.Path]; t != "" && t != lastTrust {
			if err := s.loadTrust(ctx, t); err != nil {
				s.logf("trust list: %v", err)
				continue
			}
			lastTrust = t
			loaded = map[string]string{} // a restarted server keeps its datastore; reload to be sure
		}
		var names []string
		for name := range files {
			if path.Base(name) == "spiffe-ids.json" {
				names = append(names, name)
			}
		}
		sort.Strings(names)
		for _, name := range names {
			if files[name] == "" || loaded[name] == files[name] {
				continue
			}
			if err := s.loadEntries(ctx, name, files[name]); err != nil {
				s.logf("%s: %v", name, err)
				continue
			}
			loaded[name] = files[name]
		}
	}
}

func (s *standing) loadTrust(ctx context.Context, pem string) error {
	if err := os.WriteFile(s.srvCfg.CABundlePath, []byte(pem), 0o644); err != nil {
		return err
	}
	s.srv.Stop()
	sctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	srv, err := testbed.StartSpireServer(sctx, s.bins, s.srv.Dir, s.srvCfg)
	if err != nil {
		return fmt.Errorf("restart spire-server: %w", err)
	}
	s.srv = srv
	s.logf("loaded the merged trust list (%s) into the SPIRE server", s.profile.TrustList.Path)
	return nil
}

func (s *standing) loadEntries(ctx context.Context, name, content string) error {
	f := filepath.Join(s.srv.Dir, strings.NewReplacer("/", "_").Replace(name))
	if err := os.WriteFile(f, []byte(content), 0o644); err != nil {
		return err
	}
	out, err := s.srv.Run(ctx, "entry", "create", "-data", f)
	if err != nil && strings.Contains(out, "AlreadyExists") {
		out, err = s.srv.Run(ctx, "entry", "update", "-data", f)
	}
	if err != nil {
		return fmt.Errorf("entry create/update -data: %v\n%s", err, out)
	}
	s.logf("loaded %s into the SPIRE server", name)
	return nil
}
