// Package metrics declares every Prometheus metric hookrouter exports, in one
// place, so that names, labels and help texts stay consistent across stages.
package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metrics holds the router's collectors. Create one per process with New; the
// zero value is not usable.
type Metrics struct {
	Registry *prometheus.Registry

	// Ingress.
	EventsReceived  *prometheus.CounterVec // source
	EventsAccepted  *prometheus.CounterVec // source
	EventsDuplicate *prometheus.CounterVec // source
	EventsRejected  *prometheus.CounterVec // source, reason
	EventsUnrouted  *prometheus.CounterVec // source
	IngressSeconds  *prometheus.HistogramVec

	// Rules.
	RuleMatches *prometheus.CounterVec // rule, shadow
	RuleErrors  *prometheus.CounterVec // rule

	// Dispatch.
	Deliveries       *prometheus.CounterVec   // sink, outcome (delivered | dead_letter)
	Attempts         *prometheus.CounterVec   // sink, result (ok | retryable | permanent)
	DeliverySeconds  *prometheus.HistogramVec // sink: accepted → delivered
	QueueDepth       *prometheus.GaugeVec     // sink
	QueueOldest      *prometheus.GaugeVec     // sink: seconds since the oldest owed delivery was accepted
	BreakerState     *prometheus.GaugeVec     // sink: 0 closed, 1 half-open, 2 open
	DeadLetters      *prometheus.CounterVec   // sink
	DedupStoreErrors prometheus.Counter

	// Config.
	ConfigReloads           *prometheus.CounterVec // result (success | failure | unchanged)
	ConfigLastReloadSuccess prometheus.Gauge       // unix seconds
	ConfigGeneration        prometheus.Gauge
}

// New creates the collectors and registers them, with the Go and process
// collectors, on a fresh registry.
func New() *Metrics {
	r := prometheus.NewRegistry()
	r.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	f := func(c prometheus.Collector) { r.MustRegister(c) }
	m := &Metrics{Registry: r}

	m.EventsReceived = counterVec(f, "events_received_total", "Requests received on a source path.", "source")
	m.EventsAccepted = counterVec(f, "events_accepted_total", "Events accepted (200) and queued.", "source")
	m.EventsDuplicate = counterVec(f, "events_duplicate_total", "Events answered 200 as duplicates and not routed again.", "source")
	m.EventsRejected = counterVec(f, "events_rejected_total", "Requests rejected, by reason (unauthorized, invalid_payload, too_large, method, queue_full, shutting_down, dedup_error).", "source", "reason")
	m.EventsUnrouted = counterVec(f, "events_unrouted_total", "Accepted events that matched no delivering rule.", "source")
	m.IngressSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: "hookrouter", Name: "ingress_duration_seconds",
		Help:    "Time from request read to answer, accepted events only.",
		Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, 1},
	}, []string{"source"})
	f(m.IngressSeconds)

	m.RuleMatches = counterVec(f, "rule_matches_total", "Events a rule matched (shadow rules included, labelled).", "rule", "shadow")
	m.RuleErrors = counterVec(f, "rule_errors_total", "Run-time errors evaluating a rule; counted as no match.", "rule")

	m.Deliveries = counterVec(f, "deliveries_total", "Finished deliveries by outcome (delivered | dead_letter).", "sink", "outcome")
	m.Attempts = counterVec(f, "delivery_attempts_total", "Delivery attempts by result (ok | retryable | permanent).", "sink", "result")
	m.DeliverySeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: "hookrouter", Name: "delivery_latency_seconds",
		Help:    "Time from acceptance to successful delivery.",
		Buckets: prometheus.ExponentialBuckets(0.001, 4, 10),
	}, []string{"sink"})
	f(m.DeliverySeconds)
	m.QueueDepth = gaugeVec(f, "queue_depth", "Deliveries owed to a sink, due or waiting.", "sink")
	m.QueueOldest = gaugeVec(f, "queue_oldest_seconds", "Seconds since the oldest delivery owed to a sink was accepted; 0 when none is owed.", "sink")
	m.BreakerState = gaugeVec(f, "breaker_state", "Circuit breaker state: 0 closed, 1 half-open, 2 open.", "sink")
	m.DeadLetters = counterVec(f, "dead_letters_total", "Deliveries written to the dead-letter file.", "sink")
	m.DedupStoreErrors = prometheus.NewCounter(prometheus.CounterOpts{Namespace: "hookrouter", Name: "dedup_store_errors_total", Help: "Errors from the dedup store."})
	f(m.DedupStoreErrors)

	m.ConfigReloads = counterVec(f, "config_reloads_total", "Config reloads by result (success | failure | unchanged).", "result")
	// Present from the start, at 0, so that rate() and alerts work before
	// the first reload.
	for _, result := range []string{"success", "failure", "unchanged"} {
		m.ConfigReloads.WithLabelValues(result)
	}
	m.ConfigLastReloadSuccess = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "hookrouter", Name: "config_last_reload_success_timestamp_seconds", Help: "When the config was last loaded successfully."})
	f(m.ConfigLastReloadSuccess)
	m.ConfigGeneration = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "hookrouter", Name: "config_generation", Help: "Generation of the config in force; 1 at start, +1 per applied reload."})
	f(m.ConfigGeneration)
	return m
}

func counterVec(reg func(prometheus.Collector), name, help string, labels ...string) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "hookrouter", Name: name, Help: help}, labels)
	reg(c)
	return c
}

func gaugeVec(reg func(prometheus.Collector), name, help string, labels ...string) *prometheus.GaugeVec {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "hookrouter", Name: name, Help: help}, labels)
	reg(g)
	return g
}
