package main

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"errors"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/xeipuuv/gojsonschema"

	"github.com/spirepod/spirepod/internal/city"
	"github.com/spirepod/spirepod/internal/city/citytest"
	"github.com/spirepod/spirepod/internal/pki"
	"github.com/spirepod/spirepod/internal/registration"
)

// TestCityCheckFlags: flags reach the options (runF), and bad values are
// usage errors naming the flag, before anything is read.
func TestCityCheckFlags(t *testing.T) {
	f := newFactory(&IOStreams{In: strings.NewReader(""), Out: &bytes.Buffer{}, ErrOut: &bytes.Buffer{}}, func(string) string { return "" })
	var got *cityCheckOptions
	cmd := newCmdCityCheck(f, func(o *cityCheckOptions) error { got = o; return nil })
	cmd.SetArgs([]string{"some/city", "--base", "origin/main", "--fail-on", "warning", "--expiry-days", "7", "--env", "lab",
		"--trust-list-mode", "directory", "--trust-list-path", "x", "--team-path", "teams/{team}", "--server-config", "a/**/*.conf,b.hcl", "--classless"})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	if got.Dir != "some/city" || got.Base != "origin/main" || got.FailOn != "warning" || got.ExpiryDays != 7 || got.Env != "lab" ||
		got.TrustListMode != "directory" || got.TrustListPath != "x" || got.TeamPath != "teams/{team}" || !got.Classless ||
		strings.Join(got.ServerConfigs, "|") != "a/**/*.conf|b.hcl" {
		t.Errorf("options %+v", got)
	}
	dir := t.TempDir()
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--fail-on", "fatal"}, "--fail-on must be error, warning or note"},
		{[]string{"--expiry-days", "0"}, "--expiry-days must be between 1 and 3650"},
		{[]string{"--trust-list-mode", "zip"}, "--trust-list-mode must be bundle or directory"},
		{[]string{"--team-path", "ns/fixed"}, "neither {namespace} nor {team}"},
		{[]string{"--env", "nowhere"}, "unknown environment"},
		{[]string{"no/such/dir"}, "is not a directory"},
		{[]string{"--base", "main"}, "--base needs a git repository"},
		{[]string{"a", "b"}, "accepts at most 1 arg"},
	} {
		code, _, errOut := cliRun(t, dir, map[string]string{"HOME": dir}, append([]string{"city", "check"}, c.args...)...)
		if code != exitUsage || !strings.Contains(errOut, c.want) {
			t.Errorf("%v: exit %d, want 2 with %q; stderr:\n%s", c.args, code, c.want, errOut)
		}
	}
	// sarif is city check's only: other commands refuse it.
	if code, _, errOut := cliRun(t, dir, map[string]string{"HOME": dir}, "version", "-o", "sarif"); code != exitUsage || !strings.Contains(errOut, "must be text or json") {
		t.Errorf("version -o sarif: exit %d\n%s", code, errOut)
	}
}

// brokenCity is a city with findings of each severity: an alias
// registered by two folders (errors SPD101, SPD102), a workload whose
// parent is registered nowhere (error SPD109), a CA with no owner that
// expires soon (warning SPD304, note SPD307).
func brokenCity(t *testing.T) (string, *citytest.City) {
	t.Helper()
	g := citytest.Generate(citytest.Options{Teams: 2, Formats: []string{citytest.FormatEntryJSON}})
	a, b := g.Teams[0], g.Teams[1]
	victim := a.Proj.NodeAliasID(a.Proj.PodName(0))
	es := []registration.Entry{
		{Name: "x", SpiffeID: victim, ParentID: registration.ServerID(citytest.TrustDomain), Node: true,
			Selectors: []string{"x509pop:subject:cn:x." + b.Namespace, pki.SelectorPrefix + b.SHA1}},
		{Name: "w", SpiffeID: "spiffe://" + citytest.TrustDomain + "/ns/" + b.Namespace + "/sa/w",
			ParentID: "spiffe://" + citytest.TrustDomain + "/ns/" + b.Namespace + "/nobody", Selectors: []string{"unix:uid:1"}},
	}
	data, err := registration.Render(b.Proj, es, registration.FormatEntryJSON)
	if err != nil {
		t.Fatal(err)
	}
	g.Tree[path.Join(b.Folder, "extra.json")] = data
	g.Tree[citytest.BundlePath] = append(g.Tree[citytest.BundlePath], pki.EncodeCertificate(expiringCA(g.Config.Now))...)
	dir := t.TempDir()
	if err := citytest.Write(g.Tree, dir); err != nil {
		t.Fatal(err)
	}
	return dir, g
}

// TestCityCheckOutputs: the exit code follows --fail-on in every format;
// -o json carries the findings; GitHub annotations go to stdout with text
// and to stderr with json and sarif (stdout stays one document).
func TestCityCheckOutputs(t *testing.T) {
	dir, _ := brokenCity(t)
	env := map[string]string{"HOME": dir, "NO_COLOR": "1"}
	for _, format := range []string{"text", "json", "sarif"} {
		for failOn, want := range map[string]int{"error": exitFailure, "warning": exitFailure, "note": exitFailure} {
			code, out, errOut := cliRun(t, dir, env, "city", "check", "-o", format, "--fail-on", failOn)
			if code != want {
				t.Errorf("-o %s --fail-on %s: exit %d, want %d\n%s%s", format, failOn, code, want, out, errOut)
			}
		}
	}
	code, out, _ := cliRun(t, dir, env, "city", "check", "-o", "json")
	var res cityCheckOutput
	if err := json.Unmarshal([]byte(out), &res); err != nil || code != exitFailure {
		t.Fatalf("json: exit %d, %v\n%s", code, err, out)
	}
	if !res.Failed || res.Counts["error"] != 4 || res.Counts["warning"] != 1 || res.Counts["note"] != 1 || res.Summary.Folders != 2 {
		t.Errorf("json: %+v", res)
	}

	// A city with only a warning and a note: exit 0 unless --fail-on says otherwise.
	os.Remove(filepath.Join(dir, "ns/ns-team0001/spire-envoy-integration/extra.json"))
	g := citytest.Generate(citytest.Options{Teams: 1, Formats: []string{citytest.FormatEntryJSON}})
	g.Tree[citytest.BundlePath] = append(g.Tree[citytest.BundlePath], pki.EncodeCertificate(expiringCA(g.Config.Now))...)
	dir2 := t.TempDir()
	if err := citytest.Write(g.Tree, dir2); err != nil {
		t.Fatal(err)
	}
	for _, format := range []string{"text", "json", "sarif"} {
		for failOn, want := range map[string]int{"error": exitOK, "warning": exitFailure, "note": exitFailure} {
			if code, out, errOut := cliRun(t, dir2, env, "city", "check", "-o", format, "--fail-on", failOn); code != want {
				t.Errorf("warning+note city -o %s --fail-on %s: exit %d, want %d\n%s%s", format, failOn, code, want, out, errOut)
			}
		}
	}

	gha := map[string]string{"HOME": dir, "NO_COLOR": "1", "GITHUB_ACTIONS": "true"}
	_, out, errOut := cliRun(t, dir2, gha, "city", "check")
	if !strings.Contains(out, "::warning file="+citytest.BundlePath+",line=") || !strings.Contains(out, "title=SPD304::SPD304 CA \"anonymous\"") ||
		!strings.Contains(out, "::notice file="+citytest.BundlePath+",line=") || strings.Contains(errOut, "::") {
		t.Errorf("text: annotations on stdout\nstdout:\n%s\nstderr:\n%s", out, errOut)
	}
	for _, format := range []string{"json", "sarif"} {
		_, out, errOut := cliRun(t, dir2, gha, "city", "check", "-o", format)
		if strings.Contains(out, "::warning") || !strings.Contains(errOut, "::warning file=") || !json.Valid([]byte(out)) {
			t.Errorf("-o %s: annotations must go to stderr\nstdout:\n%s\nstderr:\n%s", format, out, errOut)
		}
	}
}

// expiringCA is a CA with no owner that expires in 10 days (SPD304, SPD307).
func expiringCA(now time.Time) *x509.Certificate {
	return citytest.NewCA("anonymous", now, func(c *x509.Certificate) { c.NotAfter = now.Add(10 * 24 * time.Hour) })
}

func TestAnnotationEscaping(t *testing.T) {
	var b bytes.Buffer
	writeAnnotations(&b, []registration.Finding{{Code: "SPD101", Severity: "error", File: "a,b:c.json", Line: 4, Message: "100% bad\nsecond line"}})
	if want := "::error file=a%2Cb%3Ac.json,line=4,title=SPD101::SPD101 100%25 bad%0Asecond line\n"; b.String() != want {
		t.Errorf("got  %q\nwant %q", b.String(), want)
	}
}

// TestCityCheckSARIFSchema validates -o sarif against the official SARIF
// 2.1.0 schema (OASIS errata01, shipped in testdata) with an independent
// validator, and checks it says what -o json says.
func TestCityCheckSARIFSchema(t *testing.T) {
	sch := compileSARIFSchema(t)
	dir, _ := brokenCity(t)
	env := map[string]string{"HOME": dir}
	code, out, errOut := cliRun(t, dir, env, "city", "check", "-o", "sarif")
	if code != exitFailure {
		t.Fatalf("exit %d\n%s", code, errOut)
	}
	if err := validateSARIF(sch, out); err != nil {
		t.Fatalf("SARIF does not validate against the 2.1.0 schema: %v", err)
	}
	// Clean cities validate too (empty results).
	clean := t.TempDir()
	if err := citytest.Write(citytest.Generate(citytest.Options{Teams: 1}).Tree, clean); err != nil {
		t.Fatal(err)
	}
	_, cleanOut, _ := cliRun(t, clean, env, "city", "check", "-o", "sarif")
	if err := validateSARIF(sch, cleanOut); err != nil {
		t.Fatalf("clean SARIF: %v", err)
	}

	var log struct {
		Version string `json:"version"`
		Runs    []struct {
			Tool struct {
				Driver struct {
					Name  string `json:"name"`
					Rules []struct {
						ID      string `json:"id"`
						HelpURI string `json:"helpUri"`
						Default struct {
							Level string `json:"level"`
						} `json:"defaultConfiguration"`
					} `json:"rules"`
				} `json:"driver"`
			} `json:"tool"`
			Results []struct {
				RuleID    string `json:"ruleId"`
				RuleIndex int    `json:"ruleIndex"`
				Level     string `json:"level"`
				Message   struct {
					Text string `json:"text"`
				} `json:"message"`
				Locations []struct {
					Physical struct {
						Artifact struct {
							URI string `json:"uri"`
						} `json:"artifactLocation"`
						Region struct {
							StartLine int `json:"startLine"`
						} `json:"region"`
					} `json:"physicalLocation"`
				} `json:"locations"`
			} `json:"results"`
		} `json:"runs"`
	}
	if err := json.Unmarshal([]byte(out), &log); err != nil {
		t.Fatal(err)
	}
	_, jout, _ := cliRun(t, dir, env, "city", "check", "-o", "json")
	var res cityCheckOutput
	if err := json.Unmarshal([]byte(jout), &res); err != nil {
		t.Fatal(err)
	}
	run := log.Runs[0]
	if log.Version != "2.1.0" || run.Tool.Driver.Name != "spirepod" || len(run.Tool.Driver.Rules) != len(city.Rules()) {
		t.Errorf("run header: %+v", run.Tool.Driver)
	}
	if len(run.Results) != len(res.Findings) {
		t.Fatalf("%d results, %d findings", len(run.Results), len(res.Findings))
	}
	for i, r := range run.Results {
		fd := res.Findings[i]
		rule := run.Tool.Driver.Rules[r.RuleIndex]
		if r.RuleID != fd.Code || rule.ID != fd.Code || r.Level != string(fd.Severity) || r.Message.Text != fd.Message ||
			r.Locations[0].Physical.Artifact.URI != fd.File || r.Locations[0].Physical.Region.StartLine != fd.Line {
			t.Errorf("result %d %+v differs from finding %+v", i, r, fd)
		}
		if !strings.HasSuffix(rule.HelpURI, "README.md#"+strings.ToLower(fd.Code)) {
			t.Errorf("helpUri %s", rule.HelpURI)
		}
	}
}

// compileSARIFSchema loads OASIS's SARIF 2.1.0 schema (draft-07) from
// testdata with gojsonschema (the validator go-sarif itself uses).
func compileSARIFSchema(t *testing.T) *gojsonschema.Schema {
	t.Helper()
	data, err := os.ReadFile("testdata/sarif-schema-2.1.0.json")
	if err != nil {
		t.Fatal(err)
	}
	sch, err := gojsonschema.NewSchema(gojsonschema.NewBytesLoader(data))
	if err != nil {
		t.Fatal(err)
	}
	// The schema must be able to say no: a result without a message is invalid.
	if validateSARIF(sch, `{"version":"2.1.0","runs":[{"tool":{"driver":{"name":"x"}},"results":[{"ruleId":"a"}]}]}`) == nil {
		t.Fatal("the schema accepts a result without a message: it is not the SARIF schema")
	}
	return sch
}

// validateSARIF judges a document against the schema: nil, or every error.
func validateSARIF(sch *gojsonschema.Schema, doc string) error {
	res, err := sch.Validate(gojsonschema.NewStringLoader(doc))
	if err != nil {
		return err
	}
	if res.Valid() {
		return nil
	}
	var msgs []string
	for _, e := range res.Errors() {
		msgs = append(msgs, e.String())
	}
	return errors.New(strings.Join(msgs, "; "))
}
