package router

import (
	"errors"
	"fmt"
	"io"
	"net"
	"runtime/debug"
	"sync"
	"time"
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
		} else {
			r.bodyMem.dropped(cap(*bp))
		}
	}
	// With a declared length the buffer grows to it at once when the
	// first one is full, so that a large body leaves no trail of smaller
	// ones (growing by half, a 1 MB body allocated 5 MB: a flood of
	// unauthenticated hmac requests held twice its bodies). Chunked, it
	// doubles up to the limit.
	n, want := limit+1, 0
	if cl := ctx.Request.Header.ContentLength(); cl >= 0 {
		n, want = cl, cl
	}
	b, err := readLimited(stream, (*bp)[:0], n, want)
	if cap(b) != cap(*bp) {
		release() // the pooled buffer, which b has outgrown
		bp = &b
	}
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

// memReturner gives the memory of dropped large body buffers back to the OS.
// Without it, after a flood of large bodies (strangers' hmac requests, a
// burst of big events) the process kept its peak for minutes: the runtime
// collects only once the heap doubles again, and returns pages slowly after.
// It forces a collection and returns the free pages (debug.FreeOSMemory)
// once returnAfter bytes were dropped, at most once per returnEvery; the
// last drops of a burst are returned when that interval ends. The zero value
// is ready.
type memReturner struct {
	mu    sync.Mutex
	bytes int         // dropped since the last return
	last  time.Time   // the last return
	timer *time.Timer // a return is scheduled
	free  func()      // debug.FreeOSMemory; a test's counter
}

const (
	returnAfter = 16 << 20
	returnEvery = 2 * time.Second
)

func (m *memReturner) dropped(n int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.bytes += n
	if m.bytes < returnAfter || m.timer != nil {
		return
	}
	m.timer = time.AfterFunc(max(0, returnEvery-time.Since(m.last)), m.run)
}

func (m *memReturner) run() {
	m.mu.Lock()
	m.bytes, m.timer = 0, nil
	free := m.free
	m.mu.Unlock()
	if free == nil {
		free = debug.FreeOSMemory
	}
	free()
	m.mu.Lock()
	m.last = time.Now()
	m.mu.Unlock()
}

// readLimited appends from rd to b until EOF or until b holds n bytes. A
// full b grows to want bytes when that is more, else to twice its size; never
// past n.
func readLimited(rd io.Reader, b []byte, n, want int) ([]byte, error) {
	for len(b) < n {
		if len(b) == cap(b) {
			c := want
			if c <= cap(b) {
				c = max(2*cap(b), 16<<10)
			}
			b = append(make([]byte, 0, min(c, n)), b...)
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
