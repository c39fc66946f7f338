package render

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/hookrouter/hookrouter/sinks"
)

const messageIn = `{
  "event": "channel.message_in",
  "timestamp": 1738056000,
  "need_human": 0,
  "nothing": null,
  "tags": [],
  "message": {
    "id": "msg_1",
    "sender_name": "Rina \"R\" <r@x>",
    "channel": {"name": "WhatsApp Business", "engine": "wa"},
    "content": {"type": "text", "text": "Halo,\nsaya \"butuh\" bantuan \\ ünï 🚀"}
  }
}`

func payload(t *testing.T, body string) map[string]any {
	t.Helper()
	p, err := sinks.DecodePayload([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestTemplateExecute(t *testing.T) {
	p := payload(t, messageIn)
	tests := []struct {
		name, src, want string
	}{
		{"static", "plain text, no action", "plain text, no action"},
		{"field", "{{ .message.channel.name }}", "WhatsApp Business"},
		{"int", "{{ .timestamp }} {{ .need_human }}", "1738056000 0"},
		{"missing top", "[{{ .device.id }}]", "[]"},
		{"missing nested", "[{{ .message.nope.deeper }}]", "[]"},
		{"null", "[{{ .nothing }}][{{ .nothing.x }}]", "[][]"},
		{"field of string", "[{{ .event.x }}]", "[]"},
		{"default missing", `{{ .device.id | default "n/a" }}`, "n/a"},
		{"default present", `{{ .message.id | default "n/a" }}`, "msg_1"},
		{"default keeps zero", `{{ .need_human | default "n/a" }}`, "0"},
		{"default empty list", `{{ .tags | default "none" }}`, "none"},
		{"default prefix form", `{{ default "n/a" .nope }}`, "n/a"},
		{"json string", `{{ json .message.content.text }}`, `"Halo,\nsaya \"butuh\" bantuan \\ ünï 🚀"`},
		{"json object", `{{ json .message.channel }}`, `{"engine":"wa","name":"WhatsApp Business"}`},
		{"json missing", `{{ json .nope }}`, `null`},
		{"truncate", `{{ .message.channel.name | truncate 8 }}`, "WhatsApp"},
		{"truncate runes", `{{ "üñïçødé" | truncate 3 }}`, "üñï"},
		{"truncate short", `{{ .event | truncate 100 }}`, "channel.message_in"},
		{"truncate zero", `[{{ .event | truncate 0 }}]`, "[]"},
		{"upper lower", `{{ .message.channel.engine | upper }} {{ "ABC" | lower }}`, "WA abc"},
		{"upper missing", `[{{ .nope | upper }}]`, "[]"},
		{"if missing", `{{ if .device }}dev{{ else }}msg{{ end }}`, "msg"},
		{"if eq", `{{ if eq .message.channel.engine "wa" }}wa{{ end }}`, "wa"},
		{"eq missing", `{{ if eq .nope.x "wa" }}wa{{ else }}no{{ end }}`, "no"},
		{"with", `{{ with .message }}{{ .sender_name }}/{{ .missing }}{{ end }}`, `Rina "R" <r@x>/`},
		{"variable chain", `{{ $m := .message }}{{ $m.channel.engine }}{{ $m.x.y }}`, "wa"},
		{"paren chain", `{{ (.message).channel.engine }}`, "wa"},
		{"range", `{{ range $k, $v := .message.channel }}{{ $k }}={{ $v }};{{ end }}`, "engine=wa;name=WhatsApp Business;"},
		{"index missing", `[{{ index .message "nope" }}]`, "[]"},
		{"printf", `{{ printf "%s-%d" .event .need_human }}`, "channel.message_in-0"},
		{"define", `{{ define "n" }}<{{ .sender_name }}>{{ end }}{{ template "n" .message }}`, `<Rina "R" <r@x>>`},
		{"no html escaping", `{{ .message.sender_name }}`, `Rina "R" <r@x>`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tmpl, err := ParseTemplate("text", tc.src)
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			got, err := tmpl.Execute(p)
			if err != nil {
				t.Fatalf("execute: %v", err)
			}
			if got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
			app, err := tmpl.AppendExecute([]byte("x:"), p)
			if err != nil || string(app) != "x:"+tc.want {
				t.Errorf("AppendExecute = %q, %v", app, err)
			}
		})
	}
}

func TestTemplateNilPayload(t *testing.T) {
	tmpl, err := ParseTemplate("text", `[{{ .a.b }}{{ .c | default "d" }}]`)
	if err != nil {
		t.Fatal(err)
	}
	got, err := tmpl.Execute(nil)
	if err != nil || got != "[d]" {
		t.Fatalf("got %q, %v", got, err)
	}
}

func TestTemplateErrors(t *testing.T) {
	tests := []struct {
		name, src string
		parse     bool // fails at parse time, else at execution
	}{
		{"unclosed", "{{ .a ", true},
		{"unknown function", "{{ env \"HOME\" }}", true},
		{"no file access", `{{ template "/etc/passwd" }}`, false},
		{"json of NaN", `{{ json (index .f 0) }}`, false},
	}
	p := map[string]any{"f": []any{nanValue()}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tmpl, err := ParseTemplate("text", tc.src)
			if tc.parse {
				if err == nil {
					t.Fatal("parse succeeded")
				}
				// The config problem's path names the field: the message
				// does not repeat text/template's "template: text:1:".
				if msg := err.Error(); !strings.HasPrefix(msg, "template does not parse: ") || strings.Contains(msg, "template: text:") {
					t.Errorf("error %q is not one line for a config problem", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			if _, err := tmpl.Execute(p); err == nil {
				t.Fatal("execute succeeded")
			}
		})
	}
}

func nanValue() float64 {
	zero := 0.0
	return zero / zero
}

func TestTemplateStatic(t *testing.T) {
	s, _ := ParseTemplate("h", "Bearer abc")
	d, _ := ParseTemplate("h", "Bearer {{ .token }}")
	if !s.Static() || d.Static() {
		t.Fatalf("Static() = %v, %v", s.Static(), d.Static())
	}
}

func TestTemplateConcurrent(t *testing.T) {
	tmpl, err := ParseTemplate("text", "{{ .message.id }}:{{ json .message.channel }}")
	if err != nil {
		t.Fatal(err)
	}
	p := payload(t, messageIn)
	want := `msg_1:{"engine":"wa","name":"WhatsApp Business"}`
	done := make(chan string, 8)
	for range 8 {
		go func() {
			var got string
			for range 200 {
				got, _ = tmpl.Execute(p)
				if got != want {
					break
				}
			}
			done <- got
		}()
	}
	for range 8 {
		if got := <-done; got != want {
			t.Fatalf("got %q", got)
		}
	}
}

func TestBodyRender(t *testing.T) {
	p := payload(t, messageIn)
	tests := []struct {
		name, src string
		want      any // compared after decoding both sides
	}{
		{"object", `{"from": message.sender_name, "text": message?.content?.text}`,
			map[string]any{"from": `Rina "R" <r@x>`, "text": "Halo,\nsaya \"butuh\" bantuan \\ ünï 🚀"}},
		{"absent variable is nil", `{"dev": device?.id, "n": nothing}`, map[string]any{"dev": nil, "n": nil}},
		{"passthrough", `message.channel`, map[string]any{"name": "WhatsApp Business", "engine": "wa"}},
		{"numbers", `{"ts": timestamp, "h": need_human + 1, "f": 1.5}`, map[string]any{"ts": 1738056000.0, "h": 1.0, "f": 1.5}},
		{"string ops", `upper(event) + "!"`, "CHANNEL.MESSAGE_IN!"},
		{"list", `[event, message.id]`, []any{"channel.message_in", "msg_1"}},
		{"whole payload", `$env.event`, "channel.message_in"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, err := CompileBody(tc.src)
			if err != nil {
				t.Fatalf("compile: %v", err)
			}
			out, err := b.Render(p)
			if err != nil {
				t.Fatalf("render: %v", err)
			}
			if !json.Valid(out) {
				t.Fatalf("invalid JSON: %s", out)
			}
			if strings.ContainsRune(string(out), '\n') {
				t.Errorf("not compact: %q", out)
			}
			var got any
			if err := json.Unmarshal(out, &got); err != nil {
				t.Fatal(err)
			}
			wantJSON, _ := json.Marshal(tc.want)
			gotJSON, _ := json.Marshal(got)
			if string(wantJSON) != string(gotJSON) {
				t.Errorf("got %s, want %s", gotJSON, wantJSON)
			}
		})
	}
}

// TestBodyEscaping is why bodies are expressions and not templates: quotes,
// backslashes, newlines, control characters and invalid UTF-8 in a message
// must still give valid JSON carrying the same text.
func TestBodyEscaping(t *testing.T) {
	b, err := CompileBody(`{"text": message.content.text}`)
	if err != nil {
		t.Fatal(err)
	}
	for _, text := range []string{
		`say "hi"`, "line1\nline2\r\n", `back\slash`, "tab\tand\x00nul\x1f", "</script><b>&amp;",
		"emoji 🚀 ünïcödé", "\u2028\u2029", "bad utf8 \xff\xfe",
	} {
		p := map[string]any{"message": map[string]any{"content": map[string]any{"text": text}}}
		out, err := b.Render(p)
		if err != nil {
			t.Fatalf("%q: %v", text, err)
		}
		if !json.Valid(out) {
			t.Fatalf("%q gave invalid JSON %s", text, out)
		}
		var got struct{ Text string }
		if err := json.Unmarshal(out, &got); err != nil {
			t.Fatal(err)
		}
		want := string([]rune(text)) // each invalid byte becomes U+FFFD
		if got.Text != want {
			t.Errorf("round trip of %q gave %q", text, got.Text)
		}
	}
}

func TestBodyErrors(t *testing.T) {
	if _, err := CompileBody(`{"a": `); err == nil {
		t.Error("compile of a broken expression succeeded")
	}
	b, err := CompileBody(`{"x": message.sender_name}`)
	if err != nil {
		t.Fatal(err)
	}
	// message is absent: the unsafe member access fails at run time.
	out, err := b.AppendRender([]byte("keep"), map[string]any{"event": "device.connected"})
	if err == nil {
		t.Fatalf("render succeeded: %s", out)
	}
	if string(out) != "keep" {
		t.Errorf("dst changed on error: %q", out)
	}
	nan, _ := CompileBody(`0.0 / 0.0`)
	if _, err := nan.Render(nil); err == nil {
		t.Error("NaN serialized")
	}
}

func TestBodyNoEnvAccess(t *testing.T) {
	t.Setenv("HOOKROUTER_TEST_SECRET", "s3cr3t")
	for _, src := range []string{`env("HOOKROUTER_TEST_SECRET")`, `getenv("HOOKROUTER_TEST_SECRET")`, `readFile("/etc/hostname")`} {
		b, err := CompileBody(src)
		if err != nil {
			continue // unknown function: rejected at compile time
		}
		out, err := b.Render(nil)
		if err == nil && strings.Contains(string(out), "s3cr3t") {
			t.Errorf("%s leaked the environment: %s", src, out)
		}
	}
}

func BenchmarkBodyRender(b *testing.B) {
	p, _ := sinks.DecodePayload([]byte(messageIn))
	body, err := CompileBody(`{"from": message.sender_name, "text": message?.content?.text, "id": message.id}`)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	var dst []byte
	for b.Loop() {
		dst, err = body.AppendRender(dst[:0], p)
		if err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkTemplateExecute(b *testing.B) {
	p, _ := sinks.DecodePayload([]byte(messageIn))
	tmpl, err := ParseTemplate("text", "*{{ .message.sender_name }}* ({{ .message.channel.name }}): {{ .message.content.text }}")
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := tmpl.Execute(p); err != nil {
			b.Fatal(err)
		}
	}
}

// TestErrorsFitAConfigProblem: parse and compile errors are one line, with
// expr's "(LINE:COL)" and text/template's line spelled out, since the config
// problem they become already gives a file position.
func TestErrorsFitAConfigProblem(t *testing.T) {
	body := func(src string) error { _, err := CompileBody(src); return err }
	tmpl := func(src string) error { _, err := ParseTemplate("text", src); return err }
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"expr, line 1", body(`{"a": }`), `unexpected token Bracket("}") (at column 7 of the expression)`},
		{"expr, line 2", body("{\n\"a\": }"), `unexpected token Bracket("}") (at line 2, column 6 of the expression)`},
		{"expr, end", body(`{"a": `), `unexpected end (at column 6 of the expression)`},
		{"template, line 1", tmpl("{{ .a "), "template does not parse: unclosed action"},
		{"template, line 2", tmpl("a\n{{ shout .a }}"), `template does not parse: function "shout" not defined (line 2 of the template)`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.err == nil || tc.err.Error() != tc.want {
				t.Errorf("error %v, want %q", tc.err, tc.want)
			}
		})
	}
}
