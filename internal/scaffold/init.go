package scaffold

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/spirepod/spirepod/internal/project"
)

// InitOptions say what scaffold Init makes, from what, and where. Zero
// values take the defaults `spirepod init` documents for its flags.
type InitOptions struct {
	// Dir is the scaffold directory, an absolute path (the CLI resolves the
	// user's against the working directory). It need not exist.
	Dir string

	// The team's values (spirepod.yaml).
	Team      string
	Namespace string
	// Env names the environment profile (default project.DefaultEnvironment).
	Env string
	// Name is the StatefulSet's (default TemplateName); Replicas its pods (default 1).
	Name           string
	Replicas       int
	ServiceAccount string           // default TemplateServiceAccount
	Naming         string           // default project.DefaultNaming
	Issuer         string           // default project.DefaultIssuerScope
	Upstream       project.Upstream // zero fields take project.DefaultUpstream's

	// Profiles are the environments Env is looked up in; nil means the
	// built-in ones (project.MergeProfiles(nil)).
	Profiles project.Profiles
	// ServerCAFile is an absolute path to a PEM file with the SPIRE server's
	// CA for the bundle ConfigMap. "" keeps the CA the scaffold already has
	// (for the same environment), or the template's empty bundle.
	ServerCAFile string

	// Template is spirepod's own template tree (the embedded one); required.
	Template fs.FS
	// From is an absolute path to a local city checkout whose committed
	// CityTemplatePath is the template instead ("" uses Template alone).
	From string

	// Force overwrites files that differ from what would be written.
	Force bool
	// DryRun renders and plans; it writes nothing.
	DryRun bool
	// CheckRotation, when set, runs before a plan that changes files (dry
	// run too); an error refuses it, returned as a *RefusedError: the CLI
	// refuses re-rendering a scaffold whose team CA rotation is unfinished.
	CheckRotation func(*project.Project) error
	// Event receives progress (nil: none).
	Event func(InitEvent)
}

// InitStage is a point Init has reached.
type InitStage string

const (
	// InitRendered: every file is rendered in memory.
	InitRendered InitStage = "rendered"
	// InitPlanned: the files are compared with the directory.
	InitPlanned InitStage = "planned"
	// InitWritten: the plan is on disk (not sent for a dry run, a refusal
	// or a plan without changes).
	InitWritten InitStage = "written"
)

// InitEvent is Init's progress.
type InitEvent struct {
	Stage InitStage
	// Source is where the template came from ("embedded" or "<dir>@<commit>").
	Source string
	// Files is how many files were rendered.
	Files int
	// Plan is the comparison with the directory (from InitPlanned on).
	Plan *Plan
}

// InitResult is what Init did (or, for a dry run, would do).
type InitResult struct {
	Dir     string
	Source  string
	DryRun  bool
	Changed bool
	Plan    *Plan
	Project *project.Project
}

// Init inputs at fault, as InitError.Input names them. The CLI maps each to
// its flag.
const (
	InputEnv      = "env"       // Env is not a known profile
	InputServerCA = "server-ca" // ServerCAFile cannot be read, or is not a CA bundle
	InputFrom     = "from"      // From is not a city checkout with the template at HEAD
	InputDir      = "dir"       // Dir exists and is not a directory
	InputProject  = "project"   // the values and profile make an invalid spirepod.yaml
)

// ErrNotDirectory: the scaffold directory is a file.
var ErrNotDirectory = errors.New("exists and is not a directory")

// InitError is an input of Init that cannot be used; nothing was written.
type InitError struct {
	// Input is one of the Input* constants.
	Input string
	// Path is the file at fault, when there is one.
	Path string
	// Err is why. For InputServerCA it wraps an *fs.PathError when the
	// file cannot be read, and is the parse error otherwise.
	Err error
}

func (e *InitError) Error() string {
	if e.Path != "" {
		return fmt.Sprintf("%s %s: %v", e.Input, e.Path, e.Err)
	}
	return fmt.Sprintf("%s: %v", e.Input, e.Err)
}

func (e *InitError) Unwrap() error { return e.Err }

// Init renders the scaffold for a team in memory, compares it with Dir and
// writes it, all or nothing (see Plan.Write). Files that exist with other
// content are a *ConflictError unless Force; an unchanged scaffold is
// written as nothing. A re-render keeps the server CA the scaffold has
// unless ServerCAFile replaces it.
//
// Errors: *InitError for an input that cannot be used, *RenderError (the
// template does not render for these values), *RefusedError
// (CheckRotation's), *ConflictError (with the diff) when Force is needed, and
// file system errors of planning and writing (wrapping *fs.PathError).
func Init(ctx context.Context, o InitOptions) (*InitResult, error) {
	o.defaults()
	for _, p := range []string{o.Dir, o.From, o.ServerCAFile} {
		if p != "" && !filepath.IsAbs(p) {
			return nil, fmt.Errorf("scaffold init: %q is not an absolute path", p)
		}
	}
	if o.Dir == "" || o.Template == nil {
		return nil, errors.New("scaffold init: Dir and Template are required")
	}
	prof, err := o.Profiles.Get(o.Env)
	if err != nil {
		return nil, &InitError{Input: InputEnv, Err: err}
	}
	var serverCA []byte
	if o.ServerCAFile != "" {
		certs, err := ReadServerCA(o.ServerCAFile)
		if err != nil {
			return nil, &InitError{Input: InputServerCA, Path: o.ServerCAFile, Err: err}
		}
		serverCA = NormalizeBundle(certs)
	}
	src := &Source{FS: o.Template, Origin: "embedded"}
	if o.From != "" {
		if src, err = FromCity(o.From); err != nil {
			return nil, &InitError{Input: InputFrom, Path: o.From, Err: err}
		}
	}
	if st, err := os.Stat(o.Dir); err == nil && !st.IsDir() {
		return nil, &InitError{Input: InputDir, Path: o.Dir, Err: ErrNotDirectory}
	}
	p := o.project(prof)
	if err := p.Validate(); err != nil {
		return nil, &InitError{Input: InputProject, Err: err}
	}
	if serverCA == nil {
		// Re-rendering keeps the server CA already in the scaffold (for the
		// same environment): only ServerCAFile replaces it.
		if data, err := os.ReadFile(filepath.Join(o.Dir, BundleFile(p.Environment))); err == nil {
			if certs, err := BundleCerts(data); err == nil && len(certs) > 0 {
				serverCA = NormalizeBundle(certs)
			}
		}
	}
	files, err := Render(Options{Source: src.FS, Base: o.Template, Project: p, ServerCA: serverCA})
	if err != nil {
		return nil, &RenderError{Source: src.Origin, Err: err}
	}
	o.emit(InitEvent{Stage: InitRendered, Source: src.Origin, Files: len(files)})
	plan, err := PlanWrite(o.Dir, files)
	if err != nil {
		return nil, err
	}
	o.emit(InitEvent{Stage: InitPlanned, Source: src.Origin, Files: len(files), Plan: plan})
	if plan.Changed() && o.CheckRotation != nil {
		// A rotation trusts and issues from CA files and names this scaffold
		// renders (namespace, issuer, paths): only `pki rotate` moves them.
		if err := o.CheckRotation(p); err != nil {
			return nil, &RefusedError{Err: err}
		}
	}
	res := &InitResult{Dir: o.Dir, Source: src.Origin, DryRun: o.DryRun, Changed: plan.Changed(), Plan: plan, Project: p}
	if o.DryRun {
		return res, nil
	}
	if err := plan.Write(ctx, o.Force); err != nil {
		return nil, err
	}
	if plan.Changed() {
		o.emit(InitEvent{Stage: InitWritten, Source: src.Origin, Files: len(files), Plan: plan})
	}
	return res, nil
}

// RenderError: the template does not render (a --from template spirepod
// cannot read, say).
type RenderError struct {
	Source string
	Err    error
}

func (e *RenderError) Error() string {
	return fmt.Sprintf("render scaffold from %s: %v", e.Source, e.Err)
}
func (e *RenderError) Unwrap() error { return e.Err }

// RefusedError is a refusal by the caller's CheckRotation; nothing was
// written. Its message is the refusal's own.
type RefusedError struct{ Err error }

func (e *RefusedError) Error() string { return e.Err.Error() }
func (e *RefusedError) Unwrap() error { return e.Err }

func (o *InitOptions) emit(e InitEvent) {
	if o.Event != nil {
		o.Event(e)
	}
}

func (o *InitOptions) defaults() {
	if o.Env == "" {
		o.Env = project.DefaultEnvironment
	}
	if o.Name == "" {
		o.Name = TemplateName
	}
	if o.Replicas == 0 {
		o.Replicas = 1
	}
	if o.ServiceAccount == "" {
		o.ServiceAccount = TemplateServiceAccount
	}
	if o.Naming == "" {
		o.Naming = project.DefaultNaming
	}
	if o.Issuer == "" {
		o.Issuer = project.DefaultIssuerScope
	}
	if o.Profiles == nil {
		o.Profiles = project.MergeProfiles(nil)
	}
}

// project turns the options and the environment profile into the project
// file.
func (o *InitOptions) project(prof project.Profile) *project.Project {
	return &project.Project{
		APIVersion:     project.APIVersion,
		Kind:           project.Kind,
		Team:           o.Team,
		Namespace:      o.Namespace,
		Environment:    o.Env,
		StatefulSet:    o.Name,
		Replicas:       o.Replicas,
		Naming:         o.Naming,
		IssuerScope:    o.Issuer,
		ServiceAccount: o.ServiceAccount,
		TrustDomain:    prof.TrustDomain,
		SpireServer:    prof.SpireServer,
		City: project.City{
			Repo:       prof.CityRepo,
			BaseBranch: prof.BaseBranch,
			Host:       prof.GitHubHost,
			TeamPath:   prof.TeamPathFor(o.Team, o.Namespace),
			TrustList:  prof.TrustList,
		},
		Registration: project.Registration{
			Format:    prof.RegistrationFormat,
			EnvoyUID:  project.DefaultEnvoyUID,
			EnvoyGID:  project.DefaultEnvoyGID,
			ClassName: prof.ClassName,
		},
		Images:       prof.PodImages(),
		SpireVersion: prof.SpireVersion,
		Agent:        project.DefaultAgent(),
		Upstream:     o.upstream(prof.TrustDomain),
		Paths:        project.DefaultPaths,
		Dir:          o.Dir,
	}
}

// upstream is the options' upstream over the default one.
func (o *InitOptions) upstream(td string) project.Upstream {
	u := project.DefaultUpstream(td)
	if o.Upstream.Host != "" {
		u.Host = o.Upstream.Host
	}
	if o.Upstream.Port != 0 {
		u.Port = o.Upstream.Port
	}
	u.SNI = o.Upstream.SNI
	if o.Upstream.SpiffeID != "" {
		u.SpiffeID = o.Upstream.SpiffeID
	}
	return u
}
