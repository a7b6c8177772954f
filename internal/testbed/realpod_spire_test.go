package testbed

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/utils/ptr"
)

// TestRealPodSpireChain runs the scaffold's pod shape on the real node with
// the local images: a gen-cert init container (busybox + in-cluster kubectl)
// getting the agent certificate from real cert-manager, a real spire-agent
// container (non-root, uid 1000) attesting with x509pop to a real SPIRE
// server through ExposeToPods, the
// Envoy stand-in (uid 101) getting its SVID over SDS on the socket in the
// shared emptyDir (unix attestor through shareProcessNamespace), and real
// curl calling it on localhost; the xfccecho upstream runs on the bridge.
// curl's log, read through apiserver → kubelet, shows the XFCC line with
// this workload's SPIFFE ID. Pod Security "restricted" is enforced.
func TestRealPodSpireChain(t *testing.T) {
	t.Parallel()
	b, _ := RequireRealNode(t)
	if !InNetns(t) {
		return
	}
	// With cert-manager, as the end-to-end tests run it.
	c := StartCluster(t, b, Options{RealNode: true})
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	dir := t.TempDir()
	const td = "realnode.test"
	ns := "chain"
	const pod = "chain-0"
	cn := "spire-agent-x509pop-" + pod

	ca := newCA("team-ca")
	caPath, _, err := ca.write(dir, "team-ca")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := StartSpireServer(ctx, b, filepath.Join(dir, "server"), SpireServerConfig{TrustDomain: td, CABundlePath: caPath})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	fwd := ExposeToPods(t, fmt.Sprintf("127.0.0.1:%d", srv.Port))
	bundle, err := os.ReadFile(srv.BundlePath)
	if err != nil {
		t.Fatal(err)
	}

	// The upstream, on the host side of the bridge.
	echoDir := filepath.Join(dir, "echo")
	if err := os.MkdirAll(echoDir, 0o700); err != nil {
		t.Fatal(err)
	}
	echoID := fmt.Sprintf("spiffe://%s/ns/spire-sample/sa/httpbin", td)
	if out, err := srv.Run(ctx, "x509", "mint", "-spiffeID", echoID, "-write", echoDir); err != nil {
		t.Fatalf("x509 mint: %v\n%s", err, out)
	}
	echoBin, err := StandinBinary(ctx, dir, "xfccecho")
	if err != nil {
		t.Fatal(err)
	}
	echoPort, err := FreePort()
	if err != nil {
		t.Fatal(err)
	}
	echo, err := StartProc(dir, "xfccecho", echoBin, "-listen", fmt.Sprintf("%s:%d", c.PodReachableAddr, echoPort),
		"-cert", filepath.Join(echoDir, "svid.pem"), "-key", filepath.Join(echoDir, "key.pem"), "-bundle", filepath.Join(echoDir, "bundle.pem"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(echo.Stop)

	// The scaffold's upstream name resolves, through the cluster DNS, to
	// the echo server on the bridge.
	if err := c.Node.DNS.Add("httpbin.spire-sample.svc.cluster.local", c.PodReachableAddr); err != nil {
		t.Fatal(err)
	}

	workloadID := fmt.Sprintf("spiffe://%s/ns/%s/sa/httpbin-client", td, ns)
	if out, err := srv.Run(ctx, "entry", "create", "-parentID", nodeAlias(ctx, t, srv, td, cn),
		"-spiffeID", workloadID, "-selector", "unix:uid:101"); err != nil {
		t.Fatalf("entry create: %v\n%s", err, out)
	}

	if err := c.CreateNamespace(ctx, ns); err != nil {
		t.Fatal(err)
	}
	nsObj, err := c.Client.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	nsObj.Labels["pod-security.kubernetes.io/enforce"] = "restricted"
	if _, err := c.Client.CoreV1().Namespaces().Update(ctx, nsObj, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}

	agentConf := fmt.Sprintf(`agent {
  data_dir = "/run/spire/data"
  log_level = "DEBUG"
  server_address = %q
  server_port = "%d"
  socket_path = "/run/spire/sockets/agent.sock"
  trust_bundle_path = "/run/spire/bundle/bundle.crt"
  trust_domain = %q
}
plugins {
  NodeAttestor "x509pop" {
    plugin_data {
      certificate_path = "/run/spire/agent-certs/agent.crt.pem"
      private_key_path = "/run/spire/agent-certs/agent.key.pem"
    }
  }
  KeyManager "memory" {
    plugin_data {}
  }
  WorkloadAttestor "unix" {
    plugin_data {}
  }
}
`, c.PodReachableAddr, fwd.Port(), td)
	var envoyYAML bytes.Buffer
	if err := standinBootstrap.Execute(&envoyYAML, map[string]any{
		"Admin": 9901, "Listen": 8080, "Pipe": "/run/spire/sockets/agent.sock",
		"UpstreamHost": "httpbin.spire-sample.svc.cluster.local", "UpstreamPort": echoPort,
		"Secret": workloadID, "Validation": "spiffe://" + td, "SANPrefix": "spiffe://" + td + "/",
	}); err != nil {
		t.Fatal(err)
	}
	cms := map[string]map[string]string{
		"spire-agent":  {"agent.conf": agentConf},
		"spire-bundle": {"bundle.crt": string(bundle)},
		"envoy":        {"envoy.yaml": envoyYAML.String()},
	}
	for name, data := range cms {
		if _, err := c.Client.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name}, Data: data}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// The agent certificate comes from real cert-manager: a CA ClusterIssuer
	// with the team CA, and a gen-cert init container (the gen-cert image:
	// busybox + kubectl, in-cluster with the pod's token) that asks for it.
	setupGenCert(ctx, t, c, ns, ca)

	sc := func(uid int64) *corev1.SecurityContext {
		s := &corev1.SecurityContext{
			RunAsNonRoot: ptr.To(true), AllowPrivilegeEscalation: ptr.To(false),
			Capabilities:   &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
			SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		}
		if uid != 0 {
			s.RunAsUser, s.RunAsGroup = ptr.To(uid), ptr.To(uid)
		}
		return s
	}
	vol := func(name string, src corev1.VolumeSource) corev1.Volume {
		return corev1.Volume{Name: name, VolumeSource: src}
	}
	cmVol := func(name string) corev1.VolumeSource {
		return corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: name}}}
	}
	im := c.Node.Images
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: pod, Namespace: ns},
		Spec: corev1.PodSpec{
			ShareProcessNamespace:         ptr.To(true),
			TerminationGracePeriodSeconds: ptr.To[int64](2),
			InitContainers: []corev1.Container{{
				Name: "gen-cert", Image: im.GenCert, Command: []string{"/bin/sh", "/opt/gen-cert/gen_cert.sh"},
				Env: []corev1.EnvVar{
					{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
					{Name: "POD_NAMESPACE", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"}}},
				},
				VolumeMounts: []corev1.VolumeMount{
					{Name: "init-gen-cert", MountPath: "/opt/gen-cert", ReadOnly: true},
					{Name: "agent-certs", MountPath: "/run/spire/agent-certs"},
				},
				// The agent's uid: the key is written 0600 and the agent must read it.
				SecurityContext: sc(1000),
			}},
			Containers: []corev1.Container{
				{
					Name: "spire-agent", Image: im.SpireAgent, Args: []string{"-config", "/run/spire/config/agent.conf"},
					VolumeMounts: []corev1.VolumeMount{
						{Name: "spire-agent-config", MountPath: "/run/spire/config", ReadOnly: true},
						{Name: "spire-bundle", MountPath: "/run/spire/bundle", ReadOnly: true},
						{Name: "agent-certs", MountPath: "/run/spire/agent-certs", ReadOnly: true},
						{Name: "spire-agent-socket", MountPath: "/run/spire/sockets"},
						{Name: "spire-agent-data", MountPath: "/run/spire/data"},
					},
					SecurityContext: sc(0),
				},
				{
					Name: "envoy", Image: im.Envoy, Args: []string{"-c", "/etc/envoy/envoy.yaml", "-l", "info"},
					VolumeMounts: []corev1.VolumeMount{
						{Name: "envoy-config", MountPath: "/etc/envoy", ReadOnly: true},
						{Name: "spire-agent-socket", MountPath: "/run/spire/sockets", ReadOnly: true},
					},
					SecurityContext: sc(101),
				},
				{
					Name: "curl", Image: im.Curl,
					Command: []string{"/bin/sh", "-c", `while true; do
  curl -sS --max-time 10 http://127.0.0.1:8080/headers || echo "curl: request to envoy failed"
  echo
  sleep 2
done`},
					SecurityContext: sc(0),
				},
			},
			Volumes: []corev1.Volume{
				vol("spire-agent-config", cmVol("spire-agent")),
				vol("spire-bundle", cmVol("spire-bundle")),
				vol("envoy-config", cmVol("envoy")),
				vol("init-gen-cert", cmVol("init-gen-cert")),
				vol("agent-certs", corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{Medium: corev1.StorageMediumMemory}}),
				vol("spire-agent-socket", corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}),
				vol("spire-agent-data", corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}),
			},
		},
	}
	t0 := time.Now()
	if _, err := c.Client.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitPodRunning(ctx, ns, pod); err != nil {
		t.Fatal(err)
	}
	t.Logf("pod Running in %v", time.Since(t0).Round(time.Millisecond))
	want := "URI=" + workloadID
	var last string
	for {
		rc, err := c.Client.CoreV1().Pods(ns).GetLogs(pod, &corev1.PodLogOptions{Container: "curl"}).Stream(ctx)
		if err == nil {
			bs, _ := io.ReadAll(rc)
			rc.Close()
			last = string(bs)
			if strings.Contains(last, want) && strings.Contains(last, "By="+echoID) {
				break
			}
		}
		if ctx.Err() != nil {
			logs := map[string]string{}
			for _, ct := range []string{"spire-agent", "envoy"} {
				if rc, err := c.Client.CoreV1().Pods(ns).GetLogs(pod, &corev1.PodLogOptions{Container: ct}).Stream(context.Background()); err == nil {
					bs, _ := io.ReadAll(rc)
					rc.Close()
					logs[ct] = string(bs)
				}
			}
			t.Fatalf("curl's log never showed %s:\n%s\n--- spire-agent:\n%s\n--- envoy stand-in:\n%s", want, last, logs["spire-agent"], logs["envoy"])
		}
		select {
		case <-ctx.Done():
		case <-time.After(500 * time.Millisecond):
		}
	}
	t.Logf("curl's log shows the XFCC line %v after the pod was created", time.Since(t0).Round(time.Millisecond))
	rc, err := c.Client.CoreV1().Pods(ns).GetLogs(pod, &corev1.PodLogOptions{Container: "gen-cert"}).Stream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	gl, _ := io.ReadAll(rc)
	rc.Close()
	if !strings.Contains(string(gl), "gen-cert: wrote /run/spire/agent-certs/agent.crt.pem for "+cn) {
		t.Errorf("gen-cert's log does not show the certificate written:\n%s", gl)
	}

	// Deleting the pod leaves none of its processes.
	procs := c.Node.Processes()
	if err := c.Client.CoreV1().Pods(ns).Delete(ctx, pod, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	w, err := c.Client.CoreV1().Pods(ns).Watch(ctx, metav1.ListOptions{FieldSelector: "metadata.name=" + pod})
	if err != nil {
		t.Fatal(err)
	}
	for ev := range w.ResultChan() {
		if ev.Type == watch.Deleted {
			break
		}
	}
	w.Stop()
	if err := waitFor(ctx, "the pod's processes to exit", nil, func(context.Context) bool {
		for _, p := range procs {
			if p.What != "containerd" && p.What != "kubelet" && processRunning(p.PID) {
				return false
			}
		}
		return true
	}); err != nil {
		t.Fatalf("%v: %+v", err, c.Node.Processes())
	}
}

// genCertScript does what the scaffold's gen_cert.sh does, with the same
// tools: sed, kubectl apply/wait/get in-cluster, base64, umask, mkdir,
// mktemp -d, chmod, ln -s, mv -T: one read of the Secret, the pair in a
// version directory, ..data swapped to it with one rename, the agent's files
// links through ..data.
const genCertScript = `set -eu
NAME="spire-agent-x509pop-${POD_NAME}"
DIR=/run/spire/agent-certs
echo "gen-cert: requesting Certificate ${POD_NAMESPACE}/${NAME}"
sed -e "s|\${POD_NAME}|${POD_NAME}|g" -e "s|\${POD_NAMESPACE}|${POD_NAMESPACE}|g" /opt/gen-cert/cert.yaml.tpl |
  kubectl apply --server-side --field-manager=spirepod-gen-cert -f -
kubectl -n "$POD_NAMESPACE" wait --for=condition=Ready "certificate/${NAME}" --timeout=120s
mkdir -p "$DIR"
umask 077
V=$(mktemp -d "$DIR/..v.XXXXXX")
kubectl -n "$POD_NAMESPACE" get secret "$NAME" -o jsonpath='{.data.tls\.crt}{"\n"}{.data.tls\.key}{"\n"}' > "$V/secret"
{ read -r CRT; read -r KEY; } < "$V/secret"
rm -f "$V/secret"
printf '%s' "$CRT" | base64 -d > "$V/agent.crt.pem"
printf '%s' "$KEY" | base64 -d > "$V/agent.key.pem"
[ -s "$V/agent.crt.pem" ] && [ -s "$V/agent.key.pem" ]
chmod 0755 "$V" && chmod 0644 "$V/agent.crt.pem"
ln -s "${V##*/}" "$DIR/..data_tmp"
mv -T "$DIR/..data_tmp" "$DIR/..data"
ln -sf ..data/agent.crt.pem "$DIR/agent.crt.pem"
ln -sf ..data/agent.key.pem "$DIR/agent.key.pem"
echo "gen-cert: wrote $DIR/agent.crt.pem for ${NAME}"
`

const certTemplate = `apiVersion: cert-manager.io/v1
kind: Certificate
metadata:
  name: spire-agent-x509pop-${POD_NAME}
  namespace: ${POD_NAMESPACE}
spec:
  secretName: spire-agent-x509pop-${POD_NAME}
  commonName: spire-agent-x509pop-${POD_NAME}
  duration: 8760h
  privateKey:
    algorithm: ECDSA
    size: 256
  usages:
    - digital signature
    - client auth
  issuerRef:
    group: cert-manager.io
    kind: ClusterIssuer
    name: spire-agent-x509pop-issuer
`

var clusterIssuerGVR = schema.GroupVersionResource{Group: "cert-manager.io", Version: "v1", Resource: "clusterissuers"}

// setupGenCert makes the team CA a Ready ClusterIssuer, the gen-cert
// ConfigMap, and lets the namespace's default ServiceAccount ask for
// Certificates and read their Secrets.
func setupGenCert(ctx context.Context, t *testing.T, c *Cluster, ns string, ca *keyPair) {
	t.Helper()
	if _, err := c.Client.CoreV1().Secrets("cert-manager").Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "agent-x509pop-root"}, Type: corev1.SecretTypeTLS,
		Data: map[string][]byte{"tls.crt": ca.CertPEM, "tls.key": ca.KeyPEM},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	issuer := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "cert-manager.io/v1", "kind": "ClusterIssuer",
		"metadata": map[string]any{"name": "spire-agent-x509pop-issuer"},
		"spec":     map[string]any{"ca": map[string]any{"secretName": "agent-x509pop-root"}},
	}}
	if _, err := c.Dynamic.Resource(clusterIssuerGVR).Create(ctx, issuer, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := waitFor(ctx, "ClusterIssuer Ready", c.CertManager, func(ctx context.Context) bool {
		u, err := c.Dynamic.Resource(clusterIssuerGVR).Get(ctx, "spire-agent-x509pop-issuer", metav1.GetOptions{})
		if err != nil {
			return false
		}
		conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
		for _, cd := range conds {
			if m, ok := cd.(map[string]any); ok && m["type"] == "Ready" && m["status"] == "True" {
				return true
			}
		}
		return false
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Client.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "init-gen-cert"},
		Data:       map[string]string{"gen_cert.sh": genCertScript, "cert.yaml.tpl": certTemplate},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	role := &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Name: "gen-cert"},
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{"cert-manager.io"}, Resources: []string{"certificates"}, Verbs: []string{"get", "list", "watch", "create", "patch"}},
			{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"get"}},
		},
	}
	if _, err := c.Client.RbacV1().Roles(ns).Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Client.RbacV1().RoleBindings(ns).Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "gen-cert"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "gen-cert"},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: "default", Namespace: ns}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func processRunning(pid int) bool {
	_, ok := startTime(pid)
	return ok
}
