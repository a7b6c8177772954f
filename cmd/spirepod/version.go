package main

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"
)

// version is set at release time: -ldflags "-X main.version=v1.2.3".
var version = ""

type versionOptions struct {
	f *Factory
}

type versionInfo struct {
	Version   string `json:"version"`
	GoVersion string `json:"goVersion"`
	Platform  string `json:"platform"`
}

func newCmdVersion(f *Factory, runF func(*versionOptions) error) *cobra.Command {
	opts := &versionOptions{f: f}
	return &cobra.Command{
		Use:   "version",
		Short: "Print the spirepod version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if runF != nil {
				return runF(opts)
			}
			return versionRun(opts)
		},
	}
}

// currentVersion is the release (-X main.version), else the module version
// `go install …@v1.2.3` records, else the commit a `go install ./cmd/spirepod`
// or `go build` from a checkout was built from (the VCS stamp Go records:
// "devel 1a2b3c4d5e6f 2026-11-30T10:00:00Z", "+dirty" with local edits);
// "(devel)" only when the build recorded none (-buildvcs=false).
func currentVersion() string {
	if version != "" {
		return version
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "(devel)"
	}
	return versionOf(bi)
}

func versionOf(bi *debug.BuildInfo) string {
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	var rev, at string
	dirty := false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.time":
			at = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if rev == "" {
		return "(devel)"
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	v := "devel " + rev
	if dirty {
		v += "+dirty"
	}
	if at != "" {
		v += " " + at
	}
	return v
}

func versionRun(opts *versionOptions) error {
	info := versionInfo{Version: currentVersion(), GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if opts.f.JSON() {
		return writeJSON(opts.f.IO.Out, info)
	}
	_, err := fmt.Fprintf(opts.f.IO.Out, "spirepod %s (%s, %s)\n", info.Version, info.GoVersion, info.Platform)
	return err
}
