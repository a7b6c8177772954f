package main

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/spirepod/spirepod/internal/pr"
	"github.com/spirepod/spirepod/internal/project"
)

func TestPRSpiffeIDFlags(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		wantErr string
		check   func(*testing.T, *prSpiffeIDOptions)
	}{
		{name: "defaults", args: nil, check: func(t *testing.T, o *prSpiffeIDOptions) {
			if o.Format != "" || o.DryRun || o.Local != "" || o.Timeout != 5*time.Minute {
				t.Errorf("%+v", o)
			}
		}},
		{name: "all flags", args: []string{"--format", "entry-json", "--dry-run", "--local", "/c", "--push", "--dir", "d", "--ca", "ca.pem", "--timeout", "1m"},
			check: func(t *testing.T, o *prSpiffeIDOptions) {
				if o.Format != "entry-json" || !o.DryRun || o.Local != "/c" || !o.Push || o.Dir != "d" || o.CA != "ca.pem" || o.Timeout != time.Minute {
					t.Errorf("%+v", o)
				}
			}},
		{name: "bad format", args: []string{"--format", "yaml"}, wantErr: "--format"},
		{name: "push without local", args: []string{"--push"}, wantErr: "--push needs --local"},
		{name: "zero timeout", args: []string{"--timeout", "0s"}, wantErr: "--timeout"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f, _, _ := testFactoryPKI(t, t.TempDir())
			var got *prSpiffeIDOptions
			cmd := newCmdPRSpiffeID(f, func(o *prSpiffeIDOptions) error { got = o; return nil })
			// Never nil: cobra then parses os.Args (the test binary's own flags).
			cmd.SetArgs(append([]string{}, tc.args...))
			cmd.SetOut(&bytes.Buffer{})
			cmd.SetErr(&bytes.Buffer{})
			err := cmd.Execute()
			if tc.wantErr != "" {
				var ce *cliError
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !errors.As(err, &ce) || ce.code != exitUsage {
					t.Fatalf("got %v, want a usage error with %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, got)
		})
	}
}

func TestResolveToken(t *testing.T) {
	env := map[string]string{}
	f, _, _ := testFactoryPKI(t, t.TempDir())
	f.Getenv = func(k string) string { return env[k] }
	f.GHToken = func(context.Context, string) (string, error) { return "from-gh", nil }
	c := &prCommon{f: f}
	ctx := context.Background()
	for _, tc := range []struct {
		host string
		env  map[string]string
		want string
	}{
		{"github.com", map[string]string{"GH_TOKEN": "a", "GITHUB_TOKEN": "b"}, "a"},
		{"github.com", map[string]string{"GITHUB_TOKEN": "b", "GH_ENTERPRISE_TOKEN": "e"}, "b"},
		{"ghe.example.com", map[string]string{"GH_TOKEN": "a", "GH_ENTERPRISE_TOKEN": "e", "GITHUB_ENTERPRISE_TOKEN": "f"}, "e"},
		{"ghe.example.com", map[string]string{"GITHUB_ENTERPRISE_TOKEN": "f"}, "f"},
		{"github.com", map[string]string{}, "from-gh"},
	} {
		env = tc.env
		got, err := c.resolveToken(ctx, tc.host)
		if err != nil || got != tc.want {
			t.Errorf("%s %v: got %q, %v; want %q", tc.host, tc.env, got, err, tc.want)
		}
	}
	env = map[string]string{}
	f.GHToken = nil
	_, err := c.resolveToken(ctx, "github.com")
	var ce *cliError
	if !errors.As(err, &ce) || !strings.Contains(ce.hint, "GH_TOKEN") {
		t.Errorf("missing token: %v", err)
	}
	// A <tenant>.ghe.com host is GitHub's cloud (GH_TOKEN), its API at
	// api.<tenant>.ghe.com; any other host is GHES (GH_ENTERPRISE_TOKEN).
	env = map[string]string{"GH_TOKEN": "cloud", "GH_ENTERPRISE_TOKEN": "ghes"}
	for host, want := range map[string]string{"acme.ghe.com": "cloud", "ghe.example.com": "ghes"} {
		if tok, err := c.resolveToken(ctx, host); err != nil || tok != want {
			t.Errorf("%s: token %q (%v), want the %s one", host, tok, err, want)
		}
	}
	p := &project.Project{City: project.City{Repo: "acme/city", Host: "acme.ghe.com"}}
	o, err := c.gitHubOptions(ctx, p, true)
	if err != nil || o.Host != "acme.ghe.com" || o.BaseURL != "" {
		t.Errorf("gitHubOptions for acme.ghe.com: host %q, base URL %q (%v): the library must derive api.acme.ghe.com", o.Host, o.BaseURL, err)
	}
	if rest, gql, err := pr.APIEndpoints(o.Host); err != nil || rest.Host != "api.acme.ghe.com" || gql.String() != "https://api.acme.ghe.com/graphql" {
		t.Errorf("endpoints of acme.ghe.com: %v %v %v", rest, gql, err)
	}
}
