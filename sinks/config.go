package sinks

import (
	"fmt"
	"log/slog"
	"strings"
)

// Config is implemented by a pointer to each sink package's Config. The
// router's config loader decodes a sink's YAML keys (beside the ones every
// sink takes: type, retry, breaker, workers) into it strictly, by its yaml
// tags, then calls Default, Validate and, once the whole file is valid,
// Build. A field tagged yaml:"-" is never read from the file.
type Config interface {
	// Default sets the fields left zero to their defaults. It is idempotent.
	Default()
	// Validate reports every problem of a defaulted Config, without I/O.
	Validate() []FieldError
	// Build makes the sink from a valid, defaulted Config. Errors that
	// concern one field are FieldErrors, so the loader can place them.
	Build(env Env) (Sink, error)
}

// Env is what the router gives every sink it builds, beside its Config.
type Env struct {
	// Log is the sink's logger, already carrying its sink attribute.
	Log *slog.Logger
	// Version is hookrouter's version, for User-Agent headers.
	Version string
	// Workers is how many dispatch workers call Send concurrently.
	Workers int
}

// FieldError is one problem with one field of a component's Config (a sink,
// an auth scheme, a queue backend). The config loader places it in the file
// at the component's path followed by Field.
type FieldError struct {
	// Field is the YAML path of the field below the component: "url",
	// "sign.secret", "headers.X-Api-Key".
	Field string
	// Msg says what is wrong, without repeating the field's name. It never
	// quotes a secret.
	Msg string
	// Empty marks a required field left blank: the loader then says what the
	// value was before variables were substituted, if it came from them.
	Empty bool
	// Allowed, when set, lists the values the field may take (Msg says the
	// value is not one of them): the loader adds the nearest as a suggestion.
	Allowed []string
	// Value is the refused value, with Allowed.
	Value string
}

// Error implements error as "FIELD: MSG".
func (e FieldError) Error() string {
	if e.Field == "" {
		return e.Msg
	}
	return e.Field + ": " + e.Msg
}

// Errorf returns a FieldError about field.
func Errorf(field, format string, args ...any) FieldError {
	return FieldError{Field: field, Msg: fmt.Sprintf(format, args...)}
}

// Required returns the FieldError of a required field left blank; msg
// explains what the field is for, such as "required: the URL to deliver to".
func Required(field, msg string) FieldError {
	return FieldError{Field: field, Msg: msg, Empty: true}
}

// NotOneOf returns the FieldError of a value that is not one of allowed;
// what names the kind of value ("format", "auth type").
func NotOneOf(field, what, value string, allowed ...string) FieldError {
	return FieldError{
		Field:   field,
		Msg:     fmt.Sprintf("unknown %s %q (use one of %s)", what, value, strings.Join(allowed, ", ")),
		Allowed: allowed,
		Value:   value,
	}
}

// Prefix returns errs with prefix and a dot put before each Field, for a
// Config that holds another's.
func Prefix(prefix string, errs []FieldError) []FieldError {
	for i := range errs {
		if errs[i].Field == "" {
			errs[i].Field = prefix
		} else {
			errs[i].Field = prefix + "." + errs[i].Field
		}
	}
	return errs
}
