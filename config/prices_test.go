package config_test

import (
	"reflect"
	"strings"
	"testing"

	"github.com/tollgate-dev/tollgate/config"
	"github.com/tollgate-dev/tollgate/meter"
	"github.com/tollgate-dev/tollgate/usage"
)

// TestPriceDimensions parses every price key of every dimension into the
// meter.Price it stands for, defaults filled.
func TestPriceDimensions(t *testing.T) {
	c := mustParse(t, `
routes:
  - path: /v1/messages
    api: anthropic.messages
    upstream: https://api.anthropic.com
    server_tools:
      web_search: {max_uses: 3, input_tokens: 20000}
      web_fetch: {input_tokens: 80000}
    prices:
      claude-opus-4-6:
        input: "5.00"
        cached_input: "0.50"
        cache_write_input: "6.25"
        cache_write_input_1h: "10.00"
        output: "25.00"
        tools: {web_search: "0.01", code_execution: "0.004167"}
        tiers:
          - {above_input_tokens: 200000, input: "10.00", cached_input: "1.00", cache_write_input: "12.50", cache_write_input_1h: "20.00", output: "37.50"}
        speed:
          fast: {input: "30.00", cached_input: "3.00", cache_write_input: "37.50", cache_write_input_1h: "60.00", output: "150.00"}
        inference_geo:
          us: {multiplier: "1.1"}
  - path: /v1/chat/completions
    api: openai.chat
    upstream: https://api.openai.com
    prices:
      gpt-4o-audio-preview: {input: "2.50", audio_input: "40.00", output: "10.00", audio_output: "80.00"}
      gpt-4o:
        input: "2.50"
        cached_input: "1.25"
        output: "10.00"
        service_tier:
          priority: {input: "4.25", cached_input: "2.125", output: "17.00"}
      gpt-4o-search-preview: {input: "2.50", output: "10.00", tools: {web_search: "0.035"}}
  - path: /v1/images/
    api: openai.images
    upstream: https://api.openai.com
    prices:
      gpt-image-1.5: {input: "5.00", cached_input: "1.25", image_input: "8.00", output: "10.00", image_output: "32.00"}
`, noEnv)
	anth := c.Routes[0]
	if want := (meter.ServerTools{"web_search": {MaxUses: 3, InputTokens: 20_000}, "web_fetch": {MaxUses: meter.DefaultServerToolUses, InputTokens: 80_000}}); !reflect.DeepEqual(anth.ServerTools, want) {
		t.Errorf("server_tools = %+v, want %+v", anth.ServerTools, want)
	}
	opus := anth.Prices["claude-opus-4-6"]
	var fees [usage.NumTools]int64
	for i, f := range opus.Tools {
		fees[i] = int64(f)
	}
	want := meter.Price{
		Rates: meter.Rates{Input: 5_000_000, CachedInput: 500_000, CacheWriteInput: 6_250_000, CacheWriteInput1h: 10_000_000,
			AudioInput: 5_000_000, ImageInput: 5_000_000, Output: 25_000_000, AudioOutput: 25_000_000, ImageOutput: 25_000_000},
		Tiers: []meter.Tier{{AboveInputTokens: 200_000, Rates: meter.Rates{Input: 10_000_000, CachedInput: 1_000_000, CacheWriteInput: 12_500_000,
			CacheWriteInput1h: 20_000_000, AudioInput: 10_000_000, ImageInput: 10_000_000, Output: 37_500_000, AudioOutput: 37_500_000, ImageOutput: 37_500_000}}},
		Speed: map[string]meter.Variant{"fast": {HasRates: true, Rates: meter.Rates{Input: 30_000_000, CachedInput: 3_000_000, CacheWriteInput: 37_500_000,
			CacheWriteInput1h: 60_000_000, AudioInput: 30_000_000, ImageInput: 30_000_000, Output: 150_000_000, AudioOutput: 150_000_000, ImageOutput: 150_000_000}}},
		InferenceGeo: map[string]meter.Variant{"us": {Multiplier: 1_100_000}},
	}
	want.Tools[usage.WebSearch], want.Tools[usage.CodeExecution] = 10_000, 4_167
	if !reflect.DeepEqual(opus, want) {
		t.Errorf("claude-opus-4-6 =\n%+v\nwant\n%+v", opus, want)
	}

	chat := c.Routes[1].Prices
	if got := chat["gpt-4o-audio-preview"].Rates; got != (meter.Rates{Input: 2_500_000, CachedInput: 2_500_000, CacheWriteInput: 2_500_000, CacheWriteInput1h: 2_500_000,
		AudioInput: 40_000_000, ImageInput: 2_500_000, Output: 10_000_000, AudioOutput: 80_000_000, ImageOutput: 10_000_000}) {
		t.Errorf("gpt-4o-audio-preview = %+v", got)
	}
	if got := chat["gpt-4o"].ServiceTier["priority"]; !got.HasRates || got.Rates.Input != 4_250_000 || got.Rates.CachedInput != 2_125_000 ||
		got.Rates.CacheWriteInput != 4_250_000 || got.Rates.Output != 17_000_000 {
		t.Errorf("gpt-4o priority = %+v", got)
	}
	if got := chat["gpt-4o-search-preview"].Tools[usage.WebSearch]; got != 35_000 {
		t.Errorf("gpt-4o-search-preview web_search = %s", got)
	}
	if got := c.Routes[2].Prices["gpt-image-1.5"].Rates; got.ImageInput != 8_000_000 || got.ImageOutput != 32_000_000 || got.Output != 10_000_000 {
		t.Errorf("gpt-image-1.5 = %+v", got)
	}
}

// TestPriceDimensionProblems pins the messages of the new keys' mistakes,
// each with its line.
func TestPriceDimensionProblems(t *testing.T) {
	const head = `
routes:
  - path: /v1/messages
    api: anthropic.messages
    upstream: https://api.anthropic.com
`
	tests := []struct {
		name, yaml string
		want       []string
	}{
		{"tier cheaper than the rates under it", head + `    prices:
      m:
        input: "3"
        output: "15"
        tiers:
          - {above_input_tokens: 200000, input: "6", output: "10"}
`, []string{`line 11: routes[0].prices.m.tiers[0].output: "10" is below the rate under it ("15"): a tier prices every token of a request above its threshold, so it may not be cheaper than the rates below it`}},
		{"tier without output or threshold", head + `    prices:
      m:
        input: "3"
        tiers:
          - {input: "6"}
          - {above_input_tokens: 0, input: "6", output: "1"}
`, []string{`line 10: routes[0].prices.m.tiers[0]: sets no above_input_tokens (want the input tokens above which the tier applies, e.g. 200000)`,
			`line 11: routes[0].prices.m.tiers[1].above_input_tokens: 0 must be greater than 0 (input tokens, e.g. 200000)`}},
		{"thresholds must rise", head + `    prices:
      m:
        input: "3"
        output: "15"
        tiers:
          - {above_input_tokens: 200000, input: "6", output: "22.50"}
          - {above_input_tokens: 100000, input: "9", output: "30"}
`, []string{`line 12: routes[0].prices.m.tiers[1].above_input_tokens: 100000 must be greater than the tier before's 200000: list tiers from the lowest threshold up`}},
		{"unknown tool and a tool the api does not bill", head + `    prices:
      m: {input: "3", output: "15", tools: {web_serch: "0.01", file_search: "0.0025"}}
`, []string{`line 7: routes[0].prices.m.tools.web_serch: is not a tool api anthropic.messages bills per call (did you mean web_search?); its tools are web_search, web_fetch, code_execution`,
			`line 7: routes[0].prices.m.tools.file_search: is not a tool api anthropic.messages bills per call; its tools are web_search, web_fetch, code_execution`}},
		{"multiplier only for inference_geo", head + `    prices:
      m:
        input: "3"
        output: "15"
        speed: {fast: {multiplier: "6"}}
        inference_geo: {us: {multiplier: "110"}, eu: {}}
`, []string{`line 10: routes[0].prices.m.speed.fast.multiplier: unknown key; allowed keys: input, cached_input, cache_write_input, cache_write_input_1h, audio_input, image_input, output, audio_output, image_output, tiers`,
			`line 10: routes[0].prices.m.speed.fast: sets no price (want e.g. {fast: {input: "30.00", output: "150.00"}})`,
			`line 11: routes[0].prices.m.inference_geo.us.multiplier: "110" is out of range (want a factor above 0 and at most 100, e.g. "1.1")`,
			`line 11: routes[0].prices.m.inference_geo.eu: sets no price (want e.g. {us: {multiplier: "1.1"}})`}},
		{"variant without output", head + `    prices:
      m: {input: "3", output: "15", service_tier: {priority: {input: "6"}}}
`, []string{`line 7: routes[0].prices.m.service_tier.priority: sets no input or no output (want both: a variant's rates replace the model's, e.g. {priority: {input: "4.25", cached_input: "2.125", output: "17.00"}})`}},
		{"rates the api never reports", head + `    prices:
      m: {input: "3", output: "15", audio_input: "40", tiers: [{above_input_tokens: 1, input: "6", output: "20", image_output: "1"}]}
`, []string{`line 7: routes[0].prices.m.audio_input: is not a price of api anthropic.messages; its prices are input, cached_input, cache_write_input, cache_write_input_1h, output, per_request, tools, tiers, service_tier, speed, inference_geo`,
			`line 7: routes[0].prices.m.tiers[0].image_output: is not a price of api anthropic.messages; its prices are input, cached_input, cache_write_input, cache_write_input_1h, output, per_request, tools, tiers, service_tier, speed, inference_geo`}},
		{"server tools", head + `    server_tools:
      web_search: {max_uses: 0}
      web_serch: {max_uses: 2}
    prices: {m: {input: "3"}}
  - path: /v1/chat/completions
    api: openai.chat
    upstream: https://api.openai.com
    server_tools: {web_search: {max_uses: 2}}
    prices: {m: {input: "3", cache_write_input_1h: "6"}}
`, []string{`line 7: routes[0].server_tools.web_search.max_uses: 0 must be greater than 0 (calls held for when the request's tool sets no max_uses, e.g. 5)`,
			`line 8: routes[0].server_tools.web_serch: is not a server-side tool of api anthropic.messages (did you mean web_search?); its kinds are web_search, web_fetch, code_execution, advisor, other`,
			`line 13: routes[1].server_tools: does not apply to api openai.chat, whose requests run no server-side tools; remove it`,
			`line 14: routes[1].prices.m.cache_write_input_1h: is not a price of api openai.chat; its prices are input, cached_input, cache_write_input, audio_input, image_input, output, audio_output, per_request, tools, tiers, service_tier`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := config.Parse(strings.NewReader(tc.yaml), noEnv)
			want := strings.Join(tc.want, "\n")
			if err == nil {
				t.Fatalf("Parse succeeded, want\n%s", want)
			}
			if got := err.Error(); got != want {
				t.Errorf("Parse error:\n%s\nwant:\n%s", got, want)
			}
		})
	}
}
