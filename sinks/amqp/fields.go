package amqp

// Expressions implements sinks.PayloadFields: an amqp sink has none.
func (c *Config) Expressions() map[string]string { return nil }

// Templates implements sinks.PayloadFields: the routing key.
func (c *Config) Templates() map[string]string {
	if c.RoutingKey == "" {
		return nil
	}
	return map[string]string{"routing_key": c.RoutingKey}
}
