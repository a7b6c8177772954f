package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/spirepod/spirepod/internal/apply"
	"github.com/spirepod/spirepod/internal/check"
	"github.com/spirepod/spirepod/internal/pki"
	"github.com/spirepod/spirepod/internal/project"
	"github.com/spirepod/spirepod/internal/retry"
)

type applyOptions struct {
	f    *Factory
	kube *kubeFlags

	Dir             string
	DryRun          string
	Wait            bool
	Timeout         time.Duration
	Yes             bool
	ForceConflicts  bool
	CreateNamespace bool
	ReplaceCA       bool
	SkipImageCheck  bool
}

func newCmdApply(f *Factory, runF func(*applyOptions) error) *cobra.Command {
	opts := &applyOptions{f: f, kube: newKubeFlags()}
	facts := defaultScaffoldFacts()
	cmd := &cobra.Command{
		Use:   "apply",
		Short: "Server-side apply certs/ and the scaffold, then wait for the issuer and pods (guide step 6)",
		Long: reflow(`Build certs/ and the scaffold root as kustomize does (in-process) and apply every object with
server-side apply, field manager ` + facts.FieldManager + ` (one per team: the API server reports a
change to another team's fields as a conflict). First certs/: the team CA Secret
` + facts.CASecret + ` and ` + facts.Issuer + ` (` + clusterIssuerNote + `);
then the ServiceAccount, RBAC, ConfigMaps and one cert-manager Certificate per pod
(` + facts.Certificate + `); then the StatefulSet. This is "kubectl apply -k ./certs && kubectl apply -k ." done once, in order, and
checked first.

Before changing anything it prints the context and cluster, and checks: the team CA exists and
passes pki inspect, cert-manager is installed, the namespace exists, the issuer's CA Secret is
absent or already holds this team CA (--replace-ca to replace it), and you may apply every object
(SelfSubjectAccessReview). A context matching a protected pattern (spirepod.yaml
protectedContexts; default ` + strings.Join(apply.DefaultProtectedContexts, ", ") + `) needs --yes.

If the API server becomes unreachable, requests are retried with backoff until --timeout; then
the command lists what was and was not applied. Running it again completes the job.`),
		Example: `  spirepod apply --context dev-cluster
  spirepod apply --dry-run=server -o json
  spirepod apply --context prod-eu --yes --timeout 10m
  spirepod apply --wait=false`,
		RunE: runE(opts, opts.validate, runF, applyRun),
	}
	fl := cmd.Flags()
	opts.kube.AddFlags(fl)
	addDirFlag(fl, &opts.Dir)
	fl.StringVar(&opts.DryRun, "dry-run", "none", `"server": the API server validates and reports created/configured/unchanged; nothing is stored`)
	fl.Lookup("dry-run").NoOptDefVal = "server"
	cmd.Args = dryRunArgs(cmd, &opts.DryRun)
	fl.BoolVar(&opts.Wait, "wait", true, "wait for the "+facts.IssuerKind+" to be Ready and the pods to be Running and ready")
	addTimeoutFlag(fl, &opts.Timeout, 5*time.Minute, "how long to retry an unreachable API server and to wait")
	fl.BoolVar(&opts.Yes, "yes", false, "allow changing a protected context")
	fl.BoolVar(&opts.ForceConflicts, "force-conflicts", false, "take ownership of fields another field manager owns")
	fl.BoolVar(&opts.CreateNamespace, "create-namespace", false, "create the namespace if it does not exist")
	fl.BoolVar(&opts.ReplaceCA, "replace-ca", false, "replace a CA Secret in cert-manager that holds another certificate (your own old CA)")
	fl.BoolVar(&opts.SkipImageCheck, "skip-image-check", false, "do not resolve the pod's images in their registries first (an air-gapped mirror the machine cannot reach)")
	markCLIOnly(fl, "yes", "force-conflicts", "replace-ca", "create-namespace", "skip-image-check")
	return cmd
}

func (o *applyOptions) validate() error {
	switch o.DryRun {
	case "none", "server":
	case "client":
		return usageError("use --dry-run=server: the API server is the only judge of what apply would do", "--dry-run=client is not supported")
	default:
		return usageError(`use --dry-run=server or leave it out`, "--dry-run must be none or server, got %q", o.DryRun)
	}
	return checkTimeout(o.Timeout)
}

// applyReport is what -o json prints.
type applyReport struct {
	Context   string               `json:"context"`
	Cluster   string               `json:"cluster"`
	Server    string               `json:"server"`
	DryRun    bool                 `json:"dryRun"`
	Preflight []check.Result       `json:"preflight"`
	Objects   []apply.ObjectResult `json:"objects"`
	Wait      *apply.WaitStatus    `json:"wait,omitempty"`
	Error     string               `json:"error,omitempty"`
}

func applyRun(ctx context.Context, o *applyOptions) error {
	p, err := o.f.Project(o.Dir)
	if err != nil {
		return err
	}
	if _, err := o.kube.projectNamespace(p); err != nil {
		return err
	}
	rep := &applyReport{DryRun: o.DryRun == "server"}
	errOut := o.f.IO.ErrOut

	cert, key := scaffoldCAPaths(p, true)
	rep.Preflight = pki.LoadTeamCA(pki.TeamCAOptions{CertPath: cert, KeyPath: key, Now: o.f.Now(), Group: "team CA"}).Results
	if check.Failed(rep.Preflight) {
		return o.preflightFailed(rep)
	}
	layers, err := apply.Build(p.Dir)
	if err != nil {
		return failure(err, "fix the kustomization, or re-render the scaffold with `"+p.ReinitCommand()+"`")
	}
	rep.Preflight = append(rep.Preflight, apply.CheckProjectResult(layers, p))
	rep.Preflight = append(rep.Preflight, apply.CheckBundle(layers, o.f.Now())...)
	if check.Failed(rep.Preflight) {
		return o.preflightFailed(rep)
	}
	// The cluster before the registries: a wrong --context or a cluster
	// that does not answer is the real cause, said first and once.
	t, err := o.f.Kube(o.kube)
	if err != nil {
		return err
	}
	rep.Context, rep.Cluster, rep.Server = t.Context, t.Cluster, t.Server
	verb := "Applying to"
	if rep.DryRun {
		verb = "Dry run (server) against"
	}
	fmt.Fprintf(errOut, "%s %s\n", verb, t.describe())
	if err := t.ping(ctx); err != nil {
		return err
	}
	if !o.SkipImageCheck {
		fmt.Fprintln(errOut, "Checking images in their registries…")
		imgs := apply.CheckImages(ctx, apply.All(layers), o.f.ImageCheck)
		rep.Preflight = append(rep.Preflight, imgs...)
		if check.Failed(imgs) {
			if err := o.preflightFailed(rep); err != nil {
				var ce *cliError
				if errors.As(err, &ce) {
					ce.code = exitUsage // a definite "no such image": the input is wrong
				}
				return err
			}
		}
		printWarnings(o.f, imgs)
	}

	patterns := p.ProtectedContexts
	if len(patterns) == 0 {
		patterns = apply.DefaultProtectedContexts
	}
	if pat, name, ok := apply.Protected([]string{t.Context, t.Cluster, t.Server}, patterns); ok && !o.Yes && !rep.DryRun {
		return usageError("re-run with --yes on the command line if you mean it (SPIREPOD_YES and the config file cannot give it)",
			"%q (context %s) matches protected pattern %q", name, t.Context, pat)
	}

	pctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	rep.Preflight = append(rep.Preflight, apply.CheckCluster(pctx, apply.ClusterOptions{
		Layers: layers, Client: t.Client, Mapper: t.Mapper, Namespace: p.Namespace, CreateNamespace: o.CreateNamespace,
		Issuer: p.Issuer(), ReplaceCA: o.ReplaceCA,
	})...)
	if check.Failed(rep.Preflight) {
		return o.preflightFailed(rep)
	}
	if o.CreateNamespace {
		nsObj := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": p.Namespace},
		}}
		layers = append([]apply.Layer{{Name: "namespace", Objects: []*unstructured.Unstructured{nsObj}}}, layers...)
	}

	prog := newProgress(o.f.IO)
	res, applyErr := apply.Apply(pctx, apply.Options{
		Layers: layers, Dynamic: t.Dynamic, Mapper: t.Mapper, FieldManager: p.FieldManager(),
		DryRun: rep.DryRun, ForceConflicts: o.ForceConflicts, RetryFor: o.Timeout,
		Progress: func(ev apply.Event) {
			if ev.Object != nil && !o.f.JSON() {
				prog.Update(fmt.Sprintf("%s %s", ev.Object.Outcome, ev.Object.Ref()))
			}
		},
	})
	prog.Done()
	if res != nil {
		rep.Objects = res.Objects
	}
	if applyErr != nil {
		return o.applyFailed(rep, applyErr)
	}
	if !o.f.JSON() {
		for _, ob := range res.Objects {
			fmt.Fprintf(o.f.IO.Out, "%-10s %s\n", ob.Outcome, ob.Ref())
		}
		fmt.Fprintf(errOut, "%d created, %d configured, %d unchanged%s\n", res.Count(apply.Created), res.Count(apply.Configured),
			res.Count(apply.Unchanged), map[bool]string{true: " (dry run: nothing stored)", false: ""}[rep.DryRun])
	}
	if o.Wait && !rep.DryRun {
		st, err := apply.Wait(pctx, apply.WaitOptions{
			Client: t.Client, Dynamic: t.Dynamic, Issuer: p.Issuer(),
			Namespace: p.Namespace, Pods: p.PodNames(),
			Progress: func(s string) {
				if !o.f.JSON() {
					prog.Update(s)
				}
			},
		})
		prog.Done()
		rep.Wait = st
		if err != nil {
			rep.Error = err.Error()
			if o.f.JSON() {
				_ = writeJSON(o.f.IO.Out, rep)
			}
			if pctx.Err() != nil && ctx.Err() == nil {
				return timeoutError(err, waitHint(p, st))
			}
			return failure(err, waitHint(p, st))
		}
		if !o.f.JSON() {
			fmt.Fprintf(errOut, "%s Ready; pods ready: %s\n", p.Issuer(), strings.Join(st.PodsReady, ", "))
		}
	}
	if o.f.JSON() {
		return writeJSON(o.f.IO.Out, rep)
	}
	if !rep.DryRun {
		fmt.Fprintln(errOut, "Next: spirepod verify")
	}
	return nil
}

func waitHint(p *project.Project, st *apply.WaitStatus) string {
	if st != nil && !st.IssuerReady {
		return "check the team CA Secret " + p.Issuer().Secret() + " (`spirepod status` shows it)"
	}
	return "run `spirepod verify` or `spirepod status` to see which stage is stuck"
}

func (o *applyOptions) preflightFailed(rep *applyReport) error {
	if o.f.JSON() {
		rep.Error = "preflight failed"
		_ = writeJSON(o.f.IO.Out, rep)
		return &silentError{code: exitFailure}
	}
	var failed []check.Result
	for _, r := range rep.Preflight {
		if r.Status == check.Fail {
			failed = append(failed, r)
		}
	}
	if len(failed) == 1 {
		// One cause: one line and its hint, once.
		first := failed[0]
		return failure(fmt.Errorf("preflight: %s: %s; nothing was applied", first.Name, first.Message), first.Hint)
	}
	printChecks(o.f.IO, o.f.IO.ErrOut, failed)
	return failure(fmt.Errorf("preflight: %d checks failed (above, each with its hint); nothing was applied", len(failed)), "")
}

func (o *applyOptions) applyFailed(rep *applyReport, err error) error {
	rep.Error = err.Error()
	if o.f.JSON() {
		_ = writeJSON(o.f.IO.Out, rep)
	}
	var ce *apply.ConflictError
	if errors.As(err, &ce) {
		if onlyKubectl(ce) {
			return failure(err, "these objects were applied with kubectl before (client-side apply); re-run with --force-conflicts to move them to spirepod")
		}
		return failure(err, "another tool manages these fields; re-run with --force-conflicts to take them over (it will revert on its next sync unless you change it there too)")
	}
	var ie *apply.IncompleteError
	if errors.As(err, &ie) {
		hint := "run `spirepod apply` again once the API server is back: apply is idempotent"
		if !retry.Transient(ie.Cause) {
			hint = "fix the cause above, then run `spirepod apply` again"
		}
		return failure(err, hint)
	}
	return failure(err, kubeHint)
}

// onlyKubectl reports whether every conflicting manager is kubectl by hand.
func onlyKubectl(ce *apply.ConflictError) bool {
	for _, o := range ce.Objects {
		for _, c := range o.Conflicts {
			if !strings.HasPrefix(c.Manager, "kubectl") {
				return false
			}
		}
	}
	return true
}
