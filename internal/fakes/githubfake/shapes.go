package githubfake

import (
	"fmt"
	"strings"
	"time"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/google/go-github/v60/github"
)

// The JSON shapes of the fake's answers. Each carries every field that
// GitHub's OpenAPI description (npm @octokit/openapi, api.github.com.json)
// marks required in the schema its operation answers with, named after
// that schema; values come from the fake's state where it has them, and are
// plausible constants (null where the schema allows it) where it does not.
// internal/fakes/githubfake/conformance checks every answer against the
// description.

type obj = map[string]any

func ts(t time.Time) string { return t.UTC().Format(time.RFC3339) }

func nodeID(kind string, v any) string { return fmt.Sprintf("%s_fake%v", kind, v) }

// webURL is the fake's web (not API) URL of a path.
func (s *Server) webURL(p string) string { return strings.TrimSuffix(s.srv.URL, "/") + "/" + p }

// simpleUserJSON is schema simple-user.
func (s *Server) simpleUserJSON(login string) obj {
	api := s.URL + "users/" + login
	return obj{
		"login": login, "id": userID(login), "node_id": nodeID("U", login), "avatar_url": s.webURL("avatars/" + login),
		"gravatar_id": "", "url": api, "html_url": s.webURL(login), "followers_url": api + "/followers",
		"following_url": api + "/following{/other_user}", "gists_url": api + "/gists{/gist_id}",
		"starred_url": api + "/starred{/owner}{/repo}", "subscriptions_url": api + "/subscriptions",
		"organizations_url": api + "/orgs", "repos_url": api + "/repos", "events_url": api + "/events{/privacy}",
		"received_events_url": api + "/received_events", "type": "User", "site_admin": false,
	}
}

func userID(login string) int64 {
	var h int64 = 7
	for _, c := range login {
		h = h*31 + int64(c)
	}
	if h < 0 {
		h = -h
	}
	return h%1_000_000 + 1
}

// privateUserJSON is schema private-user (GET /user).
func (s *Server) privateUserJSON() obj {
	u := s.simpleUserJSON(s.user)
	for k, v := range (obj{
		"name": s.user, "company": nil, "blog": "", "location": nil, "email": nil, "hireable": nil, "bio": nil,
		"public_repos": 1, "public_gists": 0, "followers": 0, "following": 0,
		"created_at": "2020-01-01T00:00:00Z", "updated_at": "2020-01-01T00:00:00Z",
		"private_gists": 0, "total_private_repos": 0, "owned_private_repos": 0, "disk_usage": 0, "collaborators": 0,
		"two_factor_authentication": true, "user_view_type": "private",
	}) {
		u[k] = v
	}
	return u
}

// repoJSON is schema full-repository (a superset of repository, which pull
// requests' head.repo and base.repo use).
func (s *Server) repoJSON(r *Repo) obj {
	api := s.apiURL(r, "")
	html := s.webURL(r.FullName())
	out := obj{
		"id": r.ID, "node_id": nodeID("R", r.ID), "name": r.Name, "full_name": r.FullName(),
		"owner": s.simpleUserJSON(r.Owner), "private": false, "html_url": html, "description": nil,
		"fork": r.parent != nil, "url": api, "homepage": nil, "language": nil,
		"forks_count": 0, "forks": 0, "stargazers_count": 0, "watchers_count": 0, "watchers": 0, "size": 0,
		"default_branch": r.DefaultBranch, "open_issues_count": 0, "open_issues": 0,
		"has_issues": true, "has_projects": true, "has_wiki": true, "has_pages": false, "has_downloads": true,
		"has_discussions": false, "archived": false, "disabled": false, "mirror_url": nil, "license": nil,
		"pushed_at": "2020-01-01T00:00:00Z", "created_at": "2020-01-01T00:00:00Z", "updated_at": "2020-01-01T00:00:00Z",
		"network_count": 0, "subscribers_count": 0,
		"permissions": obj{"admin": false, "maintain": false, "push": r.Push, "triage": true, "pull": true},
		"clone_url":   html + ".git", "git_url": "git:" + strings.TrimPrefix(html, "http:") + ".git",
		"ssh_url": "git@" + s.srv.Listener.Addr().String() + ":" + r.FullName() + ".git", "svn_url": html,
	}
	for k, tmpl := range map[string]string{
		"archive_url": "{archive_format}{/ref}", "assignees_url": "assignees{/user}", "blobs_url": "git/blobs{/sha}",
		"branches_url": "branches{/branch}", "collaborators_url": "collaborators{/collaborator}",
		"comments_url": "comments{/number}", "commits_url": "commits{/sha}", "compare_url": "compare/{base}...{head}",
		"contents_url": "contents/{+path}", "contributors_url": "contributors", "deployments_url": "deployments",
		"downloads_url": "downloads", "events_url": "events", "forks_url": "forks", "git_commits_url": "git/commits{/sha}",
		"git_refs_url": "git/refs{/sha}", "git_tags_url": "git/tags{/sha}", "hooks_url": "hooks",
		"issue_comment_url": "issues/comments{/number}", "issue_events_url": "issues/events{/number}",
		"issues_url": "issues{/number}", "keys_url": "keys{/key_id}", "labels_url": "labels{/name}",
		"languages_url": "languages", "merges_url": "merges", "milestones_url": "milestones{/number}",
		"notifications_url": "notifications{?since,all,participating}", "pulls_url": "pulls{/number}",
		"releases_url": "releases{/id}", "stargazers_url": "stargazers", "statuses_url": "statuses/{sha}",
		"subscribers_url": "subscribers", "subscription_url": "subscription", "tags_url": "tags", "teams_url": "teams",
		"trees_url": "git/trees{/sha}",
	} {
		out[k] = api + "/" + tmpl
	}
	if r.parent != nil {
		out["parent"] = s.repoJSON(r.parent)
		out["source"] = s.repoJSON(r.parent)
	}
	return out
}

// refJSON is schema git-ref.
func (s *Server) refJSON(r *Repo, name string, h plumbing.Hash) obj {
	return obj{"ref": name, "node_id": nodeID("REF", name), "url": s.apiURL(r, "git/"+name),
		"object": obj{"type": "commit", "sha": h.String(), "url": s.apiURL(r, "git/commits/"+h.String())}}
}

// commitJSON is schema git-commit.
func (s *Server) commitJSON(r *Repo, c *object.Commit) obj {
	parents := []obj{}
	for _, p := range c.ParentHashes {
		parents = append(parents, obj{"sha": p.String(), "url": s.apiURL(r, "git/commits/"+p.String()),
			"html_url": s.webURL(r.FullName() + "/commit/" + p.String())})
	}
	sha := c.Hash.String()
	return obj{
		"sha": sha, "node_id": nodeID("C", sha), "url": s.apiURL(r, "git/commits/"+sha),
		"html_url":  s.webURL(r.FullName() + "/commit/" + sha),
		"author":    obj{"name": c.Author.Name, "email": c.Author.Email, "date": ts(c.Author.When)},
		"committer": obj{"name": c.Committer.Name, "email": c.Committer.Email, "date": ts(c.Committer.When)},
		"tree":      obj{"sha": c.TreeHash.String(), "url": s.apiURL(r, "git/trees/"+c.TreeHash.String())},
		"message":   c.Message, "parents": parents,
		"verification": obj{"verified": false, "reason": "unsigned", "signature": nil, "payload": nil, "verified_at": nil},
	}
}

// branchJSON is schema branch-with-protection; its commit is schema commit.
func (s *Server) branchJSON(r *Repo, name string, c *object.Commit) obj {
	sha := c.Hash.String()
	parents := []obj{}
	for _, p := range c.ParentHashes {
		parents = append(parents, obj{"sha": p.String(), "url": s.apiURL(r, "commits/"+p.String()),
			"html_url": s.webURL(r.FullName() + "/commit/" + p.String())})
	}
	gitUser := func(sig object.Signature) obj {
		return obj{"name": sig.Name, "email": sig.Email, "date": ts(sig.When)}
	}
	return obj{
		"name": name,
		"commit": obj{
			"sha": sha, "node_id": nodeID("C", sha), "url": s.apiURL(r, "commits/"+sha),
			"html_url": s.webURL(r.FullName() + "/commit/" + sha), "comments_url": s.apiURL(r, "commits/"+sha+"/comments"),
			"commit": obj{
				"author": gitUser(c.Author), "committer": gitUser(c.Committer), "message": c.Message, "comment_count": 0,
				"tree": obj{"sha": c.TreeHash.String(), "url": s.apiURL(r, "git/trees/"+c.TreeHash.String())},
				"url":  s.apiURL(r, "git/commits/"+sha),
			},
			// null: the fake does not map commit e-mails to users.
			"author": nil, "committer": nil, "parents": parents,
		},
		"_links":         obj{"html": s.webURL(r.FullName() + "/tree/" + name), "self": s.apiURL(r, "branches/"+name)},
		"protected":      false,
		"protection":     obj{"enabled": false},
		"protection_url": s.apiURL(r, "branches/"+name+"/protection"),
	}
}

// contentJSON is one entry of schema content-directory, or schema
// content-file (with content and encoding) for a file.
func (s *Server) contentJSON(r *Repo, ref, typ, p, sha string, size int) obj {
	self := s.apiURL(r, "contents/"+p+"?ref="+ref)
	var git, html, download any
	if typ == "file" {
		git = s.apiURL(r, "git/blobs/"+sha)
		html = s.webURL(r.FullName() + "/blob/" + ref + "/" + p)
		download = s.webURL(r.FullName() + "/raw/" + ref + "/" + p)
	} else {
		git = s.apiURL(r, "git/trees/"+sha)
		html = s.webURL(r.FullName() + "/tree/" + ref + "/" + p)
	}
	return obj{"type": typ, "size": size, "name": p[strings.LastIndex(p, "/")+1:], "path": p, "sha": sha,
		"url": self, "git_url": git, "html_url": html, "download_url": download,
		"_links": obj{"self": self, "git": git, "html": html}}
}

// blobJSON is schema blob (base64 content, wrapped as GitHub wraps it).
func (s *Server) blobJSON(r *Repo, sha string, b []byte) obj {
	return obj{"sha": sha, "node_id": nodeID("B", sha), "url": s.apiURL(r, "git/blobs/"+sha), "size": len(b),
		"content": encodeBase64(b), "encoding": "base64"}
}

// pullJSON is schema pull-request, or pull-request-simple (lists) when simple.
func (s *Server) pullJSON(p *Pull, simple bool) obj {
	headSHA := p.HeadRepo.refs["refs/heads/"+p.HeadRef]
	if p.Merged {
		headSHA = p.mergedHeadSHA
	}
	r := p.base
	api := s.apiURL(r, fmt.Sprintf("pulls/%d", p.Number))
	issue := s.apiURL(r, fmt.Sprintf("issues/%d", p.Number))
	html := s.webURL(fmt.Sprintf("%s/pull/%d", r.FullName(), p.Number))
	created := p.createdAt
	if created.IsZero() {
		created = s.now()
	}
	updated := created
	var closedAt, mergedAt, mergeSHA any
	if !p.closedAt.IsZero() {
		closedAt, updated = ts(p.closedAt), p.closedAt
	}
	if p.Merged {
		mergedAt, mergeSHA = ts(p.mergedAt), p.MergeCommit.String()
	}
	link := func(u string) obj { return obj{"href": u} }
	out := obj{
		"url": api, "id": int64(r.ID)*100000 + int64(p.Number), "node_id": nodeID("PR", fmt.Sprintf("%d_%d", r.ID, p.Number)),
		"html_url": html, "diff_url": html + ".diff", "patch_url": html + ".patch", "issue_url": issue,
		"commits_url": api + "/commits", "review_comments_url": api + "/comments",
		"review_comment_url": s.apiURL(r, "pulls/comments{/number}"), "comments_url": issue + "/comments",
		"statuses_url": s.apiURL(r, "statuses/"+headSHA.String()),
		"number":       p.Number, "state": p.State, "locked": false, "title": p.Title, "user": s.simpleUserJSON(s.user),
		"body": p.Body, "labels": []obj{}, "milestone": nil, "created_at": ts(created), "updated_at": ts(updated),
		"closed_at": closedAt, "merged_at": mergedAt, "merge_commit_sha": mergeSHA, "assignee": nil,
		"head": obj{"label": p.HeadRepo.Owner + ":" + p.HeadRef, "ref": p.HeadRef, "sha": headSHA.String(),
			"user": s.simpleUserJSON(p.HeadRepo.Owner), "repo": s.repoJSON(p.HeadRepo)},
		"base": obj{"label": r.Owner + ":" + p.BaseRef, "ref": p.BaseRef, "sha": r.refs["refs/heads/"+p.BaseRef].String(),
			"user": s.simpleUserJSON(r.Owner), "repo": s.repoJSON(r)},
		"_links": obj{"self": link(api), "html": link(html), "issue": link(issue), "comments": link(issue + "/comments"),
			"review_comments": link(api + "/comments"), "review_comment": link(s.apiURL(r, "pulls/comments{/number}")),
			"commits": link(api + "/commits"), "statuses": link(s.apiURL(r, "statuses/"+headSHA.String()))},
		"author_association": "CONTRIBUTOR", "auto_merge": nil,
	}
	if simple {
		return out
	}
	var mergedBy any
	if p.Merged {
		mergedBy = s.simpleUserJSON(r.Owner)
	}
	for k, v := range (obj{"merged": p.Merged, "mergeable": nil, "mergeable_state": "unknown", "merged_by": mergedBy,
		"comments": 0, "review_comments": 0, "maintainer_can_modify": p.HeadRepo != r, "commits": 1,
		"additions": 0, "deletions": 0, "changed_files": 0}) {
		out[k] = v
	}
	return out
}

// checkRunsJSON is the answer of "List check runs for a Git reference":
// total_count and check_runs (schema check-run).
func (s *Server) checkRunsJSON(r *Repo, sha string, runs []*github.CheckRun) obj {
	out := []obj{}
	for i, c := range runs {
		id := c.GetID()
		if id == 0 {
			id = int64(i + 1)
		}
		var conclusion, completed, started any
		if c.Conclusion != nil {
			conclusion = c.GetConclusion()
		}
		if c.StartedAt != nil {
			started = ts(c.StartedAt.Time)
		}
		if c.CompletedAt != nil {
			completed = ts(c.CompletedAt.Time)
		}
		status := c.GetStatus()
		if status == "" {
			status = "queued"
		}
		head := c.GetHeadSHA()
		if head == "" {
			head = sha
		}
		out = append(out, obj{
			"id": id, "node_id": nodeID("CR", id), "head_sha": head, "name": c.GetName(), "external_id": nil,
			"url": s.apiURL(r, fmt.Sprintf("check-runs/%d", id)), "html_url": nil, "details_url": nil,
			"status": status, "conclusion": conclusion, "started_at": started, "completed_at": completed,
			"output":      obj{"title": nil, "summary": nil, "text": nil, "annotations_count": 0, "annotations_url": s.apiURL(r, fmt.Sprintf("check-runs/%d/annotations", id))},
			"check_suite": nil, "app": nil, "pull_requests": []obj{},
		})
	}
	return obj{"total_count": len(out), "check_runs": out}
}
