// Package apierror writes the errors tollgate itself answers over HTTP —
// the proxy's refusals, the admin API's errors, the Stripe webhook's
// answers — so that every one has the same shape and the same type rules.
//
// The shape is a dialect: today OpenAI's, {"error":{"message","type","code"}},
// which OpenAI's SDKs (and the people reading the body) understand. A
// request carries the dialect it is answered in (WithDialect), so that a
// route of another provider can answer in that provider's shape — its SDK
// then surfaces tollgate's message — by setting it once where the route is
// chosen, without changing the code that reports errors.
//
// It does not decide which status, code or message an error gets: the
// proxy's classify and stripesync's event errors do, and hand an *Error to
// Write. It never logs; the caller logs the cause.
package apierror

import (
	"context"
	"encoding/json"
	"net/http"
)

// Error is an answer: the HTTP status, tollgate's code, the message the
// client reads, and the cause behind it.
type Error struct {
	// Status is the HTTP status code.
	Status int
	// Code is tollgate's error code (DESIGN's table, the admin API's and
	// the webhook's codes); error.code in every dialect.
	Code string
	// Message is what the client reads: what happened and what to do. It
	// names no secrets and no internals.
	Message string
	// Kind is the class of the failure when Status alone does not tell
	// it; the zero value, KindByStatus, derives it from Status.
	Kind Kind
	// Err is the cause, for logs; it is never written. errors.Is and
	// errors.As see through to it.
	Err error
}

// Error returns the message, followed by the cause when there is one.
func (e *Error) Error() string {
	if e.Err != nil {
		return e.Message + ": " + e.Err.Error()
	}
	return e.Message
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// Kind is the class of a failure, which each dialect names in its own words
// (OpenAI's error.type, for example).
type Kind uint8

// The kinds. Most errors leave Kind zero and are classed by their status.
const (
	// KindByStatus, the zero value, classes an error by its status: a
	// server error from 500, an invalid request below.
	KindByStatus Kind = iota
	// KindAuthentication: the caller's credentials are missing or wrong.
	KindAuthentication
	// KindPermission: the caller is known but may not do this.
	KindPermission
	// KindQuota: the customer has no credits left for this request.
	KindQuota
)

// Dialect is the JSON shape of an error answer. The zero value is OpenAI.
type Dialect uint8

// The dialects.
const (
	// OpenAI answers {"error":{"message":…,"type":…,"code":…}}, the shape
	// of the OpenAI API's errors
	// (https://platform.openai.com/docs/guides/error-codes/api-errors),
	// with error.type invalid_request_error, authentication_error,
	// permission_error, insufficient_quota or server_error. It is the
	// default, and the shape of tollgate's own APIs (admin, webhooks).
	OpenAI Dialect = iota
)

type dialectKey struct{}

// WithDialect returns a copy of ctx in which Write answers in d. Whoever
// chooses the route sets it once, on the request's context; code that
// reports errors never names a dialect.
func WithDialect(ctx context.Context, d Dialect) context.Context {
	return context.WithValue(ctx, dialectKey{}, d)
}

// dialectOf is the dialect r is answered in: the one WithDialect put on
// its context, else OpenAI.
func dialectOf(r *http.Request) Dialect {
	if r == nil {
		return OpenAI
	}
	d, _ := r.Context().Value(dialectKey{}).(Dialect)
	return d
}

// Write answers e in the dialect of r (see WithDialect; a nil r is
// answered in OpenAI's). Besides the JSON body, with Content-Type
// application/json and X-Content-Type-Options: nosniff, a 402 carries
// x-should-retry: false, which OpenAI's and Anthropic's SDKs obey, so they
// do not retry a request that will be refused again, and a 503 carries
// Retry-After: 1. e must not be nil; e.Err is not written.
func Write(w http.ResponseWriter, r *http.Request, e *Error) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	switch e.Status {
	case http.StatusPaymentRequired:
		h.Set("X-Should-Retry", "false")
	case http.StatusServiceUnavailable:
		h.Set("Retry-After", "1")
	}
	w.WriteHeader(e.Status)
	_, _ = w.Write(dialectOf(r).appendBody(make([]byte, 0, 96+len(e.Message)), e))
}

// appendBody appends e's body in d, ending with a newline.
func (d Dialect) appendBody(b []byte, e *Error) []byte {
	b = append(b, `{"error":{"message":`...)
	b = appendJSONString(b, e.Message)
	b = append(b, `,"type":`...)
	b = appendJSONString(b, d.errorType(e))
	b = append(b, `,"code":`...)
	b = appendJSONString(b, e.Code)
	return append(b, "}}\n"...)
}

// errorType is error.type in d, chosen so that OpenAI SDKs and people
// reading it recognise the class: OpenAI answers bad requests and missing
// keys with invalid_request_error, an exhausted quota with
// insufficient_quota, and its own failures with server_error.
func (d Dialect) errorType(e *Error) string {
	switch e.Kind {
	case KindQuota:
		return "insufficient_quota"
	case KindPermission:
		return "permission_error"
	case KindAuthentication:
		return "authentication_error"
	}
	if e.Status >= 500 {
		return "server_error"
	}
	return "invalid_request_error"
}

func appendJSONString(b []byte, s string) []byte {
	q, err := json.Marshal(s)
	if err != nil { // a Go string always marshals
		return append(b, `""`...)
	}
	return append(b, q...)
}
