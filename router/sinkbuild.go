package router

import (
	"errors"
	"log/slog"

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

// sinkProblem places a Build or Provision error at its field, when it names
// one. The sink's message is used as it is: its packages make it fit a
// config problem (render's for templates and expressions).
func sinkProblem(f *config.File, name string, err error) config.Problem {
	path := "sinks." + name
	msg := err.Error()
	var fe sinks.FieldError
	if errors.As(err, &fe) && fe.Field != "" {
		path, msg = path+"."+fe.Field, fe.Msg
	}
	return f.Problemf(path, "%s", msg)
}
