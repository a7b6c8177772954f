package pr

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"path"
	"strings"

	"github.com/spirepod/spirepod/internal/pki"
	"github.com/spirepod/spirepod/internal/project"
	"github.com/spirepod/spirepod/internal/registration"
)

// SpiffeIDOptions are the inputs of the spiffe-id change.
type SpiffeIDOptions struct {
	Project *project.Project
	CA      *x509.Certificate
	// More are further CAs every alias is also pinned to (a CA rotation):
	// one more alias entry per pod and CA, same ID (registration.EntriesFor).
	More []*x509.Certificate
	// Format is spiffeid, cluster-static-entry or entry-json.
	Format string
}

// TeamPath is the team folder in the city (Project.CityTeamDir).
func TeamPath(p *project.Project) string { return p.CityTeamDir() }

// ValidationError refuses entries the offline validator finds errors in.
type ValidationError struct{ Findings []registration.Finding }

func (e *ValidationError) Error() string {
	var msgs []string
	for _, f := range e.Findings {
		if f.Severity == registration.SeverityError {
			msgs = append(msgs, f.Code+": "+f.Message)
		}
	}
	return "the registration would not work: " + strings.Join(msgs, "; ")
}

// SpiffeID builds the change registering node aliases and workload entries.
// The branch holds exactly one format's file: switching --format removes the
// other format's file (and its kustomization entry) that spirepod wrote.
func SpiffeID(o SpiffeIDOptions) (*Change, []registration.Entry, error) {
	p := o.Project
	if p.Legacy() {
		return nil, nil, ErrLegacyNames
	}
	es := registration.EntriesFor(p, o.CA, o.More...)
	for i := range es { // validated as the format will carry them
		es[i].Format = o.Format
		switch o.Format {
		case registration.FormatSpiffeID:
			es[i].Namespace, es[i].SelectorNamespace = p.Namespace, p.Namespace
		case registration.FormatClusterStaticEntry:
			es[i].ClassName = p.Registration.ClassName
		}
	}
	if fs := registration.Validate(es, registration.ValidateOptions{TrustDomain: p.TrustDomain, Classless: p.Registration.WatchClassless}); hasErrors(fs) {
		return nil, nil, &ValidationError{Findings: fs}
	}
	content, err := registration.Render(p, es, o.Format)
	if err != nil {
		return nil, nil, err
	}
	dir := TeamPath(p)
	if dir == "" {
		return nil, nil, errors.New("city.teamPath is empty in spirepod.yaml")
	}
	file := registration.File(o.Format)
	ch := &Change{
		Kind: KindSpiffeID, Team: p.Team, Branch: BranchName(p.Team, KindSpiffeID),
		Title:   fmt.Sprintf("Register SPIFFE IDs for %s (%s)", p.Team, p.Namespace),
		Message: fmt.Sprintf("Register SPIFFE IDs for %s\n\n%d node aliases pinned to CA %s and %d workload entries, format %s.", p.Team, p.Replicas, pki.SHA1Fingerprint(o.CA), p.Replicas, o.Format),
		Body:    spiffeIDBody(p, o.CA, o.Format, path.Join(dir, file)),
	}
	ch.Compute = func(ctx context.Context, read ReadFunc) ([]File, error) {
		fp := path.Join(dir, file)
		old, ok, err := read(ctx, fp)
		if err != nil {
			return nil, err
		}
		files := []File{{Path: fp, Old: old, OldExists: ok, New: content}}
		// Exactly one format: the other file spirepod writes goes.
		var stale string
		for _, f := range []string{registration.File(registration.FormatEntryJSON), registration.File(registration.FormatSpiffeID)} {
			if f == file {
				continue
			}
			sp := path.Join(dir, f)
			oldS, sOK, err := read(ctx, sp)
			if err != nil {
				return nil, err
			}
			if sOK {
				files = append(files, File{Path: sp, Old: oldS, OldExists: true, Delete: true})
				stale = f
			}
		}
		kp := path.Join(dir, "kustomization.yaml")
		if o.Format != project.FormatEntryJSON || stale != "" {
			oldK, kOK, err := read(ctx, kp)
			if err != nil {
				return nil, err
			}
			newK := oldK
			if stale != "" && kOK {
				if newK, err = removeResource(newK, kp, stale); err != nil {
					return nil, err
				}
			}
			if o.Format != project.FormatEntryJSON {
				if newK, err = addResource(newK, kOK || len(newK) > 0, kp, file); err != nil {
					return nil, err
				}
			}
			if kOK || o.Format != project.FormatEntryJSON {
				files = append(files, File{Path: kp, Old: oldK, OldExists: kOK, New: newK})
			}
		}
		return files, nil
	}
	return ch, es, nil
}

func hasErrors(fs []registration.Finding) bool {
	for _, f := range fs {
		if f.Severity == registration.SeverityError {
			return true
		}
	}
	return false
}

func spiffeIDBody(p *project.Project, ca *x509.Certificate, format, file string) string {
	var b strings.Builder
	td := p.TrustDomain
	fmt.Fprintf(&b, "Registers the SPIFFE IDs of team **%s** (namespace `%s`, environment %s) in `%s` (format %s).\n\n", p.Team, p.Namespace, p.Environment, file, format)
	if p.Replicas == 1 {
		fmt.Fprintf(&b, "For the one pod `%s-0` of StatefulSet `%s`:\n", p.StatefulSet, p.StatefulSet)
	} else {
		fmt.Fprintf(&b, "For each of the %s `%s-<i>` of StatefulSet `%s`:\n", project.Count(p.Replicas, "pod"), p.StatefulSet, p.StatefulSet)
	}
	pod0 := p.PodName(0)
	fmt.Fprintf(&b, "- a node alias `%s` (for pod `%s`), parent `spiffe://%s/spire/server`, selectors `x509pop:subject:cn:%s` and `x509pop:ca:fingerprint:%s`\n",
		p.NodeAliasID(pod0), pod0, td, p.AgentCN(pod0), pki.SHA1Fingerprint(ca))
	fmt.Fprintf(&b, "- a workload entry `%s` for Envoy, parented to that alias, selectors `unix:uid:%d` and `unix:gid:%d`\n\n", p.WorkloadSpiffeID(), p.Registration.EnvoyUID, p.Registration.EnvoyGID)
	b.WriteString("### Reviewer checklist\n")
	b.WriteString("- [ ] The trust-ca PR of this team is merged and the SPIRE server restarted\n")
	b.WriteString("- [ ] Every node alias carries the `x509pop:ca:fingerprint` selector of this team's CA (without it any team on the trust list could mint these agents' common names)\n")
	fmt.Fprintf(&b, "- [ ] Every ID is under this team's scope `%s` and no other folder registers it (spirepod checked the base branch; `spirepod city check` does it in CI)\n", p.Scope())
	b.WriteString("- [ ] The SPIRE server's x509pop `agent_path_template` names agents by certificate fingerprint (the default): with a common-name template another trusted CA could take these agents' IDs\n")
	b.WriteString("\n_Opened by `spirepod pr spiffe-id`._\n")
	return b.String()
}
