package sinks

import "context"

// SendOne sends ev as a batch of one, for a sink whose Send is its
// SendBatch.
func SendOne(ctx context.Context, b BatchSender, ev *Event) error {
	if errs := b.SendBatch(ctx, []*Event{ev}); errs != nil {
		return errs[0]
	}
	return nil
}

// BatchErrors collects the outcome of one SendBatch: an error per event, nil
// for those delivered. Fail may be called concurrently for different events.
type BatchErrors []error

// NewBatchErrors returns the outcome of a batch of n events, none failed yet.
func NewBatchErrors(n int) BatchErrors { return make(BatchErrors, n) }

// Fail records err for event i, unless it has failed already: the first
// reason is kept.
func (b BatchErrors) Fail(i int, err error) {
	if b[i] == nil {
		b[i] = err
	}
}

// FailRest fails every event that has not failed yet with err, and returns
// Result.
func (b BatchErrors) FailRest(err error) []error {
	for i := range b {
		b.Fail(i, err)
	}
	return b.Result()
}

// Result is what SendBatch returns: nil when every event was delivered,
// else one error per event.
func (b BatchErrors) Result() []error {
	for _, err := range b {
		if err != nil {
			return b
		}
	}
	return nil
}
