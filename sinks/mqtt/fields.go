package mqtt

// Expressions implements sinks.PayloadFields: an mqtt sink has none.
func (c *Config) Expressions() map[string]string { return nil }

// Templates implements sinks.PayloadFields: the topic.
func (c *Config) Templates() map[string]string {
	if c.Topic == "" {
		return nil
	}
	return map[string]string{"topic": c.Topic}
}
