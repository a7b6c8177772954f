package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/spirepod/spirepod/internal/testbed"
)

// TestApplyCLI drives `spirepod init`, `pki gen` and `apply` against a real
// API server with cert-manager, and a second one without cert-manager.
func TestApplyCLI(t *testing.T) {
	b := testbed.Require(t)
	c := testbed.StartCluster(t, b, testbed.Options{})
	if err := c.AddContext("team-prod-eu"); err != nil {
		t.Fatal(err)
	}
	work := t.TempDir()
	env := map[string]string{"HOME": work, "XDG_CONFIG_HOME": filepath.Join(work, ".config"), "NO_COLOR": "1"}
	dir := filepath.Join(work, "sc")
	if code, _, errOut := cliRun(t, work, env, "init", "--team", "cli", "--namespace", "team-cli", "--replicas", "2", dir); code != 0 {
		t.Fatalf("init: %d %s", code, errOut)
	}
	kube := []string{"--kubeconfig", c.Kubeconfig, "--context", c.Context}
	serverCA := writeServerCA(t, work, 24*time.Hour)

	t.Run("an empty server CA bundle is refused", func(t *testing.T) {
		if code, _, errOut := cliRun(t, dir, env, "pki", "gen"); code != 0 {
			t.Fatalf("pki gen: %s", errOut)
		}
		code, _, errOut := cliRun(t, dir, env, append([]string{"apply", "--wait=false", "--create-namespace"}, kube...)...)
		if code != exitFailure || !strings.Contains(errOut, "the bundle is empty") || !strings.Contains(errOut, "hint: put the server's CA in with `spirepod bundle set") {
			t.Fatalf("code %d, stderr:\n%s", code, errOut)
		}
		if _, err := c.Client.CoreV1().Namespaces().Get(context.Background(), "team-cli", metav1.GetOptions{}); err == nil {
			t.Fatal("the namespace was created by a refused apply")
		}
		if code, _, errOut := cliRun(t, dir, env, "bundle", "set", serverCA); code != 0 {
			t.Fatalf("bundle set: %s", errOut)
		}
		for _, f := range []string{"agent-x509pop.crt.pem", "agent-x509pop.key.pem"} {
			if err := os.Remove(filepath.Join(dir, "certs", "secret", f)); err != nil {
				t.Fatal(err)
			}
		}
	})

	t.Run("missing CA points at pki gen and changes nothing", func(t *testing.T) {
		code, _, errOut := cliRun(t, dir, env, append([]string{"apply", "--wait=false"}, kube...)...)
		if code != exitFailure || !strings.Contains(errOut, "hint: run `spirepod pki gen`") {
			t.Fatalf("code %d, stderr:\n%s", code, errOut)
		}
	})
	if code, _, errOut := cliRun(t, dir, env, "pki", "gen"); code != 0 {
		t.Fatalf("pki gen: %d %s", code, errOut)
	}

	t.Run("missing namespace is refused with a hint", func(t *testing.T) {
		code, _, errOut := cliRun(t, dir, env, append([]string{"apply"}, kube...)...)
		if code != exitFailure || !strings.Contains(errOut, "namespace team-cli exists") || !strings.Contains(errOut, "--create-namespace") {
			t.Fatalf("code %d, stderr:\n%s", code, errOut)
		}
		if _, err := c.Client.CoreV1().Namespaces().Get(context.Background(), "team-cli", metav1.GetOptions{}); err == nil {
			t.Fatal("namespace was created without --create-namespace")
		}
	})

	t.Run("protected context needs --yes", func(t *testing.T) {
		code, _, errOut := cliRun(t, dir, env, "apply", "--kubeconfig", c.Kubeconfig, "--context", "team-prod-eu", "--create-namespace")
		if code != exitUsage || !strings.Contains(errOut, `"team-prod-eu" (context team-prod-eu) matches protected pattern "*prod*"`) || !strings.Contains(errOut, "--yes") {
			t.Fatalf("code %d, stderr:\n%s", code, errOut)
		}
		if !strings.Contains(errOut, `Applying to context "team-prod-eu"`) {
			t.Fatalf("the context is not named before anything happens:\n%s", errOut)
		}
	})

	t.Run("a user without permissions is stopped by the SelfSubjectAccessReview preflight", func(t *testing.T) {
		if err := c.AddUser("viewer-ctx", "viewer", nil); err != nil {
			t.Fatal(err)
		}
		code, _, errOut := cliRun(t, dir, env, "apply", "--kubeconfig", c.Kubeconfig, "--context", "viewer-ctx", "--create-namespace")
		if code != exitFailure || !strings.Contains(errOut, "permission to apply") || !strings.Contains(errOut, "create secrets in namespace team-cli") {
			t.Fatalf("code %d, stderr:\n%s", code, errOut)
		}
	})

	t.Run("apply creates, waits, and says which context", func(t *testing.T) {
		t0 := time.Now()
		code, out, errOut := cliRun(t, dir, env, append([]string{"apply", "--create-namespace", "--timeout", "2m"}, kube...)...)
		if code != 0 {
			t.Fatalf("apply: %d\n%s\n%s", code, out, errOut)
		}
		t.Logf("spirepod apply --wait: %v", time.Since(t0).Round(time.Millisecond))
		for _, want := range []string{"created    Secret team-cli/agent-x509pop-root", "created    Issuer team-cli/spire-agent-x509pop-issuer", "created    StatefulSet team-cli/spire-envoy-integration"} {
			if !strings.Contains(out, want) {
				t.Errorf("stdout lacks %q:\n%s", want, out)
			}
		}
		if !strings.Contains(errOut, "Issuer team-cli/spire-agent-x509pop-issuer Ready; pods ready: spire-envoy-integration-0, spire-envoy-integration-1") {
			t.Errorf("stderr lacks the wait result:\n%s", errOut)
		}
	})

	t.Run("second apply and dry-run report unchanged as JSON", func(t *testing.T) {
		for _, extra := range [][]string{{"--wait=false"}, {"--dry-run=server"}} {
			args := append(append([]string{"apply", "-o", "json"}, extra...), kube...)
			code, out, errOut := cliRun(t, dir, env, args...)
			if code != 0 {
				t.Fatalf("%v: %d %s", extra, code, errOut)
			}
			var rep applyReport
			if err := json.Unmarshal([]byte(out), &rep); err != nil {
				t.Fatalf("%v: bad JSON %v:\n%s", extra, err, out)
			}
			if rep.Context != c.Context || len(rep.Objects) < 9 {
				t.Fatalf("%v: report %+v", extra, rep)
			}
			for _, o := range rep.Objects {
				if o.Outcome != "unchanged" {
					t.Errorf("%v: %s is %s, want unchanged", extra, o.Ref(), o.Outcome)
				}
			}
		}
	})

	t.Run("diff exits 0 when nothing would change and 1 when something would", func(t *testing.T) {
		if code, out, errOut := cliRun(t, dir, env, append([]string{"diff"}, kube...)...); code != 0 || out != "" {
			t.Fatalf("diff on an applied scaffold: %d %q %s", code, out, errOut)
		}
		if code, _, errOut := cliRun(t, work, env, "init", "--team", "cli", "--namespace", "team-cli", "--replicas", "3", "--force", dir); code != 0 {
			t.Fatalf("re-init: %s", errOut)
		}
		// Back to 2 replicas, manifests and spirepod.yaml together (restoring
		// spirepod.yaml alone would leave them disagreeing).
		defer func() {
			if code, _, errOut := cliRun(t, work, env, "init", "--team", "cli", "--namespace", "team-cli", "--replicas", "2", "--force", dir); code != 0 {
				t.Fatalf("re-init back: %s", errOut)
			}
		}()
		code, out, _ := cliRun(t, dir, env, append([]string{"diff"}, kube...)...)
		if code != exitFailure || !strings.Contains(out, "+  replicas: 3") {
			t.Fatalf("diff after replicas change: %d\n%s", code, out)
		}
		if strings.Contains(out, "PRIVATE KEY") {
			t.Fatal("diff printed a private key")
		}
	})

	t.Run("a second team with all defaults applies alongside, and a changed CA is not replaced silently", func(t *testing.T) {
		other := filepath.Join(work, "other")
		if code, _, errOut := cliRun(t, work, env, "init", "--team", "other", "--namespace", "team-other", "--replicas", "2", other); code != 0 {
			t.Fatalf("init: %s", errOut)
		}
		if code, _, errOut := cliRun(t, other, env, "pki", "gen"); code != 0 {
			t.Fatalf("pki gen: %s", errOut)
		}
		if code, _, errOut := cliRun(t, other, env, "bundle", "set", serverCA); code != 0 {
			t.Fatalf("bundle set: %s", errOut)
		}
		before, err := c.Client.CoreV1().Secrets("team-cli").Get(context.Background(), "agent-x509pop-root", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if code, out, errOut := cliRun(t, other, env, append([]string{"apply", "--create-namespace", "--timeout", "2m"}, kube...)...); code != 0 {
			t.Fatalf("the second team's apply: %d\n%s%s", code, out, errOut)
		}
		after, _ := c.Client.CoreV1().Secrets("team-cli").Get(context.Background(), "agent-x509pop-root", metav1.GetOptions{})
		if after.ResourceVersion != before.ResourceVersion {
			t.Fatal("the second team's apply changed the first team's CA Secret")
		}
		// The first team replaces its CA: apply refuses until --replace-ca.
		if code, _, errOut := cliRun(t, dir, env, "pki", "gen", "--force"); code != 0 {
			t.Fatalf("pki gen --force: %s", errOut)
		}
		code, _, errOut := cliRun(t, dir, env, append([]string{"apply", "--wait=false"}, kube...)...)
		if code != exitFailure || !strings.Contains(errOut, "holds CA CN=cli x509pop agent CA") || !strings.Contains(errOut, "--replace-ca") {
			t.Fatalf("code %d, stderr:\n%s", code, errOut)
		}
		if again, _ := c.Client.CoreV1().Secrets("team-cli").Get(context.Background(), "agent-x509pop-root", metav1.GetOptions{}); again.ResourceVersion != before.ResourceVersion {
			t.Fatal("the CA Secret was replaced without --replace-ca")
		}
		if code, _, errOut := cliRun(t, dir, env, append([]string{"apply", "--wait=false", "--replace-ca"}, kube...)...); code != 0 {
			t.Fatalf("apply --replace-ca: %s", errOut)
		}
	})

	t.Run("a cluster without cert-manager gets the hint", func(t *testing.T) {
		bare := testbed.StartCluster(t, b, testbed.Options{NoCertManager: true})
		code, _, errOut := cliRun(t, dir, env, "apply", "--kubeconfig", bare.Kubeconfig, "--context", bare.Context, "--create-namespace")
		if code != exitFailure || !strings.Contains(errOut, "does not serve Issuer.cert-manager.io") || !strings.Contains(errOut, "hint: install cert-manager") {
			t.Fatalf("code %d, stderr:\n%s", code, errOut)
		}
		if _, err := bare.Client.CoreV1().Namespaces().Get(context.Background(), "team-cli", metav1.GetOptions{}); err == nil {
			t.Fatal("preflight failure still created the namespace")
		}
	})
}
