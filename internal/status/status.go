// Package status answers "where am I in the seven steps?": one checklist
// over the scaffold, the team CA, the bundle, both pull requests, the
// cluster and the last verification. Checks that need a cluster or a GitHub
// token are skipped with the reason when those are unavailable.
package status

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/kustomize/kyaml/yaml"

	"github.com/spirepod/spirepod/internal/apply"
	"github.com/spirepod/spirepod/internal/certmanager"
	"github.com/spirepod/spirepod/internal/check"
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

// Cluster is a reachable cluster's clients.
type Cluster struct {
	Context string
	Client  kubernetes.Interface
	Dynamic dynamic.Interface
	Mapper  meta.RESTMapper
}

// Options for Run.
type Options struct {
	Project *project.Project
	// Cluster is nil when there is none; ClusterSkip then says why.
	Cluster     *Cluster
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
	Step    string       `json:"step"`
	Status  check.Status `json:"status"`
	Message string       `json:"message,omitempty"`
}

// Report is the outcome of Run.
type Report struct {
	Dir       string         `json:"dir"`
	Namespace string         `json:"namespace"`
	Context   string         `json:"context,omitempty"`
	Checks    []check.Result `json:"checks"`
	Steps     []StepSummary  `json:"steps"`
	Failed    bool           `json:"failed"`
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
	add := func(rs ...check.Result) { r.Checks = append(r.Checks, rs...) }

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
	r.Failed = check.Failed(r.Checks)
	return r, nil
}

func res(group, id, name string, st check.Status, msg, hint string) check.Result {
	return check.Result{Group: group, ID: id, Name: name, Status: st, Message: msg, Hint: hint}
}

func scaffoldChecks(p *project.Project, layers []apply.Layer, buildErr error) []check.Result {
	out := []check.Result{res(Step1, "project-file", "spirepod.yaml is valid", check.OK, p.Dir, "")}
	data, err := os.ReadFile(p.Path("kustomization.yaml"))
	if err != nil {
		return append(out, res(Step1, "kustomization-namespace", "the scaffold's kustomization targets namespace "+p.Namespace, check.Fail,
			err.Error(), "re-render the scaffold with `"+p.ReinitCommand()+"`"))
	}
	n, err := yaml.Parse(string(data))
	var ns string
	if err == nil {
		ns, err = n.GetString("namespace")
	}
	switch {
	case err != nil:
		out = append(out, res(Step1, "kustomization-namespace", "the scaffold's kustomization targets namespace "+p.Namespace, check.Fail,
			"kustomization.yaml: "+err.Error(), "fix the file or re-create it with `spirepod init --force`"))
	case ns != p.Namespace:
		out = append(out, res(Step1, "kustomization-namespace", "the scaffold's kustomization targets namespace "+p.Namespace, check.Fail,
			fmt.Sprintf("kustomization.yaml says namespace %q, spirepod.yaml says %q", ns, p.Namespace),
			"re-render from spirepod.yaml's values: `"+p.ReinitCommand()+"` (it rewrites every namespace)"))
	default:
		out = append(out, res(Step1, "kustomization-namespace", "the scaffold's kustomization targets namespace "+p.Namespace, check.OK, "", ""))
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
func namesCheck(p *project.Project) check.Result {
	const id, name = "team-scoped-names", "names are scoped to the team"
	switch {
	case p.Legacy():
		return res(Step1, id, name, check.Warn,
			fmt.Sprintf("spirepod.yaml predates team-scoped names: its node aliases (%s…) and %s with Secret %s are the same for every team with the same pod names",
				p.NodeAliasID(p.PodName(0)), p.Issuer(), p.Issuer().Secret()),
			"`"+p.ReinitCommand()+"`, then `spirepod apply` and `spirepod pr spiffe-id`")
	case p.Naming == project.NamingGuide:
		return res(Step1, id, name, check.Warn,
			fmt.Sprintf("naming: guide — the alias %s is unique only while no other team of the SPIRE server has a StatefulSet %s", p.NodeAliasID(p.PodName(0)), p.StatefulSet),
			"`spirepod city check` in the city repository catches a shared alias")
	}
	return res(Step1, id, name, check.OK, fmt.Sprintf("aliases under %s, %s", p.Scope(), p.Issuer()), "")
}

// notYet: the file is absent or empty (init's placeholder), so the step
// that writes it has not been done.
func notYet(path string) bool {
	fi, err := os.Stat(path)
	return errors.Is(err, fs.ErrNotExist) || err == nil && fi.Size() == 0
}

func caCheck(p *project.Project, now time.Time) check.Result {
	const name = "team CA present and passing pki inspect"
	if notYet(p.Path(p.Paths.CACert)) && notYet(p.Path(p.Paths.CAKey)) {
		return res(Step2, "team-ca", name, check.Todo, "no team CA yet ("+p.Paths.CACert+" is missing or the empty placeholder `spirepod init` writes)",
			"`spirepod pki gen` (or `spirepod pki import CERT KEY`)")
	}
	rs := pki.LoadTeamCA(pki.TeamCAOptions{CertPath: p.Path(p.Paths.CACert), KeyPath: p.Path(p.Paths.CAKey), Now: now}).Results
	var warns []string
	for _, c := range rs {
		if c.Status == check.Fail {
			return res(Step2, "team-ca", name, check.Fail, c.Name+": "+c.Message, c.Hint)
		}
		if c.Status == check.Warn {
			warns = append(warns, c.Message)
		}
	}
	if len(warns) > 0 {
		return res(Step2, "team-ca", name, check.Warn, strings.Join(warns, "; "), "`spirepod pki inspect` for details")
	}
	return res(Step2, "team-ca", name, check.OK, p.Paths.CACert, "")
}

func bundleCheck(p *project.Project, now time.Time) check.Result {
	const name = "SPIRE server CA in the bundle ConfigMap"
	b := scaffold.ReadBundle(p.Dir, p.Environment, now)
	switch {
	case b.ReadErr != nil:
		return res(Step3, "bundle", name, check.Fail, b.ReadErr.Error(), "re-create the scaffold with `spirepod init --force`")
	case b.ParseErr != nil:
		return res(Step3, "bundle", name, check.Fail, b.File+": "+b.ParseErr.Error(), "`spirepod bundle set SERVER_CA.pem`")
	case len(b.Certs) == 0:
		return res(Step3, "bundle", name, check.Todo, b.File+" has no CA yet",
			"ask the SPIRE operators for the "+p.Environment+" server CA, then `spirepod bundle set SERVER_CA.pem`")
	}
	// b.Problem (a CA expired or near its end) is not judged here: apply's
	// preflight does.
	return res(Step3, "bundle", name, check.OK, fmt.Sprintf("%s: %s", project.Count(len(b.Certs), "CA"), b.Certs[0].Subject), "")
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

func pullChecks(p *project.Project, pulls *pr.StatusResult, skip string) []check.Result {
	var out []check.Result
	for _, s := range Pulls {
		if pulls == nil {
			out = append(out, res(s.Step, "pr-"+s.Kind, s.Name, check.Skipped, skip, ""))
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
func PullCheck(p *project.Project, pulls *pr.StatusResult, s PullSpec) (check.Result, *pr.PullStatus) {
	id := "pr-" + s.Kind
	var ps *pr.PullStatus
	for i := range pulls.Pulls {
		if pulls.Pulls[i].Kind == s.Kind {
			ps = &pulls.Pulls[i]
		}
	}
	switch {
	case ps == nil || ps.State == "none":
		return res(s.Step, id, s.Name, check.Todo, "no pull request in "+pulls.Repo, "`"+s.Cmd+"`"), ps
	case ps.State == "merged":
		if stale := mergedStale(p, pulls, s.Kind); stale != "" {
			return res(s.Step, id, s.Name, check.Fail, stale, "`"+s.Cmd+"` opens a pull request with the current CA"), ps
		}
		msg := ps.URL
		if msg == "" { // a local checkout's branch
			msg = fmt.Sprintf("branch %s merged into %s (city checkout %s)", ps.Branch, p.BaseBranch(), pulls.Repo)
		}
		return res(s.Step, id, s.Name, check.OK, msg, ""), ps
	case ps.State == pr.StateBranch:
		return res(s.Step, id, s.Name, check.Todo,
			fmt.Sprintf("branch %s made in the city checkout %s, not pushed", ps.Branch, pulls.Repo),
			"push it (`git -C "+pulls.Repo+" push origin "+ps.Branch+"`, or `"+s.Cmd+" --local "+pulls.Repo+" --push`) and open a pull request from it"), ps
	case ps.State == pr.StatePushed:
		return res(s.Step, id, s.Name, check.Warn,
			fmt.Sprintf("branch %s pushed from %s, not merged into %s yet", ps.Branch, pulls.Repo, p.BaseBranch()),
			"open a pull request from it and ask for a review in the AMA channel (then `git pull` the checkout to see the merge)"), ps
	case ps.State == "open":
		msg := fmt.Sprintf("open, checks %s: %s", ps.Checks, ps.URL)
		hint := "ask for a review in the AMA channel"
		if ps.Checks == "failure" {
			hint = "fix the failing checks, then `" + s.Cmd + "` to update the PR"
		}
		return res(s.Step, id, s.Name, check.Warn, msg, hint), ps
	}
	return res(s.Step, id, s.Name, check.Fail, ps.State+" without merging: "+ps.URL, "`"+s.Cmd+"` opens a new one"), ps
}

// verifyCheck is verify.CheckLast's answer, the one `spirepod up` asks too.
func verifyCheck(p *project.Project, kubeContext string) check.Result {
	l := verify.CheckLast(p, kubeContext)
	return res(Step7, "last-verify", "last verification succeeded", l.Status, l.Message, l.Fix)
}

func clusterChecks(ctx context.Context, p *project.Project, c *Cluster, skip string, layers []apply.Layer, buildErr error) []check.Result {
	names := []struct{ id, name string }{
		{"namespace", "namespace " + p.Namespace + " exists"},
		{"objects", "objects in the cluster match the scaffold"},
		{"cluster-issuer", p.Issuer().String() + " Ready"},
		{"pods", "pods Running"},
	}
	if c == nil {
		var out []check.Result
		for _, n := range names {
			out = append(out, res(Step6, n.id, n.name, check.Skipped, skip, ""))
		}
		return out
	}
	// The four checks read independent objects: all their requests go at
	// once (one round trip to a remote API server, not one per object).
	out := make([]check.Result, 4)
	parallel(4, func(i int) {
		switch i {
		case 0:
			if _, err := c.Client.CoreV1().Namespaces().Get(ctx, p.Namespace, metav1.GetOptions{}); apierrors.IsNotFound(err) {
				out[0] = res(Step6, names[0].id, names[0].name, check.Todo, "not found in context "+c.Context,
					"ask the platform team for the namespace, or `spirepod apply --create-namespace`")
			} else if err != nil {
				out[0] = res(Step6, names[0].id, names[0].name, check.Fail, err.Error(), "")
			} else {
				out[0] = res(Step6, names[0].id, names[0].name, check.OK, "", "")
			}
		case 1:
			out[1] = objectsCheck(ctx, p, c, names[1].id, names[1].name, layers, buildErr)
		case 2:
			out[2] = issuerCheck(ctx, p, c, names[2].id, names[2].name)
		case 3:
			out[3] = podsCheck(ctx, p, c, names[3].id, names[3].name)
		}
	})
	return out
}

// parallel runs fn(0..n-1) at once and waits.
func parallel(n int, fn func(i int)) {
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			fn(i)
		}()
	}
	wg.Wait()
}

var errKindNotServed = errors.New("kind not served")

// objectsCheck compares every field the scaffold sets with the live object.
// The live objects are listed, one request per kind and namespace, so the
// cost is a handful of round trips whatever the number of pods.
func objectsCheck(ctx context.Context, p *project.Project, c *Cluster, id, name string, layers []apply.Layer, buildErr error) check.Result {
	if buildErr != nil {
		return res(Step6, id, name, check.Fail, buildErr.Error(), "fix the scaffold (`"+p.ReinitCommand()+"` re-renders it)")
	}
	var missing, drifted []string
	objs := apply.All(layers)
	total := len(objs)
	lives, errs := liveObjects(ctx, p, c, objs)
	for i, o := range objs {
		ref, live, err := objRef(o), lives[i], errs[i]
		if err == errKindNotServed {
			missing = append(missing, ref+" (kind not served)")
			continue
		}
		if apierrors.IsNotFound(err) {
			missing = append(missing, ref)
			continue
		}
		if err != nil {
			return res(Step6, id, name, check.Fail, fmt.Sprintf("get %s: %v", ref, err), "")
		}
		if paths := Drift(normalizeSecret(o).Object, live.Object); len(paths) > 0 {
			if len(paths) > 3 {
				paths = append(paths[:3], fmt.Sprintf("and %d more", len(paths)-3))
			}
			drifted = append(drifted, ref+" ("+strings.Join(paths, ", ")+")")
		}
	}
	if len(missing)+len(drifted) == 0 {
		return res(Step6, id, name, check.OK, project.Count(total, "object"), "")
	}
	if len(missing) == total {
		return res(Step6, id, name, check.Todo, fmt.Sprintf("none of the scaffold's %s applied yet", project.Count(total, "object")), "`spirepod apply`")
	}
	var parts []string
	if len(missing) > 0 {
		parts = append(parts, "missing: "+strings.Join(firstOf(missing, 5), ", "))
	}
	if len(drifted) > 0 {
		parts = append(parts, "drifted: "+strings.Join(firstOf(drifted, 5), "; "))
	}
	return res(Step6, id, name, check.Fail, strings.Join(parts, "; "), "`spirepod diff` shows the changes; `spirepod apply` applies the scaffold")
}

// firstOf is the first n of l and "and K more" for the rest: a line stays
// readable at 5,000 pods.
func firstOf(l []string, n int) []string {
	if len(l) <= n {
		return l
	}
	return append(l[:n:n], fmt.Sprintf("and %d more", len(l)-n))
}

// liveObjects reads the live object of each of objs: one List per kind and
// namespace (a forbidden List falls back to a Get per object). A kind the
// cluster does not serve is errKindNotServed; an absent object NotFound.
func liveObjects(ctx context.Context, p *project.Project, c *Cluster, objs []*unstructured.Unstructured) ([]*unstructured.Unstructured, []error) {
	type group struct {
		ri    dynamic.ResourceInterface
		index []int
	}
	lives := make([]*unstructured.Unstructured, len(objs))
	errs := make([]error, len(objs))
	groups := map[string]*group{}
	var keys []string
	for i, o := range objs {
		gvk := o.GroupVersionKind()
		m, err := c.Mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			errs[i] = errKindNotServed
			continue
		}
		var ri dynamic.ResourceInterface = c.Dynamic.Resource(m.Resource)
		key := m.Resource.String()
		if m.Scope.Name() == meta.RESTScopeNameNamespace {
			ns := o.GetNamespace()
			if ns == "" {
				ns = p.Namespace
			}
			ri, key = c.Dynamic.Resource(m.Resource).Namespace(ns), key+"/"+ns
		}
		g := groups[key]
		if g == nil {
			g = &group{ri: ri}
			groups[key] = g
			keys = append(keys, key)
		}
		g.index = append(g.index, i)
	}
	parallel(len(keys), func(k int) {
		g := groups[keys[k]]
		list, err := g.ri.List(ctx, metav1.ListOptions{})
		if err != nil {
			for _, i := range g.index {
				lives[i], errs[i] = g.ri.Get(ctx, objs[i].GetName(), metav1.GetOptions{})
			}
			return
		}
		byName := make(map[string]*unstructured.Unstructured, len(list.Items))
		for j := range list.Items {
			byName[list.Items[j].GetName()] = &list.Items[j]
		}
		for _, i := range g.index {
			if lives[i] = byName[objs[i].GetName()]; lives[i] == nil {
				errs[i] = apierrors.NewNotFound(schema.GroupResource{Resource: keys[k]}, objs[i].GetName())
			}
		}
	})
	return lives, errs
}

// normalizeSecret removes the line breaks kustomize puts into long base64
// Secret values; the API server decodes them and returns unbroken base64.
func normalizeSecret(o *unstructured.Unstructured) *unstructured.Unstructured {
	if o.GetKind() != "Secret" {
		return o
	}
	c := o.DeepCopy()
	data, _, _ := unstructured.NestedMap(c.Object, "data")
	for k, v := range data {
		if s, ok := v.(string); ok {
			data[k] = strings.Join(strings.Fields(s), "")
		}
	}
	if data != nil {
		_ = unstructured.SetNestedMap(c.Object, data, "data")
	}
	return c
}

func objRef(o *unstructured.Unstructured) string {
	if o.GetNamespace() != "" {
		return o.GetKind() + " " + o.GetNamespace() + "/" + o.GetName()
	}
	return o.GetKind() + " " + o.GetName()
}

// Drift returns the paths of the fields desired sets whose live value
// differs (fields the server adds are ignored). Lists of maps with a "name"
// key are matched by name, other lists by position. Values are never
// returned, only paths, so Secret data is not revealed.
func Drift(desired, live map[string]any) []string {
	var out []string
	driftAt("", desired, live, &out)
	sort.Strings(out)
	return out
}

func driftAt(path string, want, got any, out *[]string) {
	switch w := want.(type) {
	case map[string]any:
		g, ok := got.(map[string]any)
		if !ok {
			*out = append(*out, orRoot(path))
			return
		}
		for k, v := range w {
			if path == "" && k == "status" {
				continue
			}
			gv, present := g[k]
			if !present {
				if isEmpty(v) {
					continue
				}
				*out = append(*out, join(path, k))
				continue
			}
			driftAt(join(path, k), v, gv, out)
		}
	case []any:
		g, ok := got.([]any)
		if !ok {
			if len(w) == 0 && got == nil {
				return
			}
			*out = append(*out, orRoot(path))
			return
		}
		if byName(w) && byName(g) {
			index := map[string]any{}
			for _, e := range g {
				index[e.(map[string]any)["name"].(string)] = e
			}
			for _, e := range w {
				n := e.(map[string]any)["name"].(string)
				ge, ok := index[n]
				if !ok {
					*out = append(*out, fmt.Sprintf("%s[%s]", path, n))
					continue
				}
				driftAt(fmt.Sprintf("%s[%s]", path, n), e, ge, out)
			}
			return
		}
		if len(w) != len(g) {
			*out = append(*out, orRoot(path))
			return
		}
		for i := range w {
			driftAt(fmt.Sprintf("%s[%d]", path, i), w[i], g[i], out)
		}
	default:
		if !scalarEqual(want, got) {
			*out = append(*out, orRoot(path))
		}
	}
}

func byName(l []any) bool {
	if len(l) == 0 {
		return false
	}
	for _, e := range l {
		m, ok := e.(map[string]any)
		if !ok {
			return false
		}
		if _, ok := m["name"].(string); !ok {
			return false
		}
	}
	return true
}

func isEmpty(v any) bool {
	switch t := v.(type) {
	case nil:
		return true
	case []any:
		return len(t) == 0
	case map[string]any:
		return len(t) == 0
	}
	return false
}

// scalarEqual compares through JSON so 1 (int) equals 1 (int64 or float64).
func scalarEqual(a, b any) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	if string(ja) == string(jb) {
		return true
	}
	var fa, fb float64
	if json.Unmarshal(ja, &fa) == nil && json.Unmarshal(jb, &fb) == nil {
		return fa == fb
	}
	return false
}

func join(path, k string) string {
	if path == "" {
		return k
	}
	return path + "." + k
}

func orRoot(p string) string {
	if p == "" {
		return "(object)"
	}
	return p
}

func issuerCheck(ctx context.Context, p *project.Project, c *Cluster, id, name string) check.Result {
	ref := p.Issuer()
	ci, err := ref.Get(ctx, c.Dynamic)
	switch {
	case certmanager.NotInstalled(err):
		return res(Step6, id, name, check.Fail, "cert-manager is not installed (the "+ref.Kind+" kind is not served)", "install cert-manager, then `spirepod apply`")
	case apierrors.IsNotFound(err):
		return res(Step6, id, name, check.Todo, "not found", "`spirepod apply` (certs/ holds it)")
	case err != nil:
		return res(Step6, id, name, check.Fail, err.Error(), "")
	}
	ready, _, msg := certmanager.ReadyCondition(ci)
	if ready {
		return res(Step6, id, name, check.OK, "", "")
	}
	if msg == "" {
		msg = "no Ready condition yet"
	}
	return res(Step6, id, name, check.Fail, msg, "`spirepod pki gen` if the CA is missing, then `spirepod apply` (the CA Secret is "+ref.Secret()+")")
}

func podsCheck(ctx context.Context, p *project.Project, c *Cluster, id, name string) check.Result {
	var bad []string
	running, absent := 0, 0
	names := p.PodNames()
	pods := make([]*corev1.Pod, len(names))
	errs := make([]error, len(names))
	// One List of the namespace's pods, whatever the number of replicas.
	list, err := c.Client.CoreV1().Pods(p.Namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return res(Step6, id, name, check.Fail, fmt.Sprintf("list pods in %s: %v", p.Namespace, err), "")
	}
	byName := make(map[string]*corev1.Pod, len(list.Items))
	for i := range list.Items {
		byName[list.Items[i].Name] = &list.Items[i]
	}
	for i, n := range names {
		if pods[i] = byName[n]; pods[i] == nil {
			errs[i] = apierrors.NewNotFound(corev1.Resource("pods"), n)
		}
	}
	for i, pod := range names {
		po, err := pods[i], errs[i]
		switch {
		case apierrors.IsNotFound(err):
			bad = append(bad, pod+" missing")
			absent++
		case err != nil:
			bad = append(bad, pod+": "+err.Error())
		case po.Status.Phase != corev1.PodRunning:
			why := string(po.Status.Phase)
			for _, cd := range po.Status.Conditions {
				if cd.Type == corev1.PodScheduled && cd.Status == corev1.ConditionFalse {
					why += " (" + cd.Reason + ")"
				}
			}
			bad = append(bad, pod+" "+why)
		default:
			running++
		}
	}
	if absent == len(p.PodNames()) {
		return res(Step6, id, name, check.Todo, fmt.Sprintf("no pod yet (0/%d)", p.Replicas), "`spirepod apply`")
	}
	if len(bad) > 0 {
		return res(Step6, id, name, check.Fail, fmt.Sprintf("%d/%d Running; %s", running, p.Replicas, strings.Join(firstOf(bad, 5), ", ")),
			"`spirepod verify` diagnoses the first broken stage of each pod")
	}
	return res(Step6, id, name, check.OK, fmt.Sprintf("%d/%d", running, p.Replicas), "")
}

// summarize gives one line per step: the worst status and the first
// non-ok message (skipped < ok < to do < warn < fail).
func summarize(rs []check.Result) []StepSummary {
	rank := map[check.Status]int{check.Skipped: 0, check.OK: 1, check.Todo: 2, check.Warn: 3, check.Fail: 4}
	var out []StepSummary
	for _, step := range Steps {
		s := StepSummary{Step: step, Status: check.Skipped}
		seen := false
		for _, r := range rs {
			if r.Group != step {
				continue
			}
			if !seen || rank[r.Status] > rank[s.Status] {
				s.Status = r.Status
				s.Message = r.Message
				if r.Status != check.OK && r.Status != check.Skipped {
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
func versionCheck(p *project.Project) check.Result {
	const id, name = "agent-version", "the agent is not newer than the SPIRE server"
	ok, known, msg := p.AgentVersionSkew()
	switch {
	case !known:
		return res(Step1, id, name, check.Skipped, "versions unknown: "+msg, "")
	case !ok:
		return res(Step1, id, name, check.Fail, msg, "set images.spireAgent in spirepod.yaml (or the profile's spireVersion) to the server's version")
	}
	return res(Step1, id, name, check.OK, msg, "")
}
