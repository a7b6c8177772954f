package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/spirepod/spirepod/scaffoldfs"
)

// cmdMtimes: `mtimes save DIR FILE` records every file's mtime under DIR;
// `mtimes check DIR FILE` fails if any changed (or a file appeared/vanished).
func cmdMtimes(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 3 {
		ts.Fatalf("usage: mtimes save|check DIR FILE")
	}
	dir, file := ts.MkAbs(args[1]), ts.MkAbs(args[2])
	var lines []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		st, err := os.Stat(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		lines = append(lines, fmt.Sprintf("%s %d", rel, st.ModTime().UnixNano()))
		return nil
	})
	ts.Check(err)
	sort.Strings(lines)
	got := strings.Join(lines, "\n")
	switch args[0] {
	case "save":
		ts.Check(os.WriteFile(file, []byte(got), 0o644))
	case "check":
		want, err := os.ReadFile(file)
		ts.Check(err)
		same := string(want) == got
		if same == neg {
			ts.Fatalf("mtimes: same=%v, want same=%v\nbefore:\n%s\nafter:\n%s", same, !neg, want, got)
		}
	default:
		ts.Fatalf("usage: mtimes save|check DIR FILE")
	}
}

// cmdGenTestCA makes a certificate at test time (no key is ever committed):
//
//	gen-test-ca [-leaf] CERT [KEY]
//
// -leaf makes a non-CA certificate. The key is written only when KEY is given.
func cmdGenTestCA(ts *testscript.TestScript, neg bool, args []string) {
	if neg {
		ts.Fatalf("unsupported: ! gen-test-ca")
	}
	isCA := true
	if len(args) > 0 && args[0] == "-leaf" {
		isCA, args = false, args[1:]
	}
	if len(args) < 1 || len(args) > 2 {
		ts.Fatalf("usage: gen-test-ca [-leaf] CERT [KEY]")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ts.Check(err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		// Its own subject: CAs that share one are look-alikes (city check SPD313).
		Subject:               pkix.Name{CommonName: "test SPIRE server CA", SerialNumber: filepath.Base(args[0]) + "-" + strconv.FormatInt(time.Now().UnixNano(), 36)},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		BasicConstraintsValid: true,
		IsCA:                  isCA,
		KeyUsage:              x509.KeyUsageDigitalSignature,
	}
	if isCA {
		tmpl.KeyUsage |= x509.KeyUsageCertSign | x509.KeyUsageCRLSign
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	ts.Check(err)
	ts.Check(os.WriteFile(ts.MkAbs(args[0]), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644))
	if len(args) == 2 {
		kd, err := x509.MarshalPKCS8PrivateKey(key)
		ts.Check(err)
		ts.Check(os.WriteFile(ts.MkAbs(args[1]), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kd}), 0o600))
	}
}

// cmdGitCity makes a city checkout with the real git CLI: the embedded
// template under ns/spire/docs-k8s/spire-envoy-integration plus a file
// MARKER.md, committed; then an uncommitted edit that --from must ignore.
func cmdGitCity(ts *testscript.TestScript, neg bool, args []string) {
	if neg {
		ts.Fatalf("unsupported: ! git-city")
	}
	if len(args) != 1 {
		ts.Fatalf("usage: git-city DIR")
	}
	if _, err := exec.LookPath("git"); err != nil {
		ts.Fatalf("git not on PATH")
	}
	dir := ts.MkAbs(args[0])
	tdir := filepath.Join(dir, "ns/spire/docs-k8s/spire-envoy-integration")
	src := scaffoldfs.Scaffold()
	ts.Check(fs.WalkDir(src, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(tdir, p), 0o755)
		}
		b, err := fs.ReadFile(src, p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(tdir, p), b, 0o644)
	}))
	ts.Check(os.WriteFile(filepath.Join(tdir, "MARKER.md"), []byte("from the city repo at spire-envoy-integration-ns\n"), 0o644))
	git := func(a ...string) {
		cmd := exec.Command("git", a...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@t", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@t")
		if out, err := cmd.CombinedOutput(); err != nil {
			ts.Fatalf("git %v: %v\n%s", a, err, out)
		}
	}
	git("init", "-q", "-b", "main")
	git("add", "-A")
	git("commit", "-q", "-m", "city")
	// An uncommitted edit in the work tree: --from reads HEAD, so it must not show.
	ts.Check(os.WriteFile(filepath.Join(tdir, "MARKER.md"), []byte("UNCOMMITTED\n"), 0o644))
}

// cmdExits runs a program like exec and asserts its exact exit code, so a
// script that says "exit 2" checks 2, not just "not 0":
//
//	exits 2 spirepod --no-such-flag
//
// stdout and stderr are then checked by the next stdout/stderr commands.
func cmdExits(ts *testscript.TestScript, neg bool, args []string) {
	if neg {
		ts.Fatalf("unsupported: ! exits (say the code you expect)")
	}
	if len(args) < 2 {
		ts.Fatalf("usage: exits CODE PROGRAM [ARGS...]")
	}
	want, err := strconv.Atoi(args[0])
	if err != nil {
		ts.Fatalf("exits: code %q is not a number", args[0])
	}
	err = ts.Exec(args[1], args[2:]...)
	got := 0
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		got = ee.ExitCode()
	case err != nil:
		ts.Fatalf("exits: %v", err)
	}
	if got != want {
		ts.Fatalf("exit code %d, want %d", got, want)
	}
}
