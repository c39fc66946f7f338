package dispatch

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/hookrouter/hookrouter/router/queue"
	"github.com/hookrouter/hookrouter/sinks"
)

// Record is one line of the dead-letter file: a delivery that will not be
// retried any more, with enough of its event to send it again.
type Record struct {
	Sink     string    `json:"sink"`
	EventID  string    `json:"event_id"`
	Attempts int       `json:"attempts"`
	Error    string    `json:"error"`
	FailedAt time.Time `json:"failed_at"`
	// Envelope is the event itself; Event rebuilds it as a sinks.Event.
	Envelope RecordEvent `json:"event"`
}

// RecordEvent is the event inside a Record. Payload is the body as received,
// kept as a raw JSON object (compacted onto one line).
type RecordEvent struct {
	ID         string          `json:"id"`
	Source     string          `json:"source"`
	ReceivedAt time.Time       `json:"received_at"`
	Payload    json.RawMessage `json:"payload"`
}

// ID identifies the record across copies of the dead-letter file: the event,
// the sink and when the delivery failed. Replay skips a record whose ID it
// has already replayed; a delivery that fails again after its replay is a new
// record, with a new failed_at.
func (r *Record) ID() string {
	id := r.Envelope.ID
	if id == "" {
		id = r.EventID
	}
	return id + " " + r.Sink + " " + r.FailedAt.UTC().Format(time.RFC3339Nano)
}

// Event rebuilds the dead-lettered event with its original ID, so that a
// replay carries the same X-Hookrouter-Event-Id and receivers can
// deduplicate it.
func (r *Record) Event() *sinks.Event {
	id := r.Envelope.ID
	if id == "" {
		id = r.EventID
	}
	body := []byte(r.Envelope.Payload)
	// A body that was not valid JSON was kept as a JSON string; give back
	// its bytes, not the quoted form.
	var s string
	if len(body) > 0 && body[0] == '"' && json.Unmarshal(body, &s) == nil {
		body = []byte(s)
	}
	return &sinks.Event{ID: id, Source: r.Envelope.Source, ReceivedAt: r.Envelope.ReceivedAt, Body: body}
}

// DeadLetters appends Records to a JSON-lines file. Every record is fsynced
// before Write returns: dead letters are rare and are the last copy of an
// event. It is safe for concurrent use.
type DeadLetters struct {
	path string
	mu   sync.Mutex
	f    *os.File
	fi   os.FileInfo // of f, to notice that path was moved or deleted
}

// OpenDeadLetters opens (creating it, mode 0600 since payloads may be
// personal data) the dead-letter file at path for appending. It fails if
// the file cannot be created or written, so that a misconfigured data_dir
// is found at start, not when the first delivery fails.
func OpenDeadLetters(path string) (*DeadLetters, error) {
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("dead letters: %w", err)
		}
	}
	dl := &DeadLetters{path: path}
	if err := dl.open(); err != nil {
		return nil, err
	}
	return dl, nil
}

// open opens (creating it) the file at dl.path; dl.mu is held or dl is new.
func (dl *DeadLetters) open() error {
	f, err := os.OpenFile(dl.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("dead letters: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("dead letters: %w", err)
	}
	dl.f, dl.fi = f, fi
	return nil
}

// Reopen closes the file and opens the one at its path again, creating it
// if it was moved or deleted (SIGHUP, after an operator moved it aside).
func (dl *DeadLetters) Reopen() error {
	dl.mu.Lock()
	defer dl.mu.Unlock()
	if dl.f == nil {
		return fmt.Errorf("dead letters: %w", os.ErrClosed)
	}
	old := dl.f
	if err := dl.open(); err != nil {
		return err
	}
	old.Close()
	return nil
}

// current reopens the file if its path no longer names it (moved or
// deleted), so that a record is never written where nobody will look: a
// stat per dead letter, which are rare. dl.mu is held.
func (dl *DeadLetters) current() error {
	if fi, err := os.Stat(dl.path); err == nil && os.SameFile(fi, dl.fi) {
		return nil
	}
	old := dl.f
	if err := dl.open(); err != nil {
		return err
	}
	old.Close()
	return nil
}

// Path is the file the records go to.
func (dl *DeadLetters) Path() string { return dl.path }

// Write appends rec and syncs it to disk.
func (dl *DeadLetters) Write(rec *Record) error {
	if len(rec.Envelope.Payload) == 0 {
		rec.Envelope.Payload = json.RawMessage("null")
	}
	line, err := encodeRecord(rec)
	if err != nil {
		// The payload was not valid JSON (ingress only accepts objects, so
		// this is a replayed or hand-edited event): keep its bytes as a string.
		q, _ := json.Marshal(string(rec.Envelope.Payload))
		rec.Envelope.Payload = q
		if line, err = encodeRecord(rec); err != nil {
			return fmt.Errorf("dead letters: encode: %w", err)
		}
	}
	dl.mu.Lock()
	defer dl.mu.Unlock()
	if dl.f == nil {
		return fmt.Errorf("dead letters: %w", os.ErrClosed)
	}
	if err := dl.current(); err != nil {
		return err
	}
	if _, err := dl.f.Write(line); err != nil {
		return fmt.Errorf("dead letters: write: %w", err)
	}
	if err := dl.f.Sync(); err != nil {
		return fmt.Errorf("dead letters: sync: %w", err)
	}
	return nil
}

// encodeRecord renders rec as one line, newline included. HTML escaping is
// off so that the payload keeps its characters ('<', '&') as received.
func encodeRecord(rec *Record) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(rec); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Close closes the file; Write fails afterwards.
func (dl *DeadLetters) Close() error {
	dl.mu.Lock()
	defer dl.mu.Unlock()
	if dl.f == nil {
		return nil
	}
	err := dl.f.Close()
	dl.f = nil
	if err != nil {
		return fmt.Errorf("dead letters: close: %w", err)
	}
	return nil
}

// newRecord builds the record of d failing with errText at now.
func newRecord(d *queue.Delivery, errText string, now time.Time) *Record {
	ev := d.Event
	return &Record{
		Sink:     d.Sink,
		EventID:  ev.ID,
		Attempts: d.Attempts,
		Error:    errText,
		FailedAt: now.UTC(),
		Envelope: RecordEvent{
			ID:         ev.ID,
			Source:     ev.Source,
			ReceivedAt: ev.ReceivedAt.UTC(),
			Payload:    json.RawMessage(ev.Body),
		},
	}
}

// ReadDeadLetters reads a dead-letter file. Blank lines are skipped; a line
// that is not a record fails the whole read with its line number, so that a
// replay never silently skips an event.
func ReadDeadLetters(r io.Reader) ([]Record, error) {
	br := bufio.NewReader(r)
	var out []Record
	for n := 1; ; n++ {
		line, err := br.ReadBytes('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return out, fmt.Errorf("dead letters: line %d: %w", n, err)
		}
		if t := bytes.TrimSpace(line); len(t) > 0 {
			var rec Record
			if uerr := json.Unmarshal(t, &rec); uerr != nil {
				return out, fmt.Errorf("dead letters: line %d: %w", n, uerr)
			}
			if rec.Sink == "" || (rec.EventID == "" && rec.Envelope.ID == "") {
				return out, fmt.Errorf("dead letters: line %d: not a dead-letter record (no sink or event id)", n)
			}
			out = append(out, rec)
		}
		if err != nil { // io.EOF, after the last line
			return out, nil
		}
	}
}
