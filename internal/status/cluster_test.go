package status

import (
	"errors"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// TestRBACDenied: only the authorizer's refusal is a missing permission;
// other Forbidden answers are faults apply would meet.
func TestRBACDenied(t *testing.T) {
	cm := schema.GroupResource{Resource: "configmaps"}
	for _, c := range []struct {
		name string
		err  error
		want bool
	}{
		{"authorizer", apierrors.NewForbidden(cm, "envoy", errors.New(`User "system:serviceaccount:team-a:reader" cannot patch resource "configmaps" in API group "" in the namespace "team-a"`)), true},
		{"admission webhook", apierrors.NewForbidden(cm, "envoy", errors.New(`admission webhook "policy.example.com" denied the request: labels required`)), false},
		{"quota", apierrors.NewForbidden(cm, "envoy", errors.New(`exceeded quota: team-quota, requested: count/configmaps=1, used: count/configmaps=10, limited: count/configmaps=10`)), false},
		{"namespace terminating", apierrors.NewForbidden(cm, "envoy", errors.New(`unable to create new content in namespace team-a because it is being terminated`)), false},
		{"RBAC escalation", apierrors.NewForbidden(schema.GroupResource{Group: "rbac.authorization.k8s.io", Resource: "roles"}, "gen-cert",
			errors.New(`user "u" (groups=["g"]) is attempting to grant RBAC permissions not currently held`)), false},
		{"not forbidden", apierrors.NewNotFound(cm, "envoy"), false},
	} {
		if got := rbacDenied(c.err); got != c.want {
			t.Errorf("%s: rbacDenied = %v, want %v (%v)", c.name, got, c.want, c.err)
		}
	}
}
