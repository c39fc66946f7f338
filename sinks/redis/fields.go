package redis

// Expressions implements sinks.PayloadFields: a redis sink has none.
func (c *Config) Expressions() map[string]string { return nil }

// Templates implements sinks.PayloadFields: the stream.
func (c *Config) Templates() map[string]string {
	if c.Stream == "" {
		return nil
	}
	return map[string]string{"stream": c.Stream}
}
