package sinks

// PayloadFields is implemented by the Config of a sink type whose settings
// read the payload, so that `hookrouter validate` and every reload can check
// their field references against the sources' payload schemas
// (router/rules/check). Keys are field paths below the sink, as in the YAML
// ("body", "headers.X-Api-Key", "columns.total"); values are the settings'
// sources. Empty settings are left out.
type PayloadFields interface {
	// Expressions returns the expr-lang expressions (http body, database
	// columns).
	Expressions() map[string]string
	// Templates returns the render templates (Slack text, header values,
	// subjects, topics, stream names).
	Templates() map[string]string
}
