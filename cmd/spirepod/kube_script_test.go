package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"

	"github.com/rogpeppe/go-internal/testscript"
)

// cmdStatusServer starts a server on 127.0.0.1 that answers every request
// with one HTTP status (404: a web server that is not an API server; 401:
// credentials refused) and writes a kubeconfig for it (context "dev"):
//
//	status-server CODE KUBECONFIG
func cmdStatusServer(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: status-server CODE KUBECONFIG")
	}
	code, err := strconv.Atoi(args[0])
	ts.Check(err)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(code)
		fmt.Fprintln(w, http.StatusText(code))
	}))
	ts.Defer(srv.Close)
	ts.Check(os.WriteFile(ts.MkAbs(args[1]), []byte(kubeconfigFor(srv.URL, "token: test")), 0o600))
}

// kubeconfigFor is a kubeconfig with one context "dev" for server, its user
// given as YAML (token: …, or exec: …).
func kubeconfigFor(server, user string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: dev-cluster
  cluster: {server: %q}
users:
- name: dev-user
  user: {%s}
contexts:
- name: dev
  context: {cluster: dev-cluster, user: dev-user}
- name: another
  context: {cluster: dev-cluster, user: dev-user}
current-context: dev
`, server, user)
}

// cmdJSONDoc checks that the last command's stdout is exactly one JSON
// document (an object), whatever it reported:
//
//	json-doc
func cmdJSONDoc(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 0 {
		ts.Fatalf("usage: json-doc")
	}
	dec := json.NewDecoder(strings.NewReader(ts.ReadFile("stdout")))
	var v map[string]any
	err := dec.Decode(&v)
	if err == nil && dec.More() {
		err = errors.New("more than one JSON document")
	}
	if (err == nil) == neg {
		ts.Fatalf("stdout is one JSON object: %v (want %v)", err == nil, !neg)
	}
}
