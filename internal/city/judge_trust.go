package city

import (
	"context"
	"crypto/x509"
	"fmt"
	"strings"
	"time"

	"github.com/spirepod/spirepod/internal/check"
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
		if r.Status != check.Fail {
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

func (c *City) judgeServers() {
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
