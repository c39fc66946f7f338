package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/hookrouter/hookrouter/router"
	"github.com/hookrouter/hookrouter/router/config"
	"github.com/hookrouter/hookrouter/router/dryrun"
)

// headerFlags collects repeated -H 'Name: value' flags; lookups are
// case-insensitive, as HTTP header names are.
type headerFlags dryrun.Headers

func (h headerFlags) String() string { return "" }

func (h headerFlags) Set(v string) error {
	name, value, ok := strings.Cut(v, ":")
	if !ok || strings.TrimSpace(name) == "" {
		return fmt.Errorf("want 'Name: value', got %q", v)
	}
	dryrun.Headers(h).Set(strings.TrimSpace(name), strings.TrimSpace(value))
	return nil
}

// dryRun is `hookrouter test`: one event through the rules and renderers,
// with no network and no writes.
func dryRun(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := configFlag(fs)
	headers := headerFlags{}
	fs.Var(headers, "H", "request header 'Name: value' (repeatable)")
	sourceName := fs.String("source", "", "source the event arrives on (default: the first source)")
	explain := fs.Bool("explain", false, "add each rule's sub-expression values (why it did or did not match)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(stderr, "usage: hookrouter test [-config FILE] [-explain] [-H 'Name: value']... PAYLOAD.json|-")
		return 2
	}
	var body []byte
	var err error
	if fs.Arg(0) == "-" {
		body, err = io.ReadAll(stdin)
	} else {
		body, err = os.ReadFile(fs.Arg(0))
	}
	if err != nil {
		fmt.Fprintf(stderr, "hookrouter test: %v\n", err)
		return 1
	}
	name := fs.Arg(0)
	if name == "-" {
		name = "stdin"
	}
	f, rt, err := load(config.Resolve(*cfgPath))
	if err != nil {
		printProblems(stderr, err)
		return 1
	}
	src := *sourceName
	if src == "" {
		src = f.Sources[0].Name
	}
	if sourceFor(rt, src) != src {
		names := make([]string, len(f.Sources))
		for i, s := range f.Sources {
			names[i] = s.Name
		}
		fmt.Fprintf(stderr, "hookrouter test: -source %q is not a source of %s (it has %s)\n", src, f.Name, strings.Join(names, ", "))
		return 2
	}
	var rep *dryrun.Report
	if *explain {
		rep, err = rt.DryRunExplain(src, dryrun.Headers(headers), body)
	} else {
		rep, err = evaluate(rt, src, headers, body)
	}
	if err != nil {
		fmt.Fprintf(stderr, "hookrouter test: %s: %v\n", name, err)
		return 1
	}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	if err := enc.Encode(rep); err != nil {
		fmt.Fprintf(stderr, "hookrouter test: %v\n", err)
		return 1
	}
	return 0
}

func evaluate(rt *router.Runtime, src string, headers headerFlags, body []byte) (*dryrun.Report, error) {
	return rt.DryRun(src, dryrun.Headers(headers), body)
}
