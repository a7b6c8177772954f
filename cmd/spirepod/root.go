package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/go-viper/mapstructure/v2"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"github.com/spf13/viper"
	"github.com/spirepod/spirepod/internal/project"
	"k8s.io/klog/v2"
)

// run builds a fresh command tree for f, executes it with args and returns
// the exit code. main, the testscript `spirepod` command and every Go CLI
// test call it: there is one run path.
func run(ctx context.Context, f *Factory, args []string) int {
	silenceKlog()
	f.interrupt = ctx
	// Whether the command wrote its result: with -o json a failure that
	// wrote nothing still prints one JSON document (jsonFailure).
	out := &countingWriter{w: f.IO.Out}
	f.IO.Out = out
	f.running = out
	streams := f.IO
	root := newCmdRoot(f)
	root.SetArgs(args)
	root.SetIn(streams.In)
	root.SetOut(streams.Out)
	root.SetErr(streams.ErrOut)
	root.SilenceErrors = true
	root.SilenceUsage = true
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return usageError(fmt.Sprintf("run `%s --help` for usage", c.CommandPath()), "%s", flagValueError(err))
	})
	// cobra adds `completion` when it executes, too late for
	// groupsRefuseUnknown: `completion tcsh` printed help and exited 0.
	root.InitDefaultCompletionCmd(args...)
	groupsRefuseUnknown(root)
	if c, err := root.ExecuteContextC(ctx); err != nil {
		if isCobraUsage(err) {
			path := "spirepod"
			if c != nil {
				path = c.CommandPath()
			}
			err = usageError(fmt.Sprintf("run `%s --help` for usage", path), "%s", err.Error())
		}
		code := reportError(ctx, streams.ErrOut, err)
		if (f.JSON() || asksJSON(args)) && out.n.Load() == 0 {
			_ = writeJSON(out, jsonFailure(ctx, err, code))
		}
		return code
	}
	return exitOK
}

// asksJSON reports whether args ask for -o json, for a failure before the
// flags were parsed (a bad value of another flag).
func asksJSON(args []string) bool {
	for i, a := range args {
		switch {
		case a == "--":
			return false
		case a == "-ojson", a == "-o=json", a == "--output=json":
			return true
		case (a == "-o" || a == "--output") && i+1 < len(args) && args[i+1] == "json":
			return true
		}
	}
	return false
}

// countingWriter counts what a command wrote to stdout.
type countingWriter struct {
	w io.Writer
	n atomic.Int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n.Add(int64(n))
	return n, err
}

// jsonError is what -o json prints on stdout when a command fails before
// writing its own document: one JSON document whatever happens.
type jsonError struct {
	Error       string `json:"error"`
	Hint        string `json:"hint,omitempty"`
	ExitCode    int    `json:"exitCode"`
	Interrupted bool   `json:"interrupted,omitempty"`
}

func jsonFailure(ctx context.Context, err error, code int) jsonError {
	if ctx.Err() != nil {
		return jsonError{Error: "interrupted", ExitCode: code, Interrupted: true}
	}
	je := jsonError{Error: strings.TrimSpace(err.Error()), ExitCode: code}
	var ce *cliError
	if errors.As(err, &ce) {
		je.Hint = ce.hint
	}
	var se *silentError
	if errors.As(err, &se) {
		je.Error = "failed (see stderr)"
	}
	return je
}

// groupsRefuseUnknown makes every command group (pr, pki, bundle, city)
// refuse an unknown subcommand as the root does — exit 2, "unknown command",
// "Did you mean" — instead of cobra's default of printing the group's help
// with exit 0. A group alone still prints its help.
func groupsRefuseUnknown(cmd *cobra.Command) {
	for _, sub := range cmd.Commands() {
		groupsRefuseUnknown(sub)
	}
	if cmd.Parent() == nil || !cmd.HasSubCommands() || cmd.Runnable() {
		return
	}
	cmd.Args = cobra.ArbitraryArgs
	if cmd.SuggestionsMinimumDistance <= 0 {
		cmd.SuggestionsMinimumDistance = 2
	}
	cmd.RunE = func(c *cobra.Command, args []string) error {
		if len(args) == 0 {
			return c.Help()
		}
		msg := fmt.Sprintf("unknown command %q for %q", args[0], c.CommandPath())
		if sugg := c.SuggestionsFor(args[0]); len(sugg) > 0 {
			msg += "\n\nDid you mean this?\n\t" + strings.Join(sugg, "\n\t")
		}
		return usageError(fmt.Sprintf("run `%s --help` for usage", c.CommandPath()), "%s", msg)
	}
}

// flagValueError says what a flag takes when its value does not parse,
// instead of pflag's strconv and time error text.
func flagValueError(err error) string {
	var ive *pflag.InvalidValueError
	if errors.As(err, &ive) {
		return valueProblem(ive.GetFlag(), ive.GetValue())
	}
	return err.Error()
}

// valueProblem is "--NAME takes …, got VALUE", by the flag's type.
func valueProblem(fl *pflag.Flag, val string) string {
	what := map[string]string{
		"int": "a whole number", "int32": "a whole number", "int64": "a whole number", "uint": "a whole number",
		"duration":    "a duration such as 30s, 5m or 1h30m",
		"bool":        "true or false",
		"float64":     "a number",
		"stringSlice": "a comma-separated list",
		"stringArray": "a value",
	}[fl.Value.Type()]
	if what == "" {
		what = "a " + fl.Value.Type()
	}
	return fmt.Sprintf("--%s takes %s, got %q", fl.Name, what, val)
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
			if formats := outputFormats(cmd); !slices.Contains(formats, f.Output) {
				return usageError("use -o "+strings.Join(formats, " or -o "), "-o/--output must be %s, got %q", strings.Join(formats, " or "), f.Output)
			}
			f.IO.Color = decideColor(f.IO, f.Getenv, f.NoColor)
			return nil
		},
	}
	// --version, as `spirepod version` prints it.
	cmd.Version = currentVersion()
	cmd.SetVersionTemplate("spirepod {{.Version}} (" + runtime.Version() + ", " + runtime.GOOS + "/" + runtime.GOARCH + ")\n")
	pf := cmd.PersistentFlags()
	pf.StringVar(&f.ConfigPath, "config", f.ConfigPath, "user config file (flag defaults and environment profiles)")
	pf.StringVarP(&f.Output, "output", "o", "text", "output format: text or json (city check: also sarif)")
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
		newCmdUp(f, nil),
		newCmdCity(f),
	)
	registerCompletions(cmd, f)
	return cmd
}

// extraOutputs is a command annotation listing -o formats it accepts
// besides text and json (comma-separated; `city check` adds sarif).
const extraOutputs = "spirepod/extra-outputs"

// outputFormats are the -o values cmd accepts.
func outputFormats(cmd *cobra.Command) []string {
	formats := []string{"text", "json"}
	if extra := cmd.Annotations[extraOutputs]; extra != "" {
		formats = append(formats, strings.Split(extra, ",")...)
	}
	return formats
}

// cliOnly marks flags that switch a guard off (--yes, --force, --replace-ca,
// --force-conflicts, …): they are taken from the command line only, never
// from SPIREPOD_* or the config file, so no environment can disarm a guard.
const cliOnly = "spirepod/cli-only"

func markCLIOnly(fl *pflag.FlagSet, names ...string) {
	for _, n := range names {
		if err := fl.SetAnnotation(n, cliOnly, []string{"true"}); err != nil {
			panic(err) // a programming error: the flag is not defined
		}
	}
}

// applyConfigPrecedence reads the user config once (viper is its one
// reader), rejects keys it does not know, keeps its profiles: section for
// Factory.Profiles, then fills every flag the user did not set from
// SPIREPOD_<FLAG> in the environment, then from the config file. Flags set
// on the command line always win; the options structs stay the one source of
// truth.
func applyConfigPrecedence(cmd *cobra.Command, f *Factory) error {
	v := viper.New()
	path := f.ConfigPath
	if path != "" {
		if _, err := os.Stat(path); err == nil {
			v.SetConfigFile(path)
			v.SetConfigType("yaml")
			if err := v.ReadInConfig(); err != nil {
				return usageError("fix or remove the file", "config file %s: %v", path, err)
			}
			if err := checkConfigKeys(cmd.Root(), v, path); err != nil {
				return err
			}
			var user map[string]project.Profile
			if err := v.UnmarshalKey("profiles", &user, func(dc *mapstructure.DecoderConfig) {
				dc.ErrorUnused, dc.TagName = true, "yaml"
			}); err != nil {
				return usageError("profile keys are "+strings.Join(project.ProfileKeys(), ", "),
					"config file %s: %s", path, profileDecodeError(err))
			}
			f.userProfiles = user
		} else if !errors.Is(err, fs.ErrNotExist) || cmd.Flags().Changed("config") {
			return usageError("pass an existing file to --config", "--config %s: %v", path, pathErr(err))
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
		if _, only := fl.Annotations[cliOnly]; only {
			fmt.Fprintf(f.IO.ErrOut, "warning: %s is ignored: --%s disables a safety check and is taken from the command line only\n", src, fl.Name)
			return
		}
		if sv, isSlice := fl.Value.(pflag.SliceValue); isSlice {
			if err := sv.Replace(strings.Split(val, ",")); err != nil {
				errs = append(errs, fmt.Errorf("%s: %s", src, valueProblem(fl, val)))
			}
			return
		}
		if err := fl.Value.Set(val); err != nil {
			errs = append(errs, fmt.Errorf("%s: %s", src, valueProblem(fl, val)))
		}
	})
	if len(errs) > 0 {
		return usageError("fix the environment variable or config key", "%v", errors.Join(errs...))
	}
	return nil
}

var invalidKeys = regexp.MustCompile(`'([^']*)' has invalid keys: ([^\n]*)`)

// profileDecodeError turns mapstructure's multi-line report into one line
// per problem: "profiles.staging: unknown key trustdomian".
func profileDecodeError(err error) string {
	var msgs []string
	for _, m := range invalidKeys.FindAllStringSubmatch(err.Error(), -1) {
		where := strings.Trim(strings.ReplaceAll(strings.ReplaceAll(m[1], "[", "."), "]", ""), ".")
		msg := fmt.Sprintf("profiles.%s: unknown key %s", where, m[2])
		// mapstructure names the profile's unknown keys (a nested one's
		// known keys are not ours to guess): the nearest profile key.
		if !strings.Contains(m[2], ",") {
			if s := project.Closest(m[2], project.ProfileKeys()); s != "" {
				msg += fmt.Sprintf(" (did you mean %s?)", s)
			}
		}
		msgs = append(msgs, msg)
	}
	if len(msgs) == 0 {
		return "profiles: " + strings.Join(strings.Fields(err.Error()), " ")
	}
	return strings.Join(msgs, "; ")
}

// checkConfigKeys rejects top-level config keys that are neither a flag of
// some command nor profiles:, naming the key and the closest known one.
func checkConfigKeys(root *cobra.Command, v *viper.Viper, path string) error {
	known := map[string]bool{"profiles": true}
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		c.LocalFlags().VisitAll(func(fl *pflag.Flag) { known[fl.Name] = true })
		c.PersistentFlags().VisitAll(func(fl *pflag.Flag) { known[fl.Name] = true })
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
	var unknown []string
	for k := range v.AllSettings() {
		if !known[k] {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) == 0 {
		return nil
	}
	sort.Strings(unknown)
	names := make([]string, 0, len(known))
	for k := range known {
		names = append(names, k)
	}
	hint := "the config file holds flag defaults (flag names without --) and profiles:"
	if s := project.Closest(unknown[0], names); s != "" {
		hint = fmt.Sprintf("did you mean %q? ", s) + hint
	}
	return usageError(hint, "config file %s: unknown key %s", path, strings.Join(unknown, ", "))
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

// silenceKlog stops client-go's klog lines ("Couldn't get current server API
// group list", UnhandledError) from reaching the terminal: every failure
// they describe comes back as an error spirepod reports once, in its words.
var silenceKlog = sync.OnceFunc(func() {
	fs := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(fs)
	_ = fs.Set("logtostderr", "false")
	_ = fs.Set("alsologtostderr", "false")
	_ = fs.Set("stderrthreshold", "FATAL")
	klog.SetOutput(io.Discard)
	klog.LogToStderr(false)
})
