package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strings"

	"github.com/hookrouter/hookrouter/router"
	"github.com/hookrouter/hookrouter/router/config"
	"github.com/hookrouter/hookrouter/router/dryrun"
)

// diff is `hookrouter diff`: recorded events (payload or envelope lines, as
// a file sink writes them) through two configs, printing each event whose
// routing differs, then a summary line.
func diff(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("diff", flag.ContinueOnError)
	fs.SetOutput(stderr)
	oldPath := fs.String("config", "", "the config in force (default $HOOKROUTER_CONFIG, else rules.yaml, else rules.example.yaml)")
	newPath := fs.String("against", "", "the candidate config")
	headers := headerFlags{}
	fs.Var(headers, "H", "request header 'Name: value' assumed for every event (repeatable)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *newPath == "" || fs.NArg() != 1 {
		fmt.Fprintln(stderr, "usage: hookrouter diff -config OLD -against NEW EVENTS.jsonl")
		return 2
	}
	_, oldRT, err := load(config.Resolve(*oldPath))
	if err != nil {
		printProblems(stderr, err)
		return 1
	}
	_, newRT, err := load(*newPath)
	if err != nil {
		printProblems(stderr, err)
		return 1
	}
	in := stdin
	if fs.Arg(0) != "-" {
		file, err := os.Open(fs.Arg(0))
		if err != nil {
			fmt.Fprintf(stderr, "hookrouter diff: %v\n", err)
			return 1
		}
		defer file.Close()
		in = file
	}
	s, err := diffEvents(oldRT, newRT, headers, in, stdout)
	if err != nil {
		fmt.Fprintf(stderr, "hookrouter diff: %s: %v\n", fs.Arg(0), err)
		return 1
	}
	fmt.Fprintln(stdout, s)
	return 0
}

type diffSummary struct {
	events, changed, invalid int
	gained, lost             map[string]int
}

func (s diffSummary) String() string {
	return fmt.Sprintf("summary: %d events, %d routed differently, %d unchanged, %d unreadable; gained %s; lost %s",
		s.events, s.changed, s.events-s.changed-s.invalid, s.invalid, counts(s.gained), counts(s.lost))
}

func counts(m map[string]int) string {
	if len(m) == 0 {
		return "none"
	}
	names := make([]string, 0, len(m))
	for k := range m {
		names = append(names, k)
	}
	sort.Strings(names)
	parts := make([]string, len(names))
	for i, n := range names {
		parts[i] = fmt.Sprintf("%s×%d", n, m[n])
	}
	return strings.Join(parts, ", ")
}

// envelope is the file sink's envelope format.
type envelope struct {
	Source  string          `json:"source"`
	Payload json.RawMessage `json:"payload"`
}

func diffEvents(oldRT, newRT *router.Runtime, headers headerFlags, r io.Reader, w io.Writer) (diffSummary, error) {
	sum := diffSummary{gained: map[string]int{}, lost: map[string]int{}}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 64<<20)
	line := 0
	for sc.Scan() {
		line++
		raw := sc.Bytes()
		if len(strings.TrimSpace(string(raw))) == 0 {
			continue
		}
		sum.events++
		body, src := raw, ""
		var env envelope
		if json.Unmarshal(raw, &env) == nil && len(env.Payload) > 0 && env.Payload[0] == '{' {
			body, src = env.Payload, env.Source
		}
		oldRep, err1 := evaluate(oldRT, sourceFor(oldRT, src), headers, body)
		newRep, err2 := evaluate(newRT, sourceFor(newRT, src), headers, body)
		if err1 != nil || err2 != nil {
			sum.invalid++
			fmt.Fprintf(w, "line %d: unreadable event: %v\n", line, firstErr(err1, err2))
			continue
		}
		oldTo, newTo := sinksOf(oldRep), sinksOf(newRep)
		var gained, lost []string
		for _, s := range newTo {
			if !slices.Contains(oldTo, s) {
				gained = append(gained, s)
				sum.gained[s]++
			}
		}
		for _, s := range oldTo {
			if !slices.Contains(newTo, s) {
				lost = append(lost, s)
				sum.lost[s]++
			}
		}
		if len(gained) == 0 && len(lost) == 0 {
			continue
		}
		sum.changed++
		fmt.Fprintf(w, "line %d: %s: gained [%s] lost [%s]\n", line, newRep.DedupKey, strings.Join(gained, " "), strings.Join(lost, " "))
	}
	return sum, sc.Err()
}

// sourceFor picks the recorded source if the config has it, else the first.
func sourceFor(rt *router.Runtime, name string) string {
	for _, s := range rt.File.Sources {
		if s.Name == name {
			return name
		}
	}
	return rt.File.Sources[0].Name
}

func sinksOf(rep *dryrun.Report) []string {
	out := make([]string, len(rep.Deliveries))
	for i, d := range rep.Deliveries {
		out[i] = d.Sink
	}
	return out
}

func firstErr(errs ...error) error {
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}
