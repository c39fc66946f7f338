package config

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

const durationHint = "use Go durations such as 500ms, 30s, 24h"

// parseDuration parses a Go duration string. A bare number is refused: "30"
// could mean seconds or milliseconds, and Go's "0" would be the only one
// accepted, so "0s" is required for consistency.
func parseDuration(s string) (time.Duration, error) {
	t := strings.TrimSpace(s)
	if t != "" && strings.Trim(t, "+-0123456789.") == "" {
		return 0, fmt.Errorf("invalid duration %q: a number needs a unit (%s)", s, durationHint)
	}
	d, err := time.ParseDuration(t)
	if err != nil {
		return 0, fmt.Errorf("invalid duration %q (%s)", s, durationHint)
	}
	return d, nil
}

// sizeUnit returns the multiplier of a size unit, or 0 if unit is unknown.
func sizeUnit(unit string) int64 {
	switch unit {
	case "", "B":
		return 1
	case "KB":
		return 1000
	case "MB":
		return 1000 * 1000
	case "GB":
		return 1000 * 1000 * 1000
	case "TB":
		return 1000 * 1000 * 1000 * 1000
	case "KiB":
		return 1 << 10
	case "MiB":
		return 1 << 20
	case "GiB":
		return 1 << 30
	case "TiB":
		return 1 << 40
	}
	return 0
}

const sizeHint = "use a byte count such as 1048576, or a whole number with a unit such as 512KiB, 1MiB, 1GiB or 10MB; KiB = 1024 bytes, KB = 1000"

// parseSize parses a byte count, optionally followed by a unit: B, KB, MB,
// GB, TB (powers of 1000) or KiB, MiB, GiB, TiB (powers of 1024).
func parseSize(s string) (Size, error) {
	t := strings.TrimSpace(s)
	digits := len(t) - len(strings.TrimLeft(t, "0123456789"))
	mult := sizeUnit(strings.TrimSpace(t[digits:]))
	if digits == 0 || mult == 0 {
		return 0, fmt.Errorf("invalid size %q (%s)", s, sizeHint)
	}
	var n int64
	for _, c := range t[:digits] {
		d := int64(c - '0')
		if n > (math.MaxInt64-d)/10 {
			return 0, errSizeRange(s)
		}
		n = n*10 + d
	}
	if n > math.MaxInt64/mult {
		return 0, errSizeRange(s)
	}
	return Size(n * mult), nil
}

func errSizeRange(s string) error {
	return fmt.Errorf("size %q is too large", s)
}

// parseRate parses an event rate: a number per second, minute or hour
// ("10/s", "600/m", "1/h", "0.5/s"); a bare number is per second, and "0"
// means no limit.
func parseRate(s string) (Rate, error) {
	t := strings.TrimSpace(s)
	num, unit, hasUnit := strings.Cut(t, "/")
	per := 1.0
	if hasUnit {
		switch strings.TrimSpace(unit) {
		case "s":
		case "m":
			per = 60
		case "h":
			per = 3600
		default:
			return 0, fmt.Errorf("invalid rate %q: the unit after / is s, m or h (10/s, 600/m)", s)
		}
	}
	n, err := strconv.ParseFloat(strings.TrimSpace(num), 64)
	if err != nil || math.IsNaN(n) || math.IsInf(n, 0) {
		return 0, fmt.Errorf("invalid rate %q: use a number per second, minute or hour (10/s, 600/m, 1/h)", s)
	}
	if n < 0 {
		return 0, fmt.Errorf("rate %q must not be negative", s)
	}
	return Rate(n / per), nil
}
