package console

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/hookrouter/hookrouter/router/config"
	"github.com/hookrouter/hookrouter/router/dryrun"
	"github.com/hookrouter/hookrouter/router/journal"
)

type rulesData struct {
	Health  healthDoc
	File    string
	Rules   []ruleView
	Sources []string
	Tester  testerView
}

type ruleView struct {
	config.Rule
	Line    int
	Matches int64
	Errors  int64
}

type testerView struct {
	// Recent are recent accepted events with a payload, to pick from.
	Recent  []recentEvent
	Picked  string
	Source  string
	Headers string
	Payload string
	// Report is the dry run's result; Err why there is none.
	Report *reportView
	Err    string
}

type recentEvent struct {
	ID    string
	At    time.Time // shown in the viewer's time zone by console.js
	Label string    // what follows the time
}

type reportView struct {
	*dryrun.Report
	Verdicts   []verdictView
	Deliveries []deliveryView
}

type verdictView struct {
	Name   string
	Result string // "matched", "no", "shadow", "error: …"
	Class  string
	// Parts explain the verdict: the value of each part of the rule's when.
	Parts []partView
}

type partView struct {
	Text  string
	Depth int // 0…3, for the indent
	Class string
}

type deliveryView struct {
	Sink, Type string
	Body       string // pretty-printed
}

func (c *Console) rulesData() rulesData {
	s := c.sample()
	f := c.b.Config()
	d := rulesData{Health: s.health, File: f.Name}
	for i, r := range f.Rules {
		d.Rules = append(d.Rules, ruleView{Rule: r, Line: f.Pos(fmt.Sprintf("rules[%d]", i)).Line,
			Matches: int64(s.rules[r.Name]), Errors: int64(s.ruleErrs[r.Name])})
	}
	for _, src := range f.Sources {
		d.Sources = append(d.Sources, src.Name)
	}
	if len(d.Sources) > 0 {
		d.Tester.Source = d.Sources[0]
	}
	if j := c.b.Journal(); j != nil && j.Bodies() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		page, err := j.List(ctx, journal.Filter{State: journal.Accepted, Limit: recentEvents})
		if err == nil {
			for _, ev := range page.Events {
				d.Tester.Recent = append(d.Tester.Recent, recentEvent{ID: ev.ID, At: ev.ReceivedAt,
					Label: ev.Source + " · " + ev.Event + " · " + ev.ID[:min(12, len(ev.ID))]})
			}
		}
	}
	return d
}

// recentEvents is how many recent events the tester offers.
const recentEvents = 25

func (c *Console) rules(w http.ResponseWriter, r *http.Request) {
	c.render(w, r, http.StatusOK, "rules", page{Title: "Rules", Nav: "rules", Data: c.rulesData()})
}

// maxTestBytes bounds what the tester accepts: a payload and some headers.
const maxTestBytes = 4 << 20

// ruleTest runs the tester's payload through the rules in force, as
// `hookrouter test` does. The payload travels in the POST body, never in
// the URL.
func (c *Console) ruleTest(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxTestBytes)
	if !c.checkCSRF(w, r) {
		return
	}
	d := c.rulesData()
	t := &d.Tester
	t.Payload, t.Headers = r.PostFormValue("payload"), r.PostFormValue("headers")
	if src := r.PostFormValue("source"); src != "" {
		t.Source = src
	}
	// "Load" takes a recent event's payload (and source) from the journal.
	if id := r.PostFormValue("event"); id != "" && r.PostFormValue("load") != "" {
		t.Picked = id
		if err := c.loadEvent(r.Context(), t, id); err != nil {
			t.Err = err.Error()
			c.render(w, r, http.StatusUnprocessableEntity, "rules", page{Title: "Rules", Nav: "rules", Data: d})
			return
		}
	}
	status := http.StatusOK
	rep, err := c.test(t.Source, t.Headers, []byte(t.Payload))
	if err != nil {
		t.Err, status = err.Error(), http.StatusUnprocessableEntity
	} else {
		t.Report = rep
	}
	c.render(w, r, status, "rules", page{Title: "Rules", Nav: "rules", Data: d})
}

func (c *Console) loadEvent(ctx context.Context, t *testerView, id string) error {
	j := c.b.Journal()
	if j == nil {
		return errors.New("the journal is off")
	}
	ev, err := j.Get(ctx, id)
	if err != nil {
		return fmt.Errorf("event %s: %w", id, err)
	}
	if len(ev.Payload) == 0 {
		return fmt.Errorf("event %s: the journal did not keep its payload", id)
	}
	t.Payload, t.Source = pretty(ev.Payload), ev.Source
	return nil
}

func (c *Console) test(source, headerText string, body []byte) (*reportView, error) {
	known := false
	for _, s := range c.b.Config().Sources {
		known = known || s.Name == source
	}
	if !known {
		return nil, fmt.Errorf("source %q is not in the config in force", source)
	}
	h := dryrun.Headers{}
	for i, line := range strings.Split(headerText, "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		name, value, ok := strings.Cut(line, ":")
		if !ok || strings.TrimSpace(name) == "" {
			return nil, fmt.Errorf("headers, line %d: want 'Name: value', got %q", i+1, line)
		}
		h.Set(strings.TrimSpace(name), strings.TrimSpace(value))
	}
	rep, err := c.b.Test(source, h, body)
	if err != nil {
		return nil, err
	}
	v := &reportView{Report: rep}
	matched := map[string]bool{}
	for _, m := range rep.Matched {
		matched[m] = true
	}
	shadow := map[string]bool{}
	for _, m := range rep.Shadow {
		shadow[m] = true
	}
	for _, rr := range rep.Rules {
		vv := verdictView{Name: rr.Name, Result: "no", Class: "no"}
		switch res := rr.Result.(type) {
		case string:
			vv.Result, vv.Class = res, "error"
		case bool:
			if res {
				vv.Result, vv.Class = "matched", "ok"
				if shadow[rr.Name] {
					vv.Result, vv.Class = "shadow", "shadow"
				} else if !matched[rr.Name] {
					// true, but an earlier stop rule ended the evaluation.
					vv.Result, vv.Class = "true (after a stop rule: not applied)", "no"
				}
			}
		}
		for _, p := range rr.Explain {
			pv := partView{Text: p.Text, Depth: min(p.Depth, 3), Class: "other"}
			switch {
			case p.Error != "":
				pv.Class = "error"
			case p.Value == true:
				pv.Class = "true"
			case p.Value == false:
				pv.Class = "false"
			}
			vv.Parts = append(vv.Parts, pv)
		}
		v.Verdicts = append(v.Verdicts, vv)
	}
	for _, d := range rep.Deliveries {
		v.Deliveries = append(v.Deliveries, deliveryView{Sink: d.Sink, Type: d.Type, Body: pretty(d.Body)})
	}
	return v, nil
}

// pretty indents JSON for reading; what is not JSON is returned as it is.
func pretty(b []byte) string {
	var out bytes.Buffer
	if err := json.Indent(&out, b, "", "  "); err != nil {
		return string(b)
	}
	return out.String()
}
