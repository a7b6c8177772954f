package e2e_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	"github.com/spirepod/spirepod/internal/testbed"
	"github.com/spirepod/spirepod/internal/verify"
)

// realPodBreak is one way a user can break a layer of the pod: brk breaks
// it, symptom waits until the break shows (the real component's own words),
// and verify's diagnosis must name stage and pattern and mention what to fix.
type realPodBreak struct {
	brk, symptom   func(r *realPod, pod string)
	stage, pattern string
	mention        string
}

// The real-pod break tests each onboard one team with every default (one
// replica) onto a real node of their own, check it verifies, then break one
// layer the way a user could, and check that `spirepod verify` (reading the
// real pod's logs and status through the apiserver) fails and its diagnosis
// names that layer. Then the scaffold is restored and the pod verifies
// again. One test per break (issue 24: each alone within a minute, its node
// included), so each diagnosis is about its own break only and the breaks
// run in parallel.

// The agent cannot read its key: gen-cert writes it 0600 as its own user,
// and someone gave gen-cert another user than the agent's.
func TestRealPodBreakKeyUnreadable(t *testing.T) {
	testRealPodBreak(t, realPodBreak{
		brk: func(r *realPod, pod string) {
			r.editStatefulSet(func(sts *unstructured.Unstructured) {
				r.setContainerUser(sts, "initContainers", "gen-cert", r.p.Agent.UID+1)
			})
			r.rollout(pod)
		},
		symptom: func(r *realPod, pod string) {
			// The real agent's own words, then its restart.
			r.waitLogLine(pod, "spire-agent", "permission denied")
			r.waitPod(pod, "spire-agent restarted", func(p *corev1.Pod) bool { return restarts(p, "spire-agent") > 0 })
		},
		stage: verify.StageAgent, pattern: "agent-key-unreadable", mention: "gen-cert"})
}

// The unix workload attestor finds Envoy's process by PID: without
// shareProcessNamespace the agent cannot see it, and Envoy gets no SVID.
func TestRealPodBreakNoSharedProcessNamespace(t *testing.T) {
	testRealPodBreak(t, realPodBreak{
		brk: func(r *realPod, pod string) {
			r.editStatefulSet(func(sts *unstructured.Unstructured) {
				unstructured.RemoveNestedField(sts.Object, "spec", "template", "spec", "shareProcessNamespace")
			})
			r.rollout(pod)
		},
		symptom: func(r *realPod, pod string) {
			// The real agent refuses the caller it cannot see; Envoy's SDS
			// stream closes.
			r.waitLogLine(pod, "spire-agent", "could not resolve caller information")
			r.waitLogLine(pod, "envoy", "StreamSecrets gRPC config stream to spire_agent closed")
		},
		stage: verify.StageAgent, pattern: "agent-no-shared-pid", mention: "shareProcessNamespace"})
}

// Envoy accepts exactly the upstream's SPIFFE ID (spirepod.yaml
// upstream.spiffeID): a wrong one fails the mTLS handshake.
func TestRealPodBreakWrongUpstreamID(t *testing.T) {
	testRealPodBreak(t, realPodBreak{
		brk: func(r *realPod, pod string) {
			wrong := strings.TrimSuffix(r.echoID, "/xfccecho") + "/not-the-echo"
			r.reinit("--upstream-id", wrong)
			r.apply()
			// A changed ConfigMap does not restart the pod (Envoy reads its
			// bootstrap at start): restart it, as a user would.
			r.rolloutOrRestart(pod)
		},
		symptom: func(r *realPod, pod string) {
			r.waitLogLine(pod, "curl", "CERTIFICATE_VERIFY_FAILED")
		},
		stage: verify.StageCurl, pattern: "curl-upstream-tls", mention: "upstream.spiffeID"})
}

func testRealPodBreak(t *testing.T, br realPodBreak) {
	t.Parallel()
	b, _ := testbed.RequireRealNode(t)
	// Built once here, in the parent: the child InNetns starts reuses it.
	buildCLI(t)
	// A bed of its own, not the package's: the real node (containerd, a
	// kubelet, the pod bridge) lives in this test's network namespace.
	if !testbed.InNetns(t) {
		return
	}
	r := onboardRealPod(t, b, nil, 1)
	pod := r.p.PodName(0)
	r.step("baseline-verify", func() {
		r.checkVerified(r.verify(0, "--timeout", "2m"), []string{pod}, r.p.WorkloadSpiffeID())
	})
	r.breakAndRestore(
		func() { br.brk(r, pod) },
		func() { br.symptom(r, pod) },
		func(d verify.Diagnosis) { r.wantDiagnosis(d, br.stage, br.pattern, br.mention) })
	t.Logf("REALPOD BREAKS TIMINGS: %s", r.tm)
}

// breakAndRestore saves the scaffold, breaks it, waits for the symptom,
// runs `spirepod verify` (which must time out and diagnose), restores the
// scaffold and waits until the pod verifies again, then judges the
// diagnosis. The restore runs even when a step failed, so the next break
// starts from a working pod.
func (r *realPod) breakAndRestore(brk, symptom func(), check func(verify.Diagnosis)) {
	t := r.t
	t.Helper()
	saved := r.snapshot()
	pod := r.p.PodName(0)
	restored := false
	defer func() {
		if !restored {
			// A step failed: put the scaffold back for the next break, best effort.
			r.restore(saved)
			r.exec(r.dir, append([]string{"apply", "--wait=false", "--timeout", "1m"}, r.kube...)...)
		}
	}()
	r.step(t.Name()+"/break", brk)
	r.step(t.Name()+"/symptom", symptom)
	var d verify.Diagnosis
	r.step(t.Name()+"/diagnose", func() {
		v := r.verify(124, "--timeout", "5s")
		if v.Success || v.Outcome != verify.OutcomeTimeout || len(v.Diagnoses) != 1 {
			t.Fatalf("verify: success %v outcome %q, %d diagnoses, want a timeout with one diagnosis:\n%s", v.Success, v.Outcome, len(v.Diagnoses), v.raw)
		}
		d = v.Diagnoses[0]
		t.Logf("diagnosis: stage %s pattern %s: %s\n  evidence: %s\n  fix: %s", d.Stage, d.PatternID, d.Summary, strings.Join(d.Evidence, " | "), d.Fix)
	})
	r.step(t.Name()+"/restore", func() {
		r.restore(saved)
		r.apply()
		r.rolloutOrRestart(pod)
		restored = true
		r.checkVerified(r.verify(0, "--timeout", "2m"), []string{pod}, r.p.WorkloadSpiffeID())
	})
	check(d)
}

// wantDiagnosis: the diagnosis names the broken stage, the known pattern,
// and mentions what to fix.
func (r *realPod) wantDiagnosis(d verify.Diagnosis, stage, pattern, mention string) {
	r.t.Helper()
	if d.Stage != stage || d.PatternID != pattern {
		r.t.Errorf("diagnosis stage %q pattern %q, want stage %q pattern %q", d.Stage, d.PatternID, stage, pattern)
	}
	if !strings.Contains(d.Summary+" "+d.Fix, mention) {
		r.t.Errorf("diagnosis does not mention %q:\n  %s\n  fix: %s", mention, d.Summary, d.Fix)
	}
	if len(d.Evidence) == 0 {
		r.t.Errorf("diagnosis without evidence")
	}
}

func restarts(p *corev1.Pod, container string) int32 {
	for _, cs := range p.Status.ContainerStatuses {
		if cs.Name == container {
			return cs.RestartCount
		}
	}
	return 0
}

// snapshot keeps every file of the scaffold (the team dir) in memory.
func (r *realPod) snapshot() map[string][]byte {
	r.t.Helper()
	files := map[string][]byte{}
	err := filepath.Walk(r.dir, func(path string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return err
		}
		data, err := os.ReadFile(path)
		files[path] = data
		return err
	})
	if err != nil {
		r.t.Fatal(err)
	}
	return files
}

// restore writes the snapshot back (keeping each file's mode).
func (r *realPod) restore(files map[string][]byte) {
	r.t.Helper()
	for path, data := range files {
		st, err := os.Stat(path)
		mode := os.FileMode(0o644)
		if err == nil {
			mode = st.Mode().Perm()
		}
		if err := os.WriteFile(path, data, mode); err != nil {
			r.t.Fatal(err)
		}
	}
}

const statefulSetFile = "spire-envoy-integration.yaml"

// editStatefulSet changes the scaffold's StatefulSet manifest, as a user
// editing the file would, and applies the scaffold.
func (r *realPod) editStatefulSet(edit func(*unstructured.Unstructured)) {
	t := r.t
	t.Helper()
	path := filepath.Join(r.dir, statefulSetFile)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var obj map[string]any
	if err := yaml.Unmarshal(data, &obj); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	sts := &unstructured.Unstructured{Object: obj}
	if sts.GetKind() != "StatefulSet" {
		t.Fatalf("%s holds a %s", path, sts.GetKind())
	}
	edit(sts)
	out, err := yaml.Marshal(sts.Object)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, path, string(out), 0o644)
	r.apply()
}

// setContainerUser sets one container's runAsUser and runAsGroup.
func (r *realPod) setContainerUser(sts *unstructured.Unstructured, list, name string, uid int) {
	t := r.t
	t.Helper()
	cs, _, _ := unstructured.NestedSlice(sts.Object, "spec", "template", "spec", list)
	found := false
	for _, c := range cs {
		m := c.(map[string]any)
		if m["name"] != name {
			continue
		}
		sc, _ := m["securityContext"].(map[string]any)
		if sc == nil {
			sc = map[string]any{}
			m["securityContext"] = sc
		}
		sc["runAsUser"], sc["runAsGroup"] = int64(uid), int64(uid)
		found = true
	}
	if !found {
		t.Fatalf("the StatefulSet has no %s %s", list, name)
	}
	if err := unstructured.SetNestedSlice(sts.Object, cs, "spec", "template", "spec", list); err != nil {
		t.Fatal(err)
	}
}

// apply runs `spirepod apply` without waiting for the pods (a break's pods
// never get ready).
func (r *realPod) apply() {
	r.t.Helper()
	r.run(r.dir, append([]string{"apply", "--wait=false", "--timeout", "2m"}, r.kube...)...)
}

// reinit re-renders the scaffold with the first init's flags plus extra
// ones (later flags win), as a user changing a setting would.
func (r *realPod) reinit(extra ...string) {
	r.t.Helper()
	r.run(r.root, append(append(append([]string{}, r.initArgs...), extra...), "--force", r.dir)...)
}

// rolloutOrRestart makes the pod run the applied scaffold: it waits for
// the StatefulSet's rollout when the pod template changed; otherwise (only a
// ConfigMap changed, which a running pod does not re-read) it deletes the
// pod and waits for its replacement.
func (r *realPod) rolloutOrRestart(pod string) {
	r.t.Helper()
	rev := r.updateRevision()
	cur := r.getPod(pod)
	if cur.Labels["controller-revision-hash"] == rev && cur.DeletionTimestamp == nil {
		r.deletePod(pod)
		r.waitNewPodRunning(pod, cur.UID)
		return
	}
	// A pod of the old (broken) revision is removed at once rather than
	// drained: without shareProcessNamespace its curl loop is PID 1 of its
	// container and ignores SIGTERM, which would cost the whole grace period.
	err := r.cluster.Client.CoreV1().Pods(r.p.Namespace).Delete(r.ctx, pod, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)})
	if err != nil && !apierrors.IsNotFound(err) {
		r.t.Fatalf("delete pod %s: %v", pod, err)
	}
	r.rollout(pod)
}

// rollout waits until the StatefulSet's controller has seen its latest
// template and the pod runs that revision.
func (r *realPod) rollout(pod string) {
	r.t.Helper()
	rev := r.updateRevision()
	r.waitPod(pod, fmt.Sprintf("revision %s Running", rev), func(p *corev1.Pod) bool {
		if p.Labels["controller-revision-hash"] != rev || p.Status.Phase != corev1.PodRunning || p.DeletionTimestamp != nil {
			return false
		}
		for _, cs := range p.Status.ContainerStatuses {
			if cs.State.Running == nil && cs.State.Terminated == nil && cs.LastTerminationState.Terminated == nil {
				return false
			}
		}
		return true
	})
}

// updateRevision waits until the StatefulSet controller has observed the
// latest generation and returns its update revision.
func (r *realPod) updateRevision() string {
	t := r.t
	t.Helper()
	stss := r.cluster.Client.AppsV1().StatefulSets(r.p.Namespace)
	ctx, cancel := context.WithTimeout(r.ctx, time.Minute)
	defer cancel()
	var rev string
	for rev == "" {
		sts, err := stss.Get(ctx, r.p.StatefulSet, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if sts.Status.ObservedGeneration >= sts.Generation && sts.Status.UpdateRevision != "" {
			rev = sts.Status.UpdateRevision
			break
		}
		w, err := stss.Watch(ctx, metav1.ListOptions{FieldSelector: "metadata.name=" + r.p.StatefulSet, ResourceVersion: sts.ResourceVersion})
		if err != nil {
			t.Fatal(err)
		}
		select {
		case <-w.ResultChan():
		case <-ctx.Done():
			t.Fatalf("StatefulSet %s: generation %d not observed: %v", r.p.StatefulSet, sts.Generation, ctx.Err())
		}
		w.Stop()
	}
	return rev
}
