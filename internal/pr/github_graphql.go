package pr

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/google/go-github/v60/github"
)

// graphQLTooBigError means GitHub could not answer a GraphQL query for its
// size or in time: the caller splits it instead of sending it again whole.
// GitHub answers such a query with a 502 or 504, or with a GraphQL error
// naming a timeout or a node or resource limit ("Rate limits and query
// limits for the GraphQL API",
// https://docs.github.com/graphql/overview/rate-limits-and-query-limits-for-the-graphql-api:
// node limit, timeouts).
type graphQLTooBigError struct {
	Status  int
	Message string
}

func (e *graphQLTooBigError) Error() string {
	if e.Message != "" {
		return fmt.Sprintf("GitHub could not answer the GraphQL query (%d): %s", e.Status, e.Message)
	}
	return fmt.Sprintf("GitHub could not answer the GraphQL query (%d)", e.Status)
}

type graphQLError struct {
	Message string `json:"message"`
	Type    string `json:"type"`
}

// tooBig reports whether a GraphQL error is about the query's size or time.
func (e graphQLError) tooBig() bool {
	m := strings.ToLower(e.Message)
	return e.Type == "MAX_NODE_LIMIT_EXCEEDED" || e.Type == "RESOURCE_LIMITS_EXCEEDED" ||
		strings.Contains(m, "timeout") || strings.Contains(m, "timed out") ||
		strings.Contains(m, "couldn't respond to your request in time") ||
		strings.Contains(m, "something went wrong while executing your query")
}

// graphql sends one GraphQL query and decodes its data into data. op names
// the operation in errors. A 5xx is not retried here: it comes back as a
// graphQLTooBigError for the caller to split the query.
func (c *client) graphql(ctx context.Context, op, query string, vars map[string]any, data any) error {
	body, err := json.Marshal(map[string]any{"query": query, "variables": vars})
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(withoutServerRetry(ctx), http.MethodPost, c.graphqlURL, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	resp, err := c.gh.Client().Do(req)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	var res struct {
		Data   json.RawMessage `json:"data"`
		Errors []graphQLError  `json:"errors"`
	}
	jerr := json.Unmarshal(raw, &res)
	switch {
	case resp.StatusCode >= 500:
		msg := ""
		if jerr == nil && len(res.Errors) > 0 {
			msg = res.Errors[0].Message
		}
		return &graphQLTooBigError{Status: resp.StatusCode, Message: msg}
	case resp.StatusCode != http.StatusOK:
		// Rate limits (after the transport's bounded wait), a bad token, no
		// access: go-github's reading of the answer, translated as for REST.
		resp.Body = io.NopCloser(bytes.NewReader(raw))
		return translate(github.CheckResponse(resp), op+" through GraphQL", c.repo(), "contents:read")
	case jerr != nil:
		return fmt.Errorf("%s through GraphQL: %w", op, jerr)
	}
	for _, e := range res.Errors {
		if e.tooBig() {
			return &graphQLTooBigError{Status: resp.StatusCode, Message: e.Message}
		}
	}
	if len(res.Errors) > 0 {
		return fmt.Errorf("%s through GraphQL: %s", op, res.Errors[0].Message)
	}
	if err := json.Unmarshal(res.Data, data); err != nil {
		return fmt.Errorf("%s through GraphQL: %w", op, err)
	}
	return nil
}

func isTooBig(err error) bool {
	var e *graphQLTooBigError
	return errors.As(err, &e)
}
