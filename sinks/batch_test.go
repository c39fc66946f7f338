package sinks

import (
	"errors"
	"testing"
)

func TestBatchErrors(t *testing.T) {
	b := NewBatchErrors(3)
	if b.Result() != nil {
		t.Fatal("no failure: Result must be nil")
	}
	first, second := errors.New("first"), errors.New("second")
	b.Fail(1, first)
	b.Fail(1, second)
	got := b.FailRest(second)
	if len(got) != 3 || got[0] != second || got[1] != first || got[2] != second {
		t.Fatalf("errors = %v, want [second first second]: the first reason is kept", got)
	}
}
