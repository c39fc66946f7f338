package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/hookrouter/hookrouter/router"
	"github.com/hookrouter/hookrouter/router/config"
	"github.com/hookrouter/hookrouter/sinks"
)

// headerFlags collects repeated -H 'Name: value' flags; lookups are
// case-insensitive, as HTTP header names are.
type headerFlags map[string]string

func (h headerFlags) String() string { return "" }

func (h headerFlags) Set(v string) error {
	name, value, ok := strings.Cut(v, ":")
	if !ok || strings.TrimSpace(name) == "" {
		return fmt.Errorf("want 'Name: value', got %q", v)
	}
	h[strings.ToLower(strings.TrimSpace(name))] = strings.TrimSpace(value)
	return nil
}

func (h headerFlags) Peek(name string) []byte {
	if v, ok := h[strings.ToLower(name)]; ok {
		return []byte(v)
	}
	return nil
}

// report is the JSON `hookrouter test` prints.
type report struct {
	Source     string       `json:"source"`
	DedupKey   string       `json:"dedup_key"`
	Matched    []string     `json:"matched"`
	Shadow     []string     `json:"shadow"`
	Rules      []ruleResult `json:"rules"`
	Deliveries []delivery   `json:"deliveries"`
	Warnings   []string     `json:"warnings,omitempty"`
}

type ruleResult struct {
	Name   string `json:"name"`
	Result any    `json:"result"` // true, false or "error: …"
}

type delivery struct {
	Sink string          `json:"sink"`
	Type string          `json:"type"`
	Body json.RawMessage `json:"body"`
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
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(stderr, "usage: hookrouter test [-config FILE] [-H 'Name: value']... PAYLOAD.json|-")
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
	rep, err := evaluate(rt, src, headers, body)
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

func evaluate(rt *router.Runtime, src string, headers headerFlags, body []byte) (*report, error) {
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, errors.New("invalid payload: empty")
	}
	in := rt.Rules.Acquire(src, headers)
	defer rt.Rules.Release(in)
	if err := in.Parse(body); err != nil {
		return nil, fmt.Errorf("invalid payload: %w", err)
	}
	rep := &report{Source: src, Matched: []string{}, Shadow: []string{}, Deliveries: []delivery{}}
	key, err := in.DedupKey()
	rep.DedupKey = key
	if err != nil {
		rep.Warnings = append(rep.Warnings, err.Error())
	}
	for _, e := range in.Trace() {
		var res any = e.Result
		if e.Err != nil {
			res = "error: " + oneLine(e.Err.Error())
		}
		rep.Rules = append(rep.Rules, ruleResult{Name: rt.Rules.Rules[e.Rule].Name, Result: res})
	}
	r := in.Match()
	for _, i := range r.Matched {
		rule := rt.Rules.Rules[i]
		rep.Matched = append(rep.Matched, rule.Name)
		if rule.Stop && i < len(rt.Rules.Rules)-1 {
			// The trace shows every rule's result; say which ones did not count.
			rep.Warnings = append(rep.Warnings, fmt.Sprintf("rule %q matched and has stop: true, so the rules after it were not applied", rule.Name))
		}
	}
	for _, i := range r.Shadow {
		rep.Shadow = append(rep.Shadow, rt.Rules.Rules[i].Name)
	}
	ev := &sinks.Event{ID: "dry-run", Source: src, ReceivedAt: time.Now().UTC(), Body: body}
	for _, name := range r.To {
		s := rt.Sinks[name]
		d := delivery{Sink: name, Type: s.Type}
		rend, ok := s.Sink.(sinks.Renderer)
		var out []byte
		if ok {
			out, err = rend.Render(ev)
		}
		switch {
		case !ok:
			d.Body = json.RawMessage(`null`)
		case err != nil:
			d.Body, _ = json.Marshal("error: " + err.Error())
		case json.Valid(out):
			d.Body = out
		default:
			d.Body, _ = json.Marshal(string(out))
		}
		rep.Deliveries = append(rep.Deliveries, d)
	}
	return rep, nil
}

func oneLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}
