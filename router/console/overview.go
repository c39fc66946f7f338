package console

import (
	"fmt"
	"net/http"
	"slices"
	"sort"
	"sync"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/hookrouter/hookrouter/router/journal"
)

// healthDoc is the admin /health document, by the field names the spec
// gives it.
type healthDoc struct {
	Status           string               `json:"status"`
	Reason           string               `json:"reason"`
	ProcessedEvents  int64                `json:"processed_events"`
	DedupKeys        int64                `json:"dedup_keys"`
	UptimeSeconds    int64                `json:"uptime_seconds"`
	ConfigFile       string               `json:"config_file"`
	ConfigGeneration uint64               `json:"config_generation"`
	ConfigLoadedAt   time.Time            `json:"config_loaded_at"`
	LastReloadError  string               `json:"last_reload_error"`
	LastReloadAt     *time.Time           `json:"last_reload_at"`
	PendingRestart   []string             `json:"pending_restart"`
	QueueBackend     string               `json:"queue_backend"`
	Sinks            map[string]sinkState `json:"sinks"`
}

type sinkState struct {
	Type              string   `json:"type"`
	Breaker           string   `json:"breaker"`
	Depth             int64    `json:"depth"`
	OldestUndelivered *float64 `json:"oldest_undelivered_seconds"`
	Delivered         int64    `json:"delivered"`
	Failed            int64    `json:"failed"`
	DeadLetters       int64    `json:"dead_letters"`
	Draining          bool     `json:"draining"`
	LastError         string   `json:"last_error"`
}

// sample is the router's counters at one moment.
type sample struct {
	at       time.Time
	health   healthDoc
	received map[string]float64            // by source
	accepted map[string]float64            // by source
	dups     map[string]float64            // by source
	rejected map[string]map[string]float64 // by source, reason
	rules    map[string]float64            // matches by rule
	ruleErrs map[string]float64            // errors by rule
	attempts map[string]map[string]float64 // by sink, result (ok | retryable | permanent)
}

// historyLen is how many samples the overview keeps: with the default 10s,
// five minutes of bars.
const historyLen = 31

// history is a ring of samples, oldest first.
type history struct {
	mu    sync.Mutex
	every time.Duration
	max   int
	s     []sample
}

func newHistory(every time.Duration, n int) *history { return &history{every: every, max: n} }

func (h *history) add(s sample) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.s) == h.max {
		h.s = slices.Delete(h.s, 0, 1)
	}
	h.s = append(h.s, s)
}

func (h *history) all() []sample {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.s)
}

// sample reads the router's health and metrics now.
func (c *Console) sample() sample {
	s := sample{at: time.Now(), health: c.health(),
		received: map[string]float64{}, accepted: map[string]float64{}, dups: map[string]float64{},
		rejected: map[string]map[string]float64{}, rules: map[string]float64{}, ruleErrs: map[string]float64{},
		attempts: map[string]map[string]float64{}}
	mfs, err := c.b.Metrics().Gather()
	if err != nil {
		c.log.Warn("console cannot gather metrics", "error", err)
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			v := m.GetCounter().GetValue()
			switch mf.GetName() {
			case "hookrouter_events_received_total":
				s.received[label(m, "source")] = v
			case "hookrouter_events_accepted_total":
				s.accepted[label(m, "source")] = v
			case "hookrouter_events_duplicate_total":
				s.dups[label(m, "source")] = v
			case "hookrouter_events_rejected_total":
				src := label(m, "source")
				if s.rejected[src] == nil {
					s.rejected[src] = map[string]float64{}
				}
				s.rejected[src][label(m, "reason")] = v
			case "hookrouter_rule_matches_total":
				s.rules[label(m, "rule")] += v
			case "hookrouter_rule_errors_total":
				s.ruleErrs[label(m, "rule")] = v
			case "hookrouter_delivery_attempts_total":
				sink := label(m, "sink")
				if s.attempts[sink] == nil {
					s.attempts[sink] = map[string]float64{}
				}
				s.attempts[sink][label(m, "result")] = v
			}
		}
	}
	return s
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

type overviewData struct {
	Health   healthDoc
	Sources  []sourceView
	Sinks    []sinkView
	Journal  journalView
	Window   string // what the rates and bars cover, e.g. "5 min"
	BarEvery string
}

type sourceView struct {
	Name, Path string
	PerSecond  string // over the last minute
	Received   int64
	Accepted   int64
	Duplicates int64
	Rejected   []reasonCount
}

type reasonCount struct {
	Reason     string
	Total      int64
	LastMinute int64
}

type sinkView struct {
	Name string
	sinkState
	Oldest string // oldest undelivered, readable
	Bars   bars
}

type journalView struct {
	On        bool
	Stats     journal.Stats
	Path      string
	Retention string
	MaxBytes  string
	Size      string
	Bodies    bool
}

// bars are a sink's delivery attempts per sample interval, drawn as a
// small SVG: those that delivered above the axis, those that failed
// (retryable or permanent) below it.
type bars struct {
	Width, Height int
	Delivered     []bar
	Failed        []bar
	MaxDelivered  int64
	MaxFailed     int64
	SumDelivered  int64
	SumFailed     int64
}

type bar struct {
	X, Y, H int
	N       int64
	Title   string
}

func (c *Console) overview(w http.ResponseWriter, r *http.Request) {
	hist := append(c.hist.all(), c.sample())
	now := hist[len(hist)-1]
	d := overviewData{Health: now.health, Window: roundDur(now.at.Sub(hist[0].at)), BarEvery: roundDur(c.hist.every)}
	minuteAgo := hist[0]
	for _, s := range hist {
		if now.at.Sub(s.at) >= time.Minute-time.Second {
			minuteAgo = s
		}
	}
	dt := now.at.Sub(minuteAgo.at).Seconds()
	for _, src := range c.b.Config().Sources {
		v := sourceView{Name: src.Name, Path: src.Path, Received: int64(now.received[src.Name]),
			Accepted: int64(now.accepted[src.Name]), Duplicates: int64(now.dups[src.Name])}
		v.PerSecond = "–"
		if dt > 0 {
			v.PerSecond = fmt.Sprintf("%.1f", (now.received[src.Name]-minuteAgo.received[src.Name])/dt)
		}
		for reason, n := range now.rejected[src.Name] {
			if n > 0 {
				v.Rejected = append(v.Rejected, reasonCount{Reason: reason, Total: int64(n),
					LastMinute: int64(n - minuteAgo.rejected[src.Name][reason])})
			}
		}
		sort.Slice(v.Rejected, func(i, j int) bool { return v.Rejected[i].Total > v.Rejected[j].Total })
		d.Sources = append(d.Sources, v)
	}
	names := make([]string, 0, len(now.health.Sinks))
	for n := range now.health.Sinks {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		st := now.health.Sinks[n]
		v := sinkView{Name: n, sinkState: st, Oldest: "–", Bars: sinkBars(hist, n)}
		if st.OldestUndelivered != nil && *st.OldestUndelivered > 0 {
			v.Oldest = roundDur(time.Duration(*st.OldestUndelivered * float64(time.Second)))
		}
		d.Sinks = append(d.Sinks, v)
	}
	if j := c.b.Journal(); j != nil {
		cfg := j.Config()
		st := j.Stats()
		d.Journal = journalView{On: true, Stats: st, Path: j.Path(), Retention: roundDur(cfg.Retention),
			MaxBytes: bytesOf(cfg.MaxBytes), Size: bytesOf(st.Bytes), Bodies: cfg.Bodies}
	}
	c.render(w, r, http.StatusOK, "overview", page{Title: "Overview", Nav: "overview", Refresh: 5, Data: d})
}

// Bar chart geometry: one bar per sample interval, delivered above the
// axis and failed below it.
const (
	barW    = 6
	barGap  = 2
	barHalf = 18
)

func sinkBars(hist []sample, sink string) bars {
	n := historyLen - 1
	b := bars{Width: n * (barW + barGap), Height: 2*barHalf + 1}
	type pair struct{ d, f int64 }
	vals := make([]pair, n)
	// The last len(hist)-1 intervals fill the right end of the chart.
	off := n - (len(hist) - 1)
	for i := 1; i < len(hist); i++ {
		a, z := hist[i-1].attempts[sink], hist[i].attempts[sink]
		ok := z["ok"] - a["ok"]
		failed := z["retryable"] + z["permanent"] - a["retryable"] - a["permanent"]
		p := pair{max(0, int64(ok)), max(0, int64(failed))}
		if off+i-1 >= 0 {
			vals[off+i-1] = p
		}
	}
	for _, p := range vals {
		b.MaxDelivered, b.MaxFailed = max(b.MaxDelivered, p.d), max(b.MaxFailed, p.f)
		b.SumDelivered += p.d
		b.SumFailed += p.f
	}
	scale := max(b.MaxDelivered, b.MaxFailed, 1)
	for i, p := range vals {
		x := i * (barW + barGap)
		if p.d > 0 {
			h := max(1, int(p.d*barHalf/scale))
			b.Delivered = append(b.Delivered, bar{X: x, Y: barHalf - h, H: h, N: p.d, Title: fmt.Sprintf("%d delivered", p.d)})
		}
		if p.f > 0 {
			h := max(1, int(p.f*barHalf/scale))
			b.Failed = append(b.Failed, bar{X: x, Y: barHalf + 1, H: h, N: p.f, Title: fmt.Sprintf("%d failed", p.f)})
		}
	}
	return b
}

// bytesOf prints n bytes readably.
func bytesOf(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	v, u := float64(n), "KMGT"
	i := -1
	for v >= unit && i < len(u)-1 {
		v /= unit
		i++
	}
	return fmt.Sprintf("%.1f %ciB", v, u[i])
}

// roundDur prints d readably: "4 s", "3 min", "2 h 5 min".
func roundDur(d time.Duration) string {
	switch {
	case d < time.Second:
		return fmt.Sprintf("%d ms", d.Milliseconds())
	case d < time.Minute:
		return fmt.Sprintf("%d s", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%d min", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%d h %d min", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%d d", int(d.Hours()/24))
}
