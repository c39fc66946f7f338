package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
)

// The generator builds every body up front as a template whose unique parts
// (the message or device event's sequence number and its timestamp) sit at
// fixed offsets with fixed widths. Sending event u then costs a copy of its
// template and two digit writes, so body generation stays out of the timed
// part and memory stays bounded however long the run is; and re-sending u
// later yields the very same bytes, which is what a duplicate must be.

const (
	seqWidth   = 12         // digits of the sequence number inside ids
	tsWidth    = 10         // digits of a unix timestamp in seconds
	tsBase     = 1738000000 // first event's timestamp; + seq keeps it 10 digits
	seqMarker  = "@@@@@@@@@@@@"
	tsSentinel = 9876543210
)

// template is one pre-marshaled event with the offsets to patch.
type template struct {
	body  []byte
	event string
	seqAt []int // offsets of seqWidth-digit fields
	tsAt  []int // offsets of tsWidth-digit fields
}

// generator produces seed-shaped event bodies: event u is always template
// pick(u) with u and tsBase+u written in. It is read-only after newGenerator
// and safe for concurrent use.
type generator struct {
	templates []template
	seed      uint64
}

// eventMix is the share of each event type, roughly what a messaging
// platform with an AI assistant emits: mostly inbound messages.
var eventMix = []struct {
	event  string
	weight int
}{
	{"channel.message_in", 45},
	{"agent.message_out", 25},
	{"ai.message_generated", 20},
	{"device.connected", 5},
	{"device.disconnected", 5},
}

type channelDef struct{ engine, name string }

var channels = []channelDef{
	{"wa", "WhatsApp Business"},
	{"wa", "WA Toko Utama"},
	{"ig", "Instagram Toko"},
	{"fb", "Facebook Page Resmi"},
	{"tg", "Telegram Bot CS"},
}

var senders = []string{
	"Test User", "Rina", "Budi Santoso", "Siti Nurhaliza", "Andi \"Ucok\" Pratama",
	"Dewi 🌸", "王小明", "Made Wirawan", "Yohanes O'Brien", "Putri ✨ Ayu", "佐藤 花子", "Agus",
}

var agents = []string{"Budi (CS)", "Sari - Admin", "Tim Support 🛠️", "Rudi"}

var inboundTexts = []string{
	"Halo, saya butuh bantuan",
	"Apakah warna ini masih ada?",
	"Kak, pesanan saya belum sampai 😢",
	"Berapa ongkir ke Surabaya?",
	"Saya mau komplain, barangnya rusak!!",
	"Bisa COD nggak kak? 🙏",
	"Ukuran \"XL\" masih ready?",
	"Terima kasih ya 👍👍",
	"你好，这个还有货吗？",
	"Mau tanya:\n1. harga grosir\n2. minimal order",
	"Tolong hubungi saya di nomor 0812-3456-7890",
	"Refund gimana caranya? Sudah 3 hari \\ belum ada kabar",
	"こんにちは、配送について質問があります",
	"Promo 12.12 masih berlaku? 🎉🛒",
	"Saya ingin bicara dengan manusia, bukan bot",
	"OK",
	"Barang sudah diterima, mantap 🔥\nAkan order lagi",
	"<b>test</b> & 'quote'",
}

var outboundTexts = []string{
	"Baik, kami bantu cek pesanan Anda.",
	"Mohon ditunggu sebentar ya kak 🙏",
	"Pesanan Anda sedang dikemas dan akan dikirim besok.",
	"Untuk ukuran \"XL\" masih tersedia, silakan checkout.",
	"Ongkir ke Surabaya Rp15.000 (estimasi 2-3 hari).",
	"Terima kasih sudah berbelanja! ❤️",
	"Maaf atas ketidaknyamanannya.\nKami proses refund dalam 1x24 jam.",
	"您好，有货的。",
}

// Payload shapes, field order as the platform sends them.
type (
	evChannel struct {
		ID     string `json:"id"`
		Name   string `json:"name"`
		Engine string `json:"engine"`
	}
	evRef struct {
		ID   string `json:"id"`
		Name string `json:"name"`
	}
	evAttachment struct {
		Type     string `json:"type"`
		URL      string `json:"url"`
		MimeType string `json:"mime_type"`
		Size     int    `json:"size"`
	}
	evContent struct {
		Type        string         `json:"type"`
		Text        string         `json:"text"`
		Attachments []evAttachment `json:"attachments,omitempty"`
	}
	evMessage struct {
		ID         string    `json:"id"`
		SenderName string    `json:"sender_name"`
		Channel    evChannel `json:"channel"`
		Bisnis     evRef     `json:"bisnis"`
		User       evRef     `json:"user"`
		Agent      *evRef    `json:"agent,omitempty"`
		AI         *evRef    `json:"ai,omitempty"`
		Content    evContent `json:"content"`
	}
	evDevice struct {
		ID     string `json:"id"`
		Name   string `json:"name"`
		Engine string `json:"engine"`
		Phone  string `json:"phone"`
		Status string `json:"status"`
	}
	evPayload struct {
		Event             string     `json:"event"`
		Timestamp         int64      `json:"timestamp"`
		ConversationID    string     `json:"conversation_id,omitempty"`
		ConversationLabel string     `json:"conversation_label,omitempty"`
		NeedHuman         *int       `json:"need_human,omitempty"`
		Message           *evMessage `json:"message,omitempty"`
		Device            *evDevice  `json:"device,omitempty"`
	}
)

// newGenerator builds n templates from seed. tag goes into every id so that
// two runs against the same router do not collide in its dedup store.
func newGenerator(seed uint64, n int, tag string) (*generator, error) {
	if strings.ContainsAny(tag, "\"\\@") {
		return nil, fmt.Errorf("tag %q: must not contain quotes, backslashes or @", tag)
	}
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	total := 0
	for _, m := range eventMix {
		total += m.weight
	}
	g := &generator{templates: make([]template, 0, n), seed: seed}
	for range n {
		w := rng.IntN(total)
		ev := eventMix[0].event
		for _, m := range eventMix {
			if w < m.weight {
				ev = m.event
				break
			}
			w -= m.weight
		}
		t, err := buildTemplate(rng, ev, tag)
		if err != nil {
			return nil, err
		}
		g.templates = append(g.templates, t)
	}
	return g, nil
}

func pickText(rng *rand.Rand, texts []string) string {
	// One to three fragments, so text lengths vary from a word to a paragraph.
	parts := 1 + rng.IntN(3)
	var b strings.Builder
	for i := range parts {
		if i > 0 {
			b.WriteString(" ")
		}
		b.WriteString(texts[rng.IntN(len(texts))])
	}
	return b.String()
}

func buildTemplate(rng *rand.Rand, event, tag string) (template, error) {
	p := evPayload{Event: event, Timestamp: tsSentinel}
	ch := channels[rng.IntN(len(channels))]
	switch event {
	case "device.connected", "device.disconnected":
		n := 1 + rng.IntN(12)
		status := strings.TrimPrefix(event, "device.")
		p.Device = &evDevice{
			// A device's key is (device.id, timestamp): the timestamp carries
			// the sequence number, the id stays one of a few real-looking ones.
			ID:     fmt.Sprintf("dev_%s_%02d_%s", ch.engine, n, tag),
			Name:   ch.name,
			Engine: ch.engine,
			Phone:  fmt.Sprintf("+62812%07d", rng.IntN(10_000_000)),
			Status: status,
		}
	default:
		conv := rng.IntN(5000)
		biz := 1 + rng.IntN(20)
		sender := senders[rng.IntN(len(senders))]
		m := &evMessage{
			SenderName: sender,
			Channel:    evChannel{ID: fmt.Sprintf("channel_%s_%d", ch.engine, 1+rng.IntN(3)), Name: ch.name, Engine: ch.engine},
			Bisnis:     evRef{ID: fmt.Sprintf("biz_%d", biz), Name: fmt.Sprintf("Toko %d", biz)},
			User:       evRef{ID: fmt.Sprintf("merchant_%d", biz), Name: fmt.Sprintf("Merchant %d", biz)},
			Content:    evContent{Type: "text"},
		}
		p.ConversationID = fmt.Sprintf("conv_%s_%d", ch.engine, conv)
		switch event {
		case "channel.message_in":
			m.ID = fmt.Sprintf("msg_%s_%s_%s", ch.engine, tag, seqMarker)
			m.Content.Text = pickText(rng, inboundTexts)
			nh := 0
			if rng.IntN(5) == 0 {
				nh = 1
			}
			p.NeedHuman = &nh
			p.ConversationLabel = sender
			if rng.IntN(7) == 0 {
				m.Content.Type = "image"
				m.Content.Attachments = []evAttachment{{
					Type:     "image",
					URL:      fmt.Sprintf("https://cdn.example.com/a/%d.jpg", rng.IntN(1_000_000)),
					MimeType: "image/jpeg",
					Size:     1000 + rng.IntN(2_000_000),
				}}
			}
		case "agent.message_out":
			a := agents[rng.IntN(len(agents))]
			m.ID = fmt.Sprintf("msg_agent_%s_%s", tag, seqMarker)
			m.SenderName = a
			m.Agent = &evRef{ID: fmt.Sprintf("agent_%d", 1+rng.IntN(30)), Name: a}
			m.Content.Text = pickText(rng, outboundTexts)
		case "ai.message_generated":
			m.ID = fmt.Sprintf("msg_ai_%s_%s", tag, seqMarker)
			m.SenderName = "Asisten AI"
			m.AI = &evRef{ID: "ai_1", Name: "Asisten AI"}
			m.Content.Text = pickText(rng, outboundTexts)
		}
		p.Message = m
	}

	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(&p); err != nil {
		return template{}, fmt.Errorf("encode %s: %w", event, err)
	}
	body := bytes.TrimRight(buf.Bytes(), "\n")
	t := template{body: body, event: event}
	t.seqAt = offsets(body, []byte(seqMarker))
	t.tsAt = offsets(body, []byte(strconv.Itoa(tsSentinel)))
	wantSeq := 1
	if p.Device != nil {
		wantSeq = 0
	}
	if len(t.seqAt) != wantSeq || len(t.tsAt) != 1 {
		return template{}, fmt.Errorf("template %s: %d id and %d timestamp slots, want %d and 1", event, len(t.seqAt), len(t.tsAt), wantSeq)
	}
	return t, nil
}

func offsets(b, sub []byte) []int {
	var out []int
	for i := 0; ; {
		j := bytes.Index(b[i:], sub)
		if j < 0 {
			return out
		}
		out = append(out, i+j)
		i += j + len(sub)
	}
}

// pick maps a sequence number to its template; a cheap integer hash keeps
// the event mix well spread however sequence numbers are handed out.
func (g *generator) pick(seq uint64) *template {
	x := seq ^ g.seed
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	return &g.templates[x%uint64(len(g.templates))]
}

// body appends event seq's bytes to dst[:0] and returns it. The same seq
// always yields the same bytes.
func (g *generator) body(dst []byte, seq uint64) []byte {
	t := g.pick(seq)
	dst = append(dst[:0], t.body...)
	for _, at := range t.seqAt {
		putDigits(dst[at:at+seqWidth], seq)
	}
	for _, at := range t.tsAt {
		putDigits(dst[at:at+tsWidth], tsBase+seq)
	}
	return dst
}

// putDigits writes v zero-padded into all of b.
func putDigits(b []byte, v uint64) {
	for i := len(b) - 1; i >= 0; i-- {
		b[i] = byte('0' + v%10)
		v /= 10
	}
}
