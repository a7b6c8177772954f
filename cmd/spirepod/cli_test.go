package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/x509/pkix"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spirepod/spirepod/internal/pki"
)

// cliRun runs the CLI in-process with its own streams and environment.
func cliRun(t *testing.T, dir string, env map[string]string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	streams := &IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut}
	getenv := func(k string) string {
		if v, ok := env[k]; ok {
			return v
		}
		return ""
	}
	f := newFactory(streams, getenv)
	f.Getwd = func() (string, error) { return dir, nil }
	code = run(context.Background(), f, args)
	return code, out.String(), errOut.String()
}

// TestRunExitCodes: the Go CLI tests go through the same run as the binary,
// so a bad flag is a usage error (exit 2) here as in testscript's
// usage_exit_codes, and the injected working directory is the one used.
func TestRunExitCodes(t *testing.T) {
	dir := t.TempDir()
	env := map[string]string{"HOME": dir, "NO_COLOR": "1"}
	for _, args := range [][]string{{"--no-such-flag"}, {"pki", "gen", "--no-such-flag"}, {"no-such-command"}, {"apply", "--timeout", "0s"}} {
		code, _, errOut := cliRun(t, dir, env, args...)
		if code != exitUsage || !strings.Contains(errOut, "hint:") {
			t.Errorf("%v: exit %d, want %d; stderr:\n%s", args, code, exitUsage, errOut)
		}
	}
	// init with a relative DIR scaffolds under the injected working directory.
	if code, _, errOut := cliRun(t, dir, env, "init", "--team", "t", "--namespace", "team-t", "rel"); code != exitOK {
		t.Fatalf("init: %d\n%s", code, errOut)
	}
	if code, out, errOut := cliRun(t, dir+"/rel", env, "status", "--short", "--kubeconfig", "/nonexistent"); code == exitUsage {
		t.Fatalf("status in the scaffold made under the injected directory: %d\n%s%s", code, out, errOut)
	}
}

// writeServerCA makes a SPIRE server CA valid for d (made at run time, as
// every test key is) and returns its certificate's path.
func writeServerCA(t *testing.T, dir string, d time.Duration) string {
	t.Helper()
	cert := filepath.Join(dir, fmt.Sprintf("server-ca-%d.pem", time.Now().UnixNano()))
	if _, err := pki.Generate(context.Background(), pki.GenerateOptions{CertPath: cert, KeyPath: cert + ".key",
		Subject: pkix.Name{CommonName: "test SPIRE server CA"}, Validity: d, Rand: rand.Reader, Now: time.Now}); err != nil {
		t.Fatal(err)
	}
	return cert
}
