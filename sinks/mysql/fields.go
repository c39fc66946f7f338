package mysql

// Expressions implements sinks.PayloadFields: the columns.
func (c *Config) Expressions() map[string]string {
	out := make(map[string]string, len(c.Columns))
	for col, src := range c.Columns {
		out["columns."+col] = src
	}
	return out
}

// Templates implements sinks.PayloadFields: a mysql sink has none.
func (c *Config) Templates() map[string]string { return nil }
