package apply_test

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/restmapper"

	"github.com/spirepod/spirepod/internal/apply"
	"github.com/spirepod/spirepod/internal/checklist"
	"github.com/spirepod/spirepod/internal/pki"
	"github.com/spirepod/spirepod/internal/project"
	"github.com/spirepod/spirepod/internal/retry"
	"github.com/spirepod/spirepod/internal/scaffold"
	"github.com/spirepod/spirepod/internal/testbed"
	"github.com/spirepod/spirepod/scaffoldfs"
)

// newScaffold renders a scaffold for ns with a CA made now by pki.Generate.
func newScaffold(t *testing.T, ns string, replicas int) *project.Project {
	t.Helper()
	dir := t.TempDir()
	p := &project.Project{
		APIVersion: project.APIVersion, Kind: project.Kind,
		Team: "team-" + ns, Namespace: ns, Environment: "dev",
		StatefulSet: "spire-envoy-integration", Replicas: replicas, ServiceAccount: "httpbin-client",
		Naming: project.NamingNamespaced, IssuerScope: project.IssuerNamespaced,
		TrustDomain: "spire.cityos-dev.woven-planet.tech", SpireServer: "spire-server.cityos-dev.woven-planet.tech:8081",
		City: project.City{Repo: "wp-wcm/city", BaseBranch: "main", TeamPath: "ns/" + ns,
			TrustList: project.TrustList{Mode: project.TrustListBundle, Path: "trust.pem"}},
		Registration: project.Registration{Format: project.FormatEntryJSON, EnvoyUID: 101},
		Paths:        project.DefaultPaths, Dir: dir,
	}
	p.ApplyDefaults()
	files, err := scaffold.Render(scaffold.Options{Source: scaffoldfs.Scaffold(), Project: p})
	if err != nil {
		t.Fatal(err)
	}
	plan, err := scaffold.PlanWrite(dir, files)
	if err != nil {
		t.Fatal(err)
	}
	if err := plan.Write(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	if _, err := pki.Generate(context.Background(), pki.GenerateOptions{
		CertPath: p.Path(p.Paths.CACert), KeyPath: p.Path(p.Paths.CAKey), Subject: pki.DefaultSubject(p.Team),
		Rand: rand.Reader, Now: time.Now,
	}); err != nil {
		t.Fatal(err)
	}
	return p
}

type env struct {
	c    *testbed.Cluster
	p    *project.Project
	opts apply.Options
}

func newEnv(t *testing.T, c *testbed.Cluster, p *project.Project) *env {
	t.Helper()
	layers, err := apply.Build(p.Dir)
	if err != nil {
		t.Fatal(err)
	}
	dc, err := discovery.NewDiscoveryClientForConfig(c.Config)
	if err != nil {
		t.Fatal(err)
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))
	return &env{c: c, p: p, opts: apply.Options{Layers: layers, Dynamic: c.Dynamic, Mapper: mapper, FieldManager: p.FieldManager(), RetryFor: 10 * time.Second}}
}

func createNamespace(t *testing.T, c *testbed.Cluster, ns string) {
	t.Helper()
	if _, err := c.Client.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func outcomes(r *apply.Result) map[apply.Outcome]int {
	m := map[apply.Outcome]int{}
	for _, o := range r.Objects {
		m[o.Outcome]++
	}
	return m
}

// TestApplyOnTestbed applies a fresh scaffold to a real API server with real
// cert-manager, controller-manager, scheduler and kwok.
func TestApplyOnTestbed(t *testing.T) {
	b := testbed.Require(t)
	c := testbed.StartCluster(t, b, testbed.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	p := newScaffold(t, "team-apply", 2)
	e := newEnv(t, c, p)

	t.Run("preflight", func(t *testing.T) {
		if rs := pki.LoadTeamCA(pki.TeamCAOptions{CertPath: p.Path(p.Paths.CACert), KeyPath: p.Path(p.Paths.CAKey), Now: time.Now()}).Results; checklist.Failed(rs) {
			t.Fatalf("CA preflight failed: %+v", rs)
		}
		rs := apply.CheckCluster(ctx, apply.ClusterOptions{Layers: e.opts.Layers, Client: c.Client, Mapper: e.opts.Mapper, Namespace: p.Namespace})
		r, ok := checklist.Find(rs, "namespace")
		if !ok || r.Status != checklist.Fail || !strings.Contains(r.Hint, "--create-namespace") {
			t.Fatalf("missing namespace: got %+v", r)
		}
		if r, _ := checklist.Find(rs, "cert-manager"); r.Status != checklist.OK {
			t.Fatalf("cert-manager check: %+v", r)
		}
		if r, _ := checklist.Find(rs, "permissions"); r.Status != checklist.OK {
			t.Fatalf("permissions check as admin: %+v", r)
		}
	})
	createNamespace(t, c, p.Namespace)

	t.Run("dry-run on an empty namespace stores nothing", func(t *testing.T) {
		o := e.opts
		o.DryRun = true
		res, err := apply.Apply(ctx, o)
		if err != nil {
			t.Fatal(err)
		}
		if got := outcomes(res); got[apply.Created] != len(res.Objects) {
			t.Fatalf("dry run outcomes %v, want all created", got)
		}
		if _, err := c.Client.AppsV1().StatefulSets(p.Namespace).Get(ctx, p.StatefulSet, metav1.GetOptions{}); err == nil {
			t.Fatal("dry run created the StatefulSet")
		}
	})

	t.Run("first apply creates everything, issuer and pods become ready", func(t *testing.T) {
		t0 := time.Now()
		res, err := apply.Apply(ctx, e.opts)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("applied %d objects in %v", len(res.Objects), time.Since(t0).Round(time.Millisecond))
		if got := outcomes(res); got[apply.Created] != len(res.Objects) || len(res.Objects) < 9 {
			t.Fatalf("outcomes %v over %d objects, want all created", got, len(res.Objects))
		}
		// order: the CA Secret before the issuer, config before the StatefulSet
		idx := map[string]int{}
		for i, o := range res.Objects {
			idx[o.Kind] = i
		}
		if !(idx["Secret"] < idx["Issuer"] && idx["Issuer"] < idx["StatefulSet"] && idx["ConfigMap"] < idx["StatefulSet"]) {
			t.Fatalf("apply order wrong: %v", idx)
		}
		for _, o := range res.Objects {
			if !managedBySpirepod(t, c, o, p.FieldManager()) {
				t.Errorf("%s has no managedFields entry for field manager %s", o.Ref(), p.FieldManager())
			}
		}
		t0 = time.Now()
		st, err := apply.Wait(ctx, apply.WaitOptions{Client: c.Client, Dynamic: c.Dynamic, Issuer: p.Issuer(),
			Namespace: p.Namespace, Pods: p.PodNames()})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("issuer Ready and %v ready in %v", st.PodsReady, time.Since(t0).Round(time.Millisecond))
		if !st.IssuerReady || len(st.PodsReady) != 2 {
			t.Fatalf("wait status %+v", st)
		}
	})

	t.Run("second apply changes nothing", func(t *testing.T) {
		res, err := apply.Apply(ctx, e.opts)
		if err != nil {
			t.Fatal(err)
		}
		if got := outcomes(res); got[apply.Unchanged] != len(res.Objects) {
			t.Fatalf("re-apply outcomes %v, want all unchanged", got)
		}
	})

	t.Run("dry-run and diff report a change without storing it; secrets stay hidden", func(t *testing.T) {
		p2 := *p
		p2.Replicas = 3
		changed := withReplicas(t, e.opts.Layers, 3)
		o := e.opts
		o.Layers = changed
		o.DryRun = true
		res, err := apply.Apply(ctx, o)
		if err != nil {
			t.Fatal(err)
		}
		if got := outcomes(res); got[apply.Configured] != 1 || got[apply.Unchanged] != len(res.Objects)-1 {
			t.Fatalf("dry-run outcomes %v, want 1 configured", got)
		}
		sts, _ := c.Client.AppsV1().StatefulSets(p.Namespace).Get(ctx, p.StatefulSet, metav1.GetOptions{})
		if *sts.Spec.Replicas != 2 {
			t.Fatalf("dry run changed replicas to %d", *sts.Spec.Replicas)
		}
		diffs, err := apply.Diff(ctx, o)
		if err != nil {
			t.Fatal(err)
		}
		var all strings.Builder
		for _, d := range diffs {
			all.WriteString(d.Diff)
		}
		if !strings.Contains(all.String(), "-  replicas: 2") || !strings.Contains(all.String(), "+  replicas: 3") {
			t.Fatalf("diff does not show the replica change:\n%s", all.String())
		}
		keyPEM, _ := os.ReadFile(p.Path(p.Paths.CAKey))
		if strings.Contains(all.String(), "PRIVATE KEY") || strings.Contains(all.String(), string(keyPEM[30:60])) {
			t.Fatal("diff leaks the CA key")
		}
	})

	t.Run("field conflicts name the other manager", func(t *testing.T) {
		patch := []byte(`{"apiVersion":"apps/v1","kind":"StatefulSet","metadata":{"name":"` + p.StatefulSet + `","namespace":"` + p.Namespace + `"},"spec":{"replicas":1}}`)
		if _, err := c.Client.AppsV1().StatefulSets(p.Namespace).Patch(ctx, p.StatefulSet, types.ApplyPatchType, patch,
			metav1.PatchOptions{FieldManager: "flux", Force: ptrTrue()}); err != nil {
			t.Fatal(err)
		}
		_, err := apply.Apply(ctx, e.opts)
		var ce *apply.ConflictError
		if !errors.As(err, &ce) {
			t.Fatalf("err = %v, want a ConflictError", err)
		}
		if !strings.Contains(err.Error(), `.spec.replicas is owned by field manager "flux"`) {
			t.Fatalf("conflict message %q does not name the field and manager", err)
		}
		o := e.opts
		o.ForceConflicts = true
		if _, err := apply.Apply(ctx, o); err != nil {
			t.Fatalf("with ForceConflicts: %v", err)
		}
		sts, _ := c.Client.AppsV1().StatefulSets(p.Namespace).Get(ctx, p.StatefulSet, metav1.GetOptions{})
		if *sts.Spec.Replicas != 2 {
			t.Fatalf("replicas %d after forced apply, want 2", *sts.Spec.Replicas)
		}
	})

	t.Run("gen_cert.sh gets the agent certificate from real cert-manager, with only the scaffold's Role", func(t *testing.T) {
		// The pods' service account, with exactly the scaffold's Role: read
		// only, limited to the StatefulSet's Certificates and Secrets.
		kc, err := c.ServiceAccountKubeconfig(ctx, t.TempDir(), p.Namespace, p.ServiceAccount)
		if err != nil {
			t.Fatal(err)
		}
		runGenCert(t, c, e.opts.Layers, p, "spire-envoy-integration-0", c.Bins.Kubectl()+" --kubeconfig "+kc)
		// ... and nothing else: another name, or Secrets at large, are refused.
		for _, args := range [][]string{
			{"get", "secret", "agent-x509pop-root", "-n", p.Namespace},
			{"get", "secrets", "-n", p.Namespace},
			{"get", "certificate", "spire-agent-x509pop-other-0", "-n", p.Namespace},
			{"create", "secret", "generic", "x", "-n", p.Namespace},
			{"delete", "certificate", p.CertificateName("spire-envoy-integration-0"), "-n", p.Namespace},
			{"annotate", "certificate", p.CertificateName("spire-envoy-integration-0"), "x=y", "-n", p.Namespace},
		} {
			out, err := exec.Command(c.Bins.Kubectl(), append([]string{"--kubeconfig", kc}, args...)...).CombinedOutput()
			if err == nil || !strings.Contains(strings.ToLower(string(out)), "forbidden") {
				t.Errorf("kubectl %v as the pods' service account: %v\n%s — want forbidden", args, err, out)
			}
		}
	})
}

// TestApplyAPIServerDiesMidApply kills kube-apiserver after the first object
// is applied: the rest is retried, then reported as not applied; once the
// server is back, a second run completes the job.
func TestApplyAPIServerDiesMidApply(t *testing.T) {
	b := testbed.Require(t)
	c := testbed.StartCluster(t, b, testbed.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	p := newScaffold(t, "team-fault", 1)
	createNamespace(t, c, p.Namespace)
	e := newEnv(t, c, p)
	if _, err := e.opts.Mapper.RESTMapping(schemaGK("cert-manager.io", "ClusterIssuer"), "v1"); err != nil {
		t.Fatal(err) // warm the discovery cache while the server is up
	}
	o := e.opts
	o.RetryFor = 2 * time.Second
	killed := false
	o.Progress = func(ev apply.Event) {
		if !killed && ev.Object != nil && ev.Object.Outcome == apply.Created {
			killed = true
			c.StopAPIServer()
		}
	}
	t0 := time.Now()
	res, err := apply.Apply(ctx, o)
	var inc *apply.IncompleteError
	if !errors.As(err, &inc) {
		t.Fatalf("err = %v, want IncompleteError", err)
	}
	if !retry.Transient(inc.Cause) {
		t.Fatalf("cause %v is not recognised as transient", inc.Cause)
	}
	if len(inc.Applied) == 0 || len(inc.Missing) == 0 || !strings.Contains(strings.Join(inc.Missing, " "), "StatefulSet") {
		t.Fatalf("applied %v, missing %v: want some of each, StatefulSet missing", inc.Applied, inc.Missing)
	}
	t.Logf("gave up after %v: applied %d, not applied %d", time.Since(t0).Round(time.Millisecond), len(inc.Applied), len(inc.Missing))
	if res.Count(apply.NotApplied)+res.Count(apply.Failed) != len(inc.Missing) {
		t.Fatalf("result and error disagree: %+v", res.Objects)
	}
	if err := c.RestartAPIServer(ctx); err != nil {
		t.Fatal(err)
	}
	res, err = apply.Apply(ctx, e.opts)
	if err != nil {
		t.Fatalf("re-run after restart: %v", err)
	}
	// The objects of the wave in flight when the server died may have been
	// stored without their answer arriving: the re-run finds those
	// unchanged. Every object the first run confirmed is unchanged, and the
	// later waves (the StatefulSet) are created now.
	got := outcomes(res)
	if got[apply.Created] == 0 || got[apply.Created] > len(inc.Missing) || got[apply.Created]+got[apply.Unchanged] != len(res.Objects) {
		t.Fatalf("re-run outcomes %v, want between 1 and %d of the %d unconfirmed objects created and the rest unchanged", got, len(inc.Missing), len(inc.Missing))
	}
	for _, o := range res.Objects {
		if o.Kind == "StatefulSet" && o.Outcome != apply.Created {
			t.Fatalf("re-run: StatefulSet %s, want created (it was in a later wave)", o.Outcome)
		}
	}
}

func managedBySpirepod(t *testing.T, c *testbed.Cluster, o apply.ObjectResult, manager string) bool {
	t.Helper()
	args := []string{"get", strings.ToLower(o.Kind), o.Name, "--show-managed-fields", "-o", "jsonpath={.metadata.managedFields[*].manager}"}
	if o.Namespace != "" {
		args = append(args, "-n", o.Namespace)
	}
	out, err := c.Kubectl(context.Background(), args...)
	if err != nil {
		t.Fatalf("kubectl %v: %v\n%s", args, err, out)
	}
	if !strings.Contains(out, manager) {
		full, _ := c.Kubectl(context.Background(), "get", strings.ToLower(o.Kind), o.Name, "-n", o.Namespace, "--show-managed-fields", "-o", "yaml")
		t.Logf("managers of %s: %q\n%s", o.Ref(), out, full)
	}
	return strings.Contains(out, manager)
}

func withReplicas(t *testing.T, layers []apply.Layer, n int64) []apply.Layer {
	t.Helper()
	out := make([]apply.Layer, len(layers))
	for i, l := range layers {
		out[i] = apply.Layer{Name: l.Name, Dir: l.Dir}
		for _, o := range l.Objects {
			o = o.DeepCopy()
			if o.GetKind() == "StatefulSet" {
				if err := unstructured.SetNestedField(o.Object, n, "spec", "replicas"); err != nil {
					t.Fatal(err)
				}
			}
			out[i].Objects = append(out[i].Objects, o)
		}
	}
	return out
}

// runGenCert extracts gen_cert.sh from the built init-gen-cert ConfigMap and
// runs it once as the gen-cert sidecar would, with the real kubectl against
// the test API server.
func runGenCert(t *testing.T, c *testbed.Cluster, layers []apply.Layer, p *project.Project, pod, kubectl string) {
	t.Helper()
	var script string
	for _, o := range apply.All(layers) {
		if o.GetKind() == "ConfigMap" && o.GetName() == "init-gen-cert" {
			script, _, _ = unstructured.NestedString(o.Object, "data", "gen_cert.sh")
		}
	}
	if script == "" {
		t.Fatal("init-gen-cert ConfigMap has no gen_cert.sh")
	}
	dir := t.TempDir()
	certDir := filepath.Join(dir, "certs")
	if err := os.WriteFile(filepath.Join(dir, "gen_cert.sh"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sh", filepath.Join(dir, "gen_cert.sh"), "once")
	cmd.Env = append(os.Environ(),
		"POD_NAME="+pod, "POD_NAMESPACE="+p.Namespace, "CERT_DIR="+certDir,
		"KUBECTL="+kubectl,
		"CERT_TIMEOUT=60s")
	t0 := time.Now()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("gen_cert.sh: %v\n%s", err, out)
	}
	t.Logf("gen_cert.sh issued the agent certificate in %v", time.Since(t0).Round(time.Millisecond))
	leafPEM, err := os.ReadFile(filepath.Join(certDir, "agent.crt.pem"))
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(certDir, "agent.key.pem"))
	if err != nil || st.Mode().Perm()&0o077 != 0 {
		t.Fatalf("agent key missing or readable by others: %v %v", err, st)
	}
	leaves, err := pki.ParseCertificates(leafPEM)
	if err != nil {
		t.Fatal(err)
	}
	leaf := leaves[0]
	if want := p.AgentCN(pod); leaf.Subject.CommonName != want {
		t.Fatalf("CN %q, want %q", leaf.Subject.CommonName, want)
	}
	if leaf.KeyUsage&x509.KeyUsageDigitalSignature == 0 {
		t.Fatal("agent certificate lacks digitalSignature: SPIRE x509pop would refuse it")
	}
	caPEM, _ := os.ReadFile(p.Path(p.Paths.CACert))
	cas, _ := pki.ParseCertificates(caPEM)
	rs := pki.InspectLeaf(leaf, pki.LeafOptions{Group: "agent", CA: cas[0], Now: time.Now(), CNs: p.AgentCNs()})
	if checklist.Failed(rs) {
		t.Fatalf("agent certificate fails pki inspect: %+v", rs)
	}
	// openssl as an independent judge of the chain
	if _, err := exec.LookPath("openssl"); err == nil {
		out, err := exec.Command("openssl", "verify", "-CAfile", p.Path(p.Paths.CACert), filepath.Join(certDir, "agent.crt.pem")).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "OK") {
			t.Fatalf("openssl verify: %v\n%s", err, out)
		}
	}
}

func ptrTrue() *bool { b := true; return &b }

func schemaGK(group, kind string) schema.GroupKind { return schema.GroupKind{Group: group, Kind: kind} }
