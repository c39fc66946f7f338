package router

import (
	"github.com/hookrouter/hookrouter/router/dryrun"
	"github.com/hookrouter/hookrouter/router/rules"
)

// DryRun runs body, arriving on source src with headers h, through rt's
// rules and renderers, with no network and no writes (see package dryrun).
func (rt *Runtime) DryRun(src string, h rules.Headers, body []byte) (*dryrun.Report, error) {
	byName := make(map[string]dryrun.Sink, len(rt.Sinks))
	for name, s := range rt.Sinks {
		byName[name] = dryrun.Sink{Type: s.Type, Sink: s.Sink}
	}
	return dryrun.Evaluate(rt.Rules, byName, src, h, body)
}
