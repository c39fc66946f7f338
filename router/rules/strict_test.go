package rules

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/valyala/fastjson"
)

// FuzzStrictMatchesValid: whatever fastjson's parser takes, strict accepts
// exactly what encoding/json's json.Valid accepts. (Not ValidateBytes: it
// takes a control character before an escape in the same string.)
func FuzzStrictMatchesValid(f *testing.F) {
	for _, p := range sampleFiles {
		f.Add(payload(f, p))
	}
	for _, b := range odd {
		f.Add([]byte(b))
	}
	for _, b := range []string{"{\"a\":\"\x1e\"}", "{\"a\x01\":1}", `{"a":"\q"}`, `{"a":"\u12"}`, `{"a":nan}`,
		`{"a":1-2}`, `{"a":-inf}`, `{"a":[1,2.5e3,-0,01]}`, "{\"a\":\n1}", `{"a":1.}`, `{"a":"\u00e9"}`,
		`{"a":"x\"y\\"}`, `{"a\n":"\\\\"}`, `{"a":"\\u12"}`, `{"a":"\u00g0"}`, `{"a":"\uABCD\/\b\f\r\t"}`, `{"a":"\\\q"}`,
		"{\"\":{\"\":{\"\":\"\x00\\b0000\"}}}", "{\"a\x1f\\n\":1}", "{\"a\":\"\\\"\x01\"}", "[\"\\\\\",\n\"x\"]"} {
		f.Add([]byte(b))
	}
	var p fastjson.Parser
	var buf []byte
	f.Fuzz(func(t *testing.T, body []byte) {
		v, err := p.ParseBytes(body)
		if err != nil {
			return
		}
		got, want := strict(body, v, &buf), json.Valid(body)
		if (got == nil) != want {
			t.Fatalf("strict(%q) = %v, json.Valid = %v", body, got, want)
		}
	})
}

// TestEscapesValid pins escapesValid on bodies the parser takes; the fuzz
// target above checks it against ValidateBytes on any input.
func TestEscapesValid(t *testing.T) {
	for body, want := range map[string]bool{
		`{"a":"plain"}`:              true,
		`{"a":"x\"y","b":"\\"}`:      true,
		`{"a":"\\\\n"}`:              true, // two escaped backslashes, then n
		`{"a":"\u00e9\/\b\f\n\r\t"}`: true,
		`{"a":"\uABCD\uabcd"}`:       true,
		`{"a":"\\q"}`:                true, // escaped backslash, then q
		`{"a":"\q"}`:                 false,
		`{"a":"\\\q"}`:               false, // escaped backslash, then \q
		`{"a":"\u12"}`:               false,
		`{"a":"\u00g0"}`:             false,
		`{"a\x":1}`:                  false, // keys too
	} {
		if got := escapesValid([]byte(body)); got != want {
			t.Errorf("escapesValid(%s) = %v, want %v", body, got, want)
		}
		var p fastjson.Parser
		if _, err := p.Parse(body); err != nil {
			t.Errorf("%s: the parser does not take it (%v): not a case strict sees", body, err)
		}
		if got := fastjson.Validate(body) == nil; got != want {
			t.Errorf("%s: ValidateBytes says %v, the table %v", body, got, want)
		}
	}
}

// TestIsJSONNumber pins the grammar on single tokens.
func TestIsJSONNumber(t *testing.T) {
	for _, n := range []string{"0", "-0", "7", "10", "-12", "1.5", "0.05", "1e5", "1E5", "1e+5", "1E-05",
		"-0.0e-0", "2.5e3", "123456789012345678901234567890", "1e999999999"} {
		if !isJSONNumber([]byte(n)) {
			t.Errorf("isJSONNumber(%s) = false", n)
		}
	}
	for _, n := range []string{"", "-", "--1", "+1", "01", "-01", "00", "1.", ".5", "-.5", "1.e5", "1e", "1e+",
		"1E-", "1ee5", "1e5e5", "1e5.5", "1.5.2", "1-2", "1+2", "0x1", "nan", "NaN", "inf", "-inf", "+INF"} {
		if isJSONNumber([]byte(n)) {
			t.Errorf("isJSONNumber(%s) = true", n)
		}
	}
}

// TestStrictNumbers: on bodies the parser takes and whose strings are
// clean, numbersValid alone decides, and strict agrees with json.Valid.
// The parser refuses a few of the bad ones (Infinity: it reads inf, then
// meets "inity"); those never reach strict and are only held to json.Valid.
func TestStrictNumbers(t *testing.T) {
	for body, want := range map[string]bool{
		`{"a":0}`:                           true,
		`{"a":-0.0e-0}`:                     true,
		`{"a":1E5}`:                         true,
		`{"a":1738056042,"b":[1,-2.5,3e2]}`: true,
		`{"a":{"b":{"c":[0,{"d":-1.25E+10}]}},"e":7}`: true,
		`[1,[2,[3]],{"a":4}]`:                         true,
		`{"a":"01 nan 1-2"}`:                          true, // in strings, anything
		`{"01":1}`:                                    true,
		`{"a":01}`:                                    false,
		`{"a":1.}`:                                    false,
		`{"a":.5}`:                                    false,
		`{"a":1e}`:                                    false,
		`{"a":1e+}`:                                   false,
		`{"a":-}`:                                     false,
		`{"a":--1}`:                                   false,
		`{"a":1-2}`:                                   false,
		`{"a":+1}`:                                    false,
		`{"a":nan}`:                                   false,
		`{"a":NaN}`:                                   false,
		`{"a":-inf}`:                                  false,
		`{"a":Infinity}`:                              false,
		`{"a":e5}`:                                    false,
		`{"a":[1,2,01]}`:                              false, // before ]
		`{"a":{"b":{"c":1.5.2}}}`:                     false, // before }
		`{"a":{"b":[0,{"c":00}]},"d":1}`:              false,
		`[1,2,-]`:                                     false,
		`{"a":1,"b":[3],"c":{"d":1e5e5}}`:             false,
	} {
		if json.Valid([]byte(body)) != want {
			t.Fatalf("%s: json.Valid says %v, the table %v", body, !want, want)
		}
		var p fastjson.Parser
		v, err := p.Parse(body)
		if err != nil {
			if want {
				t.Errorf("%s: the parser refuses it: %v", body, err)
			}
			continue
		}
		var buf []byte
		if got := numbersValid(v, &buf); got != want {
			t.Errorf("numbersValid(%s) = %v, want %v", body, got, want)
		}
		if err := strict([]byte(body), v, &buf); (err == nil) != want {
			t.Errorf("strict(%s) = %v, want valid: %v", body, err, want)
		}
	}
}

func TestHasControlByte(t *testing.T) {
	base := bytes.Repeat([]byte("ab\x7f\x80\xa0\xff \x20"), 3)
	if hasControlByte(base) {
		t.Fatalf("hasControlByte(%q) = true", base)
	}
	for i := range base {
		for _, c := range []byte{0x00, 0x01, 0x09, 0x0a, 0x1f} {
			b := bytes.Clone(base)
			b[i] = c
			if !hasControlByte(b) {
				t.Errorf("hasControlByte(%q) = false", b)
			}
		}
	}
}

// loadgenEvents are five events from `go run ./benchmarks/loadgen -dump 20`:
// compact, mostly string content, some escapes and non-ASCII text.
const loadgenEvents = `{"event":"agent.message_out","timestamp":1738000000,"conversation_id":"conv_ig_1648","message":{"id":"msg_agent_kewpum_000000000000","sender_name":"Tim Support 🛠️","channel":{"id":"channel_ig_1","name":"Instagram Toko","engine":"ig"},"bisnis":{"id":"biz_16","name":"Toko 16"},"user":{"id":"merchant_16","name":"Merchant 16"},"agent":{"id":"agent_8","name":"Tim Support 🛠️"},"content":{"type":"text","text":"您好，有货的。 Ongkir ke Surabaya Rp15.000 (estimasi 2-3 hari). Pesanan Anda sedang dikemas dan akan dikirim besok."}}}
{"event":"ai.message_generated","timestamp":1738000002,"conversation_id":"conv_wa_4213","message":{"id":"msg_ai_kewpum_000000000002","sender_name":"Asisten AI","channel":{"id":"channel_wa_3","name":"WA Toko Utama","engine":"wa"},"bisnis":{"id":"biz_11","name":"Toko 11"},"user":{"id":"merchant_11","name":"Merchant 11"},"ai":{"id":"ai_1","name":"Asisten AI"},"content":{"type":"text","text":"Maaf atas ketidaknyamanannya.\nKami proses refund dalam 1x24 jam. Pesanan Anda sedang dikemas dan akan dikirim besok."}}}
{"event":"device.connected","timestamp":1738000008,"device":{"id":"dev_ig_01_kewpum","name":"Instagram Toko","engine":"ig","phone":"+628122674949","status":"connected"}}
{"event":"channel.message_in","timestamp":1738000015,"conversation_id":"conv_wa_3149","conversation_label":"王小明","need_human":0,"message":{"id":"msg_wa_kewpum_000000000015","sender_name":"王小明","channel":{"id":"channel_wa_3","name":"WhatsApp Business","engine":"wa"},"bisnis":{"id":"biz_6","name":"Toko 6"},"user":{"id":"merchant_6","name":"Merchant 6"},"content":{"type":"text","text":"Terima kasih ya 👍👍 Ukuran \"XL\" masih ready?"}}}
{"event":"ai.message_generated","timestamp":1738000019,"conversation_id":"conv_tg_3801","message":{"id":"msg_ai_kewpum_000000000019","sender_name":"Asisten AI","channel":{"id":"channel_tg_1","name":"Telegram Bot CS","engine":"tg"},"bisnis":{"id":"biz_1","name":"Toko 1"},"user":{"id":"merchant_1","name":"Merchant 1"},"ai":{"id":"ai_1","name":"Asisten AI"},"content":{"type":"text","text":"Pesanan Anda sedang dikemas dan akan dikirim besok. Ongkir ke Surabaya Rp15.000 (estimasi 2-3 hari). Mohon ditunggu sebentar ya kak 🙏"}}}
`

// BenchmarkStrict compares strict with a second, full validation, on the
// samples as the platform sends them (compact), indented, and on events
// of benchmarks/loadgen. strict runs on trees parsed once, which the
// parse+strict case does not flatter: it parses each body anew, as Parse
// does, so that strict meets a cold tree, with keys and strings not yet
// unescaped; parse alone is its baseline.
func BenchmarkStrict(b *testing.B) {
	for _, form := range []string{"compact", "indented", "loadgen"} {
		bodies := strictBodies(b, form)
		parsers := make([]fastjson.Parser, len(bodies))
		roots := make([]*fastjson.Value, len(bodies))
		for i, body := range bodies {
			v, err := parsers[i].ParseBytes(body)
			if err != nil {
				b.Fatal(err)
			}
			roots[i] = v
		}
		var buf []byte
		b.Run(form+"/strict", func(b *testing.B) {
			for b.Loop() {
				for i, body := range bodies {
					if err := strict(body, roots[i], &buf); err != nil {
						b.Fatal(err)
					}
				}
			}
		})
		var p fastjson.Parser
		b.Run(form+"/parse", func(b *testing.B) {
			for b.Loop() {
				for _, body := range bodies {
					if _, err := p.ParseBytes(body); err != nil {
						b.Fatal(err)
					}
				}
			}
		})
		b.Run(form+"/parse+strict", func(b *testing.B) {
			for b.Loop() {
				for _, body := range bodies {
					v, err := p.ParseBytes(body)
					if err != nil {
						b.Fatal(err)
					}
					if err := strict(body, v, &buf); err != nil {
						b.Fatal(err)
					}
				}
			}
		})
		b.Run(form+"/ValidateBytes", func(b *testing.B) {
			for b.Loop() {
				for _, body := range bodies {
					if err := fastjson.ValidateBytes(body); err != nil {
						b.Fatal(err)
					}
				}
			}
		})
	}
}

// strictBodies returns BenchmarkStrict's bodies in form: the samples
// compact or indented, or loadgenEvents.
func strictBodies(b *testing.B, form string) [][]byte {
	var bodies [][]byte
	if form == "loadgen" {
		for _, l := range strings.Split(strings.TrimSpace(loadgenEvents), "\n") {
			bodies = append(bodies, []byte(l))
		}
		return bodies
	}
	for _, p := range sampleFiles {
		body := payload(b, p)
		if form == "compact" {
			var c bytes.Buffer
			if err := json.Compact(&c, body); err != nil {
				b.Fatal(err)
			}
			body = c.Bytes()
		}
		bodies = append(bodies, body)
	}
	return bodies
}
