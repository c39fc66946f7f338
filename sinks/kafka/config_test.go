package kafka

import (
	"strings"
	"testing"
)

func TestValidate(t *testing.T) {
	ok := Config{Brokers: []string{"127.0.0.1:9092"}, Topic: "events.{{ .event }}"}
	for _, tc := range []struct {
		name  string
		edit  func(c *Config)
		field string // "" = valid
	}{
		{"valid", func(c *Config) {}, ""},
		{"several brokers in one entry", func(c *Config) { c.Brokers = []string{"a:9092, b:9092"} }, ""},
		{"no brokers", func(c *Config) { c.Brokers = nil }, "brokers"},
		{"blank broker entry", func(c *Config) { c.Brokers = []string{" , "} }, "brokers"},
		{"broker without port", func(c *Config) { c.Brokers = []string{"kafka"} }, "brokers"},
		{"no topic", func(c *Config) { c.Topic = "" }, "topic"},
		{"static topic Kafka refuses", func(c *Config) { c.Topic = "a/b" }, "topic"},
		{"topic does not parse", func(c *Config) { c.Topic = "{{ .event" }, "topic"},
		{"key does not parse", func(c *Config) { c.Key = "{{ .event" }, "key"},
		{"unknown mechanism", func(c *Config) { c.SASL = &SASL{Mechanism: "GSSAPI", User: "u", Password: "p"} }, "sasl.mechanism"},
		{"no password", func(c *Config) { c.SASL = &SASL{Mechanism: "PLAIN", User: "u"} }, "sasl.password"},
		{"cert without key", func(c *Config) { c.TLS.CertFile = "c.pem" }, "tls"},
		{"negative timeout", func(c *Config) { c.Timeout = -1 }, "timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := ok
			tc.edit(&c)
			c.Default()
			errs := c.Validate()
			if tc.field == "" {
				if len(errs) != 0 {
					t.Fatalf("Validate = %v, want none", errs)
				}
				return
			}
			if len(errs) != 1 || errs[0].Field != tc.field {
				t.Fatalf("Validate = %v, want one error about %s", errs, tc.field)
			}
			if strings.Contains(errs[0].Msg, "p\"") {
				t.Errorf("message quotes the password: %s", errs[0].Msg)
			}
		})
	}
}
