package testbed

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Images are the references of the images the test bed builds locally and
// imports into the real node's containerd (no registry is reachable). Pods
// use them with imagePullPolicy IfNotPresent (the default for a tag other
// than latest) or Never.
type Images struct {
	// Pause is the pod sandbox image (containerd's sandbox_image): a tiny
	// static Go program that waits for TERM and reaps orphans (it is PID 1
	// of a pod with shareProcessNamespace).
	Pause string
	// GenCert has busybox-static's shell and tools (sed, base64, mkdir, mv,
	// chmod …) and the test-bed kubectl; user 1001.
	GenCert string
	// SpireAgent has the test-bed spire-agent at /opt/spire/bin/spire-agent
	// with its libraries; entrypoint `spire-agent run` like the upstream
	// image, but user 1000:1000 (the upstream image runs as root).
	SpireAgent string
	// Curl has the machine's curl with every library ldd lists, and
	// busybox-static's shell; user 100 (curl_user of curlimages/curl).
	Curl string
	// Envoy is the Envoy STAND-IN (internal/testbed/standin/envoy), not
	// Envoy: at /usr/local/bin/envoy, entrypoint envoy, user 101 (Envoy's),
	// with bash (as the real Envoy images) and busybox's tools.
	Envoy string
	// XFCCEcho is the upstream echo server (internal/testbed/standin/xfccecho);
	// user 1000.
	XFCCEcho string
}

// TestImages are the fixed local names. The registry host "spirepod.test"
// does not exist: nothing is ever pulled.
var TestImages = Images{
	Pause:      "spirepod.test/pause:testbed",
	GenCert:    "spirepod.test/gen-cert:" + KubernetesVersion,
	SpireAgent: "spirepod.test/spire-agent:" + strings.TrimPrefix(SpireVersion, "v"),
	Curl:       "spirepod.test/curl:testbed",
	Envoy:      "spirepod.test/envoy-standin:testbed",
	XFCCEcho:   "spirepod.test/xfcc-echo:testbed",
}

// All lists the references.
func (im Images) All() []string {
	return []string{im.Pause, im.GenCert, im.SpireAgent, im.Curl, im.Envoy, im.XFCCEcho}
}

// imageFile is one entry of an image's single layer.
type imageFile struct {
	Path    string // absolute path in the image
	Src     string // a file to copy, or
	Data    []byte // the content
	Link    string // a symlink target
	Mode    int64
	IsDir   bool
	hash    string
	srcSize int64
}

type imageSpec struct {
	Ref        string
	User       string
	Entrypoint []string
	Cmd        []string
	Env        []string
	WorkingDir string
	Files      []imageFile
}

// fixedTime stamps every layer entry, so the same inputs give the same tar.
var fixedTime = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// imageCache holds the tars built by this test process: ref → tar path.
var imageCache struct {
	sync.Mutex
	tars map[string]string
}

// BuildImages builds (or finds in the cache) every image of TestImages as a
// docker-archive tar and returns ref → path. Tars are cached under
// <test-bin root>/images by the hash of their content, so a second run, or
// a second test bed in the same run, only hashes its inputs.
func BuildImages(ctx context.Context, b Bins, h HostTools, logf func(string, ...any)) (map[string]string, error) {
	imageCache.Lock()
	defer imageCache.Unlock()
	if imageCache.tars != nil {
		return imageCache.tars, nil
	}
	t0 := time.Now()
	work, err := os.MkdirTemp("", "spirepod-images-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)
	standins, err := buildStandins(ctx, work)
	if err != nil {
		return nil, err
	}
	specs, err := imageSpecs(b, h, standins)
	if err != nil {
		return nil, err
	}
	cacheDir := filepath.Join(b.Root, "images")
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return nil, err
	}
	tars := map[string]string{}
	built := 0
	for _, s := range specs {
		p, fresh, err := writeImage(s, cacheDir)
		if err != nil {
			return nil, fmt.Errorf("image %s: %w", s.Ref, err)
		}
		if fresh {
			built++
		}
		tars[s.Ref] = p
	}
	if logf != nil {
		logf("test bed: %d images ready (%d built, %d cached) in %v", len(tars), built, len(tars)-built, time.Since(t0).Round(time.Millisecond))
	}
	imageCache.tars = tars
	return tars, nil
}

// goTool finds the go command the tests run under.
func goTool() (string, error) {
	if p, err := exec.LookPath("go"); err == nil {
		return p, nil
	}
	p := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("no go command in PATH or GOROOT: %w", err)
	}
	return p, nil
}

// standinNames are the programs under internal/testbed/standin.
var standinNames = []string{"pause", "envoy", "xfccecho"}

// buildStandins compiles the stand-ins and the pause program statically and
// copies them into dir.
func buildStandins(ctx context.Context, dir string) (map[string]string, error) {
	out := map[string]string{}
	for _, name := range standinNames {
		out[name] = filepath.Join(dir, name)
	}
	return out, standinsInto(ctx, out)
}

// StandinBinary builds one stand-in (pause, envoy, xfccecho) into dir, for
// tests that run it as a plain process.
func StandinBinary(ctx context.Context, dir, name string) (string, error) {
	out := filepath.Join(dir, name)
	return out, standinsInto(ctx, map[string]string{name: out})
}

// standinsInto builds every stand-in in one place per checkout in the
// test-bin cache (<root>/standins/<checkout>) and copies the named ones to
// the given paths. `go build -o` does not link again when the binaries there
// are already the build of the current sources, so only the first build
// after a change pays the links; every real-node test (each a process of
// its own, in its own namespaces) then costs about a second. An flock
// serialises builders (parallel tests, packages) and the copies.
func standinsInto(ctx context.Context, want map[string]string) error {
	goBin, err := goTool()
	if err != nil {
		return err
	}
	_, self, _, _ := runtime.Caller(0) // <checkout>/internal/testbed/images.go
	sum := sha256.Sum256([]byte(filepath.Dir(filepath.Dir(filepath.Dir(self)))))
	dir := filepath.Join(DefaultRoot(), "standins", hex.EncodeToString(sum[:6]))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	lock, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return fmt.Errorf("lock %s: %w", dir, err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	const pkg = "github.com/spirepod/spirepod/internal/testbed/standin/"
	args := []string{"build", "-trimpath", "-o", dir + string(os.PathSeparator)}
	for _, name := range standinNames {
		args = append(args, pkg+name)
	}
	cmd := exec.CommandContext(ctx, goBin, args...)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=-buildvcs=false")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build stand-ins: %v\n%s", err, b)
	}
	for name, to := range want {
		if err := copyExecutable(filepath.Join(dir, name), to); err != nil {
			return fmt.Errorf("stand-in %s: %w", name, err)
		}
	}
	return nil
}

// copyExecutable copies from to to (mode 0755).
func copyExecutable(from, to string) error {
	src, err := os.Open(from)
	if err != nil {
		return err
	}
	defer src.Close()
	dst, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(dst, src); err != nil {
		dst.Close()
		return err
	}
	return dst.Close()
}

func imageSpecs(b Bins, h HostTools, standins map[string]string) ([]imageSpec, error) {
	busybox, err := busyboxFiles(h.Busybox)
	if err != nil {
		return nil, err
	}
	base := func(uid int, name string) []imageFile {
		passwd := fmt.Sprintf("root:x:0:0:root:/root:/bin/sh\n%s:x:%d:%d:%s:/tmp:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n", name, uid, uid, name)
		group := fmt.Sprintf("root:x:0:\n%s:x:%d:\nnogroup:x:65534:\n", name, uid)
		return []imageFile{
			{Path: "/tmp", IsDir: true, Mode: 0o1777},
			{Path: "/etc/passwd", Data: []byte(passwd), Mode: 0o644},
			{Path: "/etc/group", Data: []byte(group), Mode: 0o644},
			{Path: "/etc/nsswitch.conf", Data: []byte("passwd: files\ngroup: files\nhosts: files dns\n"), Mode: 0o644},
		}
	}
	withLibs := func(src, dst string) ([]imageFile, error) {
		fs := []imageFile{{Path: dst, Src: src, Mode: 0o755}}
		libs, err := lddLibs(h.Ldd, src)
		if err != nil {
			return nil, err
		}
		for _, l := range libs {
			fs = append(fs, imageFile{Path: l, Src: l, Mode: 0o755})
		}
		return fs, nil
	}
	env := []string{"PATH=/usr/local/bin:/usr/bin:/bin:/opt/spire/bin", "HOME=/tmp"}

	kubectl, err := withLibs(b.Kubectl(), "/usr/local/bin/kubectl")
	if err != nil {
		return nil, err
	}
	agent, err := withLibs(b.SpireAgent(), "/opt/spire/bin/spire-agent")
	if err != nil {
		return nil, err
	}
	curl, err := withLibs(h.Curl, "/usr/bin/curl")
	if err != nil {
		return nil, err
	}
	// The real Envoy images have bash (the scaffold's Envoy probes ask
	// /ready with bash's /dev/tcp); busybox's sh has no /dev/tcp.
	bash, err := withLibs(h.Bash, "/bin/bash")
	if err != nil {
		return nil, err
	}
	cat := func(parts ...[]imageFile) []imageFile {
		var out []imageFile
		for _, p := range parts {
			out = append(out, p...)
		}
		return out
	}
	return []imageSpec{
		{
			Ref: TestImages.Pause, User: "65535:65535", Entrypoint: []string{"/pause"},
			Files: []imageFile{{Path: "/pause", Src: standins["pause"], Mode: 0o755}},
		},
		{
			Ref: TestImages.GenCert, User: "1001:1001", Env: env, WorkingDir: "/tmp",
			Entrypoint: []string{"/bin/sh"},
			Files:      cat(base(1001, "gen-cert"), busybox, kubectl),
		},
		{
			Ref: TestImages.SpireAgent, User: "1000:1000", Env: env, WorkingDir: "/opt/spire",
			Entrypoint: []string{"/opt/spire/bin/spire-agent", "run"},
			Files:      cat(base(1000, "spire"), agent, []imageFile{{Path: "/opt/spire/data", IsDir: true, Mode: 0o777}}),
		},
		{
			Ref: TestImages.Curl, User: "100:101", Env: env, WorkingDir: "/tmp",
			Entrypoint: []string{"/usr/bin/curl"},
			Files:      cat(base(100, "curl_user"), busybox, curl),
		},
		{
			Ref: TestImages.Envoy, User: "101:101", Env: env,
			Entrypoint: []string{"/usr/local/bin/envoy"}, Cmd: []string{"-c", "/etc/envoy/envoy.yaml"},
			Files: cat(base(101, "envoy"), busybox, bash,
				[]imageFile{{Path: "/usr/local/bin/envoy", Src: standins["envoy"], Mode: 0o755}}),
		},
		{
			Ref: TestImages.XFCCEcho, User: "1000:1000", Env: env,
			Entrypoint: []string{"/usr/local/bin/xfccecho"},
			Files: cat(base(1000, "echo"), busybox,
				[]imageFile{{Path: "/usr/local/bin/xfccecho", Src: standins["xfccecho"], Mode: 0o755}}),
		},
	}, nil
}

// busyboxFiles is the static busybox at /bin/busybox and a symlink per applet.
func busyboxFiles(bin string) ([]imageFile, error) {
	out, err := exec.Command(bin, "--list").Output()
	if err != nil {
		return nil, fmt.Errorf("busybox --list: %w", err)
	}
	fs := []imageFile{{Path: "/bin/busybox", Src: bin, Mode: 0o755}}
	for _, a := range strings.Fields(string(out)) {
		if a == "busybox" || strings.Contains(a, "/") {
			continue
		}
		fs = append(fs, imageFile{Path: "/bin/" + a, Link: "busybox"})
	}
	return fs, nil
}

var lddLine = regexp.MustCompile(`(?:=>\s*)?(/\S+)\s+\(0x`)

// lddLibs lists the shared libraries (and the loader) a dynamic binary
// needs, at the paths ldd resolves; nothing for a static one.
func lddLibs(ldd, bin string) ([]string, error) {
	if isStatic(bin) {
		return nil, nil
	}
	out, err := exec.Command(ldd, bin).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("ldd %s: %v: %s", bin, err, out)
	}
	var libs []string
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, "not found") {
			return nil, fmt.Errorf("ldd %s: %s", bin, strings.TrimSpace(line))
		}
		if m := lddLine.FindStringSubmatch(line); m != nil {
			libs = append(libs, m[1])
		}
	}
	return libs, nil
}

// writeImage writes the spec as a docker-archive tar into dir, named by the
// hash of everything that goes into it, unless that file exists.
func writeImage(s imageSpec, dir string) (string, bool, error) {
	files, err := completeTree(s.Files)
	if err != nil {
		return "", false, err
	}
	key := sha256.New()
	meta, _ := json.Marshal([]any{s.Ref, s.User, s.Entrypoint, s.Cmd, s.Env, s.WorkingDir})
	key.Write(meta)
	for i := range files {
		f := &files[i]
		if f.Src != "" {
			if f.hash, f.srcSize, err = hashFile(f.Src); err != nil {
				return "", false, err
			}
		}
		fmt.Fprintf(key, "%s|%s|%x|%s|%o|%v|%s\n", f.Path, f.hash, sha256.Sum256(f.Data), f.Link, f.Mode, f.IsDir, "v1")
	}
	name := regexp.MustCompile(`[^a-zA-Z0-9.-]+`).ReplaceAllString(s.Ref, "_")
	final := filepath.Join(dir, fmt.Sprintf("%s-%s.tar", name, hex.EncodeToString(key.Sum(nil))[:16]))
	if _, err := os.Stat(final); err == nil {
		return final, false, nil
	}

	// The layer, to a temp file: its sha256 is the diff ID.
	layer, err := os.CreateTemp(dir, ".layer-")
	if err != nil {
		return "", false, err
	}
	defer os.Remove(layer.Name())
	defer layer.Close()
	lh := sha256.New()
	tw := tar.NewWriter(io.MultiWriter(layer, lh))
	for _, f := range files {
		if err := addEntry(tw, f); err != nil {
			return "", false, err
		}
	}
	if err := tw.Close(); err != nil {
		return "", false, err
	}
	diffID := hex.EncodeToString(lh.Sum(nil))

	cfg := map[string]any{
		"architecture": runtime.GOARCH, "os": "linux", "created": fixedTime.Format(time.RFC3339),
		"config": map[string]any{
			"User": s.User, "Env": s.Env, "Entrypoint": s.Entrypoint, "Cmd": s.Cmd, "WorkingDir": s.WorkingDir,
			"Labels": map[string]string{"org.opencontainers.image.description": "spirepod test bed image, built locally"},
		},
		"rootfs":  map[string]any{"type": "layers", "diff_ids": []string{"sha256:" + diffID}},
		"history": []map[string]string{{"created": fixedTime.Format(time.RFC3339), "created_by": "spirepod internal/testbed images.go"}},
	}
	cfgJSON, err := json.Marshal(cfg)
	if err != nil {
		return "", false, err
	}
	cfgName := fmt.Sprintf("%x.json", sha256.Sum256(cfgJSON))
	layerName := diffID + "/layer.tar"
	manifest, _ := json.Marshal([]map[string]any{{"Config": cfgName, "RepoTags": []string{s.Ref}, "Layers": []string{layerName}}})

	tmp, err := os.CreateTemp(dir, ".image-")
	if err != nil {
		return "", false, err
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	ow := tar.NewWriter(tmp)
	put := func(name string, data []byte) error {
		if err := ow.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(data)), ModTime: fixedTime, Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		_, err := ow.Write(data)
		return err
	}
	if err := put("manifest.json", manifest); err != nil {
		return "", false, err
	}
	if err := put(cfgName, cfgJSON); err != nil {
		return "", false, err
	}
	if err := ow.WriteHeader(&tar.Header{Name: diffID + "/", Mode: 0o755, ModTime: fixedTime, Typeflag: tar.TypeDir}); err != nil {
		return "", false, err
	}
	st, err := layer.Stat()
	if err != nil {
		return "", false, err
	}
	if err := ow.WriteHeader(&tar.Header{Name: layerName, Mode: 0o644, Size: st.Size(), ModTime: fixedTime, Typeflag: tar.TypeReg}); err != nil {
		return "", false, err
	}
	if _, err := layer.Seek(0, io.SeekStart); err != nil {
		return "", false, err
	}
	if _, err := io.Copy(ow, layer); err != nil {
		return "", false, err
	}
	if err := ow.Close(); err != nil {
		return "", false, err
	}
	if err := tmp.Close(); err != nil {
		return "", false, err
	}
	if err := os.Rename(tmp.Name(), final); err != nil {
		return "", false, err
	}
	return final, true, nil
}

// completeTree adds the parent directories, drops duplicates (last wins)
// and sorts parents first.
func completeTree(in []imageFile) ([]imageFile, error) {
	byPath := map[string]imageFile{}
	for _, f := range in {
		if !path.IsAbs(f.Path) {
			return nil, fmt.Errorf("image path %q is not absolute", f.Path)
		}
		f.Path = path.Clean(f.Path)
		byPath[f.Path] = f
		for d := path.Dir(f.Path); d != "/"; d = path.Dir(d) {
			if _, ok := byPath[d]; !ok {
				byPath[d] = imageFile{Path: d, IsDir: true, Mode: 0o755}
			}
		}
	}
	out := make([]imageFile, 0, len(byPath))
	for _, f := range byPath {
		out = append(out, f)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out, nil
}

func hashFile(p string) (string, int64, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	return hex.EncodeToString(h.Sum(nil)), n, err
}

func addEntry(tw *tar.Writer, f imageFile) error {
	name := strings.TrimPrefix(f.Path, "/")
	hdr := &tar.Header{Name: name, Mode: f.Mode, ModTime: fixedTime, Uname: "root", Gname: "root"}
	switch {
	case f.IsDir:
		hdr.Typeflag, hdr.Name = tar.TypeDir, name+"/"
		return tw.WriteHeader(hdr)
	case f.Link != "":
		hdr.Typeflag, hdr.Linkname, hdr.Mode = tar.TypeSymlink, f.Link, 0o777
		return tw.WriteHeader(hdr)
	case f.Src != "":
		src, err := os.Open(f.Src)
		if err != nil {
			return err
		}
		defer src.Close()
		st, err := src.Stat()
		if err != nil {
			return err
		}
		hdr.Typeflag, hdr.Size = tar.TypeReg, st.Size()
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		_, err = io.Copy(tw, src)
		return err
	default:
		hdr.Typeflag, hdr.Size = tar.TypeReg, int64(len(f.Data))
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		_, err := io.Copy(tw, bytes.NewReader(f.Data))
		return err
	}
}
