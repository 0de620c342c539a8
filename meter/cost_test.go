package meter

import (
	"errors"
	"math"
	"testing"

	"github.com/tollgate-dev/tollgate/money"
	"github.com/tollgate-dev/tollgate/usage"
)

// Prices in these tests are micro-credits per 1M tokens (or per image,
// per minute, per request); every expected cost is worked out in the
// comment beside it, in micro-credits.
func TestCost(t *testing.T) {
	mini := Price{Rates: Rates{Input: 150_000, CachedInput: 75_000, CacheWriteInput: 150_000, Output: 600_000}} // gpt-4o-mini
	sonnet := Price{Rates: Rates{Input: 3_000_000, CachedInput: 300_000, CacheWriteInput: 3_750_000, Output: 15_000_000}}
	tests := []struct {
		name  string
		price Price
		usage Usage
		want  money.Micros
	}{
		{
			// OpenAI: prompt_tokens 2000 INCLUDES cached_tokens 1500;
			// completion_tokens 300 includes 100 reasoning tokens.
			// 500×0.15 + 1500×0.075 + 300×0.60 = 75 + 112.5 + 180 = 367.5 → 368.
			// (Pricing all 2000 at 0.15 plus 1500 at 0.075 would be 592.5: the 2× bug.)
			name:  "openai cached tokens priced once",
			price: mini,
			usage: Usage{Tokens: usage.Tokens{InputTokens: 2000, CachedInputTokens: 1500, OutputTokens: 300}},
			want:  368,
		},
		{
			// Anthropic input_tokens 12 EXCLUDES cache_read 8000 and
			// cache_creation 4000; the ledger's InputTokens is 12012.
			// 12×3 + 8000×0.30 + 4000×3.75 + 42×15 = 36 + 2400 + 15000 + 630 = 18066.
			name:  "anthropic cache read and write",
			price: sonnet,
			usage: Usage{Tokens: usage.Tokens{InputTokens: 12_012, CachedInputTokens: 8000, CacheWriteInputTokens: 4000, OutputTokens: 42}},
			want:  18_066,
		},
		{
			// 1 × 0.15 = 0.15 → 1: a fraction of a micro-credit rounds up.
			name:  "one token rounds up",
			price: mini,
			usage: Usage{Tokens: usage.Tokens{InputTokens: 1}},
			want:  1,
		},
		{
			// 1,000,000 × 0.15 = 150,000 exactly: no extra micro-credit.
			name:  "exact total does not round",
			price: mini,
			usage: Usage{Tokens: usage.Tokens{InputTokens: 1_000_000}},
			want:  150_000,
		},
		{
			// 1×0.5 + 1×0.5 = 1.0 → 1. Rounding each component would give 2.
			name:  "rounded once, not per component",
			price: Price{Rates: Rates{Input: 500_000, Output: 500_000}},
			usage: Usage{Tokens: usage.Tokens{InputTokens: 1, OutputTokens: 1}},
			want:  1,
		},
		{
			// 100 + 1×0.15 = 100.15 → 101.
			name:  "per request plus tokens",
			price: Price{Rates: Rates{Input: 150_000}, PerRequest: 100},
			usage: Usage{Tokens: usage.Tokens{InputTokens: 1}},
			want:  101,
		},
		{
			// Zero usage still pays the per-request price: 10,000.
			name:  "per request only",
			price: Price{PerRequest: 10_000},
			usage: Usage{},
			want:  10_000,
		},
		{
			// Reasoning tokens are inside OutputTokens: 5000 × 4.40 = 22,000.
			name:  "reasoning inside output",
			price: Price{Rates: Rates{Input: 1_100_000, Output: 4_400_000}},
			usage: Usage{Tokens: usage.Tokens{OutputTokens: 5000}},
			want:  22_000,
		},
		{
			// 3 × 18,000 = 54,000 (dall-e-2 512x512 at 0.018).
			name:  "per image by size",
			price: Price{PerImage: map[string]money.Micros{"512x512": 18_000, "1024x1024": 20_000}},
			usage: Usage{Images: 3, ImageSize: "512x512"},
			want:  54_000,
		},
		{
			// "1024x1024/hd" wins over "1024x1024": 80,000.
			name:  "per image by size and quality",
			price: Price{PerImage: map[string]money.Micros{"1024x1024": 40_000, "1024x1024/hd": 80_000, "*": 1}},
			usage: Usage{Images: 1, ImageSize: "1024x1024", ImageQuality: "hd"},
			want:  80_000,
		},
		{
			// No "1792x1024" entry: "*/hd" = 120,000.
			name:  "per image by quality wildcard",
			price: Price{PerImage: map[string]money.Micros{"1024x1024": 40_000, "*/hd": 120_000, "*": 50_000}},
			usage: Usage{Images: 1, ImageSize: "1792x1024", ImageQuality: "hd"},
			want:  120_000,
		},
		{
			// Only "*": 2 × 50,000 = 100,000.
			name:  "per image star",
			price: Price{PerImage: map[string]money.Micros{"1024x1024": 40_000, "*": 50_000}},
			usage: Usage{Images: 2, ImageSize: "auto"},
			want:  100_000,
		},
		{
			// Size not listed, no "*": the dearest entry, 80,000, never 0.
			name:  "per image unknown size takes the dearest",
			price: Price{PerImage: map[string]money.Micros{"1024x1024": 40_000, "1792x1024": 80_000}},
			usage: Usage{Images: 1, ImageSize: "256x256"},
			want:  80_000,
		},
		{
			// gpt-image-1 reports tokens and the route prices tokens:
			// 50×5 + 6240×40 = 250 + 249,600 = 249,850; PerImage ignored.
			name:  "image tokens win over per image",
			price: Price{Rates: Rates{Input: 5_000_000, Output: 40_000_000}, PerImage: map[string]money.Micros{"*": 250_000}},
			usage: Usage{Tokens: usage.Tokens{InputTokens: 50, OutputTokens: 6240}, Images: 1, ImageSize: "1024x1536"},
			want:  249_850,
		},
		{
			// The same response on a route that prices only per image: 250,000.
			name:  "per image when the route has no token rate",
			price: Price{PerImage: map[string]money.Micros{"*": 250_000}},
			usage: Usage{Tokens: usage.Tokens{InputTokens: 50, OutputTokens: 6240}, Images: 1},
			want:  250_000,
		},
		{
			// whisper-1: 8,471 ms × 6,000 / 60,000 = 847.1 → 848.
			name:  "audio per minute",
			price: Price{PerMinute: 6000},
			usage: Usage{AudioMillis: 8471},
			want:  848,
		},
		{
			// 10 + 1 ms × 6,000 / 60,000 = 10.1 → 11: audio and per-request
			// fractions share the single rounding.
			name:  "audio plus per request",
			price: Price{PerMinute: 6000, PerRequest: 10},
			usage: Usage{AudioMillis: 1},
			want:  11,
		},
		{
			// gpt-4o-transcribe reports tokens on a token-priced route:
			// 14×6 + 45×10 = 84 + 450 = 534; the estimated minutes are ignored.
			name:  "audio tokens win over per minute",
			price: Price{Rates: Rates{Input: 6_000_000, Output: 10_000_000}, PerMinute: 6000},
			usage: Usage{Tokens: usage.Tokens{InputTokens: 14, OutputTokens: 45}, AudioMillis: 120_000},
			want:  534,
		},
		{
			// Free model: nothing to pay, and that is explicit in the price.
			name:  "zero price",
			price: Price{},
			usage: Usage{Tokens: usage.Tokens{InputTokens: 10, OutputTokens: 10}},
			want:  0,
		},
		{
			// The largest representable total: (2^63−1) micro-credits,
			// reached as MaxInt64 tokens at 1 credit per 1M tokens.
			name:  "largest total",
			price: Price{Rates: Rates{Output: 1_000_000}},
			usage: Usage{Tokens: usage.Tokens{OutputTokens: math.MaxInt64}},
			want:  math.MaxInt64,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.price.Cost(tc.usage)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("Cost = %d (%s), want %d (%s)", got, got, tc.want, tc.want)
			}
		})
	}
}

func TestCostErrors(t *testing.T) {
	tests := []struct {
		name  string
		price Price
		usage Usage
	}{
		{"overflow int64", Price{Rates: Rates{Output: 1_000_001}}, Usage{Tokens: usage.Tokens{OutputTokens: math.MaxInt64}}},
		{"overflow 128 bits", Price{Rates: Rates{Input: math.MaxInt64, Output: math.MaxInt64, CachedInput: math.MaxInt64, CacheWriteInput: math.MaxInt64}},
			Usage{Tokens: usage.Tokens{InputTokens: math.MaxInt64, CachedInputTokens: math.MaxInt64 / 2, CacheWriteInputTokens: math.MaxInt64 / 2, OutputTokens: math.MaxInt64}}},
		{"overflow images", Price{PerImage: map[string]money.Micros{"*": math.MaxInt64}}, Usage{Images: 2}},
		{"overflow per minute", Price{PerMinute: math.MaxInt64}, Usage{AudioMillis: math.MaxInt64}},
		{"negative tokens", Price{Rates: Rates{Input: 1}}, Usage{Tokens: usage.Tokens{InputTokens: -1}}},
		{"negative price", Price{Rates: Rates{Output: -1}}, Usage{Tokens: usage.Tokens{OutputTokens: 1}}},
		{"negative per image", Price{PerImage: map[string]money.Micros{"*": -5}}, Usage{Images: 1}},
		{"cached exceed input", Price{Rates: Rates{Input: 1}}, Usage{Tokens: usage.Tokens{InputTokens: 10, CachedInputTokens: 8, CacheWriteInputTokens: 3}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.price.Cost(tc.usage)
			if !errors.Is(err, ErrCostRange) {
				t.Fatalf("Cost = %d, %v; want ErrCostRange", got, err)
			}
		})
	}
}

func TestLookup(t *testing.T) {
	exact := Price{Rates: Rates{Input: 1}}
	star := Price{Rates: Rates{Input: 2}}
	withStar := Prices{"gpt-4o": exact, "*": star}
	without := Prices{"gpt-4o": exact}
	tests := []struct {
		name   string
		prices Prices
		model  string
		want   Price
		err    string
	}{
		{"exact", withStar, "gpt-4o", exact, ""},
		{"star", withStar, "gpt-4o-mini", star, ""},
		{"empty model uses star", withStar, "", star, ""},
		{"not priced", without, "gpt-4o-mini", Price{}, `meter: model "gpt-4o-mini" is not priced on this route; add it to the route's prices, or add a "*" entry`},
		{"no model, no star", without, "", Price{}, `meter: the request names no model and the route has no "*" price; name a model, or add a "*" entry to the route's prices`},
		{"nil prices", nil, "gpt-4o", Price{}, `meter: model "gpt-4o" is not priced on this route; add it to the route's prices, or add a "*" entry`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.prices.Lookup(tc.model)
			if tc.err == "" {
				if err != nil || got.Input != tc.want.Input {
					t.Fatalf("Lookup = %+v, %v; want %+v", got, err, tc.want)
				}
				return
			}
			if err == nil || err.Error() != tc.err {
				t.Fatalf("Lookup error = %v, want %q", err, tc.err)
			}
			if !errors.Is(err, ErrModelNotPriced) {
				t.Errorf("error does not match ErrModelNotPriced")
			}
			var mnp *ModelNotPricedError
			if !errors.As(err, &mnp) || mnp.Model != tc.model {
				t.Errorf("error is not a *ModelNotPricedError for %q", tc.model)
			}
		})
	}
}

func TestParseMillis(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"9", 9000, true},
		{"0", 0, true},
		{"8.470000267028809", 8471, true}, // rounds up past the millisecond
		{"8.47", 8470, true},
		{"8.4700", 8470, true},
		{"0.0001", 1, true},
		{"1e-05", 1, true},
		{"1.5E+3", 1_500_000, true},
		{"2e0", 2000, true},
		{"12.000", 12_000, true},
		{"-1", 0, false},
		{"1.", 0, false},
		{".5", 0, false},
		{"1e", 0, false},
		{"abc", 0, false},
		{"1e400", 0, false},
		{"", 0, false},
		{"99999999999999999999999999", 0, false},
	}
	for _, tc := range tests {
		got, ok := parseMillis([]byte(tc.in))
		if got != tc.want || ok != tc.ok {
			t.Errorf("parseMillis(%q) = %d, %v; want %d, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
	for in, want := range map[string]int64{"42": 42, "42.0": 42, "41.2": 42, "0": 0} {
		if got, ok := parseCount([]byte(in)); !ok || got != want {
			t.Errorf("parseCount(%q) = %d, %v; want %d", in, got, ok, want)
		}
	}
}
