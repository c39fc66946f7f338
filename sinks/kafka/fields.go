package kafka

// Expressions implements sinks.PayloadFields: a kafka sink has none.
func (c *Config) Expressions() map[string]string { return nil }

// Templates implements sinks.PayloadFields: the topic and the key.
func (c *Config) Templates() map[string]string {
	m := map[string]string{}
	if c.Topic != "" {
		m["topic"] = c.Topic
	}
	if c.Key != "" {
		m["key"] = c.Key
	}
	if len(m) == 0 {
		return nil
	}
	return m
}
