package router

import (
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strings"

	"github.com/hookrouter/hookrouter/router/config"
	"github.com/hookrouter/hookrouter/sinks"
	"github.com/hookrouter/hookrouter/sinks/file"
	"github.com/hookrouter/hookrouter/sinks/httpsink"
	"github.com/hookrouter/hookrouter/sinks/slack"
	"github.com/hookrouter/hookrouter/sinks/stdout"
)

// buildSink is the one place sink types are wired: adding a sink is a
// package, a config struct and a case here. Constructors do no I/O.
func buildSink(f *config.File, name string, c *config.Sink, log *slog.Logger, version string) (sinks.Sink, config.Problems) {
	var s sinks.Sink
	var err error
	switch c.Type {
	case "http":
		s, err = httpsink.New(httpsink.Config{
			URL: c.URL, Method: c.Method, Headers: c.Headers, Body: c.Body,
			Timeout: c.Timeout.Std(), SignSecret: signSecret(c), Version: version,
			MaxConns: max(c.Workers*2, httpsink.DefaultMaxConns),
		}, log)
	case "slack":
		s, err = slack.New(slack.Config{WebhookURL: c.WebhookURL, Text: c.Text, Timeout: c.Timeout.Std(), Version: version}, log)
	case "file":
		s, err = file.New(file.Config{Path: c.Path, Format: c.Format, FlushInterval: c.FlushInterval.Std()}, log)
	case "stdout":
		s, err = stdout.New(stdout.Config{Format: c.Format}, nil, log)
	default:
		// The config loader reports unknown types; nothing to build.
		return nil, nil
	}
	if err != nil {
		return nil, config.Problems{sinkProblem(f, name, err)}
	}
	return s, nil
}

func signSecret(c *config.Sink) string {
	if c.Sign == nil {
		return ""
	}
	return c.Sign.Secret
}

// sinkProblem places a constructor's error ("field: message") at that field.
func sinkProblem(f *config.File, name string, err error) config.Problem {
	path := "sinks." + name
	msg := err.Error()
	if field, rest, ok := strings.Cut(msg, ": "); ok && !strings.ContainsAny(field, " \"") {
		path += "." + field
		msg = rest
	}
	var fe interface{ Field() string }
	if errors.As(err, &fe) {
		path = fmt.Sprintf("sinks.%s.%s", name, fe.Field())
	}
	return f.Problemf(path, "%s", problemMessage(msg))
}

// templateError matches text/template's parse errors, "template: NAME:LINE:
// MSG" (a column may follow the line).
var templateError = regexp.MustCompile(`^template: [^:]+:(\d+):(?:\d+:)? (.*)$`)

// problemMessage makes a constructor's message fit a config problem: one
// line (expr's errors add the source and a caret, which the position in the
// file replaces), and a template error without text/template's internal
// template name.
func problemMessage(msg string) string {
	msg, _, _ = strings.Cut(msg, "\n")
	if m := templateError.FindStringSubmatch(msg); m != nil {
		msg = "template does not parse: " + m[2]
		if m[1] != "1" {
			msg += " (line " + m[1] + " of the template)"
		}
	}
	return msg
}
