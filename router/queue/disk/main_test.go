package disk

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if a test leaves a goroutine behind: Close
// must stop the committer.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
