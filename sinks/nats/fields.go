package nats

// Expressions implements sinks.PayloadFields: a nats sink has none.
func (c *Config) Expressions() map[string]string { return nil }

// Templates implements sinks.PayloadFields: the subject.
func (c *Config) Templates() map[string]string {
	if c.Subject == "" {
		return nil
	}
	return map[string]string{"subject": c.Subject}
}
