package main

import "github.com/spf13/cobra"

func newCmdCity(f *Factory) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "city",
		Short: "Review the city repository as the platform team: registrations, trust list, server config",
		Long: `Commands for the platform team that reviews the teams' pull requests to the city repository
and runs the shared SPIRE server.

  spirepod city check     judge the whole city, or what a PR changes (--base), with stable rule codes`,
	}
	cmd.AddCommand(newCmdCityCheck(f, nil))
	return cmd
}
