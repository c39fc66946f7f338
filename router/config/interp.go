package config

import (
	"fmt"
	"strings"
)

// interpolation is the result of substituting variables in one scalar.
type interpolation struct {
	value string
	// changed reports that s held a ${…} or $$, so the scalar's type must be
	// resolved again (workers: ${W:-4} is a number once substituted).
	changed bool
	// errs are messages for references that could not be substituted.
	errs []string
}

// interpolate replaces ${VAR} and ${VAR:-default} in s with values from env,
// and $$ with a literal $. As in the shell, the default is used when VAR is
// unset or empty; an unset ${VAR} without a default is an error. A $ followed
// by anything else is kept as is, so "$5" or a regexp's "^a$" need no
// escaping. Substituted values are not scanned again: a secret may contain $.
// A default is the text up to the first }, with $$ for a literal $ as
// elsewhere; it cannot hold a nested reference.
func interpolate(s string, env func(string) (string, bool)) interpolation {
	if !strings.Contains(s, "$") {
		return interpolation{value: s}
	}
	var r interpolation
	var b strings.Builder
	for i := 0; i < len(s); {
		c := s[i]
		if c != '$' || i+1 == len(s) {
			b.WriteByte(c)
			i++
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i += 2
			r.changed = true
		case '{':
			r.changed = true
			end := strings.IndexByte(s[i+2:], '}')
			if end < 0 {
				r.errs = append(r.errs, fmt.Sprintf("unterminated %q: close it with } (write $$ for a literal $)", s[i:]))
				b.WriteString(s[i:])
				i = len(s)
				continue
			}
			ref := s[i+2 : i+2+end]
			i += 2 + end + 1
			name, def, hasDef := strings.Cut(ref, ":-")
			if !isVarName(name) {
				r.errs = append(r.errs, fmt.Sprintf("invalid variable reference %q: write ${NAME} or ${NAME:-default}, with NAME made of letters, digits and _ (write $$ for a literal $)", "${"+ref+"}"))
				continue
			}
			v, ok := env(name)
			switch {
			case hasDef && v == "":
				v = strings.ReplaceAll(def, "$$", "$")
			case !ok:
				r.errs = append(r.errs, fmt.Sprintf("environment variable %s is not set (set it, or give a default: ${%s:-default})", name, name))
			}
			b.WriteString(v)
		default:
			b.WriteByte(c)
			i++
		}
	}
	r.value = b.String()
	return r
}

// isVarName reports whether s is a shell variable name.
func isVarName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '_', 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z':
		case '0' <= c && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}
