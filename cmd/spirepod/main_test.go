package main

import (
	"os"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/testscript"
)

// TestMain lets testscript run this binary as `spirepod` (and the test
// helpers below) in real subprocesses.
func TestMain(m *testing.M) {
	// A cluster that does not answer is retried for 1 s here, not 4: the
	// scripts' unreachable servers never come back, the retry loop still
	// runs (250 ms, then 500 ms) and the message is the same; the scripts
	// that use them took 12 s and 8 s of the package's 25.
	pingBudget = time.Second
	testscript.Main(m, scriptCommands())
}

// scriptCommands are the programs testscript scripts can exec as
// subprocesses. Add test helper programs (e.g. a fake GitHub) here; define
// their functions in their own _test.go files.
func scriptCommands() map[string]func() {
	return map[string]func(){
		// The same path as main, GC tuning and signals included: scripts
		// interrupt it.
		"spirepod": func() { os.Exit(processMain()) },
	}
}

func TestScript(t *testing.T) {
	testscript.Run(t, testscript.Params{
		Dir:                 "testdata/script",
		UpdateScripts:       os.Getenv("SPIREPOD_UPDATE_SCRIPTS") == "1",
		RequireExplicitExec: true,
		Setup: func(env *testscript.Env) error {
			env.Setenv("HOME", env.WorkDir)
			env.Setenv("XDG_CONFIG_HOME", env.WorkDir+"/.config")
			env.Setenv("NO_COLOR", "1")
			return nil
		},
		Cmds: scriptCustomCommands(),
	})
}

// scriptCustomCommands are in-process testscript commands (e.g. making a CA
// at test time, so no key is ever committed). Add entries here; define the
// functions in their own _test.go files.
func scriptCustomCommands() map[string]func(ts *testscript.TestScript, neg bool, args []string) {
	return map[string]func(ts *testscript.TestScript, neg bool, args []string){
		"mtimes":           cmdMtimes,
		"gen-test-ca":      cmdGenTestCA,
		"git-city":         cmdGitCity,
		"pki-fixture":      cmdPKIFixture,
		"file-mode":        cmdFileMode,
		"fakegithub":       cmdFakeGitHub,
		"exits":            cmdExits,
		"gen-city":         cmdGenCity,
		"hang-server":      cmdHangServer,
		"status-server":    cmdStatusServer,
		"json-doc":         cmdJSONDoc,
		"mkfifo":           cmdMkfifo,
		"interrupt":        cmdInterrupt,
		"interrupted-exit": cmdInterruptedExit,
	}
}
