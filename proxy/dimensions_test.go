package proxy_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/tollgate-dev/tollgate/money"
)

// An advisor response as Anthropic documents it: the executor's steps and
// the advisor's in usage.iterations, each with its model; the top level
// counts the executor only.
const advisorResponse = `{"id":"msg_01","type":"message","role":"assistant","model":"claude-haiku-4-5-20251001",` +
	`"content":[{"type":"text","text":"The totals match."}],"stop_reason":"end_turn","stop_sequence":null,` +
	`"usage":{"input_tokens":3100,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":380,"iterations":[` +
	`{"type":"message","model":"claude-haiku-4-5-20251001","input_tokens":1200,"output_tokens":80,"cache_read_input_tokens":0,"cache_creation_input_tokens":0},` +
	`{"type":"advisor_message","model":"claude-opus-4-6","input_tokens":1300,"output_tokens":600,"cache_read_input_tokens":0,"cache_creation_input_tokens":0},` +
	`{"type":"message","model":"claude-haiku-4-5-20251001","input_tokens":1900,"output_tokens":300,"cache_read_input_tokens":0,"cache_creation_input_tokens":0}]}}`

// TestIterationsChargedAtTheirModels sends an advisor request through the
// proxy: the hold covers the advisor's calls at its model's rates, and
// the charge prices each iteration at its own model's, recording their
// summed tokens. Charging the top level alone at the executor's rates
// would take 0.005000 instead of 0.026500.
func TestIterationsChargedAtTheirModels(t *testing.T) {
	h := newHarness(t, harnessOptions{yaml: configWith(t,
		`      claude-sonnet-4-5: {input: "3", cached_input: "0.30", cache_write_input: "3.75", output: "15"}`,
		`      claude-sonnet-4-5: {input: "3", cached_input: "0.30", cache_write_input: "3.75", output: "15"}
      claude-haiku-4-5: {input: "1", cached_input: "0.10", cache_write_input: "1.25", output: "5"}
      claude-opus-4-6: {input: "5", cached_input: "0.50", cache_write_input: "6.25", output: "25"}`)})
	h.up.handle(func(w http.ResponseWriter, r *http.Request, body []byte) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(advisorResponse))
	})
	cust := newCustomer()
	h.grant(cust, "10")
	body := `{"model":"claude-haiku-4-5","max_tokens":500,"messages":[{"role":"user","content":"Check Q3."}],` +
		`"tools":[{"type":"advisor_20260301","name":"advisor","model":"claude-opus-4-6","max_uses":2,"max_tokens":2000}]}`
	res, data := h.do(request{path: "/v1/messages", customer: cust, body: body})
	if res.StatusCode != 200 {
		t.Fatalf("status %d: %s", res.StatusCode, data)
	}
	c := h.settled(cust, 1)[0]
	// haiku: 3,100 in × 1 + 380 out × 5 = 5,000; opus: 1,300 × 5 + 600 × 25 = 21,500.
	if c.Amount != -mustMicros(t, "0.026500") || c.InputTokens != 4400 || c.OutputTokens != 980 || c.Model != "claude-haiku-4-5" {
		t.Errorf("charge %+v, want 0.026500 for 4400 in and 980 out", c)
	}
	if reserved := mustMicros(t, res.Header.Get("X-Tollgate-Reserved")); reserved < -c.Amount {
		t.Errorf("reserved %s, less than the charge %s", reserved, -c.Amount)
	}

	// An advisor model the route does not price is refused before any
	// money is spent, like the request's own model.
	res, data = h.do(request{path: "/v1/messages", customer: cust, body: strings.Replace(body, "claude-opus-4-6", "claude-opus-9", 1)})
	if e := decodeAnthropicError(t, data); res.StatusCode != 400 || e.Error.Code != "model_not_priced" || !strings.Contains(e.Error.Message, "claude-opus-9") {
		t.Errorf("unpriced advisor: %d %s", res.StatusCode, data)
	}
}

// TestServerToolsHeld checks that a web search request is held for its
// searches (max_uses × the route's allowance, each result re-read by the
// later steps) and fees, so that a response that used them all stays
// within the hold.
func TestServerToolsHeld(t *testing.T) {
	h := newHarness(t, harnessOptions{yaml: configWith(t,
		`      claude-sonnet-4-5: {input: "3", cached_input: "0.30", cache_write_input: "3.75", output: "15"}`,
		`      claude-sonnet-4-5: {input: "3", cached_input: "0.30", cache_write_input: "3.75", output: "15", tools: {web_search: "0.01"}}
    server_tools: {web_search: {input_tokens: 20000}}`)})
	// Two searches of 20,000 tokens each: the second step read the
	// prompt and the first result, the third both results.
	h.up.handle(func(w http.ResponseWriter, r *http.Request, body []byte) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"id":"msg_02","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[{"type":"text","text":"Sunny."}],` +
			`"stop_reason":"end_turn","usage":{"input_tokens":61200,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":300,` +
			`"server_tool_use":{"web_search_requests":2,"web_fetch_requests":0}}}`))
	})
	cust := newCustomer()
	h.grant(cust, "10")
	body := `{"model":"claude-sonnet-4-5","max_tokens":300,"messages":[{"role":"user","content":"Weather?"}],` +
		`"tools":[{"type":"web_search_20250305","name":"web_search","max_uses":2}]}`
	res, data := h.do(request{path: "/v1/messages", customer: cust, body: body})
	if res.StatusCode != 200 {
		t.Fatalf("status %d: %s", res.StatusCode, data)
	}
	c := h.settled(cust, 1)[0]
	// 61,200 × 3 = 183,600; 300 × 15 = 4,500; 2 searches × 10,000.
	want := money.Micros(61_200*3 + 300*15 + 2*10_000)
	if c.Amount != -want || c.WebSearchCalls != 2 {
		t.Errorf("charge %+v, want %s with 2 searches", c, want)
	}
	reserved := mustMicros(t, res.Header.Get("X-Tollgate-Reserved"))
	if reserved < want {
		t.Errorf("reserved %s, less than the charge %s", reserved, want)
	}
}
