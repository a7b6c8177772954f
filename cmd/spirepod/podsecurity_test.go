package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/spirepod/spirepod/internal/testbed"
)

// TestPodSecurityRestricted: the test bed's kube-apiserver runs the real
// PodSecurity admission. In a namespace that enforces "restricted", the
// default scaffold applies and its pods are admitted; a broken variant (a
// privileged container) is refused before anything changes, and apply names
// the container and the field.
func TestPodSecurityRestricted(t *testing.T) {
	b := testbed.Require(t)
	c := testbed.StartCluster(t, b, testbed.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const ns = "team-pss"
	if _, err := c.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns,
		Labels: map[string]string{"pod-security.kubernetes.io/enforce": "restricted", "pod-security.kubernetes.io/enforce-version": "latest"}}},
		metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	work := t.TempDir()
	env := map[string]string{"HOME": work, "XDG_CONFIG_HOME": filepath.Join(work, ".config"), "NO_COLOR": "1"}
	dir := filepath.Join(work, "sc")
	for _, args := range [][]string{{"init", "--team", "pss", "--namespace", ns, "--replicas", "2", dir}} {
		if code, _, errOut := cliRun(t, work, env, args...); code != 0 {
			t.Fatalf("%v: %s", args, errOut)
		}
	}
	for _, args := range [][]string{{"pki", "gen"}, {"bundle", "set", writeServerCA(t, work, 24*time.Hour)}} {
		if code, _, errOut := cliRun(t, dir, env, args...); code != 0 {
			t.Fatalf("%v: %s", args, errOut)
		}
	}
	kube := []string{"--kubeconfig", c.Kubeconfig, "--context", c.Context}

	t.Run("the default scaffold is admitted under restricted", func(t *testing.T) {
		code, out, errOut := cliRun(t, dir, env, append([]string{"apply", "--timeout", "2m"}, kube...)...)
		if code != 0 || !strings.Contains(errOut, "pods ready: spire-envoy-integration-0, spire-envoy-integration-1") {
			t.Fatalf("apply into a restricted namespace: %d\n%s%s", code, out, errOut)
		}
		for i := range 2 {
			pod, err := c.Client.CoreV1().Pods(ns).Get(ctx, "spire-envoy-integration-"+string(rune('0'+i)), metav1.GetOptions{})
			if err != nil {
				t.Fatalf("the pod was not admitted: %v", err)
			}
			if pod.Spec.SecurityContext == nil || pod.Spec.SecurityContext.RunAsNonRoot == nil {
				t.Fatalf("admitted pod lacks the restricted settings: %+v", pod.Spec.SecurityContext)
			}
		}
	})

	t.Run("a privileged container is refused and apply names the field", func(t *testing.T) {
		sts := filepath.Join(dir, "spire-envoy-integration.yaml")
		orig, err := os.ReadFile(sts)
		if err != nil {
			t.Fatal(err)
		}
		broken := strings.Replace(string(orig), "            runAsUser: 100\n            runAsGroup: 100\n            allowPrivilegeEscalation: false\n",
			"            runAsUser: 100\n            runAsGroup: 100\n            privileged: true\n            allowPrivilegeEscalation: true\n", 1)
		if broken == string(orig) {
			t.Fatal("the curl container's securityContext is not where the test expects it")
		}
		if err := os.WriteFile(sts, []byte(broken), 0o644); err != nil {
			t.Fatal(err)
		}
		defer os.WriteFile(sts, orig, 0o644)
		before, err := c.Client.AppsV1().StatefulSets(ns).Get(ctx, "spire-envoy-integration", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		code, out, errOut := cliRun(t, dir, env, append([]string{"apply", "--wait=false"}, kube...)...)
		if code != exitFailure || !strings.Contains(errOut, `violates PodSecurity "restricted:latest"`) ||
			!strings.Contains(errOut, `privileged (container "curl" must not set securityContext.privileged=true)`) {
			t.Fatalf("apply of a privileged variant: exit %d, want 1 naming the field\n%s%s", code, out, errOut)
		}
		after, _ := c.Client.AppsV1().StatefulSets(ns).Get(ctx, "spire-envoy-integration", metav1.GetOptions{})
		// The generation moves with the spec only (the controller keeps
		// updating status, and with it the resourceVersion).
		if after.Generation != before.Generation {
			t.Fatalf("the refused apply changed the StatefulSet's spec (generation %d → %d)", before.Generation, after.Generation)
		}
	})
}
