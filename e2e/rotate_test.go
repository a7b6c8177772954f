package e2e_test

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/spirepod/spirepod/internal/pki"
	"github.com/spirepod/spirepod/internal/rotate"
	"github.com/spirepod/spirepod/internal/testbed"
)

// TestRotateZeroFailedFetches is issue 16's proof: two pods of one team
// serve SVIDs; a loop fetches each pod's SVID through its agent every
// 500 ms for the whole rotation; `spirepod pki rotate` runs every phase,
// the test merging its pull requests in the fake GitHub and, as the
// platform team, loading each merge into the real SPIRE server (entries
// reconciled; the trust list reloaded with SIGUSR1 through
// plugin_data_file). Pass: not one failed fetch; every agent ends attested
// with the new CA's fingerprint selector; the old CA is off the server's
// trust list, its aliases are gone, and a real agent with a leaf of the
// old CA no longer attests.
func TestRotateZeroFailedFetches(t *testing.T) {
	t.Parallel()
	r := newRotBed(t, 2)
	oldCA := readCert(t, r.p.Path(r.p.Paths.CACert))
	judgeKey := r.keepOldKey()
	r.fetch = r.startFetchLoop()
	loopStart := time.Now()
	var tm timings

	// Phase 1 and the pull requests of phase 2.
	rep, d := r.rotate(0, "--format", "entry-json")
	tm.add("cli 1+2a", d)
	if rep.Phase != 2 || rep.State != "waiting" || !strings.Contains(rep.Waiting, "merged") {
		t.Fatalf("after the first run: phase %d %s waiting %q", rep.Phase, rep.State, rep.Waiting)
	}
	newFP := rep.New.SHA1
	r.checkNewKeyPrivate(newFP)

	// The platform merges both and loads them: the entries, then the trust list.
	t0 := time.Now()
	r.mergeRotationPRs(rep, rotate.StepPRTrust, rotate.StepPRAliases)
	files := r.mainFiles()
	if fps := fingerprints(t, []byte(files[r.p.City.TrustList.Path])); len(fps) != 2 || !fps[newFP] || !fps[rep.Old.SHA1] {
		t.Fatalf("merged trust list holds %v, want the old and the new CA", fps)
	}
	cr, up, del := r.srv.syncEntries(files[r.entriesPath()], r.p.Namespace)
	if cr != r.p.Replicas || up != 0 || del != 0 {
		t.Fatalf("phase 2 entries: %d created %d updated %d deleted, want %d new aliases only", cr, up, del, r.p.Replicas)
	}
	reload := r.srv.setTrust(files[r.p.City.TrustList.Path])
	tm.add("platform 2", time.Since(t0))
	t.Logf("SIGUSR1 reload of the trust list (plugin_data_file): %v", reload.Round(time.Millisecond))

	// The rest of phase 2 (the probe), phase 3 in place, the first pull
	// request of phase 4.
	rep, d = r.rotate(0)
	tm.add("cli 2b+3+4a", d)
	if rep.Phase != 4 || rep.State != "waiting" {
		t.Fatalf("after phase 3: phase %d %s (%q)", rep.Phase, rep.State, rep.Waiting)
	}
	for _, pod := range r.p.PodNames() {
		st := rep.Pods[pod]
		if st == nil || st.Attested.IsZero() || !strings.Contains(st.How, "/x509pop/"+st.Leaf) {
			t.Fatalf("%s: not seen attesting with its new leaf: %+v", pod, st)
		}
	}
	r.checkIssuerCA(newFP)

	// Retire: the aliases first (an update and a deletion per pod), then the CA.
	t0 = time.Now()
	r.mergeRotationPRs(rep, rotate.StepPRRetireAliases)
	if cr, up, del := r.srv.syncEntries(r.mainFiles()[r.entriesPath()], r.p.Namespace); cr != 0 || up != r.p.Replicas || del != r.p.Replicas {
		t.Fatalf("retire entries: %d created %d updated %d deleted, want %d updated and deleted", cr, up, del, r.p.Replicas)
	}
	tm.add("platform 4a", time.Since(t0))
	rep, d = r.rotate(0)
	tm.add("cli 4b", d)
	if !strings.Contains(rep.Waiting, "merged") {
		t.Fatalf("want a wait for the trust-list pull request, got %q", rep.Waiting)
	}
	t0 = time.Now()
	r.mergeRotationPRs(rep, rotate.StepPRRetireTrust)
	r.srv.setTrust(r.mainFiles()[r.p.City.TrustList.Path])
	tm.add("platform 4b", time.Since(t0))
	rep, d = r.rotate(0, "--yes")
	tm.add("cli 4c", d)
	if rep.State != "done" {
		t.Fatalf("after the last run: %s (%q)", rep.State, rep.Waiting)
	}

	r.fetch.waitRecovered(t, r.p.PodNames(), 30*time.Second)
	recs := r.fetch.Stop()
	r.checkNoFailures(recs, loopStart)
	r.checkEnd(oldCA, judgeKey, newFP)
	t.Logf("ROTATE TIMINGS (normal, in place, %d pods, agent TTL %s): phase durations from the state file: %s | runs and platform actions: %s",
		r.p.Replicas, agentTTL, phaseDurations(rep), tm.String())
}

// TestRotateResume: the CLI is killed (SIGKILL, by its PID) in phase 3,
// after the issuer's Secret switched and while it waits for the agents;
// the next run resumes there (the Secret is not applied again, nothing is
// done twice) and the rotation completes, still with no failed fetch.
func TestRotateResume(t *testing.T) {
	t.Parallel()
	r := newRotBed(t, 2)
	oldCA := readCert(t, r.p.Path(r.p.Paths.CACert))
	judgeKey := r.keepOldKey()
	r.fetch = r.startFetchLoop()
	loopStart := time.Now()

	rep, _ := r.rotate(0)
	newFP := rep.New.SHA1
	r.mergeRotationPRs(rep, rotate.StepPRTrust, rotate.StepPRAliases)
	files := r.mainFiles()
	r.srv.syncEntries(files[r.entriesPath()], r.p.Namespace)
	r.srv.setTrust(files[r.p.City.TrustList.Path])

	// The server check with an agent leaf of the new CA of our own
	// (--check-with), as a team that cannot let spirepod mint one would.
	next := rotate.NextFiles(r.p)
	nextKey, err := pki.ParsePrivateKey([]byte(mustRead(t, next.Key)))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(r.root, "check"), 0o700); err != nil {
		t.Fatal(err)
	}
	leaf, err := pki.Issue(r.ctx, pki.IssueOptions{CA: readCert(t, next.Cert).Cert, CAKey: nextKey, CN: "check." + r.p.Namespace, Name: "check",
		OutDir: filepath.Join(r.root, "check"), Rand: rand.Reader, Now: time.Now})
	if err != nil {
		t.Fatal(err)
	}

	// Phase 3 in the background; killed once the state file says the
	// Secret switched and a pod's certificate was re-issued.
	args := append([]string{"pki", "rotate", "--server", fmt.Sprintf("127.0.0.1:%d", r.srv.port), "--timeout", "5m",
		"--check-with", leaf.CertPath, "--check-key", leaf.KeyPath}, r.kube...)
	cmd := exec.CommandContext(r.ctx, r.cli, args...)
	cmd.Dir = r.dir
	cmd.Env = append(cliBaseEnv(), "HOME="+r.home, "NO_COLOR=1", "SPIREPOD_GITHUB_API_URL="+r.gh.URL, "GH_TOKEN="+ghToken)
	logf, err := os.Create(filepath.Join(r.root, "killed-run.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	inPhase3 := waitFor(t, 3*time.Minute, func() bool {
		s := stateFile(t, r.dir)
		return strings.Contains(s, "secret-switched:") && strings.Contains(s, "issued:") && !strings.Contains(s, "\n  pods:")
	})
	if !inPhase3 {
		_ = cmd.Process.Kill()
		<-exited
		t.Fatalf("the run never reached phase 3:\n%s\n%s", stateFile(t, r.dir), mustRead(t, logf.Name()))
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-exited
	logf.Close()
	killedAt := stateFile(t, r.dir)
	if out := mustRead(t, logf.Name()); !strings.Contains(out, "a leaf of the new CA attested as spiffe://"+r.p.TrustDomain+"/spire/agent/x509pop/"+pki.SHA1Fingerprint(leaf.Cert)) {
		t.Errorf("the server check did not use the --check-with leaf:\n%s", out)
	}
	t.Logf("killed in phase 3; state file then:\n%s", killedAt)
	if strings.Contains(killedAt, "\n  pods:") {
		t.Fatal("the run finished phase 3 before it was killed: nothing left to resume")
	}

	rep, d := r.rotate(0)
	for _, did := range rep.Did {
		if strings.HasPrefix(did, "switch the issuer's CA Secret") || strings.HasPrefix(did, "move the new CA into the scaffold") {
			t.Errorf("the resumed run repeated a finished step: %s", did)
		}
	}
	if rep.Phase != 4 || !strings.HasPrefix(rep.Did[0], "move every agent to the new CA in place") {
		t.Fatalf("resumed run: phase %d, did %v", rep.Phase, rep.Did)
	}
	t.Logf("resumed phase 3 in %v", d.Round(time.Millisecond))

	r.mergeRotationPRs(rep, rotate.StepPRRetireAliases)
	r.srv.syncEntries(r.mainFiles()[r.entriesPath()], r.p.Namespace)
	rep, _ = r.rotate(0)
	r.mergeRotationPRs(rep, rotate.StepPRRetireTrust)
	r.srv.setTrust(r.mainFiles()[r.p.City.TrustList.Path])
	if rep, _ = r.rotate(0, "--yes"); rep.State != "done" {
		t.Fatalf("not done: %+v", rep)
	}
	r.fetch.waitRecovered(t, r.p.PodNames(), 30*time.Second)
	r.checkNoFailures(r.fetch.Stop(), loopStart)
	r.checkEnd(oldCA, judgeKey, newFP)
	t.Logf("ROTATE TIMINGS (resumed): %s", phaseDurations(rep))
}

// TestRotateEmergency: the old key is compromised. --emergency names every
// pod that loses its identity; the issuer switches at once; the pull
// requests add the new CA and remove the old one and its aliases together;
// the pods restart one at a time (`--wait`: each until `spirepod verify`
// sees its SVID). Fetches fail only for the pods named, only after the
// server loaded the alias change, and every pod serves again at the end;
// the old CA is gone and its leaves do not attest.
func TestRotateEmergency(t *testing.T) {
	t.Parallel()
	r := newRotBed(t, 2)
	oldCA := readCert(t, r.p.Path(r.p.Paths.CACert))
	judgeKey := r.keepOldKey()
	r.fetch = r.startFetchLoop()
	loopStart := time.Now()

	rep, d1 := r.rotate(0, "--emergency", "--format", "entry-json")
	if rep.Phase != 2 || !strings.Contains(rep.Waiting, "merged") {
		t.Fatalf("emergency first run: phase %d waiting %q did %v", rep.Phase, rep.Waiting, rep.Did)
	}
	if got := strings.Join(rep.LoseIdentity, ","); got != strings.Join(r.p.PodNames(), ",") {
		t.Fatalf("loseIdentity %q, want every pod %v", got, r.p.PodNames())
	}
	newFP := rep.New.SHA1
	r.checkIssuerCA(newFP) // switched before any merge

	// The platform: the alias change first (the old aliases go), then the trust list.
	r.mergeRotationPRs(rep, rotate.StepPRAliases)
	aliasesLoaded := time.Now()
	if cr, up, del := r.srv.syncEntries(r.mainFiles()[r.entriesPath()], r.p.Namespace); up != r.p.Replicas || del != 0 || cr != 0 {
		t.Fatalf("emergency entries: %d created %d updated %d deleted, want %d updated", cr, up, del, r.p.Replicas)
	}
	r.mergeRotationPRs(rep, rotate.StepPRTrust)
	files := r.mainFiles()
	if fps := fingerprints(t, []byte(files[r.p.City.TrustList.Path])); len(fps) != 1 || !fps[newFP] {
		t.Fatalf("emergency trust list holds %v, want only the new CA", fps)
	}
	r.srv.setTrust(files[r.p.City.TrustList.Path])

	stop := r.watchPodRestarts()
	rep, d2 := r.rotate(0, "--wait", "--poll", "2s", "--yes")
	restarts := stop()
	if rep.State != "done" {
		t.Fatalf("emergency not done: %+v", rep)
	}
	for _, pod := range r.p.PodNames() {
		if restarts[pod] != 1 || !strings.Contains(rep.Pods[pod].How, "spirepod verify") {
			t.Errorf("%s: restarted %d times (want 1), seen by %q", pod, restarts[pod], rep.Pods[pod].How)
		}
	}
	r.fetch.waitRecovered(t, r.p.PodNames(), 30*time.Second)
	recs := r.fetch.Stop()
	// No failure before the server loaded the alias change; afterwards only
	// the named pods; each pod's last fetch succeeds.
	lost := map[string][2]time.Time{}
	last := map[string]fetchRec{}
	for _, rec := range recs {
		last[rec.Pod] = rec
		if rec.OK {
			continue
		}
		if rec.At.Before(aliasesLoaded) {
			t.Errorf("%s failed at %v, before the alias change was loaded: %s", rec.Pod, rec.At.Sub(loopStart).Round(time.Millisecond), rec.Info)
		}
		if !contains(rep.LoseIdentity, rec.Pod) {
			t.Errorf("%s failed but was not named: %s", rec.Pod, rec.Info)
		}
		w := lost[rec.Pod]
		if w[0].IsZero() {
			w[0] = rec.At
		}
		w[1] = rec.At
		lost[rec.Pod] = w
	}
	for pod, rec := range last {
		if !rec.OK {
			t.Errorf("%s's last fetch failed: %s", pod, rec.Info)
		}
	}
	var windows []string
	for _, pod := range r.p.PodNames() {
		w := lost[pod]
		if w[0].IsZero() {
			windows = append(windows, pod+": no failed fetch")
			continue
		}
		windows = append(windows, fmt.Sprintf("%s: failed from +%v to +%v after the alias change loaded", pod, w[0].Sub(aliasesLoaded).Round(time.Millisecond), w[1].Sub(aliasesLoaded).Round(time.Millisecond)))
	}
	r.checkEnd(oldCA, judgeKey, newFP)
	t.Logf("ROTATE TIMINGS (emergency, restart): first run %v, second run (--wait) %v; %s | identity lost: %s",
		d1.Round(time.Millisecond), d2.Round(time.Millisecond), phaseDurations(rep), strings.Join(windows, "; "))
}

// TestRotateServerReload measures how the test bed's SPIRE 1.13.3 reloads
// the x509pop trust list, with the rotation's own probe as the client:
// SIGUSR1 reconfigures a plugin configured through plugin_data_file when
// the file's text changes (a new CA trusted at once, an old one dropped);
// rewriting the PEM file it names in place is not picked up ("config is
// unchanged"); a restart always reloads.
func TestRotateServerReload(t *testing.T) {
	t.Parallel()
	b := testbed.Require(t, testbed.Bins.SpireSet)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := &chain{t: t, ctx: ctx, bins: b, home: t.TempDir()}
	root, err := os.MkdirTemp("", "spreload-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	c.root = root
	upCert, upKey := c.upstreamCA()
	td := "reload.test"
	s := startRotServer(t, c, filepath.Join(root, "server"), td, upCert, upKey)
	caA, keyA := newTestCA(t, "A")
	caB, keyB := newTestCA(t, "B")
	s.setTrust(string(pki.EncodeCertificate(caA)))
	bundle, err := pki.ParseCertificates([]byte(mustRead(t, upCert)))
	if err != nil {
		t.Fatal(err)
	}
	po := rotate.ProbeOptions{Server: fmt.Sprintf("127.0.0.1:%d", s.port), TrustDomain: td, Bundle: bundle}
	attests := func(ca *x509CA) (bool, string) {
		chain, key, err := rotate.ProbeLeaf(ca.cert, ca.key, "reload", time.Now(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		id, err := rotate.Probe(ctx, po, chain, key)
		var refused *rotate.RefusedError
		switch {
		case err == nil:
			return true, id
		case asRefused(err, &refused):
			return false, refused.Err.Error()
		}
		t.Fatalf("probe: %v", err)
		return false, ""
	}
	a, b2 := &x509CA{caA, keyA}, &x509CA{caB, keyB}
	if ok, why := attests(a); !ok {
		t.Fatalf("A is trusted but its leaf is refused: %s", why)
	}
	if ok, _ := attests(b2); ok {
		t.Fatal("B is not trusted but its leaf attests")
	}

	// The PEM file rewritten in place (A and B), SIGUSR1: the plugin data
	// (the path) is unchanged, so nothing reloads.
	if err := os.WriteFile(s.trustFile, append(pki.EncodeCertificate(caA), pki.EncodeCertificate(caB)...), 0o644); err != nil {
		t.Fatal(err)
	}
	before := strings.Count(s.log(), "Plugin not reconfigured since the config is unchanged")
	if err := syscall.Kill(s.proc.Cmd.Process.Pid, syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	if !waitFor(t, 30*time.Second, func() bool {
		return strings.Count(s.log(), "Plugin not reconfigured since the config is unchanged") > before
	}) {
		t.Fatalf("no reconfigure answer to SIGUSR1:\n%s", s.proc.Tail(2000))
	}
	if ok, _ := attests(b2); ok {
		t.Fatal("B attests after an in-place rewrite and SIGUSR1: the doc says it should not")
	}
	t.Log("in-place rewrite + SIGUSR1: \"Plugin not reconfigured since the config is unchanged\"; B still refused")

	// A new file named in the plugin data file, SIGUSR1: reloaded.
	took := s.setTrust(string(pki.EncodeCertificate(caA)) + string(pki.EncodeCertificate(caB)))
	if ok, why := attests(b2); !ok {
		t.Fatalf("B refused after plugin_data_file changed and SIGUSR1: %s", why)
	}
	t.Logf("plugin_data_file changed + SIGUSR1: reconfigured in %v; B attests", took.Round(time.Millisecond))
	took = s.setTrust(string(pki.EncodeCertificate(caB)))
	if ok, _ := attests(a); ok {
		t.Fatal("A attests after it was removed and the server reconfigured")
	}
	t.Logf("A removed + SIGUSR1: reconfigured in %v; A refused", took.Round(time.Millisecond))

	// A restart reloads whatever the file holds.
	if err := os.WriteFile(s.trustFile, append(pki.EncodeCertificate(caB), pki.EncodeCertificate(caA)...), 0o644); err != nil {
		t.Fatal(err)
	}
	took = s.restart()
	if ok, why := attests(a); !ok {
		t.Fatalf("A refused after a restart with A in the file: %s", why)
	}
	t.Logf("restart: healthy again in %v; A attests (the server was down meanwhile; agents serve cached SVIDs)", took.Round(time.Millisecond))
}

// --- checks shared by the rotation tests ---

// keepOldKey copies the old CA's key where only the test (the judge) reads
// it: pki rotate deletes the scaffold's copy in phase 4.
func (r *rotBed) keepOldKey() string {
	dst := filepath.Join(r.root, "judge", "old-ca.key.pem")
	writeFile(r.t, dst, mustRead(r.t, r.p.Path(r.p.Paths.CAKey)), 0o600)
	return dst
}

// checkNewKeyPrivate: the new key is 0600 and in no file of the city.
func (r *rotBed) checkNewKeyPrivate(newFP string) {
	t := r.t
	next := rotate.NextFiles(r.p)
	st, err := os.Stat(next.Key)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("new CA key %s: %v %v", next.Key, st, err)
	}
	if c := readCert(t, next.Cert); pki.SHA1Fingerprint(c.Cert) != newFP {
		t.Fatalf("%s is not the new CA", next.Cert)
	}
	key := mustRead(t, next.Key)
	for _, ref := range []string{"main"} {
		files, err := r.gh.Files(cityRepo, ref)
		if err != nil {
			t.Fatal(err)
		}
		for p, c := range files {
			if pki.ContainsPrivateKey([]byte(c)) || strings.Contains(c, strings.TrimSpace(key)) {
				t.Fatalf("%s:%s holds a private key", ref, p)
			}
		}
	}
	for _, pl := range r.gh.Pulls(cityRepo) {
		files, err := r.gh.Files(cityRepo, pl.HeadRef)
		if err != nil {
			continue
		}
		for p, c := range files {
			if pki.ContainsPrivateKey([]byte(c)) {
				t.Fatalf("pull request #%d: %s holds a private key", pl.Number, p)
			}
		}
	}
}

// checkIssuerCA: the issuer's CA Secret holds the new CA and the issuer is Ready.
func (r *rotBed) checkIssuerCA(newFP string) {
	r.t.Helper()
	c := readCert(r.t, r.p.Path(r.p.Paths.CACert))
	if pki.SHA1Fingerprint(c.Cert) != newFP {
		r.t.Fatalf("the scaffold's CA is %s, want the new %s", pki.SHA1Fingerprint(c.Cert), newFP)
	}
	r.checkIssuerReady(r.p, c)
}

// checkNoFailures: every pod was fetched from every 500 ms, and every
// failed fetch falls in a moved agent's window: within excusedWindow after
// that pod's agent re-attested under a new agent ID (its new leaf). SPIRE
// causes that window, not the rotation (README "Rotating the team CA");
// a failure anywhere else, or an SVID of another ID at any time, fails the
// test. Each move's window is logged as measured (FAILED-FETCH WINDOW).
func (r *rotBed) checkNoFailures(recs []fetchRec, since time.Time) {
	t := r.t
	bound := r.iv.excusedWindow()
	moves := r.agentMoves()
	per := map[string]int{}
	var failed []string
	excused := 0
	for _, rec := range recs {
		per[rec.Pod]++
		if rec.OK {
			continue
		}
		line := fmt.Sprintf("%s at +%v: %s", rec.Pod, rec.At.Sub(since).Round(time.Millisecond), rec.Info)
		if m := moveOf(moves, rec, bound); m != nil {
			m.failed = append(m.failed, rec.At)
			excused++
			continue
		}
		failed = append(failed, line)
	}
	span := time.Since(since).Round(time.Second)
	for _, pod := range r.p.PodNames() {
		if per[pod] < int(span/time.Second) {
			t.Errorf("%s: only %d fetches in %v: the loop did not run every 500 ms", pod, per[pod], span)
		}
	}
	for _, m := range moves {
		t.Log(m.report(recs, since, bound, r.iv))
	}
	if len(failed) > 0 {
		for _, pod := range r.p.PodNames() {
			for _, path := range r.agentLogs[pod] {
				t.Logf("%s agent log (%s), events:\n  %s", pod, path, strings.Join(agentEvents(mustRead(t, path)), "\n  "))
			}
		}
		t.Logf("loop started %s", since.Format(time.RFC3339Nano))
		t.Fatalf("%d of %d fetches failed outside the %v after an agent moved to a new agent ID (%s):\n  %s",
			len(failed), len(recs), bound, r.iv, strings.Join(failed, "\n  "))
	}
	t.Logf("%d fetches over %v (%v per pod): %d failed, all within %v after their agent moved (%d moves; %s)",
		len(recs), span, per, excused, bound, len(moves), r.iv)
}

// agentMove is an agent re-attesting under a new agent ID: a new leaf
// (the default agent_path_template names the agent by the leaf's SHA-1).
type agentMove struct {
	Pod      string
	At       time.Time // the agent logged "Successfully reattested node"
	From, To string
	failed   []time.Time
}

// agentIDLine is an attestation line of the agent's log with its ID.
var agentIDLine = regexp.MustCompile(`msg="(Node attestation was successful|Successfully reattested node)".*spiffe_id="?(spiffe://[^"\s]+)`)

// agentMoves reads every agent log of every pod for re-attestations that
// changed the agent ID. A new incarnation (a restart) is not a move.
func (r *rotBed) agentMoves() []*agentMove {
	var out []*agentMove
	for _, pod := range r.p.PodNames() {
		for _, path := range r.agentLogs[pod] {
			prev := ""
			for _, line := range strings.Split(mustRead(r.t, path), "\n") {
				m := agentIDLine.FindStringSubmatch(line)
				if m == nil {
					continue
				}
				at, ok := logTime(line)
				if !ok {
					r.t.Fatalf("%s: no time in %q", path, line)
				}
				if m[1] == "Successfully reattested node" && prev != "" && m[2] != prev {
					out = append(out, &agentMove{Pod: pod, At: at, From: prev, To: m[2]})
				}
				prev = m[2]
			}
		}
	}
	return out
}

// moveOf is the move whose window holds rec: its pod's agent moved at most
// bound before the fetch ended, and the agent answered as SPIRE does in
// that gap ("no identity issued": it holds no entry for the workload). A
// wrong SVID, or any other failure (the agent down, the socket gone), is
// never excused.
func moveOf(moves []*agentMove, rec fetchRec, bound time.Duration) *agentMove {
	if rec.WrongID || !strings.Contains(rec.Info, "no identity issued") {
		return nil
	}
	for _, m := range moves {
		if m.Pod == rec.Pod && !rec.At.Before(m.At) && rec.At.Sub(m.At) <= bound {
			return m
		}
	}
	return nil
}

// report is the move's measured window, one line: failed fetches, the
// first and last failure and the first success after them, in seconds
// after the re-attestation.
func (m *agentMove) report(recs []fetchRec, since time.Time, bound time.Duration, iv spireIntervals) string {
	head := fmt.Sprintf("FAILED-FETCH WINDOW %s moved at +%.1fs (%s): ", m.Pod, m.At.Sub(since).Seconds(), iv)
	if len(m.failed) == 0 {
		return head + "failed=0"
	}
	first, last := m.failed[0], m.failed[len(m.failed)-1]
	ok := "never"
	for _, rec := range recs {
		if rec.Pod == m.Pod && rec.OK && rec.At.After(last) {
			ok = fmt.Sprintf("+%.2fs", rec.At.Sub(m.At).Seconds())
			break
		}
	}
	return head + fmt.Sprintf("failed=%d first=+%.2fs last=+%.2fs ok=%s span=%.2fs bound=%v",
		len(m.failed), first.Sub(m.At).Seconds(), last.Sub(m.At).Seconds(), ok, last.Sub(first).Seconds(), bound)
}

// waitRecovered keeps the loop running until every pod's latest fetch
// succeeded after its last failure (bounded): the rotation is over only
// when every agent serves again.
func (fl *fetchLoop) waitRecovered(t *testing.T, pods []string, bound time.Duration) {
	t.Helper()
	ok := waitFor(t, bound, func() bool {
		fl.mu.Lock()
		defer fl.mu.Unlock()
		last := map[string]bool{}
		for _, rec := range fl.recs {
			last[rec.Pod] = rec.OK
		}
		for _, p := range pods {
			if !last[p] {
				return false
			}
		}
		return true
	})
	if !ok {
		t.Fatalf("not every pod serves its SVID again within %v after the rotation", bound)
	}
}

// logTime reads logrus's time="…" field.
func logTime(line string) (time.Time, bool) {
	i := strings.Index(line, `time="`)
	if i < 0 {
		return time.Time{}, false
	}
	rest := line[i+6:]
	j := strings.Index(rest, `"`)
	if j < 0 {
		return time.Time{}, false
	}
	t, err := time.Parse(time.RFC3339Nano, rest[:j])
	return t, err == nil
}

// checkEnd: every agent attested with a leaf of the new CA and carries the
// new CA's fingerprint selector (not the old one's); the server's trust
// list holds only the new CA; each pod's alias ID has one entry, pinned to
// the new CA; a real agent with a leaf of the old CA does not attest; the
// old key is deleted; status says the rotation is done.
func (r *rotBed) checkEnd(oldCA *x509Cert, oldKeyFile, newFP string) {
	t := r.t
	oldFP := pki.SHA1Fingerprint(oldCA.Cert)
	for _, pod := range r.p.PodNames() {
		leaf := readCert(t, filepath.Join(r.pods[pod].certDir, "agent.crt.pem"))
		agentID := fmt.Sprintf("spiffe://%s/spire/agent/x509pop/%s", r.p.TrustDomain, pki.SHA1Fingerprint(leaf.Cert))
		out, err := r.srv.Run("agent", "show", "-spiffeID", agentID)
		if err != nil {
			t.Fatalf("%s: agent %s: %v\n%s", pod, agentID, err, out)
		}
		sel := selectorLines(out)
		if !contains(sel, pki.SelectorPrefix+newFP) || contains(sel, pki.SelectorPrefix+oldFP) {
			t.Errorf("%s: agent %s selectors %v, want %s%s only", pod, agentID, sel, pki.SelectorPrefix, newFP)
		}
		es, err := r.srv.Run("entry", "show", "-spiffeID", r.p.NodeAliasID(pod))
		if err != nil || strings.Count(es, "Entry ID") != 1 || !strings.Contains(es, newFP) || strings.Contains(es, oldFP) {
			t.Errorf("%s: alias %s entries (want one, pinned to the new CA):\n%s", pod, r.p.NodeAliasID(pod), es)
		}
	}
	if fps := fingerprints(t, []byte(mustRead(t, r.srv.trustFile))); len(fps) != 1 || !fps[newFP] {
		t.Errorf("the server's trust list holds %v, want only the new CA", fps)
	}
	// A real spire-agent with a leaf of the old CA (and pod 0's CN) is refused.
	key, err := pki.ParsePrivateKey([]byte(mustRead(t, oldKeyFile)))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(r.root, "judge", "old-leaf"), 0o700); err != nil {
		t.Fatal(err)
	}
	res, err := pki.Issue(r.ctx, pki.IssueOptions{CA: oldCA.Cert, CAKey: key, CN: r.p.AgentCN(r.p.PodName(0)), Name: "agent",
		OutDir: filepath.Join(r.root, "judge", "old-leaf"), Rand: rand.Reader, Now: time.Now})
	if err != nil {
		t.Fatal(err)
	}
	jroot := filepath.Join(r.root, "judge", "agent")
	conf := mapAgentConf(t, r.agentConf, jroot, r.srv.port, freePort(t))
	writeFile(t, hclString(t, conf, "certificate_path"), mustRead(t, res.CertPath), 0o644)
	writeFile(t, hclString(t, conf, "private_key_path"), mustRead(t, res.KeyPath), 0o600)
	writeFile(t, hclString(t, conf, "trust_bundle_path"), mustRead(t, r.upCert), 0o644)
	if strings.Contains(conf, "token_path") {
		writeFile(t, hclString(t, conf, "token_path"), r.saToken, 0o600)
	}
	for _, d := range []string{filepath.Dir(hclString(t, conf, "socket_path")), hclString(t, conf, "data_dir")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	confPath := r.agentValidate(conf, filepath.Join(jroot, "conf"))
	a, err := testbed.StartSpireAgent(r.ctx, r.bins, jroot, "judge-old-ca", confPath, hclString(t, conf, "socket_path"))
	if err == nil {
		a.Stop()
		t.Fatal("a spire-agent with a leaf of the old CA attested after the rotation")
	}
	if !strings.Contains(err.Error(), "unknown authority") {
		t.Errorf("the old-CA agent failed, but not for its CA: %v", err)
	}
	t.Logf("a real agent with a leaf of the old CA: %s", firstLines(lastMatching(err.Error(), "attest"), 1))

	for _, f := range []string{rotate.OldFiles(r.p).Key, rotate.OldFiles(r.p).Cert, rotate.NextFiles(r.p).Key} {
		if _, err := os.Stat(f); !os.IsNotExist(err) {
			t.Errorf("%s still exists (%v)", f, err)
		}
	}
	if c := readCert(t, r.p.Path(r.p.Paths.CACert)); pki.SHA1Fingerprint(c.Cert) != newFP {
		t.Errorf("the scaffold's CA is not the new one")
	}
	out, errOut, code := r.exec(r.dir, "status", "-o", "json")
	if !strings.Contains(out, `"name": "rotation: done"`) {
		t.Errorf("status after the rotation (exit %d): stdout %q stderr %q", code, out, errOut)
	}
	sec, err := r.cluster.Client.CoreV1().Secrets(r.p.Issuer().SecretNamespace).Get(r.ctx, r.p.Issuer().SecretName, metav1.GetOptions{})
	if err != nil || !fingerprints(t, sec.Data["tls.crt"])[newFP] {
		t.Errorf("the issuer's Secret does not hold the new CA (%v)", err)
	}
}

func stateFile(t *testing.T, dir string) string {
	b, err := os.ReadFile(filepath.Join(dir, rotate.FileName))
	if err != nil {
		return ""
	}
	return string(b)
}

func phaseDurations(rep *rotReport) string {
	var keys []string
	for k := range rep.Durations {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, k+"="+rep.Durations[k])
	}
	return strings.Join(parts, " ")
}

func lastMatching(s, sub string) string {
	lines := strings.Split(s, "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.Contains(lines[i], sub) {
			return lines[i]
		}
	}
	return s
}

func freePort(t *testing.T) int {
	p, err := testbed.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

type x509CA struct {
	cert *x509.Certificate
	key  crypto.Signer
}

// newTestCA makes a team CA in memory, as pki gen would.
func newTestCA(t *testing.T, cn string) (*x509.Certificate, crypto.Signer) {
	t.Helper()
	dir := t.TempDir()
	res, err := pki.Generate(context.Background(), pki.GenerateOptions{CertPath: filepath.Join(dir, "ca.crt.pem"), KeyPath: filepath.Join(dir, "ca.key.pem"),
		Subject: pkix.Name{CommonName: cn}, Rand: rand.Reader, Now: time.Now})
	if err != nil {
		t.Fatal(err)
	}
	key, err := pki.ParsePrivateKey([]byte(mustRead(t, res.KeyPath)))
	if err != nil {
		t.Fatal(err)
	}
	return res.Cert, key
}

func asRefused(err error, target **rotate.RefusedError) bool { return errors.As(err, target) }
