package proxy_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/tidwall/gjson"

	"github.com/tollgate-dev/tollgate/ledger"
	"github.com/tollgate-dev/tollgate/money"
	"github.com/tollgate-dev/tollgate/proxy"
)

// reservation is DESIGN's preflight for a chat request on the test
// config's chat route (gpt-4o, 2.50 in / 10 out per 1M, route cap 1000):
// (body bytes + 512) input tokens and the output cap, priced and rounded up.
func reservation(body string, outCap int64) money.Micros {
	in := int64(len(body)) + 512
	num := in*2_500_000 + outCap*10_000_000
	return money.Micros((num + 999_999) / 1_000_000)
}

var requestID = regexp.MustCompile(`^tg_[0-9a-f]{32}$`)

func TestErrorTable(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	rich, poor, suspended := newCustomer(), newCustomer(), newCustomer()
	h.grant(rich, "100")
	h.grant(poor, "0.01")
	h.grant(suspended, "100")
	if err := h.store.Suspend(context.Background(), suspended, "dp_test"); err != nil {
		t.Fatal(err)
	}
	body := chatBody("gpt-4o", "")
	required := reservation(body, 1000)

	tests := []struct {
		name    string
		req     request
		status  int
		code    string
		typ     string
		message string // exact, when set
	}{
		{
			name:    "no customer header",
			req:     request{path: "/v1/chat/completions", body: body},
			status:  401,
			code:    "missing_customer",
			typ:     "invalid_request_error",
			message: "missing X-Tollgate-Customer header: name the customer this request is for (tollgate removes the header before forwarding)",
		},
		{
			name:    "customer id with a space",
			req:     request{path: "/v1/chat/completions", customer: "acme corp", body: body},
			status:  400,
			code:    "invalid_request",
			typ:     "invalid_request_error",
			message: `invalid X-Tollgate-Customer header: "acme corp" contains ' ' at byte 4; use printable ASCII without spaces or braces`,
		},
		{
			name:    "balance below the estimate",
			req:     request{path: "/v1/chat/completions", customer: poor, body: body},
			status:  402,
			code:    "insufficient_credits",
			typ:     "insufficient_quota",
			message: "insufficient credits: 0.010000 available, " + required.String() + " required (this request's worst-case cost); add credits, or lower max_tokens",
		},
		{
			name:   "suspended customer",
			req:    request{path: "/v1/chat/completions", customer: suspended, body: body},
			status: 403,
			code:   "customer_suspended",
			typ:    "permission_error",
		},
		{
			name:    "model not priced",
			req:     request{path: "/v1/chat/completions", customer: rich, body: chatBody("gpt-5-ultra", "")},
			status:  400,
			code:    "model_not_priced",
			typ:     "invalid_request_error",
			message: `model "gpt-5-ultra" is not priced on this route; add it to the route's prices, or add a "*" entry`,
		},
		{
			name:    "body not JSON",
			req:     request{path: "/v1/chat/completions", customer: rich, body: `{"model":"gpt-4o",`},
			status:  400,
			code:    "invalid_request",
			typ:     "invalid_request_error",
			message: "the request body is not valid JSON",
		},
		{
			name:    "body too large",
			req:     request{path: "/v1/chat/completions", customer: rich, body: chatBody("gpt-4o", `,"user":"`+strings.Repeat("x", 70000)+`"`)},
			status:  413,
			code:    "request_too_large",
			typ:     "invalid_request_error",
			message: "the request body is larger than 65536 bytes (max_request_bytes)",
		},
		{
			name:    "no route",
			req:     request{path: "/v1/fine_tuning/jobs", customer: rich, body: body},
			status:  404,
			code:    "route_not_found",
			typ:     "invalid_request_error",
			message: "no route for POST /v1/fine_tuning/jobs: tollgate forwards only the paths configured in its routes",
		},
		{
			name:    "upstream unreachable",
			req:     request{path: "/dead/v1/chat/completions", customer: rich, body: body},
			status:  502,
			code:    "upstream_unavailable",
			typ:     "server_error",
			message: "the upstream API could not be reached; nothing was charged. Retry shortly",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := len(h.up.requests())
			res, data := h.do(tc.req)
			if res.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %s", res.StatusCode, tc.status, data)
			}
			if ct := res.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
			e := decodeError(t, data)
			if e.Error.Code != tc.code || e.Error.Type != tc.typ {
				t.Errorf("code %q type %q, want %q %q", e.Error.Code, e.Error.Type, tc.code, tc.typ)
			}
			if tc.message != "" && e.Error.Message != tc.message {
				t.Errorf("message:\n got %s\nwant %s", e.Error.Message, tc.message)
			}
			if got := len(h.up.requests()); got != before {
				t.Errorf("the upstream received %d requests; a refusal must forward nothing", got-before)
			}
			if hasID := requestID.MatchString(res.Header.Get("X-Tollgate-Request-Id")); hasID != (tc.status == 502) {
				t.Errorf("X-Tollgate-Request-Id %q: a request id only once a hold was taken", res.Header.Get("X-Tollgate-Request-Id"))
			}
			if tc.status == 402 && res.Header.Get("X-Should-Retry") != "false" {
				t.Errorf("402 without x-should-retry: false")
			}
			if tc.status == 402 && (e.Error.Available != "0.010000" || e.Error.Required != required.String()) {
				t.Errorf("available %q, required %q; want 0.010000 and %s", e.Error.Available, e.Error.Required, required)
			}
			if tc.status != 402 && (e.Error.Available != "" || e.Error.Required != "") {
				t.Errorf("available %q, required %q on a %d", e.Error.Available, e.Error.Required, tc.status)
			}
			for _, c := range []string{rich, poor, suspended} {
				h.settled(c, 0) // nothing charged, nothing left reserved
			}
		})
	}

	t.Run("chunked body too large", func(t *testing.T) {
		big := chatBody("gpt-4o", `,"user":"`+strings.Repeat("x", 70000)+`"`)
		req, _ := http.NewRequest(http.MethodPost, h.proxy.URL+"/v1/chat/completions", io.MultiReader(strings.NewReader(big)))
		req.ContentLength = -1 // unknown length: sent chunked
		req.Header.Set("X-Tollgate-Customer", rich)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		data, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != 413 || decodeError(t, data).Error.Code != "request_too_large" {
			t.Fatalf("%d %s", res.StatusCode, data)
		}
	})

	if got := h.metric("tollgate_refusals_total", map[string]string{"code": "insufficient_credits"}); got != 1 {
		t.Errorf("tollgate_refusals_total{code=insufficient_credits} = %v, want 1", got)
	}
	if got := h.metric("tollgate_requests_total", map[string]string{"route": "/v1/chat/completions", "status": "402"}); got != 1 {
		t.Errorf("tollgate_requests_total{status=402} = %v, want 1", got)
	}
}

// TestBillingUnavailable: with the store unreachable the proxy fails
// closed, forwards nothing, and says the store is the problem.
func TestBillingUnavailable(t *testing.T) {
	down := ledger.NewRedisStore(redis.NewClient(&redis.Options{Addr: closedAddr(t), MaxRetries: -1, DialerRetries: 1}), ledger.Options{})
	t.Cleanup(func() { down.Close() })
	h := newHarness(t, harnessOptions{store: down})
	res, data := h.do(request{path: "/v1/chat/completions", customer: newCustomer(), body: chatBody("gpt-4o", "")})
	if res.StatusCode != 503 {
		t.Fatalf("status %d: %s", res.StatusCode, data)
	}
	e := decodeError(t, data)
	want := "billing is unavailable: tollgate cannot reach its credit store, so nothing was forwarded or charged; retry shortly"
	if e.Error.Code != "billing_unavailable" || e.Error.Type != "server_error" || e.Error.Message != want {
		t.Errorf("got %+v", e.Error)
	}
	if len(h.up.requests()) != 0 {
		t.Error("forwarded while the store was down")
	}
	res, data = getURL(t, h.admin.URL+"/readyz", "")
	if res.StatusCode != 503 || decodeError(t, data).Error.Code != "billing_unavailable" {
		t.Errorf("/readyz: %d %s", res.StatusCode, data)
	}
}

func TestChatJSON(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	cust := newCustomer()
	h.grant(cust, "10")
	body := chatBody("gpt-4o", `,"max_tokens":300`)
	res, data := h.do(request{path: "/v1/chat/completions", customer: cust, body: body, header: map[string]string{
		"Accept-Encoding": "br",
		"X-Api-Key":       clientKey,
	}})
	if res.StatusCode != 200 {
		t.Fatalf("status %d: %s", res.StatusCode, data)
	}
	if !bytes.Equal(data, testdata(t, "chat_completion.json")) {
		t.Error("the JSON response was changed on its way through")
	}
	id := res.Header.Get("X-Tollgate-Request-Id")
	if !requestID.MatchString(id) {
		t.Errorf("X-Tollgate-Request-Id %q", id)
	}
	if got, want := res.Header.Get("X-Tollgate-Reserved"), reservation(body, 300).String(); got != want {
		t.Errorf("X-Tollgate-Reserved %s, want %s", got, want)
	}

	up := h.up.last(t)
	if got := up.Header.Get("Authorization"); got != "Bearer "+upstreamKey {
		t.Errorf("upstream Authorization %q, want the route's", got)
	}
	for _, k := range []string{"X-Tollgate-Customer", "X-Api-Key"} {
		if v := up.Header.Get(k); v != "" {
			t.Errorf("upstream received %s: %q", k, v)
		}
	}
	if got := up.Header.Get("Accept-Encoding"); got == "br" {
		t.Errorf("the client's Accept-Encoding %q reached the upstream; the meter needs identity or gzip it can undo", got)
	}
	if string(up.Body) != body {
		t.Errorf("a non-stream body was rewritten: %s", up.Body)
	}

	charges := h.settled(cust, 1)
	c := charges[0]
	// 1117 input tokens at 2.50 and 46 output at 10 per 1M: 0.0032525, rounded up.
	if c.Amount != -mustMicros(t, "0.003253") || c.Reference != id || c.Route != "/v1/chat/completions" || c.Model != "gpt-4o" ||
		c.InputTokens != 1117 || c.CachedInputTokens != 0 || c.OutputTokens != 46 {
		t.Errorf("charge %+v", c)
	}
	if a := h.account(cust); a.Balance != mustMicros(t, "9.996747") {
		t.Errorf("balance %s", a.Balance)
	}
	h.eventually("tollgate_credits_charged_total", map[string]string{"route": "/v1/chat/completions"}, 0.003253)
	h.eventually("tollgate_tokens_total", map[string]string{"route": "/v1/chat/completions", "class": "output"}, 46)
	h.eventually("tollgate_requests_total", map[string]string{"route": "/v1/chat/completions", "status": "200"}, 1)
}

// usageEvent is the event OpenAI appends for include_usage: empty choices
// and the usage.
var usageEvent = regexp.MustCompile(`(?m)^data: \{[^\n]*"choices":\[\],"usage":\{[^\n]*\n\n`)

// TestChatStream checks over HTTP that a client that did not ask for
// usage gets the bytes the provider sends without include_usage: no usage
// chunk, and no "usage":null member in the other chunks.
func TestChatStream(t *testing.T) {
	stream := testdata(t, "chat_stream.sse")
	withoutUsage := usageEvent.ReplaceAll(stream, nil)
	if len(withoutUsage) != len(stream)-479 {
		t.Fatalf("test data: the usage event is %d bytes, want 479", len(stream)-len(withoutUsage))
	}
	if n := bytes.Count(withoutUsage, []byte(`,"usage":null}`)); n != 11 {
		t.Fatalf("test data: %d chunks with \"usage\":null, want 11", n)
	}
	withoutUsage = bytes.ReplaceAll(withoutUsage, []byte(`,"usage":null`), nil)
	tests := []struct {
		name string
		body string
		want []byte
	}{
		{"client did not ask for usage", chatBody("gpt-4o", `,"stream":true`), withoutUsage},
		{"client said include_usage false", chatBody("gpt-4o", `,"stream":true,"stream_options":{"include_usage":false}`), withoutUsage},
		{"client asked for usage", chatBody("gpt-4o", `,"stream":true,"stream_options":{"include_usage":true}`), stream},
	}
	h := newHarness(t, harnessOptions{})
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cust := newCustomer()
			h.grant(cust, "10")
			res, data := h.do(request{path: "/v1/chat/completions", customer: cust, body: tc.body})
			if res.StatusCode != 200 {
				t.Fatalf("status %d: %s", res.StatusCode, data)
			}
			if !bytes.Equal(data, tc.want) {
				t.Errorf("the client got %d bytes, want %d:\n%s", len(data), len(tc.want), data)
			}
			if ct := res.Header.Get("Content-Type"); ct != "text/event-stream" {
				t.Errorf("Content-Type %q", ct)
			}
			up := h.up.last(t)
			if !gjson.GetBytes(up.Body, "stream_options.include_usage").Bool() {
				t.Errorf("upstream body without stream_options.include_usage: %s", up.Body)
			}
			c := h.settled(cust, 1)[0]
			// 1117 input (1024 cached) and 9 output: 93×2.50 + 1024×1.25 + 9×10 per 1M.
			if c.Amount != -mustMicros(t, "0.001603") || c.InputTokens != 1117 || c.CachedInputTokens != 1024 || c.OutputTokens != 9 {
				t.Errorf("charge %+v", c)
			}
		})
	}
}

func TestAPIs(t *testing.T) {
	tests := []struct {
		name                   string
		path                   string
		body                   string
		response               string // testdata file the client must receive unchanged
		amount                 string
		in, cached, write, out int64
	}{
		{"anthropic messages", "/v1/messages",
			`{"model":"claude-sonnet-4-5","max_tokens":1024,"messages":[{"role":"user","content":"Hello, Claude"}]}`,
			"anthropic_message.json", "0.018066", 12012, 8000, 4000, 42},
		{"anthropic stream", "/v1/messages",
			`{"model":"claude-sonnet-4-5","max_tokens":1024,"stream":true,"messages":[{"role":"user","content":"Hello, Claude"}]}`,
			"anthropic_stream.sse", "0.002256", 2520, 2048, 0, 15},
		{"responses", "/v1/responses",
			`{"model":"gpt-4.1","input":"what is in this image?"}`,
			"responses_response.json", "0.000768", 36, 0, 0, 87},
		{"responses stream", "/v1/responses",
			`{"model":"gpt-4.1","stream":true,"input":"Tell me a three sentence bedtime story about a unicorn.","max_output_tokens":2000}`,
			"responses_stream.sse", "0.003992", 2036, 1920, 0, 350},
		{"embeddings", "/v1/embeddings",
			`{"model":"text-embedding-3-small","input":["The food was delicious and the waiter...","Hello"]}`,
			"embedding.json", "0.000001", 8, 0, 0, 0},
	}
	h := newHarness(t, harnessOptions{})
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cust := newCustomer()
			h.grant(cust, "10")
			res, data := h.do(request{path: tc.path, customer: cust, body: tc.body})
			if res.StatusCode != 200 {
				t.Fatalf("status %d: %s", res.StatusCode, data)
			}
			if !bytes.Equal(data, testdata(t, tc.response)) {
				t.Errorf("the response was changed on its way through")
			}
			c := h.settled(cust, 1)[0]
			if c.Amount != -mustMicros(t, tc.amount) || c.InputTokens != tc.in || c.CachedInputTokens != tc.cached ||
				c.CacheWriteInputTokens != tc.write || c.OutputTokens != tc.out {
				t.Errorf("charge %s in %d cached %d write %d out %d, want %s %d %d %d %d",
					-c.Amount, c.InputTokens, c.CachedInputTokens, c.CacheWriteInputTokens, c.OutputTokens,
					tc.amount, tc.in, tc.cached, tc.write, tc.out)
			}
		})
	}

	t.Run("route headers replace the client's credentials", func(t *testing.T) {
		cust := newCustomer()
		h.grant(cust, "1")
		h.do(request{path: "/v1/messages", customer: cust, body: tests[0].body, header: map[string]string{"X-Api-Key": clientKey}})
		up := h.up.last(t)
		if up.Header.Get("X-Api-Key") != anthropicKey || up.Header.Get("Authorization") != "" || up.Header.Get("Anthropic-Version") != "2023-06-01" {
			t.Errorf("upstream headers %v", up.Header)
		}
		h.settled(cust, 1)
	})
	t.Run("a route without headers forwards the client's credentials", func(t *testing.T) {
		cust := newCustomer()
		h.grant(cust, "1")
		h.do(request{path: "/v1/responses", customer: cust, body: tests[2].body})
		if got := h.up.last(t).Header.Get("Authorization"); got != "Bearer "+clientKey {
			t.Errorf("upstream Authorization %q", got)
		}
		h.settled(cust, 1)
	})
	t.Run("flat price for a GET", func(t *testing.T) {
		cust := newCustomer()
		h.grant(cust, "1")
		req, _ := http.NewRequest(http.MethodGet, h.proxy.URL+"/v1/models", nil)
		req.Header.Set("X-Tollgate-Customer", cust)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode != 200 {
			t.Fatalf("status %d", res.StatusCode)
		}
		if c := h.settled(cust, 1)[0]; c.Amount != -mustMicros(t, "0.001") {
			t.Errorf("charge %s", -c.Amount)
		}
	})
}

// TestUpstreamErrorsAreFree: a provider's refusal reaches the client as it
// was sent and costs nothing.
func TestUpstreamErrorsAreFree(t *testing.T) {
	tests := []struct {
		status int
		header map[string]string
		body   string
	}{
		{500, nil, `{"error":{"message":"The server had an error while processing your request.","type":"server_error","param":null,"code":null}}`},
		{429, map[string]string{"Retry-After": "20", "X-Ratelimit-Remaining-Requests": "0"},
			`{"error":{"message":"Rate limit reached for gpt-4o","type":"requests","param":null,"code":"rate_limit_exceeded"}}`},
		{400, nil, `{"error":{"message":"Invalid 'messages': empty array.","type":"invalid_request_error","param":"messages","code":"empty_array"}}`},
	}
	h := newHarness(t, harnessOptions{})
	for _, tc := range tests {
		t.Run(fmt.Sprint(tc.status), func(t *testing.T) {
			h.up.handle(func(w http.ResponseWriter, r *http.Request, body []byte) {
				for k, v := range tc.header {
					w.Header().Set(k, v)
				}
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(tc.status)
				io.WriteString(w, tc.body)
			})
			cust := newCustomer()
			h.grant(cust, "10")
			res, data := h.do(request{path: "/v1/chat/completions", customer: cust, body: chatBody("gpt-4o", `,"stream":true`)})
			if res.StatusCode != tc.status || string(data) != tc.body {
				t.Errorf("client got %d %s", res.StatusCode, data)
			}
			for k, v := range tc.header {
				if res.Header.Get(k) != v {
					t.Errorf("header %s = %q, want %q", k, res.Header.Get(k), v)
				}
			}
			if !requestID.MatchString(res.Header.Get("X-Tollgate-Request-Id")) || res.Header.Get("X-Tollgate-Reserved") != "" {
				t.Errorf("tollgate headers on an upstream error: %v", res.Header)
			}
			h.settled(cust, 0)
			if a := h.account(cust); a.Balance != mustMicros(t, "10") {
				t.Errorf("balance %s after an upstream %d", a.Balance, tc.status)
			}
		})
	}
}

func getURL(t testing.TB, url, token string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	data, _ := io.ReadAll(res.Body)
	return res, data
}

var _ = proxy.HeaderRequestID

// TestProtocolUpgrades: a WebSocket upgrade would become an unmetered
// tunnel and is refused; curl's h2c offer on plain HTTP is dropped and the
// request forwarded as HTTP/1.1.
func TestProtocolUpgrades(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	cust := newCustomer()
	h.grant(cust, "10")
	res, data := h.do(request{path: "/v1/chat/completions", customer: cust, body: chatBody("gpt-4o", ""),
		header: map[string]string{"Connection": "Upgrade", "Upgrade": "websocket"}})
	if res.StatusCode != 400 || decodeError(t, data).Error.Code != "invalid_request" {
		t.Errorf("websocket upgrade: %d %s", res.StatusCode, data)
	}
	if len(h.up.requests()) != 0 {
		t.Fatal("the upgrade was forwarded")
	}
	res, data = h.do(request{path: "/v1/chat/completions", customer: cust, body: chatBody("gpt-4o", ""),
		header: map[string]string{"Connection": "Upgrade, HTTP2-Settings", "Upgrade": "h2c", "HTTP2-Settings": "AAMAAABkAARAAAAAAAIAAAAA"}})
	if res.StatusCode != 200 {
		t.Fatalf("h2c offer: %d %s", res.StatusCode, data)
	}
	if up := h.up.last(t); up.Header.Get("Upgrade") != "" || up.Header.Get("Connection") != "" {
		t.Errorf("the upstream saw the upgrade offer: %v", up.Header)
	}
	h.settled(cust, 1)
}

// TestClientGoneBeforeResponse: a client that gives up while the provider
// is still thinking cancels the upstream request and pays the estimate of
// the prompt the provider had already received: never free.
func TestClientGoneBeforeResponse(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	arrived, cancelled := make(chan struct{}), make(chan struct{})
	h.up.handle(func(w http.ResponseWriter, r *http.Request, body []byte) {
		close(arrived)
		<-r.Context().Done()
		close(cancelled)
	})
	cust := newCustomer()
	h.grant(cust, "10")
	ctx, cancel := context.WithCancel(context.Background())
	req := h.chatRequest(ctx, cust, "")
	errc := make(chan error, 1)
	go func() {
		_, err := http.DefaultClient.Do(req)
		errc <- err
	}()
	<-arrived
	cancel()
	<-errc
	select {
	case <-cancelled:
	case <-time.After(2 * time.Second):
		t.Fatal("the upstream request was not cancelled")
	}
	c := waitSettled(t, h.store, cust, 1, 2*time.Second)[0]
	if c.InputTokens == 0 || c.OutputTokens != 0 || c.Amount >= 0 {
		t.Errorf("charge %+v", c)
	}
	h.eventually("tollgate_requests_total", map[string]string{"route": "/v1/chat/completions", "status": "499"}, 1)
}

// TestClientGoneBeforeRequestSent: a client that gives up while tollgate
// is still connecting to the provider (a blackholed address, a slow TLS
// handshake) is charged nothing: the provider never received the request,
// so this is an unreachable upstream, not an answer cut short.
func TestClientGoneBeforeRequestSent(t *testing.T) {
	dialing := make(chan struct{}, 1)
	tr := proxy.NewTransport()
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		dialing <- struct{}{}
		<-ctx.Done() // the SYN is never answered
		return nil, ctx.Err()
	}
	h := newHarness(t, harnessOptions{transport: tr})
	cust := newCustomer()
	h.grant(cust, "10")
	ctx, cancel := context.WithCancel(context.Background())
	req := h.chatRequest(ctx, cust, "")
	errc := make(chan error, 1)
	go func() {
		_, err := http.DefaultClient.Do(req)
		errc <- err
	}()
	<-dialing
	if a := h.account(cust); a.Reserved == 0 {
		t.Fatal("nothing reserved while connecting")
	}
	cancel()
	<-errc
	waitSettled(t, h.store, cust, 0, 3*time.Second)
	if a := h.account(cust); a.Balance != mustMicros(t, "10") {
		t.Errorf("balance %s, want 10: nothing reached the provider", a.Balance)
	}
	h.eventually("tollgate_requests_total", map[string]string{"route": "/v1/chat/completions", "status": "499"}, 1)
}

// TestUnaskedProtocolSwitch: an upstream that switches protocols although
// nobody asked is not tunnelled: the client gets 502 upstream_unavailable
// and nothing is charged.
func TestUnaskedProtocolSwitch(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	h.up.handle(func(w http.ResponseWriter, r *http.Request, body []byte) {
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		defer conn.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		brw.Flush()
		io.Copy(io.Discard, conn) // hold the connection until the proxy drops it
	})
	cust := newCustomer()
	h.grant(cust, "10")
	res, data := h.do(request{path: "/v1/chat/completions", customer: cust, body: chatBody("gpt-4o", "")})
	if res.StatusCode != 502 || decodeError(t, data).Error.Code != "upstream_unavailable" {
		t.Errorf("%d %s", res.StatusCode, data)
	}
	h.settled(cust, 0)
	if a := h.account(cust); a.Balance != mustMicros(t, "10") {
		t.Errorf("balance %s, want 10", a.Balance)
	}
	h.eventually("tollgate_requests_total", map[string]string{"route": "/v1/chat/completions", "status": "502"}, 1)
}
