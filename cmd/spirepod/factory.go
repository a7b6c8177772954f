package main

import (
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/spirepod/spirepod/internal/apply"
	"github.com/spirepod/spirepod/internal/project"
)

// Factory builds what commands depend on, once per run. Tests build their own.
type Factory struct {
	IO     *IOStreams
	Getenv func(string) string
	Getwd  func() (string, error)
	Now    func() time.Time
	Rand   io.Reader
	// HTTPClient is the client every outgoing request (GitHub) uses.
	HTTPClient func() *http.Client
	// GHToken asks the gh CLI for a GitHub token (the last source tried).
	GHToken func(ctx context.Context, host string) (string, error)
	// ImageCheck is how apply resolves images (the user's docker keychain).
	ImageCheck apply.ImageCheckOptions
	// Kube resolves --kubeconfig/--context into clients, as kubectl's
	// Complete(f) does; tests may build their own targets.
	Kube func(k *kubeFlags) (*kubeTarget, error)
	// Executable and LookPath say how this binary is run, for the next
	// steps a command prints (selfCommand).
	Executable func() (string, error)
	LookPath   func(string) (string, error)

	// userProfiles is the config file's profiles: section, read once by
	// applyConfigPrecedence.
	userProfiles map[string]project.Profile

	// interrupt is run's context: cancelled by SIGINT or SIGTERM. Clients
	// bind every request to it, including those client-go makes without a
	// context (discovery behind the RESTMapper).
	interrupt context.Context
	// running is stdout of the command running now, counting what it wrote.
	running *countingWriter

	// Root flags.
	ConfigPath string
	Output     string
	NoColor    bool
}

func newFactory(streams *IOStreams, getenv func(string) string) *Factory {
	f := &Factory{
		IO:         streams,
		Getenv:     getenv,
		Getwd:      os.Getwd,
		Now:        time.Now,
		Rand:       rand.Reader,
		HTTPClient: func() *http.Client { return &http.Client{Timeout: 60 * time.Second} },
		GHToken:    ghAuthToken,
		Executable: os.Executable,
		LookPath:   exec.LookPath,
		ConfigPath: defaultConfigPath(getenv),
		Output:     "text",
		interrupt:  context.Background(),
	}
	f.Kube = func(k *kubeFlags) (*kubeTarget, error) { return k.Target(f.interrupt) }
	return f
}

// JSON reports whether -o json was asked for.
func (f *Factory) JSON() bool { return f.Output == "json" }

// Profiles returns the built-in environment profiles merged with the user config's.
func (f *Factory) Profiles() project.Profiles { return project.MergeProfiles(f.userProfiles) }

// Abs resolves a path the user gave against the working directory (Getwd,
// which tests inject), never the process's.
func (f *Factory) Abs(path string) (string, error) {
	if filepath.IsAbs(path) {
		return filepath.Clean(path), nil
	}
	wd, err := f.Getwd()
	if err != nil {
		return "", err
	}
	return filepath.Join(wd, path), nil
}

// ReadFile reads a file the user named, relative to the working directory.
func (f *Factory) ReadFile(path string) ([]byte, error) {
	abs, err := f.Abs(path)
	if err != nil {
		return nil, err
	}
	return os.ReadFile(abs)
}

// Project finds spirepod.yaml from dir (or the working directory) upward.
func (f *Factory) Project(dir string) (*project.Project, error) {
	dir, err := f.Abs(dir)
	if err != nil {
		return nil, err
	}
	p, err := project.Find(dir)
	var nf *project.NotFoundError
	if errors.As(err, &nf) {
		return nil, usageError("run `spirepod init` first, or cd into the scaffold (or pass --dir)", "%v", err)
	}
	if err != nil {
		return nil, usageError("fix spirepod.yaml (to re-render the scaffold instead, run `spirepod init <dir> --force` with its flags from the directory above it)", "%v", err)
	}
	return p, nil
}
