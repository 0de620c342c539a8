package proxy

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/tollgate-dev/tollgate/internal/apierror"
	"github.com/tollgate-dev/tollgate/ledger"
	"github.com/tollgate-dev/tollgate/meter"
)

// Error codes. Every error tollgate itself answers carries one of these in
// error.code; DESIGN's error table is the contract for the proxy's, and the
// admin API adds its own. They never change meaning.
const (
	// The proxy listener (DESIGN "The proxy").
	CodeMissingCustomer     = "missing_customer"     // 401
	CodeInsufficientCredits = "insufficient_credits" // 402
	CodeCustomerSuspended   = "customer_suspended"   // 403
	CodeModelNotEntitled    = "model_not_entitled"   // 403: the customer's plan does not include the model
	CodeRouteNotEntitled    = "route_not_entitled"   // 403: the customer's plan does not include the route
	CodeModelNotPriced      = "model_not_priced"     // 400
	CodeInvalidRequest      = "invalid_request"      // 400
	CodeRequestTooLarge     = "request_too_large"    // 413
	CodeRequestTimeout      = "request_timeout"      // 408: the body stopped arriving (request_body_timeout); 504: no answer within max_request_duration
	CodeRouteNotFound       = "route_not_found"      // 404
	CodeBillingUnavailable  = "billing_unavailable"  // 503
	CodeUpstreamUnavailable = "upstream_unavailable" // 502
	CodeInternal            = "internal_error"       // 500

	// The admin listener.
	CodeUnauthorized        = "unauthorized"         // 401: missing or wrong bearer token
	CodeAdminDisabled       = "admin_disabled"       // 403: admin.token is empty
	CodeNotFound            = "not_found"            // 404: no such admin endpoint
	CodeMethodNotAllowed    = "method_not_allowed"   // 405
	CodeIdempotencyConflict = "idempotency_conflict" // 409: key reused with another amount
	CodeNotConfigured       = "not_configured"       // 400: the call needs configuration that is missing
	CodeStripeAPIError      = "stripe_api_error"     // 502: a Stripe API call failed
	CodeReconcileIncomplete = "reconcile_incomplete" // 500: some events could not be applied
	CodeShuttingDown        = "shutting_down"        // 503: /readyz while draining
)

// statusClientClosed is the status recorded in metrics and logs for a
// request whose client went away before it had an answer (nginx's 499).
// Nothing is written: there is nobody to read it.
const statusClientClosed = 499

// Errors a Reconciler returns are matched against these to choose the
// admin API's answer (see Reconciler). cmd/tollgate wraps stripesync's
// errors with them through Classed, so that this package needs no Stripe
// import.
var (
	// ErrNotConfigured: the call needs configuration that is missing, such
	// as stripe.api_key for reconciliation. 400 not_configured.
	ErrNotConfigured = errors.New("proxy: not configured")
	// ErrInvalidArgument: the caller's arguments are wrong, such as a
	// reconciliation window beyond 30 days. 400 invalid_request.
	ErrInvalidArgument = errors.New("proxy: invalid argument")
	// ErrStripeAPI: a Stripe API call failed. 502 stripe_api_error.
	ErrStripeAPI = errors.New("proxy: stripe API call failed")
	// ErrIncomplete: the work finished but part of it failed; running it
	// again retries the rest. 500 reconcile_incomplete.
	ErrIncomplete = errors.New("proxy: incomplete")
)

// ClassedError is an error of another package put in one of the classes
// above (Class, matched with errors.Is) for the admin API's answer; the
// client sees Err's message.
type ClassedError struct {
	Class error // ErrNotConfigured, ErrInvalidArgument, ErrStripeAPI or ErrIncomplete
	Err   error
}

// Classed returns err in class, or nil for a nil err.
func Classed(class, err error) error {
	if err == nil {
		return nil
	}
	return &ClassedError{Class: class, Err: err}
}

func (e *ClassedError) Error() string { return e.Class.Error() + ": " + e.Err.Error() }

// Unwrap returns the class and the error, so that errors.Is matches both.
func (e *ClassedError) Unwrap() []error { return []error{e.Class, e.Err} }

// refusal is an answer the proxy decided on itself, with the message the
// client sees.
type refusal struct {
	status int
	code   string
	msg    string
}

func (e *refusal) Error() string { return e.code + ": " + e.msg }

func refuse(status int, code, format string, args ...any) error {
	return &refusal{status: status, code: code, msg: fmt.Sprintf(format, args...)}
}

// classify maps any error tollgate answers to its status, code and the
// message the client may see. It is the only place that decides how an
// error looks on the wire: the proxy's refusals, the meter's and the
// ledger's sentinels, and the admin API's errors. Messages of unexpected
// errors are never sent (they may name internals); the caller logs err.
func classify(err error) (status int, code, msg string) {
	var (
		rf  *refusal
		ice *ledger.InsufficientCreditsError
		ic  *ledger.InvalidCustomerError
		re  *meter.RequestError
		mnp *meter.ModelNotPricedError
		mbe *http.MaxBytesError
		ce  *ClassedError
	)
	switch {
	case errors.As(err, &rf):
		return rf.status, rf.code, rf.msg
	case errors.As(err, &ice) && ice.HeldBack():
		return http.StatusPaymentRequired, CodeInsufficientCredits, fmt.Sprintf(
			"insufficient credits: %s available, %s required (this request's worst-case cost); the balance covers it, but this customer's requests in flight hold %s: retry when they finish, or lower max_tokens",
			ice.Available, ice.Required, ice.Reserved)
	case errors.As(err, &ice):
		return http.StatusPaymentRequired, CodeInsufficientCredits, fmt.Sprintf(
			"insufficient credits: %s available, %s required (this request's worst-case cost); add credits, or lower max_tokens",
			ice.Available, ice.Required)
	case errors.Is(err, ledger.ErrCustomerSuspended):
		return http.StatusForbidden, CodeCustomerSuspended,
			"this customer is suspended while a payment dispute is open; requests are refused until the dispute is closed"
	case errors.Is(err, ledger.ErrStoreUnavailable):
		return http.StatusServiceUnavailable, CodeBillingUnavailable,
			"billing is unavailable: tollgate cannot reach its credit store, so nothing was forwarded or charged; retry shortly"
	case errors.As(err, &re):
		return http.StatusBadRequest, CodeInvalidRequest, re.Reason
	case errors.As(err, &mnp):
		return http.StatusBadRequest, CodeModelNotPriced, mnp.Detail()
	case errors.Is(err, meter.ErrCostRange):
		return http.StatusBadRequest, CodeInvalidRequest,
			"the request's worst-case cost is out of range; lower max_tokens or n"
	case errors.As(err, &mbe):
		return http.StatusRequestEntityTooLarge, CodeRequestTooLarge,
			"the request body is larger than " + strconv.FormatInt(mbe.Limit, 10) + " bytes (max_request_bytes)"
	case errors.As(err, &ic):
		return http.StatusBadRequest, CodeInvalidRequest, "invalid customer id: " + ic.Detail()
	case errors.Is(err, ledger.ErrInvalidCustomer):
		return http.StatusBadRequest, CodeInvalidRequest, "invalid customer id"
	case errors.Is(err, ledger.ErrIdempotencyConflict):
		return http.StatusConflict, CodeIdempotencyConflict,
			"this idempotency_key was already used with a different amount; use a new key for a new change"
	case errors.Is(err, ledger.ErrInvalidCursor):
		return http.StatusBadRequest, CodeInvalidRequest,
			"invalid cursor: pass the \"next\" value of the previous page of this customer's ledger"
	case errors.Is(err, ledger.ErrInvalidAmount), errors.Is(err, ledger.ErrInvalidArgument):
		// The ledger's validation messages describe the caller's input.
		return http.StatusBadRequest, CodeInvalidRequest, err.Error()
	case errors.As(err, &ce) && errors.Is(ce.Class, ErrNotConfigured):
		return http.StatusBadRequest, CodeNotConfigured, ce.Err.Error()
	case errors.As(err, &ce) && errors.Is(ce.Class, ErrInvalidArgument):
		return http.StatusBadRequest, CodeInvalidRequest, ce.Err.Error()
	case errors.As(err, &ce) && errors.Is(ce.Class, ErrStripeAPI):
		return http.StatusBadGateway, CodeStripeAPIError, ce.Err.Error()
	case errors.As(err, &ce) && errors.Is(ce.Class, ErrIncomplete):
		return http.StatusInternalServerError, CodeReconcileIncomplete, ce.Err.Error()
	case errors.Is(err, context.Canceled):
		return statusClientClosed, "client_closed_request", "the client went away"
	}
	return http.StatusInternalServerError, CodeInternal,
		"tollgate failed to handle this request; nothing was charged. Retry, and report it to the operator if it persists"
}

// kindOf is the class of the codes whose status does not tell it, from
// which each dialect names error.type (apierror.Kind), so that SDKs and
// people reading it recognise the class: credits used up (OpenAI's
// insufficient_quota), a customer or API that may not be used now
// (permission_error), a wrong admin token (authentication_error). Every
// other code is classed by its status: a server error from 500, an invalid
// request below (as OpenAI answers a missing key).
func kindOf(code string) apierror.Kind {
	switch code {
	case CodeInsufficientCredits:
		return apierror.KindQuota
	case CodeCustomerSuspended, CodeAdminDisabled, CodeModelNotEntitled, CodeRouteNotEntitled:
		return apierror.KindPermission
	case CodeUnauthorized:
		return apierror.KindAuthentication
	}
	return apierror.KindByStatus
}

// dialectFor is the error dialect of a route's API: its provider's, so
// that the provider's SDK surfaces tollgate's message (DESIGN "The
// proxy"). flat routes, which may front any API, answer in OpenAI's, the
// shape most clients read.
func dialectFor(api meter.API) apierror.Dialect {
	switch api {
	case meter.AnthropicMessages:
		return apierror.Anthropic
	case meter.GoogleGemini:
		return apierror.Google
	}
	return apierror.OpenAI
}

// inDialect returns r answered in d. Only a refusal calls it, so the
// requests that are forwarded carry no extra context value.
func inDialect(r *http.Request, d apierror.Dialect) *http.Request {
	if d == apierror.OpenAI { // the default: nothing to carry
		return r
	}
	return r.WithContext(apierror.WithDialect(r.Context(), d))
}

// writeError answers with tollgate's error shape through apierror, in the
// dialect r is answered in, so that SDKs surface the message and code.
func writeError(w http.ResponseWriter, r *http.Request, status int, code, msg string) {
	apierror.Write(w, r, &apierror.Error{Status: status, Code: code, Message: msg, Kind: kindOf(code)})
}

// HeldBackRetryAfter is the Retry-After of a 402 that only the customer's
// other requests in flight cause: their holds cover their worst case, and
// most of them settle for less within seconds, when their answers end.
// When each will end is unknown (a hold lives as long as its request), so
// this is a constant: long enough for a typical completion to finish,
// short enough that the SDKs' default two retries (which honour
// Retry-After up to 60 s) stay interactive.
const HeldBackRetryAfter = 2 * time.Second

// writeRefusal is writeError for err, classified: a refusal for credits
// also carries the available and required amounts in the error object
// (DESIGN "The proxy"), and says x-should-retry: true with Retry-After
// when the balance covers the request and only other holds are in the way
// (ledger.InsufficientCreditsError.HeldBack); false otherwise.
func writeRefusal(w http.ResponseWriter, r *http.Request, err error, status int, code, msg string) {
	e := &apierror.Error{Status: status, Code: code, Message: msg, Kind: kindOf(code)}
	var ice *ledger.InsufficientCreditsError
	if status == http.StatusPaymentRequired && errors.As(err, &ice) {
		e.Details = []apierror.Detail{{Name: "available", Value: ice.Available.String()}, {Name: "required", Value: ice.Required.String()}}
		if ice.HeldBack() {
			e.RetryAfter = HeldBackRetryAfter
		}
	}
	apierror.Write(w, r, e)
}
