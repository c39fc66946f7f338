package disk

import (
	"bytes"
	"encoding/binary"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hookrouter/hookrouter/sinks"
)

// keysOf collects what q.Keys hands back, in order.
func keysOf(t *testing.T, q *Queue) []string {
	t.Helper()
	var out []string
	if err := q.Keys(func(key string, expires time.Time) {
		if !expires.After(time.Now()) {
			t.Errorf("key %q handed back expired (%v)", key, expires)
		}
		out = append(out, key)
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

func keyed(id string, expires time.Time) *sinks.Event {
	ev := event(id, 200)
	ev.DedupKey, ev.DedupExpires = "platform\x00"+id, expires
	return ev
}

// TestKeysSurviveRestart checks that the dedup key of every event Put is
// handed back after a restart, whether the event was delivered in the
// same write as its Put, delivered later, still owed, or never queued
// (KeepKey); that expired keys are not; and that the expiry comes back as
// it was given.
func TestKeysSurviveRestart(t *testing.T) {
	dir := t.TempDir()
	q, err := Open(dir, 1<<30, nil, KeepKeys(100))
	if err != nil {
		t.Fatal(err)
	}
	hour := time.Now().Add(time.Hour).Truncate(time.Microsecond)
	put(t, q, keyed("early", hour), "a")
	if err := q.Done(take(t, q, "a")); err != nil {
		t.Fatal(err)
	}
	put(t, q, keyed("late", hour.Add(time.Second)), "a", "b")
	q.flush()
	if err := q.Done(take(t, q, "a")); err != nil {
		t.Fatal(err)
	}
	if err := q.Done(take(t, q, "b")); err != nil {
		t.Fatal(err)
	}
	// Still owed at the restart.
	put(t, q, keyed("owed", hour.Add(2*time.Second)), "c")
	// Unrouted.
	if err := q.KeepKey("platform\x00unrouted", hour.Add(-time.Second)); err != nil {
		t.Fatal(err)
	}
	// Expires while hookrouter is stopped: not handed back.
	staleExp := time.Now().Add(30 * time.Millisecond)
	if err := q.KeepKey("platform\x00stale", staleExp); err != nil {
		t.Fatal(err)
	}
	// Expired when delivered: not kept.
	put(t, q, keyed("short", time.Now().Add(-time.Millisecond)), "a")
	if err := q.Done(take(t, q, "a")); err != nil {
		t.Fatal(err)
	}
	// No key at all (a queue used without dedup): nothing kept.
	put(t, q, event("nokey", 100), "a")
	if err := q.Done(take(t, q, "a")); err != nil {
		t.Fatal(err)
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	for !time.Now().After(staleExp) {
		time.Sleep(5 * time.Millisecond) // until "stale" has expired
	}
	q, err = Open(dir, 1<<30, nil, KeepKeys(100))
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	var got []string
	exp := map[string]time.Time{}
	if err := q.Keys(func(key string, expires time.Time) {
		got = append(got, key)
		exp[key] = expires
	}); err != nil {
		t.Fatal(err)
	}
	want := []string{"platform\x00unrouted", "platform\x00early", "platform\x00late", "platform\x00owed"}
	if !slices.Equal(got, want) {
		t.Fatalf("Keys = %q, want %q (kept oldest first, then owed)", got, want)
	}
	if !exp["platform\x00late"].Equal(hour.Add(time.Second)) {
		t.Fatalf("expiry of late = %v, want %v", exp["platform\x00late"], hour.Add(time.Second))
	}
	// The owed event is delivered with its key in the event, as Put.
	d := take(t, q, "c")
	if d.Event.DedupKey != "platform\x00owed" || !d.Event.DedupExpires.Equal(hour.Add(2*time.Second)) {
		t.Fatalf("taken event key %q %v", d.Event.DedupKey, d.Event.DedupExpires)
	}
}

// TestKeysBounded checks that at most max_keys kept keys stay, the ones
// expiring first dropped, across applies and a restart.
func TestKeysBounded(t *testing.T) {
	dir := t.TempDir()
	q, err := Open(dir, 1<<30, nil, KeepKeys(3))
	if err != nil {
		t.Fatal(err)
	}
	base := time.Now().Add(time.Hour)
	for i := range 5 {
		id := string(rune('a' + i))
		put(t, q, keyed(id, base.Add(time.Duration(i)*time.Second)), "s")
		if err := q.Done(take(t, q, "s")); err != nil {
			t.Fatal(err)
		}
		if i == 1 {
			q.flush()
		}
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	q, err = Open(dir, 1<<30, nil, KeepKeys(3))
	if err != nil {
		t.Fatal(err)
	}
	got := keysOf(t, q)
	if want := []string{"platform\x00c", "platform\x00d", "platform\x00e"}; !slices.Equal(got, want) {
		t.Fatalf("Keys = %q, want %q", got, want)
	}
	// New keys after the restart number past the old ones: none overwritten.
	if err := q.KeepKey("platform\x00f", base.Add(10*time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	q, err = Open(dir, 1<<30, nil, KeepKeys(3))
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	if got, want := keysOf(t, q), []string{"platform\x00d", "platform\x00e", "platform\x00f"}; !slices.Equal(got, want) {
		t.Fatalf("Keys = %q, want %q", got, want)
	}
}

// TestKeysOffByDefault checks that without KeepKeys nothing is kept after
// delivery (a redis dedup store keeps its own keys).
func TestKeysOffByDefault(t *testing.T) {
	dir := t.TempDir()
	q := mustOpen(t, dir, 1<<30)
	put(t, q, keyed("x", time.Now().Add(time.Hour)), "a")
	if err := q.Done(take(t, q, "a")); err != nil {
		t.Fatal(err)
	}
	if err := q.KeepKey("platform\x00y", time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	q = mustOpen(t, dir, 1<<30)
	defer q.Close()
	if got := keysOf(t, q); len(got) != 0 {
		t.Fatalf("Keys = %q, want none", got)
	}
}

// TestEventRecordV1 checks that an event record written before dedup keys
// were stored (version 1) is still read.
func TestEventRecordV1(t *testing.T) {
	key := seqKey(7)
	b := []byte{0, 0, 0, 0, 1}
	b = binary.AppendUvarint(b, 2)
	b = append(b, "id"...)
	b = binary.AppendUvarint(b, 3)
	b = append(b, "src"...)
	b = binary.BigEndian.AppendUint64(b, uint64(time.Unix(5, 0).UnixNano()))
	b = append(b, `{"a":1}`...)
	binary.BigEndian.PutUint32(b, checksum(key, b[4:]))
	ev, err := decodeEvent(key, b, true)
	if err != nil {
		t.Fatal(err)
	}
	if ev.ID != "id" || ev.Source != "src" || string(ev.Body) != `{"a":1}` || ev.DedupKey != "" || !ev.ReceivedAt.Equal(time.Unix(5, 0)) {
		t.Fatalf("decoded %+v", ev)
	}
	b[len(b)-1] ^= 1
	if _, err := decodeEvent(key, b, true); err == nil {
		t.Fatal("a flipped byte was not detected")
	}
}

// TestKeyRecordDamaged flips a byte of one kept key in the log: Open
// reports the damage (an ERROR, the segment kept as found), the damaged
// key is dropped and the others are kept.
func TestKeyRecordDamaged(t *testing.T) {
	dir := t.TempDir()
	q, err := Open(dir, 1<<30, nil, KeepKeys(100))
	if err != nil {
		t.Fatal(err)
	}
	exp := time.Now().Add(time.Hour)
	for _, id := range []string{"one", "two-damaged", "three"} {
		put(t, q, event(id, 200), "a")
		if err := q.KeepKey("platform\x00"+id, exp); err != nil {
			t.Fatal(err)
		}
		q.flush()
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	segs, _ := segFiles(t, dir)
	var hits int
	for _, path := range segs {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if i := bytes.Index(b, []byte("platform\x00two-damaged")); i >= 0 {
			hits += bytes.Count(b, []byte("platform\x00two-damaged"))
			b[i+10] ^= 0x20
			if err := os.WriteFile(path, b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	if hits != 1 {
		t.Fatalf("key found %d times in the log", hits)
	}
	var logs logBuf
	q, err = Open(dir, 1<<30, logs.logger(), KeepKeys(100))
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	if got, want := keysOf(t, q), []string{"platform\x00one", "platform\x00three"}; !slices.Equal(got, want) {
		t.Fatalf("Keys = %q, want %q", got, want)
	}
	if !strings.Contains(logs.String(), "level=ERROR") || !strings.Contains(logs.String(), "queue salvage finished") {
		t.Fatalf("damage not logged as such:\n%s", logs.String())
	}
	if q.Depth("a") != 3 {
		t.Fatalf("depth %d, want 3", q.Depth("a"))
	}
}

// TestOldestUncached checks queue.Ager on deliveries that hold no event in
// memory (nothing cached): the acceptance time is known after Put and after
// a restart, without the event.
func TestOldestUncached(t *testing.T) {
	dir := t.TempDir()
	q, err := open(dir, 1<<30, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	first := event("first", 300)
	first.ReceivedAt = time.Unix(1700000000, 0)
	put(t, q, first, "a")
	second := event("second", 300)
	second.ReceivedAt = time.Unix(1700000100, 0)
	put(t, q, second, "a")
	if at, ok := q.Oldest("a"); !ok || !at.Equal(first.ReceivedAt) {
		t.Fatalf("Oldest after Put = %v, %v; want %v", at, ok, first.ReceivedAt)
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	q, err = open(dir, 1<<30, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	if at, ok := q.Oldest("a"); !ok || !at.Equal(first.ReceivedAt) {
		t.Fatalf("Oldest after a restart = %v, %v; want %v", at, ok, first.ReceivedAt)
	}
	if d := take(t, q, "a"); d.Event == nil || d.Event.ID != "first" {
		t.Fatalf("taken %+v", d.Event)
	}
}
