package onboard_test

import (
	"context"
	"crypto/rand"
	"errors"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spirepod/spirepod/internal/city"
	"github.com/spirepod/spirepod/internal/city/citytest"
	"github.com/spirepod/spirepod/internal/onboard"
	"github.com/spirepod/spirepod/internal/pki"
	"github.com/spirepod/spirepod/internal/pr"
	"github.com/spirepod/spirepod/internal/project"
	"github.com/spirepod/spirepod/internal/registration"
	"github.com/spirepod/spirepod/internal/rotate"
)

// localCity writes a generated city (two teams) into a git repository and
// returns it with a project for a third team, "payments".
func localCity(t *testing.T) (dir string, g *citytest.City, p *project.Project) {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git not installed")
	}
	g = citytest.Generate(citytest.Options{Teams: 2, Formats: []string{citytest.FormatEntryJSON}})
	dir = filepath.Join(t.TempDir(), "city")
	if err := citytest.WriteGit(g.Tree, dir, "city"); err != nil {
		t.Fatal(err)
	}
	p = &project.Project{APIVersion: project.APIVersion, Kind: project.Kind, Team: "payments", Namespace: "payments",
		Environment: "dev", StatefulSet: project.DefaultStatefulSet, Replicas: 2, ServiceAccount: "httpbin-client",
		TrustDomain: citytest.TrustDomain, SpireServer: "spire-server:8081",
		City:   project.City{Repo: "wp-wcm/city", TeamPath: citytest.TeamPath, TrustList: g.Config.TrustList},
		Naming: project.NamingNamespaced, IssuerScope: project.IssuerNamespaced,
		Registration: project.Registration{Format: project.FormatEntryJSON, EnvoyUID: 101}, Paths: project.DefaultPaths,
		Dir: t.TempDir()}
	p.ApplyDefaults()
	return dir, g, p
}

func lightConfig(g *citytest.City) city.Config {
	cfg := g.Config
	cfg.Light = false // a local checkout is read whole
	return cfg
}

// TestSubmitJudgesAndOpens: trust-ca and spiffe-id through onboard open
// their branches in a local checkout; the spiffe-id PR opened before the
// trust-ca one merged passes with a warning (its CA is pending), not a
// refusal; and a change the city check fails (an alias another team owns)
// is refused with the findings, nothing written.
func TestSubmitJudgesAndOpens(t *testing.T) {
	dir, g, p := localCity(t)
	ctx := context.Background()
	ca := citytest.NewCA("payments x509pop agent CA", time.Now(), nil)
	w := onboard.Where{Local: dir}
	res, err := onboard.TrustCA(ctx, onboard.TrustCAOptions{Project: p, CA: ca, Where: w, City: lightConfig(g)})
	if err != nil || res.Action != pr.ActionCreated || res.Branch != pr.BranchName(p.Team, pr.KindTrustCA) {
		t.Fatalf("trust-ca: %v %+v", err, res)
	}
	res, err = onboard.SpiffeID(ctx, onboard.SpiffeIDOptions{Project: p, CA: ca, Where: w, City: lightConfig(g)})
	if err != nil || res.Action != pr.ActionCreated {
		t.Fatalf("spiffe-id: %v %+v", err, res)
	}
	if len(res.Warnings) == 0 || !strings.Contains(res.Warnings[0], pki.SHA1Fingerprint(ca)) {
		t.Errorf("spiffe-id before the trust-ca merge: want a warning naming the pending CA, got %v", res.Warnings)
	}
	st, err := onboard.PullRequests(ctx, p, w)
	if err != nil || len(st.Pulls) != 2 || st.Pulls[0].State == "none" || st.Pulls[1].State == "none" {
		t.Fatalf("pull requests: %v %+v", err, st)
	}

	// A hostile change: register team0's alias from payments' folder.
	victim := g.Teams[0].Proj.NodeAliasID(g.Teams[0].Proj.PodName(0))
	es := []registration.Entry{{Name: "x", EntryID: registration.EntryID(p.Namespace, "x"), SpiffeID: victim, ParentID: registration.ServerID(p.TrustDomain), Node: true,
		Selectors: []string{pki.CNSelectorPrefix + "x.payments", pki.SelectorPrefix + pki.SHA1Fingerprint(ca)}}}
	data, err := registration.Render(p, es, project.FormatEntryJSON)
	if err != nil {
		t.Fatal(err)
	}
	folder := strings.ReplaceAll(citytest.TeamPath, "{namespace}", p.Namespace)
	ch := &pr.Change{Kind: pr.KindSpiffeID, Team: p.Team, Branch: "spirepod/payments/hostile", Title: "t", Message: "m",
		Compute: func(context.Context, pr.ReadFunc) ([]pr.File, error) {
			return []pr.File{{Path: path.Join(folder, "steal.json"), New: data}}, nil
		}}
	_, err = onboard.Submit(ctx, ch, p, w, lightConfig(g), onboard.Pending{})
	var cc *onboard.CityCheckError
	if !errors.As(err, &cc) {
		t.Fatalf("hostile change: %v, want a CityCheckError", err)
	}
	shared := false
	for _, f := range cc.Findings {
		shared = shared || f.Code == city.CodeAliasShared
	}
	if !shared {
		t.Errorf("findings %v, want SPD101", cc.Findings)
	}
	if out, _ := exec.Command("git", "-C", dir, "branch", "--list", "spirepod/payments/hostile").Output(); strings.TrimSpace(string(out)) != "" {
		t.Errorf("the refused change made a branch: %s", out)
	}
}

// TestRotationRefusesHandMadePRs: while a CA rotation runs, trust-ca and
// spiffe-id refuse with a RotatingError naming the phase; nothing is written.
func TestRotationRefusesHandMadePRs(t *testing.T) {
	dir, g, p := localCity(t)
	ctx := context.Background()
	if err := os.MkdirAll(filepath.Dir(p.Path(p.Paths.CACert)), 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := pki.Generate(ctx, pki.GenerateOptions{CertPath: p.Path(p.Paths.CACert), KeyPath: p.Path(p.Paths.CAKey),
		Subject: pki.DefaultSubject(p.Team), Validity: 365 * 24 * time.Hour, Rand: rand.Reader, Now: time.Now}); err != nil {
		t.Fatal(err)
	}
	st, fresh, err := rotate.Start(p, rotate.StartOptions{}, time.Now())
	if err != nil || !fresh {
		t.Fatalf("start a rotation: %v", err)
	}
	if err := st.Save(); err != nil {
		t.Fatal(err)
	}
	ca := pki.LoadTeamCA(pki.TeamCAOptions{CertPath: p.Path(p.Paths.CACert)}).Cert
	for name, run := range map[string]func() error{
		"trust-ca": func() error {
			_, err := onboard.TrustCA(ctx, onboard.TrustCAOptions{Project: p, CA: ca, Where: onboard.Where{Local: dir}, City: lightConfig(g)})
			return err
		},
		"spiffe-id": func() error {
			_, err := onboard.SpiffeID(ctx, onboard.SpiffeIDOptions{Project: p, CA: ca, Where: onboard.Where{Local: dir}, City: lightConfig(g)})
			return err
		},
	} {
		var re *onboard.RotatingError
		if err := run(); !errors.As(err, &re) || re.Phase < 1 || re.Phases < re.Phase || re.PhaseName == "" {
			t.Errorf("%s: %v, want a RotatingError naming the phase", name, err)
		}
	}
	if out, _ := exec.Command("git", "-C", dir, "branch", "--list", "spirepod/*").Output(); strings.TrimSpace(string(out)) != "" {
		t.Errorf("a refused pull request made a branch: %s", out)
	}
}
