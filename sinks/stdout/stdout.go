// Package stdout writes events as JSON lines to standard output (or any
// io.Writer), in the same formats as the file sink: handy in containers,
// where the platform collects stdout, and for trying rules out.
package stdout

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"

	"github.com/hookrouter/hookrouter/sinks"
	"github.com/hookrouter/hookrouter/sinks/file"
)

// Config is a stdout sink's settings: its keys in the config file (sink type
// stdout).
type Config struct {
	// Format is payload (the default) or envelope; see file.Format.
	Format file.Format `yaml:"format"`
}

var _ sinks.Config = (*Config)(nil)

// Default implements sinks.Config.
func (c *Config) Default() {
	if c.Format == "" {
		c.Format = file.FormatPayload
	}
}

// Validate implements sinks.Config.
func (c *Config) Validate() []sinks.FieldError {
	if err := c.Format.Validate(); err != nil {
		return []sinks.FieldError{*err}
	}
	return nil
}

// Build implements sinks.Config: the sink writes to os.Stdout.
func (c *Config) Build(env sinks.Env) (sinks.Sink, error) { return New(*c, nil, env.Log) }

// DefaultWorkers returns file.DefaultWorkers; the config loader asks.
func (c *Config) DefaultWorkers() int { return file.DefaultWorkers }

var (
	_ sinks.Sink        = (*Sink)(nil)
	_ sinks.Renderer    = (*Sink)(nil)
	_ sinks.BatchSender = (*Sink)(nil)
)

// Sink writes one line per event to a writer, whole lines per Write call
// (one for Send, all of a batch's for SendBatch) under a mutex, so lines
// never interleave. It is safe for concurrent use.
type Sink struct {
	format file.Format
	log    *slog.Logger
	lines  sync.Pool // *bytes.Buffer

	mu     sync.Mutex
	w      io.Writer
	closed bool
}

// New builds the sink writing to w; nil means os.Stdout. It does no I/O.
// Errors are sinks.FieldErrors naming the field: format.
func New(cfg Config, w io.Writer, log *slog.Logger) (*Sink, error) {
	cfg.Default()
	if errs := cfg.Validate(); len(errs) > 0 {
		return nil, errs[0]
	}
	format := cfg.Format
	if w == nil {
		w = os.Stdout
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Sink{format: format, w: w, log: log}
	s.lines.New = func() any { return new(bytes.Buffer) }
	return s, nil
}

// Send writes ev's line. An event whose body is not JSON fails permanently;
// a failing writer's error is retryable.
func (s *Sink) Send(ctx context.Context, ev *sinks.Event) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("stdout sink: %w", err)
	}
	line := s.lines.Get().(*bytes.Buffer)
	defer func() {
		if line.Cap() <= 64<<10 {
			line.Reset()
			s.lines.Put(line)
		}
	}()
	if err := file.WriteLine(line, ev, s.format); err != nil {
		return sinks.Permanent(fmt.Errorf("stdout sink: payload: %w", err))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return fmt.Errorf("stdout sink: %w", sinks.ErrClosed)
	}
	if _, err := s.w.Write(line.Bytes()); err != nil {
		return fmt.Errorf("stdout sink: %w", err)
	}
	return nil
}

// SendBatch writes the lines of evs, in order, with one Write call. An event
// whose body is not JSON fails permanently and the others are still written;
// a failing writer fails them all, retryably.
func (s *Sink) SendBatch(ctx context.Context, evs []*sinks.Event) []error {
	lines := s.lines.Get().(*bytes.Buffer)
	defer func() {
		if lines.Cap() <= 64<<10 {
			lines.Reset()
			s.lines.Put(lines)
		}
	}()
	return file.WriteBatch(ctx, lines, evs, s.format, "stdout sink", s.write)
}

// write writes b with one Write call, unless the sink is closed.
func (s *Sink) write(b []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return fmt.Errorf("stdout sink: %w", sinks.ErrClosed)
	}
	if _, err := s.w.Write(b); err != nil {
		return fmt.Errorf("stdout sink: %w", err)
	}
	return nil
}

// Render returns the line Send would write for ev, newline included.
func (s *Sink) Render(ev *sinks.Event) ([]byte, error) {
	var buf bytes.Buffer
	if err := file.WriteLine(&buf, ev, s.format); err != nil {
		return nil, fmt.Errorf("payload: %w", err)
	}
	return buf.Bytes(), nil
}

// Close makes later Sends fail with sinks.ErrClosed. It does not close the
// writer, which the sink does not own. It is idempotent.
func (s *Sink) Close(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.closed {
		s.closed = true
		s.log.DebugContext(ctx, "stdout sink closed")
	}
	return nil
}
