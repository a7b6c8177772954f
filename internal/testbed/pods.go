package testbed

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/utils/ptr"
)

// LogsGVR is kwok's namespaced Logs resource.
var LogsGVR = schema.GroupVersionResource{Group: "kwok.x-k8s.io", Version: "v1alpha1", Resource: "logs"}

// PodLogs makes the API server serve a file as the log of each named
// container of pod ns/pod (one kwok Logs object, follow on), through the real
// apiserver → kubelet-API path. The files are created empty in dir; it
// returns container → file.
func (c *Cluster) PodLogs(ctx context.Context, dir, ns, pod string, containers ...string) (map[string]string, error) {
	files := map[string]string{}
	var specs []any
	for _, ct := range containers {
		p := filepath.Join(dir, fmt.Sprintf("%s-%s-%s.log", ns, pod, ct))
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			return nil, err
		}
		files[ct] = p
		specs = append(specs, map[string]any{"containers": []any{ct}, "logsFile": p, "follow": true})
	}
	obj := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "kwok.x-k8s.io/v1alpha1", "kind": "Logs",
		"metadata": map[string]any{"name": pod, "namespace": ns},
		"spec":     map[string]any{"logs": specs},
	}}
	if _, err := c.Dynamic.Resource(LogsGVR).Namespace(ns).Create(ctx, obj, metav1.CreateOptions{}); err != nil {
		return nil, fmt.Errorf("kwok Logs for %s/%s: %w", ns, pod, err)
	}
	return files, nil
}

// AppendLog appends lines to a container log file in CRI format
// ("<RFC3339Nano> stdout F <line>"), stamped at, in one write.
func AppendLog(path string, at time.Time, lines ...string) error {
	var b strings.Builder
	for _, l := range lines {
		fmt.Fprintf(&b, "%s stdout F %s\n", at.UTC().Format(time.RFC3339Nano), l)
	}
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = f.WriteString(b.String())
	return err
}

// WaitPodRunning watches ns/name until it is Running, or ctx ends.
func (c *Cluster) WaitPodRunning(ctx context.Context, ns, name string) error {
	w, err := c.Client.CoreV1().Pods(ns).Watch(ctx, metav1.ListOptions{FieldSelector: "metadata.name=" + name})
	if err != nil {
		return err
	}
	defer w.Stop()
	for ev := range w.ResultChan() {
		if p, ok := ev.Object.(*corev1.Pod); ok && ev.Type != watch.Deleted && p.Status.Phase == corev1.PodRunning {
			return nil
		}
	}
	return fmt.Errorf("pod %s/%s not Running: %w", ns, name, ctx.Err())
}

// CreateNamespace creates a namespace and waits for its default
// ServiceAccount (made by the controller-manager), without which the API
// server refuses pods that do not name another one.
func (c *Cluster) CreateNamespace(ctx context.Context, name string) error {
	if _, err := c.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		return err
	}
	w, err := c.Client.CoreV1().ServiceAccounts(name).Watch(ctx, metav1.ListOptions{FieldSelector: "metadata.name=default"})
	if err != nil {
		return err
	}
	defer w.Stop()
	for ev := range w.ResultChan() {
		if ev.Type == watch.Added || ev.Type == watch.Modified {
			return nil
		}
	}
	return fmt.Errorf("namespace %s: no default ServiceAccount: %w", name, ctx.Err())
}

// ServiceAccountKubeconfig writes a kubeconfig that authenticates as a
// service account (a token from the TokenRequest API), for tests that run a
// pod's in-cluster tool with exactly the RBAC the pod gets.
func (c *Cluster) ServiceAccountKubeconfig(ctx context.Context, dir, ns, sa string) (string, error) {
	tok, err := c.Client.CoreV1().ServiceAccounts(ns).CreateToken(ctx, sa,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](3600)}}, metav1.CreateOptions{})
	if err != nil {
		return "", err
	}
	cfg, err := clientcmd.LoadFromFile(c.Kubeconfig)
	if err != nil {
		return "", err
	}
	out := clientcmdapi.NewConfig()
	out.Clusters["testbed"] = cfg.Clusters["testbed"]
	out.AuthInfos[sa] = &clientcmdapi.AuthInfo{Token: tok.Status.Token}
	out.Contexts[sa] = &clientcmdapi.Context{Cluster: "testbed", AuthInfo: sa, Namespace: ns}
	out.CurrentContext = sa
	path := filepath.Join(dir, "kubeconfig-"+ns+"-"+sa)
	return path, clientcmd.WriteToFile(*out, path)
}
