package rotate

import (
	"fmt"
	"path/filepath"
	"strings"

	"github.com/spirepod/spirepod/internal/pr"
	"github.com/spirepod/spirepod/internal/project"
	"github.com/spirepod/spirepod/internal/registration"
)

// Steps, in the order a rotation runs them.
const (
	StepNewCA            = "new-ca"
	StepMerged           = "merged"
	StepServerTrustsNew  = "server-trusts-new"
	StepFilesSwapped     = "files-swapped"
	StepSecretSwitched   = "secret-switched"
	StepIssuerReady      = "issuer-ready"
	StepCertsReissued    = "certs-reissued"
	StepPods             = "pods"
	StepRetireAliasesIn  = "retire-aliases-merged"
	StepRetireTrustIn    = "retire-trust-merged"
	StepServerDropsOld   = "server-drops-old"
	StepOldKeyDeleted    = "old-key-deleted"
	placeholderNewSHA1   = "<new CA's SHA-1>"
	placeholderNewPrefix = "<new>"
)

// phaseDef is one phase: its name, what the team's run does and what the
// platform team does in it.
type phaseDef struct {
	Name     string
	Platform string
	Steps    []string
}

func phasesFor(emergency bool) []phaseDef {
	if emergency {
		return []phaseDef{
			{"prepare", "nothing", []string{StepNewCA}},
			{"replace trust and issuance", "merge the node-alias pull request, then the trust-list one, at once, and reload the SPIRE server's trust list",
				[]string{StepPRAliases, StepPRTrust, StepFilesSwapped, StepSecretSwitched, StepIssuerReady, StepCertsReissued, StepMerged, StepServerTrustsNew, StepServerDropsOld}},
			{"move pods", "nothing", []string{StepPods}},
			{"retire", "nothing", []string{StepOldKeyDeleted}},
		}
	}
	return []phaseDef{
		{"prepare", "nothing", []string{StepNewCA}},
		{"trust both", "merge both pull requests, then reload the SPIRE server's trust list (restart, or SIGUSR1 with plugin_data_file)",
			[]string{StepPRTrust, StepPRAliases, StepMerged, StepServerTrustsNew}},
		{"switch issuance", "nothing",
			[]string{StepFilesSwapped, StepSecretSwitched, StepIssuerReady, StepPods}},
		{"retire", "merge the alias pull request, then the trust-list one, and reload the SPIRE server's trust list",
			[]string{StepPRRetireAliases, StepRetireAliasesIn, StepPRRetireTrust, StepRetireTrustIn, StepServerDropsOld, StepOldKeyDeleted}},
	}
}

// StepView is one step as --plan and the report show it.
type StepView struct {
	ID      string `json:"id"`
	Title   string `json:"title"`
	Changes string `json:"changes"`
	// Status is done, next, waiting or pending.
	Status string `json:"status"`
	Detail string `json:"detail,omitempty"`
}

// PhaseView is one phase with its steps.
type PhaseView struct {
	N        int        `json:"n"`
	Name     string     `json:"name"`
	Platform string     `json:"platform"`
	Steps    []StepView `json:"steps"`
}

// planInputs are the names the plan shows.
type planInputs struct {
	p         *project.Project
	emergency bool
	roll      string
	format    string
	oldFP     string
	newFP     string // "" before phase 1
	profile   string
	server    string
}

func rel(p *project.Project, path string) string {
	if r, err := filepath.Rel(p.Dir, path); err == nil {
		return filepath.ToSlash(r)
	}
	return path
}

func (in planInputs) branch(what, fp, kind string) string {
	if fp == "" {
		return pr.BranchName(in.p.Team+"/"+what+"-"+placeholderNewPrefix, kind)
	}
	return branch(in.p, what, fp, kind)
}

// describeStep says what a step does and changes, concretely.
func (in planInputs) describeStep(id string) (title, changes string) {
	p := in.p
	newFP := in.newFP
	if newFP == "" {
		newFP = placeholderNewSHA1
	}
	cur, next, old := CurrentFiles(p), NextFiles(p), OldFiles(p)
	repo := p.City.Repo
	tl := p.City.TrustList.Path
	regFile := filepath.ToSlash(filepath.Join(pr.TeamPath(p), registration.File(in.format)))
	pods := strings.Join(p.PodNames(), ", ")
	order := strings.Join(rollOrder(p), ", then ")
	switch id {
	case StepNewCA:
		return "make the new CA", fmt.Sprintf("writes %s (0644) and %s (0600, git-ignored, never printed, never in a pull request): %s; nothing else changes",
			rel(p, next.Cert), rel(p, next.Key), in.profile)
	case StepPRTrust:
		if in.emergency {
			return "open the trust-list pull request", fmt.Sprintf("%s branch %s: %s gets the new CA %s (owner comment) and loses the old CA %s",
				repo, in.branch("rotate", in.newFP, pr.KindTrustCA), tl, newFP, in.oldFP)
		}
		return "open the trust-list pull request", fmt.Sprintf("%s branch %s: %s gets the new CA %s (owner comment) next to the old CA %s, which stays",
			repo, in.branch("rotate", in.newFP, pr.KindTrustCA), tl, newFP, in.oldFP)
	case StepPRAliases:
		if in.emergency {
			return "open the node-alias pull request", fmt.Sprintf("%s branch %s: %s pins every node alias to the new CA only; the aliases of the compromised CA go",
				repo, in.branch("rotate", in.newFP, pr.KindSpiffeID), regFile)
		}
		return "open the node-alias pull request", fmt.Sprintf("%s branch %s: %s gets one more node alias per pod (%s), same ID, pinned to the new CA (entry %s…); the old aliases and the workload entries stay as they are",
			repo, in.branch("rotate", in.newFP, pr.KindSpiffeID), regFile, pods, registration.EntryID(p.Namespace, p.CertificateName(p.PodName(0))+"-ca-"))
	case StepMerged:
		return "wait for both pull requests to be merged", fmt.Sprintf("reads %s's base branch %s until it holds both changes (nothing is written)", repo, baseOf(p))
	case StepServerTrustsNew:
		return "check the SPIRE server trusts the new CA", fmt.Sprintf("attests at %s with a 15-minute probe leaf of the new CA (CN spirepod-rotation-probe.%s; no alias selects it): it must succeed, which shows the server reloaded its trust list (or --server-reloaded)", in.server, p.Namespace)
	case StepFilesSwapped:
		return "move the new CA into the scaffold", fmt.Sprintf("renames %s → %s and %s → %s; the old CA moves to %s and %s",
			rel(p, next.Cert), rel(p, cur.Cert), rel(p, next.Key), rel(p, cur.Key), rel(p, old.Cert), rel(p, old.Key))
	case StepSecretSwitched:
		return "switch the issuer's CA Secret", fmt.Sprintf("server-side applies Secret %s as certs/ renders it, now with the new CA (field manager %s; refused unless it holds the old or the new CA)", p.Issuer().Secret(), p.FieldManager())
	case StepIssuerReady:
		return "wait for the issuer", fmt.Sprintf("waits for %s to be Ready", p.Issuer())
	case StepCertsReissued:
		return "re-issue every agent certificate", fmt.Sprintf("marks Certificates %s for re-issuance (Issuing condition, as cmctl renew) and waits for each Secret to hold a leaf of the new CA; the gen-cert sidecars write them into the running pods", certNames(p))
	case StepPods:
		if in.roll == RollRestart {
			return "restart the pods one at a time", fmt.Sprintf("for %s in turn: re-issue its Certificate (if not yet), delete the pod, wait until it is Running and Ready (with --wait: until `spirepod verify` sees its SVID); that pod's workloads are down while it restarts", order)
		}
		return "move every agent to the new CA in place", fmt.Sprintf("re-issues the Certificate of %s first (Issuing condition, as cmctl renew), then of the others; gen-cert writes each new leaf into the running pod; waits for every spire-agent to log an attestation with its new leaf (at its next SVID rotation: up to half the agent SVID TTL). No pod restarts", rollOrder(p)[0])
	case StepPRRetireAliases:
		return "open the pull request removing the old aliases", fmt.Sprintf("%s branch %s: %s back to one alias per pod, pinned to the new CA (what `spirepod pr spiffe-id` renders)",
			repo, in.branch("retire", in.oldFP, pr.KindSpiffeID), regFile)
	case StepRetireAliasesIn:
		return "wait for it to be merged", fmt.Sprintf("reads %s's %s until it holds the change", repo, baseOf(p))
	case StepPRRetireTrust:
		return "open the pull request removing the old CA", fmt.Sprintf("%s branch %s: %s loses the old CA %s (and its owner comment)",
			repo, in.branch("retire", in.oldFP, pr.KindTrustCA), tl, in.oldFP)
	case StepRetireTrustIn:
		return "wait for it to be merged", fmt.Sprintf("reads %s's %s until it holds the change", repo, baseOf(p))
	case StepServerDropsOld:
		return "check the SPIRE server refuses the old CA", fmt.Sprintf("attests at %s with a probe leaf of the old CA: the server must refuse it", in.server)
	case StepOldKeyDeleted:
		return "delete the old CA's key", fmt.Sprintf("deletes %s and %s (asks first, unless --yes on the command line)", rel(p, old.Key), rel(p, old.Cert))
	}
	return id, ""
}

func baseOf(p *project.Project) string { return p.BaseBranch() }

func certNames(p *project.Project) string {
	var out []string
	for _, pod := range p.PodNames() {
		out = append(out, p.Namespace+"/"+p.CertificateName(pod))
	}
	return strings.Join(out, ", ")
}

// views lists every phase and step with its status in s (nil: nothing done).
func views(in planInputs, s *State) ([]PhaseView, int) {
	var out []PhaseView
	current := 0
	for i, ph := range phasesFor(in.emergency) {
		pv := PhaseView{N: i + 1, Name: ph.Name, Platform: ph.Platform}
		for _, id := range ph.Steps {
			title, changes := in.describeStep(id)
			sv := StepView{ID: id, Title: title, Changes: changes, Status: "pending"}
			if s != nil && s.done(id) {
				sv.Status = "done"
			} else if current == 0 {
				current = i + 1
				sv.Status = "next"
			}
			pv.Steps = append(pv.Steps, sv)
		}
		out = append(out, pv)
	}
	return out, current
}
