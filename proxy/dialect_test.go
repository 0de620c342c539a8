package proxy_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tollgate-dev/tollgate/ledger"
)

// anthropicError is the Claude API's error shape, with tollgate's code
// (and on a 402 the available and required credits).
type anthropicError struct {
	Type  string `json:"type"`
	Error struct {
		Type      string `json:"type"`
		Message   string `json:"message"`
		Code      string `json:"code"`
		Available string `json:"available"`
		Required  string `json:"required"`
	} `json:"error"`
}

// decodeAnthropicError decodes body as Anthropic's error shape, strictly:
// no other field, and "type":"error" at the top, which the OpenAI shape
// lacks.
func decodeAnthropicError(t testing.TB, body []byte) anthropicError {
	t.Helper()
	var e anthropicError
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil || e.Type != "error" {
		t.Fatalf("not the Anthropic error shape (err %v): %s", err, body)
	}
	return e
}

// googleError is the Google APIs' error shape (google.rpc.Status as
// JSON), with tollgate's code as the reason of an ErrorInfo detail.
type googleError struct {
	Error struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
		Status  string `json:"status"`
		Details []struct {
			Type   string `json:"@type"`
			Reason string `json:"reason"`
			Domain string `json:"domain"`
			// Metadata holds the further facts of an error, e.g. a
			// 402's available and required.
			Metadata map[string]string `json:"metadata"`
		} `json:"details"`
	} `json:"error"`
}

// decodeGoogleError decodes body as Google's error shape, strictly: no
// other field, a numeric error.code, and exactly one ErrorInfo detail in
// tollgate's domain.
func decodeGoogleError(t testing.TB, body []byte) googleError {
	t.Helper()
	var e googleError
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil || len(e.Error.Details) != 1 ||
		e.Error.Details[0].Type != "type.googleapis.com/google.rpc.ErrorInfo" || e.Error.Details[0].Domain != "tollgate.dev" {
		t.Fatalf("not the Google error shape (err %v): %s", err, body)
	}
	return e
}

// dialectRoute is a route of the dialect test's config and the error
// shape it answers in.
type dialectRoute struct {
	name      string // the dialect
	path      string
	dead      string // the same API on an upstream that is down
	body      func(model, extra string) string
	model     string
	anthropic bool
	google    bool // the model is in the path: {path}{model}:generateContent
}

var dialectRoutes = []dialectRoute{
	{name: "OpenAI", path: "/v1/chat/completions", dead: "/dead/v1/chat/completions", body: chatBody, model: "gpt-4o"},
	{name: "Anthropic", path: "/v1/messages", dead: "/dead/v1/messages", body: messagesBody, model: "claude-sonnet-4-5", anthropic: true},
	{name: "Google", path: "/v1beta/models/gemini-2.5-flash:generateContent", dead: "/dead/v1beta/models/gemini-2.5-flash:generateContent",
		body: geminiBody, model: "gemini-2.5-flash", google: true},
}

// target is the path of a request for model: rt.path, but for Google,
// whose path names the model.
func (rt dialectRoute) target(model string) string {
	if rt.google {
		return "/v1beta/models/" + model + ":generateContent"
	}
	return rt.path
}

// messagesBody is a small Anthropic Messages request for model.
func messagesBody(model, extra string) string {
	return `{"model":"` + model + `","max_tokens":100,"messages":[{"role":"user","content":"Hello, Claude"}]` + extra + `}`
}

// wantDialectError checks that res is an error of status and code in
// rt's dialect, with error.type typ, and returns its message.
func wantDialectError(t *testing.T, rt dialectRoute, res *http.Response, data []byte, status int, code, typ string) string {
	t.Helper()
	if res.StatusCode != status {
		t.Fatalf("status %d, want %d: %s", res.StatusCode, status, data)
	}
	if ct := res.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	var gotCode, gotType, msg string
	switch {
	case rt.google:
		e := decodeGoogleError(t, data)
		gotCode, gotType, msg = e.Error.Details[0].Reason, e.Error.Status, e.Error.Message
		if e.Error.Code != status {
			t.Errorf("error.code %d, want the status %d", e.Error.Code, status)
		}
	case rt.anthropic:
		e := decodeAnthropicError(t, data)
		gotCode, gotType, msg = e.Error.Code, e.Error.Type, e.Error.Message
	default:
		e := decodeError(t, data)
		gotCode, gotType, msg = e.Error.Code, e.Error.Type, e.Error.Message
	}
	if gotCode != code || gotType != typ {
		t.Errorf("code %q type %q, want %q %q: %s", gotCode, gotType, code, typ, data)
	}
	if msg == "" {
		t.Errorf("no message: %s", data)
	}
	return msg
}

// dialectConfig is testConfig with an Anthropic route on a dead upstream,
// a catch-all prefix route (so that a trailing slash names an exact route
// it would otherwise price), short body and request time limits, and
// customers' requests that hang upstream (for 504).
func dialectConfig(t *testing.T) string {
	yaml := configWith(t, "settle_timeout: 2s", "settle_timeout: 2s\nmax_request_duration: 300ms\nrequest_body_timeout: 300ms")
	return yaml + `
  - path: /dead/v1/messages
    api: anthropic.messages
    upstream: DEAD
    prices:
      claude-sonnet-4-5: {input: "3", output: "15"}
  - path: /dead/v1beta/models/
    api: google.gemini
    upstream: DEAD
    prices:
      gemini-2.5-flash: {input: "0.30", output: "2.50"}
  - path: /v1/
    api: flat
    upstream: UPSTREAM
    prices:
      "*": {per_request: "0.001"}
`
}

// TestErrorDialects: every refusal in DESIGN's error table (and the
// README's 408 and 504) is answered in the error shape of the route's
// provider, with the same status, code and message in each: OpenAI's on
// OpenAI routes, Anthropic's — error.type one of Anthropic's own — on
// anthropic.messages routes, Google's — error.code the numeric status,
// error.status a google.rpc code, tollgate's code in details[0].reason —
// on google.gemini routes. A request no route matches is answered in
// OpenAI's.
func TestErrorDialects(t *testing.T) {
	h := newHarness(t, harnessOptions{yaml: dialectConfig(t)})
	h.up.handle(func(w http.ResponseWriter, r *http.Request, body []byte) {
		<-r.Context().Done() // no answer: max_request_duration cuts it
	})
	rich, poor, suspended := newCustomer(), newCustomer(), newCustomer()
	h.grant(rich, "100")
	h.grant(poor, "0.000001")
	h.grant(suspended, "100")
	if err := h.store.Suspend(context.Background(), suspended, "dp_test"); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name      string
		req       func(rt dialectRoute) request
		status    int
		code      string
		openAI    string // error.type on the OpenAI route
		anthropic string // error.type on the Anthropic route
		google    string // error.status on the Google route
		message   string // exact on every route, when set
	}{
		{
			name:   "no customer header",
			req:    func(rt dialectRoute) request { return request{path: rt.path, body: rt.body(rt.model, "")} },
			status: 401, code: "missing_customer", openAI: "invalid_request_error", anthropic: "authentication_error", google: "UNAUTHENTICATED",
			message: "missing X-Tollgate-Customer header: name the customer this request is for (tollgate removes the header before forwarding)",
		},
		{
			name: "bad customer id",
			req: func(rt dialectRoute) request {
				return request{path: rt.path, customer: "acme corp", body: rt.body(rt.model, "")}
			},
			status: 400, code: "invalid_request", openAI: "invalid_request_error", anthropic: "invalid_request_error", google: "INVALID_ARGUMENT",
			message: `invalid X-Tollgate-Customer header: "acme corp" contains ' ' at byte 4; use printable ASCII without spaces or braces`,
		},
		{
			name: "balance below the estimate",
			req: func(rt dialectRoute) request {
				return request{path: rt.path, customer: poor, body: rt.body(rt.model, "")}
			},
			status: 402, code: "insufficient_credits", openAI: "insufficient_quota", anthropic: "billing_error", google: "RESOURCE_EXHAUSTED",
		},
		{
			name: "suspended customer",
			req: func(rt dialectRoute) request {
				return request{path: rt.path, customer: suspended, body: rt.body(rt.model, "")}
			},
			status: 403, code: "customer_suspended", openAI: "permission_error", anthropic: "permission_error", google: "PERMISSION_DENIED",
			message: "this customer is suspended while a payment dispute is open; requests are refused until the dispute is closed",
		},
		{
			name: "model not priced",
			req: func(rt dialectRoute) request {
				return request{path: rt.target("unpriced-model"), customer: rich, body: rt.body("unpriced-model", "")}
			},
			status: 400, code: "model_not_priced", openAI: "invalid_request_error", anthropic: "invalid_request_error", google: "INVALID_ARGUMENT",
			message: `model "unpriced-model" is not priced on this route; add it to the route's prices, or add a "*" entry`,
		},
		{
			name:   "body not JSON",
			req:    func(rt dialectRoute) request { return request{path: rt.path, customer: rich, body: `{"model":`} },
			status: 400, code: "invalid_request", openAI: "invalid_request_error", anthropic: "invalid_request_error", google: "INVALID_ARGUMENT",
			message: "the request body is not valid JSON",
		},
		{
			name: "protocol upgrade",
			req: func(rt dialectRoute) request {
				return request{path: rt.path, customer: rich, body: rt.body(rt.model, ""), header: map[string]string{"Connection": "Upgrade", "Upgrade": "websocket"}}
			},
			status: 400, code: "invalid_request", openAI: "invalid_request_error", anthropic: "invalid_request_error", google: "INVALID_ARGUMENT",
			message: "tollgate does not forward protocol upgrades (websocket); send plain HTTP requests",
		},
		{
			name: "body too large",
			req: func(rt dialectRoute) request {
				return request{path: rt.path, customer: rich, body: rt.body(rt.model, `,"metadata":{"user_id":"`+strings.Repeat("x", 70000)+`"}`)}
			},
			status: 413, code: "request_too_large", openAI: "invalid_request_error", anthropic: "request_too_large", google: "INVALID_ARGUMENT",
			message: "the request body is larger than 65536 bytes (max_request_bytes)",
		},
		{
			name: "a trailing slash that a prefix route would price",
			req: func(rt dialectRoute) request {
				return request{path: rt.path + "/", customer: rich, body: rt.body(rt.model, "")}
			},
			status: 404, code: "route_not_found", openAI: "invalid_request_error", anthropic: "not_found_error", google: "NOT_FOUND",
		},
		{
			name: "upstream unreachable",
			req: func(rt dialectRoute) request {
				return request{path: rt.dead, customer: rich, body: rt.body(rt.model, "")}
			},
			status: 502, code: "upstream_unavailable", openAI: "server_error", anthropic: "api_error", google: "UNAVAILABLE",
			message: "the upstream API could not be reached; nothing was charged. Retry shortly",
		},
		{
			name: "no upstream answer within max_request_duration",
			req: func(rt dialectRoute) request {
				return request{path: rt.path, customer: rich, body: rt.body(rt.model, "")}
			},
			status: 504, code: "request_timeout", openAI: "server_error", anthropic: "timeout_error", google: "DEADLINE_EXCEEDED",
			message: "the upstream API did not answer within max_request_duration (300ms); the request was cancelled and charged for its prompt",
		},
	}
	for _, tc := range tests {
		for _, rt := range dialectRoutes {
			t.Run(tc.name+"/"+rt.name, func(t *testing.T) {
				res, data := h.do(tc.req(rt))
				typ := tc.openAI
				switch {
				case rt.anthropic:
					typ = tc.anthropic
				case rt.google:
					typ = tc.google
				}
				msg := wantDialectError(t, rt, res, data, tc.status, tc.code, typ)
				if tc.message != "" && msg != tc.message {
					t.Errorf("message:\n got %s\nwant %s", msg, tc.message)
				}
				if tc.status == 402 && res.Header.Get("X-Should-Retry") != "false" {
					t.Error("402 without x-should-retry: false")
				}
			})
		}
	}

	t.Run("stalled body", func(t *testing.T) {
		for _, rt := range dialectRoutes {
			t.Run(rt.name, func(t *testing.T) {
				body := rt.body(rt.model, "")
				conn, err := net.Dial("tcp", h.proxy.Listener.Addr().String())
				if err != nil {
					t.Fatal(err)
				}
				defer conn.Close()
				fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: tollgate\r\nContent-Type: application/json\r\nX-Tollgate-Customer: %s\r\nContent-Length: %d\r\n\r\n%s",
					rt.path, rich, len(body), body[:len(body)/2])
				conn.SetReadDeadline(time.Now().Add(10 * time.Second))
				res, err := http.ReadResponse(bufio.NewReader(conn), nil)
				if err != nil {
					t.Fatal(err)
				}
				data, _ := io.ReadAll(res.Body)
				res.Body.Close()
				typ := "invalid_request_error"
				if rt.google {
					typ = "DEADLINE_EXCEEDED"
				}
				wantDialectError(t, rt, res, data, http.StatusRequestTimeout, "request_timeout", typ)
			})
		}
	})

	t.Run("no route is OpenAI-shaped", func(t *testing.T) {
		for _, path := range []string{"/v2/messages", "/v1/messages/../chat/completions", "/v1//messages"} {
			res, data := h.do(request{path: path, customer: rich, body: messagesBody("claude-sonnet-4-5", ""), header: map[string]string{"x-api-key": "sk-ant-client", "anthropic-version": "2023-06-01"}})
			if res.StatusCode != 404 {
				t.Fatalf("%s: status %d: %s", path, res.StatusCode, data)
			}
			if e := decodeError(t, data); e.Error.Code != "route_not_found" || e.Error.Type != "invalid_request_error" {
				t.Errorf("%s: %+v", path, e)
			}
		}
	})
}

// TestBillingUnavailableDialects: with the store down, each route answers
// 503 billing_unavailable in its provider's shape (Anthropic: api_error,
// which its SDKs retry like any 5xx), with Retry-After: 1.
func TestBillingUnavailableDialects(t *testing.T) {
	down := ledger.NewRedisStore(redis.NewClient(&redis.Options{Addr: closedAddr(t), MaxRetries: -1, DialerRetries: 1}), ledger.Options{})
	t.Cleanup(func() { down.Close() })
	h := newHarness(t, harnessOptions{store: down})
	for _, rt := range dialectRoutes {
		t.Run(rt.name, func(t *testing.T) {
			res, data := h.do(request{path: rt.path, customer: newCustomer(), body: rt.body(rt.model, "")})
			typ := "server_error"
			switch {
			case rt.anthropic:
				typ = "api_error"
			case rt.google:
				typ = "UNAVAILABLE"
			}
			msg := wantDialectError(t, rt, res, data, http.StatusServiceUnavailable, "billing_unavailable", typ)
			if want := "billing is unavailable: tollgate cannot reach its credit store, so nothing was forwarded or charged; retry shortly"; msg != want {
				t.Errorf("message %q, want %q", msg, want)
			}
			if res.Header.Get("Retry-After") != "1" {
				t.Errorf("Retry-After %q", res.Header.Get("Retry-After"))
			}
		})
	}
	if n := len(h.up.requests()); n != 0 {
		t.Errorf("forwarded %d requests while the store was down", n)
	}
}
