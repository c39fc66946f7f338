package config

import (
	"strings"
	"unicode/utf8"
)

// ValuePos returns the file position of the character at rune offset off in
// the scalar at path, whose decoded value is value: where a problem found
// inside an expression or a template points in the file. It understands
// plain, single- and double-quoted one-line scalars and literal (|) and
// folded (>) block scalars; ok is false when it cannot be sure (an escape
// sequence, a ${VAR} substitution, a multi-line quoted or plain scalar, blank
// lines in a folded one), and the caller falls back to the scalar's position.
func (f *File) ValuePos(path, value string, off int) (pos Pos, ok bool) {
	if f == nil || off < 0 || off > utf8.RuneCountInString(value) {
		return Pos{}, false
	}
	at, found := f.positions[path]
	if !found || at.Line < 1 {
		return Pos{}, false
	}
	lines := strings.Split(string(f.data), "\n")
	if at.Line > len(lines) {
		return Pos{}, false
	}
	first := []rune(strings.TrimSuffix(lines[at.Line-1], "\r"))
	if at.Col < 1 || at.Col > len(first) {
		return Pos{}, false
	}
	rest := string(first[at.Col-1:])

	// runs are the pieces of the value as they sit in the file: the value is
	// their texts joined by sep.
	type run struct {
		line, col int // of the run's first character
		text      string
	}
	var runs []run
	sep := ""
	switch rest[0] {
	case '"', '\'':
		if strings.Contains(value, "\n") || !strings.HasPrefix(rest[1:], value+rest[:1]) ||
			strings.ContainsAny(value, `\`+rest[:1]) {
			return Pos{}, false
		}
		runs = []run{{at.Line, at.Col + 1, value}}
	case '|', '>':
		sep = "\n"
		if rest[0] == '>' {
			sep = " "
		}
		indent := -1
		want := strings.TrimRight(value, "\n")
		got := ""
		for n := at.Line; n < len(lines) && len(got) < len(want); n++ {
			l := strings.TrimSuffix(lines[n], "\r")
			if indent < 0 {
				indent = len(l) - len(strings.TrimLeft(l, " "))
				if indent == 0 {
					return Pos{}, false
				}
			}
			if len(l) < indent || strings.TrimLeft(l[:indent], " ") != "" {
				return Pos{}, false // less indented: the scalar ended
			}
			runs = append(runs, run{n + 1, indent + 1, l[indent:]})
			if len(runs) > 1 {
				got += sep
			}
			got += l[indent:]
		}
		if got != want {
			return Pos{}, false
		}
	default:
		if strings.Contains(value, "\n") || !strings.HasPrefix(rest, value) {
			return Pos{}, false
		}
		runs = []run{{at.Line, at.Col, value}}
	}
	for _, r := range runs {
		n := utf8.RuneCountInString(r.text)
		if off <= n {
			return Pos{r.line, r.col + off}, true
		}
		off -= n + utf8.RuneCountInString(sep)
	}
	return Pos{}, false
}
