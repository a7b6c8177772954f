package rotate

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spirepod/spirepod/internal/pki"
	"github.com/spirepod/spirepod/internal/pr"
	"github.com/spirepod/spirepod/internal/project"
)

// run starts or resumes the rotation from the scaffold's state file, as
// `spirepod pki rotate` does (a fresh State each time: nothing carries over
// in memory), then reads the state file back.
func (w *world) run(ctx context.Context, so StartOptions, edit func(*Options)) (*Report, *State, error) {
	w.t.Helper()
	s, _, err := Start(w.p, so, w.clock.Now())
	if err != nil {
		w.t.Fatalf("Start: %v", err)
	}
	o := w.options()
	o.Emergency, o.Roll, o.Format = so.Emergency, so.Roll, so.Format
	if edit != nil {
		edit(&o)
	}
	rep, err := Run(ctx, o, s)
	saved, lerr := Load(w.p)
	if lerr != nil {
		w.t.Fatalf("the state file after the run: %v", lerr)
	}
	return rep, saved, err
}

// stepsByTime are the recorded steps in the order they finished.
func stepsByTime(s *State) []string {
	if s == nil {
		return nil
	}
	var out []string
	for id := range s.Steps {
		out = append(out, id)
	}
	sort.Slice(out, func(i, j int) bool { return s.Steps[out[i]].Before(s.Steps[out[j]]) })
	return out
}

// newSteps are the steps recorded in after and not in before, in order.
func newSteps(before, after *State) []string {
	var out []string
	for _, id := range stepsByTime(after) {
		if before == nil || !before.done(id) {
			out = append(out, id)
		}
	}
	return out
}

// walkRun is one `spirepod pki rotate` of a rotation walked run by run.
type walkRun struct {
	name   string
	before func(w *world) // what happens outside before the run
	start  StartOptions   // the run's flags (Emergency, Roll, Again)
	opts   func(o *Options)
	// did are the steps this run records, in order.
	did     []string
	state   string // the report's: running, waiting, done
	phase   int
	next    string // the report's next step ("" not checked)
	waiting []string
	hint    string
	check   func(t *testing.T, w *world, rep *Report, s *State)
}

// walk runs each run on the same world, each from the state file the last
// left, and checks the steps it recorded and where it stopped.
func walk(t *testing.T, w *world, runs []walkRun) {
	t.Helper()
	prev, _ := Load(w.p)
	for i, r := range runs {
		if r.before != nil {
			r.before(w)
		}
		rep, s, err := w.run(context.Background(), r.start, r.opts)
		if err != nil {
			t.Fatalf("run %d (%s): %v", i+1, r.name, err)
		}
		if prev != nil && !s.Started.Equal(prev.Started) {
			prev = nil // another rotation began
		}
		if got := newSteps(prev, s); !slices.Equal(got, r.did) {
			t.Errorf("run %d (%s) recorded %v, want %v", i+1, r.name, got, r.did)
		}
		if rep.State != r.state || rep.Phase != r.phase {
			t.Errorf("run %d (%s): state %s phase %d, want %s phase %d (waiting %q)", i+1, r.name, rep.State, rep.Phase, r.state, r.phase, rep.Waiting)
		}
		if r.next != "" && rep.Next != r.next {
			t.Errorf("run %d (%s): next %q, want %q", i+1, r.name, rep.Next, r.next)
		}
		for _, want := range r.waiting {
			if !strings.Contains(rep.Waiting, want) {
				t.Errorf("run %d (%s): waiting %q lacks %q", i+1, r.name, rep.Waiting, want)
			}
		}
		if r.waiting == nil && rep.Waiting != "" {
			t.Errorf("run %d (%s): waiting %q", i+1, r.name, rep.Waiting)
		}
		if !strings.Contains(rep.Hint, r.hint) {
			t.Errorf("run %d (%s): hint %q lacks %q", i+1, r.name, rep.Hint, r.hint)
		}
		if r.check != nil {
			r.check(t, w, rep, s)
		}
		if t.Failed() {
			t.FailNow() // the next run starts from this one's end
		}
		prev = s
	}
}

func pull(n int) string { return fmt.Sprintf("https://github.example/wp-wcm/city/pull/%d", n) }

// clusterEvents are the world's cluster events (not merges and reloads).
func (w *world) clusterEvents() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []string
	for _, e := range w.events {
		if !strings.HasPrefix(e, "merge ") && e != "reload" {
			out = append(out, e)
		}
	}
	return out
}

func (w *world) caFP(f Files) string {
	w.t.Helper()
	l, err := readCA(f, false)
	if err != nil || l == nil {
		return ""
	}
	return pki.SHA1Fingerprint(l.Cert)
}

// TestRunNormalRotation walks a normal rotation (pods move in place) run by
// run, the platform acting between runs, and reads the state file after
// each: every phase transition, each wait (nothing merged, one of two
// merged, the server not reloaded, the old CA still trusted, nobody to
// confirm, confirmation refused), the end, a finished rotation reported
// without touching anything, and --again beginning the next.
func TestRunNormalRotation(t *testing.T) {
	w := newWorld(t)
	oldFP := w.caFP(CurrentFiles(w.p))
	var newFP string
	var questions []string
	var counts string
	snapshot := func(w *world) string {
		return fmt.Sprintf("opened %v inBase %d probes %d applied %d issued %v restarts %v attested %v",
			w.city.opened, w.city.inBase, w.server.probes, w.cluster.applied, w.cluster.issued, w.cluster.restarts, w.cluster.attested)
	}
	walk(t, w, []walkRun{{
		name:    "phase 1 makes the new CA, phase 2 opens both pull requests",
		did:     []string{StepNewCA, StepPRTrust, StepPRAliases},
		state:   "waiting",
		phase:   2,
		next:    "wait for both pull requests to be merged",
		waiting: []string{"the pull request(s) to be merged: " + pull(1) + ", " + pull(2)},
		hint:    "ask the platform team",
		check: func(t *testing.T, w *world, rep *Report, s *State) {
			newFP = w.caFP(NextFiles(w.p))
			if newFP == "" || s.New.SHA1 != newFP || newFP == oldFP {
				t.Fatalf("the new CA: next files %q, state %q, old %q", newFP, s.New.SHA1, oldFP)
			}
			if st, err := os.Stat(NextFiles(w.p).Key); err != nil || st.Mode().Perm() != 0o600 {
				t.Errorf("the new key: %v %v", st, err)
			}
			if w.caFP(CurrentFiles(w.p)) != oldFP {
				t.Errorf("phase 1 changed the current CA")
			}
			if len(s.PRs) != 2 || s.pr(StepPRTrust).URL != pull(1) || s.pr(StepPRAliases).URL != pull(2) {
				t.Errorf("recorded pull requests %+v", s.PRs)
			}
			if got := w.city.openBranches(); len(got) != 2 || !strings.Contains(got[0], "rotate-"+newFP[:12]) {
				t.Errorf("open branches %v", got)
			}
			if w.server.probes != 0 || w.cluster.applied != 0 {
				t.Errorf("phases 1-2 probed (%d) or changed the cluster (%d) before the merges", w.server.probes, w.cluster.applied)
			}
		},
	}, {
		name:    "nothing merged: it waits again and sends nothing",
		state:   "waiting",
		phase:   2,
		waiting: []string{pull(1) + ", " + pull(2)},
		check: func(t *testing.T, w *world, rep *Report, s *State) {
			for b, n := range w.city.opened {
				if n != 1 {
					t.Errorf("%s opened %d times", b, n)
				}
			}
		},
	}, {
		name:    "the trust list merged alone: it waits for the aliases",
		before:  func(w *world) { w.city.merge("/trust-ca") },
		state:   "waiting",
		phase:   2,
		waiting: []string{"merged: " + pull(2)},
		check: func(t *testing.T, w *world, rep *Report, s *State) {
			if strings.Contains(rep.Waiting, pull(1)) {
				t.Errorf("still waits for the merged %s: %s", pull(1), rep.Waiting)
			}
			if got := w.city.trusted(); len(got) != 2 || !slices.Contains(got, oldFP) || !slices.Contains(got, newFP) {
				t.Errorf("the merged trust list holds %v, want the old and the new CA", got)
			}
		},
	}, {
		name:    "both merged, the server not reloaded: a probe leaf of the new CA is refused",
		before:  func(w *world) { w.city.merge("/spiffe-id") },
		did:     []string{StepMerged},
		state:   "waiting",
		phase:   2,
		next:    "check the SPIRE server trusts the new CA",
		waiting: []string{"the SPIRE server to trust the new CA", "certificate signed by unknown authority"},
		hint:    "reload the server's x509pop trust list",
		check: func(t *testing.T, w *world, rep *Report, s *State) {
			leaf := w.server.lastChain[0]
			if leaf.Subject.CommonName != "spirepod-rotation-probe.payments" || w.caFP(NextFiles(w.p)) != newFP {
				t.Errorf("probe leaf %s", leaf.Subject)
			}
			nc, _ := readCA(NextFiles(w.p), false)
			if leaf.CheckSignatureFrom(nc.Cert) != nil {
				t.Errorf("the probe leaf is not of the new CA")
			}
		},
	}, {
		name:   "server reloaded: phase 3 switches issuance, pods move in place (one first), phase 4 opens the alias pull request",
		before: func(w *world) { w.server.reload() },
		did: []string{StepServerTrustsNew, StepFilesSwapped, StepSecretSwitched, StepIssuerReady, StepPods,
			StepPRRetireAliases},
		state:   "waiting",
		phase:   4,
		waiting: []string{"merged: " + pull(3)},
		check: func(t *testing.T, w *world, rep *Report, s *State) {
			if w.caFP(CurrentFiles(w.p)) != newFP || w.caFP(OldFiles(w.p)) != oldFP || exists(NextFiles(w.p).Cert) || exists(NextFiles(w.p).Key) {
				t.Errorf("scaffold CA files: current %s old %s", w.caFP(CurrentFiles(w.p)), w.caFP(OldFiles(w.p)))
			}
			if _, err := readCA(OldFiles(w.p), true); err != nil || !exists(OldFiles(w.p).Key) {
				t.Errorf("the old key is not kept aside: %v", err)
			}
			ca := "payments/" + w.p.Issuer().SecretName + " " + newFP
			want := []string{"apply " + ca, "issuer ready " + newFP,
				"issue spire-envoy-integration-2", "attest spire-envoy-integration-2", // the canary alone
				"issue spire-envoy-integration-1", "issue spire-envoy-integration-0",
				"attest spire-envoy-integration-1", "attest spire-envoy-integration-0"}
			if got := w.clusterEvents(); !slices.Equal(got, want) {
				t.Errorf("cluster:\n got %q\nwant %q", got, want)
			}
			for _, pod := range w.p.PodNames() {
				st := s.Pods[pod]
				if st == nil || st.Leaf == "" || st.Attested.IsZero() || !strings.HasPrefix(st.How, "spire-agent log: ") || !strings.Contains(st.How, "/x509pop/"+st.Leaf) {
					t.Errorf("pod %s: %+v", pod, st)
				}
			}
			if len(w.cluster.restarts) != 0 {
				t.Errorf("in place restarted %v", w.cluster.restarts)
			}
			if !strings.Contains(w.city.openBranches()[0], "retire-"+oldFP[:12]+"/spiffe-id") {
				t.Errorf("open: %v", w.city.openBranches())
			}
		},
	}, {
		name:    "the alias pull request merged: the one removing the old CA opens",
		before:  func(w *world) { w.city.merge("/spiffe-id") },
		did:     []string{StepRetireAliasesIn, StepPRRetireTrust},
		state:   "waiting",
		phase:   4,
		waiting: []string{"merged: " + pull(4)},
	}, {
		name:    "merged, the server not reloaded: the old CA is still trusted",
		before:  func(w *world) { w.city.merge("/trust-ca") },
		did:     []string{StepRetireTrustIn},
		state:   "waiting",
		phase:   4,
		next:    "check the SPIRE server refuses the old CA",
		waiting: []string{"the SPIRE server to drop the old CA (a probe leaf of it still attests as spiffe://example.org/spire/agent/x509pop/"},
		hint:    "reload the server's x509pop trust list",
		check: func(t *testing.T, w *world, rep *Report, s *State) {
			if got := w.city.trusted(); !slices.Equal(got, []string{newFP}) {
				t.Errorf("the merged trust list holds %v, want the new CA only", got)
			}
		},
	}, {
		name:    "server reloaded, nobody to confirm: the old key stays",
		before:  func(w *world) { w.server.reload() },
		did:     []string{StepServerDropsOld},
		state:   "waiting",
		phase:   4,
		next:    "delete the old CA's key",
		waiting: []string{"confirmation to delete the old CA's key certs/secret/agent-x509pop.old.key.pem"},
		hint:    "--yes",
		check: func(t *testing.T, w *world, rep *Report, s *State) {
			if !exists(OldFiles(w.p).Key) {
				t.Errorf("the old key went unconfirmed")
			}
		},
	}, {
		name: "deletion refused: the old key stays",
		opts: func(o *Options) {
			o.Confirm = func(q string) (bool, error) { questions = append(questions, q); return false, nil }
		},
		state:   "waiting",
		phase:   4,
		waiting: []string{"(answered no)"},
		hint:    "when you are ready",
		check: func(t *testing.T, w *world, rep *Report, s *State) {
			if len(questions) != 1 || !strings.Contains(questions[0], "agent-x509pop.old.key.pem (sha1 "+oldFP+")") {
				t.Errorf("asked %q", questions)
			}
			if !exists(OldFiles(w.p).Key) {
				t.Errorf("the old key went though the answer was no")
			}
		},
	}, {
		name:  "confirmed: the old key goes and the rotation is done",
		opts:  func(o *Options) { o.Confirm = func(string) (bool, error) { return true, nil } },
		did:   []string{StepOldKeyDeleted},
		state: "done",
		phase: 4,
		check: func(t *testing.T, w *world, rep *Report, s *State) {
			if exists(OldFiles(w.p).Key) || exists(OldFiles(w.p).Cert) || s.Done.IsZero() || w.caFP(CurrentFiles(w.p)) != newFP {
				t.Errorf("done: old files %v %v, Done %v", exists(OldFiles(w.p).Key), exists(OldFiles(w.p).Cert), s.Done)
			}
			if len(rep.Durations) != 4 {
				t.Errorf("durations %v", rep.Durations)
			}
			counts = snapshot(w)
		},
	}, {
		name:  "a finished rotation is reported, not repeated: nothing outside is touched",
		state: "done",
		phase: 4,
		check: func(t *testing.T, w *world, rep *Report, s *State) {
			if got := snapshot(w); got != counts || len(rep.Did) != 0 {
				t.Errorf("a finished rotation did %v:\n%s\n%s", rep.Did, got, counts)
			}
		},
	}, {
		name:    "--again begins the next rotation, from the CA the last one made",
		start:   StartOptions{Again: true},
		did:     []string{StepNewCA, StepPRTrust, StepPRAliases},
		state:   "waiting",
		phase:   2,
		waiting: []string{"merged: " + pull(5) + ", " + pull(6)},
		check: func(t *testing.T, w *world, rep *Report, s *State) {
			if s.Old.SHA1 != newFP || s.New.SHA1 == newFP || s.New.SHA1 == "" || !s.Done.IsZero() || len(s.Pods) != 0 {
				t.Errorf("the next rotation: old %s new %s done %v pods %v", s.Old.SHA1, s.New.SHA1, s.Done, s.Pods)
			}
		},
	}})
}

// TestRunEmergencyRotation walks an emergency rotation (pods restart): the
// issuer switches before anything is merged, the pull requests replace the
// old CA, the alias one first; the server must trust the new CA and refuse
// the old; pods restart one at a time, highest first, each verified.
func TestRunEmergencyRotation(t *testing.T) {
	w := newWorld(t)
	oldFP := w.caFP(CurrentFiles(w.p))
	var newFP string
	var verified []string
	em := StartOptions{Emergency: true}
	walk(t, w, []walkRun{{
		name:  "phase 1, then phase 2 up to the merges: issuance switches at once",
		start: em,
		did: []string{StepNewCA, StepPRAliases, StepPRTrust, StepFilesSwapped, StepSecretSwitched, StepIssuerReady,
			StepCertsReissued},
		state:   "waiting",
		phase:   2,
		waiting: []string{"merged: " + pull(2) + ", " + pull(1)},
		check: func(t *testing.T, w *world, rep *Report, s *State) {
			newFP = s.New.SHA1
			if w.caFP(CurrentFiles(w.p)) != newFP || w.caFP(OldFiles(w.p)) != oldFP {
				t.Errorf("the scaffold's CA is not switched")
			}
			ca := "payments/" + w.p.Issuer().SecretName + " " + newFP
			want := []string{"apply " + ca, "issuer ready " + newFP, "issue spire-envoy-integration-2", "issue spire-envoy-integration-1", "issue spire-envoy-integration-0"}
			if got := w.clusterEvents(); !slices.Equal(got, want) {
				t.Errorf("cluster:\n got %q\nwant %q", got, want)
			}
			trust := w.city.branches["spirepod/payments/rotate-"+newFP[:12]+"/trust-ca"]
			if len(trust) != 1 || !slices.Equal(fingerprints(trust[0].New), []string{newFP}) {
				t.Errorf("the emergency trust list change: %v", trust)
			}
			if strings.Join(rep.LoseIdentity, ",") != "spire-envoy-integration-0,spire-envoy-integration-1,spire-envoy-integration-2" {
				t.Errorf("lose identity %v", rep.LoseIdentity)
			}
		},
	}, {
		name:    "the alias pull request merged first: it waits for the trust list",
		before:  func(w *world) { w.city.merge("/spiffe-id") },
		state:   "waiting",
		phase:   2,
		waiting: []string{"merged: " + pull(2)},
	}, {
		name:    "both merged, not reloaded: the new CA is not trusted yet",
		before:  func(w *world) { w.city.merge("/trust-ca") },
		did:     []string{StepMerged},
		state:   "waiting",
		phase:   2,
		waiting: []string{"the SPIRE server to trust the new CA"},
	}, {
		name:   "reloaded: the old CA is refused, pods restart one at a time (verified with --wait), the old key goes (--yes)",
		before: func(w *world) { w.server.reload() },
		opts: func(o *Options) {
			o.Yes, o.Wait = true, true
			o.VerifyPod = func(_ context.Context, pod string) error { verified = append(verified, pod); return nil }
		},
		did:   []string{StepServerTrustsNew, StepServerDropsOld, StepPods, StepOldKeyDeleted},
		state: "done",
		phase: 4,
		check: func(t *testing.T, w *world, rep *Report, s *State) {
			want := []string{"restart spire-envoy-integration-2", "restart spire-envoy-integration-1", "restart spire-envoy-integration-0"}
			if got := w.clusterEvents()[5:]; !slices.Equal(got, want) {
				t.Errorf("phase 3 in the cluster: %q, want %q", got, want)
			}
			if !slices.Equal(verified, []string{"spire-envoy-integration-2", "spire-envoy-integration-1", "spire-envoy-integration-0"}) {
				t.Errorf("verified %v", verified)
			}
			for _, pod := range w.p.PodNames() {
				if st := s.Pods[pod]; st == nil || st.Restarted.IsZero() || st.Attested.IsZero() || !strings.Contains(st.How, "spirepod verify") {
					t.Errorf("pod %s: %+v", pod, st)
				}
				if w.cluster.issued[pod] != 1 {
					t.Errorf("pod %s issued %d leaves", pod, w.cluster.issued[pod])
				}
			}
			if !slices.ContainsFunc(rep.Did, func(d string) bool { return strings.Contains(d, "a leaf of the old CA is refused") }) {
				t.Errorf("did %q", rep.Did)
			}
			if exists(OldFiles(w.p).Key) {
				t.Errorf("the old key is still there")
			}
		},
	}})
}

// sideEffects are what a rotation did outside the scaffold, counted.
type sideEffects struct {
	opened   map[string]int
	applied  int
	issued   map[string]int
	restarts map[string]int
}

func (w *world) sideEffects() sideEffects {
	return sideEffects{opened: w.city.opened, applied: w.cluster.applied, issued: w.cluster.issued, restarts: w.cluster.restarts}
}

// String names branches without the CA's fingerprint (each world has its own CAs).
func (e sideEffects) String() string {
	opened := map[string]int{}
	for b, n := range e.opened {
		opened[fingerprintPart.ReplaceAllString(b, "-<ca>/")] += n
	}
	return fmt.Sprintf("opened %v, applied %d, issued %v, restarted %v", opened, e.applied, e.issued, e.restarts)
}

var fingerprintPart = regexp.MustCompile(`-[0-9a-f]{12}/`)

// TestRunResumesAnywhere interrupts a rotation after every progress line
// it reports (each finished step, and each pod's progress inside phase 3),
// with a platform that merges and reloads at once, then runs again from
// the state file: the rotation ends as the uninterrupted one did (every
// step recorded, the new CA current, the old key gone), and nothing outside
// happens twice: one CA made, each pull request opened once, the Secret
// applied once, each pod's certificate issued once and each pod restarted
// at most once.
func TestRunResumesAnywhere(t *testing.T) {
	for _, v := range []struct {
		name  string
		start StartOptions
	}{
		{"normal in-place", StartOptions{}},
		{"normal restart", StartOptions{Roll: RollRestart}},
		{"emergency restart", StartOptions{Emergency: true}},
		{"emergency in-place", StartOptions{Emergency: true, Roll: RollInPlace}},
	} {
		t.Run(v.name, func(t *testing.T) {
			auto := func(t *testing.T) *world {
				w := newWorld(t)
				w.city.autoMerge, w.server.autoReload = true, true
				return w
			}
			ref := auto(t)
			var lines []string
			_, s, err := ref.run(context.Background(), v.start, func(o *Options) {
				o.Yes = true
				o.Progress = func(msg string) { lines = append(lines, msg) }
			})
			if err != nil || s.Done.IsZero() {
				t.Fatalf("uninterrupted: %v (done %v)", err, s.Done)
			}
			allSteps := stepsByTime(s)
			want := ref.sideEffects().String()
			var every []string
			for _, ph := range phasesFor(v.start.Emergency) {
				every = append(every, ph.Steps...)
			}
			if !slices.Equal(allSteps, every) {
				t.Fatalf("uninterrupted recorded %v, want %v", allSteps, every)
			}
			for i := range lines[:len(lines)-1] {
				t.Run(fmt.Sprintf("%02d %s", i+1, lineName(lines[i])), func(t *testing.T) {
					t.Parallel()
					w := auto(t)
					ctx, cancel := context.WithCancel(context.Background())
					defer cancel()
					var mu sync.Mutex
					n := 0
					_, cut, err := w.run(ctx, v.start, func(o *Options) {
						o.Yes = true
						o.Progress = func(string) {
							mu.Lock()
							defer mu.Unlock()
							if n++; n == i+1 {
								cancel()
							}
						}
					})
					if !errors.Is(err, context.Canceled) {
						t.Fatalf("interrupted run: %v, want context.Canceled", err)
					}
					if cut == nil || cut.New.SHA1 == "" || !cut.Done.IsZero() || len(cut.Steps) >= len(allSteps) {
						t.Fatalf("state after the interrupt: %+v", cut)
					}
					if got := stepsByTime(cut); !slices.Equal(got, allSteps[:len(got)]) {
						t.Errorf("recorded %v, want a prefix of %v", got, allSteps)
					}
					_, end, err := w.run(context.Background(), v.start, func(o *Options) { o.Yes = true })
					if err != nil {
						t.Fatalf("resumed run: %v", err)
					}
					if got := stepsByTime(end); end.Done.IsZero() || !slices.Equal(got, allSteps) {
						t.Errorf("resumed to %v (done %v), want %v", got, end.Done, allSteps)
					}
					if end.New.SHA1 != cut.New.SHA1 || w.caFP(CurrentFiles(w.p)) != cut.New.SHA1 || exists(OldFiles(w.p).Key) {
						t.Errorf("the CA: recorded %s after the interrupt, %s at the end, current %s", cut.New.SHA1, end.New.SHA1, w.caFP(CurrentFiles(w.p)))
					}
					if got := w.sideEffects().String(); got != want {
						t.Errorf("side effects:\n got %s\nwant %s", got, want)
					}
				})
			}
		})
	}
}

// lineName is a progress line as a stable subtest name: its title, without
// fingerprints and details.
func lineName(line string) string {
	name, _, reissued := strings.Cut(strings.TrimPrefix(line, "√ "), ": agent certificate")
	if reissued {
		return name + " re-issued"
	}
	name, _, _ = strings.Cut(name, " (")
	if title, _, ok := strings.Cut(name, ": "); ok && !strings.HasPrefix(name, "spire-envoy") {
		name = title
	}
	return name
}

// TestRunRefusals: what Run refuses, and that a refusal records nothing it
// did not finish and changes nothing it guards. The platform merges and
// reloads at once.
func TestRunRefusals(t *testing.T) {
	other := otherTeamCA(t)
	for _, c := range []struct {
		name  string
		start StartOptions
		setup func(w *world, o *Options)
		// err checks the error; last is the last step recorded.
		err   func(t *testing.T, w *world, err error)
		last  string
		check func(t *testing.T, w *world, rep *Report)
	}{{
		name: "the issuer's Secret holds another team's CA",
		setup: func(w *world, o *Options) {
			w.cluster.secrets[key("payments", w.p.Issuer().SecretName)].Data["tls.crt"] = pki.EncodeCertificate(other.Cert)
		},
		err: func(t *testing.T, w *world, err error) {
			var se *SecretError
			if !errors.As(err, &se) || se.Secret != "payments/"+w.p.Issuer().SecretName || !strings.Contains(se.Holds, "CN=billing CA") {
				t.Errorf("%v, want a SecretError naming the Secret and the CA it holds", err)
			}
		},
		last: StepServerTrustsNew,
		check: func(t *testing.T, w *world, rep *Report) {
			unswitched(t, w)
		},
	}, {
		name:  "emergency: the issuer's Secret holds another team's CA",
		start: StartOptions{Emergency: true},
		setup: func(w *world, o *Options) {
			w.cluster.secrets[key("payments", w.p.Issuer().SecretName)].Data["tls.crt"] = pki.EncodeCertificate(other.Cert)
		},
		err: func(t *testing.T, w *world, err error) {
			var se *SecretError
			if !errors.As(err, &se) {
				t.Errorf("%v, want a SecretError", err)
			}
		},
		last:  StepPRTrust,
		check: func(t *testing.T, w *world, rep *Report) { unswitched(t, w) },
	}, {
		name:  "the issuer's Secret does not exist",
		setup: func(w *world, o *Options) { delete(w.cluster.secrets, key("payments", w.p.Issuer().SecretName)) },
		err: func(t *testing.T, w *world, err error) {
			var se *SecretError
			if !errors.As(err, &se) || !strings.Contains(se.Holds, "does not exist") {
				t.Errorf("%v, want a SecretError saying it does not exist", err)
			}
		},
		last:  StepServerTrustsNew,
		check: func(t *testing.T, w *world, rep *Report) { unswitched(t, w) },
	}, {
		name: "--check-with a certificate that is not of the new CA",
		setup: func(w *world, o *Options) {
			chain, key, err := ProbeLeaf(other.Cert, other.Key, "payments", w.clock.Now(), rand.Reader)
			if err != nil {
				t.Fatal(err)
			}
			o.CheckWith, o.CheckWithKey = chain, key
		},
		err: func(t *testing.T, w *world, err error) {
			var ie *InputError
			if !errors.As(err, &ie) || ie.Path != "--check-with" {
				t.Errorf("%v, want an InputError about --check-with", err)
			}
		},
		last: StepMerged,
		check: func(t *testing.T, w *world, rep *Report) {
			if w.server.probes != 0 {
				t.Errorf("probed %d times with a certificate of another CA", w.server.probes)
			}
		},
	}, {
		name: "nothing to probe with",
		setup: func(w *world, o *Options) {
			o.Probe, o.NoProbe = nil, errors.New("spireServer is empty in spirepod.yaml (pass --server)")
		},
		err: func(t *testing.T, w *world, err error) {
			var ie *InputError
			if !errors.As(err, &ie) || !errors.Is(err, ErrNoProbe) || !strings.Contains(err.Error(), "probe with: spireServer is empty") || !strings.Contains(ie.Hint, "--server-reloaded") {
				t.Errorf("%v, want an InputError wrapping ErrNoProbe and saying why", err)
			}
		},
		last: StepMerged,
	}, {
		name:  "the server unreachable is a failure, not a wait",
		setup: func(w *world, o *Options) { w.server.down = true },
		err: func(t *testing.T, w *world, err error) {
			var ue *UnreachableError
			if !errors.As(err, &ue) {
				t.Errorf("%v, want an UnreachableError", err)
			}
		},
		last:  StepMerged,
		check: func(t *testing.T, w *world, rep *Report) { unswitched(t, w) },
	}, {
		name:  "no cluster given",
		setup: func(w *world, o *Options) { o.Cluster = nil },
		err: func(t *testing.T, w *world, err error) {
			if !errors.Is(err, ErrNoCluster) {
				t.Errorf("%v, want ErrNoCluster", err)
			}
		},
		last:  StepServerTrustsNew,
		check: func(t *testing.T, w *world, rep *Report) { unswitched(t, w) },
	}, {
		name: "the issuer never gets Ready",
		setup: func(w *world, o *Options) {
			w.cluster.issuerErr = errors.New("Issuer payments/x is not Ready: KeyPairVerificationFailed")
		},
		err: func(t *testing.T, w *world, err error) {
			if err == nil || !strings.Contains(err.Error(), "KeyPairVerificationFailed") {
				t.Errorf("%v, want the issuer's error", err)
			}
		},
		last: StepSecretSwitched,
		check: func(t *testing.T, w *world, rep *Report) {
			if len(w.cluster.issued) != 0 {
				t.Errorf("re-issued %v before the issuer was Ready", w.cluster.issued)
			}
		},
	}} {
		t.Run(c.name, func(t *testing.T) {
			w := newWorld(t)
			w.city.autoMerge, w.server.autoReload = true, true
			rep, s, err := w.run(context.Background(), c.start, func(o *Options) {
				o.Yes = true
				c.setup(w, o)
			})
			c.err(t, w, err)
			if steps := stepsByTime(s); len(steps) == 0 || steps[len(steps)-1] != c.last {
				t.Errorf("recorded %v, want up to %s", steps, c.last)
			}
			if rep == nil || rep.Waiting != "" {
				t.Errorf("report %+v", rep)
			}
			if c.check != nil {
				c.check(t, w, rep)
			}
		})
	}
}

// unswitched: the scaffold's CA files and the issuer's Secret still hold
// the old CA, and no pod's certificate was issued again.
func unswitched(t *testing.T, w *world) {
	t.Helper()
	s, _ := Load(w.p)
	if w.caFP(CurrentFiles(w.p)) != s.Old.SHA1 || w.caFP(NextFiles(w.p)) != s.New.SHA1 || exists(OldFiles(w.p).Cert) {
		t.Errorf("the scaffold's CA files moved: current %s next %s", w.caFP(CurrentFiles(w.p)), w.caFP(NextFiles(w.p)))
	}
	if w.cluster.applied != 0 || len(w.cluster.issued) != 0 || s.done(StepFilesSwapped) {
		t.Errorf("the cluster changed: applied %d issued %v", w.cluster.applied, w.cluster.issued)
	}
}

// TestRunRollFixedOncePodsMoved: --roll may change until phase 3 moved a
// pod; then it is refused and nothing runs.
func TestRunRollFixedOncePodsMoved(t *testing.T) {
	w := newWorld(t)
	w.city.autoMerge, w.server.autoReload = true, true
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, s, err := w.run(ctx, StartOptions{}, func(o *Options) {
		o.Progress = func(msg string) {
			if strings.Contains(msg, ": agent certificate re-issued") {
				cancel()
			}
		}
	})
	if !errors.Is(err, context.Canceled) || len(s.Pods) == 0 {
		t.Fatalf("interrupted in phase 3: %v, pods %v", err, s.Pods)
	}
	before := w.sideEffects().String()
	_, after, err := w.run(context.Background(), StartOptions{Roll: RollRestart}, nil)
	var ie *InputError
	if !errors.As(err, &ie) || ie.Path != Path(w.p.Dir) || !strings.Contains(ie.Hint, "--roll in-place") {
		t.Fatalf("--roll restart after pods moved in place: %v", err)
	}
	if after.Roll != RollInPlace || len(after.Steps) != len(s.Steps) || w.sideEffects().String() != before {
		t.Errorf("the refused run changed something: roll %s, %d steps (was %d), %s", after.Roll, len(after.Steps), len(s.Steps), w.sideEffects())
	}
	// Before phase 3, --roll changes the recorded one.
	v := newWorld(t)
	if _, s, err := v.run(context.Background(), StartOptions{}, nil); err != nil || s.Roll != RollInPlace {
		t.Fatalf("first run: %v", err)
	}
	if _, s, err := v.run(context.Background(), StartOptions{Roll: RollRestart}, nil); err != nil || s.Roll != RollRestart {
		t.Errorf("--roll restart in phase 2: %v, roll %s", err, s.Roll)
	}
}

// TestRunRestartInterruptedWhileReady: a run interrupted after it deleted
// a pod, while it waits for the pod to be Ready, is resumed without
// deleting that pod again (the deletion time is recorded first, and a pod
// created after it is the successor).
func TestRunRestartInterruptedWhileReady(t *testing.T) {
	w := newWorld(t)
	w.city.autoMerge, w.server.autoReload = true, true
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w.cluster.afterDelete = func(string) { cancel() }
	_, s, err := w.run(ctx, StartOptions{Roll: RollRestart}, func(o *Options) { o.Yes = true })
	pod := "spire-envoy-integration-2"
	if !errors.Is(err, context.Canceled) || s.done(StepPods) || s.Pods[pod].Restarted.IsZero() || !s.Pods[pod].Attested.IsZero() {
		t.Fatalf("interrupted while %s restarts: %v, %+v", pod, err, s.Pods[pod])
	}
	w.cluster.afterDelete = nil
	_, s, err = w.run(context.Background(), StartOptions{}, func(o *Options) { o.Yes = true })
	if err != nil || s.Done.IsZero() {
		t.Fatalf("resumed: %v", err)
	}
	for _, p := range w.p.PodNames() {
		if w.cluster.restarts[p] != 1 {
			t.Errorf("%s restarted %d times", p, w.cluster.restarts[p])
		}
	}
}

// TestRunWait: with Wait, Run polls instead of stopping: it goes on when
// the platform merges, and an interrupt while it waits says what it waited
// for, with every finished step recorded.
func TestRunWait(t *testing.T) {
	t.Run("polls until merged", func(t *testing.T) {
		w := newWorld(t)
		w.server.autoReload = true
		// The platform merges what is open at every third look.
		w.city.onInBase = func(n int) error {
			if n%3 != 0 {
				return nil
			}
			for _, b := range w.city.openBranches() {
				w.city.merge(b)
			}
			return nil
		}
		var waits int
		_, s, err := w.run(context.Background(), StartOptions{}, func(o *Options) {
			o.Wait, o.Poll, o.Yes = true, 1, true
			o.Progress = func(msg string) {
				if strings.HasPrefix(msg, "waiting: the pull request(s) to be merged") {
					waits++
				}
			}
		})
		if err != nil || s.Done.IsZero() {
			t.Fatalf("Run --wait: %v (done %v)", err, s.Done)
		}
		if waits == 0 {
			t.Errorf("never waited for a merge")
		}
	})
	t.Run("GitHub failing while it waits", func(t *testing.T) {
		// Once Run waits for the merge, its next two looks meet a 502
		// (after the client's own retries), the third a merge: the wait
		// goes on through the outage. A refusal instead (401) ends the run.
		for _, c := range []struct {
			status int
			done   bool
		}{{502, true}, {401, false}} {
			w := newWorld(t)
			w.server.autoReload = true
			looks := -1 // counting starts at the first wait
			w.city.onInBase = func(n int) error {
				if looks < 0 {
					return nil
				}
				looks++
				switch {
				case looks <= 2:
					return &pr.APIError{Status: c.status, Op: "read the base branch"}
				default:
					for _, b := range w.city.openBranches() {
						w.city.merge(b)
					}
				}
				return nil
			}
			var outage int
			_, s, err := w.run(context.Background(), StartOptions{}, func(o *Options) {
				o.Wait, o.Poll, o.Yes, o.Transient = true, 1, true, pr.Retryable
				o.Progress = func(msg string) {
					if looks < 0 && strings.HasPrefix(msg, "waiting: the pull request(s) to be merged") {
						looks = 0
					}
					if strings.HasPrefix(msg, "waiting: could not check (checking again): read the base branch: GitHub answered 502") {
						outage++
					}
				}
			})
			switch {
			case c.done && (err != nil || s.Done.IsZero() || outage != 2):
				t.Errorf("%d: %v (done %v), %d outage waits, want done after 2", c.status, err, s.Done, outage)
			case !c.done && (err == nil || !strings.Contains(err.Error(), "401") || outage != 0):
				t.Errorf("%d: %v after %d outage waits, want the refusal at once", c.status, err, outage)
			}
		}
	})
	t.Run("interrupted while waiting", func(t *testing.T) {
		w := newWorld(t)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		rep, s, err := w.run(ctx, StartOptions{}, func(o *Options) {
			o.Wait, o.Poll = true, 1
			o.Progress = func(msg string) {
				if strings.HasPrefix(msg, "waiting: ") {
					cancel()
				}
			}
		})
		if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "the pull request(s) to be merged") {
			t.Errorf("interrupted: %v", err)
		}
		if rep.State != "waiting" || !strings.Contains(rep.Waiting, pull(1)) || !strings.Contains(rep.Hint, "merge") {
			t.Errorf("report: state %s waiting %q hint %q", rep.State, rep.Waiting, rep.Hint)
		}
		if got := stepsByTime(s); !slices.Equal(got, []string{StepNewCA, StepPRTrust, StepPRAliases}) {
			t.Errorf("recorded %v", got)
		}
	})
	t.Run("--server-reloaded confirms both server checks without a probe", func(t *testing.T) {
		w := newWorld(t)
		w.city.autoMerge = true // and the server is never reloaded
		rep, s, err := w.run(context.Background(), StartOptions{Roll: RollRestart}, func(o *Options) {
			o.ServerReloaded, o.Yes = true, true
		})
		if err != nil || s.Done.IsZero() {
			t.Fatalf("%v (done %v)", err, s.Done)
		}
		if w.server.probes != 0 {
			t.Errorf("probed %d times", w.server.probes)
		}
		n := 0
		for _, d := range rep.Did {
			if strings.HasSuffix(d, ": confirmed by hand (--server-reloaded)") {
				n++
			}
		}
		if n != 2 {
			t.Errorf("did %q", rep.Did)
		}
	})
}

// TestStartRefusals: the options Start refuses for the recorded rotation
// (or its absence), each a StartError with a hint, the state file untouched;
// and the same options where they apply.
func TestStartRefusals(t *testing.T) {
	for _, c := range []struct {
		name    string
		state   func(w *world) // the recorded rotation (nil: none)
		opts    StartOptions
		refused string // in the error; "" = allowed
	}{
		{name: "a new CA file left from elsewhere", state: func(w *world) {
			if err := os.WriteFile(NextFiles(w.p).Cert, []byte("x"), 0o644); err != nil {
				t.Fatal(err)
			}
		}, refused: "agent-x509pop.next.crt.pem exists but no rotation is recorded in " + FileName},
		// newWorld's project registers with entry-json.
		{name: "--emergency over a finished rotation", state: func(w *world) { w.record(t, func(s *State) { s.Done = w.clock.Now() }) },
			opts: StartOptions{Emergency: true}, refused: "--emergency: the last rotation finished on"},
		{name: "--emergency --again over a finished rotation", state: func(w *world) { w.record(t, func(s *State) { s.Done = w.clock.Now() }) },
			opts: StartOptions{Emergency: true, Again: true}},
		{name: "--emergency while a normal rotation runs", state: func(w *world) { w.record(t, nil) },
			opts: StartOptions{Emergency: true}, refused: "--emergency: a normal rotation is already running"},
		{name: "--format after pull requests", state: func(w *world) {
			w.record(t, func(s *State) {
				s.PRs = []PR{{Step: StepPRTrust, Kind: "trust-ca", Branch: "spirepod/payments/rotate/trust-ca"}}
			})
		}, opts: StartOptions{Format: project.FormatClusterStaticEntry}, refused: "differs from the rotation's format"},
		{name: "--format before any pull request", state: func(w *world) { w.record(t, nil) },
			opts: StartOptions{Format: project.FormatClusterStaticEntry}},
	} {
		t.Run(c.name, func(t *testing.T) {
			w := newWorld(t)
			c.state(w)
			before, _ := os.ReadFile(Path(w.p.Dir))
			_, _, err := Start(w.p, c.opts, w.clock.Now())
			after, _ := os.ReadFile(Path(w.p.Dir))
			if !bytes.Equal(before, after) {
				t.Errorf("Start changed %s", FileName)
			}
			var se *StartError
			switch {
			case c.refused == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case c.refused == "":
			case !errors.As(err, &se) || !strings.Contains(err.Error(), c.refused) || se.Hint == "":
				t.Fatalf("%v, want a StartError with a hint saying %q", err, c.refused)
			}
		})
	}
}

// record saves a started rotation, edited by edit.
func (w *world) record(t *testing.T, edit func(s *State)) {
	t.Helper()
	s, fresh, err := Start(w.p, StartOptions{}, w.clock.Now())
	if err != nil || !fresh {
		t.Fatalf("start: fresh %v, %v", fresh, err)
	}
	if edit != nil {
		edit(s)
	}
	if err := s.Save(); err != nil {
		t.Fatal(err)
	}
}

// TestRunServerRestartsDuringWait: the platform reloads the trust list by
// restarting the SPIRE server, and probes land in the gap. With --wait
// that is a wait, and the run goes on once the restarted server trusts the
// new CA: after an answer (refused) for as long as it takes, and before
// any answer (the first probe after the merges lands in the restart)
// within ReloadGrace. Before, the gap failed the run with an
// UnreachableError; without --wait a server never met still does ("the
// server unreachable is a failure, not a wait").
func TestRunServerRestartsDuringWait(t *testing.T) {
	for _, c := range []struct {
		name string
		// down, back: the probes at which the server goes down and comes
		// back with the merged trust list; the probe after back is the
		// next step's, which ends the run.
		down, back int
		wait       []string // what each wait on the gap says
	}{
		{"after a refusal", 2, 4, []string{"to answer again (it answered earlier in this run"}},
		{"before any answer", 1, 3, []string{"to answer (not yet, for ", "giving up after 2m0s"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			w := newWorld(t)
			w.city.autoMerge = true
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			w.server.before = func(n int) {
				w.server.mu.Lock()
				defer w.server.mu.Unlock()
				switch n {
				case c.down:
					w.server.down = true
				case c.back:
					w.server.down = false
					w.city.mu.Lock()
					w.server.trusted, _ = pki.ParseCertificates(w.city.base[w.p.City.TrustList.Path])
					w.city.mu.Unlock()
				case c.back + 1: // the next step probes the old CA: enough
					cancel()
				}
			}
			var progress []string
			_, s, err := w.run(ctx, StartOptions{}, func(o *Options) {
				o.Yes, o.Wait, o.Poll = true, true, time.Millisecond
				o.Progress = func(m string) { progress = append(progress, m) }
			})
			if !errors.Is(err, context.Canceled) || !s.done(StepServerTrustsNew) {
				t.Fatalf("%v, recorded %v: want %s done once the server is back, then a wait until canceled", err, stepsByTime(s), StepServerTrustsNew)
			}
			gaps := 0
			for _, m := range progress {
				if containsAll(m, c.wait...) {
					gaps++
				}
			}
			if gaps != 2 || w.server.calls != c.back+1 {
				t.Errorf("%d waits on the gap in %d probes, want 2 in %d; progress:\n%s", gaps, w.server.calls, c.back+1, strings.Join(progress, "\n"))
			}
		})
	}
}

func containsAll(s string, subs ...string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}

// TestReloadWatch: without a grace, unreachable before any answer is a
// failure; after a refusal or an attestation it is a restart; a grace
// extends the restart to a server not met yet, for that long from its
// first silence; other errors pass through.
func TestReloadWatch(t *testing.T) {
	down := &UnreachableError{Server: "spire:8081", Err: errors.New("connection refused")}
	refused := &RefusedError{Err: errors.New("unknown authority")}
	other := errors.New("the server's answer holds no SVID")
	for _, c := range []struct {
		name    string
		grace   time.Duration
		answers []error
		at      []time.Duration // when each answer comes (default: all at 0)
		want    []string        // the error type of each answer
	}{
		{"never answered", 0, []error{down, down}, nil, []string{"unreachable", "unreachable"}},
		{"refused, then down", 0, []error{refused, down, nil, down}, nil, []string{"refused", "restarting", "", "restarting"}},
		{"attested, then down", 0, []error{nil, down}, nil, []string{"", "restarting"}},
		{"a bad answer is not an answer", 0, []error{other, down}, nil, []string{"other", "unreachable"}},
		{"not met yet, within the grace", 2 * time.Minute, []error{down, down, down},
			[]time.Duration{0, time.Minute, 2*time.Minute - time.Second}, []string{"not yet", "not yet", "not yet"}},
		{"not met yet, past the grace", 2 * time.Minute, []error{down, down},
			[]time.Duration{0, 2 * time.Minute}, []string{"not yet", "unreachable"}},
		{"met after a silence, then down for good", 2 * time.Minute, []error{down, refused, down},
			[]time.Duration{0, time.Minute, time.Hour}, []string{"not yet", "refused", "restarting"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			i := 0
			t0 := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
			now := t0
			rw := &ReloadWatch{Grace: c.grace, Now: func() time.Time { return now }, Probe: func(context.Context, []*x509.Certificate, crypto.Signer) (string, error) {
				err := c.answers[i]
				i++
				if err != nil {
					return "", err
				}
				return "spiffe://td/spire/agent/x509pop/x", nil
			}}
			for n, want := range c.want {
				if c.at != nil {
					now = t0.Add(c.at[n])
				}
				id, err := rw.Attest(t.Context(), nil, nil)
				var un *UnreachableError
				var re *RestartingError
				var rf *RefusedError
				got := "other"
				switch {
				case err == nil && id != "":
					got = ""
				case errors.As(err, &re):
					got = "restarting"
					if !re.Answered {
						got = "not yet"
					}
					if errors.As(err, &un) || re.Unreachable != down || !strings.Contains(err.Error(), "spire:8081") {
						t.Errorf("answer %d: %v does not name the server, or matches *UnreachableError", n, err)
					}
				case errors.As(err, &un):
					got = "unreachable"
				case errors.As(err, &rf):
					got = "refused"
				}
				if got != want {
					t.Errorf("answer %d: %v (%s), want %s", n, err, got, want)
				}
			}
		})
	}
}
