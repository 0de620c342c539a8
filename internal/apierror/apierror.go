// Package apierror writes the errors tollgate itself answers over HTTP —
// the proxy's refusals, the admin API's errors, the Stripe webhook's
// answers — so that every one has the same shape and the same type rules.
//
// The shape is a dialect: the error format of the provider whose SDK reads
// the answer, so that the SDK surfaces tollgate's message instead of raw
// JSON or a bare status text. OpenAI's, {"error":{"message","type","code"}},
// is the default and the shape of tollgate's own APIs; Anthropic's,
// {"type":"error","error":{"type","message","code"}}, answers on Anthropic
// routes; Google's, {"error":{"code","message","status","details"}}, on
// Gemini routes. Every dialect keeps the status and carries tollgate's
// code in error.code, except Google's, whose error.code is the numeric
// status its SDKs expect: there the code is details[0].reason. A request carries the dialect it is answered in (WithDialect),
// set once where the route is chosen, so that the code that reports errors
// never names one.
//
// It does not decide which status, code or message an error gets: the
// proxy's classify and stripesync's event errors do, and hand an *Error to
// Write. It never logs; the caller logs the cause.
package apierror

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"time"
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
	// Details are further members of the error object, written after
	// code in every dialect as JSON strings, in order: the 402's
	// available and required. Their names must differ from message,
	// type and code.
	Details []Detail
	// RetryAfter, when positive, says that the same request may succeed
	// once that much time has passed: the answer carries
	// x-should-retry: true and Retry-After in whole seconds (rounded
	// up). Zero keeps the defaults of Write.
	RetryAfter time.Duration
}

// Detail is one further member of an error object.
type Detail struct {
	Name, Value string
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
//
// A provider's dialect is its API's error object with tollgate's code in
// it, so that the provider's SDKs parse the answer as one of their own
// errors: status, error.type (one of the provider's own, from Status and
// Kind) and error.message, which they show. Adding one is a constant
// here, a case in appendBody with its type names, and the proxy choosing
// it for the route's API; nothing that reports errors changes.
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
	// Anthropic answers {"type":"error","error":{"type":…,"message":…,
	// "code":…}}, the shape of the Claude API's errors
	// (https://platform.claude.com/docs/en/api/errors), with error.type the one
	// Anthropic documents for the status: invalid_request_error (400 and
	// any other 4xx), authentication_error (401), billing_error (402),
	// permission_error (403), not_found_error (404), request_too_large
	// (413), rate_limit_error (429), api_error (500 and any other 5xx),
	// timeout_error (504) and overloaded_error (529). Anthropic's SDKs
	// raise their typed error for the status with error.message as its
	// message; error.code is tollgate's, beside Anthropic's fields.
	Anthropic
	// Google answers {"error":{"code":…,"message":…,"status":…,
	// "details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo",
	// "reason":…,"domain":"tollgate.dev"}]}}, the shape of Google APIs'
	// errors (https://cloud.google.com/apis/design/errors), on
	// google.gemini routes. There error.code is the HTTP status as a
	// number, as google.golang.org/genai and @google/genai decode it, so
	// tollgate's code is details[0].reason instead: the one dialect where
	// it is not error.code. error.status is the google.rpc.Code closest to
	// the status (see googleStatus).
	Google
)

// GoogleErrorDomain is the domain of the ErrorInfo detail in Google's
// dialect: the service that defines the reason codes.
const GoogleErrorDomain = "tollgate.dev"

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
// Retry-After: 1. An e with a RetryAfter carries x-should-retry: true and
// that Retry-After instead, which those SDKs wait for (up to 60 s) before
// their next try. e must not be nil; e.Err is not written.
func Write(w http.ResponseWriter, r *http.Request, e *Error) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	switch {
	case e.RetryAfter > 0:
		h.Set("X-Should-Retry", "true")
		h.Set("Retry-After", strconv.FormatInt(int64((e.RetryAfter+time.Second-1)/time.Second), 10))
	case e.Status == http.StatusPaymentRequired:
		h.Set("X-Should-Retry", "false")
	case e.Status == http.StatusServiceUnavailable:
		h.Set("Retry-After", "1")
	}
	w.WriteHeader(e.Status)
	_, _ = w.Write(dialectOf(r).appendBody(make([]byte, 0, 96+len(e.Message)), e))
}

// appendBody appends e's body in d, ending with a newline.
func (d Dialect) appendBody(b []byte, e *Error) []byte {
	switch d {
	case Google:
		b = append(b, `{"error":{"code":`...)
		b = strconv.AppendInt(b, int64(e.Status), 10)
		b = append(b, `,"message":`...)
		b = appendJSONString(b, e.Message)
		b = append(b, `,"status":`...)
		b = appendJSONString(b, googleStatus(e))
		b = append(b, `,"details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":`...)
		b = appendJSONString(b, e.Code)
		b = append(b, `,"domain":"`+GoogleErrorDomain+`"`...)
		// ErrorInfo's metadata (a map of strings) is where Google puts
		// an error's further facts, so the Details go there.
		for i, d := range e.Details {
			if i == 0 {
				b = append(b, `,"metadata":{`...)
			} else {
				b = append(b, ',')
			}
			b = appendJSONString(b, d.Name)
			b = append(b, ':')
			b = appendJSONString(b, d.Value)
		}
		if len(e.Details) > 0 {
			b = append(b, '}')
		}
		return append(b, "}]}}\n"...)
	case Anthropic:
		b = append(b, `{"type":"error","error":{"type":`...)
		b = appendJSONString(b, anthropicType(e))
		b = append(b, `,"message":`...)
		b = appendJSONString(b, e.Message)
	default:
		b = append(b, `{"error":{"message":`...)
		b = appendJSONString(b, e.Message)
		b = append(b, `,"type":`...)
		b = appendJSONString(b, openAIType(e))
	}
	b = append(b, `,"code":`...)
	b = appendJSONString(b, e.Code)
	for _, d := range e.Details {
		b = append(b, ',')
		b = appendJSONString(b, d.Name)
		b = append(b, ':')
		b = appendJSONString(b, d.Value)
	}
	return append(b, "}}\n"...)
}

// openAIType is error.type in OpenAI's dialect, chosen so that OpenAI SDKs
// and people reading it recognise the class: OpenAI answers bad requests
// and missing keys with invalid_request_error, an exhausted quota with
// insufficient_quota, and its own failures with server_error.
func openAIType(e *Error) string {
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

// anthropicType is error.type in Anthropic's dialect: the type the Claude
// API documents for the status (see Anthropic), which is also what its
// SDKs expect beside that status. A Kind names the same class as its
// status does (402 is billing_error either way).
func anthropicType(e *Error) string {
	switch e.Kind {
	case KindQuota:
		return "billing_error"
	case KindPermission:
		return "permission_error"
	case KindAuthentication:
		return "authentication_error"
	}
	switch e.Status {
	case http.StatusUnauthorized:
		return "authentication_error"
	case http.StatusPaymentRequired:
		return "billing_error"
	case http.StatusForbidden:
		return "permission_error"
	case http.StatusNotFound:
		return "not_found_error"
	case http.StatusRequestEntityTooLarge:
		return "request_too_large"
	case http.StatusTooManyRequests:
		return "rate_limit_error"
	case http.StatusGatewayTimeout:
		return "timeout_error"
	case statusOverloaded:
		return "overloaded_error"
	}
	if e.Status >= 500 {
		return "api_error"
	}
	return "invalid_request_error"
}

// googleStatus is error.status in Google's dialect: the google.rpc.Code
// whose HTTP mapping (google/rpc/code.proto) is the status, or the
// closest one where the status has none:
//
//	400, 413 INVALID_ARGUMENT (Google answers an oversized payload 400)
//	401      UNAUTHENTICATED
//	402      RESOURCE_EXHAUSTED (credits used up: an exhausted quota; the
//	         status stays 402, which Google's SDKs do not retry)
//	403      PERMISSION_DENIED
//	404      NOT_FOUND
//	408, 504 DEADLINE_EXCEEDED
//	409      ABORTED
//	429      RESOURCE_EXHAUSTED
//	499      CANCELLED
//	501      UNIMPLEMENTED
//	502, 503 UNAVAILABLE
//	other 4xx FAILED_PRECONDITION, other 5xx INTERNAL
//
// A Kind names the same class as its status does.
func googleStatus(e *Error) string {
	switch e.Kind {
	case KindQuota:
		return "RESOURCE_EXHAUSTED"
	case KindPermission:
		return "PERMISSION_DENIED"
	case KindAuthentication:
		return "UNAUTHENTICATED"
	}
	switch e.Status {
	case http.StatusBadRequest, http.StatusRequestEntityTooLarge:
		return "INVALID_ARGUMENT"
	case http.StatusUnauthorized:
		return "UNAUTHENTICATED"
	case http.StatusPaymentRequired, http.StatusTooManyRequests:
		return "RESOURCE_EXHAUSTED"
	case http.StatusForbidden:
		return "PERMISSION_DENIED"
	case http.StatusNotFound:
		return "NOT_FOUND"
	case http.StatusRequestTimeout, http.StatusGatewayTimeout:
		return "DEADLINE_EXCEEDED"
	case http.StatusConflict:
		return "ABORTED"
	case 499:
		return "CANCELLED"
	case http.StatusNotImplemented:
		return "UNIMPLEMENTED"
	case http.StatusBadGateway, http.StatusServiceUnavailable:
		return "UNAVAILABLE"
	}
	if e.Status >= 500 {
		return "INTERNAL"
	}
	return "FAILED_PRECONDITION"
}

// statusOverloaded is the Claude API's own status for "overloaded", which
// net/http does not name.
const statusOverloaded = 529

func appendJSONString(b []byte, s string) []byte {
	q, err := json.Marshal(s)
	if err != nil { // a Go string always marshals
		return append(b, `""`...)
	}
	return append(b, q...)
}
