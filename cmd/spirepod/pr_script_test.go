package main

import (
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/spirepod/spirepod/internal/fakes/githubfake"
)

// fakes holds each script's fake GitHub, started in the test process; the
// spirepod subprocess reaches it through SPIREPOD_GITHUB_API_URL.
var fakes sync.Map // *testscript.TestScript -> *githubfake.Server

const fakeToken = "script-token"

// cmdFakeGitHub drives a fake GitHub from a script:
//
//	fakegithub start                        start it; sets SPIREPOD_GITHUB_API_URL and GH_TOKEN
//	fakegithub repo OWNER/NAME push|nopush [PATH=FILE...]   a repository whose main holds FILEs
//	fakegithub reset                        zero the request counter
//	fakegithub requests-max N               fail if more than N requests were served since reset
//	fakegithub changed REPO FROM TO         print the paths that differ between two refs
//	fakegithub cat REPO REF PATH            print a file
//	fakegithub pulls REPO                   print "#N state head title" per pull request
//	fakegithub merge REPO N                 merge pull request N (a real merge commit)
//	fakegithub close REPO N                 close pull request N without merging
func cmdFakeGitHub(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) == 0 {
		ts.Fatalf("usage: fakegithub start|repo|reset|requests-max|changed|cat|pulls|merge|close ...")
	}
	if neg && args[0] == "start" {
		ts.Fatalf("unsupported: ! fakegithub start")
	}
	if args[0] == "start" {
		s := githubfake.New("alice", fakeToken)
		fakes.Store(ts, s)
		ts.Defer(func() { s.Close(); fakes.Delete(ts) })
		ts.Setenv("SPIREPOD_GITHUB_API_URL", s.URL)
		ts.Setenv("GH_TOKEN", fakeToken)
		return
	}
	v, ok := fakes.Load(ts)
	if !ok {
		ts.Fatalf("fakegithub start first")
	}
	s := v.(*githubfake.Server)
	if neg && args[0] != "requests-max" && args[0] != "cat" {
		ts.Fatalf("unsupported: ! fakegithub %s", args[0])
	}
	switch args[0] {
	case "repo":
		if len(args) < 3 {
			ts.Fatalf("usage: fakegithub repo OWNER/NAME push|nopush [PATH=FILE...]")
		}
		files := map[string]string{"README.md": "city\n"}
		for _, a := range args[3:] {
			p, file, _ := strings.Cut(a, "=")
			b, err := os.ReadFile(ts.MkAbs(file))
			ts.Check(err)
			files[p] = string(b)
		}
		_, err := s.AddRepo(args[1], args[2] == "push", "main", files)
		ts.Check(err)
	case "reset":
		s.ResetRequests()
	case "requests-max":
		max, err := strconv.Atoi(args[1])
		ts.Check(err)
		if n := s.Requests(); (n > max) != neg {
			ts.Fatalf("%d requests served, max %d: %v", n, max, s.RequestLog())
		}
		fmt.Fprintf(ts.Stdout(), "%d requests\n", s.Requests())
	case "changed":
		a, err := s.Files(args[1], args[2])
		ts.Check(err)
		b, err := s.Files(args[1], args[3])
		ts.Check(err)
		var out []string
		for p, c := range b {
			if a[p] != c {
				out = append(out, p)
			}
		}
		for p := range a {
			if _, ok := b[p]; !ok {
				out = append(out, p)
			}
		}
		sort.Strings(out)
		for _, p := range out {
			fmt.Fprintln(ts.Stdout(), p)
		}
	case "cat":
		files, err := s.Files(args[1], args[2])
		ts.Check(err)
		c, ok := files[args[3]]
		switch {
		case ok && neg:
			ts.Fatalf("%s exists at %s", args[3], args[2])
		case !ok && !neg:
			ts.Fatalf("no %s at %s", args[3], args[2])
		}
		fmt.Fprint(ts.Stdout(), c)
	case "pulls":
		for _, p := range s.Pulls(args[1]) {
			state := p.State
			if p.Merged {
				state = "merged"
			}
			fmt.Fprintf(ts.Stdout(), "#%d %s %s:%s %s\n", p.Number, state, p.HeadRepo.Owner, p.HeadRef, p.Title)
		}
	case "merge":
		n, err := strconv.Atoi(args[2])
		ts.Check(err)
		_, err = s.Merge(args[1], n)
		ts.Check(err)
	case "close":
		n, err := strconv.Atoi(args[2])
		ts.Check(err)
		ts.Check(s.ClosePull(args[1], n))
	default:
		ts.Fatalf("fakegithub: unknown subcommand %q", args[0])
	}
}
