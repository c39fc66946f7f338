//go:build !linux

package disk

import "os"

// datasync flushes f to stable storage (fsync where fdatasync is missing).
func datasync(f *os.File) error { return f.Sync() }

// freeBytes is not known here: preallocation goes ahead, and a lack of
// space only fails the zero-fill.
func freeBytes(string) (int64, bool) { return 0, false }
