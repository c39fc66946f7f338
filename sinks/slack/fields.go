package slack

// Expressions implements sinks.PayloadFields: a Slack sink has none.
func (c *Config) Expressions() map[string]string { return nil }

// Templates implements sinks.PayloadFields: the text.
func (c *Config) Templates() map[string]string {
	if c.Text == "" {
		return nil
	}
	return map[string]string{"text": c.Text}
}
