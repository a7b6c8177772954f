package main

import (
	"os"
	"path/filepath"
	"strings"

	"github.com/spirepod/spirepod/internal/pki"
	"github.com/spirepod/spirepod/internal/project"
	"github.com/spirepod/spirepod/internal/scaffold"
)

// selfCommand is how the user runs this spirepod in the next steps it
// prints: "spirepod" when that is on PATH (and is this binary); the
// binary's path when it is not on PATH; and, for a `go run` build (a
// temporary binary), "spirepod" after a first step that installs it. It
// returns that first step ("" when none is needed).
func selfCommand(f *Factory) (cmd, install string) {
	exe, err := f.Executable()
	if err != nil {
		return "spirepod", ""
	}
	if onPath, err := f.LookPath("spirepod"); err == nil && sameFile(onPath, exe) {
		return "spirepod", ""
	}
	if strings.Contains(filepath.ToSlash(exe), "/go-build") {
		return "spirepod", "go install ./cmd/spirepod   # in this spirepod checkout, before the cd; $(go env GOPATH)/bin must be on PATH"
	}
	return exe, "" // not on PATH (or another spirepod is): this one, by its path

}

func sameFile(a, b string) bool {
	ra, err1 := filepath.EvalSymlinks(a)
	rb, err2 := filepath.EvalSymlinks(b)
	if err1 != nil || err2 != nil {
		return a == b
	}
	sa, err1 := os.Stat(ra)
	sb, err2 := os.Stat(rb)
	return err1 == nil && err2 == nil && os.SameFile(sa, sb)
}

// nextSteps are the commands that take a scaffold to a verified identity
// from where it is now: cd into it (cd "" when already there), then only
// the steps not done yet that a file shows (no `pki gen` over a team CA,
// no `bundle set` once the bundle holds a server CA), each spelled as this
// binary can be run.
func nextSteps(f *Factory, p *project.Project, cd string) []string {
	self, install := selfCommand(f)
	var steps []string
	if install != "" {
		steps = append(steps, install)
	}
	if cd != "" {
		steps = append(steps, "cd "+cd)
	}
	if !hasTeamCA(p) {
		steps = append(steps, self+" pki gen")
	}
	if !hasServerCA(p) {
		steps = append(steps, self+" bundle set <spire-server-ca.pem>")
	}
	for _, s := range []string{"pr trust-ca", "pr spiffe-id", "apply", "verify"} {
		steps = append(steps, self+" "+s)
	}
	return steps
}

// hasTeamCA: the scaffold holds a team CA certificate (not init's empty
// placeholder).
func hasTeamCA(p *project.Project) bool {
	cert := p.Path(p.Paths.CACert)
	return fileExists(cert) && !pki.IsPlaceholder(cert)
}

// hasServerCA: the bundle ConfigMap holds the SPIRE server's CA.
func hasServerCA(p *project.Project) bool {
	data, err := os.ReadFile(p.Path(scaffold.BundleFile(p.Environment)))
	if err != nil {
		return false
	}
	certs, err := scaffold.BundleCerts(data)
	return err == nil && len(certs) > 0
}
