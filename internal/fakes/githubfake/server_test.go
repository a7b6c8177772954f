package githubfake_test

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/go-github/v60/github"

	"github.com/spirepod/spirepod/internal/fakes/githubfake"
)

// The tests drive the fake through go-github, the client spirepod uses, so
// they check the wire shapes and status codes a real client sees.

const (
	login = "alice"
	token = "ghp_fake0123"
	owner = "wp-wcm"
	name  = "city"
	city  = owner + "/" + name
)

type env struct {
	s  *githubfake.Server
	gh *github.Client
}

// newEnv starts a fake holding city with files on main (a README when nil),
// and a client authenticated as alice.
func newEnv(t *testing.T, push bool, files map[string]string) *env {
	t.Helper()
	s := githubfake.New(login, token)
	t.Cleanup(s.Close)
	if files == nil {
		files = map[string]string{"README.md": "city\n"}
	}
	if _, err := s.AddRepo(city, push, "main", files); err != nil {
		t.Fatal(err)
	}
	return &env{s: s, gh: newClient(t, s, token)}
}

// newClient points go-github at the fake the way internal/pr does: GitHub
// Enterprise URLs ending in /api/v3/, the token as a bearer token.
func newClient(t *testing.T, s *githubfake.Server, tok string) *github.Client {
	t.Helper()
	gh := github.NewClient(&http.Client{Timeout: 10 * time.Second})
	if tok != "" {
		gh = gh.WithAuthToken(tok)
	}
	gh, err := gh.WithEnterpriseURLs(s.URL, s.URL)
	if err != nil {
		t.Fatal(err)
	}
	return gh
}

// statusOf is the HTTP status behind a go-github error; 0 for nil.
func statusOf(err error) int {
	var rl *github.RateLimitError
	var er *github.ErrorResponse
	var ae *github.AcceptedError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &rl):
		return rl.Response.StatusCode
	case errors.As(err, &er):
		return er.Response.StatusCode
	case errors.As(err, &ae):
		return http.StatusAccepted
	}
	return -1
}

// errorText is GitHub's message plus every validation error's message.
func errorText(err error) string {
	var er *github.ErrorResponse
	if !errors.As(err, &er) {
		return ""
	}
	s := er.Message
	for _, e := range er.Errors {
		s += " | " + e.Message
	}
	return s
}

// wantErr fails unless err is a GitHub error with status code whose text contains msg.
func wantErr(t *testing.T, err error, code int, msg string) {
	t.Helper()
	if got := statusOf(err); got != code {
		t.Fatalf("status %d, want %d (err: %v)", got, code, err)
	}
	if !strings.Contains(errorText(err), msg) {
		t.Fatalf("error %q does not say %q", errorText(err), msg)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// ---- git as the independent judge of object IDs ----

func gitRun(t *testing.T, dir string, stdin []byte, args ...string) string {
	t.Helper()
	git, err := exec.LookPath("git")
	if err != nil {
		t.Skip("git is not installed; it judges the object IDs")
	}
	cmd := exec.Command(git, args...)
	cmd.Dir = dir
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "GIT_") && !strings.HasPrefix(kv, "HOME=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "HOME="+dir, "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL="+os.DevNull)
	cmd.Stdin = bytes.NewReader(stdin)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return strings.TrimSpace(string(out))
}

// gitBlobID is `git hash-object` of data.
func gitBlobID(t *testing.T, data string) string {
	t.Helper()
	return gitRun(t, t.TempDir(), []byte(data), "hash-object", "--stdin")
}

// gitTreeID is the root tree real git writes for files, the paths in
// executable with mode 100755.
func gitTreeID(t *testing.T, files map[string]string, executable ...string) string {
	t.Helper()
	dir := t.TempDir()
	gitRun(t, dir, nil, "init", "-q")
	exe := map[string]bool{}
	for _, p := range executable {
		exe[p] = true
	}
	for p, c := range files {
		f := filepath.Join(dir, filepath.FromSlash(p))
		must(t, os.MkdirAll(filepath.Dir(f), 0o755))
		mode := os.FileMode(0o644)
		if exe[p] {
			mode = 0o755
		}
		must(t, os.WriteFile(f, []byte(c), mode))
		must(t, os.Chmod(f, mode)) // past the umask
	}
	gitRun(t, dir, nil, "add", "-A")
	return gitRun(t, dir, nil, "write-tree")
}

// ---- refs ----

func TestRefs(t *testing.T) {
	ctx := context.Background()
	ref := func(name, sha string) *github.Reference {
		return &github.Reference{Ref: github.String(name), Object: &github.GitObject{SHA: github.String(sha)}}
	}
	// Each case starts from main = second, whose parent is first.
	tests := []struct {
		name string
		run  func(t *testing.T, e *env, first, second string)
	}{
		{"get a branch ref", func(t *testing.T, e *env, _, second string) {
			r, resp, err := e.gh.Git.GetRef(ctx, owner, name, "refs/heads/main")
			must(t, err)
			if resp.StatusCode != 200 || r.GetRef() != "refs/heads/main" || r.GetObject().GetSHA() != second || r.GetObject().GetType() != "commit" {
				t.Fatalf("GetRef: %d %s -> %s %s, want 200 refs/heads/main -> commit %s", resp.StatusCode, r.GetRef(), r.GetObject().GetType(), r.GetObject().GetSHA(), second)
			}
		}},
		{"get a branch with its tip and tree", func(t *testing.T, e *env, first, second string) {
			b, _, err := e.gh.Repositories.GetBranch(ctx, owner, name, "main", 0)
			must(t, err)
			c, _, err := e.gh.Git.GetCommit(ctx, owner, name, second)
			must(t, err)
			if b.GetCommit().GetSHA() != second || b.GetCommit().GetCommit().GetTree().GetSHA() != c.GetTree().GetSHA() {
				t.Fatalf("branch main: %s tree %s, want %s tree %s", b.GetCommit().GetSHA(), b.GetCommit().GetCommit().GetTree().GetSHA(), second, c.GetTree().GetSHA())
			}
			want := gitTreeID(t, map[string]string{"README.md": "city\n", "docs/a.txt": "a\n"})
			if c.GetTree().GetSHA() != want {
				t.Errorf("tree %s, git writes %s", c.GetTree().GetSHA(), want)
			}
			if len(c.Parents) != 1 || c.Parents[0].GetSHA() != first || c.GetMessage() != "second" {
				t.Errorf("commit %s: parents %v message %q, want [%s] %q", second, c.Parents, c.GetMessage(), first, "second")
			}
		}},
		{"a missing ref or branch is 404", func(t *testing.T, e *env, _, _ string) {
			_, _, err := e.gh.Git.GetRef(ctx, owner, name, "refs/heads/nope")
			wantErr(t, err, 404, "Not Found")
			// go-github's GetBranch drops the error body; the status remains.
			_, resp, err := e.gh.Repositories.GetBranch(ctx, owner, name, "nope", 0)
			if err == nil || resp == nil || resp.StatusCode != 404 {
				t.Fatalf("GetBranch nope: %v, want 404", err)
			}
			_, _, err = e.gh.Git.GetRef(ctx, owner, "nope", "refs/heads/main")
			wantErr(t, err, 404, "Not Found")
		}},
		{"create a ref", func(t *testing.T, e *env, first, _ string) {
			r, resp, err := e.gh.Git.CreateRef(ctx, owner, name, ref("refs/heads/spirepod/x", first))
			must(t, err)
			if resp.StatusCode != 201 || r.GetRef() != "refs/heads/spirepod/x" || r.GetObject().GetSHA() != first {
				t.Fatalf("CreateRef: %d %s -> %s", resp.StatusCode, r.GetRef(), r.GetObject().GetSHA())
			}
			if got := e.s.Ref(city, "spirepod/x"); got != first {
				t.Fatalf("server holds spirepod/x at %q, want %s", got, first)
			}
			back, _, err := e.gh.Git.GetRef(ctx, owner, name, "refs/heads/spirepod/x")
			must(t, err)
			if back.GetObject().GetSHA() != first {
				t.Fatalf("read back %s, want %s", back.GetObject().GetSHA(), first)
			}
		}},
		{"creating an existing ref is 422 and leaves it", func(t *testing.T, e *env, first, second string) {
			_, _, err := e.gh.Git.CreateRef(ctx, owner, name, ref("refs/heads/main", first))
			wantErr(t, err, 422, "Reference already exists")
			if got := e.s.Ref(city, "main"); got != second {
				t.Fatalf("main moved to %s", got)
			}
		}},
		{"creating a ref at a missing object is 422", func(t *testing.T, e *env, _, _ string) {
			_, _, err := e.gh.Git.CreateRef(ctx, owner, name, ref("refs/heads/x", strings.Repeat("ab", 20)))
			wantErr(t, err, 422, "Object does not exist")
			if e.s.Ref(city, "x") != "" {
				t.Fatal("the ref was created anyway")
			}
		}},
		{"a ref name without two slashes is 422", func(t *testing.T, e *env, first, _ string) {
			_, _, err := e.gh.Git.CreateRef(ctx, owner, name, ref("refs/x", first))
			wantErr(t, err, 422, "at least two slashes")
		}},
		{"update a ref fast-forward", func(t *testing.T, e *env, first, second string) {
			_, _, err := e.gh.Git.CreateRef(ctx, owner, name, ref("refs/heads/x", first))
			must(t, err)
			r, _, err := e.gh.Git.UpdateRef(ctx, owner, name, ref("refs/heads/x", second), false)
			must(t, err)
			if r.GetObject().GetSHA() != second || e.s.Ref(city, "x") != second {
				t.Fatalf("x at %s (server %s), want %s", r.GetObject().GetSHA(), e.s.Ref(city, "x"), second)
			}
		}},
		{"rewinding a ref needs force", func(t *testing.T, e *env, first, second string) {
			_, _, err := e.gh.Git.UpdateRef(ctx, owner, name, ref("refs/heads/main", first), false)
			wantErr(t, err, 422, "Update is not a fast forward")
			if got := e.s.Ref(city, "main"); got != second {
				t.Fatalf("refused update moved main to %s", got)
			}
			r, _, err := e.gh.Git.UpdateRef(ctx, owner, name, ref("refs/heads/main", first), true)
			must(t, err)
			if r.GetObject().GetSHA() != first || e.s.Ref(city, "main") != first {
				t.Fatalf("forced update: main at %s, want %s", e.s.Ref(city, "main"), first)
			}
		}},
		{"moving a ref to a diverged commit needs force", func(t *testing.T, e *env, first, second string) {
			_, _, err := e.gh.Git.CreateRef(ctx, owner, name, ref("refs/heads/x", first))
			must(t, err)
			side, err := e.s.Commit(city, "x", map[string]string{"side.txt": "side\n"}, "side")
			must(t, err)
			_, _, err = e.gh.Git.UpdateRef(ctx, owner, name, ref("refs/heads/main", side), false)
			wantErr(t, err, 422, "Update is not a fast forward")
			_, _, err = e.gh.Git.UpdateRef(ctx, owner, name, ref("refs/heads/main", side), true)
			must(t, err)
			if e.s.Ref(city, "main") != side {
				t.Fatalf("main at %s, want %s", e.s.Ref(city, "main"), side)
			}
		}},
		{"updating a missing ref is 422 and creates nothing", func(t *testing.T, e *env, first, _ string) {
			_, _, err := e.gh.Git.UpdateRef(ctx, owner, name, ref("refs/heads/nope", first), true)
			wantErr(t, err, 422, "Reference does not exist")
			if e.s.Ref(city, "nope") != "" {
				t.Fatal("update created the ref")
			}
		}},
		{"updating a ref to a missing object is 422", func(t *testing.T, e *env, _, second string) {
			_, _, err := e.gh.Git.UpdateRef(ctx, owner, name, ref("refs/heads/main", strings.Repeat("cd", 20)), true)
			wantErr(t, err, 422, "Object does not exist")
			if e.s.Ref(city, "main") != second {
				t.Fatal("main moved")
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, true, nil)
			first := e.s.Ref(city, "main")
			second, err := e.s.Commit(city, "main", map[string]string{"docs/a.txt": "a\n"}, "second")
			must(t, err)
			tt.run(t, e, first, second)
		})
	}
}

// ---- blobs, trees, commits ----

func TestGitDataBuildsWhatGitBuilds(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, true, map[string]string{
		"README.md":     "city\n",
		"ns/a.yaml":     "a: 1\n",
		"ns/b.yaml":     "b: 1\n",
		"ns/sub/c.yaml": "c: 1\n",
	})
	base := e.s.Ref(city, "main")
	bc, _, err := e.gh.Git.GetCommit(ctx, owner, name, base)
	must(t, err)

	text := "new: file\n"
	binary := string([]byte{0, 1, 2, 0xfe, 0xff, '\n', 0x80})
	textBlob, resp, err := e.gh.Git.CreateBlob(ctx, owner, name, &github.Blob{Content: github.String(text), Encoding: github.String("utf-8")})
	must(t, err)
	if resp.StatusCode != 201 {
		t.Errorf("CreateBlob: status %d, want 201", resp.StatusCode)
	}
	binBlob, _, err := e.gh.Git.CreateBlob(ctx, owner, name, &github.Blob{
		Content: github.String("AAEC/v8KgA=="), Encoding: github.String("base64")})
	must(t, err)
	t.Run("blob SHAs are git's", func(t *testing.T) {
		if want := gitBlobID(t, text); textBlob.GetSHA() != want {
			t.Errorf("utf-8 blob %s, git hash-object says %s", textBlob.GetSHA(), want)
		}
		if want := gitBlobID(t, binary); binBlob.GetSHA() != want {
			t.Errorf("base64 blob %s, git hash-object says %s", binBlob.GetSHA(), want)
		}
	})

	tree, resp, err := e.gh.Git.CreateTree(ctx, owner, name, bc.GetTree().GetSHA(), []*github.TreeEntry{
		{Path: github.String("ns/new.yaml"), Mode: github.String("100644"), Type: github.String("blob"), SHA: textBlob.SHA},
		{Path: github.String("ns/a.yaml"), Mode: github.String("100644"), Type: github.String("blob"), Content: github.String("a: 2\n")},
		{Path: github.String("ns/b.yaml"), Mode: github.String("100644"), Type: github.String("blob")}, // sha: null deletes
		{Path: github.String("ns/sub/c.yaml"), Mode: github.String("100644"), Type: github.String("blob")},
		{Path: github.String("ns/deep/x/data.bin"), Mode: github.String("100644"), Type: github.String("blob"), SHA: binBlob.SHA},
		{Path: github.String("bin/run.sh"), Mode: github.String("100755"), Type: github.String("blob"), Content: github.String("#!/bin/sh\n")},
	})
	must(t, err)
	if resp.StatusCode != 201 {
		t.Errorf("CreateTree: status %d, want 201", resp.StatusCode)
	}
	want := map[string]string{
		"README.md":          "city\n",
		"ns/a.yaml":          "a: 2\n",
		"ns/new.yaml":        text,
		"ns/deep/x/data.bin": binary,
		"bin/run.sh":         "#!/bin/sh\n",
	}
	t.Run("tree SHA is git's", func(t *testing.T) {
		// ns/sub lost its only file, so git has no ns/sub tree either.
		if w := gitTreeID(t, want, "bin/run.sh"); tree.GetSHA() != w {
			t.Fatalf("tree %s, git write-tree says %s", tree.GetSHA(), w)
		}
	})

	commit, resp, err := e.gh.Git.CreateCommit(ctx, owner, name, &github.Commit{
		Message: github.String("edit ns"), Tree: &github.Tree{SHA: tree.SHA}, Parents: []*github.Commit{{SHA: github.String(base)}}}, nil)
	must(t, err)
	t.Run("commit has the tree and parent", func(t *testing.T) {
		if resp.StatusCode != 201 || commit.GetTree().GetSHA() != tree.GetSHA() || len(commit.Parents) != 1 || commit.Parents[0].GetSHA() != base {
			t.Fatalf("CreateCommit: %d tree %s parents %v", resp.StatusCode, commit.GetTree().GetSHA(), commit.Parents)
		}
		back, _, err := e.gh.Git.GetCommit(ctx, owner, name, commit.GetSHA())
		must(t, err)
		if back.GetMessage() != "edit ns" || back.GetTree().GetSHA() != tree.GetSHA() || len(back.Parents) != 1 || back.Parents[0].GetSHA() != base {
			t.Fatalf("GetCommit: %q tree %s parents %v", back.GetMessage(), back.GetTree().GetSHA(), back.Parents)
		}
		parents, err := e.s.CommitParents(city, commit.GetSHA())
		must(t, err)
		if !reflect.DeepEqual(parents, []string{base}) {
			t.Fatalf("server: parents %v, want [%s]", parents, base)
		}
	})
	t.Run("a commit no ref points at is readable by SHA, the branch is unchanged", func(t *testing.T) {
		got, err := e.s.Files(city, commit.GetSHA())
		must(t, err)
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("Files(%s) = %q, want %q", commit.GetSHA(), got, want)
		}
		fc, _, _, err := e.gh.Repositories.GetContents(ctx, owner, name, "ns/a.yaml", nil)
		must(t, err)
		if c, _ := fc.GetContent(); c != "a: 1\n" {
			t.Fatalf("main's ns/a.yaml is %q before the ref moved", c)
		}
	})

	_, _, err = e.gh.Git.UpdateRef(ctx, owner, name, &github.Reference{Ref: github.String("refs/heads/main"),
		Object: &github.GitObject{SHA: commit.SHA}}, false)
	must(t, err)
	t.Run("the branch reads back through Files", func(t *testing.T) {
		got, err := e.s.Files(city, "main")
		must(t, err)
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("Files(main) = %q, want %q", got, want)
		}
	})
	t.Run("the branch reads back through the contents API", func(t *testing.T) {
		for p, c := range want {
			fc, _, _, err := e.gh.Repositories.GetContents(ctx, owner, name, p, nil)
			must(t, err)
			got, err := fc.GetContent()
			must(t, err)
			if got != c || fc.GetSHA() != gitBlobID(t, c) {
				t.Errorf("%s: %q sha %s, want %q sha %s", p, got, fc.GetSHA(), c, gitBlobID(t, c))
			}
		}
		for _, p := range []string{"ns/b.yaml", "ns/sub/c.yaml", "ns/sub"} {
			_, _, _, err := e.gh.Repositories.GetContents(ctx, owner, name, p, nil)
			wantErr(t, err, 404, "Not Found")
		}
	})
}

func TestGitDataRejects(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name string
		call func(e *env, base, baseTree, blob string) error
		msg  string
	}{
		{"a tree on a base_tree that is not a tree", func(e *env, base, _, _ string) error {
			_, _, err := e.gh.Git.CreateTree(ctx, owner, name, base, []*github.TreeEntry{
				{Path: github.String("x"), Mode: github.String("100644"), Type: github.String("blob"), Content: github.String("x")}})
			return err
		}, "base_tree"},
		{"a tree entry naming a missing blob", func(e *env, _, baseTree, _ string) error {
			_, _, err := e.gh.Git.CreateTree(ctx, owner, name, baseTree, []*github.TreeEntry{
				{Path: github.String("x"), Mode: github.String("100644"), Type: github.String("blob"), SHA: github.String(strings.Repeat("ef", 20))}})
			return err
		}, "not a valid blob"},
		{"a tree entry with an invalid mode", func(e *env, _, baseTree, blob string) error {
			_, _, err := e.gh.Git.CreateTree(ctx, owner, name, baseTree, []*github.TreeEntry{
				{Path: github.String("x"), Mode: github.String("777"), Type: github.String("blob"), SHA: github.String(blob)}})
			return err
		}, "tree.mode"},
		{"a commit on a missing tree", func(e *env, base, _, _ string) error {
			_, _, err := e.gh.Git.CreateCommit(ctx, owner, name, &github.Commit{Message: github.String("m"),
				Tree: &github.Tree{SHA: github.String(strings.Repeat("12", 20))}, Parents: []*github.Commit{{SHA: github.String(base)}}}, nil)
			return err
		}, "Tree SHA does not exist"},
		{"a commit whose parent is not a commit", func(e *env, _, baseTree, blob string) error {
			_, _, err := e.gh.Git.CreateCommit(ctx, owner, name, &github.Commit{Message: github.String("m"),
				Tree: &github.Tree{SHA: github.String(baseTree)}, Parents: []*github.Commit{{SHA: github.String(blob)}}}, nil)
			return err
		}, "Parent SHA does not exist"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, true, nil)
			base := e.s.Ref(city, "main")
			c, _, err := e.gh.Git.GetCommit(ctx, owner, name, base)
			must(t, err)
			b, _, err := e.gh.Git.CreateBlob(ctx, owner, name, &github.Blob{Content: github.String("x"), Encoding: github.String("utf-8")})
			must(t, err)
			wantErr(t, tt.call(e, base, c.GetTree().GetSHA(), b.GetSHA()), 422, tt.msg)
			if e.s.Ref(city, "main") != base {
				t.Fatal("a rejected request moved main")
			}
		})
	}
	t.Run("a missing commit is 404", func(t *testing.T) {
		e := newEnv(t, true, nil)
		_, _, err := e.gh.Git.GetCommit(ctx, owner, name, strings.Repeat("34", 20))
		wantErr(t, err, 404, "Not Found")
	})
}

// ---- contents ----

func TestContents(t *testing.T) {
	ctx := context.Background()
	long := strings.Repeat("spiffe://city.example/ns/spire/sa/workload\n", 5) // > 60 base64 columns
	binary := string([]byte{0, 0xff, 0x10, '\r', '\n', 0x80})
	files := map[string]string{
		"README.md":                  "city\n",
		"bin.dat":                    binary,
		"ns/spire/trust.yaml":        long,
		"ns/spire/sub/kustomization": "resources: []\n",
	}
	tests := []struct {
		name string
		run  func(t *testing.T, e *env)
	}{
		{"a file's base64 content decodes to its bytes", func(t *testing.T, e *env) {
			fc, dir, resp, err := e.gh.Repositories.GetContents(ctx, owner, name, "ns/spire/trust.yaml", nil)
			must(t, err)
			if resp.StatusCode != 200 || fc == nil || dir != nil {
				t.Fatalf("GetContents: status %d, file %v, dir %v", resp.StatusCode, fc != nil, dir)
			}
			got, err := fc.GetContent()
			must(t, err)
			if got != long || fc.GetType() != "file" || fc.GetEncoding() != "base64" || fc.GetName() != "trust.yaml" ||
				fc.GetPath() != "ns/spire/trust.yaml" || fc.GetSize() != len(long) || fc.GetSHA() != gitBlobID(t, long) {
				t.Fatalf("got %s %s %s %s size %d sha %s content %q", fc.GetType(), fc.GetEncoding(), fc.GetName(), fc.GetPath(), fc.GetSize(), fc.GetSHA(), got)
			}
			// GitHub wraps the base64 at 60 columns; clients must cope.
			raw := ""
			if fc.Content != nil {
				raw = *fc.Content
			}
			lines := strings.Split(strings.TrimSuffix(raw, "\n"), "\n")
			if len(lines) < 2 {
				t.Fatalf("content is not wrapped: %q", raw)
			}
			for _, l := range lines {
				if len(l) > 60 {
					t.Fatalf("base64 line of %d columns", len(l))
				}
			}
		}},
		{"a binary file round-trips", func(t *testing.T, e *env) {
			fc, _, _, err := e.gh.Repositories.GetContents(ctx, owner, name, "bin.dat", nil)
			must(t, err)
			if got, err := fc.GetContent(); err != nil || got != binary {
				t.Fatalf("bin.dat: %q %v, want %q", got, err, binary)
			}
		}},
		{"a directory lists its entries", func(t *testing.T, e *env) {
			fc, dir, _, err := e.gh.Repositories.GetContents(ctx, owner, name, "ns/spire", nil)
			must(t, err)
			got := listing(dir)
			want := []string{"dir ns/spire/sub", "file ns/spire/trust.yaml " + gitBlobID(t, long)}
			if fc != nil || !reflect.DeepEqual(got, want) {
				t.Fatalf("ns/spire: file %v, entries %q, want %q", fc != nil, got, want)
			}
		}},
		{"the root directory lists its entries", func(t *testing.T, e *env) {
			_, dir, _, err := e.gh.Repositories.GetContents(ctx, owner, name, "", nil)
			must(t, err)
			want := []string{"file README.md " + gitBlobID(t, "city\n"), "file bin.dat " + gitBlobID(t, binary), "dir ns"}
			if got := listing(dir); !reflect.DeepEqual(got, want) {
				t.Fatalf("root: %q, want %q", got, want)
			}
		}},
		{"a missing path is 404", func(t *testing.T, e *env) {
			_, _, _, err := e.gh.Repositories.GetContents(ctx, owner, name, "ns/nope.yaml", nil)
			wantErr(t, err, 404, "Not Found")
			_, _, _, err = e.gh.Repositories.GetContents(ctx, owner, name, "ns/spire/trust.yaml/x", nil)
			wantErr(t, err, 404, "Not Found")
		}},
		{"a missing ref is 404", func(t *testing.T, e *env) {
			_, _, _, err := e.gh.Repositories.GetContents(ctx, owner, name, "README.md", &github.RepositoryContentGetOptions{Ref: "nope"})
			wantErr(t, err, 404, "No commit found for the ref nope")
		}},
		{"ref reads another branch or a commit", func(t *testing.T, e *env) {
			mainSHA := e.s.Ref(city, "main")
			_, _, err := e.gh.Git.CreateRef(ctx, owner, name, &github.Reference{Ref: github.String("refs/heads/feature"),
				Object: &github.GitObject{SHA: github.String(mainSHA)}})
			must(t, err)
			_, err = e.s.Commit(city, "feature", map[string]string{"README.md": "feature\n"}, "on feature")
			must(t, err)
			for ref, want := range map[string]string{"": "city\n", "main": "city\n", "feature": "feature\n",
				"refs/heads/feature": "feature\n", mainSHA: "city\n"} {
				fc, _, _, err := e.gh.Repositories.GetContents(ctx, owner, name, "README.md", &github.RepositoryContentGetOptions{Ref: ref})
				must(t, err)
				if got, _ := fc.GetContent(); got != want {
					t.Errorf("README.md at ref %q: %q, want %q", ref, got, want)
				}
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.run(t, newEnv(t, true, files))
		})
	}
}

// listing renders a directory listing as "type path [sha]" lines, in order.
func listing(dir []*github.RepositoryContent) []string {
	var out []string
	for _, c := range dir {
		s := c.GetType() + " " + c.GetPath()
		if c.GetType() == "file" {
			s += " " + c.GetSHA()
		}
		out = append(out, s)
	}
	return out
}

// ---- pull requests ----

// branch makes branch from main's tip and commits files on it; it returns the tip.
func branch(t *testing.T, e *env, repo, branch string, files map[string]string) string {
	t.Helper()
	o, n, _ := strings.Cut(repo, "/")
	_, _, err := e.gh.Git.CreateRef(context.Background(), o, n, &github.Reference{Ref: github.String("refs/heads/" + branch),
		Object: &github.GitObject{SHA: github.String(e.s.Ref(repo, "main"))}})
	must(t, err)
	if files == nil {
		return e.s.Ref(repo, branch)
	}
	sha, err := e.s.Commit(repo, branch, files, "change on "+branch)
	must(t, err)
	return sha
}

func openPull(t *testing.T, e *env, head string) *github.PullRequest {
	t.Helper()
	p, _, err := e.gh.PullRequests.Create(context.Background(), owner, name, &github.NewPullRequest{
		Title: github.String("title " + head), Body: github.String("body"), Head: github.String(head), Base: github.String("main")})
	must(t, err)
	return p
}

func numbers(prs []*github.PullRequest) []int {
	out := []int{}
	for _, p := range prs {
		out = append(out, p.GetNumber())
	}
	return out
}

func TestPullRequests(t *testing.T) {
	ctx := context.Background()
	list := func(t *testing.T, e *env, o github.PullRequestListOptions) []*github.PullRequest {
		t.Helper()
		prs, _, err := e.gh.PullRequests.List(ctx, owner, name, &o)
		must(t, err)
		return prs
	}
	tests := []struct {
		name string
		run  func(t *testing.T, e *env)
	}{
		{"create one", func(t *testing.T, e *env) {
			head := branch(t, e, city, "spirepod/x", map[string]string{"x.yaml": "x\n"})
			base := e.s.Ref(city, "main")
			p, resp, err := e.gh.PullRequests.Create(ctx, owner, name, &github.NewPullRequest{
				Title: github.String("Trust the CA"), Body: github.String("why"), Head: github.String(owner + ":spirepod/x"), Base: github.String("main")})
			must(t, err)
			if resp.StatusCode != 201 || p.GetNumber() != 1 || p.GetState() != "open" || p.GetMerged() || p.GetTitle() != "Trust the CA" || p.GetBody() != "why" {
				t.Fatalf("Create: %d #%d %s merged=%v %q %q", resp.StatusCode, p.GetNumber(), p.GetState(), p.GetMerged(), p.GetTitle(), p.GetBody())
			}
			if p.GetHead().GetRef() != "spirepod/x" || p.GetHead().GetSHA() != head || p.GetHead().GetLabel() != owner+":spirepod/x" ||
				p.GetHead().GetRepo().GetFullName() != city || p.GetBase().GetRef() != "main" || p.GetBase().GetSHA() != base {
				t.Fatalf("head %s@%s (%s, %s), base %s@%s", p.GetHead().GetRef(), p.GetHead().GetSHA(), p.GetHead().GetLabel(),
					p.GetHead().GetRepo().GetFullName(), p.GetBase().GetRef(), p.GetBase().GetSHA())
			}
			if !strings.HasSuffix(p.GetHTMLURL(), "/"+city+"/pull/1") || p.ClosedAt != nil || p.MergedAt != nil {
				t.Fatalf("html_url %s closed_at %v merged_at %v", p.GetHTMLURL(), p.ClosedAt, p.MergedAt)
			}
			if ps := e.s.Pulls(city); len(ps) != 1 || ps[0].HeadRef != "spirepod/x" || ps[0].State != "open" {
				t.Fatalf("server pulls: %+v", ps)
			}
		}},
		{"list by head and base", func(t *testing.T, e *env) {
			branch(t, e, city, "spirepod/x", map[string]string{"x.yaml": "x\n"})
			branch(t, e, city, "spirepod/y", map[string]string{"y.yaml": "y\n"})
			openPull(t, e, "spirepod/x")
			openPull(t, e, "spirepod/y")
			for _, c := range []struct {
				o    github.PullRequestListOptions
				want []int
			}{
				{github.PullRequestListOptions{}, []int{2, 1}}, // newest first
				{github.PullRequestListOptions{Head: owner + ":spirepod/x"}, []int{1}},
				{github.PullRequestListOptions{Head: owner + ":spirepod/y", Base: "main"}, []int{2}},
				{github.PullRequestListOptions{Head: owner + ":nope"}, []int{}},
				{github.PullRequestListOptions{Head: "bob:spirepod/x"}, []int{}},
				{github.PullRequestListOptions{Base: "other"}, []int{}},
				{github.PullRequestListOptions{State: "closed"}, []int{}},
				// GitHub ignores a head without "owner:", so this lists both.
				{github.PullRequestListOptions{Head: "spirepod/x"}, []int{2, 1}},
			} {
				if got := numbers(list(t, e, c.o)); !reflect.DeepEqual(got, c.want) {
					t.Errorf("list head=%q base=%q state=%q: %v, want %v", c.o.Head, c.o.Base, c.o.State, got, c.want)
				}
			}
		}},
		{"a second PR for the same head and base is 422", func(t *testing.T, e *env) {
			branch(t, e, city, "spirepod/x", map[string]string{"x.yaml": "x\n"})
			openPull(t, e, "spirepod/x")
			_, _, err := e.gh.PullRequests.Create(ctx, owner, name, &github.NewPullRequest{
				Title: github.String("again"), Head: github.String(owner + ":spirepod/x"), Base: github.String("main")})
			wantErr(t, err, 422, "A pull request already exists for "+owner+":spirepod/x.")
			if n := len(e.s.Pulls(city)); n != 1 {
				t.Fatalf("%d pull requests, want 1", n)
			}
		}},
		{"no commits between head and base is 422", func(t *testing.T, e *env) {
			branch(t, e, city, "same", nil)
			branch(t, e, city, "behind", nil)
			_, err := e.s.Commit(city, "main", map[string]string{"later.txt": "later\n"}, "later")
			must(t, err)
			for _, head := range []string{"same", "behind"} {
				if head == "same" {
					_, _, err := e.gh.Git.UpdateRef(ctx, owner, name, &github.Reference{Ref: github.String("refs/heads/same"),
						Object: &github.GitObject{SHA: github.String(e.s.Ref(city, "main"))}}, false)
					must(t, err)
				}
				_, _, err := e.gh.PullRequests.Create(ctx, owner, name, &github.NewPullRequest{
					Title: github.String("t"), Head: github.String(head), Base: github.String("main")})
				wantErr(t, err, 422, "No commits between main and "+head)
			}
			if n := len(e.s.Pulls(city)); n != 0 {
				t.Fatalf("%d pull requests, want 0", n)
			}
		}},
		{"a missing head or base is 422", func(t *testing.T, e *env) {
			branch(t, e, city, "spirepod/x", map[string]string{"x.yaml": "x\n"})
			for _, c := range []struct{ head, base, msg string }{
				{"nope", "main", "head does not exist"},
				{"spirepod/x", "nope", "base does not exist"},
				{"bob:spirepod/x", "main", "head is invalid"},
			} {
				_, _, err := e.gh.PullRequests.Create(ctx, owner, name, &github.NewPullRequest{
					Title: github.String("t"), Head: github.String(c.head), Base: github.String(c.base)})
				wantErr(t, err, 422, c.msg)
			}
		}},
		{"update title and body", func(t *testing.T, e *env) {
			branch(t, e, city, "spirepod/x", map[string]string{"x.yaml": "x\n"})
			openPull(t, e, "spirepod/x")
			p, _, err := e.gh.PullRequests.Edit(ctx, owner, name, 1, &github.PullRequest{Title: github.String("new title"), Body: github.String("new body")})
			must(t, err)
			if p.GetTitle() != "new title" || p.GetBody() != "new body" || p.GetState() != "open" {
				t.Fatalf("Edit returned %q %q %s", p.GetTitle(), p.GetBody(), p.GetState())
			}
			back, _, err := e.gh.PullRequests.Get(ctx, owner, name, 1)
			must(t, err)
			if back.GetTitle() != "new title" || back.GetBody() != "new body" {
				t.Fatalf("Get after Edit: %q %q", back.GetTitle(), back.GetBody())
			}
			_, _, err = e.gh.PullRequests.Get(ctx, owner, name, 2)
			wantErr(t, err, 404, "Not Found")
		}},
		{"merge puts the head's tree on the base", func(t *testing.T, e *env) {
			oldMain := e.s.Ref(city, "main")
			head := branch(t, e, city, "spirepod/x", map[string]string{"x.yaml": "x\n", "README.md": "city v2\n"})
			openPull(t, e, "spirepod/x")
			sha, err := e.s.Merge(city, 1)
			must(t, err)
			p, _, err := e.gh.PullRequests.Get(ctx, owner, name, 1)
			must(t, err)
			if !p.GetMerged() || p.GetState() != "closed" || p.GetMergeCommitSHA() != sha || p.MergedAt == nil || p.ClosedAt == nil || p.GetHead().GetSHA() != head {
				t.Fatalf("merged PR: merged=%v state=%s merge_commit=%s (want %s) merged_at=%v closed_at=%v head=%s",
					p.GetMerged(), p.GetState(), p.GetMergeCommitSHA(), sha, p.MergedAt, p.ClosedAt, p.GetHead().GetSHA())
			}
			if e.s.Ref(city, "main") != sha {
				t.Fatalf("main at %s, want the merge commit %s", e.s.Ref(city, "main"), sha)
			}
			mc, _, err := e.gh.Git.GetCommit(ctx, owner, name, sha)
			must(t, err)
			hc, _, err := e.gh.Git.GetCommit(ctx, owner, name, head)
			must(t, err)
			if mc.GetTree().GetSHA() != hc.GetTree().GetSHA() || len(mc.Parents) != 2 || mc.Parents[0].GetSHA() != oldMain || mc.Parents[1].GetSHA() != head {
				t.Fatalf("merge commit tree %s (head's %s) parents %v, want [%s %s]", mc.GetTree().GetSHA(), hc.GetTree().GetSHA(), mc.Parents, oldMain, head)
			}
			got, err := e.s.Files(city, "main")
			must(t, err)
			if want := map[string]string{"README.md": "city v2\n", "x.yaml": "x\n"}; !reflect.DeepEqual(got, want) {
				t.Fatalf("main holds %q, want %q", got, want)
			}
			// Listed pull requests carry merged_at, not merged (GitHub's pull-request-simple).
			closed := list(t, e, github.PullRequestListOptions{State: "closed"})
			if len(closed) != 1 || closed[0].MergedAt == nil || closed[0].Merged != nil || closed[0].GetMergeCommitSHA() != sha {
				t.Fatalf("closed list: %v merged_at=%v merged=%v", numbers(closed), closed[0].MergedAt, closed[0].Merged)
			}
			if open := list(t, e, github.PullRequestListOptions{}); len(open) != 0 {
				t.Fatalf("open list: %v", numbers(open))
			}
			if _, err := e.s.Merge(city, 1); err == nil {
				t.Fatal("merging a merged PR again succeeded")
			}
		}},
		{"merge after the base moved keeps both sides", func(t *testing.T, e *env) {
			branch(t, e, city, "spirepod/x", map[string]string{"ns/x.yaml": "x\n"})
			openPull(t, e, "spirepod/x")
			_, err := e.s.Commit(city, "main", map[string]string{"ns/other.yaml": "other\n"}, "meanwhile")
			must(t, err)
			sha, err := e.s.Merge(city, 1)
			must(t, err)
			want := map[string]string{"README.md": "city\n", "ns/x.yaml": "x\n", "ns/other.yaml": "other\n"}
			got, err := e.s.Files(city, "main")
			must(t, err)
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("main holds %q, want %q", got, want)
			}
			mc, _, err := e.gh.Git.GetCommit(ctx, owner, name, sha)
			must(t, err)
			if w := gitTreeID(t, want); mc.GetTree().GetSHA() != w {
				t.Fatalf("merge tree %s, git writes %s", mc.GetTree().GetSHA(), w)
			}
		}},
		{"a conflicting merge leaves base and PR alone", func(t *testing.T, e *env) {
			branch(t, e, city, "spirepod/x", map[string]string{"README.md": "ours\n"})
			openPull(t, e, "spirepod/x")
			before, err := e.s.Commit(city, "main", map[string]string{"README.md": "theirs\n"}, "meanwhile")
			must(t, err)
			if _, err := e.s.Merge(city, 1); err == nil || !strings.Contains(err.Error(), "conflict in README.md") {
				t.Fatalf("Merge: %v, want a conflict in README.md", err)
			}
			p, _, err := e.gh.PullRequests.Get(ctx, owner, name, 1)
			must(t, err)
			if e.s.Ref(city, "main") != before || p.GetState() != "open" || p.GetMerged() {
				t.Fatalf("after a conflict: main %s (want %s), PR %s merged=%v", e.s.Ref(city, "main"), before, p.GetState(), p.GetMerged())
			}
		}},
		{"close without merging", func(t *testing.T, e *env) {
			branch(t, e, city, "spirepod/x", map[string]string{"x.yaml": "x\n"})
			openPull(t, e, "spirepod/x")
			before := e.s.Ref(city, "main")
			p, _, err := e.gh.PullRequests.Edit(ctx, owner, name, 1, &github.PullRequest{State: github.String("closed")})
			must(t, err)
			if p.GetState() != "closed" || p.GetMerged() || p.ClosedAt == nil || p.MergedAt != nil || e.s.Ref(city, "main") != before {
				t.Fatalf("closed PR: %s merged=%v closed_at=%v merged_at=%v", p.GetState(), p.GetMerged(), p.ClosedAt, p.MergedAt)
			}
			if got := numbers(list(t, e, github.PullRequestListOptions{Head: owner + ":spirepod/x"})); len(got) != 0 {
				t.Fatalf("open list holds %v", got)
			}
			if got := numbers(list(t, e, github.PullRequestListOptions{State: "all", Head: owner + ":spirepod/x"})); !reflect.DeepEqual(got, []int{1}) {
				t.Fatalf("all list holds %v", got)
			}
			// Only an open PR blocks a new one for the same head.
			if p := openPull(t, e, "spirepod/x"); p.GetNumber() != 2 {
				t.Fatalf("reopened as #%d, want #2", p.GetNumber())
			}
			must(t, e.s.ClosePull(city, 2))
			if p, _, err := e.gh.PullRequests.Get(ctx, owner, name, 2); err != nil || p.GetState() != "closed" || p.ClosedAt == nil {
				t.Fatalf("#2 after ClosePull: %v %s closed_at=%v", err, p.GetState(), p.ClosedAt)
			}
			if got := numbers(list(t, e, github.PullRequestListOptions{State: "closed"})); !reflect.DeepEqual(got, []int{2, 1}) {
				t.Fatalf("closed list holds %v after ClosePull", got)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.run(t, newEnv(t, true, nil))
		})
	}
}

// ---- forks ----

func TestForkAndPullFromFork(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, false, nil)
	e.s.ForkPolls = 1
	upstreamMain := e.s.Ref(city, "main")

	t.Run("the user cannot push upstream", func(t *testing.T) {
		r, _, err := e.gh.Repositories.Get(ctx, owner, name)
		must(t, err)
		if r.GetPermissions()["push"] || !r.GetPermissions()["pull"] || r.GetFork() {
			t.Fatalf("permissions %v fork=%v", r.GetPermissions(), r.GetFork())
		}
		_, _, err = e.gh.Git.CreateRef(ctx, owner, name, &github.Reference{Ref: github.String("refs/heads/x"),
			Object: &github.GitObject{SHA: github.String(upstreamMain)}})
		wantErr(t, err, 403, "Permission to "+city+" denied to "+login+".")
		if e.s.Ref(city, "x") != "" {
			t.Fatal("a refused write created the ref")
		}
	})

	fork, _, err := e.gh.Repositories.CreateFork(ctx, owner, name, nil)
	t.Run("forking answers 202 with the fork", func(t *testing.T) {
		if statusOf(err) != http.StatusAccepted {
			t.Fatalf("CreateFork: %v, want 202 Accepted", err)
		}
		if fork.GetFullName() != login+"/"+name || !fork.GetFork() || fork.GetParent().GetFullName() != city || !fork.GetPermissions()["push"] || fork.GetDefaultBranch() != "main" {
			t.Fatalf("fork %s fork=%v parent=%s push=%v default=%s", fork.GetFullName(), fork.GetFork(), fork.GetParent().GetFullName(),
				fork.GetPermissions()["push"], fork.GetDefaultBranch())
		}
	})

	t.Run("the fork's git data is empty until GitHub finishes", func(t *testing.T) {
		_, _, err := e.gh.Git.GetRef(ctx, login, name, "refs/heads/main")
		wantErr(t, err, 409, "Git Repository is empty.")
		r, _, err := e.gh.Git.GetRef(ctx, login, name, "refs/heads/main")
		must(t, err)
		if r.GetObject().GetSHA() != upstreamMain {
			t.Fatalf("fork main at %s, want upstream's %s", r.GetObject().GetSHA(), upstreamMain)
		}
	})

	// A branch in the fork, made through the API like spirepod makes it.
	c, _, err := e.gh.Git.GetCommit(ctx, login, name, upstreamMain)
	must(t, err)
	tree, _, err := e.gh.Git.CreateTree(ctx, login, name, c.GetTree().GetSHA(), []*github.TreeEntry{
		{Path: github.String("ns/ca.pem"), Mode: github.String("100644"), Type: github.String("blob"), Content: github.String("PEM\n")}})
	must(t, err)
	commit, _, err := e.gh.Git.CreateCommit(ctx, login, name, &github.Commit{Message: github.String("trust"),
		Tree: &github.Tree{SHA: tree.SHA}, Parents: []*github.Commit{{SHA: github.String(upstreamMain)}}}, nil)
	must(t, err)
	_, _, err = e.gh.Git.CreateRef(ctx, login, name, &github.Reference{Ref: github.String("refs/heads/spirepod/x"), Object: &github.GitObject{SHA: commit.SHA}})
	must(t, err)
	if e.s.Ref(city, "spirepod/x") != "" {
		t.Fatal("the fork's branch appeared upstream")
	}

	t.Run("forking again returns the same fork", func(t *testing.T) {
		again, _, err := e.gh.Repositories.CreateFork(ctx, owner, name, nil)
		if statusOf(err) != http.StatusAccepted || again.GetFullName() != login+"/"+name {
			t.Fatalf("second CreateFork: %s %v", again.GetFullName(), err)
		}
		if e.s.Ref(login+"/"+name, "spirepod/x") != commit.GetSHA() {
			t.Fatal("forking again reset the fork's branches")
		}
	})

	t.Run("a PR from the fork", func(t *testing.T) {
		p, _, err := e.gh.PullRequests.Create(ctx, owner, name, &github.NewPullRequest{Title: github.String("Trust"),
			Head: github.String(login + ":spirepod/x"), Base: github.String("main"), MaintainerCanModify: github.Bool(true)})
		must(t, err)
		if p.GetHead().GetRepo().GetFullName() != login+"/"+name || p.GetHead().GetLabel() != login+":spirepod/x" ||
			p.GetHead().GetSHA() != commit.GetSHA() || p.GetBase().GetRepo().GetFullName() != city {
			t.Fatalf("head %s %s @%s, base repo %s", p.GetHead().GetRepo().GetFullName(), p.GetHead().GetLabel(), p.GetHead().GetSHA(), p.GetBase().GetRepo().GetFullName())
		}
		mine, _, err := e.gh.PullRequests.List(ctx, owner, name, &github.PullRequestListOptions{Head: login + ":spirepod/x"})
		must(t, err)
		theirs, _, err := e.gh.PullRequests.List(ctx, owner, name, &github.PullRequestListOptions{Head: owner + ":spirepod/x"})
		must(t, err)
		if !reflect.DeepEqual(numbers(mine), []int{1}) || len(theirs) != 0 {
			t.Fatalf("list head alice: %v, head wp-wcm: %v", numbers(mine), numbers(theirs))
		}
		if _, err := e.s.Merge(city, 1); err != nil {
			t.Fatal(err)
		}
		got, err := e.s.Files(city, "main")
		must(t, err)
		if want := map[string]string{"README.md": "city\n", "ns/ca.pem": "PEM\n"}; !reflect.DeepEqual(got, want) {
			t.Fatalf("upstream main holds %q after the merge, want %q", got, want)
		}
	})
}

// ---- faults and the request log ----

func TestFaults(t *testing.T) {
	ctx := context.Background()
	blob := func(e *env) error {
		_, _, err := e.gh.Git.CreateBlob(ctx, owner, name, &github.Blob{Content: github.String("x"), Encoding: github.String("utf-8")})
		return err
	}
	tests := []struct {
		name string
		run  func(t *testing.T, e *env)
	}{
		{"a 5xx answers once, then the request is served", func(t *testing.T, e *env) {
			e.s.Inject(&githubfake.Fault{Method: "POST", Path: "/git/blobs", Status: 502})
			wantErr(t, blob(e), 502, "Bad Gateway")
			must(t, blob(e))
		}},
		{"Times answers that many requests", func(t *testing.T, e *env) {
			e.s.Inject(&githubfake.Fault{Method: "POST", Path: "/git/blobs", Status: 503, Message: "try later", Times: 2})
			wantErr(t, blob(e), 503, "try later")
			wantErr(t, blob(e), 503, "try later")
			must(t, blob(e))
		}},
		{"a fault matches only its method and path", func(t *testing.T, e *env) {
			e.s.Inject(&githubfake.Fault{Method: "POST", Path: "/git/blobs", Status: 500})
			_, _, err := e.gh.Git.GetRef(ctx, owner, name, "refs/heads/main") // GET, other path
			must(t, err)
			_, _, err = e.gh.Git.CreateTree(ctx, owner, name, "", []*github.TreeEntry{ // POST, other path
				{Path: github.String("a"), Mode: github.String("100644"), Type: github.String("blob"), Content: github.String("a")}})
			must(t, err)
			wantErr(t, blob(e), 500, "Internal Server Error")
		}},
		{"an injected 401", func(t *testing.T, e *env) {
			e.s.Inject(&githubfake.Fault{Path: "/pulls", Status: 401, Message: "Bad credentials"})
			_, _, err := e.gh.PullRequests.List(ctx, owner, name, nil)
			wantErr(t, err, 401, "Bad credentials")
		}},
		{"an injected 403 with validation errors", func(t *testing.T, e *env) {
			e.s.Inject(&githubfake.Fault{Method: "POST", Path: "/git/trees", Status: 403,
				Message: "Resource not accessible by personal access token", Errors: []string{"contents:write needed"}})
			_, _, err := e.gh.Git.CreateTree(ctx, owner, name, "", []*github.TreeEntry{
				{Path: github.String("a"), Mode: github.String("100644"), Type: github.String("blob"), Content: github.String("a")}})
			wantErr(t, err, 403, "Resource not accessible by personal access token | contents:write needed")
			var er *github.ErrorResponse
			if errors.As(err, &er) && (len(er.Errors) != 1 || er.Errors[0].Code != "custom") {
				t.Fatalf("errors %+v, want one custom error", er.Errors)
			}
		}},
		{"rate limit headers", func(t *testing.T, e *env) {
			_, resp, err := e.gh.Git.GetRef(ctx, owner, name, "refs/heads/main")
			must(t, err)
			if resp.Rate.Limit != 5000 || resp.Rate.Remaining != 4999 || !resp.Rate.Reset.After(time.Now()) {
				t.Fatalf("normal response rate %+v", resp.Rate)
			}
			start := time.Now()
			e.s.Inject(&githubfake.Fault{Path: "/git/ref/", RateLimitReset: time.Hour})
			_, _, err = e.gh.Git.GetRef(ctx, owner, name, "refs/heads/main")
			var rl *github.RateLimitError
			if !errors.As(err, &rl) {
				t.Fatalf("GetRef: %v, want a *github.RateLimitError", err)
			}
			reset := rl.Rate.Reset.Time
			if rl.Response.StatusCode != 403 || rl.Rate.Remaining != 0 || rl.Rate.Limit != 5000 ||
				reset.Before(start.Add(time.Hour-2*time.Second)) || reset.After(time.Now().Add(time.Hour+time.Second)) {
				t.Fatalf("rate limit: status %d rate %+v, want 403, 0 left, reset in an hour", rl.Response.StatusCode, rl.Rate)
			}
			if h := rl.Response.Header.Get("X-RateLimit-Remaining"); h != "0" {
				t.Fatalf("X-RateLimit-Remaining %q", h)
			}
			// go-github now refuses locally until the reset; a fresh client
			// reaches the server, which answered the fault once.
			_, _, err = newClient(t, e.s, token).Git.GetRef(ctx, owner, name, "refs/heads/main")
			must(t, err)
		}},
		{"Before runs ahead of the answer", func(t *testing.T, e *env) {
			before := e.s.Ref(city, "main")
			e.s.Inject(&githubfake.Fault{Method: "GET", Path: "/git/ref/heads/main", Before: func(s *githubfake.Server) {
				s.CommitLocked(city, "main", map[string]string{"concurrent.txt": "c\n"})
			}})
			r, _, err := e.gh.Git.GetRef(ctx, owner, name, "refs/heads/main")
			must(t, err)
			if r.GetObject().GetSHA() == before || r.GetObject().GetSHA() != e.s.Ref(city, "main") {
				t.Fatalf("GetRef saw %s; before %s, now %s", r.GetObject().GetSHA(), before, e.s.Ref(city, "main"))
			}
		}},
		{"Before then a status", func(t *testing.T, e *env) {
			before := e.s.Ref(city, "main")
			e.s.Inject(&githubfake.Fault{Method: "POST", Path: "/pulls", Status: 422, Message: "Validation Failed",
				Errors: []string{"A pull request already exists for wp-wcm:spirepod/x."},
				Before: func(s *githubfake.Server) { s.OpenPullLocked(city, "spirepod/x", "main", "raced", "") }})
			_, _, err := e.gh.PullRequests.Create(ctx, owner, name, &github.NewPullRequest{Title: github.String("t"),
				Head: github.String("spirepod/x"), Base: github.String("main")})
			wantErr(t, err, 422, "A pull request already exists")
			if ps := e.s.Pulls(city); len(ps) != 1 || ps[0].Title != "raced" || e.s.Ref(city, "main") != before {
				t.Fatalf("pulls after the hook: %+v", ps)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.run(t, newEnv(t, true, nil))
		})
	}
}

func TestRequestLogCountsEveryRequest(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, true, nil)
	e.s.ResetRequests()
	if e.s.Requests() != 0 || len(e.s.RequestLog()) != 0 {
		t.Fatalf("after ResetRequests: %d %v", e.s.Requests(), e.s.RequestLog())
	}
	e.s.Inject(&githubfake.Fault{Method: "POST", Path: "/git/blobs", Status: 502})

	_, _, err := e.gh.Users.Get(ctx, "")
	must(t, err)
	_, _, err = newClient(t, e.s, "wrong").Users.Get(ctx, "")
	wantErr(t, err, 401, "Bad credentials")
	_, _, err = e.gh.Repositories.Get(ctx, owner, "nope")
	wantErr(t, err, 404, "Not Found")
	_, _, err = e.gh.Git.CreateBlob(ctx, owner, name, &github.Blob{Content: github.String("x"), Encoding: github.String("utf-8")})
	wantErr(t, err, 502, "Bad Gateway")
	_, _, _, err = e.gh.Repositories.GetContents(ctx, owner, name, "README.md", &github.RepositoryContentGetOptions{Ref: "main"})
	must(t, err)
	_, _, err = e.gh.Repositories.ListTags(ctx, owner, name, nil) // not served
	wantErr(t, err, 404, "Not Found")

	want := []string{
		"GET /user",
		"GET /user",
		"GET /repos/wp-wcm/nope",
		"POST /repos/wp-wcm/city/git/blobs",
		"GET /repos/wp-wcm/city/contents/README.md",
		"GET /repos/wp-wcm/city/tags",
	}
	if got := e.s.RequestLog(); !reflect.DeepEqual(got, want) {
		t.Fatalf("request log:\n%q\nwant\n%q", got, want)
	}
	if e.s.Requests() != len(want) {
		t.Fatalf("Requests() = %d, want %d", e.s.Requests(), len(want))
	}
	e.s.ResetRequests()
	if e.s.Requests() != 0 {
		t.Fatalf("Requests() = %d after reset", e.s.Requests())
	}
}

// ---- auth ----

func TestAuth(t *testing.T) {
	ctx := context.Background()
	s := githubfake.New(login, token)
	t.Cleanup(s.Close)
	_, err := s.AddRepo(city, true, "main", map[string]string{"README.md": "city\n"})
	must(t, err)
	raw := func(t *testing.T, auth string) int {
		t.Helper()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.URL+"repos/"+city, nil)
		must(t, err)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		must(t, err)
		resp.Body.Close()
		return resp.StatusCode
	}
	tests := []struct {
		name string
		auth string
		want int
	}{
		{"bearer token", "Bearer " + token, 200},
		{"token scheme", "token " + token, 200},
		{"wrong token", "Bearer nope", 401},
		{"wrong scheme", "Basic " + token, 401},
		{"no token", "", 401},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := s.Requests()
			if got := raw(t, tt.auth); got != tt.want {
				t.Fatalf("status %d, want %d", got, tt.want)
			}
			if s.Requests() != n+1 {
				t.Fatalf("Requests() went from %d to %d", n, s.Requests())
			}
		})
	}
	t.Run("go-github with a wrong or missing token is 401", func(t *testing.T) {
		for _, tok := range []string{"nope", ""} {
			_, _, err := newClient(t, s, tok).Repositories.Get(ctx, owner, name)
			wantErr(t, err, 401, "Bad credentials")
		}
		u, _, err := newClient(t, s, token).Users.Get(ctx, "")
		must(t, err)
		if u.GetLogin() != login {
			t.Fatalf("user %q, want %q", u.GetLogin(), login)
		}
	})
	t.Run("a server without a token accepts any caller", func(t *testing.T) {
		open := githubfake.New(login, "")
		t.Cleanup(open.Close)
		_, err := open.AddRepo(city, true, "main", map[string]string{"README.md": "city\n"})
		must(t, err)
		r, _, err := newClient(t, open, "").Repositories.Get(ctx, owner, name)
		must(t, err)
		if r.GetFullName() != city || r.GetDefaultBranch() != "main" {
			t.Fatalf("repo %s default %s", r.GetFullName(), r.GetDefaultBranch())
		}
	})
}

// ---- check runs ----

func TestCheckRuns(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, true, nil)
	sha := e.s.Ref(city, "main")
	e.s.SetCheckRuns(city, sha,
		&github.CheckRun{Name: github.String("build"), Status: github.String("completed"), Conclusion: github.String("success")},
		&github.CheckRun{Name: github.String("e2e"), Status: github.String("in_progress")})
	for _, ref := range []string{sha, "main"} {
		res, _, err := e.gh.Checks.ListCheckRunsForRef(ctx, owner, name, ref, nil)
		must(t, err)
		if res.GetTotal() != 2 || len(res.CheckRuns) != 2 || res.CheckRuns[0].GetConclusion() != "success" || res.CheckRuns[1].GetStatus() != "in_progress" {
			t.Fatalf("check runs for %s: total %d %+v", ref, res.GetTotal(), res.CheckRuns)
		}
	}
	res, _, err := e.gh.Checks.ListCheckRunsForRef(ctx, owner, name, strings.Repeat("56", 20), nil)
	must(t, err)
	if res.GetTotal() != 0 || len(res.CheckRuns) != 0 {
		t.Fatalf("check runs for an unknown commit: %+v", res)
	}
}
