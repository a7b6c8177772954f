package main

import (
	"os"
	"sort"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/viper"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/spirepod/spirepod/internal/pki"
	"github.com/spirepod/spirepod/internal/project"
)

// registerCompletions gives flags with a known set of values dynamic shell
// completions (cobra's `__complete`, used by `spirepod completion bash|zsh|…`):
// fixed lists (--format, --key-type, --naming, --issuer, apply's --dry-run),
// the environment profiles (built-in and the config file's), -o for each
// command, the kubeconfig's contexts and the scaffold's pod names.
func registerCompletions(root *cobra.Command, f *Factory) {
	keyTypes := make([]string, len(pki.KeyTypes))
	for i, k := range pki.KeyTypes {
		keyTypes[i] = string(k)
	}
	fixed := map[string][]string{
		"format":   {project.FormatEntryJSON, project.FormatClusterStaticEntry, project.FormatSpiffeID},
		"key-type": keyTypes,
		"naming":   {project.NamingNamespaced, project.NamingGuide},
		"issuer":   {project.IssuerNamespaced, project.IssuerCluster},
	}
	_ = root.RegisterFlagCompletionFunc("output", func(c *cobra.Command, _ []string, _ string) ([]string, cobra.ShellCompDirective) {
		return outputFormats(c), cobra.ShellCompDirectiveNoFileComp
	})
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		own := func(name string) bool {
			return c.Flags().Lookup(name) != nil && c.InheritedFlags().Lookup(name) == nil
		}
		for name, vals := range fixed {
			if own(name) {
				_ = c.RegisterFlagCompletionFunc(name, cobra.FixedCompletions(vals, cobra.ShellCompDirectiveNoFileComp))
			}
		}
		if own("dry-run") && c.Flags().Lookup("dry-run").Value.Type() == "string" {
			_ = c.RegisterFlagCompletionFunc("dry-run", cobra.FixedCompletions([]string{"server", "none"}, cobra.ShellCompDirectiveNoFileComp))
		}
		if own("env") {
			_ = c.RegisterFlagCompletionFunc("env", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
				return completeProfiles(f), cobra.ShellCompDirectiveNoFileComp
			})
		}
		if own("context") {
			_ = c.RegisterFlagCompletionFunc("context", func(c *cobra.Command, _ []string, _ string) ([]string, cobra.ShellCompDirective) {
				return completeContexts(c), cobra.ShellCompDirectiveNoFileComp
			})
		}
		if own("pod") {
			_ = c.RegisterFlagCompletionFunc("pod", func(c *cobra.Command, _ []string, _ string) ([]string, cobra.ShellCompDirective) {
				dir, _ := c.Flags().GetString("dir")
				p, err := f.Project(dir)
				if err != nil {
					return nil, cobra.ShellCompDirectiveNoFileComp
				}
				return p.PodNames(), cobra.ShellCompDirectiveNoFileComp
			})
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
}

// completeProfiles lists the built-in profiles and the config file's (read
// here: completion does not run the root's config loading).
func completeProfiles(f *Factory) []string {
	user := f.userProfiles
	if user == nil && f.ConfigPath != "" {
		v := viper.New()
		v.SetConfigFile(f.ConfigPath)
		v.SetConfigType("yaml")
		if v.ReadInConfig() == nil {
			_ = v.UnmarshalKey("profiles", &user)
		}
	}
	return project.MergeProfiles(user).Names()
}

// completeContexts lists the contexts of the kubeconfig --kubeconfig (or
// KUBECONFIG, or ~/.kube/config) names.
func completeContexts(c *cobra.Command) []string {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if kc, _ := c.Flags().GetString("kubeconfig"); kc != "" {
		rules.ExplicitPath = kc
	} else if env := os.Getenv("KUBECONFIG"); env != "" {
		rules.Precedence = strings.Split(env, string(os.PathListSeparator))
	}
	cfg, err := rules.Load()
	if err != nil {
		return nil
	}
	var out []string
	for name := range cfg.Contexts {
		out = append(out, name)
	}
	sort.Strings(out)
	return out
}
