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

func mapOf(k string, v int64) map[string]money.Micros {
	return map[string]money.Micros{k: money.Micros(v)}
}
