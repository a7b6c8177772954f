package atomicfile

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestWriteFileModes(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "k.pem")
	if err := WriteFile(p, []byte("secret"), Options{Perm: 0o600, NoClobber: true}); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, want 0600", st.Mode().Perm())
	}
	err = WriteFile(p, []byte("other"), Options{Perm: 0o600, NoClobber: true})
	if !errors.Is(err, fs.ErrExist) {
		t.Fatalf("second NoClobber write: err %v, want ErrExist", err)
	}
	if b, _ := os.ReadFile(p); string(b) != "secret" {
		t.Fatalf("content changed to %q", b)
	}
	if err := WriteFile(p, []byte("new"), Options{Perm: 0o600}); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(p); string(b) != "new" {
		t.Fatalf("overwrite gave %q", b)
	}
	assertOnly(t, dir, "k.pem")
}

func TestWriteFileFailureLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "k.pem")
	if err := os.WriteFile(p, []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("disk full")
	err := WriteFile(p, []byte("new"), Options{Perm: 0o600, beforeCommit: func(tmp string) error {
		st, err := os.Stat(tmp)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("temp file mode %v, want 0600 before content is visible", st.Mode().Perm())
		}
		return boom
	}})
	if !errors.Is(err, boom) {
		t.Fatalf("err %v, want injected failure", err)
	}
	if b, _ := os.ReadFile(p); string(b) != "old" {
		t.Fatalf("old file changed to %q", b)
	}
	assertOnly(t, dir, "k.pem")
}

func assertOnly(t *testing.T, dir string, names ...string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != len(names) {
		var got []string
		for _, e := range ents {
			got = append(got, e.Name())
		}
		t.Fatalf("directory holds %v, want only %v (a temp file was left behind?)", got, names)
	}
}

// TestErrorsNameTheTarget: a failed write names the file being written,
// never the temporary file's name (issue 21 item 9: a raw "open
// …tmp-100490976: read-only file system" reached the user).
func TestErrorsNameTheTarget(t *testing.T) {
	target := filepath.Join(t.TempDir(), "missing-dir", "ca.key.pem")
	err := WriteFile(target, []byte("x"), Options{Perm: 0o600})
	var pe *fs.PathError
	if !errors.As(err, &pe) || pe.Path != target || pe.Op != "write" || !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("err %#v, want a write PathError for %s", err, target)
	}
	if strings.Contains(err.Error(), ".tmp-") {
		t.Fatalf("the error names the temporary file: %v", err)
	}
}
