//go:build !race

package disk

// raceEnabled scales down tests whose cost is copying bytes, which the race
// detector instruments byte range by byte range.
const raceEnabled = false
