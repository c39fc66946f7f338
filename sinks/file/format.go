package file

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/hookrouter/hookrouter/sinks"
	"github.com/hookrouter/hookrouter/sinks/render"
)

// Format is how an event becomes one JSON line. The stdout sink shares it.
type Format string

const (
	// FormatPayload writes the payload as received, compacted to one line.
	FormatPayload Format = "payload"
	// FormatEnvelope writes {"id","source","received_at","payload"}, with
	// received_at in RFC 3339 with nanoseconds, UTC.
	FormatEnvelope Format = "envelope"
)

// WriteLine appends ev to buf as one line in format f, newline included. The
// payload's own bytes are compacted, not re-encoded, so numbers and key order
// stay as the sender wrote them. On error buf is left as it was.
func WriteLine(buf *bytes.Buffer, ev *sinks.Event, f Format) error {
	n := buf.Len()
	if f == FormatEnvelope {
		b := buf.AvailableBuffer()
		b = append(b, `{"id":`...)
		b = render.AppendJSONString(b, ev.ID)
		b = append(b, `,"source":`...)
		b = render.AppendJSONString(b, ev.Source)
		b = append(b, `,"received_at":"`...)
		b = ev.ReceivedAt.UTC().AppendFormat(b, time.RFC3339Nano)
		b = append(b, `","payload":`...)
		buf.Write(b)
	}
	if err := compact(buf, ev.Body); err != nil {
		buf.Truncate(n)
		return err
	}
	if f == FormatEnvelope {
		buf.WriteByte('}')
	}
	buf.WriteByte('\n')
	return nil
}

// compact appends body without the whitespace between its tokens. Bodies
// reaching a sink were validated as JSON objects at ingress, so this only
// drops whitespace outside strings, several times faster than json.Compact,
// which validates again; anything that does not look like an object still
// goes through json.Compact, which reports it.
//
// Most of a payload's bytes are inside strings, which it skips with
// bytes.IndexByte (vectorised) rather than byte by byte: a quote ends the
// string unless an odd number of backslashes precedes it.
func compact(buf *bytes.Buffer, body []byte) error {
	body = bytes.TrimSpace(body)
	if len(body) < 2 || body[0] != '{' || body[len(body)-1] != '}' {
		return json.Compact(buf, body)
	}
	start := 0
	for i := 0; i < len(body); i++ {
		switch body[i] {
		case '"':
			i = stringEnd(body, i)
		case ' ', '\t', '\n', '\r':
			buf.Write(body[start:i])
			start = i + 1
		}
	}
	buf.Write(body[start:])
	return nil
}

// stringEnd returns the index of the quote closing the string that opens at
// body[open], or len(body) if it is not closed.
func stringEnd(body []byte, open int) int {
	for j := open + 1; ; j++ {
		k := bytes.IndexByte(body[j:], '"')
		if k < 0 {
			return len(body)
		}
		j += k
		backslashes := 0
		for p := j - 1; body[p] == '\\'; p-- { // stops at body[open], a quote
			backslashes++
		}
		if backslashes%2 == 0 {
			return j
		}
	}
}

// WriteBatch renders the lines of evs into buf and hands them to write in
// one call: the batch path shared by the line-writing sinks (what names the
// sink in errors). It returns nil when every event was written, else one
// error per event: a payload that cannot be rendered fails its own event
// permanently; a done ctx or a failed write fails every other event,
// retryably.
func WriteBatch(ctx context.Context, buf *bytes.Buffer, evs []*sinks.Event, f Format, what string, write func([]byte) error) []error {
	var errs []error
	fail := func(i int, err error) {
		if errs == nil {
			errs = make([]error, len(evs))
		}
		errs[i] = err
	}
	if err := ctx.Err(); err != nil {
		for i := range evs {
			fail(i, fmt.Errorf("%s: %w", what, err))
		}
		return errs
	}
	for i, ev := range evs {
		if err := WriteLine(buf, ev, f); err != nil {
			fail(i, sinks.Permanent(fmt.Errorf("%s: payload: %w", what, err)))
		}
	}
	if buf.Len() == 0 {
		return errs
	}
	if err := write(buf.Bytes()); err != nil {
		for i := range evs {
			if errs == nil || errs[i] == nil {
				fail(i, err)
			}
		}
	}
	return errs
}
