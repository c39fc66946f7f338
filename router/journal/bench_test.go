package journal

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
)

// BenchmarkWriter measures the writer: records committed per second, an
// accepted event with one delivery step each (what one routed event costs).
// Dedup keys are random, as a platform's message ids are: keys in order
// would hide what an index on them costs (schema).
func BenchmarkWriter(b *testing.B) {
	j, err := Open(b.TempDir(), DefaultConfig(), Options{QueueSize: 1 << 20, CPUShare: 1})
	if err != nil {
		b.Fatal(err)
	}
	defer j.Close(context.Background())
	payload := json.RawMessage(`{"event":"channel.message_in","timestamp":1738056000,"need_human":1,"message":{"id":"m1","sender_name":"Test User","channel":{"id":"c","name":"WhatsApp Business","engine":"wa"},"content":{"type":"text","text":"Halo, saya butuh bantuan"}}}`)
	names := []string{"all", "drop", "wa", "human", "devices"}
	now := time.Now()
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		id := fmt.Sprintf("%032d", i)
		ev := &Event{ID: id, ReceivedAt: now, Source: "platform", Event: "channel.message_in", DedupKey: fmt.Sprintf("k%016x", rand.Uint64()),
			Verdict: Accepted, Status: 200, Sinks: []string{"archive"}, Payload: payload}
		ev.SetRules(names, []int{0, 2, 3}, nil, nil)
		j.RecordEvent(ev)
		j.RecordStep(Step{EventID: id, Sink: "archive", State: Delivered, At: now, DurationMS: 0.1, Outcome: OK})
		if i%4096 == 4095 {
			j.Flush(context.Background())
		}
	}
	j.Flush(context.Background())
	b.StopTimer()
	if d := j.Stats().Dropped; d > 0 {
		b.Fatalf("%d dropped", d)
	}
}
