package httpsink

// Expressions implements sinks.PayloadFields: the body.
func (c *Config) Expressions() map[string]string {
	if c.Body == "" {
		return nil
	}
	return map[string]string{"body": c.Body}
}

// Templates implements sinks.PayloadFields: the header values.
func (c *Config) Templates() map[string]string {
	out := make(map[string]string, len(c.Headers))
	for name, v := range c.Headers {
		out["headers."+name] = v
	}
	return out
}
