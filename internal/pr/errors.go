package pr

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/google/go-github/v60/github"
)

// ErrLegacyNames refuses to register the guide's shared names: a project
// file without naming/issuer predates team-scoped names, and its node
// aliases (spiffe://<td>/spire-agent-x509pop-<pod>) are the same for every
// team with the same StatefulSet name, so those teams would receive each
// other's SVIDs.
var ErrLegacyNames = errors.New("spirepod.yaml has no naming: it uses the guide's shared node-alias IDs, which teams with the same pod names share (and then receive each other's SVIDs)")

// APIError is a GitHub refusal translated into one message and a hint.
type APIError struct {
	Status     int    `json:"status"`
	Op         string `json:"op"`
	Message    string `json:"message"`
	Permission string `json:"permission,omitempty"`
	Hint       string `json:"hint"`
	// RateLimited: GitHub's primary or secondary rate limit, longer than
	// the client waits by itself.
	RateLimited bool `json:"rateLimited,omitempty"`
}

// Retryable reports whether a GitHub failure means "later", not "no": a
// 5xx answer (after the client's own retries) or a rate limit longer than
// the client waits. A poll that meets one can poll again; anything else
// (a bad token, no access, a 404, a validation error) will not change.
func Retryable(err error) bool {
	var ae *APIError
	if errors.As(err, &ae) {
		return ae.Status >= 500 || ae.RateLimited
	}
	var tb *graphQLTooBigError
	return errors.As(err, &tb) && tb.Status >= 500
}

func (e *APIError) Error() string {
	switch e.Status {
	case http.StatusUnauthorized:
		return fmt.Sprintf("%s: GitHub rejected the token (401 %s)", e.Op, e.Message)
	case http.StatusTooManyRequests:
		return fmt.Sprintf("%s: GitHub's rate limit (429 %s)", e.Op, e.Message)
	case http.StatusForbidden:
		if e.Permission != "" {
			return fmt.Sprintf("%s: GitHub refused (403 %s); the token lacks %s", e.Op, e.Message, e.Permission)
		}
		return fmt.Sprintf("%s: GitHub refused (403 %s)", e.Op, e.Message)
	case http.StatusNotFound:
		return fmt.Sprintf("%s: not found (404): the repository does not exist or the token cannot see it", e.Op)
	}
	return fmt.Sprintf("%s: GitHub answered %d %s", e.Op, e.Status, e.Message)
}

// translate turns go-github errors into APIErrors; perm is the permission the
// operation needs (contents:write, pull_requests:write).
func translate(err error, op, repo, perm string) error {
	if err == nil {
		return nil
	}
	var rl *github.RateLimitError
	if errors.As(err, &rl) {
		return &APIError{Status: http.StatusForbidden, Op: op, Message: rl.Message, RateLimited: true,
			Hint: fmt.Sprintf("the GitHub rate limit resets at %s; retry then", rl.Rate.Reset.Time.UTC().Format(time.RFC3339))}
	}
	var ab *github.AbuseRateLimitError
	if errors.As(err, &ab) {
		return &APIError{Status: http.StatusForbidden, Op: op, Message: ab.Message, RateLimited: true, Hint: "GitHub's secondary rate limit: wait a minute and retry"}
	}
	var er *github.ErrorResponse
	if !errors.As(err, &er) || er.Response == nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	msg := er.Message
	for _, e := range er.Errors {
		if e.Message != "" {
			msg += ": " + e.Message
		}
	}
	ae := &APIError{Status: er.Response.StatusCode, Op: op, Message: msg}
	switch ae.Status {
	case http.StatusUnauthorized:
		ae.Hint = "the token is invalid or expired: set GH_TOKEN (or GH_ENTERPRISE_TOKEN for GitHub Enterprise), or run `gh auth login`"
	case http.StatusForbidden:
		ae.Permission = perm
		if perm == "" {
			ae.Hint = "check the token's access to " + repo
		} else {
			ae.Hint = fmt.Sprintf("give the token %s on %s (fine-grained token) or the repo scope (classic token)", perm, repo)
		}
	case http.StatusTooManyRequests: // GitHub's rate limits answer 403 or 429
		ae.RateLimited = true
		ae.Hint = "GitHub's rate limit: wait a few minutes and retry"
		if er.Response.Header.Get("X-RateLimit-Remaining") == "0" {
			if reset, err := strconv.ParseInt(er.Response.Header.Get("X-RateLimit-Reset"), 10, 64); err == nil {
				ae.Hint = fmt.Sprintf("the GitHub rate limit resets at %s; retry then", time.Unix(reset, 0).UTC().Format(time.RFC3339))
			}
		}
	case http.StatusNotFound:
		ae.Hint = fmt.Sprintf("check city.repo (%s) in spirepod.yaml, and that the token can read it (a private repository answers 404 to tokens without access)", repo)
	default:
		ae.Hint = "retry later; if it persists, check https://www.githubstatus.com"
	}
	return ae
}

func statusOf(err error) int {
	var er *github.ErrorResponse
	if errors.As(err, &er) && er.Response != nil {
		return er.Response.StatusCode
	}
	var ae *APIError
	if errors.As(err, &ae) {
		return ae.Status
	}
	return 0
}

func isNotFound(err error) bool { return statusOf(err) == http.StatusNotFound }

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }
