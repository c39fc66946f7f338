package router

import (
	"context"
	"errors"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/hookrouter/hookrouter/router/config"
	"github.com/hookrouter/hookrouter/router/console"
	"github.com/hookrouter/hookrouter/router/dryrun"
	"github.com/hookrouter/hookrouter/router/journal"
	"github.com/hookrouter/hookrouter/router/rules"
)

// consoleBackend is the router as the console reads it (console.Backend).
type consoleBackend struct{ r *Router }

func (b consoleBackend) Health() any                  { return b.r.Health() }
func (b consoleBackend) Metrics() prometheus.Gatherer { return b.r.metrics.Registry }
func (b consoleBackend) Config() *config.File         { return b.r.rt.Load().File }

func (b consoleBackend) Test(src string, h rules.Headers, body []byte) (*dryrun.Report, error) {
	return b.r.rt.Load().DryRunExplain(src, h, body)
}

// Journal is nil until the router keeps a journal (issue 15 wires it): the
// console's journal pages then say that the journal is off.
func (b consoleBackend) Journal() *journal.Journal { return nil }

func (b consoleBackend) ReplayEvent(context.Context, string, string) ([]string, map[string]string, error) {
	return nil, nil, errors.New("the router keeps no journal to replay from")
}

// newConsole builds the console the admin listener serves.
func (r *Router) newConsole() (*console.Console, error) {
	return console.New(console.Options{Backend: consoleBackend{r}, Guard: r.adminGuard(),
		Log: r.log.With("component", "console"), SampleEvery: r.opts.ConsoleSampleEvery})
}
