package main

import (
	"flag"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/spirepod/spirepod/internal/city/citytest"
)

// cmdGenCity writes a generated city (internal/city/citytest) into DIR, for
// the dev profile's paths:
//
//	gen-city [-teams N] [-pods N] [-guide] [-directory] DIR
//
// -guide uses the guide's alias and CN names with every team's default
// StatefulSet, so the teams share node-alias IDs (SPD101).
func cmdGenCity(ts *testscript.TestScript, neg bool, args []string) {
	if neg {
		ts.Fatalf("unsupported: ! gen-city")
	}
	fl := flag.NewFlagSet("gen-city", flag.ContinueOnError)
	teams := fl.Int("teams", 3, "teams")
	pods := fl.Int("pods", 2, "pods per team")
	guide := fl.Bool("guide", false, "guide naming, default StatefulSet")
	dir := fl.Bool("directory", false, "directory-mode trust list")
	if err := fl.Parse(args); err != nil || fl.NArg() != 1 {
		ts.Fatalf("usage: gen-city [-teams N] [-pods N] [-guide] [-directory] DIR")
	}
	g := citytest.Generate(citytest.Options{Teams: *teams, Pods: *pods, GuideNaming: *guide, Directory: *dir})
	ts.Check(citytest.Write(g.Tree, ts.MkAbs(fl.Arg(0))))
}
