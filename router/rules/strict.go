package rules

import (
	"bytes"
	"encoding/binary"

	"github.com/valyala/fastjson"
)

// strict returns nil if body, which fastjson's parser took as root, is JSON
// as fastjson.ValidateBytes defines it (RFC 8259), else ValidateBytes's
// error. It spares the second pass over the body in the common case.
//
// The parser checks the structure, the literals and the whitespace, but
// not three things: control characters in strings, escape sequences, and
// the number grammar (it takes "nan", "1-2"). A body with no byte below 0x20
// and no backslash anywhere has no string with either of the first two, so
// only its numbers remain, checked one by one on the parsed tree; any other
// body is validated whole. FuzzStrictMatchesValidate holds this to
// ValidateBytes's verdict.
func strict(body []byte, root *fastjson.Value, buf *[]byte) error {
	if bytes.IndexByte(body, '\\') < 0 && !hasControlByte(body) && numbersValid(root, buf) {
		return nil
	}
	return fastjson.ValidateBytes(body)
}

// numbersValid reports whether every number under v follows the JSON
// grammar; buf is scratch space for a number's text.
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
		// A number's text as the parser kept it.
		*buf = v.MarshalTo((*buf)[:0])
		return fastjson.ValidateBytes(*buf) == nil
	}
	return true
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
