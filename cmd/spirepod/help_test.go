package main

import (
	"regexp"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// helpOf renders `spirepod <path> --help` through run, as a user sees it.
func helpOf(t *testing.T, path []string) string {
	t.Helper()
	dir := t.TempDir()
	code, out, errOut := cliRun(t, dir, map[string]string{"HOME": dir, "NO_COLOR": "1"}, append(path, "--help")...)
	if code != 0 {
		t.Fatalf("%v --help: exit %d\n%s", path, code, errOut)
	}
	return out
}

// commandPaths lists every command of the tree as its argument path.
func commandPaths(c *cobra.Command, prefix []string) [][]string {
	var out [][]string
	for _, sub := range c.Commands() {
		if sub.Hidden || sub.Name() == "help" || sub.Name() == "completion" && len(prefix) > 0 {
			continue
		}
		p := append(append([]string{}, prefix...), sub.Name())
		out = append(out, p)
		out = append(out, commandPaths(sub, p)...)
	}
	return out
}

// TestHelpNamesCurrentDefaults renders the help of every command and holds
// it to the scaffold init makes today (issue 21 item 7): the names come
// from scaffoldFacts (the code that owns each name), none of the old
// scaffold's facts appear, every group's overview lists all its
// subcommands, and pflag shows no value for a boolean flag.
func TestHelpNamesCurrentDefaults(t *testing.T) {
	facts := defaultScaffoldFacts()
	// What the scaffold used to be, as the old help said it.
	stale := []string{
		`field manager "spirepod"`,
		"ClusterIssuer first",
		"cluster-wide CA Secret",
		"ClusterIssuer Ready",
		"common name spire-agent-x509pop-<pod>,",
		"CN is spire-agent-x509pop-<pod>",
		"cert-manager's ClusterIssuer uses it",
	}
	want := map[string][]string{
		"apply":        {facts.FieldManager, facts.Issuer, facts.CASecret, facts.Certificate},
		"init":         {facts.FieldManager, facts.AgentCN, facts.Alias, facts.Issuer},
		"pki":          {facts.Issuer, facts.CASecret, "spirepod pki rotate"},
		"pki issue":    {"common name " + facts.AgentCN},
		"pki inspect":  {facts.AgentCN, "SHA-1"},
		"status":       {facts.IssuerKind + " Ready"},
		"verify":       {facts.IssuerKind + " Ready"},
		"pr spiffe-id": {facts.Alias, "x509pop:subject:cn:" + facts.AgentCN},
	}
	if facts.FieldManager != "spirepod-<namespace>" || facts.AgentCN != "<pod>.<namespace>" || facts.IssuerKind != "Issuer" {
		t.Fatalf("init's defaults changed (%+v): update this test's expectations with the README", facts)
	}
	root := newCmdRoot(newFactory(&IOStreams{}, func(string) string { return "" }))
	seen := map[string]bool{}
	for _, path := range commandPaths(root, nil) {
		name := strings.Join(path, " ")
		// Words as the reader sees them, whatever the line breaks.
		help := strings.Join(strings.Fields(helpOf(t, path)), " ")
		for _, s := range stale {
			if strings.Contains(help, s) {
				t.Errorf("spirepod %s --help describes the old scaffold: %q", name, s)
			}
		}
		for _, s := range want[name] {
			if !strings.Contains(help, s) {
				t.Errorf("spirepod %s --help does not name %q", name, s)
			}
		}
		seen[name] = true
	}
	for name := range want {
		if !seen[name] {
			t.Errorf("no command %q", name)
		}
	}

	// A group whose overview lists its subcommands lists every one.
	for _, g := range root.Commands() {
		if !g.HasSubCommands() {
			continue
		}
		listed := regexp.MustCompile(`(?m)^\s+spirepod `+g.Name()+` ([a-z-]+)`).FindAllStringSubmatch(g.Long, -1)
		if len(listed) == 0 {
			continue
		}
		have := map[string]bool{}
		for _, m := range listed {
			have[m[1]] = true
		}
		for _, sub := range g.Commands() {
			if !sub.Hidden && !have[sub.Name()] {
				t.Errorf("spirepod %s --help lists its subcommands but not %q", g.Name(), sub.Name())
			}
		}
	}

	// pflag takes a back-quoted word in a usage for the flag's value name:
	// a boolean flag then shows a value it does not take.
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		c.Flags().VisitAll(func(fl *pflag.Flag) {
			name, _ := pflag.UnquoteUsage(fl)
			if fl.Value.Type() == "bool" && name != "" {
				t.Errorf("%s --%s is boolean but its help shows a value %q", c.CommandPath(), fl.Name, name)
			}
			if strings.Contains(name, " ") {
				t.Errorf("%s --%s shows the value name %q", c.CommandPath(), fl.Name, name)
			}
		})
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
}
