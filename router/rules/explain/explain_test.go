package explain

import (
	"os"
	"strings"
	"testing"
)

func sample(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile("../testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestExplainSamples(t *testing.T) {
	header := func(name string) string {
		if strings.EqualFold(name, "X-Load-Test") {
			return "1"
		}
		return ""
	}
	for _, tc := range []struct {
		file, when string
		want       []string // the parts' Text, indented by depth
	}{
		{"channel.message_in.image.json", `event == "channel.message_in" && message.channel.engine == "wa"`, []string{
			`event == "channel.message_in" → true (event is "channel.message_in")`,
			`message.channel.engine == "wa" → false (message.channel.engine is "ig")`,
		}},
		{"channel.message_in.json", `event == "channel.message_in" && need_human == 1`, []string{
			`event == "channel.message_in" → true (event is "channel.message_in")`,
			`need_human == 1 → false (need_human is 0)`,
		}},
		{"device.connected.json", `message.channel.engine == "wa" || device.engine == "wa"`, []string{
			`message.channel.engine == "wa" → error: cannot fetch channel from <nil>`,
			`device.engine == "wa" → true (device.engine is "wa")`,
		}},
		{"channel.message_in.image.json", `(event == "x" || need_human > 0) && !(message?.bisnis?.id in ["biz_1", "biz_2"])`, []string{
			`event == "x" || need_human > 0 → true`,
			`  event == "x" → false (event is "channel.message_in")`,
			`  need_human > 0 → true (need_human is 1)`,
			`!(message?.bisnis?.id in ["biz_1", "biz_2"]) → true`,
			`  message?.bisnis?.id in ["biz_1", "biz_2"] → false (message?.bisnis?.id is "biz_test")`,
		}},
		{"channel.message_in.image.json", `any(message.content.attachments, .mime_type startsWith "image/") && len(message.content.attachments) > 0`, []string{
			`any(message.content.attachments, .mime_type startsWith "image/") → true (message.content.attachments is [{"mime_type":"image/jpeg","size":182733,"type":"image","url":"https://cdn.example.com/a/123.jpg"}])`,
			`len(message.content.attachments) > 0 → true (len(message.content.attachments) is 1)`,
		}},
		{"agent.message_out.json", `header("X-Load-Test") == "1" && source() == "platform"`, []string{
			`header("X-Load-Test") == "1" → true (header("X-Load-Test") is "1")`,
			`source() == "platform" → true (source() is "platform")`,
		}},
		{"ai.message_generated.json", `message.ai.name`, []string{
			`message.ai.name → "Asisten AI"`,
		}},
		{"ai.message_generated.json", `event ==`, []string{
			`event == → error: unexpected token EOF`,
		}},
	} {
		x, err := New(sample(t, tc.file), header, "platform")
		if err != nil {
			t.Fatal(err)
		}
		got := strings.Split(strings.TrimSuffix(Text(x.Explain(tc.when)), "\n"), "\n")
		if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
			t.Errorf("%s on %s:\n got %s\nwant %s", tc.when, tc.file, strings.Join(got, "\n     "), strings.Join(tc.want, "\n     "))
		}
	}
}

func TestExplainValues(t *testing.T) {
	x, err := New([]byte(`{"event":"a","n":2,"f":1.5,"big":12345678901234567890}`), nil, "s")
	if err != nil {
		t.Fatal(err)
	}
	parts := x.Explain(`n == 2 && f > 1 && big > 1 && header("X") == ""`)
	if len(parts) != 4 {
		t.Fatalf("%d parts: %+v", len(parts), parts)
	}
	for _, p := range parts {
		if p.Value != true || p.Error != "" {
			t.Errorf("%s: %v %q", p.Expr, p.Value, p.Error)
		}
	}
	if v := parts[0].Operands[0].Value; v != 2 {
		t.Errorf("n is %T %v, want int 2", v, v)
	}
	for _, body := range []string{`[1]`, `"x"`, `{`, ``} {
		if _, err := New([]byte(body), nil, "s"); err == nil {
			t.Errorf("New(%q) accepted", body)
		}
	}
}
