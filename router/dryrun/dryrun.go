// Package dryrun runs one event through a config's rules and renderers with
// no network and no writes: what `hookrouter test` prints, `hookrouter diff`
// compares and the console's rule tester shows.
package dryrun

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/hookrouter/hookrouter/router/rules"
	"github.com/hookrouter/hookrouter/router/rules/explain"
	"github.com/hookrouter/hookrouter/sinks"
)

// Report is the JSON `hookrouter test` prints.
type Report struct {
	Source     string       `json:"source"`
	DedupKey   string       `json:"dedup_key"`
	Matched    []string     `json:"matched"`
	Shadow     []string     `json:"shadow"`
	Rules      []RuleResult `json:"rules"`
	Deliveries []Delivery   `json:"deliveries"`
	Warnings   []string     `json:"warnings,omitempty"`
}

// RuleResult is one rule's verdict on the event.
type RuleResult struct {
	Name   string `json:"name"`
	Result any    `json:"result"` // true, false or "error: …"
	// Explain is the value of each part of the rule's `when`, when asked
	// for (Explain, `hookrouter test -explain`).
	Explain []explain.Part `json:"explain,omitempty"`
}

// Delivery is what one chosen sink would be sent: the rendered body as JSON
// when it is JSON, else as a JSON string; null for a sink that cannot
// render.
type Delivery struct {
	Sink string          `json:"sink"`
	Type string          `json:"type"`
	Body json.RawMessage `json:"body"`
}

// Sink is a built sink as the dry run needs it.
type Sink struct {
	Type string
	Sink sinks.Sink
}

// Headers are request headers by lower-case name, for header(); it
// satisfies rules.Headers.
type Headers map[string]string

// Set sets header name to value.
func (h Headers) Set(name, value string) { h[strings.ToLower(name)] = value }

// Peek returns the value of header name, or nil; names are case-insensitive.
func (h Headers) Peek(name string) []byte {
	if v, ok := h[strings.ToLower(name)]; ok {
		return []byte(v)
	}
	return nil
}

// ErrEmpty is returned for an empty (or all-whitespace) payload.
var ErrEmpty = errors.New("invalid payload: empty")

// Evaluate runs body, arriving on source src with headers h, through set,
// and renders what each chosen sink (looked up in sinksByName) would be
// sent. An error means the payload is not a JSON object; a rule that fails
// is reported in the rule's result, not as an error.
func Evaluate(set *rules.Set, sinksByName map[string]Sink, src string, h rules.Headers, body []byte) (*Report, error) {
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, ErrEmpty
	}
	if h == nil {
		h = Headers{}
	}
	in := set.Acquire(src, h)
	defer set.Release(in)
	if err := in.Parse(body); err != nil {
		return nil, fmt.Errorf("invalid payload: %w", err)
	}
	rep := &Report{Source: src, Matched: []string{}, Shadow: []string{}, Deliveries: []Delivery{}}
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
		rep.Rules = append(rep.Rules, RuleResult{Name: set.Rules[e.Rule].Name, Result: res})
	}
	r := in.Match()
	for _, i := range r.Matched {
		rule := set.Rules[i]
		rep.Matched = append(rep.Matched, rule.Name)
		if rule.Stop && i < len(set.Rules)-1 {
			// The trace shows every rule's result; say which ones did not count.
			rep.Warnings = append(rep.Warnings, fmt.Sprintf("rule %q matched and has stop: true, so the rules after it were not applied", rule.Name))
		}
	}
	for _, i := range r.Shadow {
		rep.Shadow = append(rep.Shadow, set.Rules[i].Name)
	}
	ev := &sinks.Event{ID: "dry-run", Source: src, ReceivedAt: time.Now().UTC(), Body: body}
	for _, name := range r.To {
		s := sinksByName[name]
		d := Delivery{Sink: name, Type: s.Type}
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
