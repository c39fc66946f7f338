package file

import (
	"bytes"
	"encoding/json"
	"errors"
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

// ParseFormat checks a `format` setting; empty means FormatPayload.
func ParseFormat(s string) (Format, error) {
	switch Format(s) {
	case "", FormatPayload:
		return FormatPayload, nil
	case FormatEnvelope:
		return FormatEnvelope, nil
	}
	return "", errors.New("must be payload or envelope")
}

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
	if err := json.Compact(buf, ev.Body); err != nil {
		buf.Truncate(n)
		return err
	}
	if f == FormatEnvelope {
		buf.WriteByte('}')
	}
	buf.WriteByte('\n')
	return nil
}
