package main

import (
	"flag"
	"fmt"
	"io"
	"log/slog"

	"github.com/hookrouter/hookrouter/router"
	"github.com/hookrouter/hookrouter/router/config"
)

// validate checks the file as a reload would: YAML, schema, environment
// variables, every expression and template, sink references. It prints one
// line per problem (FILE:LINE:COL: path: message) and exits 1, or prints
// "ok: N rules, M sinks" and exits 0.
func validate(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("validate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := configFlag(fs)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	f, rt, err := load(config.Resolve(*cfgPath))
	if err != nil {
		printProblems(stdout, err)
		return 1
	}
	fmt.Fprintf(stdout, "ok: %d rules, %d sinks\n", len(f.Rules), len(rt.Sinks))
	return 0
}

// load reads, checks and compiles a config without starting anything.
func load(path string) (*config.File, *router.Runtime, error) {
	f, err := config.Load(path)
	if err != nil {
		return nil, nil, err
	}
	rt, problems := router.Build(f, nil, slog.New(slog.DiscardHandler), getVersion())
	if problems != nil {
		return nil, nil, problems
	}
	return f, rt, nil
}
