package auth

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
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
