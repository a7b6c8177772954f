package main

import (
	"crypto/rand"
	"errors"
	"io"
	"net/http"
	"os"
	"time"

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

	// Root flags.
	ConfigPath string
	Output     string
	NoColor    bool
}

func newFactory(streams *IOStreams, getenv func(string) string) *Factory {
	return &Factory{
		IO:         streams,
		Getenv:     getenv,
		Getwd:      os.Getwd,
		Now:        time.Now,
		Rand:       rand.Reader,
		HTTPClient: func() *http.Client { return &http.Client{Timeout: 60 * time.Second} },
		ConfigPath: defaultConfigPath(getenv),
		Output:     "text",
	}
}

// JSON reports whether -o json was asked for.
func (f *Factory) JSON() bool { return f.Output == "json" }

// Profiles returns the built-in environment profiles merged with the user config's.
func (f *Factory) Profiles() (project.Profiles, error) {
	ps, err := project.LoadProfiles(f.ConfigPath)
	if err != nil {
		return nil, usageError("fix the profiles: section of the config file", "%v", err)
	}
	return ps, nil
}

// Project finds spirepod.yaml from dir (or the working directory) upward.
func (f *Factory) Project(dir string) (*project.Project, error) {
	if dir == "" {
		wd, err := f.Getwd()
		if err != nil {
			return nil, err
		}
		dir = wd
	}
	p, err := project.Find(dir)
	var nf *project.NotFoundError
	if errors.As(err, &nf) {
		return nil, usageError("run `spirepod init` first, or cd into the scaffold (or pass --dir)", "%v", err)
	}
	if err != nil {
		return nil, usageError("fix spirepod.yaml or re-create it with `spirepod init --force`", "%v", err)
	}
	return p, nil
}
