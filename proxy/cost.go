package proxy

import (
	"bytes"
	"io"
	"net/http"
	"strconv"
	"strings"
)

// A metered 2xx response tells the client what the request cost and what
// the customer has left (DESIGN "The proxy"), without a store call on the
// request's path: the reservation already returned the customer's
// available credits with this request's hold deducted (ex.available), and
// the charge is priced in process once the meter has read the usage. So
// both are "as of this request's reservation": requests of the same
// customer that settle or reserve meanwhile are not reflected, and
// GET /v1/customers/{id} on the admin API stays the authority.
//
// A non-streaming response is held back until its body has been read
// and metered, at most MaxHeldBodyBytes of it, and then sent with
// X-Tollgate-Cost and X-Tollgate-Available (after the charge:
// available + reserved - cost) and an exact Content-Length. The client
// gets the last byte no later than before (it reads the whole body
// anyway); only the first byte moves to the end. A body larger than that,
// or one cut short while held, is sent as it comes, as before, without
// those two headers.
//
// A stream (and a speech body: audio played as it arrives) cannot wait
// for its usage, which comes last. Its headers carry X-Tollgate-Available
// before the charge (available + reserved: what the customer had when the
// request started, as of the reservation) and announce X-Tollgate-Cost as
// an HTTP trailer (RFC 9110 section 6.5), sent after the last byte when
// the stream ends cleanly; subtract it to get what is left. A trailer needs a chunked body on HTTP/1.1 (RFC 9112
// section 7.1.2), so a stream's Content-Length, rare anyway, is dropped.
// Clients that ignore trailers (most SDKs) read the stream unchanged; a
// stream cut short ends as it did before, without the trailer. Go's
// http.Response.Trailer has it once the body is read to EOF.

// MaxHeldBodyBytes is the largest non-streaming response body the proxy
// holds back to put X-Tollgate-Cost and X-Tollgate-Available in its
// headers: 1 MiB, more than any chat, responses or messages answer, so
// that the memory a response may pin stays bounded. Larger bodies (large
// embedding batches, base64 images) are forwarded as they arrive, without
// those two headers; their cost is in the ledger entry whose reference is
// X-Tollgate-Request-Id.
const MaxHeldBodyBytes = 1 << 20

// Indexes of exchange.hdr, the backing arrays of the headers the proxy
// sets, so that setting them allocates no slice.
const (
	hdrRequestID = iota
	hdrReserved
	hdrOutputCap
	hdrCost
	hdrAvailable
	hdrLength
	hdrCount
)

// header returns the one-value header slice of ex.hdr[i].
func (ex *exchange) header(i int) []string { return ex.hdr[i : i+1 : i+1] }

// streamed reports whether the response is a stream: the request asked
// for one, or the upstream labels its body as server-sent events (a
// gateway may stream without being asked; holding such a body back would
// stop the stream), or as audio or raw bytes (speech, which players start
// playing as it arrives: OpenAI sends it chunked).
func (ex *exchange) streamed(contentType string) bool {
	return ex.req.Stream || hasPrefixFold(contentType, "text/event-stream") ||
		hasPrefixFold(contentType, "audio/") || hasPrefixFold(contentType, "application/octet-stream")
}

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

// announceCost sets a stream's X-Tollgate-Available and announces
// X-Tollgate-Cost as a trailer, which meteredBody.Read fills at EOF.
func (s *Server) announceCost(ex *exchange, res *http.Response) {
	ex.hdr[hdrAvailable] = (ex.available + ex.reserved).String()
	res.Header[HeaderAvailable] = ex.header(hdrAvailable)
	if res.Trailer == nil {
		res.Trailer = make(http.Header, 1)
	}
	// ReverseProxy announces every key of res.Trailer in the Trailer
	// header before the body and sends their values after it.
	res.Trailer[HeaderCost] = nil
	ex.resBody.trailer = res.Trailer
	res.Header.Del("Content-Length")
	res.ContentLength = -1
}

// holdBack reads and meters a non-streaming body before its headers go
// out, at most MaxHeldBodyBytes, and when it ended cleanly within that,
// sets X-Tollgate-Cost and X-Tollgate-Available. Whatever it read goes to
// the client first either way.
func (s *Server) holdBack(ex *exchange, res *http.Response) {
	b := &ex.resBody
	if res.ContentLength > MaxHeldBodyBytes {
		return
	}
	var buf bytes.Buffer
	if res.ContentLength >= 0 {
		// One allocation, with room for the read that finds EOF.
		buf.Grow(int(res.ContentLength) + bytes.MinRead)
	}
	// Reading b meters the bytes and, at EOF, settles (in the
	// background) and prices the charge.
	_, err := buf.ReadFrom(io.LimitReader(b, MaxHeldBodyBytes+1))
	ex.held = heldBody{head: buf.Bytes(), b: b}
	res.Body = &ex.held
	if err != nil || buf.Len() > MaxHeldBodyBytes || !b.charged {
		// Too large, cut short (the rest of b returns the same error,
		// and ReverseProxy aborts the response as it would have), or
		// settled by another path: sent without the cost.
		return
	}
	ex.hdr[hdrCost] = b.cost.String()
	ex.hdr[hdrAvailable] = (ex.available + ex.reserved - b.cost).String()
	ex.hdr[hdrLength] = strconv.Itoa(buf.Len())
	res.Header[HeaderCost] = ex.header(hdrCost)
	res.Header[HeaderAvailable] = ex.header(hdrAvailable)
	res.Header["Content-Length"] = ex.header(hdrLength)
	res.ContentLength = int64(buf.Len())
}

// heldBody is the body of a held-back response: what holdBack read, then
// the rest of the metered body, if any.
type heldBody struct {
	head []byte
	b    *meteredBody
}

func (h *heldBody) Read(p []byte) (int, error) {
	if len(h.head) > 0 {
		n := copy(p, h.head)
		h.head = h.head[n:]
		return n, nil
	}
	return h.b.Read(p)
}

// Close closes the metered body, which settles it if it has not ended.
func (h *heldBody) Close() error { return h.b.Close() }
