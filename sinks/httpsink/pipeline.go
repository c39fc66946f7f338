package httpsink

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"sync"
	"syscall"
	"time"

	"github.com/hookrouter/hookrouter/sinks"
	"github.com/valyala/fasthttp"
)

// newPipeline makes s deliver through a fasthttp.PipelineClient to u's host.
// maxConns connections carry up to depth requests each.
func (s *Sink) newPipeline(u *url.URL, maxConns, depth int) {
	tls := u.Scheme == "https"
	s.conns = &connSet{conns: map[*trackedConn]struct{}{}, timeout: s.timeout}
	s.pipe = &fasthttp.PipelineClient{
		// The client dials this address whatever the request's URI says;
		// the URI still gives the Host header and basic authentication.
		Addr:  fasthttp.AddMissingPort(u.Host, tls),
		IsTLS: tls,
		// Dialled through conns so that Close can end the connections:
		// the pipeline client has no method for it.
		Dial:                     s.conns.dial,
		Logger:                   pipeLogger{log: s.log, url: s.shown},
		NoDefaultUserAgentHeader: true,
		MaxConns:                 maxConns,
		MaxPendingRequests:       depth,
		// Zero: a request is written as soon as the writer is free, and
		// requests that queued meanwhile go out together. Waiting for
		// more would add latency to every request at low load.
		MaxBatchDelay:       0,
		ReadTimeout:         s.timeout, // a connection whose answer stalls is dropped
		WriteTimeout:        s.timeout,
		MaxIdleConnDuration: 30 * time.Second,
		ReadBufferSize:      8 << 10,
		// Room for a pipeline's worth of typical webhooks in one write.
		WriteBufferSize:        32 << 10,
		DisablePathNormalizing: true, // send the path exactly as configured
	}
}

// doPipelined makes the request on a pipelined connection. A request that
// failed because its connection broke before the answer came (the server
// closed it, typically after answering the one before with Connection:
// close) is sent once more, as the plain client does for a stale keep-alive
// connection; a second failure goes to the dispatcher, which retries.
func (s *Sink) doPipelined(req *fasthttp.Request, resp *fasthttp.Response, deadline time.Time) error {
	// req's body is ev.Body or the Send's pooled buffer. The pipeline client
	// may still write the request after DoDeadline has timed out and Send
	// has returned, so it must get a copy it owns: SetBody copies into
	// req's own buffer, which DoDeadline takes away with it (so it is set
	// again before the second attempt).
	body := req.Body()
	for attempt := 1; ; attempt++ {
		req.SetBody(body)
		err := s.pipe.DoDeadline(req, resp, deadline)
		if err == nil || attempt == 2 || !connBroke(err) {
			return err
		}
		s.log.Debug("re-sending on a new connection", "url", s.shown, "error", err)
	}
}

// errConnStopped is the text of the error fasthttp's pipeline client gives
// the requests written on a connection that ended before their answers were
// read. The error is unexported, so it is matched by text; if fasthttp
// rewords it, those requests are no longer re-sent here but still fail
// retryably (TestPipelineServerCloses notices).
const errConnStopped = "pipeline connection has been stopped"

// connBroke reports whether err means the request's connection ended before
// its answer was read, rather than a timeout or a bad answer.
func connBroke(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, fasthttp.ErrConnectionClosed) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) ||
		err.Error() == errConnStopped
}

// leave ends a Send on a pipelining sink; see Close.
func (s *Sink) leave() {
	if s.inflight.Add(-1) == 0 && s.closed.Load() {
		s.conns.closeAll()
	}
}

// connSet dials and keeps a pipelining sink's connections, so that Close
// can close them, and remembers the last dial error, which the pipeline
// client only logs.
type connSet struct {
	timeout time.Duration

	mu      sync.Mutex
	conns   map[*trackedConn]struct{}
	shut    bool  // closeAll was called: no more connections
	lastErr error // of the last dial, nil once one succeeds
}

func (cs *connSet) dial(addr string) (net.Conn, error) {
	conn, err := fasthttp.DialTimeout(addr, cs.timeout)
	cs.mu.Lock()
	defer cs.mu.Unlock()
	cs.lastErr = err
	if err != nil {
		return nil, err
	}
	if cs.shut {
		conn.Close()
		return nil, sinks.ErrClosed
	}
	tc := &trackedConn{Conn: conn, set: cs}
	cs.conns[tc] = struct{}{}
	return tc, nil
}

func (cs *connSet) dialErr() error {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	return cs.lastErr
}

// closeAll closes every connection and refuses new ones. The pipeline
// client has no way to stop its goroutines: those of a connection with
// requests in flight stop when it fails, those of an idle one when its idle
// timer fires (MaxIdleConnDuration), since they do not touch the socket
// until then.
func (cs *connSet) closeAll() {
	cs.mu.Lock()
	cs.shut = true
	conns := make([]*trackedConn, 0, len(cs.conns))
	for c := range cs.conns {
		conns = append(conns, c)
	}
	cs.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
}

// trackedConn leaves its set when closed, by the pipeline client or by
// closeAll (closing twice is harmless: the second Close just fails).
type trackedConn struct {
	net.Conn
	set *connSet
}

func (c *trackedConn) Close() error {
	c.set.mu.Lock()
	delete(c.set.conns, c)
	c.set.mu.Unlock()
	return c.Conn.Close()
}

// pipeLogger passes the pipeline client's messages (a connection ended or
// could not be made) to the sink's logger at debug level: the requests
// affected report the failure themselves.
type pipeLogger struct {
	log *slog.Logger
	url string
}

func (l pipeLogger) Printf(format string, args ...any) {
	l.log.Debug("pipelined connection", "url", l.url, "detail", fmt.Sprintf(format, args...))
}
