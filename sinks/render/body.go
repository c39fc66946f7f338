package render

import (
	"bytes"
	"encoding/json"
	"sync"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/vm"
)

// Body is a compiled expr-lang expression whose value becomes a JSON request
// body, for example
//
//	{"from": message?.sender_name, "text": message?.content?.text}
//
// Its variables are the payload's top-level fields; an absent one is nil, so
// `message?.content?.text` is the safe way down an optional path. The value is
// serialized with encoding/json (HTML characters left as they are), so any
// text in the payload comes out correctly escaped. A Body is safe for
// concurrent use.
type Body struct {
	program *vm.Program
	vms     sync.Pool // *vm.VM: a VM reuses its stack between runs
}

// CompileBody compiles the expression src once, for any number of renders.
// Its error is one line for a config problem (see ExprError).
func CompileBody(src string) (*Body, error) {
	program, err := expr.Compile(src, expr.Env(map[string]any{}), expr.AllowUndefinedVariables())
	if err != nil {
		return nil, ExprError(err)
	}
	b := &Body{program: program}
	b.vms.New = func() any { return new(vm.VM) }
	return b, nil
}

// Render evaluates the expression over payload (nil is allowed) and returns
// its value as compact JSON.
func (b *Body) Render(payload map[string]any) ([]byte, error) {
	return b.AppendRender(nil, payload)
}

// Eval evaluates the expression over payload (nil is allowed) and returns
// its value as expr gives it, for destinations that take typed values (a
// database column) rather than JSON text.
func (b *Body) Eval(payload map[string]any) (any, error) {
	if payload == nil {
		payload = map[string]any{}
	}
	m := b.vms.Get().(*vm.VM)
	v, err := m.Run(b.program, payload)
	b.vms.Put(m)
	return v, err
}

// AppendRender appends Render's result to dst. On error dst is returned
// unchanged.
func (b *Body) AppendRender(dst []byte, payload map[string]any) ([]byte, error) {
	v, err := b.Eval(payload)
	if err != nil {
		return dst, err
	}
	buf := getBuffer()
	defer putBuffer(buf)
	enc := json.NewEncoder(buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return dst, err
	}
	return append(dst, bytes.TrimSuffix(buf.Bytes(), []byte{'\n'})...), nil
}
