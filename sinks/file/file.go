// Package file appends events to a JSON-lines file, one line per event, in
// the payload or envelope Format.
//
// Send returns once its line has been handed to the operating system
// (write(2) done, not fsync): a crash of hookrouter loses nothing that Send
// reported written, a crash of the machine may lose what was written in the
// last FlushInterval. Concurrent Sends are group-written: while one write is
// in progress, the lines of other Sends gather in one buffer, and one of
// their senders writes them all at once when it ends, so throughput grows
// with concurrency and lines never interleave.
package file

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/hookrouter/hookrouter/sinks"
)

// maxSpare bounds the batch buffer kept for reuse, so that one burst of big
// events does not pin memory.
const maxSpare = 1 << 20

var (
	_ sinks.Sink        = (*Sink)(nil)
	_ sinks.Renderer    = (*Sink)(nil)
	_ sinks.Reopener    = (*Sink)(nil)
	_ sinks.BatchSender = (*Sink)(nil)
	_ sinks.Provisioner = (*Sink)(nil)
)

// Sink appends events to one file. It is safe for concurrent use.
type Sink struct {
	path      string
	format    Format
	syncEvery time.Duration
	log       *slog.Logger
	lines     sync.Pool // *bytes.Buffer, one event's line

	mu   sync.Mutex
	cond sync.Cond // broadcast when the writer role is released
	// writing means one goroutine holds the writer role: it alone uses f,
	// to write a batch, fsync, reopen or close, with mu released.
	writing bool
	cur     *batch // lines waiting for the next write
	spare   []byte // a written batch's buffer, for the next batch
	f       *os.File
	closed  bool
	dirty   bool // written since the last fsync
	timer   *time.Timer
	armed   bool   // timer will fire
	lastErr string // last fsync failure logged, to log changes only

	// counters read by tests
	writes, syncs int
}

// batch is the lines written by one write(2), and how that went.
type batch struct {
	buf  []byte
	done bool
	err  error
}

// New checks cfg and builds the sink. It does no I/O: the file is opened by
// the first Send. Errors are sinks.FieldErrors naming the field: path or
// format.
func New(cfg Config, log *slog.Logger) (*Sink, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cfg.Default()
	if errs := cfg.Validate(); len(errs) > 0 {
		return nil, errs[0]
	}
	s := &Sink{path: cfg.Path, format: cfg.Format, syncEvery: cfg.FlushInterval, log: log}
	s.cond.L = &s.mu
	s.lines.New = func() any { return new(bytes.Buffer) }
	return s, nil
}

// Send appends ev's line and returns once it is written to the file. An event
// whose body is not JSON fails permanently; I/O failures are retryable. A
// ctx done before the call is refused; once the line is queued, Send waits
// for the write however long it takes.
func (s *Sink) Send(ctx context.Context, ev *sinks.Event) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("file sink: %w", err)
	}
	line := s.lines.Get().(*bytes.Buffer)
	defer s.putLine(line)
	if err := WriteLine(line, ev, s.format); err != nil {
		return sinks.Permanent(fmt.Errorf("file sink: payload: %w", err))
	}
	return s.append(line.Bytes())
}

// SendBatch appends the lines of evs, in order, and returns once they are
// written to the file: Send for many events, with their lines joining the
// next group write together. An event whose body is not JSON fails
// permanently and the others are still written; an I/O failure fails every
// event whose line was in the write.
func (s *Sink) SendBatch(ctx context.Context, evs []*sinks.Event) []error {
	lines := s.lines.Get().(*bytes.Buffer)
	defer s.putLine(lines)
	return WriteBatch(ctx, lines, evs, s.format, "file sink", s.append)
}

// append adds lines to the batch being gathered and waits until that batch
// is written, writing it itself if no write is in progress.
func (s *Sink) append(lines []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return fmt.Errorf("file sink: %w", sinks.ErrClosed)
	}
	if s.cur == nil {
		s.cur = &batch{buf: s.spare}
		s.spare = nil
	}
	b := s.cur
	b.buf = append(b.buf, lines...)
	for !b.done {
		if s.writing {
			s.cond.Wait()
			continue
		}
		// No write in progress: b is s.cur, and this sender writes it, with
		// every line that joined it in the meantime.
		s.writeLocked()
	}
	return b.err
}

func (s *Sink) putLine(b *bytes.Buffer) {
	if b.Cap() <= 64<<10 {
		b.Reset()
		s.lines.Put(b)
	}
}

// writeLocked writes s.cur. It is called with mu held and the writer role
// free; it releases mu during the write, and returns with mu held.
func (s *Sink) writeLocked() {
	b := s.cur
	s.cur = nil
	s.writing = true
	s.mu.Unlock()
	err := s.write(b.buf)
	s.mu.Lock()
	s.writing = false
	s.writes++
	b.done, b.err = true, err
	if cap(b.buf) <= maxSpare && s.spare == nil {
		s.spare = b.buf[:0]
	}
	b.buf = nil
	if err == nil {
		s.dirty = true
		s.armSyncLocked()
	}
	s.cond.Broadcast()
}

// write appends buf to the file, opening it if needed. Only the holder of
// the writer role calls it.
func (s *Sink) write(buf []byte) error {
	if s.f == nil {
		f, err := s.open()
		if err != nil {
			return err
		}
		s.f = f
	}
	n, err := s.f.Write(buf)
	if err == nil {
		return nil
	}
	if n > 0 && n < len(buf) {
		// End the torn line so that the retried event starts a line of its
		// own; best effort, the disk is failing.
		_, _ = s.f.Write([]byte{'\n'})
	}
	// Start again from a fresh descriptor on the next write.
	_ = s.f.Close()
	s.f = nil
	return fmt.Errorf("file sink: %w", err)
}

// Provision opens the file now, creating missing directories, so that a
// path that cannot be written to is refused with the config rather than
// failing every delivery. The error is a sinks.FieldError about path.
func (s *Sink) Provision(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.writing {
		s.cond.Wait()
	}
	if s.closed {
		return sinks.ErrClosed
	}
	if s.f != nil {
		return nil
	}
	f, err := s.open()
	if err != nil {
		return sinks.Errorf("path", "cannot be opened for appending: %v", errors.Unwrap(err))
	}
	s.f = f
	return nil
}

func (s *Sink) open() (*os.File, error) {
	if err := os.MkdirAll(filepath.Dir(s.path), 0o755); err != nil {
		return nil, fmt.Errorf("file sink: %w", err)
	}
	f, err := os.OpenFile(s.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("file sink: %w", err)
	}
	return f, nil
}

// armSyncLocked schedules an fsync FlushInterval from now unless one is
// already due sooner.
func (s *Sink) armSyncLocked() {
	if s.armed || s.syncEvery < 0 || s.closed {
		return
	}
	s.armed = true
	if s.timer == nil {
		s.timer = time.AfterFunc(s.syncEvery, s.syncTick)
	} else {
		s.timer.Reset(s.syncEvery)
	}
}

// syncTick fsyncs the file if anything was written since the last time.
// Writers wait for it; the lines arriving meanwhile gather into one batch.
func (s *Sink) syncTick() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.armed = false
	for s.writing {
		s.cond.Wait()
	}
	if s.closed || !s.dirty || s.f == nil {
		return
	}
	s.writing = true
	f := s.f
	s.dirty = false
	s.mu.Unlock()
	err := f.Sync()
	s.mu.Lock()
	s.writing = false
	s.syncs++
	s.cond.Broadcast()
	if err != nil {
		s.dirty = true
		if msg := err.Error(); msg != s.lastErr {
			s.lastErr = msg
			s.log.Warn("file sink fsync failed", "path", s.path, "error", err)
		}
		s.armSyncLocked()
	} else if s.lastErr != "" {
		s.lastErr = ""
		s.log.Info("file sink fsync recovered", "path", s.path)
	}
}

// Reopen closes the file and opens Path again, so that after logrotate has
// renamed the file, lines go to a new one. Writes wait while it runs. If the
// file was never opened, there is nothing to do.
func (s *Sink) Reopen() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.writing {
		s.cond.Wait()
	}
	if s.closed || s.f == nil {
		return nil
	}
	s.writing = true
	old := s.f
	s.f = nil
	s.mu.Unlock()
	err := errors.Join(old.Sync(), old.Close())
	f, oerr := s.open()
	s.mu.Lock()
	s.writing = false
	s.f = f // nil on failure: the next write tries again
	s.dirty = false
	s.cond.Broadcast()
	if err != nil {
		err = fmt.Errorf("file sink: reopen: %w", err)
	}
	return errors.Join(err, oerr)
}

// Render returns the line Send would write for ev, newline included.
func (s *Sink) Render(ev *sinks.Event) ([]byte, error) {
	var buf bytes.Buffer
	if err := WriteLine(&buf, ev, s.format); err != nil {
		return nil, fmt.Errorf("payload: %w", err)
	}
	return buf.Bytes(), nil
}

// Close writes the lines already accepted, fsyncs and closes the file; later
// Sends fail with sinks.ErrClosed. It is idempotent.
func (s *Sink) Close(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	// Senders whose lines are in s.cur are waiting for them to be written;
	// write them now rather than fail them.
	for s.writing || s.cur != nil {
		if s.writing {
			s.cond.Wait()
			continue
		}
		s.writeLocked()
	}
	if s.timer != nil {
		s.timer.Stop()
	}
	f := s.f
	s.f = nil
	if f == nil {
		return nil
	}
	if err := errors.Join(f.Sync(), f.Close()); err != nil {
		return fmt.Errorf("file sink: close: %w", err)
	}
	s.log.DebugContext(ctx, "file sink closed", "path", s.path)
	return nil
}
