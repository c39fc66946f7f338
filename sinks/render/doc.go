// Package render turns an event's payload into outgoing text or JSON, the same
// way at delivery time and in `hookrouter validate` / `hookrouter test`.
//
// Text (Slack messages, header values) comes from a Template: Go text/template
// over the payload map with a few side-effect-free helpers. JSON (an http
// sink's body) comes from a Body: an expr-lang expression whose value is
// serialized with encoding/json, so that a quote or a newline in a message can
// never produce invalid JSON, as a JSON text assembled by a template would.
// Neither can read files or the environment.
package render
