// Command hookrouter receives webhooks, deduplicates them, matches them
// against the rules of a YAML file and delivers them to sinks, at least once.
//
//	hookrouter serve    [-config FILE]                 run the router (the default)
//	hookrouter validate [-config FILE]                 check a config file fully
//	hookrouter test     [-config FILE] [-explain] [-H 'N: v']... PAYLOAD.json|-
//	hookrouter diff     -config OLD -against NEW EVENTS.jsonl
//	hookrouter diff     -against NEW -journal [-since 24h] [-addr ADMIN]
//	hookrouter replay   [-config FILE] DEAD_LETTER_FILE
//	hookrouter version
package main

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/debug"
)

// version is set at build time with -ldflags "-X main.version=v1.2.3"; a
// plain build reports the module version or the VCS revision (buildVersion).
var version = ""

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// run dispatches to a subcommand and returns the process exit code.
func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	cmd := "serve"
	if len(args) > 0 {
		switch a := args[0]; {
		case a == "-version" || a == "--version" || a == "-h" || a == "-help" || a == "--help":
			cmd, args = a, args[1:]
		case len(a) > 0 && a[0] != '-':
			cmd, args = a, args[1:]
		}
		// Otherwise flags of a bare `hookrouter`, which is serve.
	}
	switch cmd {
	case "serve":
		return serve(args, stderr)
	case "validate":
		return validate(args, stdout, stderr)
	case "test":
		return dryRun(args, stdin, stdout, stderr)
	case "diff":
		return diff(args, stdin, stdout, stderr)
	case "replay":
		return replay(args, stdout, stderr)
	case "events":
		return events(args, stdout, stderr)
	case "trace":
		return trace(args, stdout, stderr)
	case "tail":
		return tail(args, stdout, stderr)
	case "version", "-version", "--version":
		fmt.Fprintf(stdout, "hookrouter %s %s\n", getVersion(), runtime.Version())
		return 0
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "hookrouter: unknown command %q\n\n%s", cmd, usage)
		return 2
	}
}

const usage = `Usage:
  hookrouter [serve] [-config FILE]                     run the router
  hookrouter validate [-config FILE]                    check a config file
  hookrouter test [-config FILE] [-explain] [-H 'Name: value']... PAYLOAD.json|-
                                                        dry-run one event: rules, key, deliveries
  hookrouter diff -config OLD -against NEW EVENTS.jsonl compare routing of recorded events
  hookrouter diff -against NEW -journal [-since 24h] [-addr ADMIN]
                                                        the same over the running router's journal
  hookrouter replay [-config FILE] DEAD_LETTER_FILE     re-queue dead-lettered deliveries
  hookrouter events [-addr ADMIN] [-source S] [-event E] [-sink K] [-state ST] [-since D] [-q TEXT] [-limit N]
                                                        list journaled events, newest first
  hookrouter trace [-addr ADMIN] [-json] EVENT_ID       one event's journey: verdicts, rules, attempts
  hookrouter tail [-addr ADMIN] [filters as for events] follow new events and outcomes live
  hookrouter version

-config defaults to $HOOKROUTER_CONFIG, else rules.yaml, else rules.example.yaml.
`

func getVersion() string {
	if version != "" {
		return version
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "dev"
	}
	return buildVersion(bi)
}

// buildVersion is the version a build without -ldflags reports: the module
// version (go install …@v1.2.3), else the VCS revision that go build stamps
// into a binary built in a checkout (12 hex digits, "-dirty" when the tree
// had changes), else "dev" (go test and go run stamp neither).
func buildVersion(bi *debug.BuildInfo) string {
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	var rev, modified string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			modified = s.Value
		}
	}
	if rev == "" {
		return "dev"
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if modified == "true" {
		rev += "-dirty"
	}
	return rev
}
