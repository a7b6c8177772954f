package apply

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/spirepod/spirepod/internal/pki"
	"github.com/spirepod/spirepod/internal/project"
	"github.com/spirepod/spirepod/internal/scaffold"
	"github.com/spirepod/spirepod/scaffoldfs"
)

// plainScaffold writes spirepod's scaffold for p into a new directory, with
// a team CA when withCA (else init's empty placeholders) and a server CA in
// the bundle when serverCA.
func plainScaffold(t *testing.T, p *project.Project, withCA, serverCA bool) string {
	t.Helper()
	dir := t.TempDir()
	p.Dir = dir
	p.ApplyDefaults()
	var bundle []byte
	if serverCA {
		b := filepath.Join(t.TempDir(), "server.pem")
		if _, err := pki.Generate(context.Background(), pki.GenerateOptions{CertPath: b, KeyPath: b + ".key",
			Subject: pki.DefaultSubject("server"), Rand: rand.Reader, Now: time.Now}); err != nil {
			t.Fatal(err)
		}
		bundle, _ = os.ReadFile(b)
	}
	files, err := scaffold.Render(scaffold.Options{Source: scaffoldfs.Scaffold(), Project: p, ServerCA: bundle})
	if err != nil {
		t.Fatal(err)
	}
	plan, err := scaffold.PlanWrite(dir, files)
	if err != nil {
		t.Fatal(err)
	}
	if err := plan.Write(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	if withCA {
		if _, err := pki.Generate(context.Background(), pki.GenerateOptions{CertPath: p.Path(p.Paths.CACert), KeyPath: p.Path(p.Paths.CAKey),
			Subject: pki.DefaultSubject(p.Team), Rand: rand.Reader, Now: time.Now}); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func plainProject(ns string, replicas int, issuer, naming string) *project.Project {
	name := "spire-envoy-integration"
	if naming == project.NamingGuide {
		name = "payments-web"
	}
	return &project.Project{
		APIVersion: project.APIVersion, Kind: project.Kind,
		Team: "payments", Namespace: ns, Environment: "dev",
		StatefulSet: name, Replicas: replicas, ServiceAccount: "httpbin-client",
		Naming: naming, IssuerScope: issuer,
		TrustDomain: "spire.cityos-dev.woven-planet.tech", SpireServer: "spire-server.cityos-dev.woven-planet.tech:8081",
		City: project.City{Repo: "wp-wcm/city", BaseBranch: "main", TeamPath: "ns/" + ns,
			TrustList: project.TrustList{Mode: project.TrustListBundle, Path: "trust.pem"}},
		Registration: project.Registration{Format: project.FormatEntryJSON, EnvoyUID: 101},
		Paths:        project.DefaultPaths,
	}
}

// sameObjects fails unless got and want are the same objects in the same order.
func sameObjects(t *testing.T, what string, got, want []*unstructured.Unstructured) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d objects, kustomize %d", what, len(got), len(want))
	}
	for i := range want {
		g, _ := json.Marshal(redact(got[i]).Object)
		w, _ := json.Marshal(redact(want[i]).Object)
		if string(g) != string(w) {
			t.Fatalf("%s: object %d differs from kustomize's\n got: %s\nwant: %s", what, i, g, w)
		}
	}
}

// redact replaces a Secret's values by their length, so a failure never
// prints key material.
func redact(o *unstructured.Unstructured) *unstructured.Unstructured {
	if o.GetKind() != "Secret" {
		return o
	}
	c := o.DeepCopy()
	data, _, _ := unstructured.NestedMap(c.Object, "data")
	for k, v := range data {
		s, _ := v.(string)
		data[k] = fmt.Sprintf("<%d bytes, sha256 %x>", len(s), sha256.Sum256([]byte(s)))
	}
	if data != nil {
		_ = unstructured.SetNestedMap(c.Object, data, "data")
	}
	return c
}

// TestPlainBuildMatchesKustomize: for every variant of spirepod's own
// scaffold, the linear build takes the plain path and gives exactly
// kustomize's objects, in kustomize's order, for both layers. (Item 3 of
// issue 21: kustomize's build of a 1,000-pod scaffold took seconds.)
func TestPlainBuildMatchesKustomize(t *testing.T) {
	for _, tc := range []struct {
		name             string
		p                *project.Project
		withCA, serverCA bool
	}{
		{"fresh placeholders", plainProject("team-a", 1, project.IssuerNamespaced, project.NamingNamespaced), false, false},
		{"ca and bundle", plainProject("team-a", 3, project.IssuerNamespaced, project.NamingNamespaced), true, true},
		{"cluster issuer", plainProject("payments", 2, project.IssuerCluster, project.NamingNamespaced), true, true},
		{"guide naming", plainProject("payments", 2, project.IssuerNamespaced, project.NamingGuide), true, false},
		{"many pods", plainProject("team-b", 200, project.IssuerNamespaced, project.NamingNamespaced), true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := plainScaffold(t, tc.p, tc.withCA, tc.serverCA)
			for _, d := range []string{filepath.Join(dir, "certs"), dir} {
				got, plain, err := buildDir(d)
				if err != nil {
					t.Fatal(err)
				}
				if !plain {
					_, perr := plainBuild(newResourceFactory(), d, d, 0)
					t.Fatalf("%s: the scaffold went to kustomize (%v); the plain build must take it", d, perr)
				}
				want, err := kustomizeBuild(d)
				if err != nil {
					t.Fatal(err)
				}
				sameObjects(t, d, got, want)
			}
		})
	}
}

// TestPlainBuildLeavesTheRestToKustomize: a kustomization that uses what
// only kustomize does (a patch, a name prefix, an object to move into the
// namespace, a subject without a namespace, a hashed generator) is built by
// kustomize, and a broken one fails with kustomize's error.
func TestPlainBuildLeavesTheRestToKustomize(t *testing.T) {
	edits := map[string]func(t *testing.T, dir string){
		"patch": func(t *testing.T, dir string) {
			appendFile(t, filepath.Join(dir, "kustomization.yaml"), "patches:\n  - target: {kind: StatefulSet}\n    patch: |-\n      - op: replace\n        path: /spec/replicas\n        value: 2\n")
		},
		"name prefix": func(t *testing.T, dir string) {
			appendFile(t, filepath.Join(dir, "kustomization.yaml"), "namePrefix: x-\n")
		},
		"object without namespace": func(t *testing.T, dir string) {
			writeFile(t, filepath.Join(dir, "extra.yaml"), "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: extra\ndata: {a: b}\n")
			appendFile(t, filepath.Join(dir, "kustomization.yaml"), "  - extra.yaml\n")
		},
		"subject without namespace": func(t *testing.T, dir string) {
			writeFile(t, filepath.Join(dir, "extra.yaml"), "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata:\n  name: extra\n  namespace: team-a\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: spire-agent-gen-cert}\nsubjects:\n  - {kind: ServiceAccount, name: httpbin-client}\n")
			appendFile(t, filepath.Join(dir, "kustomization.yaml"), "  - extra.yaml\n")
		},
	}
	for name, edit := range edits {
		t.Run(name, func(t *testing.T) {
			dir := plainScaffold(t, plainProject("team-a", 2, project.IssuerNamespaced, project.NamingNamespaced), true, false)
			edit(t, dir)
			got, plain, err := buildDir(dir)
			if err != nil {
				t.Fatal(err)
			}
			if plain {
				t.Fatal("the plain build took a kustomization only kustomize gets right")
			}
			want, err := kustomizeBuild(dir)
			if err != nil {
				t.Fatal(err)
			}
			sameObjects(t, dir, got, want)
		})
	}
	t.Run("hashed generator", func(t *testing.T) {
		dir := plainScaffold(t, plainProject("team-a", 1, project.IssuerNamespaced, project.NamingNamespaced), true, false)
		k := filepath.Join(dir, "certs", "secret", "kustomization.yaml")
		b, _ := os.ReadFile(k)
		writeFile(t, k, strings.ReplaceAll(string(b), "disableNameSuffixHash: true", "disableNameSuffixHash: false"))
		if _, plain, err := buildDir(filepath.Join(dir, "certs")); err != nil || plain {
			t.Fatalf("plain %v, err %v: a hashed Secret name is kustomize's", plain, err)
		}
	})
	t.Run("missing resource", func(t *testing.T) {
		dir := plainScaffold(t, plainProject("team-a", 1, project.IssuerNamespaced, project.NamingNamespaced), true, false)
		if err := os.Remove(filepath.Join(dir, "rbac.yaml")); err != nil {
			t.Fatal(err)
		}
		if _, _, err := buildDir(dir); err == nil {
			t.Fatal("a kustomization naming a missing file built")
		}
	})
}

func appendFile(t *testing.T, path, s string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(s); err != nil {
		t.Fatal(err)
	}
}

func writeFile(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}
