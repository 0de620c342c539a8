package proxy

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/tollgate-dev/tollgate/ledger"
	"github.com/tollgate-dev/tollgate/meter"
	"github.com/tollgate-dev/tollgate/money"
)

// exchange is one metered request from reservation to settlement. It is
// also the context of the request handed to ReverseProxy: it embeds the
// upstream request's context and answers Value(exchangeKey{}) with
// itself, which is how Rewrite, ModifyResponse and ErrorHandler, which
// get only the request, find it.
//
// Storing the request's context in a struct goes against STYLE 9, on
// purpose. The usual way,
// r.WithContext(context.WithValue(ctx, exchangeKey{}, ex)), allocates a
// valueCtx on every request, and the exchange, which lives exactly as
// long as the upstream request, already is the natural owner of that
// request's context: it derives it in watchClient and cancels it in
// done. Settlement and renewal derive theirs from it without its
// cancellation (context.WithoutCancel).
type exchange struct {
	// Context is the upstream request's context: the client's, without
	// its cancellation, ended by cancelUp clientGoneGrace after the client
	// goes away (see watchClient).
	context.Context
	client   context.Context    // the client's request context
	cancelUp context.CancelFunc // ends the upstream request
	unwatch  func() bool        // stops watchClient

	srv      *Server
	rt       *route
	st       *state
	customer string
	id       string
	req      meter.Request
	estimate meter.Usage
	reserved money.Micros
	// available is the customer's available credits right after the
	// hold was taken (the hold deducted), as the store's reservation
	// reported it: the base of X-Tollgate-Available.
	available money.Micros
	heldAt    time.Time // when the hold was taken
	sentAt    time.Time // when the request went upstream

	status int         // what the client was answered, for metrics
	closed atomic.Bool // the hold has been handed to settle or release
	sent   atomic.Bool // the Transport has taken the whole request body
	cut    atomic.Bool // max_request_duration cut the request (renew.go)
	timer  holdTimer   // renews the hold, enforces max_request_duration
	rctx   storeCtx    // the reservation's context

	hdr     [hdrCount]string // backing arrays of the response headers (hdrRequestID, …)
	body    []byte           // the body sent upstream
	reqBody bodyReader
	resBody meteredBody
	held    heldBody // the body of a held-back response (cost.go)
}

type exchangeKey struct{}

// Value implements context.Context.
func (ex *exchange) Value(key any) any {
	if key == (exchangeKey{}) {
		return ex
	}
	return ex.Context.Value(key)
}

func exchangeOf(ctx context.Context) *exchange {
	ex, _ := ctx.Value(exchangeKey{}).(*exchange)
	return ex
}

// ServeHTTP meters and forwards one request.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.busy.Add(1)
	defer s.busy.Add(-1)
	st := s.state.Load()

	if servesModels(st, r) {
		s.models(w, r, st)
		return
	}
	if !canonicalPath(r.URL.Path) {
		s.m.requests.WithLabelValues(routeNone, "404").Inc()
		s.reject(w, r, nil, refuse(http.StatusNotFound, CodeRouteNotFound,
			"no route for %s %s: tollgate forwards only paths without \".\" or \"..\" segments, empty segments or backslashes", r.Method, r.URL.Path))
		return
	}
	rt := st.match(r.URL.Path)
	if rt == nil {
		s.m.requests.WithLabelValues(routeNone, "404").Inc()
		s.reject(w, r, nil, refuse(http.StatusNotFound, CodeRouteNotFound,
			"no route for %s %s: tollgate forwards only the paths configured in its routes", r.Method, r.URL.Path))
		return
	}
	if exact := slashAlias(st, rt, r.URL.Path); exact != nil {
		s.m.requests.WithLabelValues(routeNone, "404").Inc()
		// Answered as the route the path names would answer: its client
		// is most likely that provider's SDK.
		s.reject(w, r, exact, refuse(http.StatusNotFound, CodeRouteNotFound,
			"no route for %s %s: it would be priced by the route %s while it names the route %s; send it without the trailing slash",
			r.Method, r.URL.Path, rt.path, exact.path))
		return
	}
	ex, err := s.prepare(w, r, st, rt)
	if err != nil {
		status, _, _ := classify(err)
		rt.m.request(status)
		s.reject(w, r, rt, err)
		return
	}
	defer s.finish(ex)

	r2 := r.WithContext(ex)
	if len(ex.body) == 0 {
		r2.Body = http.NoBody
	} else {
		ex.reqBody = bodyReader{b: ex.body, sent: &ex.sent}
		r2.Body = &ex.reqBody
		// Lets the Transport resend the body on a fresh connection when
		// a pooled one turns out to be closed (net/http rewindBody).
		r2.GetBody = ex.getBody
	}
	r2.ContentLength = int64(len(ex.body))
	ex.sentAt = s.now()
	rt.proxy.ServeHTTP(w, r2)
}

// prepare runs every check and the reservation. On success the request
// holds ex.reserved credits under ex.id and must be finished.
func (s *Server) prepare(w http.ResponseWriter, r *http.Request, st *state, rt *route) (*exchange, error) {
	if up := r.Header.Get("Upgrade"); up != "" && !strings.EqualFold(up, "h2c") {
		// A protocol switch (WebSocket) would become a tunnel tollgate
		// cannot meter. (curl --http2 asks for h2c on every plain-HTTP
		// request; that offer is simply not forwarded, see rewrite.)
		return nil, refuse(http.StatusBadRequest, CodeInvalidRequest,
			"tollgate does not forward protocol upgrades (%s); send plain HTTP requests", up)
	}
	vals := r.Header[st.customerHeader]
	if len(vals) == 0 || vals[0] == "" {
		return nil, refuse(http.StatusUnauthorized, CodeMissingCustomer,
			"missing %s header: name the customer this request is for (tollgate removes the header before forwarding)", st.customerHeader)
	}
	if len(vals) > 1 {
		return nil, refuse(http.StatusBadRequest, CodeInvalidRequest, "the %s header was sent %d times; send it once", st.customerHeader, len(vals))
	}
	customer := vals[0]
	var bad *ledger.InvalidCustomerError
	if errors.As(ledger.ValidateCustomer(customer), &bad) {
		return nil, refuse(http.StatusBadRequest, CodeInvalidRequest, "invalid %s header: %s", st.customerHeader, bad.Detail())
	}

	body, err := readBody(w, r, st.maxBody, st.bodyTimeout)
	if err != nil {
		return nil, err
	}
	req, err := meter.ParseRequest(rt.api, r.Header.Get("Content-Type"), body)
	if err != nil {
		return nil, err
	}
	if err := rt.target(r, &req); err != nil {
		return nil, err
	}
	return s.reservePlanned(r, st, rt, customer, req, body)
}

// hold prices req with output ceiling, rewrites body to it, and reserves
// the worst case: with the plan version check (ledger.Store.ReservePlan)
// when checkPlan is set. On success the request holds ex.reserved credits
// under ex.id and must be finished.
func (s *Server) hold(r *http.Request, st *state, rt *route, customer string, req meter.Request, body []byte, ceiling int64, checkPlan bool, planVersion int64) (*exchange, error) {
	estimate, cost, err := rt.prices.Estimate(req, ceiling, rt.serverTools)
	if err != nil {
		return nil, err
	}
	if cost > ledger.MaxAmount {
		return nil, refuse(http.StatusBadRequest, CodeInvalidRequest,
			"this request's worst-case cost (%s credits) is more than tollgate can reserve; lower max_tokens or n", cost)
	}
	// The same ceiling as the estimate: the provider is asked for no more
	// output than the hold covers.
	body, outputCap, err := req.Rewrite(body, ceiling)
	if err != nil {
		return nil, err
	}

	start := s.now()
	ex := &exchange{
		Context:  r.Context(),
		srv:      s,
		rt:       rt,
		st:       st,
		customer: customer,
		id:       newRequestID(start),
		req:      req,
		estimate: estimate,
		reserved: cost,
		body:     body,
	}
	ex.hdr[hdrRequestID] = ex.id
	ex.hdr[hdrReserved] = cost.String()
	if outputCap > 0 {
		ex.hdr[hdrOutputCap] = strconv.FormatInt(outputCap, 10)
	}

	s.busy.Add(1) // the hold, until settled or released
	// store.timeout bounds the store's answer (see storeCtx).
	ex.rctx.start(r.Context(), st.storeTimeout)
	if checkPlan {
		ex.available, err = s.store.ReservePlan(&ex.rctx, customer, ex.id, cost, st.holdTTL, planVersion)
	} else {
		ex.available, err = s.store.ReserveAvailable(&ex.rctx, customer, ex.id, cost, st.holdTTL)
	}
	ex.rctx.end()
	ex.heldAt = s.now()
	s.m.reserveLatency.Observe(ex.heldAt.Sub(start).Seconds())
	if err != nil {
		if ambiguous(err) {
			// The hold may exist (a reply lost, the client gone while
			// the script ran): release it rather than wait for its TTL.
			s.release(ex, "reserve failed")
		} else {
			ex.closed.Store(true)
			s.busy.Add(-1)
		}
		return nil, err
	}
	ex.watchClient()
	ex.startTimer()
	return ex, nil
}

// clientGoneGrace is how long the upstream request outlives its client.
// A client that leaves right after the last text it wanted would otherwise
// never be charged what follows: OpenAI sends the usage chunk (with the
// reasoning tokens, often most of the cost) after the final content chunk,
// Anthropic its message_delta after the last text. Reading on for a moment
// catches it; DESIGN bounds the whole (cancel, then settle) to 2 s.
const clientGoneGrace = time.Second

// watchClient detaches the upstream request from the client: the upstream
// context is the client's without its cancellation, and is cancelled
// clientGoneGrace after the client goes away, or when the exchange ends.
func (ex *exchange) watchClient() {
	client := ex.Context
	up, cancel := context.WithCancel(context.WithoutCancel(client))
	ex.client, ex.Context, ex.cancelUp = client, up, cancel
	ex.unwatch = context.AfterFunc(client, func() {
		t := time.NewTimer(clientGoneGrace)
		defer t.Stop()
		select {
		case <-t.C:
			cancel()
		case <-up.Done():
		}
	})
}

// done releases the upstream context and the timer once the exchange
// needs them no more.
func (ex *exchange) done() {
	ex.stopTimer()
	ex.unwatch()
	ex.cancelUp()
}

// ambiguous reports whether a failed Reserve may nevertheless have taken
// the hold.
func ambiguous(err error) bool {
	var ice *ledger.InsufficientCreditsError
	switch {
	case errors.As(err, &ice),
		errors.Is(err, ledger.ErrCustomerSuspended),
		errors.Is(err, ledger.ErrDuplicateHold),
		errors.Is(err, ledger.ErrPlanChanged),
		errors.Is(err, ledger.ErrInvalidCustomer),
		errors.Is(err, ledger.ErrInvalidAmount),
		errors.Is(err, ledger.ErrInvalidArgument):
		return false
	}
	return true
}

// newRequestID returns a request id made at now: "tg_", the unix time in
// milliseconds as 12 hex digits, then 80 random bits as 20 hex digits. The
// random part makes it unguessable, so that nobody can settle or look up
// another request's hold by its id; the time in front makes the ids of one
// customer sort in about the order their requests came, so that the
// embedded store's settled-hold index grows at its end instead of dirtying
// a random page of the file per request.
func newRequestID(now time.Time) string {
	var b [3 + 12 + 20]byte
	copy(b[:], "tg_")
	var ms [8]byte
	binary.BigEndian.PutUint64(ms[:], uint64(now.UnixMilli()))
	hex.Encode(b[3:3+12], ms[2:]) // the low 48 bits: until the year 10889
	var r [10]byte
	_, _ = rand.Read(r[:]) // never fails (crypto/rand)
	hex.Encode(b[3+12:], r[:])
	return string(b[:])
}

// upstreamError is ReverseProxy.ErrorHandler: the request never got an
// answer from upstream.
func (s *Server) upstreamError(w http.ResponseWriter, r *http.Request, err error) {
	ex := exchangeOf(r.Context())
	if ex == nil {
		// Not expected: ReverseProxy reports errors with the request
		// ServeHTTP gave it, whose context is the exchange. With no
		// route to go by, the answer is in OpenAI's dialect.
		writeError(w, r, http.StatusBadGateway, CodeUpstreamUnavailable, "the upstream API could not be reached; nothing was charged")
		return
	}
	if ex.cut.Load() && ex.client.Err() == nil {
		// max_request_duration passed with no answer from upstream: the
		// provider had the request, so it is charged as unanswered (or
		// released if it never left), and the client is told.
		ex.status = http.StatusGatewayTimeout
		w.Header().Set(HeaderRequestID, ex.id)
		charged := "charged for its prompt"
		if ex.delivered() {
			s.settle(ex, ex.unanswered(), "max_request_duration")
		} else {
			charged = "not charged: it never reached the upstream"
			s.release(ex, "max_request_duration before the request was sent")
		}
		s.reject(w, r, ex.rt, refuse(http.StatusGatewayTimeout, CodeRequestTimeout,
			"the upstream API did not answer within max_request_duration (%s); the request was cancelled and %s", ex.timer.limit, charged))
		return
	}
	if ex.Context.Err() != nil && !ex.delivered() {
		// The client went away while tollgate was still connecting (or
		// sending): the provider never had the request, nothing to pay.
		ex.status = statusClientClosed
		s.release(ex, "client gone before the request was sent")
		return
	}
	if ex.Context.Err() != nil {
		// The client went away (or the server is closing) and the
		// upstream request was cancelled clientGoneGrace later, still
		// without an answer. The provider had it
		// and may bill what it processed, so the charge is the meter's
		// estimate for an answer that never arrived: never free.
		ex.status = statusClientClosed
		s.settle(ex, ex.unanswered(), "client gone before the response")
		return
	}
	if ex.closed.Load() {
		// ModifyResponse already handled the answer; ReverseProxy
		// refused it afterwards (a protocol switch nobody asked for).
		s.log.Warn("upstream answer refused", zap.String("route", ex.rt.path), zap.String("request", ex.id), zap.Error(err))
		ex.status = http.StatusBadGateway
		s.reject(w, r, ex.rt, refuse(http.StatusBadGateway, CodeUpstreamUnavailable, "the upstream API answered with something tollgate cannot forward"))
		return
	}
	ex.status = http.StatusBadGateway
	w.Header().Set(HeaderRequestID, ex.id)
	s.release(ex, "upstream unreachable")
	s.log.Warn("upstream unreachable", zap.String("route", ex.rt.path), zap.String("upstream", ex.rt.upstream.Host),
		zap.String("request", ex.id), zap.Error(err))
	s.reject(w, r, ex.rt, refuse(http.StatusBadGateway, CodeUpstreamUnavailable,
		"the upstream API could not be reached; nothing was charged. Retry shortly"))
}

// finish runs when the handler returns, normally or by panic (ReverseProxy
// aborts a response whose copy failed with http.ErrAbortHandler). A hold
// nothing else closed is settled with the meter's fallback, so that no
// exit path leaves it to expire unpaid.
func (s *Server) finish(ex *exchange) {
	b := &ex.resBody
	if b.draining {
		// Close handed the body to drain, which settles and ends the
		// upstream request; touching the body here would race with it.
		ex.rt.m.request(statusClientClosed)
		return
	}
	defer ex.done()
	if b.ex != nil && !b.ended {
		b.end(errAborted)
	}
	if !ex.closed.Load() {
		s.settle(ex, ex.unanswered(), "request ended without an upstream answer")
	}
	if ex.status == 0 {
		ex.status = statusClientClosed
	}
	ex.rt.m.request(ex.status)
}

// unanswered is the meter's usage for a request the provider received but
// never answered: the prompt estimate, never free.
func (ex *exchange) unanswered() meter.Usage {
	_, u := meter.NewTap(ex.req, "").End()
	return u
}

// reject answers err and counts it, in the error dialect of rt's provider
// (OpenAI's when rt is nil: no route matched, so nothing says which SDK
// is asking). r may carry an exchange (an upstream error) or not (a
// refusal before forwarding).
func (s *Server) reject(w http.ResponseWriter, r *http.Request, rt *route, err error) {
	status, code, msg := classify(err)
	if status == statusClientClosed {
		return
	}
	s.m.refusals.WithLabelValues(code).Inc()
	if status >= 500 {
		fields := []zap.Field{zap.String("code", code), zap.String("path", r.URL.Path), zap.Error(err)}
		if status == http.StatusInternalServerError {
			s.log.Error("request failed", fields...)
		} else {
			s.log.Warn("request refused", fields...)
		}
	} else if ce := s.log.Check(zap.DebugLevel, "request refused"); ce != nil {
		ce.Write(zap.String("code", code), zap.String("path", r.URL.Path), zap.String("reason", msg))
	}
	if rt != nil {
		r = inDialect(r, rt.dialect)
	}
	writeRefusal(w, r, err, status, code, msg)
}
