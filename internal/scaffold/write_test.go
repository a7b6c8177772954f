package scaffold_test

import (
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/spirepod/spirepod/internal/scaffold"
)

// cancelAfter is a context that reports itself cancelled from its n-th Err
// call on: an interrupt that lands between two files of a write.
type cancelAfter struct {
	context.Context
	n, calls atomic.Int64
}

func newCancelAfter(n int64) *cancelAfter {
	c := &cancelAfter{Context: context.Background()}
	c.n.Store(n)
	return c
}

func (c *cancelAfter) Err() error {
	if c.calls.Add(1) >= c.n.Load() {
		return context.Canceled
	}
	return nil
}

func (c *cancelAfter) Done() <-chan struct{} { return nil }

// tree lists every file under dir with its content, and every temporary or
// kept-aside file spirepod could leave behind.
func tree(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		out[filepath.ToSlash(rel)] = string(b)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func keys(m map[string]string) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// TestPlanWriteInterruptedLeavesNoHalfScaffold: an interrupt between any two
// files of init's write leaves no scaffold at all (a new directory), or the
// scaffold exactly as it was (init --force over an existing one), and no
// temporary file. Issue 21 item 2: an interrupted init left 12 of 17 files
// and no spirepod.yaml.
func TestPlanWriteInterruptedLeavesNoHalfScaffold(t *testing.T) {
	p := testProject("")
	files := render(t, p)
	if len(files) < 10 {
		t.Fatalf("only %d files rendered", len(files))
	}
	for n := int64(1); n <= int64(len(files)); n++ {
		parent := t.TempDir()
		dir := filepath.Join(parent, "team", "sc") // a parent to make too
		plan, err := scaffold.PlanWrite(dir, files)
		if err != nil {
			t.Fatal(err)
		}
		if err := plan.Write(newCancelAfter(n), false); err != context.Canceled {
			t.Fatalf("cancelled at check %d: err %v, want context.Canceled", n, err)
		}
		if ents, _ := os.ReadDir(parent); len(ents) != 0 {
			t.Fatalf("cancelled at check %d of a new scaffold: left %v", n, ents)
		}
	}

	// Over an existing scaffold (--force with another namespace): all old or all new.
	parent := t.TempDir()
	dir := filepath.Join(parent, "sc")
	plan, err := scaffold.PlanWrite(dir, files)
	if err != nil {
		t.Fatal(err)
	}
	if err := plan.Write(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	before := tree(t, parent)
	q := testProject("")
	q.Namespace = "team-z"
	changed := render(t, q)
	for n := int64(1); ; n++ {
		plan, err := scaffold.PlanWrite(dir, changed)
		if err != nil {
			t.Fatal(err)
		}
		if plan.Count(scaffold.Update) < 5 {
			t.Fatalf("the namespace change updates only %d files", plan.Count(scaffold.Update))
		}
		err = plan.Write(newCancelAfter(n), true)
		if err == nil {
			break // n checks were more than the write makes: it completed
		}
		if err != context.Canceled {
			t.Fatalf("cancelled at check %d: err %v", n, err)
		}
		if after := tree(t, parent); strings.Join(keys(after), ",") != strings.Join(keys(before), ",") {
			t.Fatalf("cancelled at check %d: files %v, want %v", n, keys(after), keys(before))
		} else {
			for k, v := range before {
				if after[k] != v {
					t.Fatalf("cancelled at check %d: %s changed", n, k)
				}
			}
		}
		if n > 1000 {
			t.Fatal("the write never completed")
		}
	}
	got := tree(t, parent)
	for rel, want := range changed {
		if len(want) == 0 {
			continue // CA placeholders stay as they are
		}
		if got["sc/"+rel] != string(want) {
			t.Fatalf("after the uninterrupted write, %s is not the new content", rel)
		}
	}
	for k := range got {
		if strings.Contains(k, ".tmp-") || strings.Contains(k, ".old-") || strings.Contains(k, ".spirepod-") {
			t.Fatalf("left %s behind", k)
		}
	}
	if st, err := os.Stat(filepath.Join(dir, "certs", "secret", "agent-x509pop.key.pem")); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key placeholder: %v %v", err, st)
	}
}
