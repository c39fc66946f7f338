//go:build !linux

package disk

import (
	"fmt"
	"os"
	"path/filepath"
)

// datasync flushes f to stable storage (fsync where fdatasync is missing).
func datasync(f *os.File) error { return f.Sync() }

// freeBytes is not known here: preallocation goes ahead, and a lack of
// space only fails the zero-fill.
func freeBytes(string) (int64, bool) { return 0, false }

// lockDir opens the queue directory's lock file; without flock, a second
// process on the same data_dir is not detected here.
func lockDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, lockName), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("queue lock file: %w", err)
	}
	return f, nil
}
