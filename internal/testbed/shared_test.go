package testbed_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spirepod/spirepod/internal/testbed"
)

// TestBedInfo: what a standing bed writes is what the tests read back, the
// file is private (it names the bed's admin kubeconfig), and a bed whose
// process is gone is refused with a hint rather than used.
func TestBedInfo(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	want := testbed.BedInfo{PID: os.Getpid(), Dir: dir, Kubeconfig: filepath.Join(dir, "kubeconfig"), Context: "spirepod-testbed",
		Server: "https://127.0.0.1:6443", TestbinRoot: "/cache/testbin", CertManager: true,
		SpireServerAddress: "127.0.0.1:8081", GitHubURL: "http://127.0.0.1:1/api/v3/", GitHubRepo: "wp-wcm/city"}
	if err := testbed.WriteBedInfo(dir, want); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(dir, testbed.BedFile))
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("%s is %v, want 0600", testbed.BedFile, st.Mode().Perm())
	}
	got, err := testbed.ReadBedInfo(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Errorf("read back %+v, want %+v", got, want)
	}

	// The same bed after its process ended.
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	want.PID = cmd.Process.Pid
	if err := testbed.WriteBedInfo(dir, want); err != nil {
		t.Fatal(err)
	}
	_, err = testbed.ReadBedInfo(dir)
	if err == nil || !strings.Contains(err.Error(), "is gone") || !strings.Contains(err.Error(), testbed.BedEnv) {
		t.Errorf("a bed whose process is gone: %v, want an error naming it and %s", err, testbed.BedEnv)
	}

	// No bed at all.
	if _, err := testbed.ReadBedInfo(t.TempDir()); err == nil || !strings.Contains(err.Error(), "make bed") {
		t.Errorf("no bed.json: %v, want a hint to `make bed`", err)
	}
}
