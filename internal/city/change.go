package city

import (
	"bytes"
	"context"
	"errors"
	"path"
	"reflect"
	"sort"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/spirepod/spirepod/internal/pki"
	"github.com/spirepod/spirepod/internal/project"
	"github.com/spirepod/spirepod/internal/registration"
)

// Change is what differs between a base city and a head city: the paths,
// and the facts that appeared, vanished or changed owner in them (node-alias
// IDs, trust-list blocks). A finding is the change's when it involves any of
// them: a finding in an unchanged file counts when the change removed the
// alias its workload hangs under, or the CA its alias is pinned to.
type Change struct {
	// Paths are the changed paths (added, modified or deleted), sorted.
	Paths []string `json:"paths"`
	keys  map[string]bool
	// needles are the IDs, common names, fingerprints, entry IDs and object
	// names of the entries the changed folders load (before and after), and
	// the changed trust-list blocks: an unchanged file can only take part in
	// a finding of the change if its text holds one of them.
	needles [][]byte
	// folders are the team folders a changed path (or link) is in: judged
	// whole, at base and head.
	folders map[string]bool
	builds  *buildCache
	// trustBase is every CA of the base trust list with its owner (from
	// owner comments or directory-mode file names), when the change
	// touches the trust list.
	trustBase map[string]Owner
}

// touches says whether the change has a path in the team folder.
func (ch *Change) touches(folder string) bool { return ch.folders[folder] }

// concernsFolder says whether an unchanged folder can take part in a
// finding of the change: a file of it mentions a needle, or a
// kustomization of it can compose a value no file spells (a name prefix, a
// patch, a replacement), so only its build can tell.
func (ch *Change) concernsFolder(j *folderJob) bool {
	for _, p := range j.paths {
		if b, ok := j.data[p]; ok && isKustomization(p) && !verbatimKustomization(b) {
			return true
		}
	}
	for _, p := range j.paths {
		if b, ok := j.data[p]; ok && ch.concerns(p, b) {
			return true
		}
	}
	return false
}

// verbatimFields are the kustomization fields that never change an
// identity value of what they load (IDs, selectors, entry IDs, names): a
// build of a kustomization with only these yields the files' values as
// written.
var verbatimFields = map[string]bool{"apiVersion": true, "kind": true, "metadata": true, "resources": true, "namespace": true,
	"labels": true, "commonLabels": true, "commonAnnotations": true, "generatorOptions": true, "configMapGenerator": true,
	"images": true, "buildMetadata": true, "sortOptions": true}

func verbatimKustomization(b []byte) bool {
	var m map[string]any
	if yaml.Unmarshal(b, &m) != nil {
		return false
	}
	for k := range m {
		if !verbatimFields[k] {
			return false
		}
	}
	return true
}

// concerns says whether a file (path and content) may take part in a
// finding of the change: it changed, or its text mentions a needle. In a
// file with a backslash an escape could hide a needle: its entries are
// decoded (as their consumers decode them) and their values searched; a
// file that does not decode is always read.
func (ch *Change) concerns(p string, data []byte) bool {
	if ch.keys[fileKey(p)] {
		return true
	}
	if bytes.IndexByte(data, '\\') >= 0 {
		es, err := registration.Parse(p, data)
		if err != nil && !errors.Is(err, registration.ErrNotRegistration) {
			return true
		}
		var vals []string
		for _, e := range es {
			vals = append(vals, e.SpiffeID, e.ParentID, e.EntryID, e.Name)
			vals = append(vals, e.Selectors...)
		}
		data = []byte(strings.Join(vals, "\n"))
	}
	for _, n := range ch.needles {
		if bytes.Contains(data, n) {
			return true
		}
	}
	return false
}

// Changed compares base and head. Two commits of one repository are
// compared by their trees (unchanged folders are never read); an Overlay by
// the files it replaces; other trees by reading the files the rules read.
func Changed(ctx context.Context, base, head Tree, cfg Config) (*Change, error) {
	cfg, tp, err := cfg.prepare()
	if err != nil {
		return nil, err
	}
	paths, err := changedPaths(ctx, base, head, cfg, tp)
	if err != nil {
		return nil, err
	}
	ch := &Change{Paths: paths, keys: map[string]bool{}, folders: map[string]bool{}, builds: &buildCache{dir: cfg.BuildCache, salt: cfg.CacheSalt}}
	var outside []string
	trustChanged := false
	for _, p := range paths {
		ch.keys[fileKey(p)] = true
		if f, ok := tp.folderOf(p); ok {
			ch.folders[f.Path] = true
		} else if registrationNames[path.Base(p)] {
			outside = append(outside, p)
		}
		if inTrustList(p, cfg.TrustList) {
			trustChanged = true
		}
	}
	if len(ch.folders) > 0 || len(outside) > 0 {
		bAliases, bNeedles, err := ch.facts(ctx, base, cfg, tp, outside)
		if err != nil {
			return nil, err
		}
		hAliases, hNeedles, err := ch.facts(ctx, head, cfg, tp, outside)
		if err != nil {
			return nil, err
		}
		for id := range symmetricDiff(bAliases, hAliases) {
			ch.keys[aliasKey(id)] = true
		}
		for n := range bNeedles {
			hNeedles[n] = true
		}
		for n := range hNeedles {
			ch.needles = append(ch.needles, []byte(n))
		}
	}
	if trustChanged {
		if ch.trustBase, err = trustOwners(ctx, base, cfg); err != nil {
			return nil, err
		}
		b, err := trustSignatures(ctx, base, cfg)
		if err != nil {
			return nil, err
		}
		h, err := trustSignatures(ctx, head, cfg)
		if err != nil {
			return nil, err
		}
		for _, m := range []map[string]string{b, h} {
			for k := range m {
				if h[k] != b[k] && !ch.keys[trustKey(k)] {
					ch.keys[trustKey(k)] = true
					ch.needles = append(ch.needles, []byte(k))
				}
			}
		}
	}
	return ch, nil
}

// CheckChange keeps the findings of the whole city that involve ch, and
// adds those of the change itself (SPD312: whose CAs it touches).
func (c *City) CheckChange(ch *Change) []registration.Finding {
	var fs []finding
	for _, f := range c.findings {
		if f.involvesAny(ch.keys) || c.inTouchedFolder(ch, f.File) {
			fs = append(fs, f)
		}
	}
	fs = append(fs, c.trustChangeFindings(ch)...)
	sortFindings(fs)
	out := make([]registration.Finding, 0, len(fs))
	for _, f := range fs {
		out = append(out, f.Finding)
	}
	return out
}

// inTouchedFolder: a finding located in a team folder the change touches
// is the change's, whichever file of the folder it names: the folder's
// build reads them together (a changed kustomization changes what an
// unchanged file yields).
func (c *City) inTouchedFolder(ch *Change, file string) bool {
	f, ok := c.tp.folderOf(file)
	return ok && ch.folders[f.Path]
}

// CheckOverlay judges base with files written and deleted (a PR's change)
// and returns the findings that involve the change: what the platform's
// `city check --base` would report on that PR.
func CheckOverlay(ctx context.Context, base Tree, cfg Config, files map[string][]byte, deleted []string) ([]registration.Finding, error) {
	c, _, err := LoadChange(ctx, base, Overlay(base, files, deleted), cfg)
	if err != nil {
		return nil, err
	}
	return c.Check(), nil
}

// LoadChange judges head for a change against base: the whole city is
// read, but only the files that can take part in a finding of the change
// are parsed and judged (those that changed, or mention an ID, CN or CA
// the change touches). The City's Check returns the change's findings:
// the same as CheckChange on a full Load, at a fraction of the cost.
func LoadChange(ctx context.Context, base, head Tree, cfg Config) (*City, *Change, error) {
	ch, err := Changed(ctx, base, head, cfg)
	if err != nil {
		return nil, nil, err
	}
	c, err := load(ctx, head, cfg, ch)
	if err != nil {
		return nil, nil, err
	}
	return c, ch, nil
}

func changedPaths(ctx context.Context, base, head Tree, cfg Config, tp *teamPath) ([]string, error) {
	if o, ok := head.(*overlay); ok && sameTree(o.base, base) {
		var cand []string
		for p := range o.files {
			cand = append(cand, p)
		}
		old, err := base.Read(ctx, cand)
		if err != nil {
			return nil, err
		}
		var out []string
		for _, p := range cand {
			if b, existed := old[p]; !existed || !bytes.Equal(b, o.files[p]) {
				out = append(out, p)
			}
		}
		if len(o.deleted) > 0 {
			var del []string
			for p := range o.deleted {
				del = append(del, p)
			}
			existed, err := base.Read(ctx, del)
			if err != nil {
				return nil, err
			}
			for p := range existed {
				out = append(out, p)
			}
		}
		sort.Strings(out)
		return out, nil
	}
	if hg, ok := head.(*GitTree); ok {
		if bg, ok := base.(*GitTree); ok && hg.sameRepo(bg) {
			return hg.changedPaths(ctx, bg)
		}
	}
	// Any two trees: compare the files the rules read.
	bf, err := base.Files(ctx)
	if err != nil {
		return nil, err
	}
	hf, err := head.Files(ctx)
	if err != nil {
		return nil, err
	}
	relevant := map[string]bool{}
	for _, list := range [][]string{bf, hf} {
		for _, p := range list {
			_, inFolder := tp.folderOf(p)
			if inFolder || registrationNames[path.Base(p)] || serverCandidate(p, cfg, tp) || inTrustList(p, cfg.TrustList) {
				relevant[p] = true
			}
		}
	}
	var rel []string
	for p := range relevant {
		rel = append(rel, p)
	}
	b, err := base.Read(ctx, rel)
	if err != nil {
		return nil, err
	}
	h, err := head.Read(ctx, rel)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, p := range rel {
		bb, inB := b[p]
		hb, inH := h[p]
		if inB != inH || !bytes.Equal(bb, hb) {
			out = append(out, p)
		}
	}
	// Links (symbolic links, submodules) that came or went.
	bl, err := treeLinks(ctx, base)
	if err != nil {
		return nil, err
	}
	hl, err := treeLinks(ctx, head)
	if err != nil {
		return nil, err
	}
	set := func(ss []string) map[string]bool {
		m := map[string]bool{}
		for _, x := range ss {
			m[x] = true
		}
		return m
	}
	for p := range symmetricDiff(set(bl), set(hl)) {
		out = append(out, p)
	}
	sort.Strings(out)
	return out, nil
}

// sameTree says whether two Trees are the same value (a MapTree is a map,
// which == cannot compare).
func sameTree(a, b Tree) bool {
	ta, tb := reflect.TypeOf(a), reflect.TypeOf(b)
	if ta != tb {
		return false
	}
	if ta.Comparable() {
		return a == b
	}
	va, vb := reflect.ValueOf(a), reflect.ValueOf(b)
	if va.Kind() == reflect.Map {
		return va.Pointer() == vb.Pointer()
	}
	return false
}

func inTrustList(p string, tl project.TrustList) bool {
	if tl.Mode == project.TrustListDirectory {
		return path.Dir(p) == tl.Path
	}
	return p == tl.Path
}

// facts are the node-alias IDs and the needles of what the changed
// folders load in a tree (each folder judged whole, its kustomization
// built) and of changed registration files outside folders: every SPIFFE
// ID (but the server's, which every alias names), agent common name, CA
// fingerprint, entry ID and object name.
func (ch *Change) facts(ctx context.Context, t Tree, cfg Config, tp *teamPath, outside []string) (aliases, needles map[string]bool, err error) {
	aliases, needles = map[string]bool{}, map[string]bool{}
	files, err := t.Files(ctx)
	if err != nil {
		return nil, nil, err
	}
	jobs := map[string]*folderJob{}
	var reads []string
	for _, p := range files {
		if f, ok := tp.folderOf(p); ok && ch.folders[f.Path] {
			if jobs[f.Path] == nil {
				jobs[f.Path] = &folderJob{f: f}
			}
			jobs[f.Path].paths = append(jobs[f.Path].paths, p)
			reads = append(reads, p)
		}
	}
	data, err := t.Read(ctx, append(reads, outside...))
	if err != nil {
		return nil, nil, err
	}
	c := &City{cfg: cfg, tp: tp, builds: ch.builds}
	var es []registration.Entry
	for _, j := range jobs {
		j.data = data
		es = append(es, c.judgeCached(j).entries...)
	}
	for _, p := range outside {
		if b, ok := data[p]; ok {
			more, _ := registration.Parse(p, b)
			es = append(es, more...)
		}
	}
	for _, e := range es {
		if e.Node {
			aliases[e.SpiffeID] = true
		}
		// Global names only: a ClusterStaticEntry's name (cluster-scoped);
		// a SpiffeID's is its namespace's, and many teams share it.
		global := []string{e.SpiffeID, e.ParentID, e.EntryID}
		if e.Format == registration.FormatClusterStaticEntry {
			global = append(global, e.Name)
		}
		for _, id := range global {
			if id != "" && !registration.IsServerID(id) {
				needles[id] = true
			}
		}
		for _, v := range selectorValues(e, pki.CNSelectorPrefix) {
			needles[v] = true
		}
		for _, v := range selectorValues(e, pki.SelectorPrefix) {
			needles[v] = true
		}
	}
	return aliases, needles, nil
}

func symmetricDiff(a, b map[string]bool) map[string]bool {
	out := map[string]bool{}
	for k := range a {
		if !b[k] {
			out[k] = true
		}
	}
	for k := range b {
		if !a[k] {
			out[k] = true
		}
	}
	return out
}

// trustSignatures describes each trust-list block of a tree by what a
// change to it could alter: present, trusted, owner comment.
func trustSignatures(ctx context.Context, t Tree, cfg Config) (map[string]string, error) {
	files, err := t.Files(ctx)
	if err != nil {
		return nil, err
	}
	tf := trustPaths(files, cfg.TrustList)
	data, err := t.Read(ctx, tf)
	if err != nil {
		return nil, err
	}
	tl := readTrustList(cfg.TrustList, data)
	owners := map[string]map[string]Owner{}
	for f, cs := range tl.Comments {
		owners[f] = map[string]Owner{}
		for _, o := range cs {
			if _, dup := owners[f][o.SHA1]; !dup {
				owners[f][o.SHA1] = o
			}
		}
	}
	out := map[string]string{}
	for _, b := range tl.Blocks {
		if b.Key == "" {
			continue
		}
		o := owners[b.File][b.Key]
		sig := b.File + "|" + b.Type
		if b.Trusted {
			sig += "|trusted"
		}
		sig += "|" + o.Team + "|" + o.Namespace
		if b.above != nil {
			sig += "|above:" + b.above.SHA1
		}
		out[b.Key] += sig + ";"
	}
	return out, nil
}

// trustOwners lists a tree's trust-list CAs with the owner its owner
// comments (or, in directory mode, its file name) give.
func trustOwners(ctx context.Context, t Tree, cfg Config) (map[string]Owner, error) {
	files, err := t.Files(ctx)
	if err != nil {
		return nil, err
	}
	data, err := t.Read(ctx, trustPaths(files, cfg.TrustList))
	if err != nil {
		return nil, err
	}
	tl := readTrustList(cfg.TrustList, data)
	out := map[string]Owner{}
	for _, b := range tl.Blocks {
		if !b.isCert() || b.Key == "" {
			continue
		}
		if _, ok := out[b.Key]; ok {
			continue
		}
		var o Owner
		if cs := tl.commentsFor(b.File, b.Key); len(cs) > 0 {
			o = cs[0]
		} else if tl.Mode == project.TrustListDirectory {
			o = Owner{Team: teamFromFileName(b.File)}
		}
		out[b.Key] = o
	}
	return out, nil
}
