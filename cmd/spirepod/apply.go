package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/spirepod/spirepod/internal/apply"
	"github.com/spirepod/spirepod/internal/checklist"
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
	addTimeoutFlag(fl, &opts.Timeout, apply.DefaultTimeout, "how long to retry an unreachable API server and to wait")
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

// applyReport is what -o json prints: the library's report and the error.
type applyReport struct {
	apply.Report
	Error string `json:"error,omitempty"`
}

func applyRun(ctx context.Context, o *applyOptions) error {
	p, err := o.f.Project(o.Dir)
	if err != nil {
		return err
	}
	if _, err := o.kube.projectNamespace(p); err != nil {
		return err
	}
	var t *kubeTarget
	prog := newProgress(o.f.IO)
	rep, err := apply.Run(ctx, apply.RunOptions{
		Project: p, Now: o.f.Now(), SkipImageCheck: o.SkipImageCheck, ImageCheck: o.f.ImageCheck,
		AllowProtected: o.Yes, DryRun: o.DryRun == "server", ForceConflicts: o.ForceConflicts,
		CreateNamespace: o.CreateNamespace, ReplaceCA: o.ReplaceCA, Wait: o.Wait, Timeout: o.Timeout,
		Connect: func() (*apply.Target, error) {
			var err error
			if t, err = o.f.Kube(o.kube); err != nil {
				return nil, err
			}
			return &t.Target, nil
		},
		Event: func(ev apply.RunEvent) { o.render(ev, t, prog) },
	})
	prog.Done()
	if err != nil {
		return o.runFailed(p, &applyReport{Report: *rep}, err)
	}
	if o.f.JSON() {
		return writeJSON(o.f.IO.Out, applyReport{Report: *rep})
	}
	if rep.Wait != nil {
		fmt.Fprintf(o.f.IO.ErrOut, "%s Ready; pods ready: %s\n", p.Issuer(), strings.Join(rep.Wait.PodsReady, ", "))
	}
	if !rep.DryRun {
		fmt.Fprintln(o.f.IO.ErrOut, "Next: spirepod verify")
	}
	return nil
}

// render shows one of apply.Run's events: the cluster before anything
// happens, then on stderr progress, on stdout each object's outcome.
func (o *applyOptions) render(ev apply.RunEvent, t *kubeTarget, prog *progress) {
	errOut := o.f.IO.ErrOut
	switch ev.Kind {
	case apply.EventTarget:
		verb := "Applying to"
		if o.DryRun == "server" {
			verb = "Dry run (server) against"
		}
		fmt.Fprintf(errOut, "%s %s\n", verb, t.describe())
	case apply.EventImageCheck:
		fmt.Fprintln(errOut, "Checking images in their registries…")
	case apply.EventPreflight:
		if ev.Stage == apply.StageImages && !checklist.Failed(ev.Results) {
			printWarnings(o.f, ev.Results)
		}
	case apply.EventObject:
		if !o.f.JSON() {
			prog.Update(fmt.Sprintf("%s %s", ev.Object.Outcome, ev.Object.Ref()))
		}
	case apply.EventApplied:
		prog.Done()
		if o.f.JSON() {
			return
		}
		res := ev.Result
		for _, ob := range res.Objects {
			fmt.Fprintf(o.f.IO.Out, "%-10s %s\n", ob.Outcome, ob.Ref())
		}
		fmt.Fprintf(errOut, "%d created, %d configured, %d unchanged%s\n", res.Count(apply.Created), res.Count(apply.Configured),
			res.Count(apply.Unchanged), map[bool]string{true: " (dry run: nothing stored)", false: ""}[o.DryRun == "server"])
	case apply.EventWait:
		if !o.f.JSON() {
			prog.Update(ev.Message)
		}
	}
}

// runFailed maps apply.Run's errors to exit codes and hints; with -o json
// the report is printed first, as far as it got.
func (o *applyOptions) runFailed(p *project.Project, rep *applyReport, err error) error {
	var (
		pe *apply.PreflightError
		pc *apply.ProtectedContextError
		be *apply.BuildError
		ae *apply.ApplyError
		we *apply.WaitError
	)
	switch {
	case errors.As(err, &pe):
		ferr := o.preflightFailed(rep, pe)
		var ce *cliError
		if pe.Stage == apply.StageImages && errors.As(ferr, &ce) {
			ce.code = exitUsage // a definite "no such image": the input is wrong
		}
		return ferr
	case errors.As(err, &pc):
		return usageError("re-run with --yes on the command line if you mean it (SPIREPOD_YES and the config file cannot give it)", "%v", pc)
	case errors.As(err, &be):
		return failure(be, "fix the kustomization, or re-render the scaffold with `"+p.ReinitCommand()+"`")
	case errors.As(err, &ae):
		return o.applyFailed(rep, ae.Err)
	case errors.As(err, &we):
		rep.Error = we.Error()
		if o.f.JSON() {
			_ = writeJSON(o.f.IO.Out, rep)
		}
		if we.TimedOut {
			return timeoutError(we.Err, waitHint(p, we.Status))
		}
		return failure(we.Err, waitHint(p, we.Status))
	}
	return err // the cluster's: resolving the context, or the ping
}

func waitHint(p *project.Project, st *apply.WaitStatus) string {
	if st != nil && !st.IssuerReady {
		return "check the team CA Secret " + p.Issuer().Secret() + " (`spirepod status` shows it)"
	}
	return "run `spirepod verify` or `spirepod status` to see which stage is stuck"
}

func (o *applyOptions) preflightFailed(rep *applyReport, pe *apply.PreflightError) error {
	if o.f.JSON() {
		rep.Error = "preflight failed"
		_ = writeJSON(o.f.IO.Out, rep)
		return &silentError{code: exitFailure}
	}
	if len(pe.Failed) == 1 {
		// One cause: one line and its hint, once.
		return failure(pe, pe.Failed[0].Hint)
	}
	printChecks(o.f.IO, o.f.IO.ErrOut, pe.Failed)
	return failure(fmt.Errorf("preflight: %d checks failed (above, each with its hint); nothing was applied", len(pe.Failed)), "")
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
