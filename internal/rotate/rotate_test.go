package rotate

import (
	"context"
	"crypto/rand"
	"crypto/x509/pkix"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spirepod/spirepod/internal/pki"
	"github.com/spirepod/spirepod/internal/project"
)

func testProject(t *testing.T) *project.Project {
	t.Helper()
	p := &project.Project{APIVersion: project.APIVersion, Kind: project.Kind, Team: "payments", Namespace: "payments",
		Environment: "dev", StatefulSet: "web", Replicas: 3, ServiceAccount: "sa", TrustDomain: "example.org", SpireServer: "spire:8081",
		Naming: project.NamingNamespaced, IssuerScope: project.IssuerNamespaced,
		City:         project.City{Repo: "wp-wcm/city", BaseBranch: "main", TeamPath: "ns/{namespace}/x", TrustList: project.TrustList{Mode: project.TrustListBundle, Path: "trust.pem"}},
		Registration: project.Registration{Format: project.FormatEntryJSON, EnvoyUID: 101}, Paths: project.DefaultPaths, Dir: t.TempDir()}
	p.ApplyDefaults()
	if err := os.MkdirAll(filepath.Dir(p.Path(p.Paths.CACert)), 0o755); err != nil {
		t.Fatal(err)
	}
	_, err := pki.Generate(context.Background(), pki.GenerateOptions{CertPath: p.Path(p.Paths.CACert), KeyPath: p.Path(p.Paths.CAKey),
		KeyType: pki.KeyECP384, Validity: 400 * 24 * time.Hour, Subject: pkix.Name{CommonName: "payments CA", Organization: []string{"payments"}},
		Rand: rand.Reader, Now: time.Now})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestWithTag(t *testing.T) {
	for in, want := range map[string]string{
		"certs/secret/agent-x509pop.crt.pem": "certs/secret/agent-x509pop.next.crt.pem",
		"certs/secret/agent-x509pop.key.pem": "certs/secret/agent-x509pop.next.key.pem",
		"ca/team.pem":                        "ca/team.next.pem",
		"ca/team.key":                        "ca/team.next.key",
		"ca/key":                             "ca/key.next",
	} {
		if got := withTag(in, "next"); got != want {
			t.Errorf("withTag(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestPrepareSameProfile: the new CA has the old one's key type, validity
// and subject, a different key, and its key file is 0600; running again
// takes the CA already there instead of making another.
func TestPrepareSameProfile(t *testing.T) {
	p := testProject(t)
	s, fresh, err := Start(p, StartOptions{}, time.Now())
	if err != nil || !fresh {
		t.Fatalf("Start: %v fresh %v", err, fresh)
	}
	old, _ := readCA(CurrentFiles(p), true)
	c, err := prepare(context.Background(), p, old.Cert, rand.Reader, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	if pki.Describe(c).KeyType != "ec-p384" || c.Subject.String() != old.Cert.Subject.String() {
		t.Errorf("new CA %s %s, want ec-p384 %s", pki.Describe(c).KeyType, c.Subject, old.Cert.Subject)
	}
	if d := c.NotAfter.Sub(c.NotBefore).Round(24 * time.Hour); d != 400*24*time.Hour {
		t.Errorf("validity %v, want 400d", d)
	}
	if pki.SHA1Fingerprint(c) == s.Old.SHA1 {
		t.Fatal("the new CA is the old one")
	}
	st, err := os.Stat(NextFiles(p).Key)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("new key: %v %v", st, err)
	}
	again, err := prepare(context.Background(), p, old.Cert, rand.Reader, time.Now)
	if err != nil || pki.SHA1Fingerprint(again) != pki.SHA1Fingerprint(c) {
		t.Errorf("second prepare made another CA (%v)", err)
	}
	// A certificate without its key is refused, naming the key.
	if err := os.Remove(NextFiles(p).Key); err != nil {
		t.Fatal(err)
	}
	_, err = prepare(context.Background(), p, old.Cert, rand.Reader, time.Now)
	var ie *InputError
	if !errors.As(err, &ie) || ie.Path != NextFiles(p).Key {
		t.Errorf("missing key: %v", err)
	}
}

// TestSwapResumes: the move of the new CA into the scaffold's paths
// survives a crash between any two file operations: run again, it ends with
// the new CA (cert and key matching) current and the old one aside.
func TestSwapResumes(t *testing.T) {
	for crash := 0; crash <= 4; crash++ {
		p := testProject(t)
		old, _ := readCA(CurrentFiles(p), true)
		nw, err := prepare(context.Background(), p, old.Cert, rand.Reader, time.Now)
		if err != nil {
			t.Fatal(err)
		}
		oldFP, newFP := pki.SHA1Fingerprint(old.Cert), pki.SHA1Fingerprint(nw)
		cur, next, aside := CurrentFiles(p), NextFiles(p), OldFiles(p)
		// Replay the swap's operations up to the crash point by hand.
		ops := []func() error{
			func() error { return copyAside(cur.Cert, aside.Cert, 0o644) },
			func() error { return os.Rename(next.Cert, cur.Cert) },
			func() error { return copyAside(cur.Key, aside.Key, 0o600) },
			func() error { return os.Rename(next.Key, cur.Key) },
		}
		for _, op := range ops[:crash] {
			if err := op(); err != nil {
				t.Fatal(err)
			}
		}
		if err := swapFiles(p, oldFP, newFP); err != nil {
			t.Fatalf("crash after %d operations: %v", crash, err)
		}
		got, err := readCA(cur, true)
		if err != nil || got == nil || pki.SHA1Fingerprint(got.Cert) != newFP || got.Key == nil {
			t.Fatalf("crash after %d: current %v %v", crash, got, err)
		}
		was, err := readCA(aside, true)
		if err != nil || was == nil || pki.SHA1Fingerprint(was.Cert) != oldFP || was.Key == nil {
			t.Fatalf("crash after %d: old aside %v %v", crash, was, err)
		}
		if st, _ := os.Stat(aside.Key); st.Mode().Perm() != 0o600 {
			t.Errorf("old key mode %o", st.Mode().Perm())
		}
		if _, err := os.Stat(next.Cert); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("crash after %d: %s still there", crash, next.Cert)
		}
		if err := swapFiles(p, oldFP, newFP); err != nil {
			t.Errorf("swap again: %v", err)
		}
	}
}

// TestStateFile: the state round-trips through the file, atomically
// written; a damaged file is an error naming it.
func TestStateFile(t *testing.T) {
	p := testProject(t)
	s, _, err := Start(p, StartOptions{Emergency: true}, time.Date(2026, 11, 30, 10, 0, 0, 0, time.UTC))
	if err != nil {
		t.Fatal(err)
	}
	if s.Roll != RollRestart || !s.Emergency {
		t.Errorf("emergency default roll %q", s.Roll)
	}
	s.New = CA{SHA1: strings.Repeat("b", 40)}
	s.Steps[StepNewCA] = time.Date(2026, 11, 30, 10, 0, 1, 0, time.UTC)
	s.setPR(PR{Step: StepPRTrust, Kind: "trust-ca", Branch: "b", URL: "u", Number: 3})
	s.pod("web-2").Leaf = strings.Repeat("c", 40)
	if err := s.Save(); err != nil {
		t.Fatal(err)
	}
	got, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if got.Old != s.Old || got.New.SHA1 != s.New.SHA1 || !got.done(StepNewCA) || got.pr(StepPRTrust).Number != 3 || got.Pods["web-2"].Leaf != s.Pods["web-2"].Leaf {
		t.Errorf("round trip: %+v", got)
	}
	data, _ := os.ReadFile(Path(p.Dir))
	if pki.ContainsPrivateKey(data) {
		t.Fatal("the state file holds a key")
	}
	// A finished rotation is reported, not repeated, unless Again.
	got.Done = time.Now().UTC()
	if err := got.Save(); err != nil {
		t.Fatal(err)
	}
	again, fresh, err := Start(p, StartOptions{}, time.Now())
	if err != nil || fresh || again.Done.IsZero() {
		t.Errorf("Start on a finished rotation: fresh %v done %v err %v", fresh, again.Done, err)
	}
	if _, fresh, err := Start(p, StartOptions{Again: true}, time.Now()); err != nil || !fresh {
		t.Errorf("Start --again: fresh %v err %v", fresh, err)
	}
	for name, bad := range map[string]string{
		"not yaml":    "\t: :",
		"unknown key": strings.Replace(string(data), "roll:", "rol:", 1),
		"bad sha1":    strings.Replace(string(data), s.Old.SHA1, "ABC", 1),
		"bad roll":    strings.Replace(string(data), "roll: restart", "roll: sideways", 1),
	} {
		if err := os.WriteFile(Path(p.Dir), []byte(bad), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := Load(p)
		var se *StateError
		if !errors.As(err, &se) || se.Path != Path(p.Dir) {
			t.Errorf("%s: %v, want a StateError naming the file", name, err)
		}
	}
}

// TestPlanSteps: a normal rotation has 4 phases whose steps name the
// files, branches, Secret and pods they change; an emergency one lists the
// pods that lose identity.
func TestPlanSteps(t *testing.T) {
	p := testProject(t)
	s, _, err := Start(p, StartOptions{}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	rep := Plan(p, s, "10.0.0.1:8081")
	if rep.Phases != 4 || rep.Phase != 1 || rep.Next != "make the new CA" {
		t.Fatalf("plan: phases %d phase %d next %q", rep.Phases, rep.Phase, rep.Next)
	}
	var all strings.Builder
	for _, ph := range rep.Plan {
		for _, st := range ph.Steps {
			all.WriteString(st.Changes + "\n")
		}
	}
	for _, want := range []string{"agent-x509pop.next.key.pem (0600", "ec-p384, valid 400d", "spirepod/payments/rotate-<new>/trust-ca",
		"payments/agent-x509pop-root", "10.0.0.1:8081", "web-2 first", "agent-x509pop.old.key.pem", "retire-" + s.Old.SHA1[:12]} {
		if !strings.Contains(all.String(), want) {
			t.Errorf("plan lacks %q", want)
		}
	}
	if len(rep.LoseIdentity) != 0 {
		t.Errorf("a normal rotation loses %v", rep.LoseIdentity)
	}
	e, _, _ := Start(p, StartOptions{Emergency: true}, time.Now())
	er := Plan(p, e, "")
	if strings.Join(er.LoseIdentity, ",") != "web-0,web-1,web-2" || !strings.Contains(er.LossWindow, "restarts") {
		t.Errorf("emergency: lose %v (%s)", er.LoseIdentity, er.LossWindow)
	}
	if _, err := os.Stat(Path(p.Dir)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Plan wrote the state file")
	}
}
