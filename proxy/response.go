package proxy

import (
	"errors"
	"io"
	"net/http"
	"strings"
	"time"
	"unsafe"

	"go.uber.org/zap"

	"github.com/tollgate-dev/tollgate/meter"
	"github.com/tollgate-dev/tollgate/money"
)

// Response headers on metered responses (DESIGN "The proxy").
const (
	// HeaderRequestID is the request's id, which is also its hold id and
	// the reference of its charge entry in the ledger. It is random and
	// unguessable. It is set on every forwarded response, errors included.
	HeaderRequestID = "X-Tollgate-Request-Id"
	// HeaderReserved is the hold the request took, in decimal credits,
	// set on 2xx responses.
	HeaderReserved = "X-Tollgate-Reserved"
	// HeaderCost is what the request was charged, in decimal credits:
	// a header of a 2xx non-streaming response (when its body is at most
	// MaxHeldBodyBytes), an HTTP trailer of a stream (see cost.go). It is
	// the amount of the request's charge entry in the ledger.
	HeaderCost = "X-Tollgate-Cost"
	// HeaderAvailable is the customer's available credits, in decimal
	// credits, as of the request's reservation (see cost.go): after its
	// charge on a non-streaming response, before it on a stream. Set on
	// 2xx responses.
	HeaderAvailable = "X-Tollgate-Available"
	// HeaderOutputCap is the output cap, in tokens per choice, that
	// tollgate wrote into the forwarded request because the client asked
	// for more than the route's max_output_tokens, or for no cap (DESIGN
	// "Preflight estimate"). It is set on every forwarded response of
	// such a request, errors included, so that a provider's refusal of
	// the lowered cap can be understood; it is absent when the client's
	// own cap was sent unchanged.
	HeaderOutputCap = "X-Tollgate-Output-Cap"
)

var errAborted = errors.New("proxy: response aborted before its end")

// modifyResponse is ReverseProxy.ModifyResponse: a non-2xx answer passes
// through verbatim and its hold is released; a 2xx answer gets the
// tollgate headers and its body is metered on its way to the client.
func (s *Server) modifyResponse(res *http.Response) error {
	ex := exchangeOf(res.Request.Context())
	if ex == nil {
		return nil
	}
	ex.status = res.StatusCode
	ex.rt.m.upstream.Observe(s.now().Sub(ex.sentAt).Seconds())
	res.Header[HeaderRequestID] = ex.header(hdrRequestID)
	if ex.hdr[hdrOutputCap] != "" {
		res.Header[HeaderOutputCap] = ex.header(hdrOutputCap)
	}
	if res.StatusCode < 200 || res.StatusCode > 299 {
		// The provider refused or failed: no usage, nothing to charge.
		s.release(ex, "upstream status")
		return nil
	}
	res.Header[HeaderReserved] = ex.header(hdrReserved)
	b := &ex.resBody
	b.ex = ex
	b.rc = res.Body
	ct := res.Header.Get("Content-Type")
	if ce := res.Header.Get("Content-Encoding"); ce != "" && !strings.EqualFold(ce, "identity") {
		// Compressed although tollgate asked for identity (see rewrite):
		// the meter cannot read it, so the request is charged its
		// reservation, the most the customer agreed to pay.
		s.log.Warn("upstream answered with a Content-Encoding the meter cannot read; charging the reservation",
			zap.String("route", ex.rt.path), zap.String("content_encoding", ce), zap.String("request", ex.id))
	} else {
		b.tap = s.tap(ex.req, ct)
		if b.tap.Filters() {
			// The tap removes the usage chunk tollgate asked for, so the
			// length changes; the client gets a chunked body.
			res.Header.Del("Content-Length")
			res.ContentLength = -1
		}
	}
	res.Body = b
	s.m.openStreams.Inc()
	if ex.streamed(ct) {
		s.announceCost(ex, res)
	} else {
		s.holdBack(ex, res)
	}
	return nil
}

// meteredBody is the response body ReverseProxy copies to the client: it
// passes upstream bytes through the meter's Tap and settles the hold once,
// when the body ends (EOF), fails, or is closed early.
type meteredBody struct {
	ex       *exchange
	rc       io.ReadCloser
	tap      *meter.Tap // nil when the body is encoded: end charges the reservation
	pending  []byte     // output not yet handed to the client
	upErr    error      // the error that ended the upstream body, once seen
	ended    bool
	draining bool // Close left the rest of the body to drain
	// cost is the charge end handed to settle; charged is false until
	// then, and stays false if another path had closed the hold first.
	cost    money.Micros
	charged bool
	// trailer is the response's Trailer when the cost is announced as a
	// trailer (a stream): set at a clean EOF, before ReverseProxy reads it.
	trailer http.Header
}

func (b *meteredBody) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for {
		if len(b.pending) > 0 {
			n := copy(p, b.pending)
			b.pending = b.pending[n:]
			return n, nil
		}
		if b.ended {
			return 0, b.upErr
		}
		if b.upErr != nil {
			// Every byte Feed returned is out; only now may End reuse
			// the tap's buffer.
			b.end(b.upErr)
			if b.upErr == io.EOF && b.charged && b.trailer != nil {
				// ReverseProxy reads the trailer once this body has
				// returned EOF and been closed, on this goroutine.
				b.trailer[HeaderCost] = []string{b.cost.String()}
			}
			continue
		}
		n, err := b.rc.Read(p)
		if err != nil {
			b.upErr = err
		}
		if n == 0 {
			continue
		}
		out := p[:n]
		if b.tap != nil {
			out = b.tap.Feed(out)
		}
		if len(out) == 0 {
			continue
		}
		if unsafe.SliceData(out) == unsafe.SliceData(p) {
			return len(out), nil
		}
		k := copy(p, out)
		b.pending = out[k:]
		return k, nil
	}
}

// Close ends the body. Closed before its end while upstream is still
// sending (the copy to the client failed: the client went away), the rest
// is read in the background for at most clientGoneGrace, so that usage
// sent after the last bytes the client took is still seen, and then
// settled; otherwise it settles now.
func (b *meteredBody) Close() error {
	if !b.ended && b.upErr == nil && b.tap != nil {
		b.draining = true
		go b.drain()
		return nil
	}
	if !b.ended {
		b.end(errAborted)
	}
	b.releaseTap()
	return b.rc.Close()
}

// tap returns a Tap for a response to req, reusing one a finished body
// gave back.
func (s *Server) tap(req meter.Request, contentType string) *meter.Tap {
	if t, ok := s.taps.Get().(*meter.Tap); ok {
		t.Reset(req, contentType)
		return t
	}
	return meter.NewTap(req, contentType)
}

// releaseTap gives b's Tap back once b has ended and is closed: nothing
// reads b after that, so nothing uses what the Tap returned either.
func (b *meteredBody) releaseTap() {
	if b.tap != nil && b.ended {
		b.ex.srv.taps.Put(b.tap)
		b.tap = nil
		b.pending = nil
	}
}

// drain meters what upstream still sends after the client left, then
// settles and ends the upstream request.
func (b *meteredBody) drain() {
	ex := b.ex
	defer ex.done()
	t := time.AfterFunc(clientGoneGrace, ex.cancelUp)
	defer t.Stop()
	buf := ex.srv.buffers.Get()
	defer ex.srv.buffers.Put(buf)
	for b.upErr == nil {
		n, err := b.rc.Read(buf)
		if n > 0 {
			b.tap.Feed(buf[:n]) // the client is gone: meter only
		}
		if err != nil {
			b.upErr = err
		}
	}
	b.end(errAborted)
	b.releaseTap()
	// Read to its end or failed, and settled: a close error changes
	// nothing, and the client that would have seen it is gone.
	_ = b.rc.Close()
}

// end finishes metering: why is io.EOF for a complete body.
func (b *meteredBody) end(why error) {
	if b.ended {
		return
	}
	b.ended = true
	if b.upErr == nil {
		b.upErr = why
	}
	ex := b.ex
	s := ex.srv
	s.m.openStreams.Dec()
	var u meter.Usage
	if b.tap != nil {
		rest, usage := b.tap.End()
		if why == io.EOF {
			b.pending = rest
		}
		u = usage
	} else {
		u = ex.estimate
		u.Estimated = true
	}
	reason := "complete"
	if why != io.EOF {
		reason = "cut short"
		if ex.client.Err() != nil || b.draining {
			reason = "client gone"
		} else if ex.cut.Load() {
			reason = "max_request_duration"
		}
	}
	b.cost, b.charged = s.settle(ex, u, reason)
}
