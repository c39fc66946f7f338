package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/hookrouter/hookrouter/router"
	"github.com/hookrouter/hookrouter/router/dispatch"
)

// replay is `hookrouter replay`: it sends a dead-letter file to the running
// router (POST /-/replay on its admin address), which re-queues each record
// to its sink with the event's original id. Going through the running
// process keeps one owner of the queue, with its durability and metrics.
func replay(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("replay", flag.ContinueOnError)
	fs.SetOutput(stderr)
	client := adminFlags(fs)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(stderr, "usage: hookrouter replay [-config FILE] [-addr ADMIN] DEAD_LETTER_FILE")
		return 2
	}
	data, err := os.ReadFile(fs.Arg(0))
	if err != nil {
		fmt.Fprintf(stderr, "hookrouter replay: %v\n", err)
		return 1
	}
	recs, err := dispatch.ReadDeadLetters(bytes.NewReader(data))
	if err != nil {
		fmt.Fprintf(stderr, "hookrouter replay: %s: %v\n", fs.Arg(0), err)
		return 1
	}
	if len(recs) == 0 {
		fmt.Fprintln(stdout, "nothing to replay: 0 records")
		return 0
	}
	c, err := client()
	if err != nil {
		return fail(stderr, "replay", err)
	}
	url := c.base + "/-/replay"
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(data))
	if err != nil {
		fmt.Fprintf(stderr, "hookrouter replay: %v\n", err)
		return 1
	}
	req.Header.Set("Content-Type", "application/x-ndjson")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	hc := &http.Client{Timeout: 60 * time.Second}
	resp, err := hc.Do(req)
	if err != nil {
		fmt.Fprintf(stderr, "hookrouter replay: is hookrouter running? %v\n", err)
		return 1
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintf(stderr, "hookrouter replay: %s answered %s: %s\n", url, resp.Status, bytes.TrimSpace(body))
		return 1
	}
	var res router.ReplayResult
	if err := json.Unmarshal(body, &res); err != nil {
		fmt.Fprintf(stderr, "hookrouter replay: unexpected answer: %s\n", body)
		return 1
	}
	for _, e := range res.Errors {
		fmt.Fprintln(stderr, e)
	}
	fmt.Fprintf(stdout, "requeued %d of %d records, skipped %d\n", res.Requeued, len(recs), res.Skipped)
	if res.Skipped > 0 {
		return 1
	}
	return 0
}

// loopback turns a listen address such as ":3000" or "0.0.0.0:3000" into one
// to dial on this machine.
func loopback(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}
