package config_test

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/config"
	"github.com/tollgate-dev/tollgate/meter"
	"github.com/tollgate-dev/tollgate/money"
	"github.com/tollgate-dev/tollgate/stripesync"
	"github.com/tollgate-dev/tollgate/usage"
)

// noEnv is an environment with nothing set.
func noEnv(string) (string, bool) { return "", false }

// envOf is an environment holding exactly vars.
func envOf(vars map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := vars[k]; return v, ok }
}

func mustParse(t *testing.T, yaml string, env func(string) (string, bool)) *config.Config {
	t.Helper()
	c, err := config.Parse(strings.NewReader(yaml), env)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return c
}

func warnings(c *config.Config) []string {
	var out []string
	for _, w := range c.Warnings {
		out = append(out, w.String())
	}
	return out
}

const minimal = `
admin: {token: "0123456789abcdef0123"}
routes:
  - path: /v1/chat/completions
    api: openai.chat
    upstream: https://api.openai.com
    prices:
      gpt-4o-mini: {input: "0.15", output: 0.60}
`

func TestDefaults(t *testing.T) {
	c := mustParse(t, minimal, noEnv)
	if len(c.Warnings) != 0 {
		t.Errorf("warnings = %q, want none", warnings(c))
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"listen", c.Listen, "127.0.0.1:8080"},
		{"admin.listen", c.Admin.Listen, ":9090"},
		{"admin.token", c.Admin.Token, "0123456789abcdef0123"},
		{"store.redis_url", c.Store.RedisURL, ""},
		{"store.path", c.Store.Path, "tollgate.db"},
		{"store.hold_ttl", c.Store.HoldTTL, 10 * time.Minute},
		{"store.sweep_interval", c.Store.SweepInterval, time.Minute},
		{"store.timeout", c.Store.Timeout, 500 * time.Millisecond},
		{"customer_header", c.CustomerHeader, "X-Tollgate-Customer"},
		{"max_request_bytes", c.MaxRequestBytes, int64(33554432)},
		{"request_body_timeout", c.RequestBodyTimeout, 30 * time.Second},
		{"shutdown_timeout", c.ShutdownTimeout, 30 * time.Second},
		// DESIGN: a settlement is committed within 1 s of the last byte;
		// settle_timeout bounds each attempt.
		{"settle_timeout", c.SettleTimeout, time.Second},
		{"max_request_duration", c.MaxRequestDuration, 30 * time.Minute},
		{"stripe.webhook_secrets", len(c.Stripe.WebhookSecrets), 0},
		{"stripe.api_key", c.Stripe.APIKey, ""},
		{"stripe.api_base", c.Stripe.APIBase, "https://api.stripe.com"},
		{"stripe.livemode", c.Stripe.Livemode, (*bool)(nil)},
		{"stripe.prices", len(c.Stripe.Prices), 0},
		{"stripe.reconcile_interval", c.Stripe.ReconcileInterval, time.Hour},
		{"stripe.reconcile_window", c.Stripe.ReconcileWindow, 72 * time.Hour},
		{"routes", len(c.Routes), 1},
		{"routes[0].path", c.Routes[0].Path, "/v1/chat/completions"},
		{"routes[0].api", c.Routes[0].API, meter.OpenAIChat},
		{"routes[0].upstream", c.Routes[0].Upstream.String(), "https://api.openai.com"},
		{"routes[0].headers", len(c.Routes[0].Headers), 0},
		{"routes[0].max_output_tokens", c.Routes[0].MaxOutputTokens, int64(4096)},
		// cached_input and cache_write_input default to input; a bare
		// 0.60 is read from its text, not through float64.
		{"routes[0].prices", c.Routes[0].Prices, meter.Prices{"gpt-4o-mini": {Rates: rates(150_000, 150_000, 150_000, 600_000)}}},
	}
	for _, tc := range checks {
		if !reflect.DeepEqual(tc.got, tc.want) {
			t.Errorf("%s = %#v, want %#v", tc.name, tc.got, tc.want)
		}
	}
}

func TestDefaultValidates(t *testing.T) {
	c := config.Default()
	if err := c.Validate(); err == nil || err.Error() != "routes: none configured; add at least one route (see config.example.yaml)" {
		t.Fatalf("Default().Validate() = %v", err)
	}
	c.Routes = []config.Route{{
		Path:            "/v1/embeddings",
		API:             meter.OpenAIEmbeddings,
		Upstream:        &url.URL{Scheme: "https", Host: "api.openai.com"},
		Prices:          meter.Prices{"*": {Rates: meter.Rates{Input: 20_000}}},
		MaxOutputTokens: 10,
	}}
	c.Store.HoldTTL = 0
	want := "store.hold_ttl: \"0s\" must be greater than 0 (want e.g. \"10m\")\n" +
		"routes[0].max_output_tokens: does not apply to api openai.embeddings, which bills no output tokens; remove it"
	if err := c.Validate(); err == nil || err.Error() != want {
		t.Fatalf("Validate() = %v\nwant %s", err, want)
	}
	c.Store.HoldTTL = time.Minute
	c.Routes[0].MaxOutputTokens = 0
	if err := c.Validate(); err != nil {
		t.Fatalf("Validate() = %v, want nil", err)
	}
}

// exampleEnv sets every variable config.example.yaml references.
var exampleEnv = map[string]string{
	"TOLLGATE_ADMIN_TOKEN":  "a-long-random-admin-token-0123456789",
	"REDIS_URL":             "",
	"OPENAI_API_KEY":        "sk-test",
	"ANTHROPIC_API_KEY":     "sk-ant-test",
	"GEMINI_API_KEY":        "gemini-test",
	"GROQ_API_KEY":          "gsk_test",
	"AZURE_OPENAI_API_KEY":  "azure-test",
	"STRIPE_WEBHOOK_SECRET": "whsec_test",
	"STRIPE_API_KEY":        "sk_test_123",
	"STRIPE_LIVEMODE":       "false",
}

// TestExample keeps config.example.yaml loadable: with nothing set it
// starts (with warnings), and with everything set it starts without any.
func TestExample(t *testing.T) {
	path := filepath.Join("..", "config.example.yaml")
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}

	bare, err := config.Parse(f, noEnv)
	if err != nil {
		t.Fatalf("config.example.yaml with no environment: %v", err)
	}
	if len(bare.Warnings) == 0 {
		t.Error("config.example.yaml with no environment: no warnings, want one per unset variable")
	}

	c := mustParse(t, string(data), envOf(exampleEnv))
	if len(c.Warnings) != 0 {
		t.Errorf("config.example.yaml with its environment set: warnings %q", warnings(c))
	}

	// The example states every default; the timeouts are facts DESIGN
	// and the README quote.
	for _, d := range []struct {
		key       string
		got, want time.Duration
	}{
		{"store.hold_ttl", c.Store.HoldTTL, config.DefaultHoldTTL},
		{"store.sweep_interval", c.Store.SweepInterval, config.DefaultSweepInterval},
		{"store.timeout", c.Store.Timeout, config.DefaultStoreTimeout},
		{"request_body_timeout", c.RequestBodyTimeout, config.DefaultRequestBodyTimeout},
		{"shutdown_timeout", c.ShutdownTimeout, config.DefaultShutdownTimeout},
		{"settle_timeout", c.SettleTimeout, config.DefaultSettleTimeout},
		{"max_request_duration", c.MaxRequestDuration, config.DefaultMaxRequestDuration},
	} {
		if d.got != d.want {
			t.Errorf("config.example.yaml: %s is %s, the default is %s", d.key, d.got, d.want)
		}
	}

	apis := map[meter.API]bool{}
	for _, r := range c.Routes {
		apis[r.API] = true
	}
	for _, a := range meter.APIs() {
		if !apis[a] {
			t.Errorf("config.example.yaml has no route for api %s", a)
		}
	}

	chat := routeAt(t, c, "/v1/chat/completions")
	if chat == nil || chat.Headers.Get("Authorization") != "Bearer sk-test" {
		t.Fatalf("chat route = %+v", chat)
	}
	priority := meter.Variant{HasRates: true, Rates: rates(250_000, 125_000, 250_000, 1_000_000)}
	if got, want := chat.Prices["gpt-4o-mini"], (meter.Price{Rates: rates(150_000, 75_000, 150_000, 600_000),
		ServiceTier: map[string]meter.Variant{"priority": priority}}); !reflect.DeepEqual(got, want) {
		t.Errorf("gpt-4o-mini = %+v, want %+v", got, want)
	}
	if got := chat.Prices["gpt-4o-search-preview"].Tools[usage.WebSearch]; got != 35_000 {
		t.Errorf("gpt-4o-search-preview web_search = %s", got)
	}
	if got := chat.Prices["gpt-4o-audio-preview"].Rates; got.AudioInput != 40_000_000 || got.AudioOutput != 80_000_000 {
		t.Errorf("gpt-4o-audio-preview = %+v", got)
	}
	// The Responses route merges each chat table (<<: *gpt-4o) with the
	// built-in tools' fees, into a copy of its own.
	resp := routeAt(t, c, "/v1/responses")
	gpt4o := resp.Prices["gpt-4o"]
	if gpt4o.Rates != chat.Prices["gpt-4o"].Rates || gpt4o.ServiceTier["priority"].Rates.Input != 4_250_000 ||
		gpt4o.Tools[usage.WebSearch] != 10_000 || gpt4o.Tools[usage.CodeInterpreter] != 30_000 || resp.MaxOutputTokens != 8192 ||
		resp.ServerTools["web_search"].InputTokens != 25_000 {
		t.Errorf("responses route = %+v", resp)
	}
	if chat.Prices["gpt-4o"].Tools[usage.WebSearch] != 0 {
		t.Error("the chat route's gpt-4o got the Responses route's tool fees")
	}
	anth := routeAt(t, c, "/v1/messages")
	if got := anth.Headers; got.Get("X-Api-Key") != "sk-ant-test" || got.Get("Anthropic-Version") != "2023-06-01" {
		t.Errorf("anthropic headers = %v", got)
	}
	sonnet := anth.Prices["claude-sonnet-4-5"]
	if want := (meter.Rates{Input: 3_000_000, CachedInput: 300_000, CacheWriteInput: 3_750_000, CacheWriteInput1h: 6_000_000, AudioInput: 3_000_000,
		ImageInput: 3_000_000, Output: 15_000_000, AudioOutput: 15_000_000, ImageOutput: 15_000_000}); sonnet.Rates != want {
		t.Errorf("claude-sonnet-4-5 = %+v, want %+v", sonnet.Rates, want)
	}
	if len(sonnet.Tiers) != 1 || sonnet.Tiers[0].AboveInputTokens != 200_000 || sonnet.Tiers[0].CacheWriteInput1h != 12_000_000 ||
		sonnet.Tools[usage.WebSearch] != 10_000 || !reflect.DeepEqual(anth.Prices["claude-sonnet-4-20250514"], sonnet) {
		t.Errorf("claude-sonnet-4-5 = %+v", sonnet)
	}
	if opus := anth.Prices["claude-opus-4-6"]; opus.Speed["fast"].Rates.Output != 150_000_000 || opus.InferenceGeo["us"].Multiplier != 1_100_000 {
		t.Errorf("claude-opus-4-6 = %+v", opus)
	}
	img := routeAt(t, c, "/v1/images/")
	if got := img.Prices["dall-e-3"].PerImage["1024x1024/hd"]; got != 80_000 {
		t.Errorf("dall-e-3 1024x1024/hd = %v", got)
	}
	// gpt-image-1: a square high-quality image is $0.167, a 1536 one $0.25.
	gptImage := img.Prices["gpt-image-1"]
	for _, tc := range []struct {
		size string
		want money.Micros
	}{{"1024x1024", 167_000}, {"1536x1024", 250_000}} {
		cost, err := gptImage.Cost(meter.Usage{Images: 1, ImageSize: tc.size, ImageQuality: "high"})
		if err != nil || cost != tc.want {
			t.Errorf("gpt-image-1 %s high = %s, %v; want %s", tc.size, cost, err, tc.want)
		}
	}
	if got := routeAt(t, c, "/v1/audio/").Prices["whisper-1"].PerMinute; got != 6_000 {
		t.Errorf("whisper-1 per_minute = %v", got)
	}
	flat := routeAt(t, c, "/v1/moderations")
	if flat.API != meter.Flat || flat.MaxOutputTokens != 0 || flat.Prices["*"].PerRequest != 100 {
		t.Errorf("flat route = %+v", flat)
	}
	if got, ok := c.Stripe.Prices["price_credits_10k"]; !ok || got.Credits != 10_000*money.Credit {
		t.Errorf("stripe credits = %v, %v", got, ok)
	}
	if !reflect.DeepEqual(c.Stripe.WebhookSecrets, []string{"whsec_test"}) || c.Stripe.APIKey != "sk_test_123" ||
		c.Stripe.Livemode == nil || *c.Stripe.Livemode {
		t.Errorf("stripe = %+v", c.Stripe)
	}
}

// rates returns the rates of a table that sets input, cached_input,
// cache_write_input and output: the other rates take their defaults.
func rates(in, cached, write, out money.Micros) meter.Rates {
	return meter.Rates{Input: in, CachedInput: cached, CacheWriteInput: write, CacheWriteInput1h: write, AudioInput: in, ImageInput: in,
		Output: out, AudioOutput: out, ImageOutput: out}
}

// routeAt returns c's route with path, failing the test when there is none.
func routeAt(t *testing.T, c *config.Config, path string) *config.Route {
	t.Helper()
	for i := range c.Routes {
		if c.Routes[i].Path == path {
			return &c.Routes[i]
		}
	}
	t.Fatalf("no route %s", path)
	return nil
}

func TestLoadNamesTheFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tollgate.yaml")
	if err := os.WriteFile(path, []byte("listen: :8080\nroutez: []\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := config.Load(path)
	want := path + ":2: routez: unknown key (did you mean routes?); allowed keys: listen, admin, store, customer_header, max_request_bytes, request_body_timeout, shutdown_timeout, settle_timeout, max_request_duration, routes, stripe, events, plans, default_plan (and x-… keys, which are ignored)\n" +
		path + ": routes: none configured; add at least one route (see config.example.yaml)"
	if err == nil || err.Error() != want {
		t.Fatalf("Load = %v\nwant %s", err, want)
	}
	var p *config.Problem
	if !errors.As(err, &p) || p.File != path || p.Line != 2 || p.Path != "routez" {
		t.Errorf("first problem = %+v", p)
	}

	if _, err := config.Load(filepath.Join(t.TempDir(), "missing.yaml")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load(missing) = %v, want os.ErrNotExist", err)
	}
}

// route is a valid route for cases that break something else.
const route = `
routes:
  - path: /v1/chat/completions
    api: openai.chat
    upstream: https://api.openai.com
    prices: {gpt-4o-mini: {input: "0.15"}}
`

func TestProblems(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		env  map[string]string
		want []string
	}{
		{
			name: "unknown key with its line",
			yaml: "listen: :8080\nrouts:\n  - path: /x\n",
			want: []string{
				"line 2: routs: unknown key (did you mean routes?); allowed keys: listen, admin, store, customer_header, max_request_bytes, request_body_timeout, shutdown_timeout, settle_timeout, max_request_duration, routes, stripe, events, plans, default_plan (and x-… keys, which are ignored)",
				"routes: none configured; add at least one route (see config.example.yaml)",
			},
		},
		{
			name: "unknown nested key",
			yaml: route + "    upstrem: https://x\n",
			want: []string{"line 7: routes[0].upstrem: unknown key (did you mean upstream?); allowed keys: path, api, upstream, headers, max_output_tokens, stream_usage, model_from, server_tools, prices"},
		},
		{
			name: "stream_usage and model_from values",
			yaml: route + "    stream_usage: never\n    model_from: header\n",
			want: []string{
				`line 7: routes[0].stream_usage: "never" is not a stream_usage (want "force", the default, or "leave" for upstreams that reject stream_options)`,
				`line 8: routes[0].model_from: "header" is not a model_from (want "body", the default, or "deployment" for Azure OpenAI's /openai/deployments/{deployment}/… paths)`,
			},
		},
		{
			name: "stream_usage and model_from where they do not apply",
			yaml: `
routes:
  - path: /v1/messages
    api: anthropic.messages
    upstream: https://api.anthropic.com
    stream_usage: leave
    model_from: deployment
    prices: {claude-haiku-4-5: {input: "1"}}
`,
			want: []string{
				"line 6: routes[0].stream_usage: does not apply to api anthropic.messages: only openai.chat streams have stream_options; remove it",
				"line 7: routes[0].model_from: does not apply to api anthropic.messages: only Azure OpenAI's openai.* routes name a deployment in the path; remove it",
			},
		},
		{
			name: "x- keys are ignored at the top level only",
			yaml: "x-anchors: {a: 1}\n" + route + "    x-note: hi\n",
			want: []string{"line 8: routes[0].x-note: unknown key; allowed keys: path, api, upstream, headers, max_output_tokens, stream_usage, model_from, server_tools, prices"},
		},
		{
			name: "bad price with its line",
			yaml: `
routes:
  - path: /v1/chat/completions
    api: openai.chat
    upstream: https://api.openai.com
    prices:
      gpt-4o-mini: {input: "abc", output: "0.60"}
`,
			want: []string{`line 7: routes[0].prices.gpt-4o-mini.input: "abc" is not a decimal (want e.g. "0.15")`},
		},
		{
			name: "several problems at once, in file order",
			yaml: `
listen: localhost
store:
  hold_ttl: 0
  sweep_interval: soon
customer_header: "X Customer"
routes:
  - path: v1/chat
    api: openai.chatt
    upstream: ftp://example.com
    prices:
      gpt-4o: {input: "-1", output: 1e3, per_image: {"1024x1024": "1"}}
      "gpt-4.1": {}
  - path: v1/chat
    api: flat
    upstream: https://api.openai.com?x=1
    max_output_tokens: 10
    prices: {"*": {per_request: "0.0000001", input: "1"}}
stripe:
  prices:
    price_1: {credits: "0"}
    price_2: {}
  reconcile_window: 800h
`,
			want: []string{
				`line 2: listen: "localhost" is not a host:port address (want e.g. "127.0.0.1:8080"; an empty host means every interface)`,
				`line 4: store.hold_ttl: "0s" must be greater than 0 (want e.g. "10m")`,
				`line 5: store.sweep_interval: "soon" is not a duration (want e.g. "30s", "10m" or "1h30m")`,
				`line 6: customer_header: "X Customer" is not a valid header name (want letters, digits and dashes, e.g. "X-Tollgate-Customer")`,
				`line 8: routes[0].path: "v1/chat" must start with "/" (e.g. "/v1/chat/completions")`,
				`line 9: routes[0].api: "openai.chatt" is not an api tollgate meters (want one of openai.chat, openai.responses, openai.embeddings, openai.images, openai.audio, anthropic.messages, google.gemini, flat)`,
				`line 10: routes[0].upstream: "ftp://example.com" is not an http or https URL (want e.g. "https://api.openai.com")`,
				`line 12: routes[0].prices.gpt-4o.input: "-1" is negative (want a price of 0 or more)`,
				`line 12: routes[0].prices.gpt-4o.output: "1e3" uses an exponent; write the decimal in full (want e.g. "0.60")`,
				`line 13: routes[0].prices."gpt-4.1": sets no price; give at least one of input, cached_input, cache_write_input, cache_write_input_1h, audio_input, image_input, output, audio_output, image_output, per_request, per_image, per_minute, tools, tiers, service_tier, speed, inference_geo`,
				`line 14: routes[1].path: "v1/chat" must start with "/" (e.g. "/v1/chat/completions")`,
				`line 16: routes[1].upstream: "https://api.openai.com?x=1" has a query or fragment; give the base URL only (e.g. "https://api.openai.com")`,
				`line 17: routes[1].max_output_tokens: does not apply to api flat, which bills no output tokens; remove it`,
				`line 18: routes[1].prices."*".per_request: "0.0000001" has more than 6 decimals; amounts are counted in millionths of a credit (want e.g. "0.001")`,
				`line 18: routes[1].prices."*".input: is not a price of api flat; its prices are per_request`,
				`line 21: stripe.prices.price_1.credits: "0" must be greater than 0 (credits one unit buys, e.g. "10000")`,
				`line 22: stripe.prices.price_2: sets no credits and no plan (want e.g. {credits: "10000"}, {plan: pro}, or both)`,
				`line 23: stripe.reconcile_window: "800h0m0s" is longer than 720h: Stripe keeps events for 30 days (want e.g. "72h")`,
			},
		},
		{
			name: "price keys that make no sense for the api",
			yaml: `
routes:
  - path: /v1/chat/completions
    api: openai.chat
    upstream: https://api.openai.com
    prices:
      gpt-4o: {input: "1", per_minute: "1", per_image: {"*": "1"}}
  - path: /v1/embeddings
    api: openai.embeddings
    upstream: https://api.openai.com
    prices:
      text-embedding-3-small: {input: "0.02", output: "1"}
  - path: /v1/images/
    api: openai.images
    upstream: https://api.openai.com
    prices:
      dall-e-3: {per_image: {"1024*1024": "0.04", "auto/high": "0.2"}}
      dall-e-2: {per_image: {}}
`,
			want: []string{
				`line 7: routes[0].prices.gpt-4o.per_minute: is not a price of api openai.chat; its prices are input, cached_input, cache_write_input, audio_input, image_input, output, audio_output, per_request, tools, tiers, service_tier`,
				`line 7: routes[0].prices.gpt-4o.per_image: is not a price of api openai.chat; its prices are input, cached_input, cache_write_input, audio_input, image_input, output, audio_output, per_request, tools, tiers, service_tier`,
				`line 12: routes[1].prices.text-embedding-3-small.output: is not a price of api openai.embeddings; its prices are input, per_request`,
				`line 17: routes[2].prices.dall-e-3.per_image."1024*1024": "1024*1024" is not an image size (want "SIZE", "SIZE/QUALITY", "*/QUALITY" or "*", e.g. "1024x1024" or "1024x1024/hd")`,
				`line 18: routes[2].prices.dall-e-2.per_image: is empty; give prices by size, e.g. {"1024x1024": "0.04"}`,
			},
		},
		{
			name: "routes without prices, api or upstream, and a duplicate path",
			yaml: `
routes:
  - path: /v1/chat/completions
  - path: /v1/chat/completions
    api: openai.audio
    upstream: https://user:secret@api.openai.com
    max_output_tokens: 0
    prices: {}
`,
			want: []string{
				`line 3: routes[0].api: is empty (want one of openai.chat, openai.responses, openai.embeddings, openai.images, openai.audio, anthropic.messages, google.gemini, flat)`,
				`line 3: routes[0].upstream: is empty (want the provider's base URL, e.g. "https://api.openai.com")`,
				`line 3: routes[0].prices: none set (want at least one model, e.g. gpt-4o-mini: {input: "0.15", output: "0.60"}, or "*" for every model)`,
				`line 4: routes[1].path: "/v1/chat/completions" is already routed by routes[0] (line 3); each path may appear once`,
				`line 6: routes[1].upstream: "https://user:xxxxx@api.openai.com" carries user info; put credentials in the route's headers instead`,
				`line 7: routes[1].max_output_tokens: 0 must be greater than 0 (tokens; default 4096)`,
				`line 8: routes[1].prices: none set (want at least one model, e.g. gpt-4o-mini: {input: "0.15", output: "0.60"}, or "*" for every model)`,
			},
		},
		{
			name: "wrong kinds",
			yaml: `
listen: [a, b]
admin: ":9090"
routes:
  path: /v1/chat/completions
stripe:
  webhook_secrets: whsec_1
`,
			want: []string{
				`line 2: listen: want a single value, got a list`,
				`line 3: admin: want a mapping with listen and token, got ":9090"`,
				`line 5: routes: want a list of routes (each starting with "- path: …"), got a mapping`,
				`line 7: stripe.webhook_secrets: want a list of secrets, e.g. ["${STRIPE_WEBHOOK_SECRET}", "${STRIPE_WEBHOOK_SECRET_OLD}"], got "whsec_1"`,
			},
		},
		{
			name: "stripe price lots",
			yaml: route + `stripe:
  prices:
    a: {credits: "1", expires: 30d}
    b: {credits: "1", expires: "-1h"}
    c: {credits: "1", expires: never, grace: 1h}
    d: {credits: "1", grace: -1h, priority: 101}
    e: {credits: "1", priority: high}
    f: {credits: "1", expire: never}
`,
			want: []string{
				`line 9: stripe.prices.a.expires: "30d" is not period_end, never or a duration (want e.g. "720h"; days are written in hours)`,
				`line 10: stripe.prices.b.expires: "-1h0m0s" must be a positive duration (want e.g. "720h"), period_end or never`,
				`line 11: stripe.prices.c.grace: is added to the end of an invoice line's period, but these credits do not expire at it; remove grace or set expires: period_end`,
				`line 12: stripe.prices.d.grace: "-1h0m0s" is negative (want e.g. "72h", or 0)`,
				`line 12: stripe.prices.d.priority: "101" is out of range (want 0, spent first, to 100; unset means 50)`,
				`line 13: stripe.prices.e.priority: "high" is not a whole number (want e.g. 10)`,
				`line 14: stripe.prices.f.expire: unknown key (did you mean expires?); allowed keys: credits, expires, grace, priority, plan`,
			},
		},
		{
			name: "a key set twice",
			yaml: route + "    api: flat\n",
			want: []string{`line 7: routes[0].api: is set twice (first on line 4); keep one`},
		},
		{
			name: "headers",
			yaml: route + `    headers:
      Authorization: "Bearer ${KEY}"
      authorization: "Bearer x"
      "Bad Name": x
      Content-Length: "5"
      X-Tollgate-Customer: c
      X-Injected: "${INJECT}"
      host: example.com
`,
			env: map[string]string{"KEY": "k", "INJECT": "a\r\nHost: evil"},
			want: []string{
				`line 9: routes[0].headers.authorization: names the same header as Authorization (header names ignore case); keep one`,
				`line 10: routes[0].headers."Bad Name": "Bad Name" is not a valid header name (want letters, digits and dashes, e.g. "Authorization")`,
				`line 11: routes[0].headers.Content-Length: the proxy sets Content-Length itself; remove it from the route's headers`,
				`line 12: routes[0].headers.X-Tollgate-Customer: is the customer header, which the proxy removes before forwarding; remove it from the route's headers`,
				`line 13: routes[0].headers.X-Injected: value holds a line break or another control character (value hidden); check the variable it comes from`,
				`line 14: routes[0].headers.Host: the proxy sets Host itself; remove it from the route's headers`,
			},
		},
		{
			name: "listeners, store and stripe values",
			yaml: route + `listen: 0.0.0.0:9090
admin: {listen: ":9090"}
store:
  redis_url: "http://:hunter2@redis:6379"
shutdown_timeout: -1s
max_request_bytes: 32MiB
max_request_duration: 0s
stripe:
  api_base: "ftp://stripe"
  reconcile_interval: -1h
  reconcile_window: 0s
`,
			want: []string{
				`line 8: admin.listen: ":9090" uses the same port as listen ("0.0.0.0:9090"); the proxy and the admin API need different addresses`,
				`line 10: store.redis_url: "http://:xxxxx@redis:6379" has scheme "http"; want redis://[:password@]host:6379[/db], rediss://… for TLS or unix:///path/to/redis.sock`,
				`line 11: shutdown_timeout: "-1s" must be greater than 0 (want e.g. "30s")`,
				`line 12: max_request_bytes: "32MiB" is not a whole number (want e.g. 33554432 for 32 MiB)`,
				`line 13: max_request_duration: "0s" must be greater than 0 (want e.g. "30m")`,
				`line 15: stripe.api_base: "ftp://stripe" is not an http or https base URL without query (want e.g. "https://api.stripe.com", or "http://localhost:12111" for stripe-mock)`,
				`line 16: stripe.reconcile_interval: "-1h0m0s" is negative (want e.g. "1h", or 0 to disable the periodic run)`,
				`line 17: stripe.reconcile_window: "0s" must be greater than 0 (want e.g. "72h")`,
			},
		},
		{
			name: "request_body_timeout not positive",
			yaml: route + "request_body_timeout: 0s\n",
			want: []string{`line 7: request_body_timeout: "0s" must be greater than 0 (want e.g. "30s")`},
		},
		{
			name: "request_body_timeout not a duration",
			yaml: route + "request_body_timeout: 30\n",
			want: []string{`line 7: request_body_timeout: "30" is not a duration (want e.g. "30s", "10m" or "1h30m")`},
		},
		{
			name: "stripe.livemode unset with a webhook secret",
			yaml: route + "stripe:\n  webhook_secret: whsec_1\n",
			want: []string{`line 7: stripe.livemode: is not set; set it to true to apply live-mode Stripe events or false for test mode (events of the other mode are acknowledged and ignored); it is required with stripe.webhook_secret or stripe.api_key`},
		},
		{
			name: "stripe.livemode unset with an API key",
			yaml: route + "stripe: {api_key: rk_live_1, livemode: \"${LIVEMODE}\"}\n",
			want: []string{`line 7: stripe.livemode: is not set; set it to true to apply live-mode Stripe events or false for test mode (events of the other mode are acknowledged and ignored); it is required with stripe.webhook_secret or stripe.api_key`},
		},
		{
			name: "stripe.livemode not a boolean",
			yaml: route + "stripe:\n  webhook_secret: whsec_1\n  livemode: yes\n",
			want: []string{`line 9: stripe.livemode: "yes" is not true or false (true applies live-mode Stripe events, false test-mode ones)`},
		},
		{
			name: "stripe.api_key of the other mode",
			yaml: route + "stripe:\n  api_key: sk_test_1\n  livemode: true\n",
			want: []string{`line 8: stripe.api_key: is a test-mode key (sk_test_…) but stripe.livemode is true; use a live-mode key (sk_live_… or rk_live_…), or set stripe.livemode to false`},
		},
		{
			name: "stripe.api_key of the other mode, restricted",
			yaml: route + "stripe:\n  api_key: rk_live_1\n  livemode: false\n",
			want: []string{`line 8: stripe.api_key: is a live-mode key (rk_live_…) but stripe.livemode is false; use a test-mode key (sk_test_… or rk_test_…), or set stripe.livemode to true`},
		},
		{
			name: "store timeout",
			yaml: route + "store: {timeout: 0s}\n",
			want: []string{`line 7: store.timeout: "0s" must be greater than 0 (want e.g. "500ms")`},
		},
		{
			name: "a malformed variable reference",
			yaml: route + "admin: {token: \"${ADMIN-TOKEN}\", listen: \"${PORT\"}\n",
			want: []string{
				`line 7: admin.token: has ${ADMIN-TOKEN}, which is not a variable reference; names are letters, digits and underscores (write $${ for a literal "${")`,
				`line 7: admin.listen: has "${" without a closing "}"; write ${NAME}, or $${ for a literal "${"`,
			},
		},
		{
			name: "invalid YAML",
			yaml: "listen: :8080\n\tadmin: {}\n",
			want: []string{`line 2: is not valid YAML: found a tab character that violates indentation`},
		},
		{
			name: "invalid YAML without a line",
			yaml: "listen: a: b\n",
			want: []string{`is not valid YAML: mapping values are not allowed in this context`},
		},
		{
			name: "empty file",
			yaml: "# nothing here\n",
			want: []string{`is empty; start from config.example.yaml`},
		},
		{
			name: "two documents",
			yaml: route + "---\nlisten: :1\n",
			want: []string{`line 7: holds a second YAML document (after a --- line); put the whole configuration in one document`},
		},
		{
			name: "not a mapping",
			yaml: "- listen: :8080\n",
			want: []string{`line 1: want a mapping of keys such as listen, routes and stripe, got a list`},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := config.Parse(strings.NewReader(tc.yaml), envOf(tc.env))
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

func TestPrices(t *testing.T) {
	c := mustParse(t, `
routes:
  - path: /v1/messages
    api: anthropic.messages
    upstream: https://api.anthropic.com
    max_output_tokens: 64000
    prices:
      bare: {input: 3, cached_input: 0.3, cache_write_input: 3.75, output: 15}
      quoted: {input: "3", cached_input: "0.30", cache_write_input: "3.750000", output: "15.0"}
      free: {input: 0, output: 0}
      tiny: {input: "0.000001"}
      "*": {per_request: "0.01"}
  - path: /v1/audio/
    api: openai.audio
    upstream: https://api.openai.com
    prices:
      whisper-1: {per_minute: 0.006, per_request: "0"}
  - path: /v1/images/generations
    api: openai.images
    upstream: https://api.openai.com
    prices:
      dall-e-3: {per_image: {"1024x1024": 0.04, "1024x1024/hd": "0.08", "*/hd": "0.12", "*": "0.12"}}
`, noEnv)
	want := meter.Price{Rates: rates(3_000_000, 300_000, 3_750_000, 15_000_000)}
	a := c.Routes[0].Prices
	if !reflect.DeepEqual(a["bare"], want) || !reflect.DeepEqual(a["quoted"], want) {
		t.Errorf("bare = %+v, quoted = %+v, want %+v", a["bare"], a["quoted"], want)
	}
	if !reflect.DeepEqual(a["free"], meter.Price{}) || !reflect.DeepEqual(a["tiny"], meter.Price{Rates: rates(1, 1, 1, 0)}) || !reflect.DeepEqual(a["*"], meter.Price{PerRequest: 10_000}) {
		t.Errorf("prices = %+v", a)
	}
	if c.Routes[0].MaxOutputTokens != 64000 {
		t.Errorf("max_output_tokens = %d", c.Routes[0].MaxOutputTokens)
	}
	if got := c.Routes[1].Prices["whisper-1"]; got.PerMinute != 6_000 || got.PerRequest != 0 {
		t.Errorf("whisper-1 = %+v", got)
	}
	if got, want := c.Routes[2].Prices["dall-e-3"].PerImage, map[string]money.Micros{"1024x1024": 40_000, "1024x1024/hd": 80_000, "*/hd": 120_000, "*": 120_000}; !reflect.DeepEqual(got, want) {
		t.Errorf("per_image = %v, want %v", got, want)
	}
}

func TestEnvironment(t *testing.T) {
	yaml := `
admin:
  token: "${TOKEN}"
  listen: "${ADMIN_LISTEN}"
routes:
  - path: /v1/chat/completions
    api: openai.chat
    upstream: ${UPSTREAM}
    headers:
      Authorization: "Bearer ${OPENAI_API_KEY}"
      X-Literal: "$${NOT_A_VAR} costs $5"
    prices: {gpt-4o-mini: {input: "${PRICE}"}}
stripe:
  webhook_secret: ${WHSEC}
  webhook_secrets: ["${WHSEC_OLD}", "${WHSEC}"]
  livemode: ${LIVEMODE}
`
	t.Run("set", func(t *testing.T) {
		// A value holding YAML syntax stays one scalar: expansion happens
		// after parsing, on the node tree.
		secret := `sk-"quoted": {x: [1]}` + "\n# not a comment"
		c := mustParse(t, yaml, envOf(map[string]string{
			"TOKEN": "0123456789abcdef0123", "ADMIN_LISTEN": "127.0.0.1:9091",
			"UPSTREAM": "http://127.0.0.1:1234", "OPENAI_API_KEY": "x\ty: z",
			"PRICE": "0.15", "WHSEC": "whsec_new", "WHSEC_OLD": "whsec_old", "LIVEMODE": "true",
		}))
		if len(c.Warnings) != 0 {
			t.Errorf("warnings = %q", warnings(c))
		}
		r := c.Routes[0]
		if got := r.Headers.Get("Authorization"); got != "Bearer x\ty: z" {
			t.Errorf("Authorization = %q", got)
		}
		if got := r.Headers.Get("X-Literal"); got != "${NOT_A_VAR} costs $5" {
			t.Errorf("X-Literal = %q", got)
		}
		if r.Upstream.String() != "http://127.0.0.1:1234" || r.Prices["gpt-4o-mini"].Input != 150_000 || c.Admin.Listen != "127.0.0.1:9091" {
			t.Errorf("config = %+v", c)
		}
		if !reflect.DeepEqual(c.Stripe.WebhookSecrets, []string{"whsec_new", "whsec_old"}) {
			t.Errorf("webhook secrets = %q", c.Stripe.WebhookSecrets)
		}
		if c.Stripe.Livemode == nil || !*c.Stripe.Livemode {
			t.Errorf("livemode = %v, want true", c.Stripe.Livemode)
		}

		c = mustParse(t, "admin: {token: \"${T}\"}\n"+route, envOf(map[string]string{"T": secret}))
		if c.Admin.Token != secret {
			t.Errorf("token = %q, want %q", c.Admin.Token, secret)
		}
	})
	t.Run("unset", func(t *testing.T) {
		c, err := config.Parse(strings.NewReader(yaml), envOf(map[string]string{"UPSTREAM": "https://api.openai.com", "PRICE": "1"}))
		if err != nil {
			t.Fatal(err)
		}
		want := []string{
			`line 3: admin.token: environment variable TOKEN is not set; it expands to ""`,
			`line 3: admin.token: is empty: the admin API (/v1/*) refuses every call until it is set; the Stripe webhook, probes and metrics still work`,
			`line 4: admin.listen: environment variable ADMIN_LISTEN is not set; it expands to ""`,
			`line 10: routes[0].headers.Authorization: environment variable OPENAI_API_KEY is not set; it expands to ""`,
			`line 14: stripe.webhook_secret: environment variable WHSEC is not set; it expands to ""`,
			`line 14: stripe.webhook_secret: is empty: POST /webhooks/stripe refuses every event until it is set`,
			`line 15: stripe.webhook_secrets[0]: environment variable WHSEC_OLD is not set; it expands to ""`,
			`line 15: stripe.webhook_secrets[1]: environment variable WHSEC is not set; it expands to ""`,
			`line 16: stripe.livemode: environment variable LIVEMODE is not set; it expands to ""`,
		}
		if got := warnings(c); !reflect.DeepEqual(got, want) {
			t.Errorf("warnings:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
		// An empty value takes the default.
		if c.Admin.Listen != ":9090" || c.Routes[0].Headers.Get("Authorization") != "Bearer " || len(c.Stripe.WebhookSecrets) != 0 || c.Stripe.Livemode != nil {
			t.Errorf("config = %+v", c)
		}
	})
	t.Run("unset with an error returns the warnings too", func(t *testing.T) {
		c, err := config.Parse(strings.NewReader(yaml), envOf(map[string]string{"PRICE": "1"}))
		const want = `line 8: routes[0].upstream: is empty (want the provider's base URL, e.g. "https://api.openai.com")`
		if err == nil || err.Error() != want {
			t.Fatalf("err = %v, want %s", err, want)
		}
		if c == nil || !strings.Contains(strings.Join(warnings(c), "\n"), "line 8: routes[0].upstream: environment variable UPSTREAM is not set") {
			t.Errorf("warnings = %q", warnings(c))
		}
	})
}

func TestWarnings(t *testing.T) {
	c := mustParse(t, `
admin: {token: short}
routes:
  - path: /v1/chat/completions
    api: openai.chat
    upstream: https://api.openai.com/v1
    prices: {"*": {input: "1"}}
stripe:
  webhook_secrets: [secret1]
  api_key: pk_live_123
  prices: {price_1: {credits: 1}}
  livemode: true
`, nil)
	want := []string{
		"line 2: admin.token: is shorter than 16 characters; use a long random value, e.g. from `openssl rand -hex 32`",
		`line 6: routes[0].upstream: "https://api.openai.com/v1" ends in /v1 and the route path "/v1/chat/completions" starts with /v1/, so requests go to …/v1/v1/…; give the provider's base address, e.g. "https://api.openai.com"`,
		`line 9: stripe.webhook_secrets[0]: does not start with whsec_ as Stripe signing secrets do (Dashboard → Developers → Webhooks → Signing secret)`,
		`line 10: stripe.api_key: does not start with sk_ or rk_ as Stripe secret and restricted keys do`,
	}
	if got := warnings(c); !reflect.DeepEqual(got, want) {
		t.Errorf("warnings:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestUnitPriceWarnings: an images price with token rates and no
// per_image, and an audio price with token rates and no per_minute, are
// legal but charge DALL·E images and whisper-1 minutes an estimate, so
// each is named with its line; prices with the unit rate, or without
// token rates, are not.
func TestUnitPriceWarnings(t *testing.T) {
	c := mustParse(t, `
admin: {token: "0123456789abcdef0123"}
routes:
  - path: /v1/images/
    api: openai.images
    upstream: https://api.openai.com
    prices:
      "*": {input: "5", output: "40"}
      gpt-image-1: {input: "5", output: "40", per_image: {"*": "0.25"}}
      dall-e-3: {per_image: {"1024x1024": "0.04"}}
      cheap: {per_request: "0.01"}
  - path: /v1/audio/
    api: openai.audio
    upstream: https://api.openai.com
    prices:
      gpt-4o-transcribe: {input: "6", output: "10"}
      both: {input: "6", output: "10", per_minute: "0.006"}
      whisper-1: {per_minute: "0.006"}
  - path: /v1/chat/completions
    api: openai.chat
    upstream: https://api.openai.com
    prices: {"*": {input: "1", output: "2"}}
`, noEnv)
	want := []string{
		`line 8: routes[0].prices."*": sets token rates but no per_image: an image response without token usage (DALL·E models never report any) is charged tollgate's estimate of its tokens, e.g. 4160 output tokens for a high-quality 1024x1024 image; add per_image (e.g. {"1024x1024": "0.04"}) to charge such images by size instead`,
		`line 16: routes[1].prices.gpt-4o-transcribe: sets token rates but no per_minute: a transcription that reports a duration but no tokens (whisper-1) is charged tollgate's estimate of its tokens, 1250 audio tokens a minute plus its text; add per_minute (e.g. "0.006") to charge it by the minute instead`,
	}
	if got := warnings(c); !reflect.DeepEqual(got, want) {
		t.Errorf("warnings:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestMergeKeys: top-level x- keys hold anchors, and "<<" merges them,
// with a route's own keys winning.
func TestMergeKeys(t *testing.T) {
	c := mustParse(t, `
x-openai: &openai
  api: openai.chat
  upstream: https://api.openai.com
  headers: {Authorization: "Bearer k"}
routes:
  - <<: *openai
    path: /v1/chat/completions
    prices: {"*": {input: "1"}}
  - <<: *openai
    path: /v1/responses
    api: openai.responses
    prices: {"*": {input: "2"}}
`, noEnv)
	if len(c.Routes) != 2 {
		t.Fatalf("routes = %+v", c.Routes)
	}
	for i, want := range []meter.API{meter.OpenAIChat, meter.OpenAIResponses} {
		r := c.Routes[i]
		if r.API != want || r.Upstream.String() != "https://api.openai.com" || r.Headers.Get("Authorization") != "Bearer k" {
			t.Errorf("routes[%d] = %+v", i, r)
		}
	}
}

// TestStripePriceLots reads how the credits of each Stripe price expire
// and burn: expires (period_end, never or a duration), grace, priority.
func TestStripePriceLots(t *testing.T) {
	c, err := config.Parse(strings.NewReader(route+`stripe:
  prices:
    plain: {credits: "10"}
    monthly: {credits: "1000", expires: period_end, grace: 72h, priority: 10}
    pack: {credits: "500", expires: never, priority: 0}
    promo: {credits: "5", expires: 720h}
`), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	ten, zero := 10, 0
	want := map[string]config.StripePrice{
		"plain":   {Credits: 10 * money.Credit},
		"monthly": {Credits: 1000 * money.Credit, Expires: stripesync.ExpiresPeriodEnd, Grace: 72 * time.Hour, Priority: &ten},
		"pack":    {Credits: 500 * money.Credit, Expires: stripesync.ExpiresNever, Priority: &zero},
		"promo":   {Credits: 5 * money.Credit, Expires: stripesync.ExpiresAfter, ExpiresAfter: 720 * time.Hour},
	}
	if !reflect.DeepEqual(c.Stripe.Prices, want) {
		t.Errorf("stripe.prices = %+v\nwant %+v", c.Stripe.Prices, want)
	}
}

// TestAliasBomb: nested merge keys that would expand to a billion entries
// are refused quickly instead of hanging the loader.
func TestAliasBomb(t *testing.T) {
	var b strings.Builder
	b.WriteString("x-bomb:\n  a0: &a0 {input: \"1\"}\n")
	for i := 1; i <= 9; i++ {
		fmt.Fprintf(&b, "  a%d: &a%d {<<: [%s]}\n", i, i, strings.TrimSuffix(strings.Repeat(fmt.Sprintf("*a%d, ", i-1), 10), ", "))
	}
	b.WriteString(`routes:
  - path: /v1/chat/completions
    api: openai.chat
    upstream: https://api.openai.com
    prices: {m: *a9}
`)
	done := make(chan error, 1)
	go func() {
		_, err := config.Parse(strings.NewReader(b.String()), noEnv)
		done <- err
	}()
	select {
	case err := <-done:
		const want = "expands to more than 1000000 nodes through aliases; write it out plainly"
		if err == nil || err.Error() != want {
			t.Fatalf("err = %v, want %s", err, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Parse of an alias bomb did not return within 10s")
	}
}

// TestListenFromEnv: $TOLLGATE_LISTEN, set and not empty, overrides the
// file's listen (the container image sets it to 0.0.0.0:8080, a sidecar
// back to loopback), and a bad value is reported as coming from it.
func TestListenFromEnv(t *testing.T) {
	const file = "listen: 127.0.0.1:8080\n" + route
	tests := []struct {
		name    string
		yaml    string
		env     map[string]string
		listen  string
		fromEnv bool
	}{
		{"unset: the file's", file, nil, "127.0.0.1:8080", false},
		{"empty: the file's", file, map[string]string{"TOLLGATE_LISTEN": ""}, "127.0.0.1:8080", false},
		{"set: over the file's", file, map[string]string{"TOLLGATE_LISTEN": "0.0.0.0:8080"}, "0.0.0.0:8080", true},
		{"set: over the default", route, map[string]string{"TOLLGATE_LISTEN": ":8080"}, ":8080", true},
		{"unset: the default", route, nil, "127.0.0.1:8080", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := mustParse(t, tc.yaml, envOf(tc.env))
			if c.Listen != tc.listen || c.ListenFromEnv != tc.fromEnv {
				t.Errorf("listen %q from env %v, want %q %v", c.Listen, c.ListenFromEnv, tc.listen, tc.fromEnv)
			}
		})
	}

	bad := []struct {
		value, want string
	}{
		{"0.0.0.0", `line 1: listen: $TOLLGATE_LISTEN "0.0.0.0" is not a host:port address (want e.g. "0.0.0.0:8080"; an empty host means every interface)`},
		{"0.0.0.0:80800", `line 1: listen: $TOLLGATE_LISTEN "0.0.0.0:80800" has port "80800" (want a number from 0 to 65535, e.g. "0.0.0.0:8080")`},
		{"0.0.0.0:9090", `line 2: admin.listen: ":9090" uses the same port as listen ($TOLLGATE_LISTEN) ("0.0.0.0:9090"); the proxy and the admin API need different addresses`},
	}
	for _, tc := range bad {
		_, err := config.Parse(strings.NewReader("listen: 127.0.0.1:8080\nadmin: {listen: \":9090\"}\n"+route), envOf(map[string]string{"TOLLGATE_LISTEN": tc.value}))
		if err == nil || err.Error() != tc.want {
			t.Errorf("TOLLGATE_LISTEN=%s: err = %v\nwant %s", tc.value, err, tc.want)
		}
	}
}
