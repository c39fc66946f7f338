package console

import (
	"html/template"
	"time"
)

// funcs are the helpers the templates use. Times are written in UTC with a
// machine-readable datetime; console.js shows them in the viewer's time zone.
var funcs = template.FuncMap{
	"rfc3339": func(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) },
	"utc":     func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05 UTC") },
	"zero":    func(t time.Time) bool { return t.IsZero() },
	"secs":    func(s int64) string { return roundDur(time.Duration(s) * time.Second) },
	"breaker": func(state string) string {
		switch state {
		case "closed":
			return "ok"
		case "half-open":
			return "warn"
		}
		return "bad"
	},
}
