package main

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"strings"

	"github.com/spf13/cobra"

	"github.com/spirepod/spirepod/internal/project"
	"github.com/spirepod/spirepod/internal/scaffold"
	"github.com/spirepod/spirepod/scaffoldfs"
)

type initOptions struct {
	f *Factory

	Dir            string
	Team           string
	Namespace      string
	Env            string
	Name           string
	Replicas       int
	ServiceAccount string
	ServerCA       string
	Naming         string
	Issuer         string
	Upstream       project.Upstream
	From           string
	Force          bool
	DryRun         bool
}

func newCmdInit(f *Factory, runF func(*initOptions) error) *cobra.Command {
	opts := &initOptions{f: f}
	facts := defaultScaffoldFacts()
	guide := project.HelpExample()
	guide.Naming = project.NamingGuide
	cmd := &cobra.Command{
		Use:   "init [DIR]",
		Short: "Scaffold the same-pod SPIRE agent + Envoy manifests for your namespace (guide step 1)",
		Long: reflow(`Scaffold a complete spire-envoy-integration directory for your team: the StatefulSet
(gen-cert sidecar, spire-agent, envoy and curl in one Pod), its RBAC, the agent and Envoy
configuration, the bundle ConfigMap, one cert-manager Certificate per pod (` + facts.Certificate + `),
certs/ (the team CA Secret ` + facts.CASecret + ` and ` + facts.Issuer + `; ` + clusterIssuerNote + `),
a .gitignore that keeps the CA key out of git, and spirepod.yaml.

Every name is scoped to the team: agent CNs ` + facts.AgentCN + `, node aliases ` + facts.Alias + `,
the field manager ` + facts.FieldManager + `. The pod runs under Pod
Security "restricted" (non-root, no privilege escalation, all capabilities dropped, seccomp
RuntimeDefault, read-only root filesystems), with requests, limits and probes. Images come from
the profile (images: in the user config overrides them): alpine/k8s:1.31.12 (gen-cert),
ghcr.io/spiffe/spire-agent:<the environment's SPIRE version>, envoyproxy/envoy:v1.32.3,
curlimages/curl:8.11.1.

The namespace is rewritten structurally everywhere it occurs, inside SPIFFE IDs, scripts and
configuration too; the cert-manager namespace of certs/secret is kept.

Everything is rendered in memory first. Running again with the same inputs writes nothing;
changed inputs show a diff and need --force; files you added are left alone. An interrupted
init leaves nothing half-written: a new directory appears whole or not at all, an existing one
keeps its files as they were.`),
		Example: `  spirepod init --team payments --namespace payments
  spirepod init --team payments --namespace payments --env lab --replicas 3 --server-ca server-ca.pem
  spirepod init --team payments --namespace payments --from ~/src/city --dry-run`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.Dir = "spire-envoy-integration"
			if len(args) == 1 {
				opts.Dir = args[0]
			}
			if err := opts.askMissing(); err != nil {
				return err
			}
			if err := opts.validate(); err != nil {
				return err
			}
			if runF != nil {
				return runF(opts)
			}
			return initRun(cmd, opts)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&opts.Team, "team", "", "your team's name (a DNS-1123 label; names branches and files)")
	fl.StringVarP(&opts.Namespace, "namespace", "n", "", "your team's Kubernetes namespace (replaces spire-envoy-integration-ns)")
	fl.StringVar(&opts.Env, "env", project.DefaultEnvironment, "environment profile: dev, lab, or one from the config file")
	fl.StringVar(&opts.Name, "name", scaffold.TemplateName, "StatefulSet name; pods are <name>-0, <name>-1, …")
	fl.IntVar(&opts.Replicas, "replicas", 1, "number of pods (each gets its own agent identity)")
	fl.StringVar(&opts.ServiceAccount, "service-account", scaffold.TemplateServiceAccount, "service account of the pods; names the workload's SPIFFE ID")
	fl.StringVar(&opts.Naming, "naming", project.DefaultNaming, "agent names: namespaced (CN "+facts.AgentCN+", alias "+facts.Alias+") or guide (the guide's CN "+guide.AgentCN("<pod>")+", alias "+guide.NodeAliasID("<pod>")+"; needs a StatefulSet name no other team uses)")
	fl.StringVar(&opts.Issuer, "issuer", project.DefaultIssuerScope, "agent certificate issuer: namespaced ("+facts.Issuer+", CA Secret "+facts.CASecret+") or cluster ("+strings.TrimPrefix(clusterIssuerNote, "with init --issuer cluster: ")+")")
	fl.StringVar(&opts.Upstream.Host, "upstream-host", "", "the remote service Envoy calls over mTLS (default httpbin.spire-sample.svc.cluster.local)")
	fl.IntVar(&opts.Upstream.Port, "upstream-port", 0, "its port (default 8443)")
	fl.StringVar(&opts.Upstream.SNI, "upstream-sni", "", "the TLS server name Envoy sends (default: --upstream-host)")
	fl.StringVar(&opts.Upstream.SpiffeID, "upstream-id", "", "the upstream's SPIFFE ID; Envoy accepts exactly this one (default spiffe://<trust domain>/ns/spire-sample/sa/httpbin)")
	fl.StringVar(&opts.ServerCA, "server-ca", "", "PEM file with the SPIRE server's CA, put into the bundle ConfigMap")
	fl.StringVar(&opts.From, "from", "", "local city checkout to take "+scaffold.CityTemplatePath+" from (at HEAD) instead of the embedded copy")
	fl.BoolVar(&opts.Force, "force", false, "overwrite files that differ from what would be written")
	markCLIOnly(fl, "force")
	fl.BoolVar(&opts.DryRun, "dry-run", false, "print the plan and the diff; write nothing")
	return cmd
}

// migrateHint says how to move a scaffold to team-scoped names: init --force
// from the scaffold's parent directory, with the scaffold's own values.
func migrateHint(p *project.Project) string {
	return "move it to team-scoped names: `" + p.ReinitCommand() + "` (it keeps the team CA; then `spirepod apply` and new PRs)"
}

// askMissing prompts for required values on a terminal. Each answer is
// checked at once, as the flag would be, and asked again (up to three
// times) with what is wrong: a bad team name is not taken and refused later.
func (o *initOptions) askMissing() error {
	io := o.f.IO
	ask := []struct {
		flag  string
		dst   *string
		check func(string) error
	}{{"team", &o.Team, project.CheckTeam}, {"namespace", &o.Namespace, project.CheckNamespace}}
	var r *bufio.Reader
	for _, a := range ask {
		if *a.dst != "" {
			continue
		}
		if !io.InTTY || !io.ErrTTY {
			return usageError(fmt.Sprintf("pass --%s (no terminal to ask on)", a.flag), "--%s is required", a.flag)
		}
		if r == nil {
			r = bufio.NewReader(io.In)
		}
		for try := 1; ; try++ {
			fmt.Fprintf(io.ErrOut, "? %s: ", a.flag)
			line, err := r.ReadString('\n')
			if err != nil && line == "" {
				return usageError(fmt.Sprintf("pass --%s", a.flag), "--%s is required", a.flag)
			}
			v := strings.TrimSpace(line)
			cerr := a.check(v)
			if cerr == nil {
				*a.dst = v
				break
			}
			if try == 3 {
				return usageError(fmt.Sprintf("pass --%s", a.flag), "--%s: %v", a.flag, cerr)
			}
			fmt.Fprintf(io.ErrOut, "  %v\n", cerr)
		}
	}
	return nil
}

// validate is pure: it checks flag values and names the flag at fault.
func (o *initOptions) validate() error {
	if err := project.CheckNamespace(o.Namespace); err != nil {
		return usageError("a namespace is a DNS-1123 label: lower-case letters, digits and '-', at most 63 characters",
			"--namespace: %v", err)
	}
	if o.Team == "" {
		return usageError("pass --team", "--team is required")
	}
	if err := project.CheckTeam(o.Team); err != nil {
		return usageError("the team name names branches and files: lower-case letters, digits and '-'", "--team: %v", err)
	}
	if o.Replicas < 1 || o.Replicas > project.MaxReplicas {
		return usageError("one pod is the usual start", "--replicas must be between 1 and %d, got %d", project.MaxReplicas, o.Replicas)
	}
	if err := project.CheckStatefulSet(o.Name, o.Replicas); err != nil {
		hint := "use lower-case letters, digits and '-', starting and ending with a letter or digit"
		if len(o.Name) > 63 {
			hint = "choose a --name of at most 63 characters"
		}
		return usageError(hint, "--name: %v", err)
	}
	switch o.Naming {
	case project.NamingNamespaced, project.NamingGuide:
	default:
		return usageError("use --naming namespaced (the default) or --naming guide", "--naming must be namespaced or guide, got %q", o.Naming)
	}
	if o.Naming == project.NamingGuide && o.Name == project.DefaultStatefulSet {
		return usageError("pass --name with a StatefulSet name no other team of the SPIRE server uses, or keep --naming namespaced",
			"--naming guide with the default --name %s: every team's pods would share the node alias spiffe://<td>/spire-agent-x509pop-%s-0 and receive each other's SVIDs", o.Name, o.Name)
	}
	names := &project.Project{Naming: o.Naming, Namespace: o.Namespace, StatefulSet: o.Name}
	last := names.PodName(o.Replicas - 1)
	if err := project.CheckAgentCN(names.AgentCN(last)); err != nil {
		return usageError("choose a shorter --name (or namespace), or fewer --replicas",
			"--name/--replicas: pod %q: %v", last, err)
	}
	switch o.Issuer {
	case project.IssuerNamespaced, project.IssuerCluster:
	default:
		return usageError("use --issuer namespaced (the default) or --issuer cluster", "--issuer must be namespaced or cluster, got %q", o.Issuer)
	}
	if o.ServiceAccount == "" {
		return usageError("pass --service-account", "--service-account must not be empty")
	}
	if err := project.CheckServiceAccount(o.ServiceAccount); err != nil {
		return usageError("a service account name is lower-case letters, digits, '-' and '.'", "--service-account: %v", err)
	}
	return nil
}

// initResult is what -o json prints.
type initResult struct {
	Dir     string                `json:"dir"`
	Source  string                `json:"source"`
	DryRun  bool                  `json:"dryRun"`
	Changed bool                  `json:"changed"`
	Files   []scaffold.FileChange `json:"files"`
	Project *project.Project      `json:"project"`
	Next    []string              `json:"next,omitempty"`
}

func initRun(cmd *cobra.Command, o *initOptions) error {
	lo, err := o.libOptions()
	if err != nil {
		return err
	}
	r, err := scaffold.Init(cmd.Context(), lo)
	if err != nil {
		return o.initError(err)
	}
	p, plan := r.Project, r.Plan
	res := initResult{Dir: r.Dir, Source: r.Source, DryRun: r.DryRun, Changed: r.Changed, Files: plan.Files, Project: p}
	out, errOut := o.f.IO.Out, o.f.IO.ErrOut
	if o.DryRun {
		if o.f.JSON() {
			return writeJSON(out, res)
		}
		printPlan(out, plan, "would ")
		fmt.Fprint(out, plan.Diff())
		return nil
	}
	cd := o.Dir
	if abs, err := o.f.Abs(o.Dir); err == nil {
		if cwd, err := o.f.Abs("."); err == nil && abs == cwd {
			cd = "" // already there
		}
	}
	res.Next = nextSteps(o.f, p, cd)
	if o.f.JSON() {
		return writeJSON(out, res)
	}
	if !r.Changed {
		fmt.Fprintf(errOut, "No changes: %s is up to date.\n", o.Dir)
		return nil
	}
	printPlan(errOut, plan, "")
	fmt.Fprintf(errOut, "\nScaffolded %s for team %s in namespace %s (%s, trust domain %s).\nNext:\n", o.Dir, o.Team, o.Namespace, o.Env, p.TrustDomain)
	for _, s := range res.Next {
		fmt.Fprintf(errOut, "  %s\n", s)
	}
	fmt.Fprintln(out, r.Dir)
	return nil
}

// libOptions are the library's options from the flags: paths made
// absolute against the working directory, the profiles from the config
// file, the embedded template, the rotation guard.
func (o *initOptions) libOptions() (scaffold.InitOptions, error) {
	lo := scaffold.InitOptions{
		Team: o.Team, Namespace: o.Namespace, Env: o.Env, Name: o.Name, Replicas: o.Replicas,
		ServiceAccount: o.ServiceAccount, Naming: o.Naming, Issuer: o.Issuer, Upstream: o.Upstream,
		Profiles: o.f.Profiles(), Template: scaffoldfs.Scaffold(), Force: o.Force, DryRun: o.DryRun,
		CheckRotation: func(p *project.Project) error { return checkNoRotationForCA(o.f, p, "`spirepod init`") },
	}
	for _, path := range []struct{ dst, src *string }{{&lo.Dir, &o.Dir}, {&lo.From, &o.From}, {&lo.ServerCAFile, &o.ServerCA}} {
		if *path.src == "" {
			continue
		}
		abs, err := o.f.Abs(*path.src)
		if err != nil {
			return lo, err
		}
		*path.dst = abs
	}
	return lo, nil
}

// initError maps the library's typed errors to the flag at fault, an exit
// code and a hint.
func (o *initOptions) initError(err error) error {
	var ie *scaffold.InitError
	var re *scaffold.RefusedError
	var ce *scaffold.ConflictError
	var rendErr *scaffold.RenderError
	switch {
	case errors.As(err, &ie):
		switch ie.Input {
		case scaffold.InputEnv:
			return usageError("run with --env dev or --env lab, or define the profile in the config file", "--env: %v", ie.Err)
		case scaffold.InputServerCA:
			var pe *fs.PathError
			if errors.As(ie.Err, &pe) {
				return usageError("pass the PEM file holding the SPIRE server's CA", "--server-ca %s: %v", o.ServerCA, pathErr(ie.Err))
			}
			return usageError("ask the Agora team for the SPIRE server's CA certificate (PEM)", "--server-ca %s: %v", o.ServerCA, ie.Err)
		case scaffold.InputFrom:
			return usageError("point --from at a city checkout that has "+scaffold.CityTemplatePath+" committed", "--from: %v", ie.Err)
		case scaffold.InputDir:
			return usageError("choose a directory", "%s exists and is not a directory", o.Dir)
		case scaffold.InputProject:
			return usageError("check --env's profile in the config file", "%v", ie.Err)
		}
		return usageError("", "%v", ie)
	case errors.As(err, &re):
		return re.Err // the rotation guard's own error, exit code and hint
	case errors.As(err, &rendErr):
		return failure(err, "")
	case errors.As(err, &ce):
		fmt.Fprint(o.f.IO.ErrOut, ce.Diff)
		return failure(err, "re-run with --force to overwrite them, or --dry-run to review")
	}
	return fileFailure(o.f, err)
}

func printPlan(w interface{ Write([]byte) (int, error) }, plan *scaffold.Plan, would string) {
	for _, f := range plan.Files {
		if f.Action == scaffold.Unchanged {
			continue
		}
		fmt.Fprintf(w, "%s%-9s %s\n", would, f.Action, f.Path)
	}
	fmt.Fprintf(w, "%s%d to create, %d to update, %d unchanged\n", would, plan.Count(scaffold.Create), plan.Count(scaffold.Update), plan.Count(scaffold.Unchanged))
}
