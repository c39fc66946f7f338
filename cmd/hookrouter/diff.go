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
	fromJournal := fs.Bool("journal", false, "replay the running router's journal (GET /-/events on its admin address) instead of a file")
	since := fs.String("since", "24h", "with -journal: events received since, a duration back (24h) or an RFC 3339 time")
	addr := fs.String("addr", "", "with -journal: admin address of the running router (default: the config's admin_listen; its admin.token is sent)")
	limit := fs.Int("limit", 10000, "with -journal: at most this many events, newest first")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *newPath == "" || (fs.NArg() != 1) != *fromJournal {
		fmt.Fprintln(stderr, "usage: hookrouter diff -config OLD -against NEW EVENTS.jsonl\n       hookrouter diff -against NEW -journal [-since 24h] [-addr ADMIN]")
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
	if *fromJournal {
		return diffJournal(oldRT, newRT, headers, journalQuery{addr: *addr, since: *since, limit: *limit}, stdout, stderr)
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
		sum.compare(oldRT, newRT, headers, src, body, fmt.Sprintf("line %d", line), w)
	}
	return sum, sc.Err()
}

// compare routes one event (body, on source src) through both configs and
// prints, as label, its sinks gained and lost when they differ.
func (sum *diffSummary) compare(oldRT, newRT *router.Runtime, headers headerFlags, src string, body []byte, label string, w io.Writer) {
	oldRep, err1 := evaluate(oldRT, sourceFor(oldRT, src), headers, body)
	newRep, err2 := evaluate(newRT, sourceFor(newRT, src), headers, body)
	if err1 != nil || err2 != nil {
		sum.invalid++
		fmt.Fprintf(w, "%s: unreadable event: %v\n", label, firstErr(err1, err2))
		return
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
		return
	}
	sum.changed++
	fmt.Fprintf(w, "%s: %s: gained [%s] lost [%s]\n", label, newRep.DedupKey, strings.Join(gained, " "), strings.Join(lost, " "))
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
