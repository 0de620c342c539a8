package proxy_test

import (
	"bytes"
	"net/http"
	"strings"
	"testing"
)

// compatConfig adds OpenAI-compatible routes to testConfig: one that
// leaves stream_options alone (an upstream that rejects them) and Azure
// OpenAI deployments priced by the deployment the path names.
const compatConfig = testConfig + `
  - path: /groq/openai/v1/chat/completions
    api: openai.chat
    upstream: UPSTREAM
    headers: {Authorization: "Bearer gsk-upstream"}
    stream_usage: leave
    prices:
      llama-3.3-70b-versatile: {input: "0.59", output: "0.79"}
  - path: /openai/deployments/
    api: openai.chat
    upstream: UPSTREAM
    headers: {api-key: "azure-upstream"}
    model_from: deployment
    prices:
      prod-4o: {input: "2.50", output: "10"}
`

// TestStreamUsageLeave: on a stream_usage: leave route the body goes
// upstream as the client sent it, the client gets every byte, and the
// stream is charged by the usage it reports (Groq's x_groq.usage), or
// else estimated from its text and counted as estimated.
func TestStreamUsageLeave(t *testing.T) {
	h := newHarness(t, harnessOptions{yaml: compatConfig})
	chunk := func(content, extra string) string {
		return `data: {"id":"c1","object":"chat.completion.chunk","model":"llama-3.3-70b-versatile","choices":[{"index":0,"delta":{"content":"` + content + `"},"finish_reason":null}]` + extra + "}\n\n"
	}
	withUsage := chunk("Hello", "") + chunk(" there", `,"x_groq":{"id":"req_1","usage":{"prompt_tokens":40,"completion_tokens":2,"total_tokens":42}}`) + "data: [DONE]\n\n"
	noUsage := chunk("Hello", "") + chunk(" there, sixteen", "") + "data: [DONE]\n\n"
	body := `{"model":"llama-3.3-70b-versatile","stream":true,"messages":[{"role":"user","content":"hi"}]}`
	tests := []struct {
		name, stream string
		in, out      int64
		estimated    float64
	}{
		{"x_groq usage", withUsage, 40, 2, 0},
		// "Hello" and " there, sixteen": 20 bytes, 5 tokens at 4 bytes a token.
		{"no usage", noUsage, -1, 5, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h.up.handle(func(w http.ResponseWriter, r *http.Request, b []byte) {
				writeSSE(w, []byte(tc.stream), 0)
			})
			cust := newCustomer()
			h.grant(cust, "1")
			before := h.metric("tollgate_usage_estimated_total", map[string]string{"route": "/groq/openai/v1/chat/completions"})
			res, data := h.do(request{path: "/groq/openai/v1/chat/completions", customer: cust, body: body})
			if res.StatusCode != 200 || string(data) != tc.stream {
				t.Fatalf("status %d, client got %q", res.StatusCode, data)
			}
			up := h.up.last(t)
			if bytes.Contains(up.Body, []byte("stream_options")) {
				t.Errorf("upstream body %s carries stream_options", up.Body)
			}
			c := h.settled(cust, 1)[0]
			if (tc.in >= 0 && c.InputTokens != tc.in) || c.OutputTokens != tc.out {
				t.Errorf("charge %+v, want %d input and %d output tokens", c, tc.in, tc.out)
			}
			// The counter moves a moment after the ledger entry is written.
			h.eventually("tollgate_usage_estimated_total", map[string]string{"route": "/groq/openai/v1/chat/completions"}, before+tc.estimated)
		})
	}
}

// TestAzureDeploymentPricing: with model_from: deployment the request is
// priced by the deployment its path names, whatever the body's "model",
// forwarded with its api-version query and the route's api-key; a path
// without a deployment is refused.
func TestAzureDeploymentPricing(t *testing.T) {
	h := newHarness(t, harnessOptions{yaml: compatConfig})
	h.up.handle(func(w http.ResponseWriter, r *http.Request, b []byte) {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"id":"chatcmpl-1","object":"chat.completion","model":"gpt-4o-2024-11-20","choices":[{"index":0,"message":{"role":"assistant","content":"Hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":100,"completion_tokens":10,"total_tokens":110}}`))
	})
	cust := newCustomer()
	h.grant(cust, "1")
	// The body names a cheap model that is not priced here: the deployment decides.
	res, data := h.do(request{path: "/openai/deployments/prod-4o/chat/completions?api-version=2024-10-21", customer: cust,
		body: `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`, header: map[string]string{"api-key": "client-key"}})
	if res.StatusCode != 200 {
		t.Fatalf("status %d: %s", res.StatusCode, data)
	}
	up := h.up.last(t)
	if up.RawQuery != "api-version=2024-10-21" || up.Header.Get("Api-Key") != "azure-upstream" {
		t.Errorf("upstream query %q, api-key %q", up.RawQuery, up.Header.Get("Api-Key"))
	}
	// 100 × 2.50 + 10 × 10 per 1M = 0.00035.
	if c := h.settled(cust, 1)[0]; c.Model != "prod-4o" || (-c.Amount).String() != "0.000350" {
		t.Errorf("charge %+v", c)
	}

	res, data = h.do(request{path: "/openai/deployments/", customer: cust, body: `{"model":"gpt-4o","messages":[]}`})
	if e := decodeError(t, data); res.StatusCode != 400 || e.Error.Code != "invalid_request" || !strings.Contains(e.Error.Message, "names no deployment") {
		t.Errorf("status %d: %s", res.StatusCode, data)
	}
}
