package router

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// connLimitConfig is a config with max_conns and max_conns_per_ip set.
func connLimitConfig(maxConns, perIP int) string {
	return strings.Replace(baseConfig("{backend: memory}", "  crm: {type: stdout}", `  - {name: all, when: "true", to: [crm]}`),
		"data_dir:", fmt.Sprintf("max_conns: %d\nmax_conns_per_ip: %d\ndata_dir:", maxConns, perIP), 1)
}

// heldConn is a keep-alive ingress connection on which one request has
// been answered, so the server has really accepted and is serving it.
type heldConn struct {
	c  *net.TCPConn
	br *bufio.Reader
}

// dialFrom dials s's ingress from the loopback address ip.
func dialFrom(t *testing.T, s *server, ip string) *net.TCPConn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 3 * time.Second}
	c, err := d.Dial("tcp", strings.TrimPrefix(s.url, "http://"))
	if err != nil {
		t.Fatalf("dial from %s: %v", ip, err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(4 * time.Second))
	return c.(*net.TCPConn)
}

// hold opens a connection from ip and completes GET /health on it; it
// fails the test unless the answer is 200 and the connection stays open.
func hold(t *testing.T, s *server, ip string) heldConn {
	t.Helper()
	h := heldConn{c: dialFrom(t, s, ip)}
	h.br = bufio.NewReader(h.c)
	if status, body, hdr := h.get(t); status != 200 || hdr.Get("Connection") == "close" {
		t.Fatalf("held connection from %s: %d %q Connection %q, want 200 keep-alive", ip, status, body, hdr.Get("Connection"))
	}
	return h
}

func (h heldConn) get(t *testing.T) (int, string, http.Header) {
	t.Helper()
	if _, err := io.WriteString(h.c, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatalf("writing the request: %v", err)
	}
	return readAnswer(t, h.br)
}

// close closes h as a client does and returns once the server has closed
// its end too (the client reads EOF): the server has seen the close.
func (h heldConn) close(t *testing.T) {
	t.Helper()
	h.c.CloseWrite()
	if _, err := io.Copy(io.Discard, h.br); err != nil {
		t.Fatalf("waiting for the server to close: %v", err)
	}
	h.c.Close()
}

// refused dials from ip without writing and reads what the server says
// at accept: the status and body of the answer, then the server's close.
func refused(t *testing.T, s *server, ip string) (int, string) {
	t.Helper()
	c := dialFrom(t, s, ip)
	br := bufio.NewReader(c)
	status, body, hdr := readAnswer(t, br)
	if hdr.Get("Connection") != "close" {
		t.Errorf("refused connection: Connection %q, want close", hdr.Get("Connection"))
	}
	if n, err := br.Read(make([]byte, 1)); n != 0 || !errors.Is(err, io.EOF) {
		t.Errorf("refused connection: read %d bytes, %v after the answer; want the server's close (EOF)", n, err)
	}
	return status, body
}

// servedAgain dials from ip until a request is answered 200 on the new
// connection. fasthttp frees the slot of a closed connection just after
// closing it, so a dial in that instant may still be refused; each retry
// waits for the server's refusal, and the whole is bounded.
func servedAgain(t *testing.T, s *server, ip string, refusal int) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for tries := 1; ; tries++ {
		c := dialFrom(t, s, ip)
		br := bufio.NewReader(c)
		io.WriteString(c, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
		resp, err := http.ReadResponse(br, nil)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		c.Close()
		if err == nil && resp.StatusCode != refusal || time.Now().After(deadline) {
			t.Fatalf("after a close, a new connection from %s (try %d): %v %v, want 200", ip, tries, resp, err)
		}
	}
}

// TestMaxConns: with max_conns 3, three idle keep-alive connections fill
// the ingress; a fourth is answered 503 at accept and closed; once one of
// the three is closed, a new connection is served.
func TestMaxConns(t *testing.T) {
	s := startServer(t, connLimitConfig(3, 0))
	held := []heldConn{hold(t, s, "127.0.0.1"), hold(t, s, "127.0.0.2"), hold(t, s, "127.0.0.3")}
	const want = "The connection cannot be served because Server.Concurrency limit exceeded"
	for _, ip := range []string{"127.0.0.1", "127.0.0.4"} { // any peer: the limit is in all
		if status, body := refused(t, s, ip); status != 503 || body != want {
			t.Errorf("fourth connection from %s: %d %q, want 503 %q", ip, status, body, want)
		}
	}
	// The held connections are still served.
	for _, h := range held {
		if status, _, _ := h.get(t); status != 200 {
			t.Errorf("held connection after the refusals: %d, want 200", status)
		}
	}
	held[0].close(t)
	servedAgain(t, s, "127.0.0.4", 503)
}

// TestMaxConnsPerIP: with max_conns_per_ip 2, a third connection from
// 127.0.0.1 is answered 429 at accept and closed, while another address
// is still served; once one is closed, 127.0.0.1 is served again.
func TestMaxConnsPerIP(t *testing.T) {
	s := startServer(t, connLimitConfig(100, 2))
	a := hold(t, s, "127.0.0.1")
	hold(t, s, "127.0.0.1")
	const want = "The number of connections from your ip exceeds MaxConnsPerIP"
	if status, body := refused(t, s, "127.0.0.1"); status != 429 || body != want {
		t.Errorf("third connection from 127.0.0.1: %d %q, want 429 %q", status, body, want)
	}
	hold(t, s, "127.0.0.2") // the limit is per address
	if status, _, _ := a.get(t); status != 200 {
		t.Errorf("held connection after the refusal: %d, want 200", status)
	}
	a.close(t)
	servedAgain(t, s, "127.0.0.1", 429)
}
