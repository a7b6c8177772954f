package city

import (
	"bytes"
	"encoding/pem"
	"errors"
	"fmt"
	"path"
	"slices"
	"sort"
	"strings"

	"sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/yaml"

	"github.com/spirepod/spirepod/internal/registration"
)

// folderJob is one team folder to judge: its files (city paths, sorted),
// their contents, and the entries a checkout would follow that are not
// regular files (symbolic links, submodules).
type folderJob struct {
	f     Folder
	paths []string
	data  map[string][]byte
	links []string
	// partial: only the folder's registration files were read (the team
	// side's light reading of folders its change does not touch).
	partial bool
	// key names the folder's judgement in the cache.
	key string
}

// folderOutcome is what a folder contributes to the city.
type folderOutcome struct {
	entries  []registration.Entry
	regFiles []string
	findings []finding
}

func (o *folderOutcome) add(code string, sev registration.Severity, file string, line int, involves []string, format string, args ...any) {
	o.findings = append(o.findings, finding{
		Finding:  registration.Finding{Code: code, Severity: sev, File: file, Line: line, Message: fmt.Sprintf(format, args...)},
		involves: involves,
	})
}

// inert files are read by nothing that reaches the cluster or the server:
// documentation, spirepod's own project and rotation state, git's own
// files, and PEM files holding certificates only (public).
func inert(rel string, data []byte) bool {
	base := path.Base(rel)
	switch {
	case strings.HasSuffix(base, ".md"), base == ".gitignore", base == ".gitattributes",
		base == "spirepod.yaml", base == "spirepod.rotation.yaml":
		return true
	case isPEMName(base):
		return certificatesOnly(data)
	}
	return false
}

func certificatesOnly(data []byte) bool {
	n := 0
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return n > 0 && len(bytes.TrimSpace(data)) == 0
		}
		if b.Type != "CERTIFICATE" {
			return false
		}
		n++
	}
}

// privateKeyLine is the line of the first PEM private-key block in data, or 0.
func privateKeyLine(data []byte) int {
	i := bytes.Index(data, []byte("PRIVATE KEY-----"))
	if i < 0 {
		return 0
	}
	return bytes.Count(data[:i], []byte("\n")) + 1
}

func isManifestName(p string) bool {
	switch path.Ext(p) {
	case ".yaml", ".yml", ".json":
		return true
	}
	return false
}

// judgeFolder reads a team folder the way its consumers do and judges
// what they load: the kustomize build (what `kubectl apply -k` and Flux
// apply), entry-json files (what `spire-server entry create -data` loads),
// and every other file, which must be one of those or inert.
func (c *City) judgeFolder(j folderJob) folderOutcome {
	var o folderOutcome
	for _, l := range j.links {
		o.add(CodeLink, sevE, l, 0, []string{fileKey(l)},
			"%s is a symbolic link or a submodule: a checkout and kustomize follow it to content this check does not read", l)
	}
	if j.partial {
		for _, p := range j.paths {
			b, ok := j.data[p]
			if !ok {
				continue
			}
			es, err := registration.Parse(p, b)
			switch {
			case errors.Is(err, registration.ErrNotRegistration):
			case err != nil:
				o.add(CodeUnparsable, sevE, p, lineIn(err), []string{fileKey(p)}, "does not decode: %s", cleanErr(err, p))
			}
			if len(es) > 0 {
				o.entries = append(o.entries, es...)
				o.regFiles = append(o.regFiles, p)
			}
		}
		return o
	}

	prefix := j.f.Path + "/"
	rel := map[string][]byte{} // folder-relative → content
	var relPaths []string      // sorted, as j.paths
	cityPath := func(r string) string { return prefix + r }
	for _, p := range j.paths {
		r := strings.TrimPrefix(p, prefix)
		rel[r] = j.data[p]
		relPaths = append(relPaths, r)
	}
	accounted := map[string]string{} // rel → consumer
	for _, r := range relPaths {
		b := rel[r]
		if line := privateKeyLine(b); line > 0 {
			o.add(CodeSecretInCity, sevE, cityPath(r), line, []string{fileKey(cityPath(r))},
				"a PEM private key in the city repository: everyone who can read the repository has it (never commit keys; regenerate this one)")
		}
	}

	// Kustomizations: refuse what the build would fetch from elsewhere.
	var kdirs []string
	remote := false
	// localOnly are kustomization directories whose generator inputs are
	// not in the city (the scaffold's certs/secret: the CA key is never
	// committed): the team applies them from its own machine.
	localOnly := map[string]bool{}
	for _, r := range relPaths {
		b := rel[r]
		if !isKustomization(r) {
			continue
		}
		kdirs = append(kdirs, path.Dir(r))
		refs, unsupported, err := kustomizationRefs(b)
		if err != nil {
			o.add(CodeNoBuild, sevE, cityPath(r), lineIn(err), []string{fileKey(cityPath(r))}, "kustomization does not decode: %s", cleanErr(err, r))
			continue
		}
		for _, ref := range refs {
			if _, ok := rel[path.Clean(path.Join(path.Dir(r), ref))]; !ok && generatorInput(b, ref) {
				localOnly[path.Dir(r)] = true
			}
			if why := remoteRef(path.Dir(r), ref); why != "" {
				remote = true
				o.add(CodeOutsideRef, sevE, cityPath(r), lineOfText(b, ref), []string{fileKey(cityPath(r))},
					"%q is %s", ref, why)
			}
		}
		for _, u := range unsupported {
			remote = true
			o.add(CodeOutsideRef, sevE, cityPath(r), 0, []string{fileKey(cityPath(r))}, "uses %s", u)
		}
	}
	sort.Slice(kdirs, func(a, b int) bool {
		if da, db := strings.Count(kdirs[a], "/"), strings.Count(kdirs[b], "/"); da != db {
			return kdirs[a] == "." || (kdirs[b] != "." && da < db)
		}
		return kdirs[a] < kdirs[b]
	})

	// The builds: the folder's own kustomization (or Flux's generated one
	// over the manifests), then nested kustomizations nothing else reads.
	var objects []builtObject
	if !remote {
		rootDir := "."
		hasRoot := len(kdirs) > 0 && kdirs[0] == "."
		var generated []string
		if !hasRoot {
			for _, r := range relPaths {
				b := rel[r]
				if !isManifestName(r) || underAny(r, kdirs) {
					continue
				}
				objs, err := registration.Objects(b)
				if err != nil {
					if strings.HasSuffix(r, ".json") && isEntryJSON(b) {
						continue
					}
					o.add(CodeUnparsable, sevE, cityPath(r), lineIn(err), []string{fileKey(cityPath(r))}, "does not decode: %s", cleanErr(err, r))
					accounted[r] = "undecodable"
					continue
				}
				if manifest(objs) {
					generated = append(generated, r)
				}
			}
		}
		if hasRoot || len(generated) > 0 {
			res := c.builds.build(rel, rootDir, generated)
			for _, r := range res.Read {
				accounted[r] = "build"
			}
			for _, r := range generated {
				accounted[r] = "build"
			}
			where := cityPath("kustomization.yaml")
			for _, n := range kustomizationNames {
				if _, ok := rel[n]; ok {
					where = cityPath(n)
				}
			}
			if res.Err != "" {
				o.add(CodeNoBuild, sevE, where, 0, []string{fileKey(where)},
					"the team folder does not build (kustomize, as `kubectl apply -k` builds it): %s", res.Err)
			}
			objects = append(objects, res.Objects...)
		}
		for _, d := range kdirs {
			if d == "." {
				continue
			}
			kf := ""
			for _, n := range kustomizationNames {
				if _, ok := rel[path.Join(d, n)]; ok {
					kf = path.Join(d, n)
					break
				}
			}
			if accounted[kf] != "" {
				continue // another build read it
			}
			res := c.builds.build(rel, d, nil)
			for _, r := range res.Read {
				accounted[r] = "build"
			}
			if res.Err != "" {
				// Not what the city applies: the team applies it by hand.
				// One that needs inputs kept out of the city (certs/: the
				// CA key) is expected not to build here.
				expected := false
				for ld := range localOnly {
					expected = expected || ld == d || strings.HasPrefix(ld, d+"/")
				}
				for _, r := range relPaths {
					if r == kf || strings.HasPrefix(r, d+"/") {
						if accounted[r] == "" {
							accounted[r] = "nested"
						}
					}
				}
				if !expected {
					o.add(CodeNoBuild, sevN, cityPath(kf), 0, []string{fileKey(cityPath(kf))},
						"%s is not built here, so nothing in it is judged (%s); the platform applies the team folder's own kustomization, not this one", d, res.Err)
				}
				continue
			}
			objects = append(objects, res.Objects...)
		}
	}

	// Entry-json: what spire-server entry create -data loads.
	for _, r := range relPaths {
		b := rel[r]
		if !strings.HasSuffix(r, ".json") {
			continue
		}
		es, err := registration.DecodeEntryJSON(cityPath(r), b)
		switch {
		case errors.Is(err, registration.ErrNotRegistration):
			continue
		case err != nil:
			if accounted[r] == "" {
				o.add(CodeUnparsable, sevE, cityPath(r), lineIn(err), []string{fileKey(cityPath(r))},
					"does not decode as spire-server entry create -data decodes it: %s", cleanErr(err, cityPath(r)))
				accounted[r] = "undecodable"
			}
			continue
		}
		accounted[r] = "spire-server"
		if len(es) > 0 {
			o.entries = append(o.entries, es...)
			o.regFiles = append(o.regFiles, cityPath(r))
		}
	}

	// What the build produced.
	lines := map[string][]registration.Object{} // origin → its objects with lines
	for _, ob := range objects {
		file := cityPath(ob.Origin)
		if ob.Origin == "" {
			file = cityPath("kustomization.yaml")
		}
		line := 0
		if ob.Origin != "" {
			if _, ok := lines[ob.Origin]; !ok {
				lines[ob.Origin], _ = registration.Objects(rel[ob.Origin])
			}
			line = objectLine(lines[ob.Origin], ob.Object)
		}
		e, isEntry, err := ob.Entry(file)
		if err != nil {
			o.add(CodeUnparsable, sevE, file, line, []string{fileKey(file)}, "does not decode as its controller reads it: %v", err)
			continue
		}
		if isEntry {
			e.Line = line
			o.entries = append(o.entries, e)
			if !contains(o.regFiles, file) {
				o.regFiles = append(o.regFiles, file)
			}
		}
		c.judgeObject(&o, j.f, file, line, ob.Object)
	}

	// Every other file: read by nothing spirepod models.
	for _, r := range relPaths {
		b := rel[r]
		if accounted[r] != "" || inert(r, b) || isKustomization(r) && remote {
			continue
		}
		o.add(CodeUnjudged, sevE, cityPath(r), 0, []string{fileKey(cityPath(r))},
			"no consumer spirepod models reads this file (not in the folder's kustomize build, not entry-json, not documentation): it cannot be judged, so it does not belong in a team folder")
	}
	return o
}

// generatorInput: ref is a configMapGenerator/secretGenerator input of the
// kustomization (as opposed to a resource, patch or component).
func generatorInput(kdata []byte, ref string) bool {
	var k types.Kustomization
	if yaml.Unmarshal(kdata, &k) != nil {
		return false
	}
	for _, g := range k.SecretGenerator {
		if slices.Contains(generatorFiles(g.GeneratorArgs), ref) {
			return true
		}
	}
	for _, g := range k.ConfigMapGenerator {
		if slices.Contains(generatorFiles(g.GeneratorArgs), ref) {
			return true
		}
	}
	return false
}

func underAny(r string, dirs []string) bool {
	for _, d := range dirs {
		if d != "." && strings.HasPrefix(r, d+"/") {
			return true
		}
	}
	return false
}

// manifest: the file holds Kubernetes objects (kind and apiVersion), as
// Flux's generated kustomization picks them.
func manifest(objs []registration.Object) bool {
	for _, o := range objs {
		if o.Kind != "" && o.APIVersion != "" {
			return true
		}
	}
	return false
}

func isEntryJSON(b []byte) bool {
	_, err := registration.DecodeEntryJSON("", b)
	return err == nil
}

// objectLine finds a built object's line in its origin file: the document
// of the same kind and name, else the only one of its kind.
func objectLine(objs []registration.Object, ob registration.Object) int {
	var kind []registration.Object
	for _, o := range objs {
		if o.Kind == ob.Kind {
			if o.Name == ob.Name {
				return o.Line
			}
			kind = append(kind, o)
		}
	}
	if len(kind) == 1 {
		return kind[0].Line
	}
	return 0
}

func lineOfText(data []byte, s string) int {
	i := bytes.Index(data, []byte(s))
	if i < 0 {
		return 0
	}
	return bytes.Count(data[:i], []byte("\n")) + 1
}

func cleanErr(err error, p string) string {
	return leadingLine.ReplaceAllString(strings.TrimPrefix(err.Error(), p+": "), "")
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}
