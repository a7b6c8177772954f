// Package status answers "where am I in the seven steps?": one checklist
// over the scaffold, the team CA, the bundle, both pull requests, the
// cluster and the last verification. Checks that need a cluster or a GitHub
// token are skipped with the reason when those are unavailable.
package status

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"time"

	"sigs.k8s.io/kustomize/kyaml/yaml"

	"github.com/spirepod/spirepod/internal/apply"
	"github.com/spirepod/spirepod/internal/checklist"
	"github.com/spirepod/spirepod/internal/pki"
	"github.com/spirepod/spirepod/internal/pr"
	"github.com/spirepod/spirepod/internal/project"
	"github.com/spirepod/spirepod/internal/scaffold"
	"github.com/spirepod/spirepod/internal/verify"
)

// Steps of the guide, as check groups.
const (
	Step1 = "1. scaffold"
	Step2 = "2. team CA"
	Step3 = "3. SPIRE server CA bundle"
	Step4 = "4. trust-list PR"
	Step5 = "5. SPIFFE ID PR"
	Step6 = "6. cluster"
	Step7 = "7. verification"
)

// Steps in order.
var Steps = []string{Step1, Step2, Step3, Step4, Step5, Step6, Step7}

// Options for Run.
type Options struct {
	Project *project.Project
	// Cluster is the reachable cluster (its Context, Client, Dynamic and
	// Mapper are used; Ping is not: the caller has asked). It is nil when
	// there is none; ClusterSkip then says why.
	Cluster     *apply.Target
	ClusterSkip string
	// Context is the kube context the cluster checks would use ("" when
	// none is configured): a verification made on another does not count.
	Context string
	// Pulls is the result of pr.Status, or nil; PullsSkip says why (no token,
	// GitHub error) when nil.
	Pulls     *pr.StatusResult
	PullsSkip string
	Now       func() time.Time
}

// StepSummary is one line of --short: the worst status of a step's checks and its first message.
type StepSummary struct {
	Step    string           `json:"step"`
	Status  checklist.Status `json:"status"`
	Message string           `json:"message,omitempty"`
}

// Report is the outcome of Run.
type Report struct {
	Dir       string             `json:"dir"`
	Namespace string             `json:"namespace"`
	Context   string             `json:"context,omitempty"`
	Checks    []checklist.Result `json:"checks"`
	Steps     []StepSummary      `json:"steps"`
	Failed    bool               `json:"failed"`
}

// Run builds the checklist. It returns an error only for a broken context;
// every problem it finds is a failing check.
func Run(ctx context.Context, o Options) (*Report, error) {
	if o.Now == nil {
		o.Now = time.Now
	}
	p := o.Project
	r := &Report{Dir: p.Dir, Namespace: p.Namespace}
	if o.Cluster != nil {
		r.Context = o.Cluster.Context
	}
	add := func(rs ...checklist.Result) { r.Checks = append(r.Checks, rs...) }

	// One build of the scaffold for every check that reads its objects.
	layers, buildErr := apply.Build(p.Dir)
	add(scaffoldChecks(p, layers, buildErr)...)
	add(caCheck(p, o.Now()))
	add(rotationChecks(p)...)
	add(bundleCheck(p, o.Now()))
	add(pullChecks(p, o.Pulls, o.PullsSkip)...)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	add(clusterChecks(ctx, p, o.Cluster, o.ClusterSkip, layers, buildErr)...)
	if err := ctx.Err(); err != nil && errors.Is(err, context.Canceled) {
		return nil, err // interrupted: no half-made checklist
	}
	add(verifyCheck(p, o.Context))

	r.Steps = summarize(r.Checks)
	r.Failed = checklist.Failed(r.Checks)
	return r, nil
}

func res(group, id, name string, st checklist.Status, msg, hint string) checklist.Result {
	return checklist.Result{Group: group, ID: id, Name: name, Status: st, Message: msg, Hint: hint}
}

func scaffoldChecks(p *project.Project, layers []apply.Layer, buildErr error) []checklist.Result {
	out := []checklist.Result{res(Step1, "project-file", "spirepod.yaml is valid", checklist.OK, p.Dir, "")}
	data, err := os.ReadFile(p.Path("kustomization.yaml"))
	if err != nil {
		return append(out, res(Step1, "kustomization-namespace", "the scaffold's kustomization targets namespace "+p.Namespace, checklist.Fail,
			err.Error(), "re-render the scaffold with `"+p.ReinitCommand()+"`"))
	}
	n, err := yaml.Parse(string(data))
	var ns string
	if err == nil {
		ns, err = n.GetString("namespace")
	}
	switch {
	case err != nil:
		out = append(out, res(Step1, "kustomization-namespace", "the scaffold's kustomization targets namespace "+p.Namespace, checklist.Fail,
			"kustomization.yaml: "+err.Error(), "fix the file or re-create it with `spirepod init --force`"))
	case ns != p.Namespace:
		out = append(out, res(Step1, "kustomization-namespace", "the scaffold's kustomization targets namespace "+p.Namespace, checklist.Fail,
			fmt.Sprintf("kustomization.yaml says namespace %q, spirepod.yaml says %q", ns, p.Namespace),
			"re-render from spirepod.yaml's values: `"+p.ReinitCommand()+"` (it rewrites every namespace)"))
	default:
		out = append(out, res(Step1, "kustomization-namespace", "the scaffold's kustomization targets namespace "+p.Namespace, checklist.OK, "", ""))
	}
	if buildErr == nil {
		r := apply.CheckProjectResult(layers, p)
		r.Group = Step1
		out = append(out, r)
	}
	out = append(out, namesCheck(p), ignoreCheck(p), versionCheck(p))
	return out
}

// namesCheck says when a scaffold still uses names another team can share.
func namesCheck(p *project.Project) checklist.Result {
	const id, name = "team-scoped-names", "names are scoped to the team"
	switch {
	case p.Legacy():
		return res(Step1, id, name, checklist.Warn,
			fmt.Sprintf("spirepod.yaml predates team-scoped names: its node aliases (%s…) and %s with Secret %s are the same for every team with the same pod names",
				p.NodeAliasID(p.PodName(0)), p.Issuer(), p.Issuer().Secret()),
			"`"+p.ReinitCommand()+"`, then `spirepod apply` and `spirepod pr spiffe-id`")
	case p.Naming == project.NamingGuide:
		return res(Step1, id, name, checklist.Warn,
			fmt.Sprintf("naming: guide — the alias %s is unique only while no other team of the SPIRE server has a StatefulSet %s", p.NodeAliasID(p.PodName(0)), p.StatefulSet),
			"`spirepod city check` in the city repository catches a shared alias")
	}
	return res(Step1, id, name, checklist.OK, fmt.Sprintf("aliases under %s, %s", p.Scope(), p.Issuer()), "")
}

// notYet: the file is absent or empty (init's placeholder), so the step
// that writes it has not been done.
func notYet(path string) bool {
	fi, err := os.Stat(path)
	return errors.Is(err, fs.ErrNotExist) || err == nil && fi.Size() == 0
}

func caCheck(p *project.Project, now time.Time) checklist.Result {
	const name = "team CA present and passing pki inspect"
	if notYet(p.Path(p.Paths.CACert)) && notYet(p.Path(p.Paths.CAKey)) {
		return res(Step2, "team-ca", name, checklist.Todo, "no team CA yet ("+p.Paths.CACert+" is missing or the empty placeholder `spirepod init` writes)",
			"`spirepod pki gen` (or `spirepod pki import CERT KEY`)")
	}
	rs := pki.LoadTeamCA(pki.TeamCAOptions{CertPath: p.Path(p.Paths.CACert), KeyPath: p.Path(p.Paths.CAKey), Now: now}).Results
	var warns []string
	for _, c := range rs {
		if c.Status == checklist.Fail {
			return res(Step2, "team-ca", name, checklist.Fail, c.Name+": "+c.Message, c.Hint)
		}
		if c.Status == checklist.Warn {
			warns = append(warns, c.Message)
		}
	}
	if len(warns) > 0 {
		return res(Step2, "team-ca", name, checklist.Warn, strings.Join(warns, "; "), "`spirepod pki inspect` for details")
	}
	return res(Step2, "team-ca", name, checklist.OK, p.Paths.CACert, "")
}

func bundleCheck(p *project.Project, now time.Time) checklist.Result {
	const name = "SPIRE server CA in the bundle ConfigMap"
	b := scaffold.ReadBundle(p.Dir, p.Environment, now)
	switch {
	case b.ReadErr != nil:
		return res(Step3, "bundle", name, checklist.Fail, b.ReadErr.Error(), "re-create the scaffold with `spirepod init --force`")
	case b.ParseErr != nil:
		return res(Step3, "bundle", name, checklist.Fail, b.File+": "+b.ParseErr.Error(), "`spirepod bundle set SERVER_CA.pem`")
	case len(b.Certs) == 0:
		return res(Step3, "bundle", name, checklist.Todo, b.File+" has no CA yet",
			"ask the SPIRE operators for the "+p.Environment+" server CA, then `spirepod bundle set SERVER_CA.pem`")
	}
	// b.Problem (a CA expired or near its end) is not judged here: apply's
	// preflight does.
	return res(Step3, "bundle", name, checklist.OK, fmt.Sprintf("%s: %s", project.Count(len(b.Certs), "CA"), b.Certs[0].Subject), "")
}

// mergedStale says why a merged pull request no longer counts: the base
// branch's file does not hold the team CA as it is now (the CA was replaced
// after the merge, or the file was changed since). "" when it still holds,
// or when the base was not read.
func mergedStale(p *project.Project, pulls *pr.StatusResult, kind string) string {
	if pulls.Base == nil {
		return ""
	}
	ca := pki.LoadTeamCA(pki.TeamCAOptions{CertPath: p.Path(p.Paths.CACert)}).Cert
	if ca == nil {
		return ""
	}
	fp := pki.SHA1Fingerprint(ca)
	switch kind {
	case pr.KindTrustCA:
		file := pr.TrustListFile(p)
		data, ok := pulls.Base[file]
		if !ok {
			return fmt.Sprintf("merged, but %s is no longer on %s", file, p.BaseBranch())
		}
		if pr.TrustListHolds([]byte(data), fp) {
			return ""
		}
		return fmt.Sprintf("merged, but %s on %s does not hold the current team CA (sha1 %s): the CA was replaced after the merge", file, p.BaseBranch(), fp)
	case pr.KindSpiffeID:
		file := pr.RegistrationFile(p)
		data, ok := pulls.Base[file]
		if !ok {
			return fmt.Sprintf("merged, but %s is no longer on %s", file, p.BaseBranch())
		}
		if !strings.Contains(data, "ca:fingerprint:"+fp) {
			return fmt.Sprintf("merged, but %s on %s does not pin the current team CA (sha1 %s): its node aliases match no agent of this CA", file, p.BaseBranch(), fp)
		}
	}
	return ""
}

// PullSpec names one of the team's pull requests for PullCheck.
type PullSpec struct{ Step, Kind, Name, Cmd string }

// Pulls are the team's two pull requests, in order.
var Pulls = []PullSpec{
	{Step4, pr.KindTrustCA, "trust-list PR merged", "spirepod pr trust-ca"},
	{Step5, pr.KindSpiffeID, "SPIFFE ID PR merged", "spirepod pr spiffe-id"},
}

func pullChecks(p *project.Project, pulls *pr.StatusResult, skip string) []checklist.Result {
	var out []checklist.Result
	for _, s := range Pulls {
		if pulls == nil {
			out = append(out, res(s.Step, "pr-"+s.Kind, s.Name, checklist.Skipped, skip, ""))
			continue
		}
		r, _ := PullCheck(p, pulls, s)
		out = append(out, r)
	}
	return out
}

// PullCheck judges one pull request of pulls (pr.Status or pr.LocalStatus):
// merged counts only while the base branch still holds the current team CA;
// open (or pushed) is to wait for; none (or a branch not pushed) is to do;
// closed without merging is broken. It returns the request's state too
// (nil when there is none): `spirepod up` decides by it.
func PullCheck(p *project.Project, pulls *pr.StatusResult, s PullSpec) (checklist.Result, *pr.PullStatus) {
	id := "pr-" + s.Kind
	var ps *pr.PullStatus
	for i := range pulls.Pulls {
		if pulls.Pulls[i].Kind == s.Kind {
			ps = &pulls.Pulls[i]
		}
	}
	switch {
	case ps == nil || ps.State == "none":
		return res(s.Step, id, s.Name, checklist.Todo, "no pull request in "+pulls.Repo, "`"+s.Cmd+"`"), ps
	case ps.State == "merged":
		if stale := mergedStale(p, pulls, s.Kind); stale != "" {
			return res(s.Step, id, s.Name, checklist.Fail, stale, "`"+s.Cmd+"` opens a pull request with the current CA"), ps
		}
		msg := ps.URL
		if msg == "" { // a local checkout's branch
			msg = fmt.Sprintf("branch %s merged into %s (city checkout %s)", ps.Branch, p.BaseBranch(), pulls.Repo)
		}
		return res(s.Step, id, s.Name, checklist.OK, msg, ""), ps
	case ps.State == pr.StateBranch:
		return res(s.Step, id, s.Name, checklist.Todo,
			fmt.Sprintf("branch %s made in the city checkout %s, not pushed", ps.Branch, pulls.Repo),
			"push it (`git -C "+pulls.Repo+" push origin "+ps.Branch+"`, or `"+s.Cmd+" --local "+pulls.Repo+" --push`) and open a pull request from it"), ps
	case ps.State == pr.StatePushed:
		return res(s.Step, id, s.Name, checklist.Warn,
			fmt.Sprintf("branch %s pushed from %s, not merged into %s yet", ps.Branch, pulls.Repo, p.BaseBranch()),
			"open a pull request from it and ask for a review in the AMA channel (then `git pull` the checkout to see the merge)"), ps
	case ps.State == "open":
		msg := fmt.Sprintf("open, checks %s: %s", ps.Checks, ps.URL)
		hint := "ask for a review in the AMA channel"
		if ps.Checks == "failure" {
			hint = "fix the failing checks, then `" + s.Cmd + "` to update the PR"
		}
		return res(s.Step, id, s.Name, checklist.Warn, msg, hint), ps
	}
	return res(s.Step, id, s.Name, checklist.Fail, ps.State+" without merging: "+ps.URL, "`"+s.Cmd+"` opens a new one"), ps
}

// verifyCheck is verify.CheckLast's answer, the one `spirepod up` asks too.
func verifyCheck(p *project.Project, kubeContext string) checklist.Result {
	l := verify.CheckLast(p, kubeContext)
	return res(Step7, "last-verify", "last verification succeeded", l.Status, l.Message, l.Fix)
}

// summarize gives one line per step: the worst status and the first
// non-ok message (skipped < ok < to do < warn < fail).
func summarize(rs []checklist.Result) []StepSummary {
	rank := map[checklist.Status]int{checklist.Skipped: 0, checklist.OK: 1, checklist.Todo: 2, checklist.Warn: 3, checklist.Fail: 4}
	var out []StepSummary
	for _, step := range Steps {
		s := StepSummary{Step: step, Status: checklist.Skipped}
		seen := false
		for _, r := range rs {
			if r.Group != step {
				continue
			}
			if !seen || rank[r.Status] > rank[s.Status] {
				s.Status = r.Status
				s.Message = r.Message
				if r.Status != checklist.OK && r.Status != checklist.Skipped {
					s.Message = r.Name + ": " + r.Message
				}
			}
			seen = true
		}
		out = append(out, s)
	}
	return out
}

// versionCheck reports the agent image's version against the environment's
// SPIRE server version, when both are known.
func versionCheck(p *project.Project) checklist.Result {
	const id, name = "agent-version", "the agent is not newer than the SPIRE server"
	ok, known, msg := p.AgentVersionSkew()
	switch {
	case !known:
		return res(Step1, id, name, checklist.Skipped, "versions unknown: "+msg, "")
	case !ok:
		return res(Step1, id, name, checklist.Fail, msg, "set images.spireAgent in spirepod.yaml (or the profile's spireVersion) to the server's version")
	}
	return res(Step1, id, name, checklist.OK, msg, "")
}
