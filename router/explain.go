package router

import (
	"github.com/hookrouter/hookrouter/router/dryrun"
	"github.com/hookrouter/hookrouter/router/rules"
)

// DryRunExplain is DryRun with each rule's Explain filled in: the value of
// each part of its `when` for the event (`hookrouter test -explain`, the
// console's tester).
func (rt *Runtime) DryRunExplain(src string, h rules.Headers, body []byte) (*dryrun.Report, error) {
	rep, err := rt.DryRun(src, h, body)
	if err != nil {
		return nil, err
	}
	whens := make([]string, len(rt.File.Rules))
	for i, r := range rt.File.Rules {
		whens[i] = r.When
	}
	if err := dryrun.Explain(rep, whens, src, h, body); err != nil {
		return nil, err
	}
	return rep, nil
}
