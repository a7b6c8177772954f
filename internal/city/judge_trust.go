package city

import (
	"context"
	"crypto/x509"
	"sort"

	"fmt"
	"github.com/spirepod/spirepod/internal/registration"
	"strings"
	"time"

	"github.com/spirepod/spirepod/internal/checklist"
	"github.com/spirepod/spirepod/internal/pki"
	"github.com/spirepod/spirepod/internal/project"
)

// resolveOwners says who put each trust-list certificate there: the owner
// comment above it; in directory mode the file name (<team>.crt.pem) when it
// names a team folder; else the commit that added the block (spirepod's
// message names team and namespace; otherwise only the author is known).
func (c *City) resolveOwners(ctx context.Context, t Tree) error {
	tl := c.trust
	pending := map[string]map[string]bool{} // file → block keys
	var pinned map[string]bool
	if c.focus != nil { // a change's check needs the owners of what it involves
		pinned = map[string]bool{}
		for _, e := range c.entries {
			for _, fp := range selectorValues(e, pki.SelectorPrefix) {
				pinned[fp] = true
			}
		}
	}
	for _, b := range tl.Blocks {
		if !b.isCert() || b.Key == "" {
			continue
		}
		if o, ok := c.ownerFromComments(b); ok {
			b.Owner = o
			continue
		}
		if tl.Mode == project.TrustListDirectory {
			team := teamFromFileName(b.File)
			b.Owner = Owner{Team: team, SHA1: b.Key, Source: "file name"}
			if f, ok := c.folderOfTeam(team); ok {
				b.Owner.Namespace = f.Namespace
				continue
			}
		}
		if pinned != nil && !pinned[b.Key] && !c.focus.keys[trustKey(b.Key)] && !c.focus.keys[fileKey(b.File)] {
			continue // no finding of the change can name this owner
		}
		if pending[b.File] == nil {
			pending[b.File] = map[string]bool{}
		}
		pending[b.File][b.Key] = true
	}
	h := historianOf(t)
	c.withHistory = h != nil
	if h == nil || len(pending) == 0 {
		return nil
	}
	for file, keys := range pending {
		added, err := h.addedBy(ctx, file, keys)
		if err != nil {
			return err
		}
		for _, b := range tl.Blocks {
			ci, ok := added[b.Key]
			if !ok || b.File != file {
				continue
			}
			short := ci.Hash[:min(12, len(ci.Hash))]
			if team, ns, ok := ownerFromCommit(ci.Message); ok {
				b.Owner = Owner{Team: team, Namespace: ns, SHA1: b.Key, Source: "commit " + short}
				continue
			}
			if b.Owner.Team == "" { // a file name's team stays; the author is a person, not a team
				b.Owner = Owner{Author: ci.Author, SHA1: b.Key, Source: "author of commit " + short}
			}
		}
	}
	return nil
}

func historianOf(t Tree) historian {
	switch h := t.(type) {
	case historian:
		return h
	case interface{ history() historian }:
		return h.history()
	}
	return nil
}

// ownerFromComments is the first owner comment naming the block's
// fingerprint; contradicting comments are SPD311.
func (c *City) ownerFromComments(b *trustBlock) (Owner, bool) {
	inv := []string{trustKey(b.Key)}
	if b.above != nil && b.above.SHA1 != b.Key {
		c.add(CodeOwnerConflict, sevW, b.File, b.above.Line, inv,
			"the owner comment directly above this certificate (sha1 %s) names sha1 %s: comments belong above their own block", b.Key, b.above.SHA1)
	}
	cs := c.trust.commentsFor(b.File, b.Key)
	if len(cs) == 0 {
		return Owner{}, false
	}
	first := cs[0]
	for _, o := range cs[1:] {
		if o.Team != first.Team || o.Namespace != first.Namespace {
			c.add(CodeOwnerConflict, sevW, b.File, o.Line, inv,
				"owner comment names %s for certificate %s, but line %d names %s: the first one is used", o, b.Key, first.Line, first)
		}
	}
	return first, true
}

// folderOfTeam finds the folder a directory-mode file name's team denotes:
// the folder of that team, or of the namespace of that name.
func (c *City) folderOfTeam(team string) (Folder, bool) {
	for _, f := range c.folders {
		if f.Team == team || (f.Team == "" && f.Namespace == team) {
			return f, true
		}
	}
	return Folder{}, false
}

func (c *City) judgeTrustList() {
	tl := c.trust
	if !tl.Present {
		c.add(CodeTrustListAbsent, sevW, tl.Path, 0, []string{fileKey(tl.Path)},
			"no x509pop trust list at %s (mode %s): node-alias pins (SPD105, SPD106) are not checked", tl.Path, tl.Mode)
		return
	}
	for _, p := range tl.Unlisted {
		c.add(CodeUnlisted, sevW, p, 0, []string{fileKey(p), fileKey(tl.Kustomization)},
			"%s does not list this file in a configMapGenerator or secretGenerator: the SPIRE server never sees its CAs", tl.Kustomization)
	}
	for _, m := range tl.Missing {
		c.add(CodeListedMissing, sevE, tl.Kustomization, m.Line, []string{fileKey(tl.Kustomization), fileKey(tl.Path + "/" + m.Name)},
			"lists %s, which does not exist: kustomize build fails, and with it the SPIRE server's manifests", m.Name)
	}
	seen := map[string]*trustBlock{}
	number := map[string]int{} // SPIRE's block number within its file
	for _, b := range tl.Blocks {
		n := number[b.File]
		number[b.File]++
		if c.focus != nil && !c.focus.keys[trustKey(b.Key)] && !c.focus.keys[fileKey(b.File)] {
			// Not the change's: its findings would not be reported. A
			// duplicate is still seen, so a later changed copy is judged.
			if _, dup := seen[b.Key]; !dup && b.isCert() {
				seen[b.Key] = b
			}
			continue
		}
		inv := []string{trustKey(b.Key)}
		cert, parseErr := b.parse()
		switch {
		case b.Type == "":
			inv = []string{fileKey(b.File)}
			c.add(CodeNotCertificate, sevW, b.File, b.Line, inv,
				"a malformed PEM block: SPIRE's loader skips it silently, so whatever it was meant to hold is not trusted")
			continue
		case strings.Contains(b.Type, "PRIVATE KEY"):
			c.add(CodeNotCertificate, sevE, b.File, b.Line, append(inv, fileKey(b.File)),
				"a private key (%s) is on the trust list: it is public now; make a new CA (`spirepod pki gen --force`) and remove this block", b.Type)
			continue
		case !b.isCert():
			c.add(CodeNotCertificate, sevW, b.File, b.Line, inv,
				"a PEM %q block, not a certificate: SPIRE's loader skips it", b.Type)
			continue
		case parseErr != nil:
			c.add(CodeNotCertificate, sevE, b.File, b.Line, append(inv, fileKey(b.File)),
				"a CERTIFICATE block that does not parse (%v): SPIRE refuses the whole bundle (\"unable to parse certificate in block %d\"), so no agent of any team attests", parseErr, n)
			continue
		}
		name := fmt.Sprintf("CA %q (sha1 %s)", cert.Subject.CommonName, b.Key)
		if first, dup := seen[b.Key]; dup {
			also := ""
			if ownerKnown(first.Owner) && ownerKnown(b.Owner) && (first.Owner.Team != b.Owner.Team || first.Owner.Namespace != b.Owner.Namespace) {
				also = fmt.Sprintf("; the copies name different owners (%s, %s)", first.Owner, b.Owner)
			}
			c.add(CodeDuplicateCA, sevW, b.File, b.Line, inv, "%s is already on the trust list at %s:%d%s", name, first.File, first.Line, also)
			continue
		}
		seen[b.Key] = b
		c.judgeCA(b, cert, name, inv)
		if !ownerKnown(b.Owner) {
			how := "no owner comment above it"
			switch {
			case b.Owner.Author != "":
				how = fmt.Sprintf("known only as %s, %s, whose message does not name a team", b.Owner.Author, b.Owner.Source)
			case c.withHistory:
				how += ", and no commit in the trust list's history added it (a shallow clone?)"
			default:
				how += ", and the city is not read from git, so its history cannot tell"
			}
			c.add(CodeOwnerUnknown, sevN, b.File, b.Line, inv, "owner of %s is unknown (%s): pins of other teams to it cannot be detected", name, how)
		} else if b.Owner.Namespace == "" {
			if _, ok := c.folderOfTeam(b.Owner.Team); !ok {
				c.add(CodeOwnerUnknown, sevN, b.File, b.Line, inv,
					"owner of %s is known only as team %s (%s), which names no team folder", name, b.Owner.Team, b.Owner.Source)
			}
		}
	}
}

// judgeCA maps pki.InspectCA's verdict (the one judge of a team CA) to codes.
func (c *City) judgeCA(b *trustBlock, cert *x509.Certificate, name string, inv []string) {
	now := c.cfg.Now
	for _, r := range pki.InspectCA("", cert, nil, now) {
		if r.Status != checklist.Fail {
			continue
		}
		switch r.ID {
		case pki.RuleCABasicConstraints:
			c.add(CodeNotCA, sevE, b.File, b.Line, inv, "%s: %s", name, r.Message)
		case pki.RuleCAKeyCertSign:
			c.add(CodeNoKeyCertSign, sevE, b.File, b.Line, inv, "%s: %s", name, r.Message)
		case pki.RuleValidity:
			c.add(CodeNotValid, sevE, b.File, b.Line, inv, "%s: %s", name, r.Message)
		}
	}
	left := cert.NotAfter.Sub(now)
	if !now.Before(cert.NotBefore) && left > 0 && left < time.Duration(c.cfg.ExpiryDays)*24*time.Hour {
		c.add(CodeExpiresSoon, sevW, b.File, b.Line, inv, "%s expires in %d days (%s): every agent it signed stops attesting then",
			name, int(left.Hours()/24), cert.NotAfter.UTC().Format(time.RFC3339))
	}
}

// judgeTrustShared: the trust list is shared state. SPD313, a CA with the
// subject or subject key ID of another owner's CA (Go's verifier tries
// every pool CA whose subject matches a leaf's issuer, up to 100 signature
// checks per chain: look-alikes ahead of a team's CA make its leaves fail);
// SPD314, more CAs for one owner than the limit.
func (c *City) judgeTrustShared() {
	type ca struct {
		b    *trustBlock
		cert *x509.Certificate
	}
	var cas []ca
	seen := map[string]bool{}
	for _, b := range c.trust.Blocks {
		if !b.isCert() || seen[b.Key] {
			continue
		}
		cert, err := b.parse()
		if err != nil {
			continue
		}
		seen[b.Key] = true
		cas = append(cas, ca{b, cert})
	}
	involved := func(b *trustBlock) bool {
		return c.focus == nil || c.focus.keys[trustKey(b.Key)] || c.focus.keys[fileKey(b.File)]
	}
	bySubject, bySKID := map[string][]ca{}, map[string][]ca{}
	for _, x := range cas {
		bySubject[string(x.cert.RawSubject)] = append(bySubject[string(x.cert.RawSubject)], x)
		if len(x.cert.SubjectKeyId) > 0 {
			bySKID[string(x.cert.SubjectKeyId)] = append(bySKID[string(x.cert.SubjectKeyId)], x)
		}
	}
	for _, x := range cas {
		if !involved(x.b) {
			continue
		}
		for _, group := range []struct {
			what string
			cas  []ca
		}{{"subject " + x.cert.Subject.String(), bySubject[string(x.cert.RawSubject)]}, {fmt.Sprintf("subject key ID %x", x.cert.SubjectKeyId), bySKID[string(x.cert.SubjectKeyId)]}} {
			var others []string
			inv := []string{trustKey(x.b.Key)}
			for _, y := range group.cas {
				if y.b.Key == x.b.Key || sameOwner(x.b.Owner, y.b.Owner) {
					continue
				}
				others = append(others, fmt.Sprintf("%s:%d (sha1 %s, owner %s)", y.b.File, y.b.Line, y.b.Key, ownerName(y.b.Owner)))
				inv = append(inv, trustKey(y.b.Key))
			}
			if len(others) > 0 {
				c.add(CodeLookAlikeCA, sevE, x.b.File, x.b.Line, inv,
					"CA sha1 %s (owner %s) has the %s of another owner's CA: %s; agents' leaves of that CA are checked against both, and enough look-alikes make them fail",
					x.b.Key, ownerName(x.b.Owner), group.what, strings.Join(others, ", "))
			}
		}
	}
	byOwner := map[string][]ca{}
	var order []string
	for _, x := range cas {
		if !ownerKnown(x.b.Owner) {
			continue
		}
		k := x.b.Owner.Team + "/" + x.b.Owner.Namespace
		if _, ok := byOwner[k]; !ok {
			order = append(order, k)
		}
		byOwner[k] = append(byOwner[k], x)
	}
	for _, k := range order {
		list := byOwner[k]
		if len(list) <= c.cfg.MaxCAsPerTeam {
			continue
		}
		for _, x := range list[c.cfg.MaxCAsPerTeam:] {
			if involved(x.b) {
				c.add(CodeTooManyCAs, sevE, x.b.File, x.b.Line, []string{trustKey(x.b.Key)},
					"owner %s has %d CAs on the trust list, more than the limit of %d (--max-cas-per-team): a rotation needs two", ownerName(x.b.Owner), len(list), c.cfg.MaxCAsPerTeam)
			}
		}
	}
}

// sameOwner: two known owners that name the same team (by namespace when
// both know it). Unknown owners are never the same.
func sameOwner(a, b Owner) bool {
	if !ownerKnown(a) || !ownerKnown(b) {
		return false
	}
	if a.Namespace != "" && b.Namespace != "" {
		return a.Namespace == b.Namespace
	}
	return a.Team == b.Team
}

func ownerName(o Owner) string {
	if !ownerKnown(o) {
		return "unknown"
	}
	return o.String()
}

// judgeTrustChange: SPD312, a change may add or replace only one team's
// CAs, never re-own a CA, and never remove a team's last CA unless it also
// removes that team's folder's registrations (a team leaving the city).
func (c *City) trustChangeFindings(ch *Change) []finding {
	if ch == nil || ch.trustBase == nil || c.trust == nil || !c.trust.Present {
		return nil
	}
	var out []finding
	add := func(file string, line int, inv []string, format string, args ...any) {
		out = append(out, finding{Finding: registration.Finding{Code: CodeOtherTeamsCA, Severity: sevE, File: file, Line: line,
			Message: fmt.Sprintf(format, args...)}, involves: inv})
	}
	head := map[string]*trustBlock{}
	headCount := map[string]int{}
	for _, b := range c.trust.Blocks {
		if b.isCert() && b.Key != "" {
			if _, ok := head[b.Key]; !ok {
				head[b.Key] = b
				if ownerKnown(b.Owner) {
					headCount[ownerKey(b.Owner)]++
				}
			}
		}
	}
	touched := map[string]bool{}
	type event struct {
		key, what string
		owner     Owner
		b         *trustBlock
	}
	var events []event
	for k, bo := range ch.trustBase {
		hb, still := head[k]
		switch {
		case !still:
			events = append(events, event{k, "removes", bo, nil})
		case ownerKnown(bo) && !sameOwner(hb.Owner, bo):
			events = append(events, event{k, "re-owns", bo, hb})
		}
	}
	for k, hb := range head {
		if _, was := ch.trustBase[k]; !was && ch.keys[trustKey(k)] {
			events = append(events, event{k, "adds", hb.Owner, hb})
		}
	}
	for _, e := range events {
		if ownerKnown(e.owner) {
			touched[ownerKey(e.owner)] = true
		}
	}
	sort.Slice(events, func(i, j int) bool { return events[i].key < events[j].key })
	for _, e := range events {
		file, line := c.trust.Path, 0
		if e.b != nil {
			file, line = e.b.File, e.b.Line
		}
		inv := []string{trustKey(e.key)}
		switch {
		case e.what == "re-owns":
			add(file, line, inv, "the change re-owns CA sha1 %s from %s to %s: a team's CA keeps its owner (pins of the new owner would follow it)",
				e.key, e.owner, ownerName(e.b.Owner))
		case len(touched) > 1 && e.what != "adds":
			var teams []string
			for t := range touched {
				teams = append(teams, t)
			}
			sort.Strings(teams)
			add(file, line, inv, "the change %s CA sha1 %s of %s and touches the CAs of %d teams (%s): a change may add or replace one team's CAs only",
				e.what, e.key, ownerName(e.owner), len(teams), strings.Join(teams, ", "))
		case e.what == "removes" && ownerKnown(e.owner) && headCount[ownerKey(e.owner)] == 0 && !c.changeRemovesFolderOf(ch, e.owner):
			add(file, line, inv, "the change removes CA sha1 %s, the last CA of %s: every agent of that team stops attesting (a team leaving removes its folder's registrations in the same change)",
				e.key, e.owner)
		}
	}
	return out
}

// ownerKey names an owner's team for counting: by team name (which every
// owner source gives), else namespace.
func ownerKey(o Owner) string {
	if o.Team != "" {
		return "team " + o.Team
	}
	return "namespace " + o.Namespace
}

// changeRemovesFolderOf: the change touches the owner's team folder and
// that folder registers nothing at head.
func (c *City) changeRemovesFolderOf(ch *Change, o Owner) bool {
	for k := range ch.folders {
		f := c.folders[k]
		if !sameTeam(o, f) {
			continue
		}
		for i := range c.entries {
			if c.keyOf[i] == k {
				return false
			}
		}
		return true
	}
	return false
}

func (c *City) judgeServers() {
	for _, cc := range c.controllers {
		inv := []string{fileKey(cc.File)}
		switch {
		case cc.EntryIDPrefix == "":
			c.add(CodeControllerPrefix, sevE, cc.File, cc.Line, inv,
				"spire-controller-manager runs without entryIDPrefix: it treats every entry on the server as its own and deletes those it did not declare, entry-json teams' entries included")
		case strings.HasPrefix(registration.EntryIDPrefix, cc.EntryIDPrefix) || strings.HasPrefix(cc.EntryIDPrefix, registration.EntryIDPrefix):
			c.add(CodeControllerPrefix, sevE, cc.File, cc.Line, inv,
				"spire-controller-manager's entryIDPrefix %q overlaps the teams' entry IDs (%s<namespace>.…): it would take them for its own and delete them", cc.EntryIDPrefix, registration.EntryIDPrefix)
		}
	}
	for _, s := range c.servers {
		inv := []string{fileKey(s.File)}
		switch {
		case s.DataFile != "":
			c.add(CodeServerPluginFile, sevN, s.File, s.Line, inv,
				`NodeAttestor "x509pop" reads its plugin data from plugin_data_file %s: its agent_path_template is not judged`, s.DataFile)
		case s.Mode == "spiffe":
			// Agents present SVIDs: agent IDs come from SPIRE's own CA.
		case !s.usesFingerprint():
			c.add(CodeCNTemplate, sevE, s.File, s.Line, inv,
				"x509pop agent_path_template %q does not use .Fingerprint: with a common-name template another trusted CA's leaf with the same CN gets the same agent ID and receives the victim's SVIDs until the entry cache refreshes (measured 4-5 s)", s.Template)
		}
	}
}
