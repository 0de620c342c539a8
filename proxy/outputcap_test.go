package proxy_test

import (
	"fmt"
	"io"
	"net/http"
	"sync"
	"testing"

	"github.com/tidwall/gjson"

	"github.com/tollgate-dev/tollgate/ledger"
	"github.com/tollgate-dev/tollgate/money"
)

// TestOutputCapEnforced: the route's max_output_tokens is a ceiling the
// upstream request carries, in the API's own field, so that the hold,
// which reserves it, bounds the output. A client asking for more is
// lowered, one asking for nothing gets the ceiling, one asking for less
// keeps its own; X-Tollgate-Output-Cap says when tollgate set the cap.
func TestOutputCapEnforced(t *testing.T) {
	tests := []struct {
		name, path, body string
		field            string // the upstream body's cap field
		want             int64  // its value upstream
		header           string // X-Tollgate-Output-Cap, "" when absent
	}{
		{"chat max_tokens above the route's 1000", "/v1/chat/completions", chatBody("gpt-4o", `,"max_tokens":100000`), "max_tokens", 1000, "1000"},
		{"chat max_completion_tokens above", "/v1/chat/completions", chatBody("gpt-4o", `,"max_completion_tokens":5000`), "max_completion_tokens", 1000, "1000"},
		{"chat without a cap", "/v1/chat/completions", chatBody("gpt-4o", ``), "max_completion_tokens", 1000, "1000"},
		{"chat stream above", "/v1/chat/completions", chatBody("gpt-4o", `,"stream":true,"max_tokens":100000`), "max_tokens", 1000, "1000"},
		{"chat under the cap", "/v1/chat/completions", chatBody("gpt-4o", `,"max_tokens":300`), "max_tokens", 300, ""},
		{"anthropic above the default 4096", "/v1/messages",
			`{"model":"claude-sonnet-4-5","max_tokens":64000,"messages":[{"role":"user","content":"Hello, Claude"}]}`, "max_tokens", 4096, "4096"},
		{"anthropic without max_tokens", "/v1/messages",
			`{"model":"claude-sonnet-4-5","messages":[{"role":"user","content":"Hello, Claude"}]}`, "max_tokens", 4096, "4096"},
		{"responses above", "/v1/responses", `{"model":"gpt-4.1","input":"hi","max_output_tokens":100000}`, "max_output_tokens", 4096, "4096"},
		{"responses without a cap", "/v1/responses", `{"model":"gpt-4.1","input":"hi"}`, "max_output_tokens", 4096, "4096"},
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
			up := h.up.last(t).Body
			if v := gjson.GetBytes(up, tc.field); v.Int() != tc.want || v.Type != gjson.Number {
				t.Errorf("upstream %s = %s, want %d: %s", tc.field, v.Raw, tc.want, up)
			}
			if got := res.Header.Get("X-Tollgate-Output-Cap"); got != tc.header {
				t.Errorf("X-Tollgate-Output-Cap %q, want %q", got, tc.header)
			}
			// The hold is what the cap sent allows, not the client's ask.
			if got, want := res.Header.Get("X-Tollgate-Reserved"), reservation(tc.body, tc.want); tc.path == "/v1/chat/completions" && got != want.String() {
				t.Errorf("X-Tollgate-Reserved %s, want %s", got, want)
			}
			h.settled(cust, 1)
		})
	}
	t.Run("the header is on the provider's refusal too", func(t *testing.T) {
		h.up.handle(func(w http.ResponseWriter, r *http.Request, body []byte) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadRequest)
			io.WriteString(w, `{"type":"error","error":{"type":"invalid_request_error","message":"max_tokens must be greater than thinking.budget_tokens"}}`)
		})
		defer h.up.handle(func(w http.ResponseWriter, r *http.Request, body []byte) { recorded(t, w, r, body) })
		cust := newCustomer()
		h.grant(cust, "10")
		res, _ := h.do(request{path: "/v1/messages", customer: cust,
			body: `{"model":"claude-sonnet-4-5","max_tokens":20000,"thinking":{"type":"enabled","budget_tokens":10000},"messages":[]}`})
		if res.StatusCode != 400 || res.Header.Get("X-Tollgate-Output-Cap") != "4096" {
			t.Errorf("status %d, X-Tollgate-Output-Cap %q", res.StatusCode, res.Header.Get("X-Tollgate-Output-Cap"))
		}
	})
}

// capHonouringUpstream answers chat completions like a provider that
// produces as many output tokens as the request's cap allows (a model
// asked for a long answer): completion_tokens is max_completion_tokens or
// max_tokens, or modelMax without either.
func capHonouringUpstream(t *testing.T, w http.ResponseWriter, body []byte) {
	const modelMax = 100_000
	out := int64(modelMax)
	for _, f := range []string{"max_completion_tokens", "max_tokens"} {
		if v := gjson.GetBytes(body, f); v.Exists() {
			out = min(out, v.Int())
		}
	}
	usage := fmt.Sprintf(`{"prompt_tokens":20,"completion_tokens":%d,"total_tokens":%d}`, out, out+20)
	if gjson.GetBytes(body, "stream").Bool() {
		writeSSE(w, []byte(`data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[{"index":0,"delta":{"content":"long"},"finish_reason":null}]}`+"\n\n"+
			`data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[],"usage":`+usage+"}\n\ndata: [DONE]\n\n"), 0)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, `{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-4o","choices":[{"index":0,"message":{"role":"assistant","content":"long"},"finish_reason":"length"}],"usage":%s}`, usage)
}

// TestOutputCapBoundsSpend is the overspend of issue 8: concurrent
// requests asking for far more output than the route's cap, against a
// small balance, at a provider that produces what it is allowed. With the
// client's max_tokens forwarded unchanged, each was charged 100,000
// output tokens for a hold of 1,000 and the balance went deep below zero;
// with the cap enforced upstream, no charge exceeds its hold and the
// balance stays at or above zero.
func TestOutputCapBoundsSpend(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	h.up.handle(func(w http.ResponseWriter, r *http.Request, body []byte) { capHonouringUpstream(t, w, body) })
	cust := newCustomer()
	h.grant(cust, "0.05")
	var wg sync.WaitGroup
	var mu sync.Mutex
	admitted := 0
	for i := range 20 {
		wg.Go(func() {
			extra := `,"max_tokens":100000`
			switch i % 4 {
			case 1:
				extra = `,"max_completion_tokens":100000`
			case 2:
				extra = `,"stream":true,"max_tokens":100000`
			case 3:
				extra = `` // no cap: the model's maximum
			}
			res, data := h.do(request{path: "/v1/chat/completions", customer: cust, body: chatBody("gpt-4o", extra)})
			switch res.StatusCode {
			case 200:
				mu.Lock()
				admitted++
				mu.Unlock()
			case 402:
			default:
				t.Errorf("status %d: %s", res.StatusCode, data)
			}
		})
	}
	wg.Wait()
	if admitted == 0 {
		t.Fatal("no request was admitted; the test proves nothing")
	}
	charges := h.settled(cust, admitted)
	for _, c := range charges {
		if c.OutputTokens > 1000 {
			t.Errorf("charged %d output tokens, above the route's cap of 1000", c.OutputTokens)
		}
	}
	a := h.account(cust)
	if a.Balance < 0 {
		t.Errorf("balance %s after %d admitted requests: the cap was not enforced upstream", a.Balance, admitted)
	}
	var sum money.Micros
	p, err := h.store.Entries(t.Context(), cust, "", ledger.MaxPageSize)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range p.Entries {
		sum += e.Amount
	}
	if sum != a.Balance {
		t.Errorf("entries sum to %s, balance %s", sum, a.Balance)
	}
	for _, r := range h.up.requests() {
		mt, mct := gjson.GetBytes(r.Body, "max_tokens"), gjson.GetBytes(r.Body, "max_completion_tokens")
		if !mt.Exists() && !mct.Exists() || mt.Int() > 1000 || mct.Int() > 1000 {
			t.Errorf("upstream received caps %s and %s: %s", mt.Raw, mct.Raw, r.Body)
		}
	}
}
