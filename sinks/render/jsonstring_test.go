package render

import (
	"bytes"
	"encoding/json"
	"testing"
)

func TestAppendJSONString(t *testing.T) {
	for _, s := range []string{
		"", "plain", `say "hi"`, `back\slash`, "nl\ncr\rtab\t", "\x00\x01\x1f\x7f", "ünïcödé 🚀",
		"\u2028\u2029", "bad \xff\xfe utf8", "</script>&", "mixed \"\n\xff🚀\u2028 end",
	} {
		got := AppendJSONString([]byte("x"), s)
		var enc bytes.Buffer
		e := json.NewEncoder(&enc)
		e.SetEscapeHTML(false)
		if err := e.Encode(s); err != nil {
			t.Fatal(err)
		}
		want := "x" + string(bytes.TrimSuffix(enc.Bytes(), []byte{'\n'}))
		if string(got) != want {
			t.Errorf("AppendJSONString(%q) = %s, want %s", s, got, want)
		}
	}
}

func FuzzAppendJSONString(f *testing.F) {
	f.Add("say \"hi\"\n\xff")
	f.Fuzz(func(t *testing.T, s string) {
		got := AppendJSONString(nil, s)
		want, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		var back1, back2 string
		if json.Unmarshal(got, &back1) != nil || json.Unmarshal(want, &back2) != nil || back1 != back2 {
			t.Errorf("%q: got %s, encoding/json %s", s, got, want)
		}
	})
}
