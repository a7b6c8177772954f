package scaffold_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"flag"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"sigs.k8s.io/yaml"

	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/api/resmap"
	"sigs.k8s.io/kustomize/kyaml/filesys"

	"github.com/spirepod/spirepod/internal/certmanager"
	"github.com/spirepod/spirepod/internal/project"
	"github.com/spirepod/spirepod/internal/scaffold"
	"github.com/spirepod/spirepod/scaffoldfs"
)

var update = flag.Bool("update", false, "rewrite the golden scaffold under testdata/golden")

func testProject(dir string) *project.Project {
	p := &project.Project{
		APIVersion: project.APIVersion, Kind: project.Kind,
		Team: "payments", Namespace: "team-a", Environment: "dev",
		StatefulSet: "spire-envoy-integration", Replicas: 2, ServiceAccount: "httpbin-client",
		TrustDomain: "spire.cityos-dev.woven-planet.tech", SpireServer: "spire-server.cityos-dev.woven-planet.tech:8081",
		City: project.City{Repo: "wp-wcm/city", BaseBranch: "main", TeamPath: "ns/team-a/spire-envoy-integration",
			TrustList: project.TrustList{Mode: project.TrustListBundle, Path: "ns/spire/x509pop/bundle.pem"}},
		Naming: project.NamingNamespaced, IssuerScope: project.IssuerNamespaced,
		Registration: project.Registration{Format: project.FormatSpiffeID, EnvoyUID: 101},
		Paths:        project.DefaultPaths,
		Dir:          dir,
	}
	p.ApplyDefaults()
	return p
}

func render(t *testing.T, p *project.Project) map[string][]byte {
	t.Helper()
	files, err := scaffold.Render(scaffold.Options{Source: scaffoldfs.Scaffold(), Project: p})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// TestGolden pins the rendered tree; refresh with `go test ./internal/scaffold -update`.
func TestGolden(t *testing.T) {
	files := render(t, testProject("/x"))
	for p, b := range files {
		if len(b) == 0 {
			delete(files, p) // CA placeholders: empty, and *.key.pem is git-ignored
		}
	}
	golden := filepath.Join("testdata", "golden")
	if *update {
		if err := os.RemoveAll(golden); err != nil {
			t.Fatal(err)
		}
		for p, b := range files {
			full := filepath.Join(golden, filepath.FromSlash(p))
			if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(full, b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	seen := map[string]bool{}
	err := filepath.WalkDir(golden, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(golden, path)
		rel = filepath.ToSlash(rel)
		seen[rel] = true
		want, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		got, ok := files[rel]
		if !ok {
			t.Errorf("golden file %s is no longer rendered (run with -update if intended)", rel)
		} else if string(got) != string(want) {
			t.Errorf("%s differs from golden (run `go test ./internal/scaffold -update` if intended)", rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for p := range files {
		if !seen[p] {
			t.Errorf("%s is rendered but not in the golden tree (run with -update)", p)
		}
	}
}

// writeScaffoldWithCA renders into a temp dir and adds a CA made now.
func writeScaffoldWithCA(t *testing.T, p *project.Project) string {
	t.Helper()
	dir := t.TempDir()
	p.Dir = dir
	for rel, b := range render(t, p) {
		full := filepath.Join(dir, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "ca"},
		NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kd, _ := x509.MarshalPKCS8PrivateKey(key)
	_ = os.WriteFile(p.Path(p.Paths.CACert), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	_ = os.WriteFile(p.Path(p.Paths.CAKey), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kd}), 0o600)
	return dir
}

func build(t *testing.T, dir string) resmap.ResMap {
	t.Helper()
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	m, err := k.Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	return m
}

// TestFreshScaffoldBuilds: right after init (CA placeholders only), both
// kustomizations build, as `kubectl kustomize DIR/certs` must.
func TestFreshScaffoldBuilds(t *testing.T) {
	p := testProject("")
	dir := t.TempDir()
	p.Dir = dir
	plan, err := scaffold.PlanWrite(dir, render(t, p))
	if err != nil {
		t.Fatal(err)
	}
	if err := plan.Write(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(p.Path(p.Paths.CAKey))
	if err != nil || st.Size() != 0 || st.Mode().Perm() != 0o600 {
		t.Fatalf("key placeholder: %v %v", err, st)
	}
	certs := build(t, filepath.Join(dir, "certs"))
	build(t, dir)
	if n := len(certs.Resources()); n != 2 {
		t.Fatalf("certs/ builds %d objects, want the Secret and the Issuer", n)
	}
	// a real CA is never overwritten by a later init, even with --force
	if err := os.WriteFile(p.Path(p.Paths.CACert), []byte("real"), 0o644); err != nil {
		t.Fatal(err)
	}
	plan, err = scaffold.PlanWrite(dir, render(t, p))
	if err != nil {
		t.Fatal(err)
	}
	if plan.Changed() {
		t.Fatalf("re-init plans changes over an existing CA: %+v", plan.Files)
	}
}

// TestKustomizeBuild builds certs/ and the root with kustomize/api and checks
// the invariants the guide's traps break.
func TestKustomizeBuild(t *testing.T) {
	for _, tc := range []struct{ name, ns, env, issuer, naming string }{
		{"dev", "team-a", "dev", project.IssuerNamespaced, project.NamingNamespaced},
		{"lab", "payments-lab", "lab", project.IssuerNamespaced, project.NamingNamespaced},
		{"cluster issuer", "team-c", "dev", project.IssuerCluster, project.NamingNamespaced},
		{"guide naming", "team-g", "dev", project.IssuerNamespaced, project.NamingGuide},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := testProject("")
			p.Namespace, p.Environment, p.IssuerScope, p.Naming = tc.ns, tc.env, tc.issuer, tc.naming
			if tc.naming == project.NamingGuide {
				p.StatefulSet = "payments-web"
			}
			ref := p.Issuer()
			dir := writeScaffoldWithCA(t, p)
			certs := build(t, filepath.Join(dir, "certs"))
			root := build(t, dir)

			var secret, issuerSecret, issuerKind, issuerName, issuerNS string
			for _, r := range certs.Resources() {
				switch r.GetKind() {
				case "Secret":
					secret = r.GetNamespace() + "/" + r.GetName()
					if typ, _ := r.GetString("type"); typ != "kubernetes.io/tls" {
						t.Errorf("CA Secret type %q, want kubernetes.io/tls", typ)
					}
				case certmanager.KindIssuer, certmanager.KindClusterIssuer:
					issuerKind, issuerName, issuerNS = r.GetKind(), r.GetName(), r.GetNamespace()
					issuerSecret, _ = r.GetString("spec.ca.secretName")
				}
			}
			if secret != ref.Secret() {
				t.Errorf("CA Secret %s, want %s", secret, ref.Secret())
			}
			if issuerKind != ref.Kind || issuerName != ref.Name || issuerNS != ref.Namespace || issuerSecret != ref.SecretName {
				t.Errorf("issuer %s %s/%s reading %s, want %s reading %s", issuerKind, issuerNS, issuerName, issuerSecret, ref, ref.SecretName)
			}
			// One Certificate per pod, asking this issuer for this naming's CN.
			agentCerts := map[string]bool{}
			for _, r := range root.Resources() {
				if r.GetKind() != "Certificate" {
					continue
				}
				cn, _ := r.GetString("spec.commonName")
				kind, _ := r.GetString("spec.issuerRef.kind")
				name, _ := r.GetString("spec.issuerRef.name")
				sec, _ := r.GetString("spec.secretName")
				agentCerts[r.GetName()] = true
				pod := strings.TrimPrefix(r.GetName(), project.AgentCNPrefix)
				if cn != p.AgentCN(pod) || kind != ref.Kind || name != ref.Name || sec != r.GetName() || r.GetNamespace() != tc.ns {
					t.Errorf("Certificate %s: CN %s from %s %s into %s, want CN %s from %s", r.GetName(), cn, kind, name, sec, p.AgentCN(pod), ref)
				}
			}
			for _, pod := range p.PodNames() {
				if !agentCerts[p.CertificateName(pod)] {
					t.Errorf("no Certificate %s (have %v)", p.CertificateName(pod), agentCerts)
				}
			}

			yamlOut, err := root.AsYaml()
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains(string(yamlOut), scaffold.TemplateNamespace) {
				t.Errorf("root build still contains %s", scaffold.TemplateNamespace)
			}
			have := map[string]bool{}
			for _, r := range root.Resources() {
				have[r.GetKind()+"/"+r.GetName()] = true
				if r.GetKind() == certmanager.KindClusterIssuer {
					continue
				}
				if r.GetNamespace() != tc.ns {
					t.Errorf("%s/%s in namespace %q, want %q", r.GetKind(), r.GetName(), r.GetNamespace(), tc.ns)
				}
			}
			// Every ConfigMap, Secret and ServiceAccount the pod references exists.
			var spec any
			for _, r := range root.Resources() {
				if r.GetKind() == "StatefulSet" {
					spec, err = r.GetFieldValue("spec.template.spec")
				}
			}
			if err != nil {
				t.Fatal(err)
			}
			podSpec, ok := spec.(map[string]any)
			if !ok {
				t.Fatal("no StatefulSet pod spec in the build")
			}
			if sa := podSpec["serviceAccountName"].(string); !have["ServiceAccount/"+sa] {
				t.Errorf("pod uses ServiceAccount %q, not in the build", sa)
			}
			if podSpec["shareProcessNamespace"] != true {
				t.Error("shareProcessNamespace must be true for the unix workload attestor")
			}
			refs := 0
			for _, v := range podSpec["volumes"].([]any) {
				vol := v.(map[string]any)
				if cm, ok := vol["configMap"].(map[string]any); ok {
					refs++
					if !have["ConfigMap/"+cm["name"].(string)] {
						t.Errorf("volume %v references missing ConfigMap %v", vol["name"], cm["name"])
					}
				}
				if s, ok := vol["secret"].(map[string]any); ok {
					refs++
					if !have["Secret/"+s["secretName"].(string)] {
						t.Errorf("volume %v references missing Secret %v", vol["name"], s["secretName"])
					}
				}
			}
			if refs < 4 {
				t.Errorf("pod references %d ConfigMaps/Secrets, want at least 4", refs)
			}
			if !have["ConfigMap/spire-bundle"] || !have["ConfigMap/init-gen-cert"] {
				t.Errorf("bundle or init-gen-cert ConfigMap missing: %v", have)
			}
		})
	}
}

// TestIgnoreRulesAndNoState: a template without a .gitignore still yields
// one that ignores the CA key, interrupted writes and .spirepod/, and a
// template's .spirepod/ (a last-verify record) is never copied.
func TestIgnoreRulesAndNoState(t *testing.T) {
	src := fstest.MapFS{
		"kustomization.yaml":              {Data: []byte("apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n")},
		".spirepod/last-verify.json":      {Data: []byte(`{"outcome":"success"}`)},
		"certs/secret/kustomization.yaml": {Data: []byte("apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n")},
	}
	p := testProject("/x")
	files, err := scaffold.Render(scaffold.Options{Source: src, Project: p})
	if err != nil {
		t.Fatal(err)
	}
	for f := range files {
		if strings.HasPrefix(f, project.StateDir+"/") {
			t.Errorf("%s copied from the template", f)
		}
	}
	gi := string(files[".gitignore"])
	for _, rule := range scaffold.IgnoreRules(p) {
		if !strings.Contains(gi, "\n"+rule+"\n") {
			t.Errorf(".gitignore lacks %q:\n%s", rule, gi)
		}
	}
}

// podOf builds the scaffold and returns its StatefulSet's pod spec and Role.
func podOf(t *testing.T, p *project.Project) (corev1.PodSpec, rbacv1.Role, string) {
	t.Helper()
	dir := writeScaffoldWithCA(t, p)
	root := build(t, dir)
	var spec corev1.PodSpec
	var role rbacv1.Role
	var envoy string
	for _, r := range root.Resources() {
		data, err := r.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case r.GetKind() == "StatefulSet":
			var sts appsv1.StatefulSet
			if err := json.Unmarshal(data, &sts); err != nil {
				t.Fatal(err)
			}
			spec = sts.Spec.Template.Spec
		case r.GetKind() == "Role":
			if err := json.Unmarshal(data, &role); err != nil {
				t.Fatal(err)
			}
		case r.GetKind() == "ConfigMap" && r.GetName() == scaffold.EnvoyConfigMap:
			var cm corev1.ConfigMap
			if err := json.Unmarshal(data, &cm); err != nil {
				t.Fatal(err)
			}
			envoy = cm.Data[scaffold.EnvoyConfKey]
		}
	}
	return spec, role, envoy
}

// TestPodHardened: what `kubectl kustomize` of a fresh scaffold shows: the
// project's images (no bitnami), Pod Security restricted on the pod and every
// container, resources everywhere, the only API token in gen-cert, gen-cert a
// native sidecar, Envoy's and the agent's users from the project, gen-cert's
// Role limited to the StatefulSet's names, Envoy's upstream exact.
func TestPodHardened(t *testing.T) {
	p := testProject("")
	p.Upstream = project.Upstream{Host: "echo.tools.svc", Port: 9443, SpiffeID: "spiffe://" + p.TrustDomain + "/ns/tools/sa/echo"}
	p.Registration.EnvoyUID, p.Registration.EnvoyGID = 1101, 1102
	spec, role, envoy := podOf(t, p)
	if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
		t.Error("the pod automounts a service-account token")
	}
	psc := spec.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("pod securityContext %+v", psc)
	}
	images := p.Images.List()
	all := append(append([]corev1.Container{}, spec.InitContainers...), spec.Containers...)
	if len(all) != 4 {
		t.Fatalf("%d containers", len(all))
	}
	for _, c := range all {
		if strings.Contains(c.Image, "bitnami/") || c.Image != images[c.Name] {
			t.Errorf("%s: image %q, want %q", c.Name, c.Image, images[c.Name])
		}
		sc := c.SecurityContext
		if sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || sc.Capabilities == nil ||
			len(sc.Capabilities.Drop) != 1 || sc.Capabilities.Drop[0] != "ALL" || sc.RunAsUser == nil || *sc.RunAsUser == 0 {
			t.Errorf("%s: securityContext %+v is not restricted and non-root", c.Name, sc)
		}
		if c.Resources.Requests.Cpu().IsZero() || c.Resources.Limits.Memory().IsZero() {
			t.Errorf("%s: no requests/limits", c.Name)
		}
		for _, m := range c.VolumeMounts {
			if strings.HasPrefix(m.MountPath, "/var/run/secrets/kubernetes.io") && c.Name != scaffold.ContainerGenCert {
				t.Errorf("%s mounts an API token", c.Name)
			}
		}
	}
	gc := spec.InitContainers[0]
	if gc.Name != scaffold.ContainerGenCert || gc.RestartPolicy == nil || *gc.RestartPolicy != corev1.ContainerRestartPolicyAlways || gc.StartupProbe == nil {
		t.Errorf("gen-cert is not a native sidecar with a startup probe: %+v", gc)
	}
	for _, c := range spec.Containers {
		switch c.Name {
		case scaffold.ContainerEnvoy:
			if *c.SecurityContext.RunAsUser != 1101 || *c.SecurityContext.RunAsGroup != 1102 || c.ReadinessProbe == nil {
				t.Errorf("envoy runs as %d:%d (probe %v), want 1101:1102 with a readiness probe", *c.SecurityContext.RunAsUser, *c.SecurityContext.RunAsGroup, c.ReadinessProbe != nil)
			}
		case scaffold.ContainerSpireAgent:
			if *c.SecurityContext.RunAsUser != int64(p.Agent.UID) || *gc.SecurityContext.RunAsUser != int64(p.Agent.UID) || c.LivenessProbe == nil {
				t.Errorf("the agent and gen-cert must run as agent.uid %d", p.Agent.UID)
			}
		}
	}
	var certs []string
	for _, pod := range p.PodNames() {
		certs = append(certs, p.CertificateName(pod))
	}
	for _, r := range role.Rules {
		if strings.Join(r.ResourceNames, ",") != strings.Join(certs, ",") || slices.Contains(r.Verbs, "create") || slices.Contains(r.Verbs, "*") {
			t.Errorf("Role rule %+v: want resourceNames %v and no create", r, certs)
		}
	}
	for _, want := range []string{"address: echo.tools.svc", "port_value: 9443", "sni: echo.tools.svc", `exact: "spiffe://` + p.TrustDomain + `/ns/tools/sa/echo"`} {
		if !strings.Contains(envoy, want) {
			t.Errorf("envoy.yaml lacks %q", want)
		}
	}
	if strings.Contains(envoy, "matcher: {prefix") {
		t.Errorf("envoy.yaml still validates the upstream by prefix")
	}
}

// TestGuideEraTemplateHardened: a city template from before spirepod (the
// guide's bitnami gen-cert, no securityContext) is rendered restricted too.
func TestGuideEraTemplateHardened(t *testing.T) {
	old, err := os.ReadFile("testdata/guide-era/spire-envoy-integration.yaml")
	if err != nil {
		t.Fatal(err)
	}
	src := fstest.MapFS{}
	if err := fs.WalkDir(scaffoldfs.Scaffold(), ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(scaffoldfs.Scaffold(), path)
		src[path] = &fstest.MapFile{Data: b}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	src["spire-envoy-integration.yaml"] = &fstest.MapFile{Data: old}
	p := testProject("")
	files, err := scaffold.Render(scaffold.Options{Source: src, Project: p})
	if err != nil {
		t.Fatal(err)
	}
	var sts appsv1.StatefulSet
	if err := yaml.Unmarshal(files["spire-envoy-integration.yaml"], &sts); err != nil {
		t.Fatal(err)
	}
	spec := sts.Spec.Template.Spec
	for _, c := range append(spec.InitContainers, spec.Containers...) {
		if strings.Contains(c.Image, "bitnami") || c.SecurityContext == nil || c.SecurityContext.Capabilities == nil || c.Resources.Limits == nil {
			t.Errorf("%s not hardened: image %s, securityContext %+v", c.Name, c.Image, c.SecurityContext)
		}
	}
	if spec.SecurityContext == nil || spec.AutomountServiceAccountToken == nil {
		t.Errorf("pod not hardened: %+v", spec.SecurityContext)
	}
}

// TestK8sAttestorOption: the k8s workload attestor comes only when asked,
// with the agent's token and the ClusterRole it needs in the kustomization.
func TestK8sAttestorOption(t *testing.T) {
	p := testProject("")
	files := render(t, p)
	if strings.Contains(string(files["spire-agent-configmap.yaml"]), `WorkloadAttestor "k8s"`) || files[scaffold.K8sAttestorRBACFile] != nil {
		t.Fatal("the k8s attestor is on by default")
	}
	p.Agent.K8sAttestor = true
	spec, _, _ := podOf(t, p)
	files = render(t, p)
	if !strings.Contains(string(files["spire-agent-configmap.yaml"]), `WorkloadAttestor "k8s"`) ||
		!strings.Contains(string(files["kustomization.yaml"]), scaffold.K8sAttestorRBACFile) ||
		!strings.Contains(string(files[scaffold.K8sAttestorRBACFile]), "nodes/proxy") {
		t.Fatal("agent.k8sAttestor renders no attestor or no RBAC")
	}
	for _, c := range spec.Containers {
		if c.Name == scaffold.ContainerSpireAgent {
			has := false
			for _, m := range c.VolumeMounts {
				has = has || strings.HasPrefix(m.MountPath, "/var/run/secrets/kubernetes.io")
			}
			if !has {
				t.Error("the agent has no token for the k8s attestor")
			}
		}
	}
}
