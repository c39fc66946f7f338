package console

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	"github.com/hookrouter/hookrouter/router/config"
	"github.com/hookrouter/hookrouter/router/dryrun"
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
	Source  string
	Headers string
	Payload string
	// Report is the dry run's result; Err why there is none.
	Report *reportView
	Err    string
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
	return d
}

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
	status := http.StatusOK
	rep, err := c.test(t.Source, t.Headers, []byte(t.Payload))
	if err != nil {
		t.Err, status = err.Error(), http.StatusUnprocessableEntity
	} else {
		t.Report = rep
	}
	c.render(w, r, status, "rules", page{Title: "Rules", Nav: "rules", Data: d})
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
