package status

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"

	"golang.org/x/sync/errgroup"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/spirepod/spirepod/internal/apply"
	"github.com/spirepod/spirepod/internal/certmanager"
	"github.com/spirepod/spirepod/internal/checklist"
	"github.com/spirepod/spirepod/internal/project"
)

// The cluster step asks package apply, so `status`, `diff`, `apply` and `up`
// give one answer: whether the objects match is a server-side dry run of
// every object (apply.Diff, as `spirepod diff` makes, with the team's field
// manager), and readiness is one read of the issuer and of the pods
// (apply.Ready, what `apply --wait` and `up` wait for).

// clusterInput is what every cluster check reads.
type clusterInput struct {
	p        *project.Project
	t        *apply.Target
	layers   []apply.Layer
	buildErr error
}

// clusterCheck is one check of the cluster step: its id, its name and how
// it judges.
type clusterCheck struct {
	id    string
	name  func(p *project.Project) string
	judge func(ctx context.Context, in clusterInput) (st checklist.Status, msg, hint string)
}

// clusterTable is the cluster step's checks, in order.
var clusterTable = []clusterCheck{
	{"namespace", func(p *project.Project) string { return "namespace " + p.Namespace + " exists" }, namespaceCheck},
	{"objects", func(*project.Project) string { return "objects in the cluster match the scaffold" }, objectsCheck},
	{"cluster-issuer", func(p *project.Project) string { return p.Issuer().String() + " Ready" }, issuerCheck},
	{"pods", func(*project.Project) string { return "pods Running and ready" }, podsCheck},
}

func clusterChecks(ctx context.Context, p *project.Project, t *apply.Target, skip string, layers []apply.Layer, buildErr error) []checklist.Result {
	out := make([]checklist.Result, len(clusterTable))
	if t == nil {
		for i, c := range clusterTable {
			out[i] = res(Step6, c.id, c.name(p), checklist.Skipped, skip, "")
		}
		return out
	}
	// The checks read independent objects: all their requests go at once
	// (one round trip to a remote API server, not one per check).
	in := clusterInput{p: p, t: t, layers: layers, buildErr: buildErr}
	var g errgroup.Group
	for i, c := range clusterTable {
		g.Go(func() error {
			st, msg, hint := c.judge(ctx, in)
			out[i] = res(Step6, c.id, c.name(p), st, msg, hint)
			return nil // a failure is a check result
		})
	}
	_ = g.Wait()
	return out
}

func namespaceCheck(ctx context.Context, in clusterInput) (checklist.Status, string, string) {
	_, err := in.t.Client.CoreV1().Namespaces().Get(ctx, in.p.Namespace, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return checklist.Todo, "not found in context " + in.t.Context, "ask the platform team for the namespace, or `spirepod apply --create-namespace`"
	case err != nil:
		return checklist.Fail, err.Error(), ""
	}
	return checklist.OK, "", ""
}

// objectsCheck is apply.Diff's answer: an object the dry run would create
// is missing, one it would configure (or whose fields another field manager
// took over, which apply would meet as a conflict) has drifted. A user who
// may not make the dry run (it needs get, list and patch) gets a warning
// naming the permission, not a comparison of another kind.
func objectsCheck(ctx context.Context, in clusterInput) (checklist.Status, string, string) {
	p := in.p
	if in.buildErr != nil {
		return checklist.Fail, in.buildErr.Error(), "fix the scaffold (`" + p.ReinitCommand() + "` re-renders it)"
	}
	// RetryFor zero: one try, status reports, it does not wait.
	diffs, err := apply.Diff(ctx, apply.Options{Layers: in.layers, Dynamic: in.t.Dynamic, Mapper: in.t.Mapper, FieldManager: p.FieldManager()})
	if err != nil && ctx.Err() != nil {
		return checklist.Fail, err.Error(), ""
	}
	var missing, drifted, failed, unserved []string
	var forbidden []apply.ObjectDiff
	conflicts := false
	for _, d := range diffs {
		ref := d.Ref()
		switch {
		case d.Err != nil && rbacDenied(d.Err):
			forbidden = append(forbidden, d)
		case d.Err != nil && meta.IsNoMatchError(d.Err):
			unserved = append(unserved, ref)
		case d.Err != nil && apierrors.IsNotFound(d.Err):
			// Apply creates what is absent: a NotFound is its namespace.
			missing = append(missing, ref)
		case len(d.Conflicts) > 0:
			drifted = append(drifted, ref+" ("+conflictText(d.Conflicts)+")")
			conflicts = true
		case d.Err != nil:
			failed = append(failed, ref+": "+d.Error)
		case d.Outcome == apply.Created:
			missing = append(missing, ref)
		case d.Outcome == apply.Configured:
			drifted = append(drifted, ref)
		}
	}
	total := len(diffs)
	if len(unserved) > 0 {
		// apply cannot make these either: the kind's CRDs are not installed.
		return checklist.Fail, fmt.Sprintf("the cluster does not serve the kind of %s", strings.Join(firstOf(unserved, 3), ", ")),
			"install cert-manager (its CRDs serve Issuer and Certificate), then `spirepod apply`"
	}
	switch {
	case len(missing)+len(drifted)+len(failed)+len(forbidden) == 0:
		return checklist.OK, project.Count(total, "object"), ""
	case len(missing) == total:
		return checklist.Todo, fmt.Sprintf("none of the scaffold's %s applied yet", project.Count(total, "object")), "`spirepod apply`"
	case len(missing)+len(drifted)+len(failed) == 0:
		return checklist.Warn, forbiddenText(forbidden, total), forbiddenHint(p)
	}
	var parts []string
	if len(missing) > 0 {
		parts = append(parts, "missing: "+strings.Join(firstOf(missing, 5), ", "))
	}
	if len(drifted) > 0 {
		parts = append(parts, "drifted: "+strings.Join(firstOf(drifted, 5), "; "))
	}
	if len(failed) > 0 {
		parts = append(parts, "not compared: "+strings.Join(firstOf(failed, 3), "; "))
	}
	if len(forbidden) > 0 {
		parts = append(parts, forbiddenText(forbidden, total))
	}
	hint := "`spirepod diff` shows the changes; `spirepod apply` applies the scaffold"
	if conflicts {
		hint += " (--force-conflicts takes back the fields another field manager changed)"
	}
	return checklist.Fail, strings.Join(parts, "; "), hint
}

// rbacDenial is the authorizer's refusal ("User "u" cannot patch resource
// "configmaps" in API group "" in the namespace "ns"": k8s.io/apiserver's
// endpoints/handlers/responsewriters forbiddenMessage).
var rbacDenial = regexp.MustCompile(` cannot [a-z]+ resource "`)

// rbacDenied: the request was refused for want of a permission. Other
// Forbidden answers (an admission webhook's denial, an exceeded quota, a
// namespace being deleted, a Role granting more than its author holds)
// are faults apply would meet, not permissions status lacks.
func rbacDenied(err error) bool {
	return apierrors.IsForbidden(err) && rbacDenial.MatchString(err.Error())
}

// conflictText names the fields another field manager took over, and the
// managers: "data.envoy.yaml changed by "kubectl-edit"".
func conflictText(cs []apply.Conflict) string {
	var fields, managers []string
	seen := map[string]bool{}
	for _, c := range cs {
		fields = append(fields, strings.TrimPrefix(c.Field, "."))
		if !seen[c.Manager] {
			seen[c.Manager] = true
			managers = append(managers, fmt.Sprintf("%q", c.Manager))
		}
	}
	return strings.Join(firstOf(fields, 3), ", ") + " changed by " + strings.Join(managers, ", ")
}

// forbiddenText says which objects the dry run could not compare, the
// resources it needs permission on, and the API server's first answer
// (which names the user and the verb).
func forbiddenText(fs []apply.ObjectDiff, total int) string {
	var resources []string
	seen := map[string]bool{}
	for _, d := range fs {
		r := strings.ToLower(d.Kind)
		var se apierrors.APIStatus
		if errors.As(d.Err, &se) && se.Status().Details != nil && se.Status().Details.Kind != "" {
			r = se.Status().Details.Kind // the resource, for a Forbidden
			if g := se.Status().Details.Group; g != "" {
				r += "." + g
			}
		}
		if !seen[r] {
			seen[r] = true
			resources = append(resources, r)
		}
	}
	return fmt.Sprintf("%d of %s not compared: the server-side dry run (as `spirepod diff` makes) needs get, list and patch on %s, and the API server answered: %s",
		len(fs), project.Count(total, "object"), strings.Join(resources, ", "), fs[0].Error)
}

func forbiddenHint(p *project.Project) string {
	return "ask for get, list and patch on them in namespace " + p.Namespace + " (a dry run changes nothing), or run status with the credentials `spirepod apply` uses"
}

// firstOf is the first n of l and "and K more" for the rest: a line stays
// readable at 5,000 pods.
func firstOf(l []string, n int) []string {
	if len(l) <= n {
		return l
	}
	return append(l[:n:n], fmt.Sprintf("and %d more", len(l)-n))
}

// issuerCheck is apply.Ready's answer for the issuer.
func issuerCheck(ctx context.Context, in clusterInput) (checklist.Status, string, string) {
	ref := in.p.Issuer()
	st, err := apply.Ready(ctx, apply.WaitOptions{Dynamic: in.t.Dynamic, Issuer: ref})
	switch {
	case certmanager.NotInstalled(err):
		return checklist.Fail, "cert-manager is not installed (the " + ref.Kind + " kind is not served)", "install cert-manager, then `spirepod apply`"
	case err != nil:
		return checklist.Fail, err.Error(), ""
	case st.IssuerMissing:
		return checklist.Todo, "not found", "`spirepod apply` (certs/ holds it)"
	case st.IssuerReady:
		return checklist.OK, "", ""
	}
	msg := st.IssuerMessage
	if msg == "" {
		msg = "no Ready condition yet"
	}
	return checklist.Fail, msg, "`spirepod pki gen` if the CA is missing, then `spirepod apply` (the CA Secret is " + ref.Secret() + ")"
}

// podsCheck is apply.Ready's answer for the pods: each is Running and
// ready, or says why not.
func podsCheck(ctx context.Context, in clusterInput) (checklist.Status, string, string) {
	p := in.p
	names := p.PodNames()
	st, err := apply.Ready(ctx, apply.WaitOptions{Client: in.t.Client, Namespace: p.Namespace, Pods: names})
	if err != nil {
		return checklist.Fail, err.Error(), ""
	}
	if len(st.PodsMissing) == len(names) {
		return checklist.Todo, fmt.Sprintf("no pod yet (0/%d)", p.Replicas), "`spirepod apply`"
	}
	if len(st.PodsPending) == 0 {
		return checklist.OK, fmt.Sprintf("%d/%d", len(st.PodsReady), p.Replicas), ""
	}
	pending := map[string]bool{}
	for _, n := range st.PodsPending {
		pending[n] = true
	}
	var bad []string
	for _, n := range names { // in ordinal order
		switch why, ok := st.PodsWhy[n]; {
		case !pending[n]:
		case ok:
			bad = append(bad, n+" "+why)
		default:
			bad = append(bad, n+" missing")
		}
	}
	return checklist.Fail, fmt.Sprintf("%d/%d ready; %s", len(st.PodsReady), p.Replicas, strings.Join(firstOf(bad, 5), ", ")),
		"`spirepod verify` diagnoses the first broken stage of each pod"
}
