package render

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/expr-lang/expr/file"
)

// ExprError returns err, an error of expr.Compile, as the one line of a
// config problem, which already gives the file's position: expr's source line
// and caret are left out and its "(1:14)" is spelled out (a bare pair would
// read as a second, contradictory file position), and two wordings that read
// oddly in a config are changed. CompileBody's errors are made so; package
// rules makes its own rules' and dedup keys' errors with it.
func ExprError(err error) error {
	// expr.Compile returns its *file.Error as is; a wrapped one would lose
	// its wrapper's words here.
	e, ok := err.(*file.Error)
	if !ok {
		msg, _, _ := strings.Cut(err.Error(), "\n")
		return errors.New(Wording(msg))
	}
	msg, _, _ := strings.Cut(e.Message, "\n")
	msg = Wording(msg)
	switch {
	case e.Snippet == "": // expr gives no position either
	case e.Line == 1:
		msg += fmt.Sprintf(" (at column %d of the expression)", e.Column+1)
	default:
		msg += fmt.Sprintf(" (at line %d, column %d of the expression)", e.Line, e.Column+1)
	}
	return errors.New(msg)
}

// Wording makes a message of expr's compiler read as a config problem: two
// wordings that read oddly in a config changed, and the Go types that stand
// for JSON values named as JSON names them (a map is an object, a slice an
// array, interface{} any).
func Wording(msg string) string {
	return sliceType.ReplaceAllString(exprWording.Replace(strings.TrimRight(msg, " ")), "array")
}

var (
	exprWording = strings.NewReplacer(
		"expected bool, but got ", "must return bool, but returns ",
		"unexpected token EOF", "unexpected end",
		"map[string]interface {}", "object",
		"[]interface {}", "array",
		"interface {}", "any",
	)
	sliceType = regexp.MustCompile(`\[\](object|any|array|\w+)`)
)

// templateError returns err, an error of text/template's Parse for the
// template called name, as the one line of a config problem, which names the
// field already: "template does not parse: MSG", with the line when it is
// not the first, instead of "template: NAME:LINE: MSG".
func templateError(name string, err error) error {
	rest, ok := strings.CutPrefix(err.Error(), "template: "+name+":")
	line, rest, ok2 := strings.Cut(rest, ": ")
	if _, nerr := strconv.Atoi(line); !ok || !ok2 || nerr != nil {
		return err
	}
	msg := "template does not parse: " + rest
	if line != "1" {
		msg += " (line " + line + " of the template)"
	}
	return errors.New(msg)
}
