package rules

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"

	"github.com/expr-lang/expr/vm"
	"github.com/valyala/fastjson"
)

// dedupKey computes a source's dedup key: a custom expression, or the
// default (nil program).
type dedupKey struct {
	program *vm.Program
}

func compileDedupKey(src string) (*dedupKey, error) {
	if src == "" {
		return &dedupKey{}, nil
	}
	p, err := compile(src)
	if err != nil {
		return nil, err
	}
	return &dedupKey{program: p}, nil
}

// DedupKey returns the event's dedup key for its source. The default, when
// the source sets no `dedup.key`, is the platform's own convention:
// event + "_" + message.id when message.id exists; else
// event + "_" + device.id + "_" + timestamp when device.id exists; else
// "sha256:" and a hash of the raw body. A custom expression that fails or
// yields nil or "" falls back to the default, and the error is returned
// alongside so that it can be counted and logged.
func (in *Input) DedupKey() (string, error) {
	dk := in.set.dedup[in.source]
	if dk != nil && dk.program != nil {
		in.ensureEnv()
		out, err := in.vm.Run(dk.program, in.env)
		if err == nil {
			switch v := out.(type) {
			case string:
				if v != "" {
					// v may alias the payload (see Input.Parse); the key
					// must outlive Release.
					return strings.Clone(v), nil
				}
			case nil:
			default:
				return fmt.Sprint(v), nil
			}
			err = fmt.Errorf("dedup key expression gave an empty value")
		}
		return in.defaultKey(), fmt.Errorf("dedup key: %w", err)
	}
	return in.defaultKey(), nil
}

func (in *Input) defaultKey() string {
	b := in.keyBuf[:0]
	event := lookup(in.obj, "event")
	if id := lookupPath(in.obj, "message", "id"); present(id) {
		b = appendScalar(b, event)
		b = append(b, '_')
		b = appendScalar(b, id)
	} else if id := lookupPath(in.obj, "device", "id"); present(id) {
		b = appendScalar(b, event)
		b = append(b, '_')
		b = appendScalar(b, id)
		b = append(b, '_')
		b = appendScalar(b, lookup(in.obj, "timestamp"))
	} else {
		sum := sha256.Sum256(in.body)
		b = append(b, "sha256:"...)
		b = hex.AppendEncode(b, sum[:16])
	}
	in.keyBuf = b
	return string(b)
}

func present(v *fastjson.Value) bool {
	return v != nil && v.Type() != fastjson.TypeNull
}

// appendScalar appends a string's value, or any other value's JSON text.
func appendScalar(b []byte, v *fastjson.Value) []byte {
	if v == nil {
		return b
	}
	if v.Type() == fastjson.TypeString {
		s, _ := v.StringBytes()
		return append(b, s...)
	}
	if v.Type() == fastjson.TypeNumber {
		if i, err := v.Int64(); err == nil {
			return strconv.AppendInt(b, i, 10)
		}
	}
	return v.MarshalTo(b)
}
