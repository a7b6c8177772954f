package main

import (
	"io"
	"os"

	"golang.org/x/term"
)

// IOStreams are the process's standard streams and what is known about them.
// stdout carries results; stderr carries progress, warnings and hints.
type IOStreams struct {
	In     io.Reader
	Out    io.Writer
	ErrOut io.Writer
	// InTTY, OutTTY and ErrTTY say whether each stream is a terminal.
	InTTY, OutTTY, ErrTTY bool
	// Color is decided once per run from the TTY, NO_COLOR, CLICOLOR,
	// CLICOLOR_FORCE and --no-color.
	Color bool
}

func systemStreams() *IOStreams {
	return &IOStreams{
		In: os.Stdin, Out: os.Stdout, ErrOut: os.Stderr,
		InTTY:  term.IsTerminal(int(os.Stdin.Fd())),
		OutTTY: term.IsTerminal(int(os.Stdout.Fd())),
		ErrTTY: term.IsTerminal(int(os.Stderr.Fd())),
	}
}

// decideColor follows the NO_COLOR / CLICOLOR conventions.
func decideColor(s *IOStreams, getenv func(string) string, noColorFlag bool) bool {
	switch {
	case noColorFlag, getenv("NO_COLOR") != "":
		return false
	case getenv("CLICOLOR_FORCE") != "" && getenv("CLICOLOR_FORCE") != "0":
		return true
	case getenv("CLICOLOR") == "0":
		return false
	}
	return s.OutTTY
}

func (s *IOStreams) colorize(code, text string) string {
	if !s.Color {
		return text
	}
	return "\x1b[" + code + "m" + text + "\x1b[0m"
}

func (s *IOStreams) green(t string) string  { return s.colorize("32", t) }
func (s *IOStreams) yellow(t string) string { return s.colorize("33", t) }
func (s *IOStreams) red(t string) string    { return s.colorize("31", t) }
func (s *IOStreams) bold(t string) string   { return s.colorize("1", t) }
