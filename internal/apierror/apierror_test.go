package apierror_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"

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
