// Command fakegithub runs the fake GitHub REST API on 127.0.0.1 for manual
// tries of `spirepod pr`: it prints the API URL, then serves until interrupted.
//
//	go run ./internal/fakes/githubfake/cmd/fakegithub -repo wp-wcm/city &
//	SPIREPOD_GITHUB_API_URL=<printed URL> GH_TOKEN=fake spirepod pr trust-ca
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spirepod/spirepod/internal/fakes/githubfake"
)

func main() {
	repo := flag.String("repo", "wp-wcm/city", "repository to create (owner/name), with a README on main")
	user := flag.String("user", "alice", "the authenticated user's login")
	token := flag.String("token", "fake", "the only token accepted")
	push := flag.Bool("push", true, "whether the user may push to -repo (false exercises the fork path)")
	flag.Parse()
	s := githubfake.New(*user, *token)
	defer s.Close()
	if _, err := s.AddRepo(*repo, *push, "main", map[string]string{"README.md": "city\n"}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println(s.URL)
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
	<-ch
	fmt.Fprintf(os.Stderr, "%d requests served\n", s.Requests())
}
