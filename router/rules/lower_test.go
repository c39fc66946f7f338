package rules

import (
	"strings"
	"testing"
)

var lowerCases = []string{
	"", "halo", "Halo, Saya BUTUH bantuan", "KOMPLAIN", "İSTANBUL", "straße STRAẞE",
	"\u212Aomplain", "Ⱥ grows", "ǅ title case", "Ω ΣΊΣΥΦΟΣ", "emoji 😀 REFUND",
	"bad \xff utf8 \xc3", "a\ufffdb", "\xed\xa0\x80 surrogate", "你好 ABC",
	strings.Repeat("Panjang ", 100) + "KOMPLAIN", // longer than lowerBuf
}

func TestLowered(t *testing.T) {
	for _, s := range lowerCases {
		var buf [lowerBuf]byte
		if got, want := lowered(buf[:0], s), strings.ToLower(s); got != want {
			t.Errorf("lowered(%q) = %q, want %q", s, got, want)
		}
	}
}

// FuzzLowerFuncs checks the functions lowerPatch calls against what they
// replace, on any input.
func FuzzLowerFuncs(f *testing.F) {
	for _, s := range lowerCases {
		f.Add(s, "komplain")
		f.Add(s, "i̇")
		f.Add(s, "")
		f.Add(s, strings.ToLower(s))
	}
	f.Fuzz(func(t *testing.T, s, lit string) {
		l := strings.ToLower(s)
		if lowerContains(s, lit) != strings.Contains(l, lit) ||
			lowerHasPrefix(s, lit) != strings.HasPrefix(l, lit) ||
			lowerHasSuffix(s, lit) != strings.HasSuffix(l, lit) ||
			lowerEquals(s, lit) != (l == lit) {
			t.Errorf("lower functions disagree with strings.ToLower for %q, %q", s, lit)
		}
	})
}

func TestLowerPatchApplies(t *testing.T) {
	s := compileYAML(t, serveRules, "archive")
	for _, r := range s.Rules {
		if r.Name != "complaints" {
			continue
		}
		if d := r.program.Disassemble(); !strings.Contains(d, "$lowerContains") || strings.Contains(d, "lower\t") {
			t.Errorf("lower(x) contains was not rewritten:\n%s", d)
		}
		return
	}
	t.Fatal("no complaints rule")
}
