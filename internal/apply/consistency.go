package apply

import (
	"fmt"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/spirepod/spirepod/internal/checklist"
	"github.com/spirepod/spirepod/internal/project"
)

// DriftError says spirepod.yaml and the scaffold's manifests disagree: a
// value edited in one and not re-rendered into the other.
type DriftError struct {
	// Fields are "what: spirepod.yaml X, manifests Y".
	Fields []string
}

func (e *DriftError) Error() string {
	return "spirepod.yaml and the scaffold's manifests disagree: " + strings.Join(e.Fields, "; ")
}

// CheckProject compares what spirepod.yaml says with what the scaffold's
// manifests say once kustomize has built them: the StatefulSet (name,
// namespace, replicas, service account) and the per-pod agent
// Certificates. Every command that reads both (pr spiffe-id registers
// spirepod.yaml's pods, apply applies the manifests' StatefulSet) runs it,
// so an edit to one side alone is caught before it is acted on.
func CheckProject(layers []Layer, p *project.Project) error {
	var fields []string
	var sts []string
	certs := 0
	for _, o := range All(layers) {
		switch o.GetKind() {
		case "StatefulSet":
			sts = append(sts, o.GetName())
			if o.GetName() != p.StatefulSet {
				continue
			}
			if ns := o.GetNamespace(); ns != p.Namespace {
				fields = append(fields, fmt.Sprintf("namespace: spirepod.yaml %s, manifests %s", p.Namespace, ns))
			}
			if r, ok, _ := unstructured.NestedInt64(o.Object, "spec", "replicas"); ok && int(r) != p.Replicas {
				fields = append(fields, fmt.Sprintf("replicas: spirepod.yaml %d, StatefulSet %d", p.Replicas, r))
			}
			if sa, _, _ := unstructured.NestedString(o.Object, "spec", "template", "spec", "serviceAccountName"); sa != "" && sa != p.ServiceAccount {
				fields = append(fields, fmt.Sprintf("serviceAccount: spirepod.yaml %s, StatefulSet %s", p.ServiceAccount, sa))
			}
		case "Certificate":
			if o.GetNamespace() == p.Namespace && strings.HasPrefix(o.GetName(), project.AgentCNPrefix) {
				certs++
			}
		}
	}
	switch {
	case len(sts) == 0:
		fields = append(fields, "statefulSet: the manifests have no StatefulSet")
	case !slices.Contains(sts, p.StatefulSet):
		fields = append(fields, fmt.Sprintf("statefulSet: spirepod.yaml %s, manifests %s", p.StatefulSet, strings.Join(sts, ", ")))
	}
	if certs > 0 && certs != p.Replicas {
		fields = append(fields, fmt.Sprintf("agent Certificates: spirepod.yaml has %s, the manifests %s in %s", project.Count(p.Replicas, "pod"), project.Count(certs, "Certificate"), p.Namespace))
	}
	if len(fields) > 0 {
		return &DriftError{Fields: fields}
	}
	return nil
}

// CheckProjectResult is CheckProject as a checklist line.
func CheckProjectResult(layers []Layer, p *project.Project) checklist.Result {
	r := checklist.Result{Group: "scaffold", ID: "project-matches-manifests", Name: "spirepod.yaml matches the manifests", Status: checklist.OK}
	if err := CheckProject(layers, p); err != nil {
		r.Status, r.Message, r.Hint = checklist.Fail, err.Error(), "re-render the scaffold from spirepod.yaml's values: `"+p.ReinitCommand()+"`"
	}
	return r
}
