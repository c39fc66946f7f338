package router

import (
	"bytes"
	"math"
	"net/netip"
	"strconv"

	"github.com/valyala/fasthttp"
)

var bodyForbidden = []byte(`{"error":"Forbidden"}`)
var bodyRateLimited = []byte(`{"error":"Too many requests"}`)

// allowed applies the source's allow_ips, answering 403 itself when it
// returns false.
func (r *Router) allowed(ctx *fasthttp.RequestCtx, src *source) bool {
	if len(src.allow) > 0 {
		ip := clientIP(ctx, r.rt.Load().trusted)
		ok := false
		for _, p := range src.allow {
			if p.Contains(ip) {
				ok = true
				break
			}
		}
		if !ok {
			r.reject(ctx, src, fasthttp.StatusForbidden, "forbidden", bodyForbidden)
			return false
		}
	}
	return true
}

// underLimit applies the source's rate_limit, answering 429 with
// Retry-After itself when it returns false. It runs after header auth (so
// strangers do not spend the senders' bucket) and before the body is read
// (so hmac auth's body reading is limited too).
func (r *Router) underLimit(ctx *fasthttp.RequestCtx, src *source) bool {
	if src.limiter != nil {
		res := src.limiter.Reserve()
		if d := res.Delay(); !res.OK() || d > 0 {
			res.Cancel() // a refused request spends no token
			secs := max(1, int(math.Ceil(d.Seconds())))
			if !res.OK() {
				secs = 1
			}
			ctx.Response.Header.Set("Retry-After", strconv.Itoa(secs))
			r.reject(ctx, src, fasthttp.StatusTooManyRequests, "rate_limited", bodyRateLimited)
			return false
		}
	}
	return true
}

// clientIP is the request's client: the peer, unless the peer is a trusted
// proxy, in which case the address its X-Forwarded-For names (the
// rightmost one that is not itself a trusted proxy: entries further left
// were written by the client and prove nothing), else its X-Real-IP.
// Several X-Forwarded-For lines are one list in their order (RFC 9110
// §5.3): a proxy such as HAProxy adds its own line after the client's, so
// the first line alone is the client's word.
func clientIP(ctx *fasthttp.RequestCtx, trusted []netip.Prefix) netip.Addr {
	peer, _ := netip.AddrFromSlice(ctx.RemoteIP())
	peer = peer.Unmap()
	if !inAny(peer, trusted) {
		return peer
	}
	if lines := ctx.Request.Header.PeekAll("X-Forwarded-For"); len(lines) > 0 {
		for i := len(lines) - 1; i >= 0; i-- {
			for xff := lines[i]; len(xff) > 0; {
				var part []byte
				if j := bytes.LastIndexByte(xff, ','); j >= 0 {
					part, xff = xff[j+1:], xff[:j]
				} else {
					part, xff = xff, nil
				}
				a, err := netip.ParseAddr(string(bytes.TrimSpace(part)))
				if err != nil {
					return peer // a forged or broken list: believe nothing
				}
				if a = a.Unmap(); !inAny(a, trusted) {
					return a
				}
			}
		}
		return peer
	}
	// X-Real-IP is one address that the proxy sets; several are not its.
	if xri := ctx.Request.Header.PeekAll("X-Real-IP"); len(xri) == 1 {
		if a, err := netip.ParseAddr(string(bytes.TrimSpace(xri[0]))); err == nil {
			return a.Unmap()
		}
	}
	return peer
}

func inAny(a netip.Addr, ps []netip.Prefix) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
