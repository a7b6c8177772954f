package testbed_test

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/utils/ptr"

	"github.com/spirepod/spirepod/internal/testbed"
)

// TestClusterSmoke: a StatefulSet becomes Running pods through the real
// controller-manager, scheduler and kwok, and a container log written to a
// file is served through the real apiserver → kwok kubelet API path.
func TestClusterSmoke(t *testing.T) {
	t.Parallel()
	b := testbed.Require(t, testbed.Bins.ControlPlaneSet)
	c := testbed.StartCluster(t, b, testbed.Options{NoCertManager: true})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	ns := "smoke"
	if err := c.CreateNamespace(ctx, ns); err != nil {
		t.Fatal(err)
	}
	files, err := c.PodLogs(ctx, t.TempDir(), ns, "web-0", "curl")
	if err != nil {
		t.Fatal(err)
	}
	if err := testbed.AppendLog(files["curl"], time.Now(), "hello from kwok"); err != nil {
		t.Fatal(err)
	}

	labels := map[string]string{"app": "web"}
	sts := &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns},
		Spec: appsv1.StatefulSetSpec{
			Replicas: ptr.To[int32](2), ServiceName: "web", PodManagementPolicy: appsv1.ParallelPodManagement,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "curl", Image: "curl"}}},
			},
		},
	}
	t0 := time.Now()
	if _, err := c.Client.AppsV1().StatefulSets(ns).Create(ctx, sts, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	w, err := c.Client.CoreV1().Pods(ns).Watch(ctx, metav1.ListOptions{LabelSelector: "app=web"})
	if err != nil {
		t.Fatal(err)
	}
	running := map[string]bool{}
	for ev := range w.ResultChan() {
		if ev.Type == watch.Error {
			t.Fatalf("watch error: %v", ev.Object)
		}
		if p, ok := ev.Object.(*corev1.Pod); ok && p.Status.Phase == corev1.PodRunning {
			running[p.Name] = true
		}
		if len(running) == 2 {
			break
		}
	}
	w.Stop()
	if !running["web-0"] || !running["web-1"] {
		t.Fatalf("pods running: %v (want web-0 and web-1)", running)
	}
	t.Logf("StatefulSet → 2 Running pods in %v", time.Since(t0).Round(time.Millisecond))

	// kwok serves a pod's log once its informer has the Logs object; the
	// pods can be Running before that (they were in 205ms in one CI run).
	if err := c.WaitPodLogs(ctx, ns, "web-0", "curl"); err != nil {
		t.Fatal(err)
	}
	rc, err := c.Client.CoreV1().Pods(ns).GetLogs("web-0", &corev1.PodLogOptions{Container: "curl"}).Stream(ctx)
	if err != nil {
		t.Fatalf("logs through apiserver → kwok: %v", err)
	}
	buf := make([]byte, 256)
	n, err := io.ReadAtLeast(rc, buf, len("hello from kwok"))
	rc.Close()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(buf[:n]), "hello from kwok") {
		t.Fatalf("log = %q, want the line from the file", buf[:n])
	}
}
