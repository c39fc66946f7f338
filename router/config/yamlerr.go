package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"unicode/utf8"

	"gopkg.in/yaml.v3"
)

// parseDoc parses data as one YAML document. It returns nil, nil, nil for a
// file with no document, and the second document, if any, as extra.
func parseDoc(data []byte) (doc, extra *yaml.Node, err error) {
	defer func() {
		// yaml.v3 has panicked on malformed input before; a config file
		// must yield a problem, never take the process down.
		if r := recover(); r != nil {
			doc, extra, err = nil, nil, fmt.Errorf("yaml: parser failed: %v", r)
		}
	}()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var first yaml.Node
	if err := dec.Decode(&first); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil, nil
		}
		return nil, nil, err
	}
	var second yaml.Node
	switch err := dec.Decode(&second); {
	case errors.Is(err, io.EOF):
		return &first, nil, nil
	case err != nil:
		return nil, nil, err
	}
	if len(second.Content) == 0 || second.Content[0].ShortTag() == nullTag {
		return &first, nil, nil // a trailing "---" with nothing after it
	}
	return &first, &second, nil
}

// yamlProblem turns a yaml.v3 syntax error into a Problem. yaml.v3's "line N"
// is the line where the enclosing construct starts, 0-based for some errors,
// and carries no column; so the problem is placed by finding the shortest
// prefix of the file that fails with the same message.
func yamlProblem(name string, data []byte, err error) Problem {
	line, msg := yamlMessage(err)
	col := 1
	if l, c, ok := locate(data, msg); ok {
		line, col = l, c
		// An alias fails once its whole name is read: point at its "*".
		if name, found := strings.CutPrefix(msg, "unknown anchor '"); found {
			name = strings.TrimSuffix(name, "' referenced")
			if c := columnOf(data, line, "*"+name); c > 0 {
				col = c
			}
		}
	}
	if line < 1 {
		line = 1
	}
	p := Problem{File: name, Line: line, Col: col, Msg: "invalid YAML: " + msg}
	switch {
	case strings.Contains(msg, "cannot start any token") && charAt(data, line, col) == '\t',
		strings.Contains(msg, "tab character"):
		p.Msg += " (indent with spaces: YAML does not allow tabs)"
	case strings.Contains(msg, "mapping values are not allowed"):
		p.Msg += ` (quote a value that contains ": ")`
	case strings.Contains(msg, "unexpected end of stream"),
		strings.Contains(msg, "did not find expected ',' or"):
		p.Msg += " (a quote or bracket opened here is not closed)"
	case strings.Contains(msg, "did not find expected key"):
		p.Msg += " (check the indentation of this line and the one before)"
	}
	return p
}

// yamlMessage splits yaml.v3's "yaml: line N: msg" into N (0 if absent) and msg.
func yamlMessage(err error) (int, string) {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	if rest, ok := strings.CutPrefix(msg, "line "); ok {
		num, tail, found := strings.Cut(rest, ": ")
		if n, err := strconv.Atoi(num); err == nil && found {
			return n, tail
		}
	}
	return 0, msg
}

// locateLimit bounds the file size for which locate searches prefixes: the
// search parses the file once per line, which is quadratic.
const locateLimit = 64 << 10

// locate finds the first line, and on it the first column, at which a prefix
// of data fails to parse with msg.
func locate(data []byte, msg string) (line, col int, ok bool) {
	if len(data) > locateLimit {
		return 0, 0, false
	}
	fails := func(end int) bool {
		_, _, err := parseDoc(data[:end])
		if err == nil {
			return false
		}
		_, m := yamlMessage(err)
		return m == msg
	}
	start := 0
	for line = 1; start < len(data); line++ {
		end := len(data)
		if i := bytes.IndexByte(data[start:], '\n'); i >= 0 {
			end = start + i + 1
		}
		if fails(end) {
			col = 1
			for i := start; i < end; {
				_, size := utf8.DecodeRune(data[i:])
				i += size
				if fails(i) {
					return line, col, true
				}
				col++
			}
			return line, 1, true
		}
		start = end
	}
	return 0, 0, false
}

// lineOf returns the 1-based line of data, or nil.
func lineOf(data []byte, line int) []byte {
	for i := 1; ; i++ {
		l, rest, found := bytes.Cut(data, []byte("\n"))
		if i == line {
			return l
		}
		if !found {
			return nil
		}
		data = rest
	}
}

// charAt returns the rune at a 1-based line and column of data, or -1.
func charAt(data []byte, line, col int) rune {
	l := lineOf(data, line)
	for c := 1; len(l) > 0; c++ {
		r, size := utf8.DecodeRune(l)
		if c == col {
			return r
		}
		l = l[size:]
	}
	return -1
}

// columnOf returns the 1-based column of the last s on a line of data, or 0.
func columnOf(data []byte, line int, s string) int {
	l := lineOf(data, line)
	i := bytes.LastIndex(l, []byte(s))
	if i < 0 {
		return 0
	}
	return utf8.RuneCount(l[:i]) + 1
}
