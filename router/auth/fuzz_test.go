package auth

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"strings"
	"testing"
	"time"
)

// FuzzVerify feeds arbitrary header values and bodies to every verifier: none
// may panic, and a correct signature of any body must verify while the same
// signature over a changed body must not.
func FuzzVerify(f *testing.F) {
	now := fixedNow.Unix()
	f.Add(secret, "1700000000", "v1,"+base64.StdEncoding.EncodeToString(mac(whKey, "id.1700000000."+body)), []byte(body))
	f.Add("Bearer "+secret, "", "v1,abc v2,def", []byte("{}"))
	f.Add("sha256="+hex.EncodeToString(mac([]byte(secret), body)), "-1", " ", []byte(nil))
	f.Add("", "99999999999999999999", "v1,"+string(bytes.Repeat([]byte{'='}, 44)), []byte{0xff})

	clock := WithClock(func() time.Time { return fixedNow })
	var verifiers []Verifier
	for _, cfg := range []Config{
		{Type: TypeHeader, Secret: secret},
		{Type: TypeBearer, Secret: secret},
		{Type: TypeHMACSHA256, Secret: secret},
		{Type: TypeStandardWebhooks, Secret: whSecret},
		{Type: TypeNone},
	} {
		v, err := New(cfg, clock)
		if err != nil {
			f.Fatal(err)
		}
		verifiers = append(verifiers, v)
	}
	hmacV, swV := verifiers[2], verifiers[3]

	f.Fuzz(func(t *testing.T, value, ts, sigs string, payload []byte) {
		h := hdr("Authorization", value, "X-Signature", value,
			HeaderWebhookID, value, HeaderWebhookTimestamp, ts, HeaderWebhookSignature, sigs)
		for _, v := range verifiers {
			v.Verify(h, payload)
		}

		changed := append(append([]byte(nil), payload...), 'x')
		sig := hex.EncodeToString(mac([]byte(secret), string(payload)))
		if !hmacV.Verify(hdr("X-Signature", sig), payload) {
			t.Fatalf("hmac: right signature of %q refused", payload)
		}
		if hmacV.Verify(hdr("X-Signature", sig), changed) {
			t.Fatalf("hmac: signature of %q accepted for %q", payload, changed)
		}

		if value == "" || bytes.ContainsAny([]byte(value), " \t") {
			return // not a usable webhook-id
		}
		good := swSig(whKey, value, now, string(payload))
		if !swV.Verify(swHeaders(value, now, sigs+" "+good), payload) {
			t.Fatalf("standard-webhooks: right signature refused (id %q, extra %q)", value, sigs)
		}
		if swV.Verify(swHeaders(value, now, good), changed) {
			t.Fatal("standard-webhooks: signature accepted for a changed body")
		}
	})
}

// FuzzVerifyRotation builds every verifier with several secrets (the fuzzer
// picks them): a request made with any one of them verifies, one made with
// a secret not in the list does not, and a changed body fails.
func FuzzVerifyRotation(f *testing.F) {
	f.Add("new-secret", "old-secret", "other", []byte(`{"event":"x"}`), uint8(0))
	f.Add("a", "a-longer-old-secret", "b", []byte(nil), uint8(1))
	f.Add("same", "same", "diff", []byte{0xff, 0}, uint8(3))
	clock := WithClock(func() time.Time { return fixedNow })
	now := fixedNow.Unix()
	f.Fuzz(func(t *testing.T, s1, s2, stranger string, payload []byte, pick uint8) {
		clean := func(s string) string { return string(bytes.Trim([]byte(s), " \t\r\n\x00")) }
		s1, s2, stranger = clean(s1), clean(s2), clean(stranger)
		if s1 == "" || s2 == "" || stranger == "" || stranger == s1 || stranger == s2 ||
			bytes.ContainsAny([]byte(s1+s2+stranger), "\r\n\x00") || strings.HasPrefix(s1+s2+stranger, "whsec_") {
			return
		}
		secrets := []string{s1, s2}
		use := secrets[int(pick)%2]
		changed := append(append([]byte(nil), payload...), 'x')
		for _, typ := range []string{TypeHeader, TypeBearer, TypeHMACSHA256, TypeStandardWebhooks} {
			v, err := New(Config{Type: typ, Secrets: secrets}, clock)
			if err != nil {
				t.Fatalf("%s: %v", typ, err)
			}
			sign := func(secret string) headers {
				switch typ {
				case TypeHeader:
					return hdr("Authorization", secret)
				case TypeBearer:
					return hdr("Authorization", "Bearer "+secret)
				case TypeHMACSHA256:
					return hdr("X-Signature", "sha256="+hex.EncodeToString(mac([]byte(secret), string(payload))))
				default:
					return swHeaders("msg_1", now, swSig([]byte(secret), "msg_1", now, string(payload)))
				}
			}
			if !v.Verify(sign(use), payload) {
				t.Fatalf("%s: secret %d of [%q %q] refused", typ, pick%2, s1, s2)
			}
			if v.Verify(sign(stranger), payload) {
				t.Fatalf("%s: secret %q not in the list accepted", typ, stranger)
			}
			if v.ReadsBody() && v.Verify(sign(use), changed) {
				t.Fatalf("%s: signature accepted for a changed body", typ)
			}
		}
	})
}
