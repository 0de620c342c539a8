package apierror_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/internal/apierror"
)

func TestWrite(t *testing.T) {
	tests := []struct {
		name    string
		err     *apierror.Error
		body    string
		headers map[string]string // "" means absent
	}{
		{
			name: "invalid request",
			err:  &apierror.Error{Status: http.StatusBadRequest, Code: "invalid_request", Message: "the request body is not valid JSON"},
			body: `{"error":{"message":"the request body is not valid JSON","type":"invalid_request_error","code":"invalid_request"}}` + "\n",
			headers: map[string]string{
				"Content-Type":           "application/json",
				"X-Content-Type-Options": "nosniff",
				"Retry-After":            "",
				"X-Should-Retry":         "",
			},
		},
		{
			name:    "401 classed by status is an invalid request, as OpenAI answers a missing key",
			err:     &apierror.Error{Status: http.StatusUnauthorized, Code: "missing_customer", Message: "name the customer"},
			body:    `{"error":{"message":"name the customer","type":"invalid_request_error","code":"missing_customer"}}` + "\n",
			headers: map[string]string{"Content-Type": "application/json"},
		},
		{
			name: "authentication",
			err:  &apierror.Error{Status: http.StatusUnauthorized, Code: "unauthorized", Message: "wrong token", Kind: apierror.KindAuthentication},
			body: `{"error":{"message":"wrong token","type":"authentication_error","code":"unauthorized"}}` + "\n",
		},
		{
			name: "permission",
			err:  &apierror.Error{Status: http.StatusForbidden, Code: "customer_suspended", Message: "suspended", Kind: apierror.KindPermission},
			body: `{"error":{"message":"suspended","type":"permission_error","code":"customer_suspended"}}` + "\n",
		},
		{
			name:    "quota: SDKs are told not to retry",
			err:     &apierror.Error{Status: http.StatusPaymentRequired, Code: "insufficient_credits", Message: "1.000000 available, 2.000000 required", Kind: apierror.KindQuota},
			body:    `{"error":{"message":"1.000000 available, 2.000000 required","type":"insufficient_quota","code":"insufficient_credits"}}` + "\n",
			headers: map[string]string{"X-Should-Retry": "false", "Retry-After": ""},
		},
		{
			name: "quota with details: after code, as strings",
			err: &apierror.Error{Status: http.StatusPaymentRequired, Code: "insufficient_credits", Message: "short", Kind: apierror.KindQuota,
				Details: []apierror.Detail{{Name: "available", Value: "1.000000"}, {Name: "required", Value: "2.000000"}}},
			body:    `{"error":{"message":"short","type":"insufficient_quota","code":"insufficient_credits","available":"1.000000","required":"2.000000"}}` + "\n",
			headers: map[string]string{"X-Should-Retry": "false", "Retry-After": ""},
		},
		{
			name:    "quota that a retry may clear: SDKs are told when",
			err:     &apierror.Error{Status: http.StatusPaymentRequired, Code: "insufficient_credits", Message: "held", Kind: apierror.KindQuota, RetryAfter: 1500 * time.Millisecond},
			body:    `{"error":{"message":"held","type":"insufficient_quota","code":"insufficient_credits"}}` + "\n",
			headers: map[string]string{"X-Should-Retry": "true", "Retry-After": "2"},
		},
		{
			name:    "unavailable: retry after a second",
			err:     &apierror.Error{Status: http.StatusServiceUnavailable, Code: "billing_unavailable", Message: "retry shortly"},
			body:    `{"error":{"message":"retry shortly","type":"server_error","code":"billing_unavailable"}}` + "\n",
			headers: map[string]string{"Retry-After": "1", "X-Should-Retry": ""},
		},
		{
			name: "the cause is never written",
			err:  &apierror.Error{Status: http.StatusInternalServerError, Code: "store_error", Message: "the credit store failed", Err: errors.New("redis 10.0.0.7:6379: secret detail")},
			body: `{"error":{"message":"the credit store failed","type":"server_error","code":"store_error"}}` + "\n",
		},
		{
			name: "the message is escaped",
			err:  &apierror.Error{Status: http.StatusBadRequest, Code: "invalid_request", Message: "\"quoted\"\n<b>&"},
			body: `{"error":{"message":"\"quoted\"\n\u003cb\u003e\u0026","type":"invalid_request_error","code":"invalid_request"}}` + "\n",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			apierror.Write(rec, httptest.NewRequest(http.MethodPost, "/v1/chat/completions", nil), tc.err)
			if rec.Code != tc.err.Status {
				t.Errorf("status %d, want %d", rec.Code, tc.err.Status)
			}
			if got := rec.Body.String(); got != tc.body {
				t.Errorf("body %s\nwant %s", got, tc.body)
			}
			for k, want := range tc.headers {
				if got := rec.Header().Get(k); got != want {
					t.Errorf("header %s %q, want %q", k, got, want)
				}
			}
		})
	}
}

// TestWriteDialect: OpenAI is the default, whether the request names no
// dialect, names OpenAI, or there is no request.
func TestWriteDialect(t *testing.T) {
	e := &apierror.Error{Status: http.StatusNotFound, Code: "route_not_found", Message: "no route"}
	want := `{"error":{"message":"no route","type":"invalid_request_error","code":"route_not_found"}}` + "\n"
	plain := httptest.NewRequest(http.MethodGet, "/x", nil)
	requests := map[string]*http.Request{
		"no dialect": plain,
		"OpenAI":     plain.WithContext(apierror.WithDialect(context.Background(), apierror.OpenAI)),
		"no request": nil,
	}
	for name, r := range requests {
		rec := httptest.NewRecorder()
		apierror.Write(rec, r, e)
		if got := rec.Body.String(); got != want {
			t.Errorf("%s: body %s\nwant %s", name, got, want)
		}
	}
}

// TestDetailsInEveryDialect: the further members of an error object sit
// beside code in each dialect's error object; in Google's, in the
// ErrorInfo's metadata.
func TestDetailsInEveryDialect(t *testing.T) {
	e := &apierror.Error{Status: http.StatusPaymentRequired, Code: "insufficient_credits", Message: "m", Kind: apierror.KindQuota,
		Details: []apierror.Detail{{Name: "available", Value: "-0.500000"}, {Name: "required", Value: "3.000000"}}}
	want := map[apierror.Dialect]string{
		apierror.OpenAI:    `{"error":{"message":"m","type":"insufficient_quota","code":"insufficient_credits","available":"-0.500000","required":"3.000000"}}` + "\n",
		apierror.Anthropic: `{"type":"error","error":{"type":"billing_error","message":"m","code":"insufficient_credits","available":"-0.500000","required":"3.000000"}}` + "\n",
		apierror.Google:    `{"error":{"code":402,"message":"m","status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"insufficient_credits","domain":"tollgate.dev","metadata":{"available":"-0.500000","required":"3.000000"}}]}}` + "\n",
	}
	for d, body := range want {
		r := httptest.NewRequest(http.MethodPost, "/v1/messages", nil)
		r = r.WithContext(apierror.WithDialect(r.Context(), d))
		rec := httptest.NewRecorder()
		apierror.Write(rec, r, e)
		if got := rec.Body.String(); got != body {
			t.Errorf("dialect %d: body %s\nwant %s", d, got, body)
		}
	}
}

func TestErrorWrapsItsCause(t *testing.T) {
	errDown := errors.New("ledger: store unavailable")
	e := &apierror.Error{Status: http.StatusServiceUnavailable, Code: "store_unavailable", Message: "the credit store is unavailable", Err: fmt.Errorf("credit: %w", errDown)}
	if !errors.Is(e, errDown) {
		t.Errorf("errors.Is(%v, cause) is false", e)
	}
	if got, want := e.Error(), "the credit store is unavailable: credit: ledger: store unavailable"; got != want {
		t.Errorf("Error() %q, want %q", got, want)
	}
	if got, want := (&apierror.Error{Message: "no cause"}).Error(), "no cause"; got != want {
		t.Errorf("Error() %q, want %q", got, want)
	}
	var target *apierror.Error
	if !errors.As(fmt.Errorf("event evt_1: %w", e), &target) || target != e {
		t.Errorf("errors.As does not find the *Error through a wrap")
	}
}

// TestDialects writes each row of DESIGN's error table (with the README's
// 408 and 504 and the statuses only a provider sends) in every dialect,
// byte for byte: the status, headers and error.code are the same in each,
// and error.type is the provider's own name for the class, so that its
// SDK raises the matching error with tollgate's message.
func TestDialects(t *testing.T) {
	const msg = "what happened; what to do"
	rows := []struct {
		status    int
		code      string
		kind      apierror.Kind
		openAI    string // error.type in OpenAI's dialect
		anthropic string // error.type in Anthropic's
		google    string // error.status in Google's
	}{
		{401, "missing_customer", apierror.KindByStatus, "invalid_request_error", "authentication_error", "UNAUTHENTICATED"},
		{401, "unauthorized", apierror.KindAuthentication, "authentication_error", "authentication_error", "UNAUTHENTICATED"},
		{402, "insufficient_credits", apierror.KindQuota, "insufficient_quota", "billing_error", "RESOURCE_EXHAUSTED"},
		{403, "customer_suspended", apierror.KindPermission, "permission_error", "permission_error", "PERMISSION_DENIED"},
		{403, "model_not_entitled", apierror.KindPermission, "permission_error", "permission_error", "PERMISSION_DENIED"},
		{403, "route_not_entitled", apierror.KindPermission, "permission_error", "permission_error", "PERMISSION_DENIED"},
		{400, "model_not_priced", apierror.KindByStatus, "invalid_request_error", "invalid_request_error", "INVALID_ARGUMENT"},
		{400, "invalid_request", apierror.KindByStatus, "invalid_request_error", "invalid_request_error", "INVALID_ARGUMENT"},
		{413, "request_too_large", apierror.KindByStatus, "invalid_request_error", "request_too_large", "INVALID_ARGUMENT"},
		{408, "request_timeout", apierror.KindByStatus, "invalid_request_error", "invalid_request_error", "DEADLINE_EXCEEDED"},
		{404, "route_not_found", apierror.KindByStatus, "invalid_request_error", "not_found_error", "NOT_FOUND"},
		{503, "billing_unavailable", apierror.KindByStatus, "server_error", "api_error", "UNAVAILABLE"},
		{502, "upstream_unavailable", apierror.KindByStatus, "server_error", "api_error", "UNAVAILABLE"},
		{504, "request_timeout", apierror.KindByStatus, "server_error", "timeout_error", "DEADLINE_EXCEEDED"},
		{500, "internal_error", apierror.KindByStatus, "server_error", "api_error", "INTERNAL"},
		{429, "rate_limited", apierror.KindByStatus, "invalid_request_error", "rate_limit_error", "RESOURCE_EXHAUSTED"},
		{529, "overloaded", apierror.KindByStatus, "server_error", "overloaded_error", "INTERNAL"},
	}
	dialects := []struct {
		name string
		d    apierror.Dialect
		body func(typ, code string, status int) string
		typ  func(openAI, anthropic, google string) string
	}{
		{
			name: "OpenAI",
			d:    apierror.OpenAI,
			body: func(typ, code string, _ int) string {
				return `{"error":{"message":"` + msg + `","type":"` + typ + `","code":"` + code + `"}}` + "\n"
			},
			typ: func(openAI, _, _ string) string { return openAI },
		},
		{
			name: "Anthropic",
			d:    apierror.Anthropic,
			body: func(typ, code string, _ int) string {
				return `{"type":"error","error":{"type":"` + typ + `","message":"` + msg + `","code":"` + code + `"}}` + "\n"
			},
			typ: func(_, anthropic, _ string) string { return anthropic },
		},
		{
			name: "Google",
			d:    apierror.Google,
			body: func(typ, code string, status int) string {
				return `{"error":{"code":` + strconv.Itoa(status) + `,"message":"` + msg + `","status":"` + typ + `","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"` + code + `","domain":"tollgate.dev"}]}}` + "\n"
			},
			typ: func(_, _, google string) string { return google },
		},
	}
	for _, d := range dialects {
		for _, row := range rows {
			t.Run(fmt.Sprintf("%s/%d %s", d.name, row.status, row.code), func(t *testing.T) {
				r := httptest.NewRequest(http.MethodPost, "/v1/messages", nil)
				r = r.WithContext(apierror.WithDialect(r.Context(), d.d))
				rec := httptest.NewRecorder()
				apierror.Write(rec, r, &apierror.Error{Status: row.status, Code: row.code, Message: msg, Kind: row.kind, Err: errors.New("internal detail")})
				if rec.Code != row.status {
					t.Errorf("status %d, want %d", rec.Code, row.status)
				}
				if got, want := rec.Body.String(), d.body(d.typ(row.openAI, row.anthropic, row.google), row.code, row.status); got != want {
					t.Errorf("body %s\nwant %s", got, want)
				}
				want := map[string]string{"Content-Type": "application/json", "X-Content-Type-Options": "nosniff", "X-Should-Retry": "", "Retry-After": ""}
				switch row.status {
				case http.StatusPaymentRequired:
					want["X-Should-Retry"] = "false"
				case http.StatusServiceUnavailable:
					want["Retry-After"] = "1"
				}
				for k, v := range want {
					if got := rec.Header().Get(k); got != v {
						t.Errorf("header %s %q, want %q", k, got, v)
					}
				}
			})
		}
	}
}

// TestAnthropicEscapes: the message and code are JSON strings in
// Anthropic's dialect too.
func TestAnthropicEscapes(t *testing.T) {
	r := httptest.NewRequest(http.MethodPost, "/v1/messages", nil)
	r = r.WithContext(apierror.WithDialect(r.Context(), apierror.Anthropic))
	rec := httptest.NewRecorder()
	apierror.Write(rec, r, &apierror.Error{Status: http.StatusBadRequest, Code: "invalid_request", Message: "\"quoted\"\n<b>&"})
	want := `{"type":"error","error":{"type":"invalid_request_error","message":"\"quoted\"\n\u003cb\u003e\u0026","code":"invalid_request"}}` + "\n"
	if got := rec.Body.String(); got != want {
		t.Errorf("body %s\nwant %s", got, want)
	}
}
