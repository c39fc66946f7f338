package router

import (
	"fmt"
	"hash/maphash"
	"testing"
	"time"
)

// TestRecentKeys: the recent window names the original of every one of the
// last 15 × recentPerShard accepted events (a shard holds at least
// recentPerShard of its own; keys spread over 16 shards about evenly),
// forgets older ones (its memory is bounded), and ignores an id newEventID
// did not make.
func TestRecentKeys(t *testing.T) {
	k := recentKeys{seed: maphash.MakeSeed()}
	const n = 40 * 16 * recentPerShard / 10 // four generations' worth
	ids := make([]string, n)
	now := time.Now()
	for i := range ids {
		ids[i] = newEventID(now)
		k.put(fmt.Sprintf("platform\x00key-%d", i), ids[i])
	}
	kept := 0
	for i := range ids {
		id, ok := k.get(fmt.Sprintf("platform\x00key-%d", i))
		if ok && id != ids[i] {
			t.Fatalf("key %d: got %s, want %s", i, id, ids[i])
		}
		if i >= n-15*recentPerShard && !ok {
			t.Fatalf("key %d of the last %d forgotten", i, 15*recentPerShard)
		}
		if ok {
			kept++
		}
	}
	if kept > 2*16*recentPerShard {
		t.Errorf("kept %d keys, more than two generations (%d)", kept, 2*16*recentPerShard)
	}
	k.put("platform\x00odd", "not-an-event-id")
	if id, ok := k.get("platform\x00odd"); ok {
		t.Errorf("non-id remembered as %q", id)
	}
}
