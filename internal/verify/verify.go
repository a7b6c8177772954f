// Package verify proves step 7 of the guide: it follows the curl container's
// log of every pod and succeeds as soon as the echoed
// X-Forwarded-Client-Cert names the expected SPIFFE ID. When that does not
// happen, Diagnose walks the earlier stages and names the first broken one.
package verify

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"

	"github.com/spirepod/spirepod/internal/retry"
)

// Options for Verify.
type Options struct {
	Client    kubernetes.Interface
	Namespace string
	// Pods to verify (all replicas, or the one --pod names).
	Pods []string
	// Expected is the SPIFFE ID the XFCC URI must equal exactly.
	Expected string
	// Upstream is the upstream's SPIFFE ID: only the XFCC element it
	// appended (By=Upstream) is judged. "" judges the last element.
	Upstream string
	// Container is the container whose log carries the echo; default "curl".
	Container string
	// FreshPods says the caller has just recreated the pods (a restart
	// it waited for): every line of the pod's log is then new, and lines
	// count from the pod's start (the node's clock) instead of from when
	// Verify started (this machine's clock). Without it, a line logged
	// before Verify started proves nothing either way.
	FreshPods bool
	// Now is the clock; default time.Now.
	Now func() time.Time
	// Progress, when set, receives every state change of every pod. It is
	// called from several goroutines, never concurrently.
	Progress func(Event)
	// RetryMin and RetryMax pace re-opening a log stream that ended or
	// failed; defaults 100ms and 2s.
	RetryMin, RetryMax time.Duration
}

// Pod states.
const (
	StateWaiting   = "waiting"   // the pod does not exist yet or is not Running
	StateStreaming = "streaming" // following the log
	StateMatched   = "matched"   // the expected URI appeared
	StateWrongID   = "wrong-id"  // a different URI appeared
	StateStopped   = "stopped"   // stopped before an outcome (deadline, another pod failed)
)

// Event is a progress report about one pod.
type Event struct {
	Pod     string
	State   string
	Message string
	Elapsed time.Duration
}

// PodResult is the outcome for one pod.
type PodResult struct {
	Pod     string `json:"pod"`
	State   string `json:"state"`
	Matched bool   `json:"matched"`
	// Elapsed is from the start of Verify to the match (or to the end).
	Elapsed Duration `json:"elapsed"`
	// SeenIDs are the URIs seen in XFCC headers, the expected one included.
	SeenIDs []string `json:"seenIDs"`
	// Line is the log line that decided the outcome.
	Line string `json:"line,omitempty"`
	// Reopened counts how often the log stream had to be opened again.
	Reopened int `json:"reopened"`
	// LastError is the last error opening or reading the log.
	LastError string `json:"lastError,omitempty"`
}

// Result is the outcome of Verify.
type Result struct {
	Namespace string      `json:"namespace"`
	Expected  string      `json:"expected"`
	Success   bool        `json:"success"`
	Elapsed   Duration    `json:"elapsed"`
	Pods      []PodResult `json:"pods"`
}

// Duration marshals as seconds with millisecond precision.
type Duration time.Duration

func (d Duration) MarshalJSON() ([]byte, error) {
	return []byte(fmt.Sprintf("%.3f", time.Duration(d).Seconds())), nil
}

func (d *Duration) UnmarshalJSON(b []byte) error {
	var s float64
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	*d = Duration(time.Duration(s * float64(time.Second)))
	return nil
}

// TimeoutError is returned when the context's deadline passed before every
// pod matched.
type TimeoutError struct {
	Pending []string
}

func (e *TimeoutError) Error() string {
	return fmt.Sprintf("timed out waiting for the expected URI in the curl log of %s", strings.Join(e.Pending, ", "))
}

// WrongIDError is returned when a pod's XFCC named a different SPIFFE ID.
type WrongIDError struct {
	Pod      string
	Expected string
	Seen     []string
}

func (e *WrongIDError) Error() string {
	return fmt.Sprintf("pod %s: the echoed X-Forwarded-Client-Cert has URI=%s, want URI=%s",
		e.Pod, strings.Join(e.Seen, ", URI="), e.Expected)
}

// Verify follows the curl log of every pod concurrently. It returns when
// every pod matched (nil error), when a pod shows a different SPIFFE ID
// (*WrongIDError, the other pods are stopped), or when ctx ends
// (*TimeoutError on its deadline, ctx.Err() on cancellation). The Result is
// filled in every case.
func Verify(ctx context.Context, opts Options) (*Result, error) {
	if opts.Client == nil || opts.Namespace == "" || len(opts.Pods) == 0 || opts.Expected == "" {
		return nil, errors.New("verify: client, namespace, pods and expected ID are required")
	}
	if opts.Container == "" {
		opts.Container = ContainerCurl
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.RetryMin <= 0 {
		opts.RetryMin = 100 * time.Millisecond
	}
	if opts.RetryMax <= 0 {
		opts.RetryMax = 2 * time.Second
	}
	start := opts.Now()
	res := &Result{Namespace: opts.Namespace, Expected: opts.Expected, Pods: make([]PodResult, len(opts.Pods))}

	var mu sync.Mutex // serialises Progress and guards the pod results
	report := func(ev Event) {
		if opts.Progress != nil {
			opts.Progress(ev)
		}
	}
	runCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)

	var wg sync.WaitGroup
	for i, pod := range opts.Pods {
		w := &podWatcher{opts: opts, pod: pod, start: start, mu: &mu, report: report,
			res: &res.Pods[i]}
		w.res.Pod, w.res.State, w.res.SeenIDs = pod, StateWaiting, []string{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if w.run(runCtx) == StateWrongID {
				cancel(&WrongIDError{Pod: pod, Expected: opts.Expected, Seen: w.others()})
			}
		}()
	}
	wg.Wait()

	res.Elapsed = Duration(opts.Now().Sub(start))
	var pending []string
	res.Success = true
	for i := range res.Pods {
		p := &res.Pods[i]
		if p.State != StateMatched {
			res.Success = false
		}
		if p.State == StateWaiting || p.State == StateStreaming {
			p.State = StateStopped
			p.Elapsed = res.Elapsed
			pending = append(pending, p.Pod)
		}
	}
	if cause := context.Cause(runCtx); cause != nil {
		var wrong *WrongIDError
		if errors.As(cause, &wrong) {
			return res, wrong
		}
	}
	if res.Success {
		return res, nil
	}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return res, &TimeoutError{Pending: pending}
	}
	if ctx.Err() != nil {
		return res, ctx.Err()
	}
	return res, fmt.Errorf("verify ended without an outcome for %s", strings.Join(pending, ", "))
}

type podWatcher struct {
	opts  Options
	pod   string
	start time.Time
	// containerStart is when the log container last started: the time of a
	// line that carries no timestamp.
	containerStart time.Time
	// podStart is the pod's start (FreshPods only): lines before it are old.
	podStart time.Time
	mu       *sync.Mutex
	report   func(Event)
	res      *PodResult
}

func (w *podWatcher) set(state, msg string, f func(*PodResult)) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if f != nil {
		f(w.res)
	}
	changed := w.res.State != state
	w.res.State = state
	w.res.Elapsed = Duration(w.opts.Now().Sub(w.start))
	if changed || msg != "" {
		w.report(Event{Pod: w.pod, State: state, Message: msg, Elapsed: time.Duration(w.res.Elapsed)})
	}
}

func (w *podWatcher) others() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []string
	for _, id := range w.res.SeenIDs {
		if id != w.opts.Expected {
			out = append(out, id)
		}
	}
	return out
}

// run loops: wait for the pod to run, follow the log, re-open it when it
// ends. It returns the final state.
func (w *podWatcher) run(ctx context.Context) string {
	backoff := w.opts.RetryMin
	for {
		pod, err := w.waitRunning(ctx)
		if err != nil {
			return StateStopped
		}
		w.set(StateStreaming, "", nil)
		state, readAny, err := w.follow(ctx, pod)
		if state == StateMatched || state == StateWrongID {
			return state
		}
		if ctx.Err() != nil {
			return StateStopped
		}
		w.mu.Lock()
		w.res.Reopened++
		if err != nil {
			w.res.LastError = err.Error()
		}
		w.mu.Unlock()
		if readAny {
			backoff = w.opts.RetryMin
		}
		// The stream ended (container restarted, connection dropped) or
		// could not be opened yet: open it again, paced.
		if retry.Sleep(ctx, backoff) != nil {
			return StateStopped
		}
		backoff = min(backoff*2, w.opts.RetryMax)
	}
}

// waitRunning returns the pod once it exists and its log container runs,
// watching (not polling) until then.
func (w *podWatcher) waitRunning(ctx context.Context) (*corev1.Pod, error) {
	pods := w.opts.Client.CoreV1().Pods(w.opts.Namespace)
	p, err := pods.Get(ctx, w.pod, metav1.GetOptions{})
	if err == nil && w.logReady(p) {
		return p, nil
	}
	w.set(StateWaiting, waitingMessage(p, err, w.opts.Container), nil)
	last := ""
	for {
		// List then watch from the list's resourceVersion; a watch that
		// ends (timeout, apiserver restart) starts over with a fresh list.
		list, err := pods.List(ctx, metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("metadata.name", w.pod).String()})
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			if err := w.pause(ctx); err != nil {
				return nil, err
			}
			continue
		}
		for i := range list.Items {
			if w.logReady(&list.Items[i]) {
				return &list.Items[i], nil
			}
		}
		wi, err := pods.Watch(ctx, metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("metadata.name", w.pod).String(),
			ResourceVersion: list.ResourceVersion, AllowWatchBookmarks: true})
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			if err := w.pause(ctx); err != nil {
				return nil, err
			}
			continue
		}
		p, err := w.watchUntilReady(ctx, wi, &last)
		wi.Stop()
		if p != nil || err != nil {
			return p, err
		}
	}
}

func (w *podWatcher) watchUntilReady(ctx context.Context, wi watch.Interface, last *string) (*corev1.Pod, error) {
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case ev, open := <-wi.ResultChan():
			if !open {
				return nil, nil
			}
			p, ok := ev.Object.(*corev1.Pod)
			if !ok || ev.Type == watch.Deleted || ev.Type == watch.Bookmark {
				continue
			}
			if w.logReady(p) {
				return p, nil
			}
			if m := waitingMessage(p, nil, w.opts.Container); m != *last {
				*last = m
				w.set(StateWaiting, m, nil)
			}
		}
	}
}

// pause waits RetryMin before trying the API again.
func (w *podWatcher) pause(ctx context.Context) error {
	if err := retry.Sleep(ctx, w.opts.RetryMin); err != nil {
		return ctx.Err()
	}
	return nil
}

// logReady: the pod runs and its log container has started at least once.
func (w *podWatcher) logReady(p *corev1.Pod) bool {
	if p.Status.Phase != corev1.PodRunning {
		return false
	}
	for _, cs := range p.Status.ContainerStatuses {
		if cs.Name == w.opts.Container {
			return cs.State.Running != nil || cs.State.Terminated != nil || cs.LastTerminationState.Terminated != nil
		}
	}
	return true // no status for the container yet: try the log anyway
}

func waitingMessage(p *corev1.Pod, err error, container string) string {
	switch {
	case err != nil:
		return "pod not found yet"
	case p == nil:
		return "waiting"
	case p.Status.Phase != corev1.PodRunning:
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && c.Message != "" {
				return "pod " + string(p.Status.Phase) + ": " + c.Message
			}
		}
		return "pod " + string(p.Status.Phase)
	}
	return "waiting for container " + container
}

// follow streams the log from the pod's start and returns matched or
// wrong-id, or "" when the stream ended. readAny says whether any line was read.
func (w *podWatcher) follow(ctx context.Context, pod *corev1.Pod) (string, bool, error) {
	w.containerStart, w.podStart = time.Time{}, time.Time{}
	if w.opts.FreshPods && pod.Status.StartTime != nil {
		w.podStart = pod.Status.StartTime.Time
	}
	for _, cs := range pod.Status.ContainerStatuses {
		if cs.Name == w.opts.Container && cs.State.Running != nil {
			w.containerStart = cs.State.Running.StartedAt.Time
		}
	}
	lo := &corev1.PodLogOptions{Container: w.opts.Container, Follow: true, Timestamps: true}
	if pod.Status.StartTime != nil {
		st := *pod.Status.StartTime
		lo.SinceTime = &st
	}
	rc, err := w.opts.Client.CoreV1().Pods(w.opts.Namespace).GetLogs(w.pod, lo).Stream(ctx)
	if err != nil {
		return "", false, fmt.Errorf("open log of %s/%s: %w", w.pod, w.opts.Container, err)
	}
	defer rc.Close()
	// Close the stream when ctx ends, so a blocked read returns.
	stop := context.AfterFunc(ctx, func() { rc.Close() })
	defer stop()

	br := bufio.NewReaderSize(rc, 64*1024)
	readAny := false
	for {
		line, err := br.ReadString('\n')
		if line != "" {
			readAny = true
			if st := w.line(line); st != "" {
				return st, true, nil
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				return "", readAny, nil
			}
			return "", readAny, fmt.Errorf("read log of %s/%s: %w", w.pod, w.opts.Container, err)
		}
	}
}

// line handles one log line (with the kubelet's timestamp prefix); it
// returns matched, wrong-id or "".
//
// A different URI fails the pod only in a line written after Verify
// started: an older one (say, before a corrected SPIFFE ID PR was merged and
// Envoy got its new SVID) is recorded in SeenIDs, and the pod keeps waiting
// for a fresh line.
func (w *podWatcher) line(line string) string {
	stamp, text := splitTimestamp(line)
	s, ok := MatchLine(text, w.opts.Expected, w.opts.Upstream)
	if !ok {
		return ""
	}
	line = strings.TrimSpace(text)
	if stamp.IsZero() {
		stamp = w.containerStart // no kubelet timestamp: the container's start is the line's time
	}
	since := w.start
	if !w.podStart.IsZero() {
		since = w.podStart
	}
	if !stamp.IsZero() && stamp.Before(since) {
		// One rule for every line logged before verify started: it proves
		// nothing either way (a match then may be another deployment's).
		if len(s.URIs) > 0 {
			when := "verify started"
			if since.Equal(w.podStart) {
				when = "the pod started"
			}
			w.set(StateStreaming, "ignored a line from before "+when+" (URI="+strings.Join(s.URIs, ", URI=")+")", nil)
		}
		return ""
	}
	if s.NoUpstream {
		w.set(StateStreaming, "X-Forwarded-Client-Cert not appended by the upstream "+w.opts.Upstream+" (no element with By="+w.opts.Upstream+")",
			func(r *PodResult) { r.Line = line })
		return ""
	}
	add := func(r *PodResult) {
		for _, u := range s.URIs {
			if !contains(r.SeenIDs, u) {
				r.SeenIDs = append(r.SeenIDs, u)
			}
		}
		r.Line = line
	}
	switch {
	case s.Matched:
		w.set(StateMatched, "", func(r *PodResult) { add(r); r.Matched = true })
		return StateMatched
	case len(s.URIs) > 0:
		w.set(StateWrongID, "URI="+strings.Join(s.URIs, ", URI="), add)
		return StateWrongID
	}
	// An XFCC header without a URI: the upstream saw no SPIFFE client certificate.
	w.set(StateStreaming, "X-Forwarded-Client-Cert without a URI", func(r *PodResult) { r.Line = line })
	return ""
}

// splitTimestamp splits the RFC 3339 timestamp the kubelet puts before each
// line when PodLogOptions.Timestamps is set.
func splitTimestamp(line string) (time.Time, string) {
	ts, rest, ok := strings.Cut(line, " ")
	if !ok {
		return time.Time{}, line
	}
	t, err := time.Parse(time.RFC3339Nano, ts)
	if err != nil {
		return time.Time{}, line
	}
	return t, rest
}
