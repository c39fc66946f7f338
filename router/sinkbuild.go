package router

import (
	"errors"
	"log/slog"
	"regexp"
	"strings"

	"github.com/hookrouter/hookrouter/router/config"
	"github.com/hookrouter/hookrouter/sinks"
)

// buildSink builds the sink c describes with its type's Config (see
// config.Sink.Settings, wired in the config package). Building does no I/O.
func buildSink(f *config.File, name string, c *config.Sink, log *slog.Logger, version string) (sinks.Sink, config.Problems) {
	if c.Settings == nil {
		return nil, nil // the config loader reports unknown types
	}
	s, err := c.Settings.Build(sinks.Env{Log: log, Version: version, Workers: c.Workers})
	if err != nil {
		return nil, config.Problems{sinkProblem(f, name, err)}
	}
	return s, nil
}

// sinkProblem places a Build error at its field, when it names one.
func sinkProblem(f *config.File, name string, err error) config.Problem {
	path := "sinks." + name
	msg := err.Error()
	var fe sinks.FieldError
	if errors.As(err, &fe) && fe.Field != "" {
		path, msg = path+"."+fe.Field, fe.Msg
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
