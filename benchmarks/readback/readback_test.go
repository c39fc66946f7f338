package main

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// The redis reader counts the entries written to the machine's Redis, a
// re-delivery as a duplicate and a payload that is not JSON as invalid.
func TestRedisReader(t *testing.T) {
	key := fmt.Sprintf("hrbench_test_%d", time.Now().UnixNano())
	r := &redisReader{url: "redis://127.0.0.1:6379/0", key: key}
	c := &counter{seen: map[string]struct{}{}}
	if err := r.Start(t.Context(), c); err != nil {
		t.Fatalf("start: %v", err)
	}
	defer r.Stop(context.Background())
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379"})
	defer rdb.Close()
	for _, e := range []struct{ id, payload string }{{"ev_1", `{"a":1}`}, {"ev_2", `{"a":2}`}, {"ev_1", `{"a":1}`}, {"ev_3", `not json`}} {
		if err := rdb.XAdd(t.Context(), &redis.XAddArgs{Stream: key, Values: []string{"id", e.id, "payload", e.payload}}).Err(); err != nil {
			t.Fatal(err)
		}
	}
	want := stats{Received: 4, Unique: 3, Duplicates: 1, Invalid: 1}
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := c.snapshot()
		got.LastAt = 0
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("stats %+v, want %+v", got, want)
		}
		time.Sleep(20 * time.Millisecond) // polling a condition with a deadline
	}
}
