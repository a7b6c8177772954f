package status

import (
	"fmt"
	"os"
	"strings"

	"github.com/spirepod/spirepod/internal/checklist"
	"github.com/spirepod/spirepod/internal/project"
	"github.com/spirepod/spirepod/internal/rotate"
)

// rotationChecks reports a team CA rotation (`spirepod pki rotate`) from
// its state file, under step 2: none without the file; to do while it runs
// ("rotation: phase N of M, next: …"); ok once done; a failure when the
// file is damaged or the new CA's key is not git-ignored.
func rotationChecks(p *project.Project) []checklist.Result {
	const id = "ca-rotation"
	rep, err := rotate.Status(p)
	switch {
	case err != nil:
		return []checklist.Result{res(Step2, id, "rotation: the state file is unusable", checklist.Fail, err.Error(),
			"fix "+rotate.FileName+" or move it away (`spirepod pki rotate --plan` reads it)")}
	case rep == nil:
		return nil
	case rep.State == "done":
		return []checklist.Result{res(Step2, id, "rotation: done", checklist.OK,
			fmt.Sprintf("the team CA is %s; the old CA %s is retired", rotationShort(rep.New.SHA1), rotationShort(rep.Old.SHA1)), "")}
	}
	kind := ""
	if rep.Emergency {
		kind = " (emergency)"
	}
	name := fmt.Sprintf("rotation%s: phase %d of %d (%s), next: %s", kind, rep.Phase, rep.Phases, rep.PhaseName, rep.Next)
	var urls []string
	for _, pr := range rep.PRs {
		if pr.URL != "" {
			urls = append(urls, pr.URL)
		}
	}
	msg := "started " + rep.Old.SHA1[:12] + "… → " + rotationShort(rep.New.SHA1)
	if len(urls) > 0 {
		msg += "; pull requests: " + strings.Join(urls, ", ")
	}
	out := []checklist.Result{res(Step2, id, name, checklist.Todo, msg, "`spirepod pki rotate` resumes it (`--plan` shows every phase)")}
	// The new CA's key waits next to the current one until phase 3: it
	// must be as git-ignored as the current key.
	if next := rotate.NextFiles(p); rotationFileExists(next.Key) {
		pp := *p
		rel := strings.TrimPrefix(strings.TrimPrefix(next.Key, p.Dir), string(os.PathSeparator))
		pp.Paths.CAKey = rel
		if r := ignoreCheck(&pp); r.Status == checklist.Fail {
			out = append(out, res(Step2, "ca-rotation-ignored", "the new CA's key is git-ignored", checklist.Fail, r.Message, r.Hint))
		}
	}
	return out
}

func rotationShort(fp string) string {
	if len(fp) > 12 {
		return fp[:12] + "…"
	}
	return fp
}

func rotationFileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
