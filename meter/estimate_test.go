package meter

import (
	"errors"
	"testing"

	"github.com/tollgate-dev/tollgate/money"
	"github.com/tollgate-dev/tollgate/usage"
)

func TestEstimate(t *testing.T) {
	p := Price{Rates: Rates{Input: 1_000_000, CachedInput: 500_000, CacheWriteInput: 1_000_000, Output: 2_000_000}}
	// in is the input rule for a body without images or tools.
	in := func(body string) int64 { return int64(len(body)) + RequestOverheadTokens }
	const (
		capped   = `{"model":"m","max_tokens":100,"messages":[]}`
		over     = `{"model":"m","max_tokens":99999,"messages":[]}`
		plain    = `{"model":"m","messages":[]}`
		bigCap   = `{"model":"m","max_tokens":100000,"messages":[]}`
		withN    = `{"model":"m","n":3,"messages":[]}`
		claude   = `{"model":"m","max_tokens":10,"messages":[]}`
		embed    = `{"model":"m","input":"x"}`
		dalle    = `{"model":"dall-e-2","n":2,"size":"256x256"}`
		dearCach = 1_250_000
	)
	tests := []struct {
		name     string
		api      API
		body     string
		price    Price
		routeCap int64
		want     Usage
		cost     int64 // micro-credits: the rates are 1 and 2 per token
	}{
		// Request cap under the route cap: in×1 + 100×2.
		{"request cap", OpenAIChat, capped, p, 4096, Usage{Tokens: usage.Tokens{InputTokens: in(capped), OutputTokens: 100}}, in(capped) + 200},
		// Request cap above the route cap is clamped: in + 4096×2.
		{"clamped to route cap", OpenAIChat, over, p, 4096, Usage{Tokens: usage.Tokens{InputTokens: in(over), OutputTokens: 4096}}, in(over) + 8192},
		{"route cap when none", OpenAIChat, plain, p, 2000, Usage{Tokens: usage.Tokens{InputTokens: in(plain), OutputTokens: 2000}}, in(plain) + 4000},
		{"no caps anywhere", OpenAIChat, plain, p, 0, Usage{Tokens: usage.Tokens{InputTokens: in(plain), OutputTokens: DefaultMaxOutputTokens}}, in(plain) + 2*DefaultMaxOutputTokens},
		{"request cap, no route cap", OpenAIChat, bigCap, p, 0, Usage{Tokens: usage.Tokens{InputTokens: in(bigCap), OutputTokens: 100_000}}, in(bigCap) + 200_000},
		// n multiplies the output, not the input: in + 3×1000×2.
		{"times n", OpenAIChat, withN, p, 1000, Usage{Tokens: usage.Tokens{InputTokens: in(withN), OutputTokens: 3000}}, in(withN) + 6000},
		// Cache writes dearer than input: every input token at 1.25, as cache writes.
		{"worst-case cache rate", AnthropicMessages, claude,
			Price{Rates: Rates{Input: 1_000_000, CachedInput: 100_000, CacheWriteInput: dearCach, Output: 2_000_000}}, 4096,
			Usage{Tokens: usage.Tokens{InputTokens: in(claude), CacheWriteInputTokens: in(claude), OutputTokens: 10}}, (in(claude)*5+3)/4 + 20},
		{"embeddings have no output", OpenAIEmbeddings, embed, p, 4096, Usage{Tokens: usage.Tokens{InputTokens: in(embed)}}, in(embed)},
		// dall-e: n images at the size's price (2 × 16,000); tokens do not apply.
		{"images per image", OpenAIImages, dalle, Price{PerImage: mapOf("256x256", 16_000)}, 4096,
			Usage{Tokens: usage.Tokens{InputTokens: in(dalle), OutputTokens: 8192}, Images: 2, ImageSize: "256x256"}, 32_000},
		{"flat", Flat, "", Price{Rates: Rates{Input: 1_000_000}, PerRequest: 100}, 4096, Usage{}, 100},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, err := ParseRequest(tc.api, "application/json", []byte(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			u, cost, err := r.Estimate(tc.price, tc.routeCap)
			if err != nil {
				t.Fatal(err)
			}
			if !sameUsage(u, tc.want) || int64(cost) != tc.cost {
				t.Errorf("Estimate = %+v, %d\n    want %+v, %d", u, cost, tc.want, tc.cost)
			}
		})
	}
	// An absurd worst case is an error, not a wrapped number.
	r := mustParse(t, OpenAIChat, "application/json", `{"model":"m","n":128,"max_tokens":9223372036854775807}`)
	if _, _, err := r.Estimate(Price{Rates: Rates{Output: 1_000_000_000}}, 0); !errors.Is(err, ErrCostRange) {
		t.Errorf("overflowing estimate: err = %v, want ErrCostRange", err)
	}
}

// TestEstimateServerTools pins the server-tool hold: C calls start C more
// sampling steps, each re-reading the prompt, the results so far (largest
// first) and the output, plus each call's fee.
func TestEstimateServerTools(t *testing.T) {
	p := Price{Rates: Rates{Input: 1_000_000, CachedInput: 500_000, CacheWriteInput: 1_000_000, Output: 2_000_000},
		Tools: [usage.NumTools]money.Micros{usage.WebSearch: 10_000, usage.CodeExecution: 4_167}}
	const body = `{"model":"m","max_tokens":100,"messages":[],"tools":[` +
		`{"type":"web_search_20250305","name":"web_search","max_uses":2},` +
		`{"type":"web_fetch_20250910","name":"web_fetch","max_uses":1,"max_content_tokens":30000},` +
		`{"type":"code_execution_20250825","name":"code_execution"}]}`
	r := mustParse(t, AnthropicMessages, "application/json", body)
	st := ServerTools{"code_execution": {MaxUses: 1, InputTokens: 5_000}}
	u, cost, err := Prices{"m": p}.Estimate(r, 4096, st)
	if err != nil {
		t.Fatal(err)
	}
	// 2 searches of 25,000 (the default), 1 fetch of 30,000 (its
	// max_content_tokens), 1 code execution of 5,000 (the route's): C = 4.
	// By size: the fetch at position 1 is read by 4 later steps, the
	// searches at 2 and 3 by 3 and 2, the code output at 4 by 1:
	// 30,000×4 + 25,000×(3+2) + 5,000×1 = 250,000. The prompt is read
	// by 5 steps and the 100 output tokens by 4 more.
	wantIn := r.InputTokens*5 + 250_000 + 100*4
	want := usage.Tokens{InputTokens: wantIn, OutputTokens: 100, WebSearchCalls: 2, WebFetchCalls: 1, CodeExecutionCalls: 1}
	if u.Tokens != want {
		t.Errorf("usage %+v\nwant  %+v", u.Tokens, want)
	}
	// Input at 1, output at 2, 2 searches at 10,000, one container at 4,167.
	if wantCost := money.Micros(wantIn + 200 + 20_000 + 4_167); cost != wantCost {
		t.Errorf("cost %s, want %s", cost, wantCost)
	}

	// max_tool_calls bounds OpenAI's built-in tools together.
	r = mustParse(t, OpenAIResponses, "application/json", `{"model":"m","input":"hi","max_output_tokens":10,"max_tool_calls":1,"tools":[{"type":"web_search"},{"type":"file_search"}]}`)
	u, _, err = Prices{"m": p}.Estimate(r, 4096, nil)
	if err != nil {
		t.Fatal(err)
	}
	// One call, the larger result (25,000): prompt ×2 + 25,000 + 10.
	if u.InputTokens != r.InputTokens*2+25_000+10 || u.WebSearchCalls != 1 || u.FileSearchCalls != 1 {
		t.Errorf("max_tool_calls 1: %+v", u.Tokens)
	}

	// An advisor is a step of its own model, and must be priced.
	r = mustParse(t, AnthropicMessages, "application/json", `{"model":"m","max_tokens":100,"messages":[],"tools":[{"type":"advisor_20260301","name":"advisor","model":"opus","max_uses":1,"max_tokens":300}]}`)
	if _, _, err := (Prices{"m": p}).Estimate(r, 4096, nil); !errors.Is(err, ErrModelNotPriced) {
		t.Errorf("unpriced advisor: %v, want ErrModelNotPriced", err)
	}
	opus := Price{Rates: Rates{Input: 5_000_000, Output: 25_000_000}}
	u, cost, err = Prices{"m": p, "opus": opus}.Estimate(r, 4096, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Executor: prompt ×2 + advice 300 + output 100. Advisor: the whole
	// context (prompt + 100 + 300) in, 300 out, at opus's rates.
	exec, adv := r.InputTokens*2+300+100, r.InputTokens+400
	if len(u.Iterations) != 2 || u.Iterations[1].Model != "opus" || u.Iterations[1].InputTokens != adv || u.Iterations[1].OutputTokens != 300 {
		t.Fatalf("iterations %+v", u.Iterations)
	}
	if want := money.Micros(exec + 200 + adv*5 + 300*25); cost != want {
		t.Errorf("advisor cost %s, want %s", cost, want)
	}
}

// TestEstimateVariants checks that the hold prices the dearest variant
// the request may be served at, and only those.
func TestEstimateVariants(t *testing.T) {
	rates := func(in int64) Rates { return Rates{Input: money.Micros(in)} }
	p := Price{Rates: rates(1_000_000),
		ServiceTier:  map[string]Variant{"priority": {HasRates: true, Rates: rates(2_000_000)}, "flex": {HasRates: true, Rates: rates(500_000)}},
		Speed:        map[string]Variant{"fast": {HasRates: true, Rates: rates(6_000_000)}},
		InferenceGeo: map[string]Variant{"us": {Multiplier: 1_100_000}},
	}
	tests := []struct {
		api     API
		body    string
		perByte int64 // the rate in force, micro-credits per 1M tokens
	}{
		// No tier named: the project's default may be priority.
		{OpenAIChat, `{"model":"m"}`, 2_000_000},
		{OpenAIChat, `{"model":"m","service_tier":"auto"}`, 2_000_000},
		// Flex, or the standard rates a provider may serve it at.
		{OpenAIChat, `{"model":"m","service_tier":"flex"}`, 1_000_000},
		{OpenAIChat, `{"model":"m","service_tier":"default"}`, 1_000_000},
		// "fast" is answered as "priority".
		{OpenAIResponses, `{"model":"m","service_tier":"fast"}`, 2_000_000},
		// Anthropic: no geography named may run in the US (1.1×); fast
		// only when asked for.
		{AnthropicMessages, `{"model":"m","max_tokens":1,"service_tier":"standard_only"}`, 1_100_000},
		{AnthropicMessages, `{"model":"m","max_tokens":1,"service_tier":"standard_only","inference_geo":"global"}`, 1_000_000},
		{AnthropicMessages, `{"model":"m","max_tokens":1,"service_tier":"standard_only","speed":"fast","inference_geo":"us"}`, 6_600_000},
	}
	for _, tc := range tests {
		r := mustParse(t, tc.api, "application/json", tc.body)
		r.MaxOutputTokens = 0
		u, cost, err := Prices{"m": p}.Estimate(r, 1, nil)
		if err != nil {
			t.Fatal(err)
		}
		// Output is free here: the cost is the input at the rate in force.
		if want := ceilDiv(u.InputTokens*tc.perByte, 1_000_000); int64(cost) != want {
			t.Errorf("%s %s: hold %d, want %d (%d tokens at %d)", tc.api, tc.body, cost, want, u.InputTokens, tc.perByte)
		}
	}
}

func mapOf(k string, v int64) map[string]money.Micros {
	return map[string]money.Micros{k: money.Micros(v)}
}
