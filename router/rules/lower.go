package rules

import (
	"reflect"
	"strings"
	"unicode"
	"unicode/utf8"
	"unsafe"

	"github.com/expr-lang/expr/ast"
)

// Lowercase comparisons without the lowercase string.
//
// `lower(x) contains "lit"` makes expr allocate lower's result, then box it
// in an interface, at every evaluation. The compiler rewrites lower(x) OP
// "lit", for the operators below, into a call of a function of the env that
// computes strings.ToLower(x) into a stack buffer and compares it there:
// same result, same error when x is not a string (the call's argument is a
// string, as is lower's), no allocation. Env functions of type
// func(string, string) bool are called by expr without reflection or an
// argument slice.
var lowerOps = map[string]string{
	"contains":   "$lowerContains",
	"startsWith": "$lowerHasPrefix",
	"endsWith":   "$lowerHasSuffix",
	"==":         "$lowerEquals",
}

// lowerFuncs are the env functions lowerOps names.
var lowerFuncs = map[string]func(s, lit string) bool{
	"$lowerContains":  lowerContains,
	"$lowerHasPrefix": lowerHasPrefix,
	"$lowerHasSuffix": lowerHasSuffix,
	"$lowerEquals":    lowerEquals,
}

// lowerPatch is the expr.Patch visitor that performs the rewrite.
type lowerPatch struct{}

func (lowerPatch) Visit(node *ast.Node) {
	b, ok := (*node).(*ast.BinaryNode)
	if !ok {
		return
	}
	fn, ok := lowerOps[b.Operator]
	if !ok {
		return
	}
	lit, ok := b.Right.(*ast.StringNode)
	if !ok {
		return
	}
	call, ok := b.Left.(*ast.BuiltinNode)
	if !ok || call.Name != "lower" || len(call.Arguments) != 1 {
		return
	}
	// Only where lower(x) type-checks: a string, or a value known at run
	// time only. Elsewhere the rule fails to compile, with lower's message.
	if t := call.Arguments[0].Type(); t == nil || t.Kind() != reflect.String && t.Kind() != reflect.Interface {
		return
	}
	ast.Patch(node, &ast.CallNode{
		Callee:    &ast.IdentifierNode{Value: fn},
		Arguments: []ast.Node{call.Arguments[0], lit},
	})
}

// lowerBuf is the size of the stack buffer the functions lowercase into; a
// longer result is still exact, in a heap buffer.
const lowerBuf = 512

func lowerContains(s, lit string) bool {
	var buf [lowerBuf]byte
	return strings.Contains(lowered(buf[:0], s), lit)
}

func lowerHasPrefix(s, lit string) bool {
	var buf [lowerBuf]byte
	return strings.HasPrefix(lowered(buf[:0], s), lit)
}

func lowerHasSuffix(s, lit string) bool {
	var buf [lowerBuf]byte
	return strings.HasSuffix(lowered(buf[:0], s), lit)
}

func lowerEquals(s, lit string) bool {
	var buf [lowerBuf]byte
	return lowered(buf[:0], s) == lit
}

// lowered returns strings.ToLower(s), built in buf's array (or a bigger heap
// one). The string aliases that array: the callers only compare it, with
// direct calls that keep nothing, so that the array stays on their stack.
func lowered(buf []byte, s string) string {
	b := appendLower(buf, s)
	return unsafe.String(unsafe.SliceData(b), len(b))
}

// appendLower appends strings.ToLower(s) to b. ToLower maps ASCII letters
// A-Z, and for any other input maps every rune with unicode.ToLower, an
// invalid UTF-8 byte becoming U+FFFD (strings.Map); ranging over a string
// yields exactly those runes.
func appendLower(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= utf8.RuneSelf {
			for _, r := range s[i:] {
				b = utf8.AppendRune(b, unicode.ToLower(r))
			}
			return b
		}
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		b = append(b, c)
	}
	return b
}
