package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/owenrumney/go-sarif/v3/pkg/report/v210/sarif"
	"github.com/spf13/cobra"

	"github.com/spirepod/spirepod/internal/city"
	"github.com/spirepod/spirepod/internal/project"
	"github.com/spirepod/spirepod/internal/registration"
)

// readmeURL is where every rule code has its anchor (#spd101).
const readmeURL = "https://github.com/spirepod/spirepod/blob/main/README.md"

type cityCheckOptions struct {
	f *Factory

	Dir           string
	Base          string
	FailOn        string
	ExpiryDays    int
	Env           string
	TrustDomain   string
	TeamPath      string
	TrustListMode string
	TrustListPath string
	ServerConfigs []string
	Classless     bool
	// AllowFederation lists trust domains entries may federate with.
	AllowFederation []string
	MaxCAsPerTeam   int
	// BuildCache keeps team-folder builds by content ("" keeps none).
	BuildCache string
}

func newCmdCityCheck(f *Factory, runF func(*cityCheckOptions) error) *cobra.Command {
	opts := &cityCheckOptions{f: f}
	cmd := &cobra.Command{
		Use:   "check [CITY_DIR]",
		Short: "Judge the city repository (or a PR's change, --base) with the platform's rules",
		Long: `Read a city checkout and judge every team folder's registration entries (SpiffeID,
ClusterStaticEntry, entry-json), the x509pop trust list and the SPIRE server config, with rules
that cross folders: one team registering another's node alias, parenting workloads to it or
pinning its CA; an agent common name claimed twice; trust-list CAs that are not CAs, expire or
have no known owner; a server agent_path_template without .Fingerprint. Every rule has a stable
code (SPD101…), documented with its fix at README.md#spd101 and so on (-o sarif carries the
whole rule table).

CITY_DIR (default: the working directory) inside a git checkout is read at its commit (HEAD) with
go-git: uncommitted edits are not judged. Paths are relative to the repository's root. A
directory outside git is read from disk.

--base REF (a branch, origin/main, a tag or a commit) judges the whole city but reports only the
findings that involve what changed since REF: a file the change touches, or an alias, CA or owner
it adds or removes (a duplicate alias is reported when either of its files changed).

The profile of --env gives the trust domain, the team folder pattern and the trust list; the
flags override it. Trust-list owners come from the "# spirepod: team=… namespace=… sha1=…"
comment above each PEM block (pr trust-ca writes it), the file name in directory mode, or the
git history of the trust list.

Output: text (rules grouped, √ ‼ ×, one line per finding "file:line: CODE message", a hint),
-o json {city, commit, base, baseCommit, changed, summary, findings: [{code, severity, file,
line, message}], counts, failOn, failed}, or -o sarif (SARIF 2.1.0, for code scanning). With
GITHUB_ACTIONS=true, every finding is also a workflow annotation (::error file=…,line=…::): on
stdout with text output, on stderr with json and sarif so that stdout stays one document.

Exit codes: 0 no finding at or above --fail-on, 1 findings at or above it (in every output
format), 2 usage (a bad flag, CITY_DIR or --base).`,
		Example: `  spirepod city check
  spirepod city check ~/src/city --base origin/main
  spirepod city check --base main -o sarif > city-check.sarif
  spirepod city check --env lab --trust-list-mode directory --trust-list-path ns/spire/x509pop`,
		Args:        cobra.MaximumNArgs(1),
		Annotations: map[string]string{extraOutputs: "sarif"},
	}
	cmd.RunE = func(c *cobra.Command, args []string) error {
		if len(args) == 1 {
			opts.Dir = args[0]
		}
		return runE(opts, opts.validate, runF, cityCheckRun)(c, args)
	}
	fl := cmd.Flags()
	fl.StringVar(&opts.Base, "base", "", "report only findings that involve the change since this revision (branch, origin/main, tag, commit)")
	fl.StringVar(&opts.FailOn, "fail-on", string(registration.SeverityError), "exit 1 when a finding is at least this severe: error, warning or note")
	fl.IntVar(&opts.ExpiryDays, "expiry-days", city.DefaultExpiryDays, "warn about trust-list CAs that expire within this many days")
	fl.StringVar(&opts.Env, "env", project.DefaultEnvironment, "environment profile: dev, lab, or one from the config file")
	fl.StringVar(&opts.TrustDomain, "trust-domain", "", "trust domain (default: the profile's)")
	fl.StringVar(&opts.TeamPath, "team-path", "", "team folder pattern with {namespace} and/or {team} (default: the profile's)")
	fl.StringVar(&opts.TrustListMode, "trust-list-mode", "", "trust list mode: bundle or directory (default: the profile's)")
	fl.StringVar(&opts.TrustListPath, "trust-list-path", "", "trust list bundle file or directory (default: the profile's)")
	fl.StringSliceVar(&opts.ServerConfigs, "server-config", nil, "glob of SPIRE server configs (HCL, or YAML holding one; ** for any directories); default: any .conf/.hcl mentioning NodeAttestor \"x509pop\", and such YAML outside team folders under a path containing \"spire\"")
	fl.BoolVar(&opts.Classless, "classless", false, "the spire-controller-manager watches ClusterStaticEntry objects without className")
	fl.StringSliceVar(&opts.AllowFederation, "allow-federation", nil, "trust domains registration entries may federate with (default: none)")
	fl.IntVar(&opts.MaxCAsPerTeam, "max-cas-per-team", city.DefaultMaxCAsPerTeam, "most trust-list CAs one team may own")
	fl.StringVar(&opts.BuildCache, "build-cache", defaultBuildCache(f.Getenv), "directory that keeps team-folder builds by content, so unchanged folders are not built again; \"\" keeps none")
	return cmd
}

// executableIdentity names this build of spirepod for the build cache:
// its version, and the executable's path, size and modification time (a
// rebuilt binary, whose rules may differ, never reads another's entries).
func executableIdentity() string {
	id := currentVersion()
	if exe, err := os.Executable(); err == nil {
		if st, err := os.Stat(exe); err == nil {
			id += fmt.Sprintf(" %s %d %d", exe, st.Size(), st.ModTime().UnixNano())
		}
	}
	return id
}

// defaultBuildCache is $XDG_CACHE_HOME/spirepod/city-build (or ~/.cache/…).
func defaultBuildCache(getenv func(string) string) string {
	base := getenv("XDG_CACHE_HOME")
	if base == "" {
		home := getenv("HOME")
		if home == "" {
			return ""
		}
		base = filepath.Join(home, ".cache")
	}
	return filepath.Join(base, "spirepod", "city-build")
}

func (o *cityCheckOptions) validate() error {
	if _, ok := severityRank[registration.Severity(o.FailOn)]; !ok {
		return usageError("use --fail-on error, warning or note", "--fail-on must be error, warning or note, got %q", o.FailOn)
	}
	if o.MaxCAsPerTeam < 1 || o.MaxCAsPerTeam > 100 {
		return usageError("a rotation needs 2; for example --max-cas-per-team 3", "--max-cas-per-team must be between 1 and 100, got %d", o.MaxCAsPerTeam)
	}
	if o.ExpiryDays < 1 || o.ExpiryDays > 3650 {
		return usageError("for example --expiry-days 30", "--expiry-days must be between 1 and 3650, got %d", o.ExpiryDays)
	}
	switch o.TrustListMode {
	case "", project.TrustListBundle, project.TrustListDirectory:
	default:
		return usageError("use --trust-list-mode bundle or directory", "--trust-list-mode must be bundle or directory, got %q", o.TrustListMode)
	}
	return nil
}

var severityRank = map[registration.Severity]int{
	registration.SeverityNote: 1, registration.SeverityWarning: 2, registration.SeverityError: 3,
}

// config is the profile of --env with the flags laid over it.
func (o *cityCheckOptions) config() (city.Config, error) {
	prof, err := o.f.Profiles().Get(o.Env)
	if err != nil {
		return city.Config{}, usageError("pass --env dev, lab or a profile of the config file", "--env: %v", err)
	}
	cfg := city.Config{TrustDomain: prof.TrustDomain, TeamPath: prof.TeamPath, TrustList: prof.TrustList,
		ServerConfigs: o.ServerConfigs, ExpiryDays: o.ExpiryDays, Classless: o.Classless, Now: o.f.Now(),
		AllowFederation: o.AllowFederation, MaxCAsPerTeam: o.MaxCAsPerTeam, BuildCache: o.BuildCache, CacheSalt: executableIdentity()}
	set := func(dst *string, v string) {
		if v != "" {
			*dst = v
		}
	}
	set(&cfg.TrustDomain, o.TrustDomain)
	set(&cfg.TeamPath, o.TeamPath)
	set(&cfg.TrustList.Mode, o.TrustListMode)
	set(&cfg.TrustList.Path, o.TrustListPath)
	if err := cfg.Validate(); err != nil {
		return city.Config{}, usageError("set it with --team-path, --trust-list-mode, --trust-list-path or --server-config, or in the profile", "%v", err)
	}
	return cfg, nil
}

// cityCheckOutput is the -o json shape.
type cityCheckOutput struct {
	City       string                 `json:"city"`
	Commit     string                 `json:"commit,omitempty"`
	Base       string                 `json:"base,omitempty"`
	BaseCommit string                 `json:"baseCommit,omitempty"`
	Changed    []string               `json:"changed,omitempty"`
	Summary    city.Summary           `json:"summary"`
	Findings   []registration.Finding `json:"findings"`
	Counts     map[string]int         `json:"counts"`
	FailOn     string                 `json:"failOn"`
	Failed     bool                   `json:"failed"`
}

func cityCheckRun(ctx context.Context, o *cityCheckOptions) error {
	f := o.f
	cfg, err := o.config()
	if err != nil {
		return err
	}
	dir := o.Dir
	if dir == "" {
		dir = "."
	}
	abs, err := f.Abs(dir)
	if err != nil {
		return err
	}
	if st, err := os.Stat(abs); err != nil || !st.IsDir() {
		return usageError("pass the city checkout's directory", "CITY_DIR %s is not a directory", dir)
	}
	out := cityCheckOutput{City: abs, FailOn: o.FailOn, Counts: map[string]int{}}

	c, done, err := o.load(ctx, abs, cfg, &out)
	if err != nil {
		return err
	}
	defer done()
	out.Summary = c.Summary()
	if out.Summary.Folders == 0 && !c.TrustListPresent() {
		return usageError(fmt.Sprintf("run it in the city checkout, or point --env (profile %q: team folders %s, trust list %s) or --team-path/--trust-list-path at the city's layout", o.Env, cfg.TeamPath, cfg.TrustList.Path),
			"%s holds no team folder and no trust list: it does not look like the city repository", out.City)
	}
	out.Findings = c.Check()
	limit := severityRank[registration.Severity(o.FailOn)]
	for _, fd := range out.Findings {
		out.Counts[string(fd.Severity)]++
		if severityRank[fd.Severity] >= limit {
			out.Failed = true
		}
	}

	if err := renderCityCheck(f, &out); err != nil {
		return err
	}
	if out.Failed {
		return &silentError{code: exitFailure}
	}
	return nil
}

// load reads the city at abs: its git HEAD (or, with --base, the change
// from the base to HEAD), or the files on disk when abs is not in a git
// repository with commits; out gets the commits and the changed paths.
// done closes the repository once the city has been judged.
func (o *cityCheckOptions) load(ctx context.Context, abs string, cfg city.Config, out *cityCheckOutput) (c *city.City, done func(), err error) {
	done = func() {}
	head, gerr := city.OpenGit(abs, "")
	switch {
	case gerr == nil:
		done = func() { head.Close() }
		if root := head.Root(); root != "" {
			out.City = root
		}
		out.Commit = head.Commit.String()
		if o.Base == "" {
			c, err = city.Load(ctx, head, cfg)
			break
		}
		base, berr := head.At(o.Base)
		if berr != nil {
			done()
			return nil, nil, usageError("fetch it first (git fetch origin main); in GitHub Actions check out with fetch-depth: 0",
				"--base %s: not a revision of %s", o.Base, out.City)
		}
		out.Base, out.BaseCommit = o.Base, base.Commit.String()
		var ch *city.Change
		c, ch, err = city.LoadChange(ctx, base, head, cfg)
		if ch != nil {
			out.Changed = ch.Paths
			if out.Changed == nil {
				out.Changed = []string{}
			}
		}
	case !errors.Is(gerr, city.ErrNoRepository) && !errors.Is(gerr, city.ErrRevision):
		return nil, nil, failure(gerr, "check the repository with `git fsck`")
	case o.Base != "":
		return nil, nil, usageError("run it in a git checkout of the city repository (with at least one commit)", "--base needs a git repository with commits: %v", gerr)
	default: // not in git, or no commit yet: the files on disk
		c, err = city.Load(ctx, city.DirTree(abs), cfg)
	}
	if err != nil {
		done()
		return nil, nil, failure(fmt.Errorf("city check: %w", err), "")
	}
	return c, done, nil
}

// renderCityCheck prints out as text, JSON or SARIF, and in GitHub Actions
// the findings as annotations too (on stderr when stdout is a document).
func renderCityCheck(f *Factory, out *cityCheckOutput) error {
	var err error
	var annotations io.Writer
	if f.Getenv("GITHUB_ACTIONS") == "true" {
		annotations = f.IO.Out
		if f.Output != "text" {
			annotations = f.IO.ErrOut
		}
	}
	switch f.Output {
	case "json":
		err = writeJSON(f.IO.Out, out)
	case "sarif":
		err = writeSARIF(f.IO.Out, out.Findings)
	default:
		printCityCheck(f.IO, f.IO.Out, out)
	}
	if err != nil {
		return err
	}
	if annotations != nil {
		writeAnnotations(annotations, out.Findings)
	}
	return nil
}

// printCityCheck renders the rules group by group like `status`: one line
// per rule marked √ ‼ ×, its findings under it, and the fix as a hint.
func printCityCheck(s *IOStreams, w io.Writer, out *cityCheckOutput) {
	where := out.City
	if out.Commit != "" {
		where += " at " + out.Commit[:12]
	}
	fmt.Fprintf(w, "city %s\n", where)
	sum := out.Summary
	fmt.Fprintf(w, "%s, %s (%s, %s), %s, %s\n",
		project.Count(sum.Folders, "team folder"), project.Count(sum.RegistrationFiles, "registration file"),
		project.Count(sum.Entries, "entry"), project.Count(sum.Aliases, "node alias"),
		project.Count(sum.TrustListCAs, "trust-list CA"), project.Count(sum.ServerConfigs, "server config"))
	if out.Base != "" {
		fmt.Fprintf(w, "changes since %s (%s): %d files; only findings that involve them are reported",
			out.Base, out.BaseCommit[:12], len(out.Changed))
		if sum.ChangeOnly {
			fmt.Fprintf(w, " (the counts above are of the files that can take part in them)")
		}
		fmt.Fprintln(w)
	}
	byCode := map[string][]registration.Finding{}
	for _, fd := range out.Findings {
		byCode[fd.Code] = append(byCode[fd.Code], fd)
	}
	for _, g := range city.Groups() {
		fmt.Fprintln(w)
		fmt.Fprintln(w, s.bold(g))
		fmt.Fprintln(w, s.bold(dashes(len(g))))
		for _, r := range city.Rules() {
			if r.Group != g {
				continue
			}
			fs := byCode[r.Code]
			worst := 0
			for _, fd := range fs {
				worst = max(worst, severityRank[fd.Severity])
			}
			mark := s.green("√") // only a rule without findings
			switch worst {
			case 3:
				mark = s.red("×")
			case 2:
				mark = s.yellow("‼")
			case 1:
				mark = "ℹ"
			}
			fmt.Fprintf(w, "%s %s %s\n", mark, r.Code, r.Title)
			for _, fd := range fs {
				fmt.Fprintf(w, "    %s\n", findingLine(fd))
			}
			if worst >= 2 {
				fmt.Fprintf(w, "    hint: %s (%s%s)\n", r.Fix, "README.md", r.Anchor())
			}
		}
	}
	fmt.Fprintln(w)
	counts := fmt.Sprintf("%d errors, %d warnings, %d notes", out.Counts["error"], out.Counts["warning"], out.Counts["note"])
	if out.Failed {
		fmt.Fprintf(w, "%s (%s; --fail-on %s)\n", s.red("City check results are ×"), counts, out.FailOn)
		fmt.Fprintln(w, "hint: each code is explained, with its fix, at README.md#<code> (e.g. README.md#spd101)")
		return
	}
	fmt.Fprintf(w, "%s (%s; --fail-on %s)\n", s.green("City check results are √"), counts, out.FailOn)
}

// findingLine is "file:line: CODE message".
func findingLine(fd registration.Finding) string {
	where := fd.File
	if fd.Line > 0 {
		where += ":" + strconv.Itoa(fd.Line)
	}
	if where != "" {
		where += ": "
	}
	return where + fd.Code + " " + fd.Message
}

// writeAnnotations prints GitHub Actions workflow commands, one per finding.
func writeAnnotations(w io.Writer, fs []registration.Finding) {
	for _, fd := range fs {
		cmd := map[registration.Severity]string{registration.SeverityError: "error", registration.SeverityWarning: "warning"}[fd.Severity]
		if cmd == "" {
			cmd = "notice"
		}
		var props []string
		if fd.File != "" {
			props = append(props, "file="+escapeProperty(fd.File))
			if fd.Line > 0 {
				props = append(props, "line="+strconv.Itoa(fd.Line))
			}
		}
		props = append(props, "title="+escapeProperty(fd.Code))
		fmt.Fprintf(w, "::%s %s::%s\n", cmd, strings.Join(props, ","), escapeData(fd.Code+" "+fd.Message))
	}
}

// escapeData and escapeProperty follow the runner's workflow-command
// escaping (actions/toolkit command.ts).
func escapeData(s string) string {
	return strings.NewReplacer("%", "%25", "\r", "%0D", "\n", "%0A").Replace(s)
}

func escapeProperty(s string) string {
	return strings.NewReplacer("%", "%25", "\r", "%0D", "\n", "%0A", ":", "%3A", ",", "%2C").Replace(s)
}

// writeSARIF writes one SARIF 2.1.0 run: every rule (with its README
// anchor and default level) and every finding as a result.
func writeSARIF(w io.Writer, fs []registration.Finding) error {
	rep := sarif.NewReport()
	run := sarif.NewRunWithInformationURI("spirepod", readmeURL)
	run.Tool.Driver.WithVersion(currentVersion()).WithSemanticVersion(strings.TrimPrefix(currentVersion(), "v"))
	for _, r := range city.Rules() {
		run.AddRule(r.Code).
			WithName(ruleName(r.Title)).
			WithDescription(r.Title).
			WithFullDescription(sarif.NewMultiformatMessageString().WithText(r.Why)).
			WithHelp(sarif.NewMultiformatMessageString().WithText(r.Fix).WithMarkdown(r.Fix + "\n\nSee [" + r.Code + "](" + readmeURL + r.Anchor() + ").")).
			WithHelpURI(readmeURL + r.Anchor()).
			WithDefaultConfiguration(sarif.NewReportingConfiguration().WithLevel(string(r.Severity))).
			WithProperties(sarif.NewPropertyBag().Add("group", r.Group))
	}
	for _, fd := range fs {
		res := run.CreateResultForRule(fd.Code).
			WithLevel(string(fd.Severity)).
			WithMessage(sarif.NewTextMessage(fd.Message))
		if fd.File != "" {
			loc := sarif.NewPhysicalLocation().WithArtifactLocation(sarif.NewSimpleArtifactLocation(fd.File))
			if fd.Line > 0 {
				loc.WithRegion(sarif.NewRegion().WithStartLine(fd.Line))
			}
			res.AddLocation(sarif.NewLocationWithPhysicalLocation(loc))
		}
	}
	rep.AddRun(run)
	return rep.PrettyWrite(w)
}

// ruleName turns a rule title into SARIF's PascalCase rule name.
func ruleName(title string) string {
	var b strings.Builder
	for _, word := range strings.FieldsFunc(title, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9')
	}) {
		b.WriteString(strings.ToUpper(word[:1]) + word[1:])
	}
	return b.String()
}
