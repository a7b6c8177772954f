package verify

import (
	"bufio"
	"context"
	"crypto/x509"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/spirepod/spirepod/internal/certmanager"
	"github.com/spirepod/spirepod/internal/checklist"
	"github.com/spirepod/spirepod/internal/pki"
	"github.com/spirepod/spirepod/internal/project"
)

// Stages, in the order Diagnose walks them.
const (
	StagePod         = "pod"
	StageCertificate = "certificate"
	StageGenCert     = "gen-cert"
	StageAgentCert   = "agent-cert"
	StageAgent       = "spire-agent"
	StageEnvoy       = "envoy"
	StageCurl        = "curl"
	StageNone        = "none"
)

// StageNames are the checklist names of the stages.
var StageNames = map[string]string{
	StagePod:         "pod scheduled and Running",
	StageCertificate: "agent Certificate Ready (cert-manager)",
	StageGenCert:     "init container gen-cert succeeded",
	StageAgentCert:   "agent certificate meets x509pop's rules",
	StageAgent:       "spire-agent log free of known SPIRE errors, SVID issued",
	StageEnvoy:       "envoy log free of SDS and upstream errors",
	StageCurl:        "curl log shows the expected XFCC",
}

var stageOrder = []string{StagePod, StageCertificate, StageGenCert, StageAgentCert, StageAgent, StageEnvoy, StageCurl}

// DiagnoseOptions for Diagnose.
type DiagnoseOptions struct {
	Client    kubernetes.Interface
	Dynamic   dynamic.Interface
	Namespace string
	// StatefulSet owns the pods (named when a pod is missing).
	StatefulSet string
	Pods        []string
	Expected    string
	// Upstream is the upstream's SPIFFE ID (Options.Upstream).
	Upstream string
	// TeamCA, when known, is the CA agent certificates must chain to.
	TeamCA *x509.Certificate
	// AgentCNs are the agent common names of the scaffold's pods (empty:
	// either naming form is accepted).
	AgentCNs []string
	// CertificateName names a pod's cert-manager Certificate and its Secret;
	// nil means the guide's spire-agent-x509pop-<pod>.
	CertificateName func(pod string) string
	// Verify is the verification that failed, if any (its seen IDs feed the curl stage).
	Verify *Result
	// TailLines of each container log to read; default 200.
	TailLines int64
	Now       func() time.Time
}

// Diagnosis names the first broken stage of one pod.
type Diagnosis struct {
	Pod   string `json:"pod"`
	Stage string `json:"stage"`
	// Summary says what is wrong, Fix what to run or change.
	Summary  string   `json:"summary"`
	Evidence []string `json:"evidence,omitempty"`
	Fix      string   `json:"fix,omitempty"`
	// PatternID is the matched entry of Patterns, if a log line decided.
	PatternID string `json:"patternID,omitempty"`
	// Stages is the walk: ok up to the broken one, which fails, then skipped.
	Stages []checklist.Result `json:"stages"`
}

// Diagnose walks the stages for every pod that did not match and returns
// one diagnosis per pod.
func Diagnose(ctx context.Context, opts DiagnoseOptions) ([]Diagnosis, error) {
	if opts.TailLines <= 0 {
		opts.TailLines = 200
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	var out []Diagnosis
	for _, pod := range opts.Pods {
		if opts.Verify != nil {
			if pr := findPod(opts.Verify, pod); pr != nil && pr.Matched {
				continue
			}
		}
		d, err := diagnosePod(ctx, opts, pod)
		if err != nil {
			return out, err
		}
		out = append(out, *d)
	}
	return out, nil
}

func findPod(r *Result, pod string) *PodResult {
	for i := range r.Pods {
		if r.Pods[i].Pod == pod {
			return &r.Pods[i]
		}
	}
	return nil
}

// stageResult is the outcome of one stage: ok (with a note), broken, or
// skipped (the evidence is unavailable, e.g. a container never started).
type stageResult struct {
	status   checklist.Status
	note     string
	summary  string
	evidence []string
	fix      string
	pattern  string
}

func ok(note string) stageResult      { return stageResult{status: checklist.OK, note: note} }
func skipped(note string) stageResult { return stageResult{status: checklist.Skipped, note: note} }

type podDiag struct {
	opts DiagnoseOptions
	pod  string
	p    *corev1.Pod
}

func diagnosePod(ctx context.Context, opts DiagnoseOptions, pod string) (*Diagnosis, error) {
	pd := &podDiag{opts: opts, pod: pod}
	d := &Diagnosis{Pod: pod, Stage: StageNone}
	stages := map[string]func(context.Context) (stageResult, error){
		StagePod: pd.stagePod, StageCertificate: pd.stageCertificate, StageGenCert: pd.stageGenCert,
		StageAgentCert: pd.stageAgentCert, StageAgent: pd.stageAgent, StageEnvoy: pd.stageEnvoy, StageCurl: pd.stageCurl,
	}
	broken := false
	for _, st := range stageOrder {
		r := checklist.Result{Group: pod, ID: st, Name: StageNames[st]}
		if broken {
			r.Status, r.Message = checklist.Skipped, "not checked: an earlier stage is broken"
			d.Stages = append(d.Stages, r)
			continue
		}
		sr, err := stages[st](ctx)
		if err != nil {
			return nil, fmt.Errorf("diagnose %s, stage %s: %w", pod, st, err)
		}
		r.Status = sr.status
		switch sr.status {
		case checklist.Fail:
			broken = true
			r.Message, r.Hint = sr.summary, sr.fix
			d.Stage, d.Summary, d.Evidence, d.Fix, d.PatternID = st, sr.summary, sr.evidence, sr.fix, sr.pattern
		default:
			r.Message = sr.note
		}
		d.Stages = append(d.Stages, r)
	}
	if !broken {
		d.Summary = "no stage shows an error: the expected line has not appeared yet"
		d.Fix = "run `spirepod verify` again with a longer --timeout (SVIDs reach a new entry within the agent's sync, about 5 s, after the PRs are merged and applied)"
	}
	return d, nil
}

func (pd *podDiag) ns() string { return pd.opts.Namespace }

func (pd *podDiag) kubectl(args string) string {
	return fmt.Sprintf("kubectl -n %s %s", pd.ns(), args)
}

func (pd *podDiag) stagePod(ctx context.Context) (stageResult, error) {
	p, err := pd.opts.Client.CoreV1().Pods(pd.ns()).Get(ctx, pd.pod, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		if pd.opts.StatefulSet != "" {
			_, serr := pd.opts.Client.AppsV1().StatefulSets(pd.ns()).Get(ctx, pd.opts.StatefulSet, metav1.GetOptions{})
			if apierrors.IsNotFound(serr) {
				return stageResult{status: checklist.Fail,
					summary: fmt.Sprintf("StatefulSet %s/%s does not exist, so pod %s is never created", pd.ns(), pd.opts.StatefulSet, pd.pod),
					fix:     "`spirepod apply` (on the right --context)"}, nil
			}
			ev := pd.events(ctx, "StatefulSet", pd.opts.StatefulSet)
			return stageResult{status: checklist.Fail,
				summary:  fmt.Sprintf("pod %s does not exist although StatefulSet %s does", pd.pod, pd.opts.StatefulSet),
				evidence: ev, fix: pd.kubectl("describe statefulset " + pd.opts.StatefulSet)}, nil
		}
		return stageResult{status: checklist.Fail, summary: fmt.Sprintf("pod %s/%s does not exist", pd.ns(), pd.pod),
			fix: "`spirepod apply`, or pass the right --pod / -n"}, nil
	}
	if err != nil {
		return stageResult{}, err
	}
	pd.p = p
	switch p.Status.Phase {
	case corev1.PodRunning:
		return ok("Running on " + p.Spec.NodeName), nil
	case corev1.PodFailed, corev1.PodSucceeded:
		return stageResult{status: checklist.Fail, summary: fmt.Sprintf("pod %s is %s: %s", pd.pod, p.Status.Phase, p.Status.Message),
			evidence: pd.events(ctx, "Pod", pd.pod), fix: pd.kubectl("delete pod "+pd.pod) + " (the StatefulSet re-creates it)"}, nil
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Status != corev1.ConditionTrue {
			return stageResult{status: checklist.Fail,
				summary:  fmt.Sprintf("pod %s is not scheduled (%s): %s", pd.pod, c.Reason, c.Message),
				evidence: pd.events(ctx, "Pod", pd.pod),
				fix:      "fix what the scheduler names (nodeSelector, tolerations, resources) in the StatefulSet; " + pd.kubectl("describe pod "+pd.pod)}, nil
		}
	}
	if p.Spec.NodeName == "" {
		return stageResult{status: checklist.Fail, summary: fmt.Sprintf("pod %s is %s and not scheduled yet", pd.pod, p.Status.Phase),
			evidence: pd.events(ctx, "Pod", pd.pod), fix: pd.kubectl("describe pod " + pd.pod)}, nil
	}
	// Scheduled but not Running: an init container in progress is explained
	// by the next stages; a main container that cannot be created is not.
	for _, cs := range p.Status.ContainerStatuses {
		if w := cs.State.Waiting; w != nil {
			switch w.Reason {
			case "ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CreateContainerConfigError", "CreateContainerError":
				return stageResult{status: checklist.Fail,
					summary:  fmt.Sprintf("container %s of pod %s cannot start: %s: %s", cs.Name, pd.pod, w.Reason, w.Message),
					evidence: pd.events(ctx, "Pod", pd.pod), fix: pd.kubectl("describe pod " + pd.pod)}, nil
			}
		}
	}
	return ok(fmt.Sprintf("%s on %s, initialising", p.Status.Phase, p.Spec.NodeName)), nil
}

// events returns the latest events of an object, Warnings first.
func (pd *podDiag) events(ctx context.Context, kind, name string) []string {
	sel := fields.Set{"involvedObject.kind": kind, "involvedObject.name": name}.String()
	list, err := pd.opts.Client.CoreV1().Events(pd.ns()).List(ctx, metav1.ListOptions{FieldSelector: sel})
	if err != nil || len(list.Items) == 0 {
		return nil
	}
	items := list.Items
	sort.SliceStable(items, func(i, j int) bool { return eventTime(items[i]).Before(eventTime(items[j])) })
	if len(items) > 5 {
		items = items[len(items)-5:]
	}
	var out []string
	for _, e := range items {
		out = append(out, fmt.Sprintf("event %s %s: %s", e.Type, e.Reason, strings.TrimSpace(e.Message)))
	}
	return out
}

func eventTime(e corev1.Event) time.Time {
	switch {
	case !e.LastTimestamp.IsZero():
		return e.LastTimestamp.Time
	case !e.EventTime.IsZero():
		return e.EventTime.Time
	}
	return e.CreationTimestamp.Time
}

func (pd *podDiag) certName() string {
	if pd.opts.CertificateName != nil {
		return pd.opts.CertificateName(pd.pod)
	}
	return project.AgentCNPrefix + pd.pod
}

func (pd *podDiag) genCertFailed() (*corev1.ContainerStatus, bool) {
	if pd.p == nil {
		return nil, false
	}
	for i, cs := range pd.p.Status.InitContainerStatuses {
		if cs.Name != ContainerGenCert {
			continue
		}
		t := cs.State.Terminated
		lt := cs.LastTerminationState.Terminated
		w := cs.State.Waiting
		if (t != nil && t.ExitCode != 0) || (lt != nil && lt.ExitCode != 0 && cs.State.Terminated == nil) ||
			(w != nil && w.Reason == "CrashLoopBackOff") {
			return &pd.p.Status.InitContainerStatuses[i], true
		}
	}
	return nil, false
}

func (pd *podDiag) stageCertificate(ctx context.Context) (stageResult, error) {
	if pd.opts.Dynamic == nil {
		return skipped("no dynamic client"), nil
	}
	name := pd.certName()
	cert, err := pd.opts.Dynamic.Resource(certmanager.CertificateGVR).Namespace(pd.ns()).Get(ctx, name, metav1.GetOptions{})
	switch {
	case certmanager.NotInstalled(err):
		return stageResult{status: checklist.Fail, summary: "cert-manager is not installed in this cluster (the Certificate kind is not served)",
			fix: "install cert-manager (v1.x), then `spirepod apply`"}, nil
	case apierrors.IsNotFound(err):
		if _, failed := pd.genCertFailed(); failed {
			return skipped("Certificate " + name + " not created: see gen-cert"), nil
		}
		return stageResult{status: checklist.Fail, summary: fmt.Sprintf("Certificate %s/%s does not exist; `spirepod apply` creates one per pod (agent-certificates.yaml)", pd.ns(), name),
			fix: "`spirepod apply` (if the StatefulSet was scaled by hand, set replicas in spirepod.yaml and re-render with `spirepod init --force`)"}, nil
	case err != nil:
		return stageResult{}, err
	}
	ready, reason, msg := certmanager.ReadyCondition(cert)
	if ready {
		return ok("Certificate " + name + " Ready"), nil
	}
	ref := certmanager.IssuerRef{Kind: certmanager.KindIssuer, Namespace: pd.ns()}
	ref.Name, _, _ = unstructured.NestedString(cert.Object, "spec", "issuerRef", "name")
	if kind, _, _ := unstructured.NestedString(cert.Object, "spec", "issuerRef", "kind"); kind == certmanager.KindClusterIssuer {
		ref.Kind, ref.Namespace = kind, ""
	}
	if ref.Name != "" {
		iss, err := ref.Get(ctx, pd.opts.Dynamic)
		switch {
		case apierrors.IsNotFound(err):
			return stageResult{status: checklist.Fail, summary: fmt.Sprintf("%s does not exist, so Certificate %s is never issued", ref, name),
				fix: "`spirepod apply` (it applies certs/ first: the CA Secret and the issuer)"}, nil
		case err != nil:
			return stageResult{}, err
		}
		if iready, ireason, imsg := certmanager.ReadyCondition(iss); !iready {
			fix := "`spirepod apply` (certs/ holds the issuer and its CA Secret)"
			if strings.Contains(imsg, "not found") || strings.Contains(strings.ToLower(imsg), "secret") {
				fix = "the CA Secret is missing or unusable: `spirepod pki gen` if certs/secret has no CA, then `spirepod apply`"
			}
			return stageResult{status: checklist.Fail,
				summary:  fmt.Sprintf("%s is not Ready (%s): %s", ref, ireason, imsg),
				evidence: []string{fmt.Sprintf("Certificate %s: Ready=False (%s): %s", name, reason, msg)}, fix: fix}, nil
		}
	}
	if reason == "" && msg == "" {
		return stageResult{status: checklist.Fail, summary: fmt.Sprintf("Certificate %s has no Ready condition yet", name),
			fix: "check that the cert-manager controller runs: kubectl -n cert-manager get pods"}, nil
	}
	return stageResult{status: checklist.Fail, summary: fmt.Sprintf("Certificate %s is not Ready (%s): %s", name, reason, msg),
		fix: pd.kubectl("describe certificate " + name)}, nil
}

func (pd *podDiag) stageGenCert(ctx context.Context) (stageResult, error) {
	if pd.p == nil {
		return skipped("pod not found"), nil
	}
	cs, failed := pd.genCertFailed()
	if !failed {
		for _, s := range pd.p.Status.InitContainerStatuses {
			if s.Name == ContainerGenCert && s.State.Terminated != nil {
				return ok("completed"), nil
			}
		}
		if pd.p.Status.Phase == corev1.PodRunning {
			return ok(""), nil
		}
		return ok("running"), nil
	}
	var detail string
	switch {
	case cs.State.Terminated != nil:
		detail = fmt.Sprintf("exit %d (%s)", cs.State.Terminated.ExitCode, cs.State.Terminated.Reason)
	case cs.LastTerminationState.Terminated != nil:
		detail = fmt.Sprintf("exit %d, %d restarts", cs.LastTerminationState.Terminated.ExitCode, cs.RestartCount)
	default:
		detail = cs.State.Waiting.Reason
	}
	ev := pd.logTail(ctx, ContainerGenCert, 20)
	if len(ev) == 0 {
		ev = pd.previousLogTail(ctx, ContainerGenCert, 20)
	}
	return stageResult{status: checklist.Fail, summary: fmt.Sprintf("init container gen-cert of pod %s failed: %s", pd.pod, detail),
		evidence: ev,
		fix:      "read its log (" + pd.kubectl("logs "+pd.pod+" -c gen-cert") + "); it needs the Role/RoleBinding of rbac.yaml and a Ready ClusterIssuer"}, nil
}

func (pd *podDiag) stageAgentCert(ctx context.Context) (stageResult, error) {
	name := pd.certName()
	sec, err := pd.opts.Client.CoreV1().Secrets(pd.ns()).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return stageResult{status: checklist.Fail, summary: fmt.Sprintf("Secret %s/%s with the agent certificate does not exist", pd.ns(), name),
			fix: pd.kubectl("describe certificate " + name)}, nil
	}
	if err != nil {
		return stageResult{}, err
	}
	certs, err := pki.ParseCertificates(sec.Data["tls.crt"])
	if err != nil || len(certs) == 0 {
		return stageResult{status: checklist.Fail, summary: fmt.Sprintf("Secret %s has no parseable tls.crt: %v", name, err),
			fix: pd.kubectl("delete certificate,secret "+name) + ", then restart the pod"}, nil
	}
	rs := pki.InspectLeaf(certs[0], pki.LeafOptions{Intermediates: certs[1:], CA: pd.opts.TeamCA, Now: pd.opts.Now(), CNs: pd.opts.AgentCNs})
	for _, r := range rs {
		if r.Status == checklist.Fail {
			return stageResult{status: checklist.Fail,
				summary:  fmt.Sprintf("agent certificate in Secret %s: %s: %s", name, r.Name, r.Message),
				evidence: []string{fmt.Sprintf("subject %s, issuer %s, keyUsage %s", certs[0].Subject, certs[0].Issuer, keyUsageString(certs[0].KeyUsage))},
				fix:      r.Hint + "; then " + pd.kubectl("delete certificate,secret "+name) + " and delete the pod so gen-cert issues a new one",
				pattern:  "pki:" + r.ID}, nil
		}
	}
	note := "CN " + certs[0].Subject.CommonName
	if pd.opts.TeamCA == nil {
		note += " (no team CA to check the chain)"
	}
	return ok(note), nil
}

func keyUsageString(ku x509.KeyUsage) string {
	names := []struct {
		u x509.KeyUsage
		n string
	}{{x509.KeyUsageDigitalSignature, "digitalSignature"}, {x509.KeyUsageKeyEncipherment, "keyEncipherment"},
		{x509.KeyUsageCertSign, "keyCertSign"}, {x509.KeyUsageCRLSign, "cRLSign"}}
	var out []string
	for _, x := range names {
		if ku&x.u != 0 {
			out = append(out, x.n)
		}
	}
	if len(out) == 0 {
		return "(none)"
	}
	return strings.Join(out, ",")
}

func (pd *podDiag) stageAgent(ctx context.Context) (stageResult, error) {
	lines, err := pd.readLog(ctx, ContainerAgent, pd.opts.TailLines, false)
	if err != nil {
		return skipped("log unavailable: " + shortErr(err)), nil
	}
	if f, found := MatchLog(ContainerAgent, lines); found {
		return fromFinding(f), nil
	}
	// Attested, but no SVID for the expected ID ever created.
	var attested string
	svid := false
	for _, l := range lines {
		if strings.Contains(l, "Node attestation was successful") {
			attested = strings.TrimSpace(l)
		}
		if (strings.Contains(l, "Creating X509-SVID") || strings.Contains(l, "Renewing X509-SVID")) && hasField(l, "spiffe_id", pd.opts.Expected) {
			svid = true
		}
	}
	switch {
	case attested != "" && !svid:
		p, _ := patternByID("agent-no-identity")
		return stageResult{status: checklist.Fail,
			summary:  fmt.Sprintf("the agent attested but no X509-SVID for %s was created: %s", pd.opts.Expected, p.Cause),
			evidence: []string{attested}, fix: p.Fix, pattern: "agent-no-svid"}, nil
	case svid:
		return ok("SVID for the expected ID created"), nil
	}
	return ok(fmt.Sprintf("%d lines, no known error", len(lines))), nil
}

// hasField reports whether a logrus text line has key=value or key="value".
func hasField(line, key, value string) bool {
	for _, form := range []string{key + "=" + value, key + `="` + value + `"`} {
		i := strings.Index(line, form)
		if i < 0 {
			continue
		}
		end := i + len(form)
		if end == len(line) || strings.ContainsRune(" \t\r\n", rune(line[end])) {
			return true
		}
	}
	return false
}

func patternByID(id string) (Pattern, bool) {
	for _, p := range Patterns {
		if p.ID == id {
			return p, true
		}
	}
	return Pattern{}, false
}

func fromFinding(f Finding) stageResult {
	return stageResult{status: checklist.Fail, summary: f.Pattern.Cause, evidence: []string{f.Line}, fix: f.Pattern.Fix, pattern: f.Pattern.ID}
}

func (pd *podDiag) stageEnvoy(ctx context.Context) (stageResult, error) {
	lines, err := pd.readLog(ctx, ContainerEnvoy, pd.opts.TailLines, false)
	if err != nil {
		return skipped("log unavailable: " + shortErr(err)), nil
	}
	if f, found := MatchLog(ContainerEnvoy, lines); found {
		if f.Pattern.ID == sdsRejected && pd.sdsRecovered(ctx) {
			return ok(fmt.Sprintf("%d lines; an SDS stream to the agent closed, and Envoy has served mTLS since (a start before the agent's socket, not the fault)", len(lines))), nil
		}
		return fromFinding(f), nil
	}
	return ok(fmt.Sprintf("%d lines, no known error", len(lines))), nil
}

const sdsRejected = "envoy-sds-rejected"

// sdsRecovered: Envoy's last SDS failure is followed, in curl's log, by an
// answer only an Envoy holding its SVID and bundle can give (an XFCC line:
// the upstream accepted Envoy's certificate; or an upstream TLS
// verification failure: Envoy had the bundle to verify with). Envoy often
// starts before the agent's socket exists and logs a closed SDS stream
// once; that line is not the fault when a later stage fails. Both logs are
// read with the kubelet's timestamps to order them.
func (pd *podDiag) sdsRecovered(ctx context.Context) bool {
	envoy, err := pd.readLogTimed(ctx, ContainerEnvoy)
	if err != nil {
		return false
	}
	var failed time.Time
	for _, l := range envoy {
		if p, ok := MatchPattern(ContainerEnvoy, l.text); ok && p.ID == sdsRejected {
			failed = l.at
		}
	}
	if failed.IsZero() {
		return false
	}
	curl, err := pd.readLogTimed(ctx, ContainerCurl)
	if err != nil {
		return false
	}
	for _, l := range curl {
		if !l.at.After(failed) {
			continue
		}
		if _, found := MatchLine(l.text, pd.opts.Expected, pd.opts.Upstream); found {
			return true
		}
		if p, ok := MatchPattern(ContainerCurl, l.text); ok && p.ID == "curl-upstream-tls" {
			return true
		}
	}
	return false
}

type timedLine struct {
	at   time.Time
	text string
}

// readLogTimed is the container's current log with the kubelet's
// timestamps (RFC 3339, nanoseconds, before each line).
func (pd *podDiag) readLogTimed(ctx context.Context, container string) ([]timedLine, error) {
	n := pd.opts.TailLines
	lines, err := pd.logLines(ctx, &corev1.PodLogOptions{Container: container, TailLines: &n, Timestamps: true})
	var out []timedLine
	for _, l := range lines {
		ts, text, _ := strings.Cut(l, " ")
		if at, perr := time.Parse(time.RFC3339Nano, ts); perr == nil {
			out = append(out, timedLine{at: at, text: text})
		}
	}
	return out, err
}

func (pd *podDiag) stageCurl(ctx context.Context) (stageResult, error) {
	lines, err := pd.readLog(ctx, ContainerCurl, pd.opts.TailLines, false)
	if err != nil {
		return skipped("log unavailable: " + shortErr(err)), nil
	}
	var seen []string
	var line string
	if pd.opts.Verify != nil {
		if pr := findPod(pd.opts.Verify, pd.pod); pr != nil {
			seen = append(seen, pr.SeenIDs...)
			line = pr.Line
		}
	}
	for _, l := range lines {
		if s, found := MatchLine(l, pd.opts.Expected, pd.opts.Upstream); found {
			for _, u := range s.URIs {
				if !contains(seen, u) {
					seen = append(seen, u)
				}
			}
			line = strings.TrimSpace(l)
		}
	}
	var others []string
	for _, u := range seen {
		if u != pd.opts.Expected {
			others = append(others, u)
		}
	}
	if len(others) > 0 {
		return stageResult{status: checklist.Fail,
			summary: fmt.Sprintf("the echoed X-Forwarded-Client-Cert has URI=%s, expected URI=%s",
				strings.Join(others, ", URI="), pd.opts.Expected),
			evidence: []string{line},
			fix:      "Envoy holds a different SPIFFE ID: correct spec.spiffeId in the SPIFFE ID PR (`spirepod pr spiffe-id`), or pass --expect if that ID is intended",
			pattern:  "curl-other-id"}, nil
	}
	if f, found := MatchLog(ContainerCurl, lines); found {
		return fromFinding(f), nil
	}
	if len(lines) == 0 {
		return ok("no output yet"), nil
	}
	return ok(fmt.Sprintf("%d lines, no XFCC header yet", len(lines))), nil
}

func (pd *podDiag) logTail(ctx context.Context, container string, n int64) []string {
	lines, err := pd.readLog(ctx, container, n, false)
	if err != nil {
		return nil
	}
	return lines
}

func (pd *podDiag) previousLogTail(ctx context.Context, container string, n int64) []string {
	lines, err := pd.readLog(ctx, container, n, true)
	if err != nil {
		return nil
	}
	return lines
}

// readLog reads the last n lines of a container's log (no follow).
func (pd *podDiag) readLog(ctx context.Context, container string, n int64, previous bool) ([]string, error) {
	return pd.logLines(ctx, &corev1.PodLogOptions{Container: container, TailLines: &n, Previous: previous})
}

// logLines is the container log o asks for, a line each (at most 4 MiB).
func (pd *podDiag) logLines(ctx context.Context, o *corev1.PodLogOptions) ([]string, error) {
	if pd.p == nil {
		return nil, fmt.Errorf("pod %s not found", pd.pod)
	}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	rc, err := pd.opts.Client.CoreV1().Pods(pd.ns()).GetLogs(pd.pod, o).Stream(ctx)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	var lines []string
	sc := bufio.NewScanner(io.LimitReader(rc, 4<<20))
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	return lines, sc.Err()
}

func shortErr(err error) string {
	s := err.Error()
	if len(s) > 160 {
		s = s[:160] + "…"
	}
	return s
}
