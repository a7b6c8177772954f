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

func currentVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "(devel)"
}

func versionRun(opts *versionOptions) error {
	info := versionInfo{Version: currentVersion(), GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if opts.f.JSON() {
		return writeJSON(opts.f.IO.Out, info)
	}
	_, err := fmt.Fprintf(opts.f.IO.Out, "spirepod %s (%s, %s)\n", info.Version, info.GoVersion, info.Platform)
	return err
}
