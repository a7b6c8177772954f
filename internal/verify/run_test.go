package verify_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes/fake"

	"github.com/spirepod/spirepod/internal/checklist"
	"github.com/spirepod/spirepod/internal/pki"
	"github.com/spirepod/spirepod/internal/project"
	"github.com/spirepod/spirepod/internal/verify"
)

// testProject is a scaffold's project in a temporary directory: namespace
// team-a, StatefulSet sei with two replicas, so its workload ID is expected.
func testProject(t *testing.T) *project.Project {
	t.Helper()
	p := &project.Project{APIVersion: project.APIVersion, Kind: project.Kind, Team: "team-a", Namespace: "team-a", Environment: "dev",
		StatefulSet: "sei", Replicas: 2, ServiceAccount: "httpbin-client", TrustDomain: "spire.cityos-dev.woven-planet.tech",
		Paths: project.DefaultPaths, Dir: t.TempDir()}
	p.ApplyDefaults()
	if p.WorkloadSpiffeID() != expected {
		t.Fatalf("test project's workload ID %s, want %s", p.WorkloadSpiffeID(), expected)
	}
	return p
}

// writeCA writes a fresh team CA certificate (no key) where p keeps it.
func writeCA(t *testing.T, p *project.Project) testCA {
	t.Helper()
	ca := newTestCA(t)
	path := p.Path(p.Paths.CACert)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, ca.certPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	return ca
}

// fakeSteps stands in for Ping, Verify and Diagnose: it records the order
// of the calls and their options, and answers what the test says.
type fakeSteps struct {
	mu       sync.Mutex
	calls    []string
	vopts    verify.Options
	dopts    verify.DiagnoseOptions
	vctx     context.Context
	dctx     context.Context
	pingErr  error
	verify   func(context.Context, verify.Options) (*verify.Result, error)
	diagnose func(context.Context, verify.DiagnoseOptions) ([]verify.Diagnosis, error)
}

func (f *fakeSteps) call(name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, name)
}

func (f *fakeSteps) options(o verify.RunOptions) verify.RunOptions {
	o.Ping = func(context.Context) error { f.call("ping"); return f.pingErr }
	o.Verify = func(ctx context.Context, vo verify.Options) (*verify.Result, error) {
		f.call("verify")
		f.vopts, f.vctx = vo, ctx
		return f.verify(ctx, vo)
	}
	o.Diagnose = func(ctx context.Context, do verify.DiagnoseOptions) ([]verify.Diagnosis, error) {
		f.call("diagnose")
		f.dopts, f.dctx = do, ctx
		if f.diagnose == nil {
			return []verify.Diagnosis{{Pod: do.Pods[0], Stage: verify.StageAgent, Summary: "the agent is not attested", Fix: "merge the trust-list PR"}}, nil
		}
		return f.diagnose(ctx, do)
	}
	return o
}

// result is what Verify returns for pods, every one in state.
func result(pods []string, state string) *verify.Result {
	r := &verify.Result{Namespace: "team-a", Expected: expected, Success: state == verify.StateMatched, Elapsed: verify.Duration(2 * time.Second)}
	for _, p := range pods {
		r.Pods = append(r.Pods, verify.PodResult{Pod: p, State: state, Matched: state == verify.StateMatched, SeenIDs: []string{}})
	}
	return r
}

// TestRunOutcomes: each way Verify ends becomes its outcome; every failure
// but a wrong ID is diagnosed; the record on disk holds the outcome with the
// context, namespace and team CA, and CheckLast reads it back.
func TestRunOutcomes(t *testing.T) {
	other := expected + "-v2"
	for _, tc := range []struct {
		name      string
		verr      error
		state     string
		outcome   string
		diagnosed bool
		last      string
	}{
		{"success", nil, verify.StateMatched, verify.OutcomeSuccess, false, verify.LastVerified},
		{"wrong ID", &verify.WrongIDError{Pod: "sei-0", Expected: expected, Seen: []string{other}}, verify.StateWrongID, verify.OutcomeWrongID, false, verify.LastFailed},
		{"timeout", &verify.TimeoutError{Pending: []string{"sei-0", "sei-1"}}, verify.StateStopped, verify.OutcomeTimeout, true, verify.LastFailed},
		{"another error", errors.New("verify ended without an outcome for sei-0"), verify.StateStopped, verify.OutcomeError, true, verify.LastFailed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := testProject(t)
			ca := writeCA(t, p)
			steps := &fakeSteps{verify: func(_ context.Context, o verify.Options) (*verify.Result, error) {
				return result(o.Pods, tc.state), tc.verr
			}}
			res, err := verify.Run(context.Background(), steps.options(verify.RunOptions{Project: p, Client: fake.NewClientset(), Context: "dev", Timeout: time.Minute}))
			if err != tc.verr {
				t.Fatalf("Run error %v, want Verify's %v", err, tc.verr)
			}
			if res == nil || res.Outcome != tc.outcome || res.Success() != (tc.verr == nil) {
				t.Fatalf("result %+v, want outcome %s", res, tc.outcome)
			}
			want := []string{"ping", "verify"}
			if tc.diagnosed {
				want = append(want, "diagnose")
			}
			if !reflect.DeepEqual(steps.calls, want) {
				t.Errorf("calls %v, want %v", steps.calls, want)
			}
			if tc.diagnosed != (len(res.Diagnoses) == 1) {
				t.Errorf("diagnoses %+v, diagnosed %v", res.Diagnoses, tc.diagnosed)
			}
			rec, err := verify.LoadRecord(p.Dir)
			if err != nil || rec == nil {
				t.Fatalf("record %+v, %v", rec, err)
			}
			wantMsg := ""
			if tc.verr != nil {
				wantMsg = tc.verr.Error()
			}
			if rec.Outcome != tc.outcome || rec.Context != "dev" || rec.Namespace != "team-a" || rec.Expected != expected ||
				rec.CASHA1 != pki.SHA1Fingerprint(ca.cert) || rec.Message != wantMsg || len(rec.Pods) != 2 || len(rec.Diagnoses) != len(res.Diagnoses) {
				t.Errorf("record %+v", rec)
			}
			if res.Record == nil || res.Record.Outcome != rec.Outcome {
				t.Errorf("result's record %+v, want the saved one", res.Record)
			}
			if l := verify.CheckLast(p, "dev"); l.State != tc.last {
				t.Errorf("CheckLast = %s (%s), want %s", l.State, l.Message, tc.last)
			}
		})
	}
}

// TestRunPlansFromTheProject: without overrides Run verifies every replica
// in the project's namespace for its workload ID, judged by its upstream;
// the diagnosis gets the StatefulSet, the agent names and the team CA.
// Flags (Namespace, Pods, Expected) override the project's.
func TestRunPlansFromTheProject(t *testing.T) {
	p := testProject(t)
	ca := writeCA(t, p)
	steps := &fakeSteps{verify: func(_ context.Context, o verify.Options) (*verify.Result, error) {
		return result(o.Pods, verify.StateStopped), &verify.TimeoutError{Pending: o.Pods}
	}}
	client := fake.NewClientset()
	res, err := verify.Run(context.Background(), steps.options(verify.RunOptions{Project: p, Client: client, Timeout: time.Minute}))
	var timeout *verify.TimeoutError
	if !errors.As(err, &timeout) || res == nil {
		t.Fatalf("Run = %+v, %v", res, err)
	}
	v, d := steps.vopts, steps.dopts
	if v.Client != client || v.Namespace != "team-a" || !reflect.DeepEqual(v.Pods, []string{"sei-0", "sei-1"}) || v.Expected != expected ||
		v.Upstream != p.Upstream.SpiffeID || v.Upstream == "" || v.Progress == nil {
		t.Errorf("Verify options %+v", v)
	}
	if d.StatefulSet != "sei" || !reflect.DeepEqual(d.AgentCNs, p.AgentCNs()) || d.CertificateName == nil || d.CertificateName("sei-1") != p.CertificateName("sei-1") ||
		d.TeamCA == nil || !d.TeamCA.Equal(ca.cert) || d.Upstream != p.Upstream.SpiffeID || d.Namespace != "team-a" || d.Expected != expected ||
		d.Verify == nil || len(d.Verify.Pods) != 2 {
		t.Errorf("Diagnose options %+v", d)
	}

	steps = &fakeSteps{verify: func(_ context.Context, o verify.Options) (*verify.Result, error) {
		return result(o.Pods, verify.StateMatched), nil
	}}
	res, err = verify.Run(context.Background(), steps.options(verify.RunOptions{Project: p, Client: client, Timeout: time.Minute,
		Namespace: "team-b", Pods: []string{"sei-1"}, Expected: expected + "-v2"}))
	if err != nil || res.Namespace != "team-b" || res.Expected != expected+"-v2" {
		t.Fatalf("Run = %+v, %v", res, err)
	}
	if v := steps.vopts; v.Namespace != "team-b" || !reflect.DeepEqual(v.Pods, []string{"sei-1"}) || v.Expected != expected+"-v2" {
		t.Errorf("Verify options %+v, want the overrides", v)
	}
}

// TestRunWithoutProject: the flags name everything; nothing is recorded;
// without them Run refuses before the cluster is asked.
func TestRunWithoutProject(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir) // a record, if one were written anywhere relative, would land here
	steps := &fakeSteps{verify: func(_ context.Context, o verify.Options) (*verify.Result, error) {
		return result(o.Pods, verify.StateMatched), nil
	}}
	res, err := verify.Run(context.Background(), steps.options(verify.RunOptions{Client: fake.NewClientset(), Namespace: "team-a",
		Pods: []string{"sei-0"}, Expected: expected}))
	if err != nil || !res.Success() || res.Record != nil {
		t.Fatalf("Run = %+v, %v", res, err)
	}
	if steps.vopts.Upstream != "" {
		t.Errorf("upstream %q without a project, want none (the last XFCC element is judged)", steps.vopts.Upstream)
	}
	if _, err := os.Stat(filepath.Join(dir, verify.RecordDir)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a record directory was made without a project: %v", err)
	}

	steps = &fakeSteps{}
	res, err = verify.Run(context.Background(), steps.options(verify.RunOptions{Client: fake.NewClientset(), Namespace: "team-a"}))
	if res != nil || err == nil || !strings.Contains(err.Error(), "Pods, Expected") {
		t.Fatalf("Run = %+v, %v; want a refusal naming Pods and Expected", res, err)
	}
	if len(steps.calls) != 0 {
		t.Errorf("calls %v before the refusal", steps.calls)
	}
}

// TestRunStopsBeforeVerifying: the drift answer comes first, then the ping;
// either error is returned as it is, and nothing is verified or recorded.
func TestRunStopsBeforeVerifying(t *testing.T) {
	drift := errors.New("replicas: spirepod.yaml says 2, the StatefulSet 3")
	unreachable := errors.New("cluster unreachable: https://127.0.0.1:1")
	for _, tc := range []struct {
		name      string
		drift     error
		ping      error
		want      error
		wantCalls []string
	}{
		{"drift", drift, unreachable, drift, nil},
		{"unreachable", nil, unreachable, unreachable, []string{"ping"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := testProject(t)
			writeCA(t, p)
			var events []string
			steps := &fakeSteps{pingErr: tc.ping}
			res, err := verify.Run(context.Background(), steps.options(verify.RunOptions{Project: p, Drift: tc.drift, Client: fake.NewClientset(),
				Event: func(ev verify.RunEvent) { events = append(events, ev.Kind) }}))
			if res != nil || err != tc.want {
				t.Fatalf("Run = %+v, %v; want nil, %v", res, err, tc.want)
			}
			if !reflect.DeepEqual(steps.calls, tc.wantCalls) || len(events) != 0 {
				t.Errorf("calls %v, events %v; want calls %v and no event", steps.calls, events, tc.wantCalls)
			}
			if rec, _ := verify.LoadRecord(p.Dir); rec != nil {
				t.Errorf("record %+v written", rec)
			}
		})
	}
}

// TestRunInterrupted: an interrupt while waiting or while diagnosing
// returns ctx's error and leaves the earlier record as it was.
func TestRunInterrupted(t *testing.T) {
	for _, during := range []string{"verify", "diagnose"} {
		t.Run(during, func(t *testing.T) {
			p := testProject(t)
			writeCA(t, p)
			old := &verify.Record{Time: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), Namespace: "team-a", Expected: expected, Outcome: verify.OutcomeSuccess}
			if err := verify.SaveRecord(p.Dir, old); err != nil {
				t.Fatal(err)
			}
			ctx, interrupt := context.WithCancel(context.Background())
			defer interrupt()
			steps := &fakeSteps{}
			steps.verify = func(vctx context.Context, o verify.Options) (*verify.Result, error) {
				if during == "verify" {
					interrupt()
					<-vctx.Done()
					return result(o.Pods, verify.StateStopped), vctx.Err()
				}
				return result(o.Pods, verify.StateStopped), &verify.TimeoutError{Pending: o.Pods}
			}
			steps.diagnose = func(dctx context.Context, o verify.DiagnoseOptions) ([]verify.Diagnosis, error) {
				interrupt()
				<-dctx.Done()
				return nil, dctx.Err()
			}
			res, err := verify.Run(ctx, steps.options(verify.RunOptions{Project: p, Client: fake.NewClientset(), Timeout: time.Minute}))
			if res != nil || !errors.Is(err, context.Canceled) {
				t.Fatalf("Run = %+v, %v; want nil, context.Canceled", res, err)
			}
			if steps.calls[len(steps.calls)-1] != during {
				t.Errorf("calls %v, want the last to be %s", steps.calls, during)
			}
			rec, err := verify.LoadRecord(p.Dir)
			if err != nil || !reflect.DeepEqual(rec, old) {
				t.Errorf("record %+v (%v), want the earlier one untouched", rec, err)
			}
		})
	}
}

// TestRunEvents: the events come in order, with what is verified, every
// pod event of Verify, and the two warnings (a diagnosis that stopped
// early keeps what it found; a record that cannot be written does not
// change the outcome).
func TestRunEvents(t *testing.T) {
	p := testProject(t)
	writeCA(t, p)
	// A file where the record's directory goes: the record cannot be written.
	if err := os.WriteFile(filepath.Join(p.Dir, verify.RecordDir), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	var events []verify.RunEvent
	steps := &fakeSteps{}
	steps.verify = func(_ context.Context, o verify.Options) (*verify.Result, error) {
		o.Progress(verify.Event{Pod: "sei-0", State: verify.StateStreaming})
		return result(o.Pods, verify.StateStopped), &verify.TimeoutError{Pending: o.Pods}
	}
	stopped := errors.New("diagnose sei-1, stage envoy: context deadline exceeded")
	steps.diagnose = func(_ context.Context, o verify.DiagnoseOptions) ([]verify.Diagnosis, error) {
		return []verify.Diagnosis{{Pod: "sei-0", Stage: verify.StagePod, Summary: "pod sei-0 is not scheduled"}}, stopped
	}
	res, err := verify.Run(context.Background(), steps.options(verify.RunOptions{Project: p, Client: fake.NewClientset(), Timeout: time.Minute,
		Event: func(ev verify.RunEvent) { events = append(events, ev) }}))
	var timeout *verify.TimeoutError
	if !errors.As(err, &timeout) || res == nil || res.Outcome != verify.OutcomeTimeout || len(res.Diagnoses) != 1 || res.Record != nil {
		t.Fatalf("Run = %+v, %v", res, err)
	}
	var kinds []string
	for _, ev := range events {
		kinds = append(kinds, ev.Kind)
	}
	want := []string{verify.RunStarted, verify.RunPod, verify.RunWaited, verify.RunDiagnosing, verify.RunDiagnosisIncomplete, verify.RunRecordNotSaved}
	if !reflect.DeepEqual(kinds, want) {
		t.Fatalf("events %v, want %v", kinds, want)
	}
	if s := events[0]; s.Namespace != "team-a" || s.Expected != expected || !reflect.DeepEqual(s.Pods, []string{"sei-0", "sei-1"}) {
		t.Errorf("started %+v", s)
	}
	if e := events[1].Pod; e.Pod != "sei-0" || e.State != verify.StateStreaming {
		t.Errorf("pod event %+v, want Verify's", e)
	}
	if events[4].Err != stopped || events[5].Err == nil {
		t.Errorf("warnings %v, %v", events[4].Err, events[5].Err)
	}
}

// TestRunTimeouts: Timeout bounds the wait and DiagnoseTimeout the
// diagnosis (each a deadline on its context); Timeout 0 adds none.
func TestRunTimeouts(t *testing.T) {
	p := testProject(t)
	writeCA(t, p)
	steps := &fakeSteps{verify: func(_ context.Context, o verify.Options) (*verify.Result, error) {
		return result(o.Pods, verify.StateStopped), &verify.TimeoutError{Pending: o.Pods}
	}}
	before := time.Now()
	if _, err := verify.Run(context.Background(), steps.options(verify.RunOptions{Project: p, Client: fake.NewClientset(),
		Timeout: 3 * time.Minute, DiagnoseTimeout: 7 * time.Minute})); err == nil {
		t.Fatal("Run succeeded")
	}
	after := time.Now()
	for _, c := range []struct {
		name string
		ctx  context.Context
		d    time.Duration
	}{{"verify", steps.vctx, 3 * time.Minute}, {"diagnose", steps.dctx, 7 * time.Minute}} {
		dl, ok := c.ctx.Deadline()
		if !ok || dl.Before(before.Add(c.d)) || dl.After(after.Add(c.d)) {
			t.Errorf("%s deadline %v (set %v), want now+%v", c.name, dl, ok, c.d)
		}
	}

	steps = &fakeSteps{verify: func(_ context.Context, o verify.Options) (*verify.Result, error) {
		return result(o.Pods, verify.StateMatched), nil
	}}
	if _, err := verify.Run(context.Background(), steps.options(verify.RunOptions{Project: p, Client: fake.NewClientset()})); err != nil {
		t.Fatal(err)
	}
	if _, ok := steps.vctx.Deadline(); ok {
		t.Error("Timeout 0 set a deadline on the wait")
	}
}

// TestCheckLast: a record counts only for the project's namespace, the
// kube context asked about (any when none), the team CA as it is now and
// the project's workload ID; each other case says why, with status's mark.
func TestCheckLast(t *testing.T) {
	p := testProject(t)
	ca := writeCA(t, p)
	fp := pki.SHA1Fingerprint(ca.cert)
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	ok := verify.Record{Time: at, Context: "dev", Namespace: "team-a", CASHA1: fp, Expected: expected, Outcome: verify.OutcomeSuccess}
	with := func(f func(r *verify.Record)) *verify.Record {
		r := ok
		f(&r)
		return &r
	}
	for _, tc := range []struct {
		name    string
		rec     *verify.Record
		raw     string // written instead of rec
		context string
		noCA    bool
		state   string
		status  checklist.Status
		msg     string
		fix     string
	}{
		{name: "never", state: verify.LastNever, status: checklist.Todo, msg: "never verified", fix: "`spirepod verify`"},
		{name: "unreadable", raw: "{not json", state: verify.LastUnreadable, status: checklist.Warn, msg: verify.RecordFile, fix: "run `spirepod verify` again"},
		{name: "verified", rec: &ok, context: "dev", state: verify.LastVerified, status: checklist.OK, msg: expected + " at 2026-01-02T03:04:05Z"},
		{name: "verified, no context to compare", rec: &ok, state: verify.LastVerified, status: checklist.OK},
		{name: "other namespace", rec: with(func(r *verify.Record) { r.Namespace = "team-b" }), context: "dev", state: verify.LastOtherNamespace, status: checklist.Todo,
			msg: "the last verification was of namespace team-b, not team-a", fix: "`spirepod verify`"},
		{name: "other context", rec: &ok, context: "prod", state: verify.LastOtherContext, status: checklist.Todo,
			msg: `the last verification was on context "dev", not "prod"`},
		{name: "other CA", rec: with(func(r *verify.Record) { r.CASHA1 = strings.Repeat("0", 40) }), state: verify.LastOtherCA, status: checklist.Todo,
			msg: "another team CA"},
		{name: "CA not recorded", rec: with(func(r *verify.Record) { r.CASHA1 = "" }), state: verify.LastOtherCA, status: checklist.Todo,
			msg: "does not say which team CA"},
		{name: "no team CA to compare", rec: with(func(r *verify.Record) { r.CASHA1 = "" }), noCA: true, state: verify.LastVerified, status: checklist.OK},
		{name: "other ID", rec: with(func(r *verify.Record) { r.Expected = expected + "-v2" }), state: verify.LastOtherID, status: checklist.Warn,
			msg: "verified " + expected + "-v2, but spirepod.yaml now expects " + expected},
		{name: "failed, diagnosed", rec: with(func(r *verify.Record) {
			r.Outcome, r.Message = verify.OutcomeTimeout, "timed out waiting"
			r.Diagnoses = []verify.Diagnosis{{Stage: verify.StageAgent, Summary: "not attested", Fix: "merge the trust-list PR"}}
		}), state: verify.LastFailed, status: checklist.Fail, msg: "timeout at 2026-01-02T03:04:05Z: timed out waiting (stage spire-agent: not attested)", fix: "merge the trust-list PR"},
		{name: "failed, not diagnosed", rec: with(func(r *verify.Record) { r.Outcome = verify.OutcomeWrongID }), state: verify.LastFailed, status: checklist.Fail,
			msg: "wrong-id at 2026-01-02T03:04:05Z", fix: "`spirepod verify`"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q := *p
			q.Dir = t.TempDir()
			if !tc.noCA {
				if err := os.MkdirAll(filepath.Dir(q.Path(q.Paths.CACert)), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(q.Path(q.Paths.CACert), ca.certPEM, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			switch {
			case tc.raw != "":
				if err := verify.SaveRecord(q.Dir, &ok); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(q.Dir, verify.RecordFile), []byte(tc.raw), 0o644); err != nil {
					t.Fatal(err)
				}
			case tc.rec != nil:
				if err := verify.SaveRecord(q.Dir, tc.rec); err != nil {
					t.Fatal(err)
				}
			}
			l := verify.CheckLast(&q, tc.context)
			if l.State != tc.state || l.Status != tc.status || l.Verified() != (tc.state == verify.LastVerified) {
				t.Fatalf("CheckLast = %+v, want state %s, status %s", l, tc.state, tc.status)
			}
			if !strings.Contains(l.Message, tc.msg) {
				t.Errorf("message %q, want %q in it", l.Message, tc.msg)
			}
			if tc.status == checklist.OK && l.Fix != "" || tc.fix != "" && l.Fix != tc.fix {
				t.Errorf("fix %q, want %q", l.Fix, tc.fix)
			}
			if (tc.state == verify.LastUnreadable) != (l.Err != nil) || (tc.rec != nil) != (l.Record != nil) {
				t.Errorf("err %v, record %+v", l.Err, l.Record)
			}
		})
	}
}

// TestRunOnTheBed: Run with the real Verify against the test bed's API
// server (kwok serves the curl log): the project's pod matches on a line
// its upstream appended, written once verify follows the log; the record
// is saved, and CheckLast counts it for this context only.
func TestRunOnTheBed(t *testing.T) {
	c := cluster(t)
	p := testProject(t)
	p.Namespace, p.Replicas = namespace(t, c), 1
	writeCA(t, p)
	pod := p.PodName(0)
	files := logFiles(t, c, p.Namespace, pod, "curl")
	makePod(t, c, p.Namespace, pod, nil)
	// The header as the project's upstream appends it: By= its SPIFFE ID.
	line := `    "X-Forwarded-Client-Cert": "By=` + p.Upstream.SpiffeID + `;Hash=8c2f0d;Subject=\"\";URI=` + p.WorkloadSpiffeID() + `"`

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var once sync.Once
	var kinds []string
	res, err := verify.Run(ctx, verify.RunOptions{Project: p, Client: c.Client, Dynamic: c.Dynamic, Context: "bed", Timeout: 30 * time.Second,
		Event: func(ev verify.RunEvent) {
			kinds = append(kinds, ev.Kind)
			if ev.Kind == verify.RunPod && ev.Pod.State == verify.StateStreaming {
				once.Do(func() { appendLog(t, files["curl"], line) })
			}
		}})
	if err != nil || res == nil || !res.Success() || len(res.Pods) != 1 || !res.Pods[0].Matched {
		t.Fatalf("Run = %+v, %v (events %v)", res, err, kinds)
	}
	if kinds[0] != verify.RunStarted || kinds[len(kinds)-1] != verify.RunWaited {
		t.Errorf("events %v: want started first and waited last (no diagnosis on success)", kinds)
	}
	if l := verify.CheckLast(p, "bed"); !l.Verified() || l.Record.Namespace != p.Namespace {
		t.Errorf("CheckLast(bed) = %+v, want verified", l)
	}
	if l := verify.CheckLast(p, "prod"); l.State != verify.LastOtherContext {
		t.Errorf("CheckLast(prod) = %+v, want %s", l, verify.LastOtherContext)
	}
}
