package check

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hookrouter/hookrouter/router/config"
)

func load(t *testing.T, yaml string) *config.File {
	t.Helper()
	f, err := config.Parse("rules.yaml", []byte(yaml), nil)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

const sources = `sources:
  - name: platform
    path: /webhook
    auth: {type: none}
    schema: platform
  - name: other
    path: /other
    auth: {type: none}
OTHER
sinks:
  out: {type: stdout}
rules:
  - name: r
    when: WHEN
    to: [out]
`

// TestCheckSources: rules reach every source's events, so they are checked
// strictly only when every source has a schema.
func TestCheckSources(t *testing.T) {
	for _, tc := range []struct {
		name, other, when, want string
	}{
		{"both platform, typo", "    schema: platform", `message.chanel == "x"`, `rules[0].when: message.chanel: message has no field "chanel"`},
		{"both platform, fine", "    schema: platform", `message.channel.engine == "x"`, ""},
		{"one without schema", "", `message.chanel == "x"`, ""},
		{"one without schema, shape", "", `event + "x"`, "must return bool, but returns string"},
		{"one without schema, functions", "", `source() == 1`, "mismatched types string and int"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			yaml := strings.Replace(strings.Replace(sources, "OTHER", tc.other, 1), "WHEN", "'"+tc.when+"'", 1)
			ps := Check(load(t, yaml))
			switch {
			case tc.want == "" && len(ps) > 0:
				t.Errorf("problems %v, want none", ps)
			case tc.want != "" && (len(ps) != 1 || !strings.Contains(ps[0].String(), tc.want)):
				t.Errorf("problems %v, want one with %q", ps, tc.want)
			}
		})
	}
}

// TestCheckValid: what the checker must not reject, with the platform schema.
func TestCheckValid(t *testing.T) {
	for _, when := range []string{
		`message?.channel?.engine == "wa"`,
		`message.channel.engine in ["wa", "ig"] && need_human == 1`,
		`need_human == nil || need_human > 0`,
		`message == nil`,
		`len(message.content.attachments) > 0 && message.content.attachments[0].size > 1000`,
		`any(message?.content?.attachments ?? [], .mime_type startsWith "image/")`,
		`let ch = message?.channel; ch?.engine == "wa"`,
		`header("X-Load-Test") == "1" || source() == "platform"`,
		`lower(message.sender_name) contains "budi"`,
		`timestamp > 1738056000 && timestamp < 1.8e9`,
		`device?.status == "connected"`,
		`$env.event == "x"`,
		`message["channel"]["engine"] == "wa"`,
		// Payloads are maps at run time: what works on a map must check.
		`keys(message) != [] && len(values(message.channel)) > 0`,
		`len(message) > 0 && len(message.channel) == 3`,
		`toPairs(message.channel) != []`,
		`let k = "engine"; message.channel[k] == "wa"`,
		`get(message.channel, "engine") == "wa" && get(message, "x") == nil`,
		`message.channel == message.bisnis`,
		`message.content.text[0:2] == "hi"`,
		`message?.content?.text contains "x"`,
		`need_human == 1 && need_human == 1.0 && need_human % 2 == 1`,
		`timestamp > 0 && now().Unix() - timestamp < 3600`,
		`event in ["channel.message_in", "agent.message_out"]`,
		`lower(message.content.text) == "hi" && upper(event) != ""`,
		`message.content.text + "!" == "hi!" && need_human + 1 == 2`,
		`(message.content.text ?? "") contains "x"`,
		`any(message.content.attachments, .type == "image" && .size > 0)`,
		`first(message.content.attachments)?.url startsWith "https://"`,
		`"channel" in message && "engine" in message.channel`,
		`toJSON(message.channel) contains "wa"`,
	} {
		yaml := strings.Replace(strings.Replace(sources, "OTHER", "    schema: platform", 1), "WHEN", "'"+when+"'", 1)
		if ps := Check(load(t, yaml)); len(ps) > 0 {
			t.Errorf("%s: %v", when, ps)
		}
	}
}

// TestCheckUnion: with a schema on every source, rules, bodies and
// templates are checked against all of them at once. A field of one source's
// schema is nil in the other's events, so a rule reading fields of both is
// valid; a field no schema has is still an error, and a field both have is
// still typed.
func TestCheckUnion(t *testing.T) {
	dir := t.TempDir()
	shop := filepath.Join(dir, "shop.json")
	if err := os.WriteFile(shop, []byte(`{"type": "object", "properties": {"kind": {"type": "string"}, "order": {"type": "object", "properties": {"id": {"type": "string"}}}, "event": {"type": "string"}}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	const cfg = `sources:
  - {name: platform, path: /webhook, auth: {type: none}, schema: platform}
  - {name: shop, path: /shop, auth: {type: none}, schema: SHOP}
sinks:
  out: {type: stdout}
  hook: {type: http, url: "http://127.0.0.1:9/", body: BODY}
  chat: {type: slack, webhook_url: "http://127.0.0.1:9/", text: TEXT}
rules:
  - {name: r, when: WHEN, to: [out, hook, chat]}
`
	for _, tc := range []struct{ when, body, text, want string }{
		{`(source() == "shop" && kind == "order.created") || (source() == "platform" && event == "channel.message_in")`, `source() == "shop" ? {"id": order.id} : {"id": message?.id}`, `{{ .order.id }}{{ .message.sender_name }}`, ""},
		{`kind == "order.paid" || event == "device.connected"`, `{"k": kind, "m": message?.id}`, `{{ .kind }}`, ""},
		{`order.idd == "1"`, `{}`, `x`, `rules[0].when: order.idd: order has no field "idd" in the schema (did you mean "id"?)`},
		{`true`, `{"x": messag}`, `x`, `sinks.hook.body: messag: the payload has no field "messag" in the schema (did you mean "message"?)`},
		{`true`, `{}`, `{{ .ordr.id }}`, `sinks.chat.text: .ordr: the payload has no field "ordr" in the schema (did you mean "order"?)`},
		{`event == 1`, `{}`, `x`, `rules[0].when: invalid operation: == (mismatched types string and int)`},
	} {
		y := strings.NewReplacer("SHOP", shop, "WHEN", "'"+tc.when+"'", "BODY", "'"+tc.body+"'", "TEXT", "'"+tc.text+"'").Replace(cfg)
		ps := Check(load(t, y))
		switch {
		case tc.want == "" && len(ps) > 0:
			t.Errorf("%s: problems %v, want none", tc.when, ps)
		case tc.want != "" && (len(ps) != 1 || !strings.Contains(ps[0].String(), tc.want)):
			t.Errorf("%s: problems %v, want one with %q", tc.when, ps, tc.want)
		}
	}
}
