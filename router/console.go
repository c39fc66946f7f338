package router

import (
	"context"

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

// Journal is the router's journal, nil when journal.enabled is false: the
// console's journal pages then say that the journal is off.
func (b consoleBackend) Journal() *journal.Journal { return b.r.journal }

// ReplayEvent is what POST /-/events/{id}/replay does: it returns the sinks
// re-queued and, for the ones left alone, why.
func (b consoleBackend) ReplayEvent(ctx context.Context, id, sink string) ([]string, map[string]string, error) {
	res, err := b.r.ReplayEvent(ctx, id, sink, false, "console")
	return res.Requeued, res.Skipped, err
}

// newConsole builds the console the admin listener serves.
func (r *Router) newConsole() (*console.Console, error) {
	return console.New(console.Options{Backend: consoleBackend{r}, Guard: r.adminGuard(),
		Log: r.log.With("component", "console"), SampleEvery: r.opts.ConsoleSampleEvery})
}
