//go:build !linux

package disk

import "time"

// processCPU is not measured here.
func processCPU() time.Duration { return 0 }
