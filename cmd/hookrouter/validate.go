package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/hookrouter/hookrouter/router"
	"github.com/hookrouter/hookrouter/router/config"
	"github.com/hookrouter/hookrouter/router/rules/check"
)

// validate checks the file as a reload would: YAML, schema, environment
// variables, every expression and template, sink references. It prints one
// line per problem (FILE:LINE:COL: path: message) and exits 1, or prints
// "ok: N rules, M sinks" and exits 0, after a "warning: FILE:LINE:COL: …"
// line for each thing that is valid but cannot be meant (check.Warnings).
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
	for _, w := range check.Warnings(f) {
		fmt.Fprintf(stdout, "warning: %s\n", w)
	}
	fmt.Fprintf(stdout, "ok: %d rules, %d sinks\n", len(f.Rules), len(rt.Sinks))
	return 0
}

// load reads, checks and compiles a config without starting anything. When
// the file loads with problems, the router's own checks (expressions,
// templates, sink references, sink settings) still run, so that one
// `validate` lists everything to fix; a problem at a path the loader already
// reported (or inside it) is not reported twice.
func load(path string) (*config.File, *router.Runtime, error) {
	f, err := config.Load(path)
	var problems config.Problems
	if err != nil {
		if f == nil || !errors.As(err, &problems) {
			return nil, nil, err
		}
	}
	rt, built := router.Build(f, nil, slog.New(slog.DiscardHandler), getVersion())
	loaded := problems
	for _, p := range built {
		if !coveredBy(p, loaded) {
			problems = append(problems, p)
		}
	}
	if len(problems) > 0 {
		problems.Sort()
		return nil, nil, problems
	}
	return f, rt, nil
}

// coveredBy reports whether one of reported is about p's node, or a node
// that holds it or that it holds: the loader's message is the more precise.
func coveredBy(p config.Problem, reported config.Problems) bool {
	for _, q := range reported {
		if q.File != p.File {
			continue
		}
		if q.Path == "" && q.Line == p.Line && q.Col == p.Col {
			return true
		}
		if q.Path != "" && (within(p.Path, q.Path) || within(q.Path, p.Path)) {
			return true
		}
	}
	return false
}

// within reports whether path is node or a path under it.
func within(path, node string) bool {
	return path == node || strings.HasPrefix(path, node+".") || strings.HasPrefix(path, node+"[")
}
