package status

import (
	"errors"
	"os"
	"path/filepath"
	"strings"

	"github.com/go-git/go-git/v5/plumbing/format/gitignore"

	"github.com/spirepod/spirepod/internal/checklist"
	"github.com/spirepod/spirepod/internal/project"
)

// ignoreCheck asks git's own ignore logic (go-git's matcher, over every
// .gitignore from the repository root down to the scaffold) whether what
// must never be committed is ignored: the CA key, the temp file of an
// interrupted key write, and spirepod's local state.
func ignoreCheck(p *project.Project) checklist.Result {
	const id, name = "git-ignored", "the CA key, interrupted writes and .spirepod/ are git-ignored"
	root := gitRoot(p.Dir)
	rel, err := filepath.Rel(root, p.Dir)
	if err != nil {
		return res(Step1, id, name, checklist.Warn, err.Error(), "")
	}
	var patterns []gitignore.Pattern
	var domain []string
	dirs := []string{""}
	if rel != "." {
		for _, part := range strings.Split(filepath.ToSlash(rel), "/") {
			domain = append(domain, part)
			dirs = append(dirs, strings.Join(domain, "/"))
		}
	}
	for _, d := range dirs {
		ps, err := readIgnore(root, d)
		if err != nil {
			return res(Step1, id, name, checklist.Warn, err.Error(), "")
		}
		patterns = append(patterns, ps...)
	}
	m := gitignore.NewMatcher(patterns)
	key := filepath.ToSlash(p.Paths.CAKey)
	must := []struct {
		path  string
		isDir bool
	}{
		{key, false},
		{filepath.ToSlash(filepath.Join(filepath.Dir(key), "."+filepath.Base(key)+".tmp-123456")), false},
		{project.StateDir, true},
	}
	var exposed []string
	for _, f := range must {
		full := append(append([]string{}, domain...), strings.Split(f.path, "/")...)
		if !m.Match(full, f.isDir) {
			exposed = append(exposed, f.path)
		}
	}
	if len(exposed) > 0 {
		return res(Step1, id, name, checklist.Fail, "not ignored, so `git add -A` would stage: "+strings.Join(exposed, ", "),
			"re-render the scaffold (`"+p.ReinitCommand()+"`) to restore its .gitignore, or add the rules: "+strings.Join([]string{"*.key.pem", ".*.tmp-*", "/" + project.StateDir + "/"}, " "))
	}
	return res(Step1, id, name, checklist.OK, "", "")
}

// readIgnore parses root/dir/.gitignore (dir a slash path, "" for the root)
// with that directory as the patterns' domain, as git does.
func readIgnore(root, dir string) ([]gitignore.Pattern, error) {
	data, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(dir), ".gitignore"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	} else if err != nil {
		return nil, err
	}
	var domain []string
	if dir != "" {
		domain = strings.Split(dir, "/")
	}
	var ps []gitignore.Pattern
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimRight(line, "\r")
		if strings.TrimSpace(line) == "" || strings.HasPrefix(line, "#") {
			continue
		}
		ps = append(ps, gitignore.ParsePattern(line, domain))
	}
	return ps, nil
}

// gitRoot is the enclosing git work tree's root, or dir when there is none.
func gitRoot(dir string) string {
	for d := dir; ; {
		if _, err := os.Stat(filepath.Join(d, ".git")); err == nil {
			return d
		} else if !errors.Is(err, os.ErrNotExist) {
			return dir
		}
		parent := filepath.Dir(d)
		if parent == d {
			return dir
		}
		d = parent
	}
}
