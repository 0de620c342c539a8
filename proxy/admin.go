package proxy

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/tollgate-dev/tollgate/ledger"
	"github.com/tollgate-dev/tollgate/money"
)

// Reconciler replays missed Stripe events; *stripesync.Syncer has this
// method. The admin API maps its errors: ledger.ErrStoreUnavailable → 503
// billing_unavailable; a *ClassedError of class ErrNotConfigured → 400
// not_configured, ErrInvalidArgument → 400 invalid_request, ErrStripeAPI →
// 502 stripe_api_error, ErrIncomplete → 500 reconcile_incomplete, each with
// the classed error's message; anything else → 500 internal_error.
// cmd/tollgate classes stripesync's errors with Classed.
type Reconciler interface {
	Reconcile(ctx context.Context, since time.Duration) (events, applied int, err error)
}

// AdminOptions are the parts of the admin API that live outside this
// package.
type AdminOptions struct {
	// Reconciler serves POST /v1/reconcile. Nil answers 400 not_configured.
	Reconciler Reconciler
	// Webhook serves POST /webhooks/stripe (stripesync's handler, which
	// authenticates Stripe by signature). Nil answers 404.
	Webhook http.Handler
	// Metrics serves GET /metrics, e.g. promhttp.HandlerFor on the
	// registry passed to New. Nil answers 404.
	Metrics http.Handler
	// AcceptDataLoss serves POST /v1/store/accept-data-loss, the
	// operator's answer to a store that lost its data
	// (ledger.RedisStore.AcceptDataLoss). Nil answers 400 not_configured.
	AcceptDataLoss func(ctx context.Context) error
	// Events serves GET /v1/events (adminevents.go): the store, when
	// outbound events are on. Nil answers 400 not_configured.
	Events ledger.Outbox
	// Journal serves GET /v1/stripe/events (adminjournal.go); nil means
	// the store's own journal, when it keeps one.
	Journal ledger.Journal
}

// Admin API limits.
const (
	maxAdminBody  = 64 << 10 // a credit or reconcile request is a few hundred bytes; not configurable
	maxCreditText = ledger.MaxTextLength
)

// AdminHandler returns the admin listener's handler (DESIGN "Admin
// listener"):
//
//	GET  /v1/customers/{id}                      balance, reserved, available, debt, next_expiry, suspended
//	GET  /v1/customers/{id}/ledger?limit=&before= entries, newest first, and the next cursor
//	GET  /v1/customers/{id}/lots                 active lots in burn order
//	GET  /v1/customers/{id}/access               plan, its source, subscription, money, models, routes (adminplan.go)
//	PUT  /v1/customers/{id}/plan                 {"plan","until","reason"}: override the plan; DELETE removes it
//	POST /v1/customers/{id}/credits              {"amount","reason","idempotency_key"}, and for a
//	                                             credit that adds: "expires_at" or "expires_in", "priority"
//	GET  /v1/stripe/events?customer=&type=&limit=&before= Stripe events received, newest first, with their outcome
//	POST /v1/reconcile                           {"since":"72h"}
//	POST /v1/store/accept-data-loss              serve what the store holds now
//	GET  /v1/events?after=&limit=                outbound events, oldest first
//	POST /webhooks/stripe                        opts.Webhook
//	GET  /healthz, /readyz, /metrics
//
// /v1/* needs "Authorization: Bearer <admin.token>", compared in constant
// time; with admin.token empty every /v1/* call is refused with 403
// admin_disabled. The token follows Reload. Errors are OpenAI-shaped, like
// the proxy's.
func (s *Server) AdminHandler(opts AdminOptions) http.Handler {
	a := &admin{s: s, opts: opts}
	mux := http.NewServeMux()
	mux.HandleFunc("/v1/customers/{id}", a.account)
	mux.HandleFunc("/v1/customers/{id}/ledger", a.ledger)
	mux.HandleFunc("/v1/customers/{id}/credits", a.credit)
	mux.HandleFunc("/v1/customers/{id}/lots", a.lots)
	mux.HandleFunc("/v1/stripe/events", a.stripeEvents)
	mux.HandleFunc("/v1/customers/{id}/access", a.access)
	mux.HandleFunc("/v1/customers/{id}/plan", a.plan)
	mux.HandleFunc("/v1/reconcile", a.reconcile)
	mux.HandleFunc("/v1/store/accept-data-loss", a.acceptDataLoss)
	mux.HandleFunc("/v1/events", a.events)
	mux.HandleFunc("/healthz", a.healthz)
	mux.HandleFunc("/readyz", a.readyz)
	mux.HandleFunc("/webhooks/stripe", a.optional(opts.Webhook))
	mux.HandleFunc("/metrics", a.optional(opts.Metrics))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, r, http.StatusNotFound, CodeNotFound, "no admin endpoint "+r.URL.Path)
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/v1/") {
			if err := a.authorize(r); err != nil {
				if errors.Is(err, errUnauthorized) {
					w.Header().Set("WWW-Authenticate", `Bearer realm="tollgate admin"`)
				}
				a.fail(w, r, err)
				return
			}
		}
		mux.ServeHTTP(w, r)
	})
}

type admin struct {
	s    *Server
	opts AdminOptions
}

var errUnauthorized = refuse(http.StatusUnauthorized, CodeUnauthorized,
	"missing or wrong admin token: send Authorization: Bearer <admin.token>")

func (a *admin) authorize(r *http.Request) error {
	st := a.s.state.Load()
	if !st.adminEnabled {
		return refuse(http.StatusForbidden, CodeAdminDisabled,
			"the admin API is disabled because admin.token is empty; set admin.token (for example to ${TOLLGATE_ADMIN_TOKEN}, from `openssl rand -hex 32`) and restart or reload tollgate")
	}
	auth := r.Header.Get("Authorization")
	// RFC 6750 §2.1; the scheme name is case-insensitive (RFC 9110 §11.1).
	if len(auth) < 7 || !strings.EqualFold(auth[:7], "bearer ") {
		return errUnauthorized
	}
	sum := sha256.Sum256([]byte(strings.TrimSpace(auth[7:])))
	if subtle.ConstantTimeCompare(sum[:], st.adminToken[:]) != 1 {
		return errUnauthorized
	}
	return nil
}

func (a *admin) optional(h http.Handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if h == nil {
			writeError(w, r, http.StatusNotFound, CodeNotFound, r.URL.Path+" is not enabled on this server")
			return
		}
		h.ServeHTTP(w, r)
	}
}

// fail answers err through classify. Errors tollgate did not expect are
// logged with their detail, which the caller never sees.
func (a *admin) fail(w http.ResponseWriter, r *http.Request, err error) {
	status, code, msg := classify(err)
	if status == statusClientClosed {
		return
	}
	switch {
	case status == http.StatusInternalServerError && code == CodeInternal:
		a.s.log.Error("admin request failed", zap.String("method", r.Method), zap.String("path", r.URL.Path), zap.Error(err))
	case status >= 500:
		a.s.log.Warn("admin request failed", zap.String("method", r.Method), zap.String("path", r.URL.Path), zap.String("code", code), zap.Error(err))
	}
	writeError(w, r, status, code, msg)
}

func methodNotAllowed(w http.ResponseWriter, r *http.Request, allow string) {
	w.Header().Set("Allow", allow)
	writeError(w, r, http.StatusMethodNotAllowed, CodeMethodNotAllowed, r.Method+" is not allowed here; use "+allow)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	_ = enc.Encode(v)
}

// customer checks that r uses method (GET also allows HEAD) and names a
// valid customer in its {id} path segment, and returns the id. When either
// check fails it has answered r, and ok is false.
func (a *admin) customer(w http.ResponseWriter, r *http.Request, method string) (id string, ok bool) {
	if r.Method != method && !(method == http.MethodGet && r.Method == http.MethodHead) {
		methodNotAllowed(w, r, method)
		return "", false
	}
	id = r.PathValue("id")
	if err := ledger.ValidateCustomer(id); err != nil {
		a.fail(w, r, err)
		return "", false
	}
	return id, true
}

func (a *admin) account(w http.ResponseWriter, r *http.Request) {
	id, ok := a.customer(w, r, http.MethodGet)
	if !ok {
		return
	}
	acct, err := a.s.store.Account(r.Context(), id)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, acct)
}

// ledgerPage is the answer of GET /v1/customers/{id}/ledger. Next is
// null on the last page.
type ledgerPage struct {
	Entries []ledger.Entry `json:"entries"`
	Next    *string        `json:"next"`
}

// pageLimit reads the limit parameter of a paged list: 0 (the store's
// default) when absent, else 1 to ledger.MaxPageSize.
func pageLimit(q url.Values) (int, error) {
	v := q.Get("limit")
	if v == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > ledger.MaxPageSize {
		return 0, refuse(http.StatusBadRequest, CodeInvalidRequest,
			"limit %q: want a whole number from 1 to %d (default %d)", v, ledger.MaxPageSize, ledger.DefaultPageSize)
	}
	return n, nil
}

func (a *admin) ledger(w http.ResponseWriter, r *http.Request) {
	id, ok := a.customer(w, r, http.MethodGet)
	if !ok {
		return
	}
	q := r.URL.Query()
	limit, err := pageLimit(q)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	page, err := a.s.store.Entries(r.Context(), id, q.Get("before"), limit)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	out := ledgerPage{Entries: page.Entries}
	if out.Entries == nil {
		out.Entries = []ledger.Entry{}
	}
	if page.Next != "" {
		out.Next = &page.Next
	}
	writeJSON(w, http.StatusOK, out)
}

// lotList is the answer of GET /v1/customers/{id}/lots.
type lotList struct {
	Lots []ledger.Lot `json:"lots"`
}

// lots lists the customer's active lots in burn order: the next to be
// spent first (at most ledger.MaxLots).
func (a *admin) lots(w http.ResponseWriter, r *http.Request) {
	id, ok := a.customer(w, r, http.MethodGet)
	if !ok {
		return
	}
	lots, err := a.s.store.Lots(r.Context(), id)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if lots == nil {
		lots = []ledger.Lot{}
	}
	writeJSON(w, http.StatusOK, lotList{Lots: lots})
}

// creditRequest is the body of POST /v1/customers/{id}/credits.
type creditRequest struct {
	Amount         *money.Micros `json:"amount"`
	Reason         string        `json:"reason"`
	IdempotencyKey string        `json:"idempotency_key"`
	// ExpiresAt (RFC 3339) or ExpiresIn (a duration from now, such as
	// "720h") is when the lot of a positive credit expires; neither means
	// never.
	ExpiresAt *string `json:"expires_at"`
	ExpiresIn *string `json:"expires_in"`
	// Priority places the lot in burn order, 0 (spent first) to 100;
	// none means 50.
	Priority *int `json:"priority"`
}

// creditResult is its answer: the entry the key produced, whether this
// call applied it (false on a replay, which changes nothing), and the lot
// a credit that adds created (for GET .../lots).
type creditResult struct {
	Applied bool         `json:"applied"`
	Entry   ledger.Entry `json:"entry"`
	Lot     string       `json:"lot,omitempty"`
}

// creditLot checks the lot fields of body and returns the expiry they
// name (zero for none). The expiry must be in the future: a grant that
// expired before it was made could never be spent, so it is a mistake
// here (Stripe's late invoices record such grants through the ledger
// directly). A replay may name another expiry, as expires_in does on
// every retry; the first application's stands.
func (a *admin) creditLot(body creditRequest) (time.Time, error) {
	bad := func(format string, args ...any) (time.Time, error) {
		return time.Time{}, refuse(http.StatusBadRequest, CodeInvalidRequest, format, args...)
	}
	if *body.Amount < 0 && (body.ExpiresAt != nil || body.ExpiresIn != nil || body.Priority != nil) {
		return bad(`"expires_at", "expires_in" and "priority" apply to credits that add; a negative amount takes from the customer's lots in burn order`)
	}
	if body.Priority != nil && (*body.Priority < 0 || *body.Priority > ledger.MaxPriority) {
		return bad(`"priority" %d: want 0 (spent first) to %d; without it the lot gets %d`, *body.Priority, ledger.MaxPriority, ledger.DefaultPriority)
	}
	now := a.s.now()
	switch {
	case body.ExpiresAt != nil && body.ExpiresIn != nil:
		return bad(`give "expires_at" or "expires_in", not both`)
	case body.ExpiresAt != nil:
		at, err := time.Parse(time.RFC3339, *body.ExpiresAt)
		if err != nil {
			return bad(`"expires_at" %q is not an RFC 3339 time such as "2030-01-31T00:00:00Z"`, *body.ExpiresAt)
		}
		if !at.After(now) {
			return bad(`"expires_at" %s is not in the future: credits that expire before they are granted could never be spent`, *body.ExpiresAt)
		}
		return at, nil
	case body.ExpiresIn != nil:
		d, err := time.ParseDuration(*body.ExpiresIn)
		if err != nil || d <= 0 {
			return bad(`"expires_in" %q: want a positive duration such as "720h" (units h, m, s)`, *body.ExpiresIn)
		}
		return now.Add(d), nil
	}
	return time.Time{}, nil
}

// credit adds (positive amount, entry kind "grant") or removes (negative,
// kind "adjust") credits, once per idempotency key.
func (a *admin) credit(w http.ResponseWriter, r *http.Request) {
	id, ok := a.customer(w, r, http.MethodPost)
	if !ok {
		return
	}
	var body creditRequest
	if err := decodeBody(w, r, &body, `{"amount":"10.5","reason":"…","idempotency_key":"…"}`); err != nil {
		a.fail(w, r, err)
		return
	}
	var err error
	switch {
	case body.Amount == nil:
		err = refuse(http.StatusBadRequest, CodeInvalidRequest, `"amount" is required: a decimal string such as "10.5" (negative removes credits)`)
	case *body.Amount == 0:
		err = refuse(http.StatusBadRequest, CodeInvalidRequest, `"amount" is zero; give a positive amount to add credits or a negative one to remove them`)
	case body.IdempotencyKey == "":
		err = refuse(http.StatusBadRequest, CodeInvalidRequest, `"idempotency_key" is required, unique per intended change, so that a retry never applies it twice`)
	case len(body.Reason) > maxCreditText:
		err = refuse(http.StatusBadRequest, CodeInvalidRequest, `"reason" is longer than %d bytes`, maxCreditText)
	}
	var expires time.Time
	if err == nil {
		expires, err = a.creditLot(body)
	}
	if err != nil {
		a.fail(w, r, err)
		return
	}
	kind := ledger.KindGrant
	if *body.Amount < 0 {
		kind = ledger.KindAdjust
	}
	res, err := a.s.store.Credit(r.Context(), ledger.Credit{
		Customer:  id,
		Amount:    *body.Amount,
		Kind:      kind,
		Key:       body.IdempotencyKey,
		Reference: body.IdempotencyKey,
		Reason:    body.Reason,
		ExpiresAt: expires,
		Priority:  body.Priority,
	})
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if res.Applied {
		a.s.log.Info("admin credit applied", zap.String("customer", id), zap.String("amount", body.Amount.String()),
			zap.String("kind", string(kind)), zap.String("key", body.IdempotencyKey))
	}
	writeJSON(w, http.StatusOK, creditResult{Applied: res.Applied, Entry: res.Entry, Lot: res.Lot})
}

// reconcileRequest is the body of POST /v1/reconcile.
type reconcileRequest struct {
	Since string `json:"since"`
}

func (a *admin) reconcile(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		methodNotAllowed(w, r, "POST")
		return
	}
	var body reconcileRequest
	if err := decodeBody(w, r, &body, `{"since":"72h"}`); err != nil {
		a.fail(w, r, err)
		return
	}
	since, err := time.ParseDuration(body.Since)
	if err != nil || since <= 0 {
		a.fail(w, r, refuse(http.StatusBadRequest, CodeInvalidRequest,
			`"since" %q: want a positive duration such as "72h" (at most 720h, the 30 days Stripe keeps events)`, body.Since))
		return
	}
	if a.opts.Reconciler == nil {
		a.fail(w, r, refuse(http.StatusBadRequest, CodeNotConfigured, "Stripe reconciliation is not configured on this server"))
		return
	}
	events, applied, err := a.opts.Reconciler.Reconcile(r.Context(), since)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]int{"events": events, "applied": applied})
}

// decodeBody reads one JSON object, refusing unknown fields so that a
// misspelt "idempotency_key" is an error rather than a credit without one.
func decodeBody(w http.ResponseWriter, r *http.Request, v any, example string) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxAdminBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			// Not classify's message: that one names max_request_bytes,
			// the proxy's setting, which does not govern this limit.
			return refuse(http.StatusRequestEntityTooLarge, CodeRequestTooLarge,
				"the request body is larger than %d bytes (%d KiB), the admin API's fixed limit; send a JSON object like %s",
				mbe.Limit, mbe.Limit>>10, example)
		}
		return refuse(http.StatusBadRequest, CodeInvalidRequest, "the body must be a JSON object like %s: %v", example, err)
	}
	return nil
}

func (a *admin) healthz(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}
