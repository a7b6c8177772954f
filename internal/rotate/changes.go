package rotate

import (
	"crypto/x509"
	"fmt"
	"strings"

	"github.com/spirepod/spirepod/internal/city"
	"github.com/spirepod/spirepod/internal/pki"
	"github.com/spirepod/spirepod/internal/pr"
	"github.com/spirepod/spirepod/internal/project"
	"github.com/spirepod/spirepod/internal/registration"
)

// Pull request steps.
const (
	StepPRTrust         = "pr-trust"
	StepPRAliases       = "pr-aliases"
	StepPRRetireAliases = "pr-retire-aliases"
	StepPRRetireTrust   = "pr-retire-trust"
)

// Change is one pull request of a rotation, built from the project and the
// two CAs; the same inputs give the same change, so a later run can ask
// whether the base branch already holds it (merged).
type Change struct {
	Step string
	*pr.Change
	// Pending are the CA fingerprints whose aliases may lack a trusted CA
	// while the other pull request of the pair is open: the city check's
	// SPD105 about them is a warning, not a refusal.
	Pending []string
}

// branch is spirepod/<team>/rotate-<new sha1 prefix>/<kind> (or retire-<old>).
func branch(p *project.Project, what, fp, kind string) string {
	return pr.BranchName(p.Team+"/"+what+"-"+fp[:12], kind)
}

// changeFor builds the pull request of a step.
func changeFor(step string, p *project.Project, s *State, oldCA, newCA *x509.Certificate) (*Change, error) {
	oldFP, newFP := pki.SHA1Fingerprint(oldCA), pki.SHA1Fingerprint(newCA)
	format := s.Format
	switch step {
	case StepPRTrust:
		o := pr.TrustCAOptions{Project: p, CA: oldCA, OwnerComment: city.OwnerComment(p.Team, p.Namespace, oldFP),
			Also: []*x509.Certificate{newCA}, AlsoComments: []string{city.OwnerComment(p.Team, p.Namespace, newFP)}}
		if s.Emergency {
			o = pr.TrustCAOptions{Project: p, CA: newCA, OwnerComment: city.OwnerComment(p.Team, p.Namespace, newFP),
				Remove: []*x509.Certificate{oldCA}}
		}
		ch, _, err := pr.TrustCA(o)
		if err != nil {
			return nil, err
		}
		ch.Branch = branch(p, "rotate", newFP, pr.KindTrustCA)
		ch.Title = fmt.Sprintf("Rotate %s CA (1/2): trust the new CA next to the current one", p.Team)
		ch.Message = fmt.Sprintf("%s\n\nTeam %s (namespace %s) adds its new x509pop CA %s next to the current %s (spirepod pki rotate, phase 2).", ch.Title, p.Team, p.Namespace, newFP, oldFP)
		pending := []string{newFP}
		if s.Emergency {
			ch.Title = fmt.Sprintf("EMERGENCY: replace %s CA (compromised key): trust the new CA, remove the old one", p.Team)
			ch.Message = fmt.Sprintf("%s\n\nTeam %s (namespace %s) replaces its x509pop CA %s (key compromised) with %s (spirepod pki rotate --emergency).", ch.Title, p.Team, p.Namespace, oldFP, newFP)
			pending = []string{newFP, oldFP}
		}
		ch.Body = trustBody(p, s, oldCA, newCA, false)
		return &Change{Step: step, Change: ch, Pending: pending}, nil
	case StepPRRetireTrust:
		ch, _, err := pr.TrustCA(pr.TrustCAOptions{Project: p, CA: newCA, OwnerComment: city.OwnerComment(p.Team, p.Namespace, newFP),
			Remove: []*x509.Certificate{oldCA}})
		if err != nil {
			return nil, err
		}
		ch.Branch = branch(p, "retire", oldFP, pr.KindTrustCA)
		ch.Title = fmt.Sprintf("Rotate %s CA (2/2): remove the old CA from the trust list", p.Team)
		ch.Message = fmt.Sprintf("%s\n\nTeam %s (namespace %s) retires its x509pop CA %s; its agents use %s (spirepod pki rotate, phase 4).", ch.Title, p.Team, p.Namespace, oldFP, newFP)
		ch.Body = trustBody(p, s, oldCA, newCA, true)
		return &Change{Step: step, Change: ch}, nil
	case StepPRAliases, StepPRRetireAliases:
		o := pr.SpiffeIDOptions{Project: p, CA: newCA, Format: format}
		retire := step == StepPRRetireAliases || s.Emergency
		if !retire {
			o = pr.SpiffeIDOptions{Project: p, CA: oldCA, More: []*x509.Certificate{newCA}, Format: format}
		}
		ch, _, err := pr.SpiffeID(o)
		if err != nil {
			return nil, err
		}
		var pending []string
		switch {
		case step == StepPRAliases && s.Emergency:
			ch.Branch = branch(p, "rotate", newFP, pr.KindSpiffeID)
			ch.Title = fmt.Sprintf("EMERGENCY: replace %s CA (compromised key): node aliases pinned to the new CA only", p.Team)
			pending = []string{newFP}
		case step == StepPRAliases:
			ch.Branch = branch(p, "rotate", newFP, pr.KindSpiffeID)
			ch.Title = fmt.Sprintf("Rotate %s CA (1/2): node aliases for the new CA next to the current ones", p.Team)
			pending = []string{newFP}
		default:
			ch.Branch = branch(p, "retire", oldFP, pr.KindSpiffeID)
			ch.Title = fmt.Sprintf("Rotate %s CA (2/2): remove the node aliases of the old CA", p.Team)
		}
		ch.Message = fmt.Sprintf("%s\n\nTeam %s (namespace %s), format %s: aliases pinned to %s (spirepod pki rotate).", ch.Title, p.Team, p.Namespace, format, pinsOf(retire, oldFP, newFP))
		ch.Body = aliasesBody(p, s, oldFP, newFP, step, format)
		return &Change{Step: step, Change: ch, Pending: pending}, nil
	}
	return nil, fmt.Errorf("no pull request for step %s", step)
}

func pinsOf(retire bool, oldFP, newFP string) string {
	if retire {
		return newFP + " only"
	}
	return oldFP + " and " + newFP
}

func caRow(b *strings.Builder, label string, c *x509.Certificate) {
	i := pki.Describe(c)
	fmt.Fprintf(b, "| %s | `%s`, valid to %s, SHA-1 `%s`, SHA-256 `%s` |\n", label, i.Subject, i.NotAfter.Format("2006-01-02"), i.SHA1, i.SHA256)
}

func trustBody(p *project.Project, s *State, oldCA, newCA *x509.Certificate, retire bool) string {
	var b strings.Builder
	switch {
	case s.Emergency:
		fmt.Fprintf(&b, "**Emergency CA replacement** for team **%s** (namespace `%s`): the private key of its current x509pop CA is compromised. This adds the new CA to the trust list `%s` and removes the old one in the same change.\n\n", p.Team, p.Namespace, p.City.TrustList.Path)
	case retire:
		fmt.Fprintf(&b, "Last step of the CA rotation of team **%s** (namespace `%s`): every agent of the team now attests with the new CA, and the node aliases pinned to the old CA are already removed. This removes the old CA from the trust list `%s`.\n\n", p.Team, p.Namespace, p.City.TrustList.Path)
	default:
		fmt.Fprintf(&b, "First step of the CA rotation of team **%s** (namespace `%s`): the new CA joins the trust list `%s` **next to** the current one, so agents with a certificate of either CA attest while the team moves its agents over.\n\n", p.Team, p.Namespace, p.City.TrustList.Path)
	}
	b.WriteString("| | |\n|---|---|\n")
	caRow(&b, "Old CA", oldCA)
	caRow(&b, "New CA", newCA)
	b.WriteString("\nOnly public certificates change; spirepod refuses any content holding a private key.\n\n")
	b.WriteString("### For the platform team\n")
	switch {
	case s.Emergency:
		b.WriteString("- [ ] Merge the node-alias pull request of the same rotation **first** (`city check` fails this one until then: the old aliases still pin the old CA)\n")
		b.WriteString("- [ ] Merge this one, then reload the SPIRE server's x509pop trust list at once (restart, or SIGUSR1 with `plugin_data_file` on SPIRE >= 1.10)\n")
		fmt.Fprintf(&b, "- [ ] Until each pod of `%s` restarts, it has no SVID: that is the price of cutting off the compromised CA\n", p.StatefulSet)
	case retire:
		b.WriteString("- [ ] Merge, then reload the SPIRE server's x509pop trust list (restart, or SIGUSR1 with `plugin_data_file` on SPIRE >= 1.10)\n")
		b.WriteString("- [ ] The diff removes exactly one CERTIFICATE block (and its owner comment)\n")
	default:
		b.WriteString("- [ ] The diff adds exactly one CERTIFICATE block; the old CA stays\n")
		b.WriteString("- [ ] Merge, then reload the SPIRE server's x509pop trust list (restart, or SIGUSR1 with `plugin_data_file` on SPIRE >= 1.10): the team's `spirepod pki rotate` waits until a leaf of the new CA attests\n")
	}
	b.WriteString("\n_Opened by `spirepod pki rotate`._\n")
	return b.String()
}

func aliasesBody(p *project.Project, s *State, oldFP, newFP, step, format string) string {
	var b strings.Builder
	pod0 := p.PodName(0)
	file := registration.File(format)
	switch {
	case s.Emergency:
		fmt.Fprintf(&b, "**Emergency CA replacement** for team **%s** (namespace `%s`): every node alias in `%s` is pinned to the new CA `%s` only; the aliases pinned to the compromised CA `%s` are removed.\n\n", p.Team, p.Namespace, file, newFP, oldFP)
	case step == StepPRAliases:
		fmt.Fprintf(&b, "CA rotation of team **%s** (namespace `%s`): for %s, a second node alias with the **same ID** pinned to the new CA `%s`, next to the one pinned to the current CA `%s`. SPIRE applies an alias to every agent that matches any entry of that ID, so agents with a certificate of either CA keep their workloads' SVIDs.\n\n", p.Team, p.Namespace, eachPod(p.Replicas), newFP, oldFP)
		fmt.Fprintf(&b, "For pod `%s`: alias `%s`, entries `%s` (old CA, unchanged) and `%s` (new CA).\n\n", pod0, p.NodeAliasID(pod0),
			registration.EntryID(p.Namespace, p.CertificateName(pod0)), registration.EntryID(p.Namespace, registration.AliasName(p, pod0, newFP)))
	default:
		fmt.Fprintf(&b, "Last but one step of the CA rotation of team **%s** (namespace `%s`): every agent attests with the new CA `%s`, so the node aliases pinned to the old CA `%s` go. The file is what `spirepod pr spiffe-id` renders for the new CA: entry `%s` is pinned to the new CA, the second entry of each alias is deleted.\n\n", p.Team, p.Namespace, newFP, oldFP, registration.EntryID(p.Namespace, p.CertificateName(pod0)))
	}
	b.WriteString("### For the platform team\n")
	switch {
	case s.Emergency:
		b.WriteString("- [ ] Merge this **before** the trust-list pull request of the same rotation, and load it at once\n")
	case step == StepPRAliases:
		b.WriteString("- [ ] Merge with (or after) the trust-list pull request of the same rotation; `city check` warns until that one is merged\n")
	default:
		b.WriteString("- [ ] Load it as a reconcile: update entries whose selectors changed, then delete entries no longer in the file (never delete before updating: an alias would be missing in between)\n")
		b.WriteString("- [ ] Merge this before the pull request that removes the old CA from the trust list\n")
	}
	b.WriteString("\n_Opened by `spirepod pki rotate`._\n")
	return b.String()
}

// eachPod is "its one pod" or "each of its N pods".
func eachPod(n int) string {
	if n == 1 {
		return "its one pod"
	}
	return "each of its " + project.Count(n, "pod")
}
