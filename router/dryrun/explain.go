package dryrun

import (
	"fmt"

	"github.com/hookrouter/hookrouter/router/rules"
	"github.com/hookrouter/hookrouter/router/rules/explain"
)

// Explain fills in each rule's Explain in rep, made by Evaluate for the
// same event: whens[i] is the `when` of rep.Rules[i]. It says why a rule
// did or did not match, part by part (router/rules/explain).
func Explain(rep *Report, whens []string, src string, h rules.Headers, body []byte) error {
	if len(whens) != len(rep.Rules) {
		return fmt.Errorf("explain: %d rules in the report, %d expressions", len(rep.Rules), len(whens))
	}
	header := func(name string) string { return "" }
	if h != nil {
		header = func(name string) string { return string(h.Peek(name)) }
	}
	x, err := explain.New(body, header, src)
	if err != nil {
		return err
	}
	for i, when := range whens {
		rep.Rules[i].Explain = x.Explain(when)
	}
	return nil
}
