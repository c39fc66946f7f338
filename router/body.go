package router

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"unicode/utf8"

	"github.com/valyala/fasthttp"
)

// drainFactor bounds what is read and dropped of a body over max_body_bytes
// before the 413 is sent: a sender still writing a body up to drainFactor
// times the limit reads the answer instead of a connection reset (closing a
// socket with unread data resets it). Beyond that the connection is closed
// at once. Draining costs time, not memory: the bytes are discarded.
const drainFactor = 4

// bodyBufs holds the buffers request bodies are read into. A buffer that
// grew past maxPooledBody is dropped rather than pooled, so that one large
// request does not keep its memory after it is done.
var bodyBufs = sync.Pool{New: func() any { b := make([]byte, 0, 16<<10); return &b }}

const maxPooledBody = 256 << 10

// readBody reads the request's body, at most src.maxBody bytes. It answers
// the request itself when it returns ok false: 413 for a body over the limit
// (after draining it, up to drainFactor times the limit), 408 when the
// sender stalls past the read timeout, 400 for a body shorter than its
// Content-Length. release returns the buffer; the body is valid until then.
func (r *Router) readBody(ctx *fasthttp.RequestCtx, src *source) (body []byte, release func(), ok bool) {
	limit := src.maxBody
	if cl := ctx.Request.Header.ContentLength(); cl > limit {
		// Known from the headers: nothing is buffered.
		r.tooLarge(ctx, src, cl)
		return nil, nil, false
	}
	stream := ctx.RequestBodyStream()
	if stream == nil {
		return nil, func() {}, true
	}
	bp := bodyBufs.Get().(*[]byte)
	release = func() {
		if cap(*bp) <= maxPooledBody {
			*bp = (*bp)[:0]
			bodyBufs.Put(bp)
		}
	}
	b, err := readLimited(stream, (*bp)[:0], limit+1)
	*bp = b
	switch {
	case err != nil:
		release()
		r.readFailed(ctx, src, err)
		return nil, nil, false
	case len(b) > limit:
		// A chunked body has no length to refuse it by: it is refused
		// once it passes the limit.
		release()
		r.tooLarge(ctx, src, -1)
		return nil, nil, false
	}
	return b, release, true
}

// readLimited appends from rd to b until EOF or until b holds n bytes.
func readLimited(rd io.Reader, b []byte, n int) ([]byte, error) {
	for len(b) < n {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		m, err := rd.Read(b[len(b):min(cap(b), n)])
		b = b[:len(b)+m]
		if errors.Is(err, io.EOF) {
			return b, nil
		}
		if err != nil {
			return b, err
		}
	}
	return b, nil
}

// tooLarge answers 413. A body that declared a length up to drainFactor
// times the limit, or a chunked one, is read and dropped first (up to that
// bound), so the sender, still writing, can read the answer; the
// connection then stays usable when the whole body was drained.
func (r *Router) tooLarge(ctx *fasthttp.RequestCtx, src *source, contentLength int) {
	bound := int64(drainFactor) * int64(src.maxBody)
	if stream := ctx.RequestBodyStream(); stream != nil && contentLength <= int(bound) {
		if _, err := io.CopyN(io.Discard, stream, bound+1); !errors.Is(err, io.EOF) {
			ctx.SetConnectionClose() // more than the bound, or the sender stalled
		}
	} else {
		ctx.SetConnectionClose()
	}
	r.reject(ctx, src, fasthttp.StatusRequestEntityTooLarge, "too_large", bodyTooLarge)
}

// readFailed answers a request whose body could not be read.
func (r *Router) readFailed(ctx *fasthttp.RequestCtx, src *source, err error) {
	ctx.SetConnectionClose()
	var netErr net.Error
	if errors.As(err, &netErr) && netErr.Timeout() {
		r.reject(ctx, src, fasthttp.StatusRequestTimeout, "timeout", []byte(`{"error":"Request timeout"}`))
		return
	}
	r.reject(ctx, src, fasthttp.StatusBadRequest, "bad_body", []byte(`{"error":"Bad request","detail":"the body ended before its Content-Length"}`))
}

// invalidUTF8 describes where body stops being UTF-8, which JSON requires
// (RFC 8259 §8.1).
func invalidUTF8(body []byte) string {
	off := 0
	for off < len(body) {
		c, size := utf8.DecodeRune(body[off:])
		if c == utf8.RuneError && size == 1 {
			break
		}
		off += size
	}
	return fmt.Sprintf("body is not valid UTF-8 (byte %d); JSON must be UTF-8 (RFC 8259 section 8.1)", off)
}
