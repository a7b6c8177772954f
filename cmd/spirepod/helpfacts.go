package main

import (
	"strings"

	"github.com/spirepod/spirepod/internal/project"
)

// scaffoldFacts are the names a scaffold made with init's defaults uses, as
// the code that owns each name renders them (project.HelpExample's
// placeholders for the values). Help texts take them from here, never from
// a literal: TestHelpNamesCurrentDefaults renders every command's help and
// holds them to it.
type scaffoldFacts struct {
	// FieldManager is the server-side apply field manager: spirepod-<namespace>.
	FieldManager string
	// Issuer is "Issuer <namespace>/spire-agent-x509pop-issuer"; IssuerKind "Issuer".
	Issuer, IssuerKind string
	// CASecret is the issuer's CA Secret, <namespace>/agent-x509pop-root.
	CASecret string
	// AgentCN is a pod's agent certificate common name: <pod>.<namespace>.
	AgentCN string
	// GuideAgentCN is the common name with naming: guide.
	GuideAgentCN string
	// Alias is a pod's node alias ID.
	Alias string
	// Certificate is a pod's cert-manager Certificate (and Secret) name.
	Certificate string
}

func defaultScaffoldFacts() scaffoldFacts {
	p := project.HelpExample()
	guide := project.HelpExample()
	guide.Naming = project.NamingGuide
	ref := p.Issuer()
	return scaffoldFacts{
		FieldManager: p.FieldManager(),
		Issuer:       ref.String(),
		IssuerKind:   ref.Kind,
		CASecret:     ref.Secret(),
		AgentCN:      p.AgentCN("<pod>"),
		GuideAgentCN: guide.AgentCN("<pod>"),
		Alias:        p.NodeAliasID("<pod>"),
		Certificate:  p.CertificateName("<pod>"),
	}
}

// clusterIssuerNote says what init --issuer cluster changes, from the code
// that names it.
var clusterIssuerNote = func() string {
	p := project.HelpExample()
	p.IssuerScope = project.IssuerCluster
	return "with init --issuer cluster: " + p.Issuer().String() + " and its Secret " + p.Issuer().Secret()
}()

// reflow wraps each prose paragraph of a help text at 96 columns, so facts
// of any length read as the rest of the help; indented blocks (lists,
// tables) stay as they are.
func reflow(text string) string {
	paras := strings.Split(text, "\n\n")
	for i, p := range paras {
		lines := strings.Split(p, "\n")
		prose := true
		for _, l := range lines {
			if strings.HasPrefix(l, " ") || strings.HasPrefix(l, "\t") || strings.HasPrefix(l, "-") {
				prose = false
			}
		}
		if !prose {
			continue
		}
		var out []string
		line := ""
		for _, w := range strings.Fields(p) {
			if line != "" && len(line)+1+len(w) > 96 {
				out = append(out, line)
				line = ""
			}
			if line != "" {
				line += " "
			}
			line += w
		}
		paras[i] = strings.Join(append(out, line), "\n")
	}
	return strings.Join(paras, "\n\n")
}
