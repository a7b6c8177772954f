package city

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"

	"sigs.k8s.io/kustomize/api/konfig"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	kyaml "sigs.k8s.io/kustomize/kyaml/yaml"
	"sigs.k8s.io/yaml"

	"github.com/spirepod/spirepod/internal/atomicfile"
	"github.com/spirepod/spirepod/internal/registration"
)

// A team folder reaches the cluster as `kubectl apply -k <folder>` (or
// Flux's kustomize-controller at that path) applies it: through a kustomize
// build. The judge builds it with sigs.k8s.io/kustomize/api's krusty, the
// engine of `kubectl apply -k`, with kubectl's options (files only from
// inside each kustomization's root, no plugins, no Helm), on an in-memory
// filesystem that holds the folder's files and nothing else: a reference
// outside the folder finds nothing, as the platform's checkout must not
// let it. Remote resources are refused before the build (krusty would fetch
// them over HTTP or with git).

// kustomizationNames are the file names kustomize looks for in a directory.
var kustomizationNames = konfig.RecognizedKustomizationFileNames()

func isKustomization(p string) bool { return slices.Contains(kustomizationNames, path.Base(p)) }

// builtObject is one object of a build, as kubectl receives it, with the
// folder-relative file it came from (kustomize's origin annotation).
type builtObject struct {
	registration.Object
	Origin string `json:"origin,omitempty"`
}

// buildResult is a build's outcome.
type buildResult struct {
	Objects []builtObject `json:"objects"`
	// Read are the folder-relative files the build read.
	Read []string `json:"read"`
	// Err is why the build failed ("" when it did not).
	Err string `json:"err,omitempty"`
}

// remoteRef says why a kustomization's path entry is not a local path
// inside the folder, or "".
func remoteRef(dir, p string) string {
	switch {
	case strings.Contains(p, "://") || strings.HasPrefix(p, "git@") || strings.HasPrefix(p, "git::") ||
		strings.Contains(p, "?ref=") || strings.Contains(p, "?version=") || strings.HasPrefix(p, "github.com/") ||
		strings.HasPrefix(p, "gitlab.com/") || strings.HasPrefix(p, "bitbucket.org/"):
		return "a remote resource (kustomize fetches it over the network at build time: nobody reviewed it)"
	case path.IsAbs(p) || filepath.IsAbs(p):
		return "an absolute path (it names a file outside the team folder on the machine that builds it)"
	}
	joined := path.Clean(path.Join(dir, p))
	if joined == ".." || strings.HasPrefix(joined, "../") {
		return "a path outside the team folder (another team's files, or the platform's)"
	}
	return ""
}

// inlineEntry says whether a patchesStrategicMerge/generators/transformers
// entry is inline YAML rather than a path (kustomize tries it as a file
// first; text with a newline or a mapping is no file name).
func inlineEntry(s string) bool {
	return strings.Contains(s, "\n") || strings.Contains(s, ": ")
}

// kustomizationRefs lists a kustomization's path entries (every field
// kustomize loads a file, directory or URL from) and the fields that need
// more than kubectl's build (Helm).
func kustomizationRefs(data []byte) (refs []string, unsupported []string, err error) {
	var k types.Kustomization
	if err := yaml.Unmarshal(data, &k); err != nil {
		return nil, nil, err
	}
	k.FixKustomization()
	add := func(ss ...string) {
		for _, s := range ss {
			if s != "" {
				refs = append(refs, s)
			}
		}
	}
	add(k.Resources...)
	add(k.Components...)
	add(k.Crds...)
	add(k.Configurations...)
	add(k.OpenAPI["path"])
	for _, s := range append(append(append([]string(nil), k.Generators...), k.Transformers...), k.Validators...) {
		if !inlineEntry(s) {
			add(s)
		}
	}
	for _, s := range k.PatchesStrategicMerge {
		if !inlineEntry(string(s)) {
			add(string(s))
		}
	}
	for _, p := range k.Patches {
		add(p.Path)
	}
	for _, p := range k.PatchesJson6902 {
		add(p.Path)
	}
	for _, r := range k.Replacements {
		add(r.Path)
	}
	for _, g := range k.ConfigMapGenerator {
		refs = append(refs, generatorFiles(g.GeneratorArgs)...)
	}
	for _, g := range k.SecretGenerator {
		refs = append(refs, generatorFiles(g.GeneratorArgs)...)
	}
	if len(k.HelmCharts) > 0 || len(k.HelmChartInflationGenerator) > 0 || k.HelmGlobals != nil {
		unsupported = append(unsupported, "helmCharts (kubectl apply -k does not inflate charts; the chart is not in the folder to judge)")
	}
	return refs, unsupported, nil
}

func generatorFiles(g types.GeneratorArgs) []string {
	var out []string
	for _, f := range g.FileSources {
		if _, file, ok := strings.Cut(f, "="); ok {
			f = file
		}
		out = append(out, f)
	}
	out = append(out, g.EnvSources...)
	return out
}

// recordingFS is the in-memory filesystem of a build, recording the files
// the build reads.
type recordingFS struct {
	filesys.FileSystem
	mu   sync.Mutex
	read map[string]bool
}

func (r *recordingFS) note(p string) {
	r.mu.Lock()
	r.read[path.Clean(p)] = true
	r.mu.Unlock()
}

func (r *recordingFS) ReadFile(p string) ([]byte, error) {
	r.note(p)
	return r.FileSystem.ReadFile(p)
}

func (r *recordingFS) Open(p string) (filesys.File, error) {
	r.note(p)
	return r.FileSystem.Open(p)
}

// buildFolder runs kustomize at dir (folder-relative, "." for the folder
// itself) over files (folder-relative path → content). generated lists the
// resources of a kustomization to generate at dir when it has none (Flux's
// kustomize-controller generates one for a path without a kustomization).
func buildFolder(files map[string][]byte, dir string, generated []string) buildResult {
	mem := filesys.MakeFsInMemory()
	const root = "/team"
	for p, b := range files {
		if err := mem.WriteFile(path.Join(root, p), b); err != nil {
			return buildResult{Err: err.Error()}
		}
	}
	kdir := path.Join(root, dir)
	kfile := ""
	for _, n := range kustomizationNames {
		if _, ok := files[path.Join(dir, n)]; ok {
			kfile = path.Join(kdir, n)
			break
		}
	}
	var kdata []byte
	if kfile == "" {
		var b strings.Builder
		b.WriteString("apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n")
		for _, r := range generated {
			fmt.Fprintf(&b, "- %q\n", r)
		}
		kfile, kdata = path.Join(kdir, "kustomization.yaml"), []byte(b.String())
	} else {
		kdata = files[strings.TrimPrefix(kfile, root+"/")]
	}
	// Origin annotations name the file each object came from.
	withOrigin, err := addBuildMetadata(kdata, types.OriginAnnotations)
	if err != nil {
		return buildResult{Err: err.Error()}
	}
	if err := mem.WriteFile(kfile, withOrigin); err != nil {
		return buildResult{Err: err.Error()}
	}
	fs := &recordingFS{FileSystem: mem, read: map[string]bool{}}
	opts := krusty.MakeDefaultOptions()
	opts.LoadRestrictions = types.LoadRestrictionsRootOnly // kubectl's default
	rm, err := krusty.MakeKustomizer(opts).Run(fs, kdir)
	res := buildResult{}
	for p := range fs.read {
		if rel, ok := strings.CutPrefix(p, root+"/"); ok {
			if _, exists := files[rel]; exists {
				res.Read = append(res.Read, rel)
			}
		}
	}
	sort.Strings(res.Read)
	if err != nil {
		res.Err = strings.ReplaceAll(err.Error(), root+"/", "")
		return res
	}
	for _, r := range rm.Resources() {
		origin := ""
		if o, err := r.GetOrigin(); err == nil && o != nil && o.Path != "" {
			origin = path.Clean(path.Join(dir, o.Path))
		} else if err == nil && o != nil && o.ConfiguredIn != "" {
			origin = path.Clean(path.Join(dir, o.ConfiguredIn))
		}
		ann := r.GetAnnotations()
		delete(ann, "config.kubernetes.io/origin")
		if err := r.SetAnnotations(ann); err != nil {
			res.Err = err.Error()
			return res
		}
		// The JSON kubectl ends up sending: kustomize's YAML output is this
		// JSON converted (resource.AsYAML), which kubectl converts back.
		j, err := r.MarshalJSON()
		if err != nil {
			res.Err = err.Error()
			return res
		}
		objs, err := registration.ObjectsFromJSON(j)
		if err != nil {
			res.Err = err.Error()
			return res
		}
		for _, o := range objs {
			res.Objects = append(res.Objects, builtObject{Object: o, Origin: origin})
		}
	}
	return res
}

// addBuildMetadata adds a buildMetadata option to a kustomization, keeping
// everything else as written.
func addBuildMetadata(data []byte, opt string) ([]byte, error) {
	n, err := kyaml.Parse(string(data))
	if err != nil {
		return nil, err
	}
	var have []string
	if f := n.Field("buildMetadata"); f != nil && f.Value != nil {
		for _, e := range f.Value.Content() {
			have = append(have, e.Value)
		}
	}
	if slices.Contains(have, opt) {
		return data, nil
	}
	list := kyaml.NewListRNode(append(have, opt)...)
	if err := n.PipeE(kyaml.SetField("buildMetadata", list)); err != nil {
		return nil, err
	}
	s, err := n.String()
	return []byte(s), err
}

// buildCache keeps builds by the content of what they could read (the
// whole folder), and whole folder judgements by the folder's content: a
// folder that did not change is neither built nor judged again. In memory
// always; on disk under dir when set. salt names the program that made
// an entry (Config.CacheSalt): another build of spirepod never reads it.
type buildCache struct {
	dir  string
	salt string
	mu   sync.Mutex
	mem  map[string]buildResult
	outs map[string]folderOutcome
}

// buildCacheVersion changes whenever what a cached build holds, or how it is
// made, changes (it is part of every key).
const buildCacheVersion = "spirepod-city-build-1 kustomize/api v0.21.2"

func (c *buildCache) buildKey(files map[string][]byte, dir string, generated []string) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%s\x00%s\x00%q\x00", buildCacheVersion, c.salt, dir, generated)
	paths := make([]string, 0, len(files))
	for p := range files {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, p := range paths {
		fmt.Fprintf(h, "%s\x00%d\x00", p, len(files[p]))
		h.Write(files[p])
	}
	return hex.EncodeToString(h.Sum(nil))
}

func (c *buildCache) build(files map[string][]byte, dir string, generated []string) buildResult {
	key := c.buildKey(files, dir, generated)
	c.mu.Lock()
	if r, ok := c.mem[key]; ok {
		c.mu.Unlock()
		return r
	}
	c.mu.Unlock()
	if r, ok := c.load(key); ok {
		c.put(key, r)
		return r
	}
	r := buildFolder(files, dir, generated)
	c.put(key, r)
	c.store(key, r)
	return r
}

func (c *buildCache) put(key string, r buildResult) {
	c.mu.Lock()
	if c.mem == nil {
		c.mem = map[string]buildResult{}
	}
	c.mem[key] = r
	c.mu.Unlock()
}

func (c *buildCache) file(key string) string {
	return filepath.Join(c.dir, key[:2], key+".json")
}

func (c *buildCache) load(key string) (buildResult, bool) {
	var r buildResult
	return r, c.loadJSON(key, &r)
}

func (c *buildCache) loadJSON(key string, into any) bool {
	if c.dir == "" {
		return false
	}
	b, err := os.ReadFile(c.file(key))
	if err != nil {
		return false
	}
	return json.Unmarshal(b, into) == nil
}

// store writes a build to disk; a cache that cannot be written is no
// cache (the check's result does not depend on it).
func (c *buildCache) store(key string, r any) {
	if c.dir == "" {
		return
	}
	b, err := json.Marshal(r)
	if err != nil {
		return
	}
	f := c.file(key)
	if err := os.MkdirAll(filepath.Dir(f), 0o755); err != nil {
		return
	}
	_ = atomicfile.WriteFile(f, b, atomicfile.Options{Perm: 0o644})
}

var errNoBuild = errors.New("no kustomization and no Kubernetes manifest")

// cachedOutcome is a folderOutcome as the cache keeps it.
type cachedOutcome struct {
	Entries  []registration.Entry `json:"entries"`
	RegFiles []string             `json:"regFiles"`
	Findings []cachedFinding      `json:"findings"`
}

type cachedFinding struct {
	registration.Finding
	Involves []string `json:"involves"`
}

// outcomeKey names a folder's judgement: the folder (its path gives its
// namespace and team), whether it was read partially, and what it holds
// (a git tree hash, or a hash of its files and links).
func (c *buildCache) outcomeKey(j *folderJob, content string) string {
	h := sha256.New()
	fmt.Fprintf(h, "outcome\x00%s\x00%s\x00%s\x00%v\x00%s", buildCacheVersion, c.salt, j.f.Path, j.partial, content)
	return hex.EncodeToString(h.Sum(nil))
}

// contentHash hashes a folder's files and links as read.
func contentHash(j *folderJob) string {
	h := sha256.New()
	for _, p := range j.paths {
		b := j.data[p]
		fmt.Fprintf(h, "f\x00%s\x00%d\x00", p, len(b))
		h.Write(b)
	}
	for _, l := range j.links {
		fmt.Fprintf(h, "l\x00%s\x00", l)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func (c *buildCache) outcome(key string) (folderOutcome, bool) {
	c.mu.Lock()
	o, ok := c.outs[key]
	c.mu.Unlock()
	if ok {
		return o, true
	}
	var co cachedOutcome
	if !c.loadJSON(key, &co) {
		return folderOutcome{}, false
	}
	o = folderOutcome{entries: co.Entries, regFiles: co.RegFiles}
	for _, f := range co.Findings {
		o.findings = append(o.findings, finding{Finding: f.Finding, involves: f.Involves})
	}
	c.putOutcome(key, o, false)
	return o, true
}

func (c *buildCache) putOutcome(key string, o folderOutcome, persist bool) {
	c.mu.Lock()
	if c.outs == nil {
		c.outs = map[string]folderOutcome{}
	}
	c.outs[key] = o
	c.mu.Unlock()
	if !persist {
		return
	}
	co := cachedOutcome{Entries: o.entries, RegFiles: o.regFiles}
	for _, f := range o.findings {
		co.Findings = append(co.Findings, cachedFinding{Finding: f.Finding, Involves: f.involves})
	}
	c.store(key, co)
}
