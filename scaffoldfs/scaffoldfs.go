// Package scaffoldfs holds the scaffold templates behind one embedded filesystem.
//
// templates/spire-envoy-integration is a complete, working copy of the city
// repository's ns/spire/docs-k8s/spire-envoy-integration folder, written for
// the namespace spire-envoy-integration-ns and the dev environment. `spirepod
// init` rewrites it structurally for a team; it is never a text template.
package scaffoldfs

import (
	"embed"
	"io/fs"
)

//go:embed all:templates
var templates embed.FS

// Scaffold returns the spire-envoy-integration template tree.
func Scaffold() fs.FS {
	sub, err := fs.Sub(templates, "templates/spire-envoy-integration")
	if err != nil {
		panic(err) // the path is fixed at build time
	}
	return sub
}
