package render

import (
	"fmt"

	"github.com/hookrouter/hookrouter/sinks"
)

// Name is a template giving where a broker sink puts an event: a subject,
// topic, routing key or stream. It is safe for concurrent use.
type Name struct {
	sink, field string
	t           *Template
	allowEmpty  bool
}

// ParseName parses src, the setting field of a sink of type sink ("nats"),
// as a Name. allowEmpty lets it render empty (an AMQP routing key for a
// fanout exchange); otherwise an empty rendering fails the event.
func ParseName(sink, field, src string, allowEmpty bool) (*Name, error) {
	t, err := ParseTemplate(field, src)
	if err != nil {
		return nil, err
	}
	return &Name{sink: sink, field: field, t: t, allowEmpty: allowEmpty}, nil
}

// For renders the name for ev. A body that is not a JSON object, a
// template that fails on it and an empty result are permanent failures of
// that event: sending it again would give the same.
func (n *Name) For(ev *sinks.Event) (string, error) {
	p, err := ev.Payload()
	if err != nil {
		return "", sinks.Permanent(fmt.Errorf("%s sink: event %s: payload: %w", n.sink, ev.ID, err))
	}
	s, err := n.t.Execute(p)
	if err != nil {
		return "", sinks.Permanent(fmt.Errorf("%s sink: event %s: %w", n.sink, ev.ID, err))
	}
	if s == "" && !n.allowEmpty {
		return "", sinks.Permanent(fmt.Errorf("%s sink: event %s: %s renders empty", n.sink, ev.ID, n.field))
	}
	return s, nil
}
