package dispatch

import (
	"bufio"
	"fmt"
	"os"
	"sync"
)

// Replayed remembers which dead-letter records were replayed, by Record.ID,
// in a file of its own (one ID a line), so that replaying the same
// file twice, or the same record from two copies of it, re-queues each
// record once. It is safe for concurrent use.
type Replayed struct {
	mu   sync.Mutex
	f    *os.File
	seen map[string]struct{}
}

// OpenReplayed opens (creating it) the replayed-records file at path and
// reads the IDs it holds.
func OpenReplayed(path string) (*Replayed, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("replayed records: %w", err)
	}
	seen := map[string]struct{}{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 4096), 1<<20)
	for sc.Scan() {
		if line := sc.Text(); line != "" {
			seen[line] = struct{}{}
		}
	}
	if err := sc.Err(); err != nil {
		f.Close()
		return nil, fmt.Errorf("replayed records %s: %w", path, err)
	}
	return &Replayed{f: f, seen: seen}, nil
}

// Once runs requeue for the record with the given id unless it was replayed
// before, and then remembers id. It reports whether requeue ran; requeue's
// error leaves id unremembered. Records are remembered after they are
// queued, so a crash in between can replay one twice (at least once), never
// lose one.
func (p *Replayed) Once(id string, requeue func() error) (bool, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.seen[id]; ok {
		return false, nil
	}
	if err := requeue(); err != nil {
		return true, err
	}
	p.seen[id] = struct{}{}
	if _, err := p.f.WriteString(id + "\n"); err != nil {
		return true, fmt.Errorf("replayed records: %w", err)
	}
	return true, nil
}

// Sync makes the IDs remembered so far durable; a replay calls it once,
// after its records.
func (p *Replayed) Sync() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.f.Sync(); err != nil {
		return fmt.Errorf("replayed records: %w", err)
	}
	return nil
}

// Close closes the file.
func (p *Replayed) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.f.Close()
}
