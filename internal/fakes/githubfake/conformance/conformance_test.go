package conformance

import (
	"strings"
	"testing"

	"github.com/vektah/gqlparser/v2"
	"github.com/vektah/gqlparser/v2/ast"

	"github.com/spirepod/spirepod/internal/fakes/githubfake"
)

// TestRoutes: requests find the operation GitHub documents for them,
// multi-segment parameters included.
func TestRoutes(t *testing.T) {
	d := Require(t)
	for _, tc := range []struct{ method, path, op string }{
		{"GET", "/repos/o/r/branches/main", "repos/get-branch"},
		{"GET", "/repos/o/r/git/ref/heads/spirepod/payments/trust-ca", "git/get-ref"},
		{"PATCH", "/repos/o/r/git/refs/heads/spirepod/payments/trust-ca", "git/update-ref"},
		{"GET", "/repos/o/r/contents/ns/spire/server/dev/x509pop/agent-ca-bundle.pem", "repos/get-content"},
		{"GET", "/repos/o/r/commits/abc/check-runs", "checks/list-for-ref"},
		{"GET", "/repos/o/r/commits/abc", "repos/get-commit"},
		{"GET", "/repos/o/r/git/blobs/abc", "git/get-blob"},
		{"GET", "/user", "users/get-authenticated"},
	} {
		for _, a := range d.REST {
			rt, _ := a.match(tc.method, strings.Split(strings.Trim(tc.path, "/"), "/"))
			if rt == nil || rt.resolve() != nil || rt.op.OperationID != tc.op {
				got := "none"
				if rt != nil {
					got = rt.op.OperationID
				}
				t.Errorf("%s: %s %s is %s, want %s", a.Name, tc.method, tc.path, got, tc.op)
			}
		}
	}
	if rt, _ := d.REST[0].match("GET", []string{"repos", "o", "r", "no-such-thing"}); rt != nil {
		t.Errorf("an undocumented path matched %s", rt.tmpl)
	}
}

// TestFakeSchemaIsGitHubs: every type, field and argument of the fake's
// GraphQL schema is GitHub's, with GitHub's type, so a query the fake
// accepts is one GitHub accepts.
func TestFakeSchemaIsGitHubs(t *testing.T) {
	d := Require(t)
	fake := gqlparser.MustLoadSchema(&ast.Source{Name: "fake", Input: githubfake.SchemaSDL})
	n := 0
	for name, def := range fake.Types {
		if def.BuiltIn {
			continue
		}
		real := d.GraphQL.Types[name]
		if real == nil || real.Kind != def.Kind {
			t.Errorf("type %s (%s) is not GitHub's", name, def.Kind)
			continue
		}
		for _, f := range def.Fields {
			if strings.HasPrefix(f.Name, "__") {
				continue
			}
			rf := real.Fields.ForName(f.Name)
			if rf == nil || rf.Type.String() != f.Type.String() {
				t.Errorf("%s.%s: %s is not GitHub's (%v)", name, f.Name, f.Type, rf)
				continue
			}
			for _, a := range f.Arguments {
				ra := rf.Arguments.ForName(a.Name)
				if ra == nil || ra.Type.String() != a.Type.String() {
					t.Errorf("%s.%s(%s: %s) is not GitHub's", name, f.Name, a.Name, a.Type)
				}
			}
			n++
		}
	}
	t.Logf("%d fields of the fake's schema are GitHub's", n)
}

// TestGraphQLCheck: a document with a field GitHub does not have fails.
func TestGraphQLCheck(t *testing.T) {
	d := Require(t)
	ok := `query($o: String!, $n: String!) { repository(owner: $o, name: $n) { object(expression: "HEAD:x") { ... on Blob { text isTruncated byteSize oid } } } }`
	if err := d.CheckGraphQL(ok); err != nil {
		t.Errorf("GitHub's fields refused: %v", err)
	}
	if err := d.CheckGraphQL(strings.Replace(ok, "isTruncated", "truncated", 1)); err == nil {
		t.Error("an unknown field passed")
	}
}
