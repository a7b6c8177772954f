// Package city judges a city repository as the platform team reviews it:
// every team folder's registration entries (the three formats of package
// registration), the x509pop trust list and the SPIRE server config, with
// rules that cross folders (one team registering another's alias, pinning
// another's CA, a common-name agent path template). `spirepod city check`
// runs it on a checkout; `pr trust-ca` and `pr spiffe-id` run it on the base
// they build on plus their own change (Overlay) and keep the findings that
// involve that change.
package city

import (
	"context"
	"errors"
	"fmt"
	"path"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/sync/errgroup"

	"github.com/spirepod/spirepod/internal/pki"
	"github.com/spirepod/spirepod/internal/project"
	"github.com/spirepod/spirepod/internal/registration"
)

// City is a city read from a Tree, with its findings.
type City struct {
	cfg     Config
	tp      *teamPath
	folders map[string]Folder // by path
	// entries, each with the folder key of its file.
	entries []registration.Entry
	keyOf   []string
	trust   *trustList
	servers []serverConfig
	// controllers are the spire-controller-manager configs the city holds.
	controllers []controllerConfig
	// regFiles are the files holding registration entries.
	regFiles map[string]bool

	findings []finding
	// withHistory: the tree has a git history to fall back on for owners.
	withHistory bool
	// focus is the change a LoadChange city was judged for.
	focus *Change
	// builds are the team folders' kustomize builds, cached by content.
	builds *buildCache
}

// finding is a registration.Finding and what it involves: keys of the form
// file:<path>, alias:<SPIFFE ID> and trust:<block sha1>. A change reports a
// finding when it touches any of them.
type finding struct {
	registration.Finding
	involves []string
}

// Summary counts what a city holds.
type Summary struct {
	Folders           int `json:"folders"`
	RegistrationFiles int `json:"registrationFiles"`
	Entries           int `json:"entries"`
	Aliases           int `json:"aliases"`
	TrustListCAs      int `json:"trustListCAs"`
	ServerConfigs     int `json:"serverConfigs"`
	// ChangeOnly: only the files that can take part in a finding of the
	// change were parsed (LoadChange), so the counts are of those.
	ChangeOnly bool `json:"changeOnly,omitempty"`
}

// Summary counts the folders, entries, CAs and server configs read.
func (c *City) Summary() Summary {
	s := Summary{Folders: len(c.folders), RegistrationFiles: len(c.regFiles), Entries: len(c.entries), ServerConfigs: len(c.servers), ChangeOnly: c.focus != nil}
	for _, e := range c.entries {
		if e.Node {
			s.Aliases++
		}
	}
	if c.trust != nil {
		for _, b := range c.trust.Blocks {
			if b.isCert() {
				s.TrustListCAs++
			}
		}
	}
	return s
}

// TrustListPresent says whether the trust list was found where the
// configuration says.
func (c *City) TrustListPresent() bool { return c.trust != nil && c.trust.Present }

// Load reads a city from t and judges it with every rule.
func Load(ctx context.Context, t Tree, cfg Config) (*City, error) {
	return load(ctx, t, cfg, nil)
}

// load reads and judges the city; with a focus, only the folders and files
// that can take part in the change's findings are judged, and server
// configs only when they changed.
func load(ctx context.Context, t Tree, cfg Config, focus *Change) (*City, error) {
	cfg, tp, err := cfg.prepare()
	if err != nil {
		return nil, err
	}
	files, err := t.Files(ctx)
	if err != nil {
		return nil, err
	}
	links, err := treeLinks(ctx, t)
	if err != nil {
		return nil, err
	}
	c := &City{cfg: cfg, tp: tp, folders: map[string]Folder{}, regFiles: map[string]bool{}, focus: focus,
		builds: &buildCache{dir: cfg.BuildCache, salt: cfg.CacheSalt}}
	if focus != nil && focus.builds != nil {
		c.builds = focus.builds
	}
	jobs := map[string]*folderJob{}
	var order []string
	job := func(f Folder) *folderJob {
		j, ok := jobs[f.Path]
		if !ok {
			j = &folderJob{f: f}
			jobs[f.Path] = j
			order = append(order, f.Path)
			c.folders[f.Path] = f
		}
		return j
	}
	var outside, servers []string
	for _, p := range files {
		if f, ok := tp.folderOf(p); ok {
			j := job(f)
			j.paths = append(j.paths, p)
			continue
		}
		if registrationNames[path.Base(p)] {
			outside = append(outside, p)
		}
		if serverCandidate(p, cfg, tp) {
			servers = append(servers, p) // read whole: a controller's className judges unchanged entries too
		}
	}
	for _, l := range links {
		if f, ok := tp.folderOf(l); ok {
			job(f).links = append(job(f).links, l)
		} else if trustDir := trustListDir(cfg.TrustList); l == cfg.TrustList.Path || strings.HasPrefix(l, trustDir+"/") {
			c.add(CodeLink, sevE, l, 0, []string{fileKey(l)},
				"%s is a symbolic link or a submodule in the trust list: a checkout follows it to content this check does not read", l)
		}
	}
	// What to read: every file of every folder, but for the team side's
	// light reading (only registration files, and every file of the
	// folders its change touches).
	// A folder judged before (same content, same program) is neither read
	// nor judged again: a git tree names its folders' content by hash.
	dirHash, _ := t.(interface {
		DirHash(context.Context, string) (string, bool)
	})
	outcomes := make([]folderOutcome, len(order))
	known := make([]bool, len(order))
	var reads []string
	for i, k := range order {
		j := jobs[k]
		j.partial = cfg.Light && (focus == nil || !focus.touches(k))
		if dirHash != nil {
			if h, ok := dirHash.DirHash(ctx, k); ok {
				j.key = c.builds.outcomeKey(j, "git "+h)
				if outcomes[i], known[i] = c.builds.outcome(j.key); known[i] {
					continue
				}
			}
		}
		for _, p := range j.paths {
			if !j.partial || registrationNames[path.Base(p)] {
				reads = append(reads, p)
			}
		}
	}
	trustFiles := trustPaths(files, cfg.TrustList)
	data, err := t.Read(ctx, append(append(append(reads, outside...), servers...), trustFiles...))
	if err != nil {
		return nil, err
	}
	for _, j := range jobs {
		j.data = data
	}

	// Judge the folders (in parallel); with a focus, an unchanged folder
	// only when its files can hold a fact of the change.
	var g errgroup.Group
	g.SetLimit(runtime.GOMAXPROCS(0)) // CPU-bound: one folder per CPU
	for i := range order {
		g.Go(func() error {
			if known[i] {
				return nil
			}
			j := jobs[order[i]]
			if j.key == "" {
				j.key = c.builds.outcomeKey(j, contentHash(j))
				if outcomes[i], known[i] = c.builds.outcome(j.key); known[i] {
					return nil
				}
			}
			if focus != nil && !focus.touches(j.f.Path) && !focus.concernsFolder(j) {
				return nil
			}
			outcomes[i] = c.judgeCached(j)
			return nil
		})
	}
	_ = g.Wait()
	for i, k := range order {
		o := outcomes[i]
		for _, e := range o.entries {
			c.entries = append(c.entries, e)
			c.keyOf = append(c.keyOf, k)
		}
		for _, f := range o.regFiles {
			c.regFiles[f] = true
		}
		c.findings = append(c.findings, o.findings...)
	}
	for _, p := range outside {
		b, ok := data[p]
		if !ok || (focus != nil && !focus.concerns(p, b)) {
			continue
		}
		es, err := registration.Parse(p, b)
		switch {
		case errors.Is(err, registration.ErrNotRegistration):
		case err != nil:
			c.add(CodeUnparsable, sevE, p, lineIn(err), []string{fileKey(p)}, "does not decode: %s", cleanErr(err, p))
		}
		if len(es) == 0 {
			continue
		}
		c.regFiles[p] = true
		for _, e := range es {
			c.entries = append(c.entries, e)
			c.keyOf = append(c.keyOf, c.folderKey(p))
		}
	}

	trustData := make(map[string][]byte, len(trustFiles))
	for _, p := range trustFiles {
		trustData[p] = data[p]
	}
	c.trust = readTrustList(cfg.TrustList, trustData)
	for _, p := range servers {
		if len(cfg.ServerConfigs) == 0 && !mentionsServerConfig(data[p]) {
			continue
		}
		c.readServerFile(p, data[p])
	}
	if err := c.resolveOwners(ctx, t); err != nil {
		return nil, err
	}
	c.judge()
	return c, nil
}

// judgeCached judges a folder, or takes its judgement from the cache (by
// j.key, or by its content when it has none).
func (c *City) judgeCached(j *folderJob) folderOutcome {
	if j.key == "" {
		j.key = c.builds.outcomeKey(j, contentHash(j))
	}
	if o, ok := c.builds.outcome(j.key); ok {
		return o
	}
	o := c.judgeFolder(*j)
	c.builds.putOutcome(j.key, o, true)
	return o
}

// trustListDir is the directory the trust list lives in: the directory of
// directory mode, the bundle's directory in bundle mode.
func trustListDir(tl project.TrustList) string {
	if tl.Mode == project.TrustListDirectory {
		return tl.Path
	}
	return path.Dir(tl.Path)
}

// folderKey is the team folder's path, or for a file outside every team
// folder its own directory (files side by side count as one folder).
func (c *City) folderKey(p string) string {
	if f, ok := c.tp.folderOf(p); ok {
		return f.Path
	}
	return "?" + path.Dir(p)
}

func (c *City) folder(key string) (Folder, bool) {
	f, ok := c.folders[key]
	return f, ok
}

// describeFolder names a folder for a message.
func (c *City) describeFolder(key string) string {
	f, ok := c.folder(key)
	if !ok {
		return "no team folder (" + strings.TrimPrefix(key, "?") + ")"
	}
	switch {
	case f.Namespace != "" && f.Team != "":
		return fmt.Sprintf("team %s, namespace %s", f.Team, f.Namespace)
	case f.Namespace != "":
		return "namespace " + f.Namespace
	}
	return "team " + f.Team
}

var (
	lineRE      = regexp.MustCompile(`(?:line |At )(\d+)`)
	leadingLine = regexp.MustCompile(`^line \d+: `)
)

func lineIn(err error) int {
	if m := lineRE.FindStringSubmatch(err.Error()); m != nil {
		n, _ := strconv.Atoi(m[1])
		return n
	}
	return 0
}

func fileKey(p string) string   { return "file:" + p }
func aliasKey(id string) string { return "alias:" + id }
func trustKey(k string) string  { return "trust:" + k }

func (c *City) add(code string, sev registration.Severity, file string, line int, involves []string, format string, args ...any) {
	c.findings = append(c.findings, finding{
		Finding:  registration.Finding{Code: code, Severity: sev, File: file, Line: line, Message: fmt.Sprintf(format, args...)},
		involves: involves,
	})
}

// Check returns every finding of every rule, sorted by file, line and code.
// For a city from LoadChange, those of the change.
func (c *City) Check() []registration.Finding {
	if c.focus != nil {
		return c.CheckChange(c.focus)
	}
	return c.keep(func(finding) bool { return true })
}

func (c *City) keep(ok func(finding) bool) []registration.Finding {
	out := []registration.Finding{}
	for _, f := range c.findings {
		if ok(f) {
			out = append(out, f.Finding)
		}
	}
	return out
}

func sortFindings(fs []finding) {
	sort.SliceStable(fs, func(i, j int) bool {
		a, b := fs[i].Finding, fs[j].Finding
		if a.File != b.File {
			return a.File < b.File
		}
		if a.Line != b.Line {
			return a.Line < b.Line
		}
		if a.Code != b.Code {
			return a.Code < b.Code
		}
		return a.Message < b.Message
	})
}

// CheckFiles keeps the findings that involve any of paths: located in one
// of them, or naming one of them (a duplicate alias is reported when either
// file is given). The team side passes the files its PR writes.
func (c *City) CheckFiles(paths ...string) []registration.Finding {
	want := map[string]bool{}
	for _, p := range paths {
		want[fileKey(clean(p))] = true
	}
	return c.keep(func(f finding) bool { return f.involvesAny(want) })
}

func (f finding) involvesAny(keys map[string]bool) bool {
	for _, k := range f.involves {
		if keys[k] {
			return true
		}
	}
	return false
}

// judge runs every rule.
func (c *City) judge() {
	c.judgeFormats()
	c.judgeOwnership()
	c.judgeTrustList()
	if c.trust.Present {
		c.judgeTrustShared()
	}
	c.judgeServers()
	sortFindings(c.findings)
}

// judgeFormats runs the offline validator (SPD2xx) folder by folder: its
// duplicate rule then compares entries of one folder, and entries of
// different folders are judged by the ownership rules.
func (c *City) judgeFormats() {
	byFolder := map[string][]registration.Entry{}
	var order []string
	for i, e := range c.entries {
		k := c.keyOf[i]
		if _, seen := byFolder[k]; !seen {
			order = append(order, k)
		}
		byFolder[k] = append(byFolder[k], e)
	}
	// A controller the city configures decides which classes reach the
	// server: one with no className, or watchClassless, reconciles
	// classless objects; any other class is ignored silently.
	classless := c.cfg.Classless
	classes := map[string]bool{}
	for _, cc := range c.controllers {
		classless = classless || cc.ClassName == "" || cc.WatchClassless
		classes[cc.ClassName] = true
	}
	for _, e := range c.entries {
		if e.Format == registration.FormatClusterStaticEntry && e.ClassName != "" && len(c.controllers) > 0 && !classes[e.ClassName] {
			c.add(registration.CodeNoClassName, sevE, e.File, e.Line, []string{fileKey(e.File)},
				"ClusterStaticEntry %s has className %q, which no spire-controller-manager of the city watches (%s): it is ignored silently", e.Name, e.ClassName, c.controllerClasses())
		}
	}
	opts := registration.ValidateOptions{TrustDomain: c.cfg.TrustDomain, Classless: classless}
	for _, k := range order {
		es := byFolder[k]
		first := map[string]registration.Entry{}
		for _, e := range es {
			if _, ok := first[entryKey(e)]; !ok {
				first[entryKey(e)] = e
			}
		}
		for _, f := range registration.Validate(es, opts) {
			inv := []string{fileKey(f.File)}
			if f.Code == registration.CodeDuplicate {
				for _, e := range es {
					if e.File == f.File && e.Line == f.Line {
						inv = append(inv, fileKey(first[entryKey(e)].File))
					}
				}
			}
			c.findings = append(c.findings, finding{Finding: f, involves: inv})
		}
	}
}

func (c *City) controllerClasses() string {
	var out []string
	for _, cc := range c.controllers {
		out = append(out, fmt.Sprintf("%q at %s:%d", cc.ClassName, cc.File, cc.Line))
	}
	return strings.Join(out, ", ")
}

// entryKey is registration.Validate's notion of the same entry.
func entryKey(e registration.Entry) string {
	sel := append([]string(nil), e.Selectors...)
	sort.Strings(sel)
	return e.SpiffeID + "\x00" + e.ParentID + "\x00" + strings.Join(sel, ",")
}

// alias is a node alias with what its selectors claim.
type alias struct {
	i   int // index into entries
	cns []string
	fps []string // "" when unpinned
}

func selectorValues(e registration.Entry, prefix string) []string {
	var out []string
	for _, s := range e.Selectors {
		if v, ok := strings.CutPrefix(s, prefix); ok {
			out = append(out, v)
		}
	}
	return out
}

func (c *City) where(i int) string {
	e := c.entries[i]
	return fmt.Sprintf("%s:%d (%s)", e.File, e.Line, c.describeFolder(c.keyOf[i]))
}

// scope is the SPIFFE ID prefix a folder's namespace owns, or "" when the
// folder's namespace is unknown.
func (c *City) scope(key, id string) string {
	f, ok := c.folder(key)
	if !ok || f.Namespace == "" {
		return ""
	}
	td := c.cfg.TrustDomain
	if td == "" {
		p, err := spiffeid.FromString(id)
		if err != nil {
			return ""
		}
		td = p.TrustDomain().Name()
	}
	return "spiffe://" + td + "/ns/" + f.Namespace + "/"
}

var guideAlias = regexp.MustCompile(`^spiffe://[^/]+/` + regexp.QuoteMeta(project.AgentCNPrefix) + `[^/]+$`)

func (c *City) judgeOwnership() {
	aliasesByID := map[string][]int{}
	var aliases []alias
	for i, e := range c.entries {
		if e.Node {
			aliasesByID[e.SpiffeID] = append(aliasesByID[e.SpiffeID], i)
			aliases = append(aliases, alias{i: i, cns: selectorValues(e, pki.CNSelectorPrefix), fps: selectorValues(e, pki.SelectorPrefix)})
		}
	}
	for f := range c.regFiles {
		if _, ok := c.tp.folderOf(f); !ok {
			c.add(CodeOutsideTeamFolder, sevW, f, c.firstLine(f), []string{fileKey(f)},
				"registration file outside every team folder (%s): it belongs to no team, so its entries cannot be judged for ownership", c.cfg.TeamPath)
		}
	}

	// SPD101: one alias ID, several folders.
	for id, idx := range aliasesByID {
		folders := map[string]bool{}
		for _, i := range idx {
			folders[c.keyOf[i]] = true
		}
		if len(folders) < 2 {
			continue
		}
		inv := []string{aliasKey(id)}
		for _, i := range idx {
			inv = append(inv, fileKey(c.entries[i].File))
		}
		for _, i := range idx {
			var others []string
			for _, j := range idx {
				if c.keyOf[j] != c.keyOf[i] {
					others = append(others, c.where(j))
				}
			}
			e := c.entries[i]
			c.add(CodeAliasShared, sevE, e.File, e.Line, inv,
				"node alias %s is also registered by %s: an agent matching either alias receives the SVIDs of every workload parented to this ID, whichever team registered it",
				id, strings.Join(others, ", "))
		}
	}

	// SPD102: alias IDs in their folder's scope.
	for _, a := range aliases {
		e := c.entries[a.i]
		scope := c.scope(c.keyOf[a.i], e.SpiffeID)
		if scope == "" || strings.HasPrefix(e.SpiffeID, scope) {
			continue
		}
		if guideAlias.MatchString(e.SpiffeID) {
			c.add(CodeAliasOutOfScope, sevW, e.File, e.Line, []string{fileKey(e.File)},
				"node alias %s has the guide's form: it is unique only while no other team's StatefulSet has the same name; the team-scoped form is %s%s",
				e.SpiffeID, scope, path.Base(e.SpiffeID))
			continue
		}
		c.add(CodeAliasOutOfScope, sevE, e.File, e.Line, []string{fileKey(e.File)},
			"node alias %s is outside the folder's scope %s", e.SpiffeID, scope)
	}

	// SPD112: entry IDs carry their folder's namespace (they are global on
	// the server).
	for i, e := range c.entries {
		f, ok := c.folder(c.keyOf[i])
		if e.EntryID == "" || !ok || f.Namespace == "" {
			continue
		}
		if !strings.HasPrefix(e.EntryID, "spirepod."+f.Namespace+".") && !strings.HasPrefix(e.EntryID, f.Namespace+".") {
			c.add(CodeEntryIDOutOfScope, sevE, e.File, e.Line, []string{fileKey(e.File)},
				"entry_id %q does not start with spirepod.%s. or %s.: entry IDs are global on the server, so another team's entry of that ID is refused or overwritten", e.EntryID, f.Namespace, f.Namespace)
		}
	}

	// Workloads: parents and scope.
	for i, e := range c.entries {
		if e.Node {
			continue
		}
		if scope := c.scope(c.keyOf[i], e.SpiffeID); scope != "" && !strings.HasPrefix(e.SpiffeID, scope) {
			c.add(CodeWorkloadOutOfScope, sevE, e.File, e.Line, []string{fileKey(e.File)},
				"workload ID %s is outside the folder's namespace path %s", e.SpiffeID, scope)
		}
		owners := aliasesByID[e.ParentID]
		if len(owners) == 0 {
			c.parentNotAlias(i, e)
			continue
		}
		own := false
		for _, j := range owners {
			own = own || c.keyOf[j] == c.keyOf[i]
		}
		if own {
			continue
		}
		inv := []string{fileKey(e.File), aliasKey(e.ParentID)}
		var where []string
		for _, j := range owners {
			inv = append(inv, fileKey(c.entries[j].File))
			where = append(where, c.where(j))
		}
		c.add(CodeParentOtherFolder, sevE, e.File, e.Line, inv,
			"workload %s is parented to node alias %s, which another folder registers (%s): that team's agents receive this SVID",
			e.SpiffeID, e.ParentID, strings.Join(where, ", "))
	}

	c.judgePins(aliases)
	c.judgeCNs(aliases)
	c.judgeGlobalNames()
	c.judgePowers()
}

// parentNotAlias: a workload whose parent is no node alias of any folder.
// SPIRE delivers an entry to every agent that can obtain its parent ID,
// down the chain: parented to another workload's ID it reaches whoever
// holds that workload's SVID; parented to an agent ID, that agent.
func (c *City) parentNotAlias(i int, e registration.Entry) {
	inv := []string{fileKey(e.File), aliasKey(e.ParentID)}
	var holders []string
	for j, o := range c.entries {
		if !o.Node && o.SpiffeID == e.ParentID && c.keyOf[j] != c.keyOf[i] {
			holders = append(holders, c.where(j))
			inv = append(inv, fileKey(o.File))
		}
	}
	switch {
	case len(holders) > 0:
		c.add(CodeParentNowhere, sevE, e.File, e.Line, inv,
			"workload %s is parented to %s, another folder's workload ID (%s): SPIRE hands it to every agent that can obtain that ID, so it reaches that team's pods",
			e.SpiffeID, e.ParentID, strings.Join(holders, ", "))
	case isAgentOrServer(e.ParentID):
		c.add(CodeParentNowhere, sevE, e.File, e.Line, inv,
			"workload %s is parented to %s, an agent's own ID, not a node alias of this folder: whichever agent attests under that ID (any team's, with a common-name template) receives it",
			e.SpiffeID, e.ParentID)
	case e.ParentID == e.SpiffeID || c.ownWorkload(i, e.ParentID):
		c.add(CodeParentNowhere, sevE, e.File, e.Line, inv,
			"workload %s is parented to %s, a workload ID, not a node alias of this folder: entries chained under workloads reach every agent that can obtain them",
			e.SpiffeID, e.ParentID)
	default:
		c.add(CodeParentNowhere, sevE, e.File, e.Line, inv,
			"parent %s of %s is no node alias of this folder (registered nowhere in the city): no agent of the team matches it, so the workload gets no SVID",
			e.ParentID, e.SpiffeID)
	}
}

func (c *City) ownWorkload(i int, id string) bool {
	for j, o := range c.entries {
		if !o.Node && o.SpiffeID == id && c.keyOf[j] == c.keyOf[i] {
			return true
		}
	}
	return false
}

// judgeGlobalNames: entry IDs and ClusterStaticEntry names are global (on
// the server, in the cluster): SPD113 (an entry ID of two folders) and
// SPD114 (a ClusterStaticEntry name outside the folder's prefix, or of two
// folders), whichever folder came first.
func (c *City) judgeGlobalNames() {
	byID, byName := map[string][]int{}, map[string][]int{}
	for i, e := range c.entries {
		if e.EntryID != "" {
			byID[e.EntryID] = append(byID[e.EntryID], i)
		}
		if e.Format == registration.FormatClusterStaticEntry && e.Name != "" {
			byName[e.Name] = append(byName[e.Name], i)
		}
	}
	shared := func(code, what string, by map[string][]int) {
		for name, idx := range by {
			folders := map[string]bool{}
			for _, i := range idx {
				folders[c.keyOf[i]] = true
			}
			if len(folders) < 2 {
				continue
			}
			var inv []string
			for _, i := range idx {
				inv = append(inv, fileKey(c.entries[i].File))
			}
			for _, i := range idx {
				var others []string
				for _, j := range idx {
					if c.keyOf[j] != c.keyOf[i] {
						others = append(others, c.where(j))
					}
				}
				e := c.entries[i]
				c.add(code, sevE, e.File, e.Line, inv, "%s %q is also registered by %s: it is one object on the server, so one team's replaces or blocks the other's",
					what, name, strings.Join(others, ", "))
			}
		}
	}
	shared(CodeEntryIDShared, "entry_id", byID)
	shared(CodeCSEName, "ClusterStaticEntry", byName)
	for name, idx := range byName {
		for _, i := range idx {
			f, ok := c.folder(c.keyOf[i])
			if !ok || f.Namespace == "" {
				continue
			}
			e := c.entries[i]
			if !strings.HasPrefix(name, f.Namespace+"-") && !strings.HasPrefix(name, f.Namespace+".") {
				c.add(CodeCSEName, sevE, e.File, e.Line, []string{fileKey(e.File)},
					"ClusterStaticEntry %q does not start with %s-: cluster-scoped names are global, so another team's object of that name is replaced", name, f.Namespace)
				continue
			}
			// A longer namespace of another folder that this name also starts
			// with: the name squats that team's prefix.
			for _, g := range c.folders {
				if g.Namespace != "" && g.Namespace != f.Namespace && len(g.Namespace) > len(f.Namespace) &&
					(strings.HasPrefix(name, g.Namespace+"-") || strings.HasPrefix(name, g.Namespace+".")) {
					c.add(CodeCSEName, sevE, e.File, e.Line, []string{fileKey(e.File)},
						"ClusterStaticEntry %q starts with %s-, the prefix of namespace %s's folder %s: it takes a name that team's objects use", name, g.Namespace, g.Namespace, g.Path)
				}
			}
		}
	}
}

// judgePowers: SPD115 (admin, downstream, storeSVID), SPD116 (DNS names
// that are not the team's own), SPD117 (federation the platform does not
// allow).
func (c *City) judgePowers() {
	allowed := map[string]bool{}
	for _, td := range c.cfg.AllowFederation {
		allowed[strings.TrimPrefix(td, "spiffe://")] = true
	}
	for i, e := range c.entries {
		inv := []string{fileKey(e.File)}
		p := e.Powers
		for _, pw := range []struct {
			on         bool
			name, what string
		}{
			{p.Admin, "admin", "its SVID may call the SPIRE server's management APIs: create, change and delete every team's entries"},
			{p.Downstream, "downstream", "it may obtain an intermediate CA of the whole trust domain and mint any SPIFFE ID"},
			{p.StoreSVID, "storeSVID", "its SVID is handed to the platform's SVIDStore plugins, outside the team's pods"},
		} {
			if pw.on {
				c.add(CodePower, sevE, e.File, e.Line, inv, "%s sets %s: %s", e.Describe(), pw.name, pw.what)
			}
		}
		ns := ""
		if f, ok := c.folder(c.keyOf[i]); ok {
			ns = f.Namespace
		}
		for _, d := range p.DNSNames {
			if !dnsNameOwn(d, ns) {
				c.add(CodeDNSName, sevE, e.File, e.Line, inv,
					"%s carries DNS name %q, which is not a service name of namespace %q (<service>.%s[.svc[.<cluster domain>]]): its SVID would pass host-name checks for it", e.Describe(), d, ns, ns)
			}
		}
		for _, td := range p.FederatesWith {
			if !allowed[strings.TrimPrefix(td, "spiffe://")] {
				c.add(CodeFederation, sevE, e.File, e.Line, inv,
					"%s federates with %s, which the platform does not allow (--allow-federation): its workload would trust that trust domain's SVIDs", e.Describe(), td)
			}
		}
	}
}

// isAgentOrServer: a parent that is an agent's own ID or the server needs
// no alias.
func isAgentOrServer(id string) bool {
	p, err := spiffeid.FromString(id)
	if err != nil {
		return true // SPD201 says it
	}
	return p.Path() == "/spire/server" || strings.HasPrefix(p.Path(), "/spire/agent/")
}

func (c *City) firstLine(file string) int {
	line := 0
	for _, e := range c.entries {
		if e.File == file && (line == 0 || e.Line < line) {
			line = e.Line
		}
	}
	return line
}

// judgePins: SPD105, SPD106.
func (c *City) judgePins(aliases []alias) {
	if c.trust == nil || !c.trust.Present {
		return
	}
	for _, a := range aliases {
		e := c.entries[a.i]
		for _, fp := range a.fps {
			if !sha1Hex.MatchString(fp) {
				continue // SPD204
			}
			inv := []string{fileKey(e.File), trustKey(fp)}
			b := c.trust.trustedBlock(fp)
			if b == nil {
				why := "not on the trust list " + c.trust.Path
				if ob := c.trust.blockOf(fp); ob != nil {
					why = fmt.Sprintf("at %s:%d, which the server does not load (see the trust-list findings)", ob.File, ob.Line)
				}
				c.add(CodePinNotTrusted, sevE, e.File, e.Line, inv,
					"node alias %s is pinned to CA %s, %s: the server rejects that CA's agents, so the alias never matches", e.SpiffeID, fp, why)
				c.findings[len(c.findings)-1].CA = fp
				continue
			}
			f, ok := c.folder(c.keyOf[a.i])
			if !ok || !ownerKnown(b.Owner) {
				continue
			}
			if sameTeam(b.Owner, f) {
				continue
			}
			c.add(CodePinOtherTeam, sevE, e.File, e.Line, inv,
				"node alias %s (folder of %s) is pinned to CA %s, which %s put on the trust list (%s:%d, owner from %s)",
				e.SpiffeID, c.describeFolder(f.Path), fp, b.Owner, b.File, b.Line, b.Owner.Source)
			c.findings[len(c.findings)-1].CA = fp
		}
	}
}

var sha1Hex = regexp.MustCompile(`^[0-9a-f]{40}$`)

func ownerKnown(o Owner) bool { return o.Team != "" || o.Namespace != "" }

// sameTeam compares an owner with a folder by namespace when both know it,
// else by team; anything else compares as the same (no finding on a guess:
// SPD307 says the owner is not known well enough).
func sameTeam(o Owner, f Folder) bool {
	switch {
	case o.Namespace != "" && f.Namespace != "":
		return o.Namespace == f.Namespace
	case o.Team != "" && f.Team != "":
		return o.Team == f.Team
	}
	return true
}

// judgeCNs: SPD107 (one CN, several CAs across folders), SPD108 (one CN and
// CA, several folders).
func (c *City) judgeCNs(aliases []alias) {
	type claim struct {
		a   alias
		fps []string
	}
	byCN := map[string][]claim{}
	for _, a := range aliases {
		fps := a.fps
		if len(fps) == 0 {
			fps = []string{""}
		}
		for _, cn := range a.cns {
			byCN[cn] = append(byCN[cn], claim{a: a, fps: fps})
		}
	}
	for cn, cl := range byCN {
		folders := map[string]bool{}
		for _, x := range cl {
			folders[c.keyOf[x.a.i]] = true
		}
		if len(folders) < 2 {
			continue
		}
		for _, x := range cl {
			var sameCA, otherCA []string
			inv := []string{fileKey(c.entries[x.a.i].File)}
			for _, y := range cl {
				if c.keyOf[y.a.i] == c.keyOf[x.a.i] {
					continue
				}
				inv = append(inv, fileKey(c.entries[y.a.i].File))
				if overlap(x.fps, y.fps) {
					sameCA = append(sameCA, c.where(y.a.i))
				} else {
					otherCA = append(otherCA, fmt.Sprintf("%s pinned to %s", c.where(y.a.i), pinName(y.fps)))
				}
			}
			e := c.entries[x.a.i]
			if len(sameCA) > 0 {
				c.add(CodeCNTwoFolders, sevE, e.File, e.Line, inv,
					"agent CN %s with CA %s is also claimed by %s: the same agent matches both folders' aliases and receives both teams' workloads",
					cn, pinName(x.fps), strings.Join(sameCA, ", "))
			}
			if len(otherCA) > 0 {
				c.add(CodeCNTwoCAs, sevE, e.File, e.Line, inv,
					"agent CN %s (pinned to %s here) is also claimed by %s: with a common-name agent_path_template both agents get the same agent ID",
					cn, pinName(x.fps), strings.Join(otherCA, ", "))
			}
		}
	}
}

func overlap(a, b []string) bool {
	for _, x := range a {
		for _, y := range b {
			if x == y {
				return true
			}
		}
	}
	return false
}

func pinName(fps []string) string {
	if len(fps) == 1 && fps[0] == "" {
		return "no CA (unpinned)"
	}
	return strings.Join(fps, "+")
}
