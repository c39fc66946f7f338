package rules

import (
	"bytes"
	"encoding/binary"
	"fmt"

	"github.com/valyala/fastjson"
)

// strict returns nil if body, which fastjson's parser took as root, is JSON
// (RFC 8259), else an error saying what is wrong. It spares a second full
// pass over the body in the common case.
//
// The parser checks the structure, the literals and the whitespace, but
// not three things: control characters in strings, escape sequences, and
// the number grammar (it takes "nan", "1-2"). A body with no byte below 0x20
// has no string with a control character; one whose escapes are all valid
// (escapesValid) has no bad escape; then only its numbers remain, found on
// the parsed tree and held to the grammar by numbersValid. Any other body
// is validated whole by fastjson.ValidateBytes, and then, if it has a byte
// below 0x20 and an escape, checked by controlInString: ValidateBytes misses
// a control character that comes before an escape in the same string.
// FuzzStrictMatchesValid holds strict to encoding/json's json.Valid.
func strict(body []byte, root *fastjson.Value, buf *[]byte) error {
	if !hasControlByte(body) {
		if escapesValid(body) && numbersValid(root, buf) {
			return nil
		}
		return fastjson.ValidateBytes(body)
	}
	if err := fastjson.ValidateBytes(body); err != nil {
		return err
	}
	if bytes.IndexByte(body, '\\') < 0 {
		return nil // no escape: ValidateBytes checked every string whole
	}
	return controlInString(body)
}

// controlInString returns an error if a string in body, which is JSON but
// for control characters in strings, holds one. Outside strings, bytes
// below 0x20 are whitespace.
func controlInString(body []byte) error {
	inString := false
	for i := 0; i < len(body); i++ {
		switch c := body[i]; {
		case c == '"':
			inString = !inString
		case c == '\\':
			i++ // only inside a string: the escaped byte, maybe a quote
		case c < 0x20 && inString:
			return fmt.Errorf("cannot parse JSON: string cannot contain control char 0x%02X at offset %d", c, i)
		}
	}
	return nil
}

// escapesValid reports whether every backslash in body, a document the
// parser took, begins one of JSON's escapes: \" \\ \/ \b \f \n \r \t or
// \u and four hex digits.
//
// It scans the bytes without tracking strings, which is sound because the
// parser took the body: a backslash outside a string is a syntax error, so
// every backslash is inside a string; the first one met in a string begins
// an escape, and the scan resumes after that escape, so each backslash it
// stops at begins one too (the second of \\ is skipped as part of the first).
func escapesValid(body []byte) bool {
	for {
		i := bytes.IndexByte(body, '\\')
		if i < 0 {
			return true
		}
		if i+1 >= len(body) {
			return false
		}
		switch body[i+1] {
		case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			body = body[i+2:]
		case 'u':
			if i+6 > len(body) || !isHex(body[i+2]) || !isHex(body[i+3]) || !isHex(body[i+4]) || !isHex(body[i+5]) {
				return false
			}
			body = body[i+6:]
		default:
			return false
		}
	}
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// numbersValid reports whether every number under v follows the JSON
// grammar (isJSONNumber); buf is scratch space for a number's text.
//
// Each number on the tree is a whole token of the parser's: a maximal run
// of [0-9.eE+-], or [+-]?inf or nan in any case. It walks the tree rather
// than scanning the body for numbers outside strings: a scan steps over
// every string and measured slower on typical events, though Visit and
// Type unescape the keys and string values on the way (work that later
// reads of them would do anyway).
func numbersValid(v *fastjson.Value, buf *[]byte) bool {
	switch v.Type() {
	case fastjson.TypeObject:
		ok := true
		o, _ := v.Object()
		o.Visit(func(_ []byte, e *fastjson.Value) {
			ok = ok && numbersValid(e, buf)
		})
		return ok
	case fastjson.TypeArray:
		for _, e := range v.GetArray() {
			if !numbersValid(e, buf) {
				return false
			}
		}
	case fastjson.TypeNumber:
		// The number's token as the parser kept it.
		*buf = v.MarshalTo((*buf)[:0])
		return isJSONNumber(*buf)
	}
	return true
}

// isJSONNumber reports whether b is a JSON number (RFC 8259):
// -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func isJSONNumber(b []byte) bool {
	i := 0
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && '1' <= b[i] && b[i] <= '9':
		i = digitsEnd(b, i+1)
	default:
		return false
	}
	if i < len(b) && b[i] == '.' {
		j := digitsEnd(b, i+1)
		if j == i+1 {
			return false // no digit after the point
		}
		i = j
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		j := digitsEnd(b, i)
		if j == i {
			return false // no digit in the exponent
		}
		i = j
	}
	return i == len(b)
}

// digitsEnd returns the index of the first byte of b from i on that is not
// a decimal digit, or len(b).
func digitsEnd(b []byte, i int) int {
	for i < len(b) && '0' <= b[i] && b[i] <= '9' {
		i++
	}
	return i
}

const (
	lowBits  = 0x0101010101010101
	highBits = 0x8080808080808080
)

// hasControlByte reports whether b holds a byte below 0x20, eight bytes at
// a time: in x - 0x20…20 a byte's top bit is set where that byte was below
// 0x20 or at least 0xA0 (or received a borrow, which comes only from a
// lower byte already below 0x20); masking with ^x drops the bytes whose own
// top bit was set, leaving exactly the bytes below 0x20 ("hasless" in Sean
// Anderson's Bit Twiddling Hacks).
func hasControlByte(b []byte) bool {
	for len(b) >= 8 {
		x := binary.LittleEndian.Uint64(b)
		if (x-0x20*lowBits)&^x&highBits != 0 {
			return true
		}
		b = b[8:]
	}
	for _, c := range b {
		if c < 0x20 {
			return true
		}
	}
	return false
}
