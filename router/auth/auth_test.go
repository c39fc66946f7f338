package auth

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// The seam this package relies on: the ingress passes fasthttp's header.
var _ Headers = (*fasthttp.RequestHeader)(nil)

// headers is a Headers with case-insensitive names and no allocation on Peek.
type headers []struct {
	name  string
	value []byte
}

func (h headers) Peek(name string) []byte {
	for _, kv := range h {
		if strings.EqualFold(kv.name, name) {
			return kv.value
		}
	}
	return nil
}

func hdr(kv ...string) headers {
	h := make(headers, 0, len(kv)/2)
	for i := 0; i+1 < len(kv); i += 2 {
		h = append(h, struct {
			name  string
			value []byte
		}{kv[i], []byte(kv[i+1])})
	}
	return h
}

const (
	secret = "s3cr3t-platform-key"
	body   = `{"event":"channel.message_in","message":{"id":"msg_1","content":{"text":"halo"}}}`
)

func mac(key []byte, parts ...string) []byte {
	m := hmac.New(sha256.New, key)
	for _, p := range parts {
		m.Write([]byte(p))
	}
	return m.Sum(nil)
}

// whKey is a Standard Webhooks key; whSecret is how a config writes it.
var (
	whKey    = []byte("0123456789abcdef0123456789abcdef")
	whSecret = "whsec_" + base64.StdEncoding.EncodeToString(whKey)
)

// fixedNow is the clock of the standard-webhooks cases.
var fixedNow = time.Unix(1_700_000_000, 0)

func swSig(key []byte, id string, ts int64, payload string) string {
	return "v1," + base64.StdEncoding.EncodeToString(mac(key, id, ".", strconv.FormatInt(ts, 10), ".", payload))
}

func swHeaders(id string, ts int64, sig string) headers {
	return hdr(HeaderWebhookID, id, HeaderWebhookTimestamp, strconv.FormatInt(ts, 10), HeaderWebhookSignature, sig)
}

func TestVerify(t *testing.T) {
	bodyMAC := mac([]byte(secret), body)
	hexSig, b64Sig := hex.EncodeToString(bodyMAC), base64.StdEncoding.EncodeToString(bodyMAC)
	now := fixedNow.Unix()
	goodSW := swSig(whKey, "msg_1", now, body)
	wrongSW := swSig([]byte("another key, another signature!"), "msg_1", now, body)

	headerCfg := Config{Type: TypeHeader, Secret: secret}
	bearerCfg := Config{Type: TypeBearer, Secret: secret}
	hmacCfg := Config{Type: TypeHMACSHA256, Secret: secret}
	swCfg := Config{Type: TypeStandardWebhooks, Secret: whSecret}

	cases := []struct {
		name string
		cfg  Config
		h    headers
		body string
		want bool
	}{
		{"header/right", headerCfg, hdr("Authorization", secret), body, true},
		{"header/name is case-insensitive", headerCfg, hdr("authorization", secret), body, true},
		{"header/wrong", headerCfg, hdr("Authorization", "s3cr3t-platform-kez"), body, false},
		{"header/missing", headerCfg, hdr("X-Other", secret), body, false},
		{"header/empty", headerCfg, hdr("Authorization", ""), body, false},
		{"header/secret is a prefix", headerCfg, hdr("Authorization", secret+"x"), body, false},
		{"header/prefix of the secret", headerCfg, hdr("Authorization", secret[:5]), body, false},
		{"header/bearer form is not the raw value", headerCfg, hdr("Authorization", "Bearer "+secret), body, false},
		{"header/custom name", Config{Type: TypeHeader, Header: "X-Webhook-Token", Secret: secret}, hdr("X-Webhook-Token", secret), body, true},
		{"header/custom name ignores Authorization", Config{Type: TypeHeader, Header: "X-Webhook-Token", Secret: secret}, hdr("Authorization", secret), body, false},

		{"bearer/right", bearerCfg, hdr("Authorization", "Bearer "+secret), body, true},
		{"bearer/scheme is case-insensitive", bearerCfg, hdr("Authorization", "bearer "+secret), body, true},
		{"bearer/extra spaces", bearerCfg, hdr("Authorization", "Bearer   "+secret+" "), body, true},
		{"bearer/bare secret", bearerCfg, hdr("Authorization", secret), body, false},
		{"bearer/wrong scheme", bearerCfg, hdr("Authorization", "Basic "+secret), body, false},
		{"bearer/wrong token", bearerCfg, hdr("Authorization", "Bearer nope"), body, false},
		{"bearer/empty token", bearerCfg, hdr("Authorization", "Bearer "), body, false},
		{"bearer/missing", bearerCfg, nil, body, false},

		{"hmac/hex", hmacCfg, hdr("X-Signature", hexSig), body, true},
		{"hmac/upper hex", hmacCfg, hdr("X-Signature", strings.ToUpper(hexSig)), body, true},
		{"hmac/sha256= prefix", hmacCfg, hdr("X-Signature", "sha256="+hexSig), body, true},
		{"hmac/SHA256= prefix", hmacCfg, hdr("X-Signature", "SHA256="+b64Sig), body, true},
		{"hmac/base64", hmacCfg, hdr("X-Signature", b64Sig), body, true},
		{"hmac/base64 raw url", hmacCfg, hdr("X-Signature", base64.RawURLEncoding.EncodeToString(bodyMAC)), body, true},
		{"hmac/base64 url", hmacCfg, hdr("X-Signature", base64.URLEncoding.EncodeToString(bodyMAC)), body, true},
		{"hmac/wrong prefix", hmacCfg, hdr("X-Signature", "sha1="+hexSig), body, false},
		{"hmac/tampered body", hmacCfg, hdr("X-Signature", hexSig), strings.Replace(body, "halo", "hal0", 1), false},
		{"hmac/empty body", hmacCfg, hdr("X-Signature", hexSig), "", false},
		{"hmac/wrong secret", hmacCfg, hdr("X-Signature", hex.EncodeToString(mac([]byte("other"), body))), body, false},
		{"hmac/truncated", hmacCfg, hdr("X-Signature", hexSig[:62]), body, false},
		{"hmac/not hex", hmacCfg, hdr("X-Signature", "zz"+hexSig[2:]), body, false},
		{"hmac/missing", hmacCfg, hdr("Authorization", hexSig), body, false},
		{"hmac/custom header", Config{Type: TypeHMACSHA256, Header: "X-Hub-Signature-256", Secret: secret}, hdr("X-Hub-Signature-256", "sha256="+hexSig), body, true},

		{"standard-webhooks/right", swCfg, swHeaders("msg_1", now, goodSW), body, true},
		{"standard-webhooks/raw secret", Config{Type: TypeStandardWebhooks, Secret: "plain-secret"}, swHeaders("msg_1", now, swSig([]byte("plain-secret"), "msg_1", now, body)), body, true},
		{"standard-webhooks/second of several", swCfg, swHeaders("msg_1", now, wrongSW+" "+goodSW), body, true},
		{"standard-webhooks/first of several", swCfg, swHeaders("msg_1", now, goodSW+" v2,abc "+wrongSW), body, true},
		{"standard-webhooks/none matching", swCfg, swHeaders("msg_1", now, wrongSW+" "+wrongSW), body, false},
		{"standard-webhooks/wrong version", swCfg, swHeaders("msg_1", now, "v2,"+goodSW[3:]), body, false},
		{"standard-webhooks/no version", swCfg, swHeaders("msg_1", now, goodSW[3:]), body, false},
		{"standard-webhooks/tampered body", swCfg, swHeaders("msg_1", now, goodSW), body + " ", false},
		{"standard-webhooks/tampered id", swCfg, swHeaders("msg_2", now, goodSW), body, false},
		{"standard-webhooks/expired", swCfg, swHeaders("msg_1", now-301, swSig(whKey, "msg_1", now-301, body)), body, false},
		{"standard-webhooks/in the future", swCfg, swHeaders("msg_1", now+301, swSig(whKey, "msg_1", now+301, body)), body, false},
		{"standard-webhooks/within tolerance", swCfg, swHeaders("msg_1", now-299, swSig(whKey, "msg_1", now-299, body)), body, true},
		{"standard-webhooks/custom tolerance", Config{Type: TypeStandardWebhooks, Secret: whSecret, Tolerance: time.Minute}, swHeaders("msg_1", now-90, swSig(whKey, "msg_1", now-90, body)), body, false},
		{"standard-webhooks/timestamp not a number", swCfg, hdr(HeaderWebhookID, "msg_1", HeaderWebhookTimestamp, "17e8", HeaderWebhookSignature, goodSW), body, false},
		{"standard-webhooks/missing id", swCfg, hdr(HeaderWebhookTimestamp, strconv.FormatInt(now, 10), HeaderWebhookSignature, goodSW), body, false},
		{"standard-webhooks/missing timestamp", swCfg, hdr(HeaderWebhookID, "msg_1", HeaderWebhookSignature, goodSW), body, false},
		{"standard-webhooks/missing signature", swCfg, hdr(HeaderWebhookID, "msg_1", HeaderWebhookTimestamp, strconv.FormatInt(now, 10)), body, false},
		{"standard-webhooks/garbage signature", swCfg, swHeaders("msg_1", now, "v1,"+strings.Repeat("!", 44)+" v1,"+strings.Repeat("A", 500)), body, false},

		{"none/anything", Config{Type: TypeNone}, nil, "", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			v, err := New(tc.cfg, WithClock(func() time.Time { return fixedNow }))
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			if got := v.Verify(tc.h, []byte(tc.body)); got != tc.want {
				t.Fatalf("Verify = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestNewErrors(t *testing.T) {
	cases := []struct {
		name string
		cfg  Config
		want string
	}{
		{"empty type", Config{Secret: secret}, "auth type is empty"},
		{"unknown type", Config{Type: "basic", Secret: secret}, `unknown`},
		{"header without secret", Config{Type: TypeHeader}, "secret is empty"},
		{"bearer without secret", Config{Type: TypeBearer}, "secret is empty"},
		{"hmac without secret", Config{Type: TypeHMACSHA256}, "secret is empty"},
		{"standard-webhooks without secret", Config{Type: TypeStandardWebhooks}, "secret is empty"},
		{"standard-webhooks bad base64", Config{Type: TypeStandardWebhooks, Secret: "whsec_not*base64"}, "not valid base64"},
		{"standard-webhooks empty key", Config{Type: TypeStandardWebhooks, Secret: "whsec_"}, "empty"},
		{"negative tolerance", Config{Type: TypeStandardWebhooks, Secret: whSecret, Tolerance: -time.Second}, "negative"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.cfg)
			if err == nil {
				t.Fatal("no error")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not say %q", err, tc.want)
			}
			if len(tc.cfg.Secret) > len("whsec_") && strings.Contains(err.Error(), tc.cfg.Secret) {
				t.Fatalf("error %q contains the secret", err)
			}
		})
	}
	if _, err := New(Config{Type: TypeNone}); err != nil {
		t.Errorf("none without secret: %v", err)
	}
}

// TestStandardWebhooksRealClock checks the default clock is the real one.
func TestStandardWebhooksRealClock(t *testing.T) {
	v, err := New(Config{Type: TypeStandardWebhooks, Secret: whSecret})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().Unix()
	if !v.Verify(swHeaders("id", now, swSig(whKey, "id", now, body)), []byte(body)) {
		t.Error("a fresh signature is refused")
	}
	if v.Verify(swHeaders("id", fixedNow.Unix(), swSig(whKey, "id", fixedNow.Unix(), body)), []byte(body)) {
		t.Error("a 2023 timestamp is accepted")
	}
}

func TestFastHTTPHeaders(t *testing.T) {
	var req fasthttp.Request
	req.Header.Set("authorization", secret)
	req.Header.Set("X-Signature", "sha256="+hex.EncodeToString(mac([]byte(secret), body)))
	for _, cfg := range []Config{
		{Type: TypeHeader, Secret: secret},
		{Type: TypeHMACSHA256, Secret: secret},
	} {
		v, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if !v.Verify(&req.Header, []byte(body)) {
			t.Errorf("%s: a request with the right credentials is refused", cfg.Type)
		}
	}
}

func TestVerifyAllocs(t *testing.T) {
	now := fixedNow.Unix()
	bodyMAC := mac([]byte(secret), body)
	cases := []struct {
		name string
		cfg  Config
		h    headers
		// pooled verifiers allocate under -race, where sync.Pool drops
		// items on purpose.
		pooled bool
	}{
		{"header", Config{Type: TypeHeader, Secret: secret}, hdr("Authorization", secret), false},
		{"header wrong", Config{Type: TypeHeader, Secret: secret}, hdr("Authorization", "nope"), false},
		{"bearer", Config{Type: TypeBearer, Secret: secret}, hdr("Authorization", "Bearer "+secret), false},
		{"hmac-sha256", Config{Type: TypeHMACSHA256, Secret: secret}, hdr("X-Signature", base64.StdEncoding.EncodeToString(bodyMAC)), true},
		{"standard-webhooks", Config{Type: TypeStandardWebhooks, Secret: whSecret}, swHeaders("m", now, swSig(whKey, "m", now, body)), true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.pooled && raceEnabled {
				t.Skip("sync.Pool drops items under -race")
			}
			v, err := New(tc.cfg, WithClock(func() time.Time { return fixedNow }))
			if err != nil {
				t.Fatal(err)
			}
			b := []byte(body)
			var h Headers = tc.h // boxed once, here: the conversion allocates
			if n := testing.AllocsPerRun(200, func() { v.Verify(h, b) }); n != 0 {
				t.Fatalf("Verify allocates %v times, want 0", n)
			}
		})
	}
}

func BenchmarkVerify(b *testing.B) {
	payload := []byte(strings.Repeat(body, 12)) // ~1 KiB
	now := fixedNow.Unix()
	bodyMAC := mac([]byte(secret), string(payload))
	cases := []struct {
		name string
		cfg  Config
		h    headers
	}{
		{"header", Config{Type: TypeHeader, Secret: secret}, hdr("Authorization", secret)},
		{"bearer", Config{Type: TypeBearer, Secret: secret}, hdr("Authorization", "Bearer "+secret)},
		{"hmac-sha256", Config{Type: TypeHMACSHA256, Secret: secret}, hdr("X-Signature", hex.EncodeToString(bodyMAC))},
		{"standard-webhooks", Config{Type: TypeStandardWebhooks, Secret: whSecret}, swHeaders("m", now, swSig(whKey, "m", now, string(payload)))},
	}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			v, err := New(tc.cfg, WithClock(func() time.Time { return fixedNow }))
			if err != nil {
				b.Fatal(err)
			}
			var h Headers = tc.h
			b.ReportAllocs()
			if tc.cfg.Type == TypeHMACSHA256 || tc.cfg.Type == TypeStandardWebhooks {
				b.SetBytes(int64(len(payload))) // only these read the body
			}
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if !v.Verify(h, payload) {
						b.Error("refused")
						return
					}
				}
			})
		})
	}
}

func TestValidateSecrets(t *testing.T) {
	for _, tc := range []struct {
		name string
		c    Config
		want string
	}{
		{"both", Config{Type: TypeHeader, Secret: "a", Secrets: []string{"b"}}, "secrets: give secret or secrets, not both"},
		{"empty list", Config{Type: TypeHeader, Secrets: []string{}}, "secrets: required"},
		{"empty item", Config{Type: TypeBearer, Secrets: []string{"new", " "}}, "secrets[1]: secret is empty"},
		{"none with secrets", Config{Type: TypeNone, Secrets: []string{"x"}}, "secrets: auth type none takes no secrets"},
		{"rotation", Config{Type: TypeHMACSHA256, Secrets: []string{"new", "old"}}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.c.Default()
			var got []string
			for _, e := range tc.c.Validate() {
				got = append(got, e.Error())
			}
			if all := strings.Join(got, "; "); tc.want == "" && all != "" || !strings.Contains(all, tc.want) {
				t.Errorf("problems %q, want %q", all, tc.want)
			}
		})
	}
}
