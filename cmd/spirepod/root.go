package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"github.com/spf13/viper"
)

// run builds a fresh command tree, executes it and returns the exit code.
func run(ctx context.Context, args []string, streams *IOStreams, getenv func(string) string) int {
	f := newFactory(streams, getenv)
	root := newCmdRoot(f)
	root.SetArgs(args)
	root.SetIn(streams.In)
	root.SetOut(streams.Out)
	root.SetErr(streams.ErrOut)
	root.SilenceErrors = true
	root.SilenceUsage = true
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return usageError(fmt.Sprintf("run `%s --help` for usage", c.CommandPath()), "%s", err.Error())
	})
	if err := root.ExecuteContext(ctx); err != nil {
		if isCobraUsage(err) {
			err = usageError("run `spirepod --help` for usage", "%s", err.Error())
		}
		return reportError(ctx, streams.ErrOut, err)
	}
	return exitOK
}

// isCobraUsage recognises cobra's own argument errors (unknown command,
// wrong number of arguments), which carry no type.
func isCobraUsage(err error) bool {
	var ce *cliError
	if errors.As(err, &ce) {
		return false
	}
	m := err.Error()
	for _, s := range []string{"unknown command", "accepts ", "requires at least", "requires at most", "unknown flag", "unknown shorthand"} {
		if strings.Contains(m, s) {
			return true
		}
	}
	return false
}

func newCmdRoot(f *Factory) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "spirepod",
		Short: "Onboard a team onto shared SPIRE: agent, Envoy and workload in one Pod, x509pop attestation",
		Long: `spirepod turns the "SPIRE Agent and workload in the same Pod" guide into commands that are
correct the first time, safe to re-run, and checked against the systems that consume their output.

  1. spirepod init         scaffold the manifests for your namespace      (guide step 1)
  2. spirepod pki gen      make the team CA for x509pop                   (step 2)
  3. spirepod bundle set   put the SPIRE server CA in the bundle          (step 3)
  4. spirepod pr trust-ca  PR adding your CA to the server's trust list   (step 4)
  5. spirepod pr spiffe-id PR registering node aliases and SPIFFE IDs     (step 5)
  6. spirepod apply        server-side apply certs/ and the scaffold      (step 6)
  7. spirepod verify       wait for URI=<your SPIFFE ID> in the curl log  (step 7)
     spirepod status       where you are in the seven steps

Settings come from flags, then SPIREPOD_<FLAG> environment variables, then the
config file (--config), then defaults. Later commands read spirepod.yaml, found
from the current directory upward.

` + exitCodesHelp,
		Example: `  spirepod init --team payments --namespace payments
  cd spire-envoy-integration && spirepod pki gen
  spirepod pr trust-ca && spirepod pr spiffe-id
  spirepod apply --context dev && spirepod verify`,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			if err := applyConfigPrecedence(cmd, f); err != nil {
				return err
			}
			if f.Output != "text" && f.Output != "json" {
				return usageError("use -o text or -o json", "-o/--output must be text or json, got %q", f.Output)
			}
			f.IO.Color = decideColor(f.IO, f.Getenv, f.NoColor)
			return nil
		},
	}
	pf := cmd.PersistentFlags()
	pf.StringVar(&f.ConfigPath, "config", f.ConfigPath, "user config file (flag defaults and environment profiles)")
	pf.StringVarP(&f.Output, "output", "o", "text", "output format: text or json")
	pf.BoolVar(&f.NoColor, "no-color", false, "disable colour (also NO_COLOR)")

	cmd.AddCommand(
		newCmdVersion(f, nil),
		newCmdInit(f, nil),
		newCmdBundle(f),
		newCmdPKI(f),
		newCmdPR(f),
		newCmdApply(f, nil),
		newCmdDiff(f, nil),
		newCmdVerify(f, nil),
		newCmdStatus(f, nil),
	)
	return cmd
}

// applyConfigPrecedence fills every flag the user did not set from
// SPIREPOD_<FLAG> in the environment, then from the config file. Flags set on
// the command line always win; the options structs stay the one source of truth.
func applyConfigPrecedence(cmd *cobra.Command, f *Factory) error {
	v := viper.New()
	v.SetEnvPrefix("SPIREPOD")
	v.SetEnvKeyReplacer(strings.NewReplacer("-", "_"))
	v.AutomaticEnv()
	// viper's AutomaticEnv reads os.Getenv; tests inject their own environment.
	path := f.ConfigPath
	if path != "" {
		if _, err := os.Stat(path); err == nil {
			v.SetConfigFile(path)
			v.SetConfigType("yaml")
			if err := v.ReadInConfig(); err != nil {
				return usageError("fix or remove the file", "config file %s: %v", path, err)
			}
		} else if !errors.Is(err, fs.ErrNotExist) || cmd.Flags().Changed("config") {
			return usageError("pass an existing file to --config", "--config %s: %v", path, err)
		}
	}
	var errs []error
	cmd.Flags().VisitAll(func(fl *pflag.Flag) {
		if fl.Changed || fl.Name == "config" || fl.Name == "help" {
			return
		}
		env := "SPIREPOD_" + strings.ToUpper(strings.ReplaceAll(fl.Name, "-", "_"))
		val, ok := lookupEnv(f.Getenv, env)
		src := env
		if !ok && v.InConfig(fl.Name) {
			val, ok = configString(v.Get(fl.Name)), true
			src = fmt.Sprintf("%s in %s", fl.Name, path)
		}
		if !ok {
			return
		}
		if sv, isSlice := fl.Value.(pflag.SliceValue); isSlice {
			if err := sv.Replace(strings.Split(val, ",")); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", src, err))
			}
			return
		}
		if err := fl.Value.Set(val); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", src, err))
		}
	})
	if len(errs) > 0 {
		return usageError("fix the environment variable or config key", "%v", errors.Join(errs...))
	}
	return nil
}

func lookupEnv(getenv func(string) string, key string) (string, bool) {
	v := getenv(key)
	return v, v != ""
}

func configString(v any) string {
	switch t := v.(type) {
	case []any:
		parts := make([]string, len(t))
		for i, e := range t {
			parts[i] = fmt.Sprint(e)
		}
		return strings.Join(parts, ",")
	default:
		return fmt.Sprint(t)
	}
}

// defaultConfigPath is $XDG_CONFIG_HOME/spirepod/config.yaml (or ~/.config/…).
func defaultConfigPath(getenv func(string) string) string {
	if p := getenv("SPIREPOD_CONFIG"); p != "" {
		return p
	}
	base := getenv("XDG_CONFIG_HOME")
	if base == "" {
		home := getenv("HOME")
		if home == "" {
			return ""
		}
		base = filepath.Join(home, ".config")
	}
	return filepath.Join(base, "spirepod", "config.yaml")
}
