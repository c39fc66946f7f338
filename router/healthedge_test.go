package router

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"
)

// ingressHealthOf reads the ingress listener's short /health.
func ingressHealthOf(t *testing.T, s *server) (int, ingressHealth) {
	t.Helper()
	a := s.get("/health")
	var h ingressHealth
	if err := json.Unmarshal([]byte(a.body), &h); err != nil {
		t.Fatalf("ingress /health: %v: %s", err, a.body)
	}
	return a.status, h
}

// TestHealthDegradedWhileRefusing (issue 12 item 7): with the queue full and
// events answered 503, both /health documents say "degraded" with the reason
// (still 200); once an event is accepted again, "healthy". While a sink
// holds deliveries, its oldest_undelivered_seconds and the
// hookrouter_queue_oldest_seconds gauge grow; dead_letters counts.
func TestHealthDegradedWhileRefusing(t *testing.T) {
	d := newCapture(t)
	d.holdRequests()
	s := startServer(t, oneSink(d, "workers: 1, timeout: 10s", "{backend: memory, max_bytes: 2KiB}"))
	if m := s.metric(`hookrouter_config_reloads_total{result="success"}`); m != `hookrouter_config_reloads_total{result="success"} 0` {
		t.Errorf("config_reloads_total before any reload: %q, want present at 0", m)
	}
	if st, h := ingressHealthOf(t, s); st != 200 || h.Status != "healthy" {
		t.Fatalf("health at start: %d %+v", st, h)
	}
	accepted := 0
	for i := 0; ; i++ {
		a := s.post("/webhook", message(fmt.Sprint("fill-", i)))
		if a.status == 503 {
			break
		}
		if accepted++; accepted > 100 {
			t.Fatal("queue never filled")
		}
	}
	st, h := ingressHealthOf(t, s)
	if st != 200 || h.Status != "degraded" || !strings.Contains(h.Reason, "queue full") {
		t.Errorf("ingress health with the queue full: %d %+v, want 200 degraded with the reason", st, h)
	}
	full := s.health()
	if full.Status != "degraded" || !strings.Contains(full.Reason, "queue full") {
		t.Errorf("admin health with the queue full: %q %q", full.Status, full.Reason)
	}
	// The age grows while the deliveries are held.
	waitFor(t, 5*time.Second, "oldest_undelivered_seconds ≥ 1", func() bool {
		return s.health().Sinks["hook"].OldestUndeliveredSeconds >= 1
	})
	waitFor(t, 5*time.Second, "queue_oldest_seconds gauge ≥ 1", func() bool {
		m := s.metric(`hookrouter_queue_oldest_seconds{sink="hook"}`)
		v, err := strconv.ParseFloat(m[strings.LastIndexByte(m, ' ')+1:], 64)
		return m != "" && err == nil && v >= 1
	})

	d.release()
	waitFor(t, 5*time.Second, "queue drained", func() bool { return d.count() == accepted })
	if a := s.post("/webhook", message("after")); a.status != 200 {
		t.Fatalf("post after drain: %d", a.status)
	}
	if st, h := ingressHealthOf(t, s); st != 200 || h.Status != "healthy" || h.Reason != "" {
		t.Errorf("health once accepting again: %d %+v", st, h)
	}
	waitFor(t, 5*time.Second, "empty queue", func() bool { return s.health().Sinks["hook"].Depth == 0 })
	if lane := s.health().Sinks["hook"]; lane.OldestUndeliveredSeconds != 0 {
		t.Errorf("oldest_undelivered_seconds with nothing owed = %v", lane.OldestUndeliveredSeconds)
	}

	// A permanent failure is dead-lettered and counted per sink.
	d.setStatus(400)
	if a := s.post("/webhook", message("refused-by-sink")); a.status != 200 {
		t.Fatal(a.status)
	}
	waitFor(t, 5*time.Second, "dead_letters 1", func() bool { return s.health().Sinks["hook"].DeadLetters == 1 })
}

// TestHealthDegradedDedupStoreDown: with the Redis dedup store killed,
// /health is "degraded" naming the dedup store; once Redis is back,
// "healthy".
func TestHealthDegradedDedupStoreDown(t *testing.T) {
	rd := startOwnRedis(t)
	d := newCapture(t)
	s := startServer(t, oneSink(d, "workers: 1", "{backend: memory}")+
		fmt.Sprintf("dedup: {store: redis, redis_url: %s/0, timeout: 500ms}\n", rd.url("redis")))
	if st, h := ingressHealthOf(t, s); st != 200 || h.Status != "healthy" {
		t.Fatalf("health at start: %d %+v", st, h)
	}
	rd.killHard()
	if a := s.post("/webhook", message("while-down")); a.status != 503 || a.header.Get("Retry-After") == "" {
		t.Errorf("post with Redis down: %d Retry-After %q", a.status, a.header.Get("Retry-After"))
	}
	st, h := ingressHealthOf(t, s)
	if st != 200 || h.Status != "degraded" || !strings.Contains(h.Reason, "dedup store") {
		t.Errorf("health with Redis down: %d %+v, want 200 degraded naming the dedup store", st, h)
	}
	rd.start()
	waitFor(t, 10*time.Second, "accepted again", func() bool { return s.post("/webhook", message("back")).status == 200 })
	if st, h := ingressHealthOf(t, s); st != 200 || h.Status != "healthy" {
		t.Errorf("health with Redis back: %d %+v", st, h)
	}
}
