package main

import "github.com/spf13/cobra"

// placeholder, replaced by the scaffold work
type initOptions struct{}

func newCmdInit(f *Factory, runF func(*initOptions) error) *cobra.Command {
	return &cobra.Command{Use: "init [DIR]", Short: "Scaffold the same-pod SPIRE manifests"}
}

func newCmdBundle(f *Factory) *cobra.Command {
	return &cobra.Command{Use: "bundle", Short: "Manage the SPIRE server CA bundle"}
}
