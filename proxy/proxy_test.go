package proxy_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
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

func TestChatStream(t *testing.T) {
	stream := testdata(t, "chat_stream.sse")
	withoutUsage := usageEvent.ReplaceAll(stream, nil)
	if len(withoutUsage) != len(stream)-479 {
		t.Fatalf("test data: the usage event is %d bytes, want 479", len(stream)-len(withoutUsage))
	}
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

// TestStreamIsNotBuffered: each event reaches the client while the
// upstream is still writing the next.
func TestStreamIsNotBuffered(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	release := make(chan struct{})
	h.up.handle(func(w http.ResponseWriter, r *http.Request, body []byte) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}]}\n\n")
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		io.WriteString(w, "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":2,\"total_tokens\":12}}\n\ndata: [DONE]\n\n")
	})
	cust := newCustomer()
	h.grant(cust, "10")
	req, _ := http.NewRequest(http.MethodPost, h.proxy.URL+"/v1/chat/completions", strings.NewReader(chatBody("gpt-4o", `,"stream":true`)))
	req.Header.Set("X-Tollgate-Customer", cust)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	first := make([]byte, 256)
	n, err := res.Body.Read(first)
	if err != nil || !strings.Contains(string(first[:n]), `"Hel"`) {
		t.Fatalf("first event: %q %v", first[:n], err)
	}
	close(release)
	rest, _ := io.ReadAll(res.Body)
	if want := "data: [DONE]\n\n"; string(rest) != want {
		t.Errorf("rest %q, want %q (the usage chunk removed)", rest, want)
	}
	c := h.settled(cust, 1)[0]
	if c.InputTokens != 10 || c.OutputTokens != 2 {
		t.Errorf("charge %+v", c)
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

// TestCompressedUpstream: a provider that gzips its answers is decoded
// before the meter, so usage is read exactly and the client gets plain
// JSON.
func TestCompressedUpstream(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	h.up.handle(func(w http.ResponseWriter, r *http.Request, body []byte) {
		if !strings.Contains(r.Header.Get("Accept-Encoding"), "gzip") {
			recorded(t, w, r, body)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Encoding", "gzip")
		zw := gzip.NewWriter(w)
		zw.Write(testdata(t, "chat_completion.json"))
		zw.Close()
	})
	cust := newCustomer()
	h.grant(cust, "10")
	tr := &http.Transport{DisableCompression: true}
	defer tr.CloseIdleConnections()
	req, _ := http.NewRequest(http.MethodPost, h.proxy.URL+"/v1/chat/completions", strings.NewReader(chatBody("gpt-4o", "")))
	req.Header.Set("X-Tollgate-Customer", cust)
	req.Header.Set("Accept-Encoding", "gzip")
	res, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.Header.Get("Content-Encoding") != "" || !bytes.Equal(data, testdata(t, "chat_completion.json")) {
		t.Errorf("client got Content-Encoding %q and %d bytes", res.Header.Get("Content-Encoding"), len(data))
	}
	if c := h.settled(cust, 1)[0]; c.Amount != -mustMicros(t, "0.003253") {
		t.Errorf("charge %s", -c.Amount)
	}
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

// TestClientDisconnectMidStream: a client that goes away mid-stream
// cancels the upstream request and is charged, within 2 s, for what was
// produced.
func TestClientDisconnectMidStream(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	cancelled := make(chan time.Time, 1)
	h.up.handle(func(w http.ResponseWriter, r *http.Request, body []byte) {
		w.Header().Set("Content-Type", "text/event-stream")
		for _, word := range []string{"Once", " upon", " a", " time"} {
			fmt.Fprintf(w, "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":%q}}]}\n\n", word)
		}
		w.(http.Flusher).Flush()
		<-r.Context().Done()
		cancelled <- time.Now()
	})
	cust := newCustomer()
	h.grant(cust, "10")
	ctx, cancel := context.WithCancel(context.Background())
	req := h.chatRequest(ctx, cust, `,"stream":true`)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	if _, err := io.ReadAtLeast(res.Body, buf, 10); err != nil {
		t.Fatal(err)
	}
	gone := time.Now()
	cancel()
	res.Body.Close()

	select {
	case at := <-cancelled:
		if d := at.Sub(gone); d > 2*time.Second {
			t.Errorf("upstream cancelled %s after the client left", d)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("the upstream request was not cancelled within 2s of the client leaving")
	}
	c := waitSettled(t, h.store, cust, 1, 2*time.Second)[0]
	// No usage arrived: input from the request estimate, output from the
	// 4 streamed text values ("Once upon a time": 16 bytes, 4 values).
	if c.OutputTokens != 4 || c.InputTokens == 0 || c.Amount >= 0 {
		t.Errorf("charge %+v", c)
	}
	h.eventually("tollgate_usage_estimated_total", map[string]string{"route": "/v1/chat/completions"}, 1)
	h.eventually("tollgate_open_streams", nil, 0)
}

// TestUpstreamCutMidStream: a provider that drops the connection mid-stream
// still costs what it produced, and the client sees the stream end in an
// error rather than a clean end.
func TestUpstreamCutMidStream(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	h.up.handle(func(w http.ResponseWriter, r *http.Request, body []byte) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello there\"}}]}\n\n")
		w.(http.Flusher).Flush()
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			conn.Close()
		}
	})
	cust := newCustomer()
	h.grant(cust, "10")
	req, _ := http.NewRequest(http.MethodPost, h.proxy.URL+"/v1/chat/completions", strings.NewReader(chatBody("gpt-4o", `,"stream":true`)))
	req.Header.Set("X-Tollgate-Customer", cust)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.ReadAll(res.Body)
	res.Body.Close()
	if err == nil {
		t.Error("the client saw a clean end of a stream the upstream cut")
	}
	c := h.settled(cust, 1)[0]
	if c.OutputTokens != 3 || c.Amount >= 0 { // "Hello there": 11 bytes → 3 tokens
		t.Errorf("charge %+v", c)
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

// TestClientGoneBeforeUsageChunk: a client that leaves right after the
// last content it wanted is still charged the usage chunk that follows,
// reasoning tokens included, because the upstream request outlives the
// client by clientGoneGrace.
func TestClientGoneBeforeUsageChunk(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	h.up.handle(func(w http.ResponseWriter, r *http.Request, body []byte) {
		w.Header().Set("Content-Type", "text/event-stream")
		for _, word := range []string{"Forty", "-two"} {
			fmt.Fprintf(w, "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":%q}}]}\n\n", word)
		}
		fmt.Fprint(w, "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n")
		w.(http.Flusher).Flush()
		time.Sleep(300 * time.Millisecond) // the client leaves meanwhile
		fmt.Fprint(w, `data: {"choices":[],"usage":{"prompt_tokens":20,"completion_tokens":1502,"total_tokens":1522,"completion_tokens_details":{"reasoning_tokens":1500}}}`+"\n\ndata: [DONE]\n\n")
		w.(http.Flusher).Flush()
	})
	cust := newCustomer()
	h.grant(cust, "10")
	ctx, cancel := context.WithCancel(context.Background())
	req := h.chatRequest(ctx, cust, `,"stream":true`)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var seen []byte
	buf := make([]byte, 256)
	for !strings.Contains(string(seen), "finish_reason") {
		n, err := res.Body.Read(buf)
		seen = append(seen, buf[:n]...)
		if err != nil {
			t.Fatalf("stream ended before finish_reason: %v", err)
		}
	}
	cancel()
	res.Body.Close()

	c := waitSettled(t, h.store, cust, 1, 2*time.Second)[0]
	// gpt-4o: 20 input × 2.50 + 1502 output × 10 per 1M = 0.015070.
	if c.InputTokens != 20 || c.OutputTokens != 1502 || c.Amount != -mustMicros(t, "0.015070") {
		t.Errorf("charge %+v, want the upstream's usage: 20 input, 1502 output, -0.015070", c)
	}
	if got := h.metric("tollgate_usage_estimated_total", map[string]string{"route": "/v1/chat/completions"}); got != 0 {
		t.Errorf("tollgate_usage_estimated_total = %v, want 0: the usage arrived", got)
	}
}

// TestNonCanonicalPaths: a path with dot segments, empty segments or
// backslashes, literal or percent-encoded, is refused before anything is
// reserved or forwarded. Providers' front ends normalise such paths
// (RFC 3986 §5.2.4), so /v1/files/../chat/completions would select the
// cheap prefix route here and still reach chat completions upstream.
func TestNonCanonicalPaths(t *testing.T) {
	h := newHarness(t, harnessOptions{yaml: testConfig + `
  - path: /v1/files/
    api: flat
    upstream: UPSTREAM
    prices:
      "*": {per_request: "0.000001"}
`})
	h.up.handle(func(w http.ResponseWriter, r *http.Request, body []byte) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"object":"file"}`)
	})
	cust := newCustomer()
	h.grant(cust, "10")
	body := chatBody("gpt-4o", "")
	for _, path := range []string{
		"/v1/files/../chat/completions",
		"/v1/files/%2e%2e/chat/completions",
		"/v1/files/.%2E/chat/completions",
		"/v1/files/..%2Fchat%2Fcompletions",
		"/v1/files/x%2F..%2F..%2Fchat%2Fcompletions",
		"/v1/files/..%5Cchat%5Ccompletions",
		"/v1/files/./file-abc",
		"/v1/files//file-abc",
		"/v1/files/file-abc/.",
	} {
		t.Run(path, func(t *testing.T) {
			res, data := h.do(request{path: path, customer: cust, body: body})
			if res.StatusCode != 404 {
				t.Fatalf("%d %s", res.StatusCode, data)
			}
			decoded, _ := url.PathUnescape(path)
			want := "no route for POST " + decoded + `: tollgate forwards only paths without "." or ".." segments, empty segments or backslashes`
			if e := decodeError(t, data); e.Error.Code != "route_not_found" || e.Error.Message != want {
				t.Errorf("got %+v, want route_not_found: %s", e.Error, want)
			}
		})
	}
	if n := len(h.up.requests()); n != 0 {
		t.Errorf("the upstream received %d requests for non-canonical paths", n)
	}
	h.settled(cust, 0)

	res, data := h.do(request{path: "/v1/files/file-abc/content", customer: cust, body: body})
	if res.StatusCode != 200 {
		t.Fatalf("a canonical path under a prefix route: %d %s", res.StatusCode, data)
	}
	if got := h.up.last(t).Path; got != "/v1/files/file-abc/content" {
		t.Errorf("upstream path %q", got)
	}
	h.settled(cust, 1)
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

// TestClientGoneWhileUpstreamStreams: when the client leaves while the
// provider keeps sending, writing to the client fails and the rest of the
// body is read in the background for at most clientGoneGrace: a usage
// chunk that arrives meanwhile is charged exactly; a provider that stops
// sending without one is cancelled and the stream charged its estimate,
// all within DESIGN's 2 s.
func TestClientGoneWhileUpstreamStreams(t *testing.T) {
	tests := []struct {
		name  string
		usage bool // the provider ends with the usage chunk 300ms after the client left
	}{
		{"usage arrives after the client left", true},
		{"provider hangs after the client left", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, harnessOptions{})
			left := make(chan time.Time, 1)
			cancelled := make(chan time.Time, 1)
			h.up.handle(func(w http.ResponseWriter, r *http.Request, body []byte) {
				w.Header().Set("Content-Type", "text/event-stream")
				fl := w.(http.Flusher)
				word := func() {
					io.WriteString(w, "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"word \"}}]}\n\n")
					fl.Flush()
				}
				word()
				var stop <-chan time.Time
				for {
					select {
					case at := <-left:
						if tc.usage {
							stop = time.After(300*time.Millisecond - time.Since(at))
						} else {
							stop = time.After(100 * time.Millisecond)
						}
					case <-stop:
						if tc.usage {
							io.WriteString(w, `data: {"choices":[],"usage":{"prompt_tokens":20,"completion_tokens":700,"total_tokens":720}}`+"\n\ndata: [DONE]\n\n")
							return
						}
						<-r.Context().Done()
						cancelled <- time.Now()
						return
					case <-r.Context().Done():
						cancelled <- time.Now()
						return
					case <-time.After(2 * time.Millisecond):
						word()
					}
				}
			})
			cust := newCustomer()
			h.grant(cust, "10")
			ctx, cancel := context.WithCancel(context.Background())
			req := h.chatRequest(ctx, cust, `,"stream":true`)
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadAtLeast(res.Body, make([]byte, 64), 10); err != nil {
				t.Fatal(err)
			}
			gone := time.Now()
			cancel()
			res.Body.Close()
			left <- gone

			c := waitSettled(t, h.store, cust, 1, 2*time.Second)[0]
			if d := time.Since(gone); d > 2*time.Second {
				t.Errorf("settled %s after the client left", d)
			}
			if tc.usage {
				// 20 input × 2.50 + 700 output × 10 per 1M.
				if c.InputTokens != 20 || c.OutputTokens != 700 || c.Amount != -mustMicros(t, "0.007050") {
					t.Errorf("charge %+v, want the provider's usage", c)
				}
			} else {
				select {
				case at := <-cancelled:
					if d := at.Sub(gone); d > 2*time.Second {
						t.Errorf("the upstream request was cancelled %s after the client left", d)
					}
				case <-time.After(2 * time.Second):
					t.Fatal("the upstream request was not cancelled")
				}
				if c.OutputTokens == 0 || c.InputTokens == 0 || c.Amount >= 0 {
					t.Errorf("charge %+v, want the estimate of what was streamed", c)
				}
				h.eventually("tollgate_usage_estimated_total", map[string]string{"route": "/v1/chat/completions"}, 1)
			}
			h.eventually("tollgate_open_streams", nil, 0)
			h.eventually("tollgate_requests_total", map[string]string{"route": "/v1/chat/completions", "status": "499"}, 1)
			dctx, dcancel := context.WithTimeout(context.Background(), time.Second)
			defer dcancel()
			if err := h.srv.Drain(dctx); err != nil {
				t.Errorf("drain after the stream settled: %v", err)
			}
		})
	}
}

// TestTrailingSlashAlias: with a catch-all prefix route, a metered exact
// path written with a trailing slash would be priced by the catch-all,
// while upstreams with lenient routing (Express, Fiber) answer it as the
// exact path. It is refused; other paths under the prefix are not.
func TestTrailingSlashAlias(t *testing.T) {
	h := newHarness(t, harnessOptions{yaml: testConfig + `
  - path: /v1/
    api: flat
    upstream: UPSTREAM
    prices:
      "*": {per_request: "0.000001"}
`})
	h.up.handle(func(w http.ResponseWriter, r *http.Request, body []byte) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"object":"list","data":[]}`)
	})
	cust := newCustomer()
	h.grant(cust, "10")
	res, data := h.do(request{path: "/v1/chat/completions/", customer: cust, body: chatBody("gpt-4o", "")})
	if res.StatusCode != 404 {
		t.Fatalf("%d %s", res.StatusCode, data)
	}
	want := "no route for POST /v1/chat/completions/: it would be priced by the route /v1/ while it names the route /v1/chat/completions; send it without the trailing slash"
	if e := decodeError(t, data); e.Error.Code != "route_not_found" || e.Error.Message != want {
		t.Errorf("got %+v, want route_not_found: %s", e.Error, want)
	}
	if n := len(h.up.requests()); n != 0 {
		t.Errorf("the upstream received %d requests", n)
	}
	for _, path := range []string{"/v1/batches/", "/v1/files/file-abc/content"} {
		if res, data := h.do(request{path: path, customer: cust, body: "{}"}); res.StatusCode != 200 {
			t.Errorf("%s under the catch-all: %d %s", path, res.StatusCode, data)
		}
	}
	h.settled(cust, 2)
}

// TestUnreadableEncoding: an answer compressed in an encoding the meter
// cannot read (tollgate asked for identity) reaches the client untouched
// and is charged its reservation, the most the customer agreed to pay.
func TestUnreadableEncoding(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	compressed := []byte("\x1b\x2e\x00\xf8\x8d\xd4\x6d\x2b\x05not-really-brotli")
	h.up.handle(func(w http.ResponseWriter, r *http.Request, body []byte) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Encoding", "br")
		w.Write(compressed)
	})
	cust := newCustomer()
	h.grant(cust, "10")
	body := chatBody("gpt-4o", `,"max_tokens":300`)
	res, data := h.do(request{path: "/v1/chat/completions", customer: cust, body: body})
	if res.StatusCode != 200 || res.Header.Get("Content-Encoding") != "br" || !bytes.Equal(data, compressed) {
		t.Fatalf("%d Content-Encoding %q, %q", res.StatusCode, res.Header.Get("Content-Encoding"), data)
	}
	reserved := reservation(body, 300)
	if got := res.Header.Get("X-Tollgate-Reserved"); got != reserved.String() {
		t.Errorf("X-Tollgate-Reserved %s, want %s", got, reserved)
	}
	if c := h.settled(cust, 1)[0]; c.Amount != -reserved {
		t.Errorf("charged %s, want the reservation %s", -c.Amount, reserved)
	}
	h.eventually("tollgate_usage_estimated_total", map[string]string{"route": "/v1/chat/completions"}, 1)
	h.eventually("tollgate_open_streams", nil, 0)
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

// TestLargeEventFiltered: with the usage chunk filtered out, an event
// larger than one copy buffer, arriving in pieces, is held until it ends
// and then reaches the client whole and unchanged.
func TestLargeEventFiltered(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	big := "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"" + strings.Repeat("abcdefgh", 6000) + "\"}}]}\n\n"
	usage := "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":12000,\"total_tokens\":12010}}\n\n"
	h.up.handle(func(w http.ResponseWriter, r *http.Request, body []byte) {
		w.Header().Set("Content-Type", "text/event-stream")
		fl := w.(http.Flusher)
		stream := big + usage + "data: [DONE]\n\n"
		for len(stream) > 0 {
			n := min(4096, len(stream))
			io.WriteString(w, stream[:n])
			fl.Flush()
			stream = stream[n:]
		}
	})
	cust := newCustomer()
	h.grant(cust, "10")
	res, data := h.do(request{path: "/v1/chat/completions", customer: cust, body: chatBody("gpt-4o", `,"stream":true,"max_tokens":1000`)})
	if res.StatusCode != 200 {
		t.Fatalf("%d %s", res.StatusCode, data)
	}
	if want := big + "data: [DONE]\n\n"; string(data) != want {
		t.Errorf("the client got %d bytes, want %d (the stream without the usage chunk)", len(data), len(want))
	}
	if c := h.settled(cust, 1)[0]; c.InputTokens != 10 || c.OutputTokens != 12000 {
		t.Errorf("charge %+v", c)
	}
}
