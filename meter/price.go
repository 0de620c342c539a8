// Package meter prices AI API requests: before forwarding (a worst-case
// estimate from the request body) and after (the real usage read from the
// JSON or SSE response as it streams past).
//
// It is pure: bytes in, usage and cost out. It does no I/O, keeps no clock,
// logs nothing and knows no customers; the proxy feeds it and the ledger
// records what it computes.
package meter

import (
	"github.com/tollgate-dev/tollgate/money"
	"github.com/tollgate-dev/tollgate/usage"
)

// API names the wire format of a route: how its requests are estimated and
// where its responses carry usage.
type API string

// The APIs tollgate meters.
const (
	OpenAIChat        API = "openai.chat"        // POST /v1/chat/completions
	OpenAIResponses   API = "openai.responses"   // POST /v1/responses
	OpenAIEmbeddings  API = "openai.embeddings"  // POST /v1/embeddings
	OpenAIImages      API = "openai.images"      // POST /v1/images/generations, edits, variations
	OpenAIAudio       API = "openai.audio"       // POST /v1/audio/transcriptions, translations, speech
	AnthropicMessages API = "anthropic.messages" // POST /v1/messages
	GoogleGemini      API = "google.gemini"      // POST /v1beta/models/{model}:generateContent, :streamGenerateContent
	Flat              API = "flat"               // any endpoint, a fixed price per request
)

// APIs lists every API in the order the documentation gives them.
func APIs() []API {
	return []API{OpenAIChat, OpenAIResponses, OpenAIEmbeddings, OpenAIImages, OpenAIAudio, AnthropicMessages, GoogleGemini, Flat}
}

// Valid reports whether a is one of APIs.
func (a API) Valid() bool {
	for _, b := range APIs() {
		if a == b {
			return true
		}
	}
	return false
}

// Rates are the token rates of one price table, in micro-credits per 1M
// tokens as providers publish them. Each class of usage.Tokens has its
// rate; Price.Cost says which tokens each applies to.
//
// Config loading fills the defaults, so Rates here are complete: a rate
// the config leaves out is the one it falls back to (CachedInput,
// CacheWriteInput, AudioInput and ImageInput to Input;
// CacheWriteInput1h to CacheWriteInput; AudioOutput and ImageOutput to
// Output), never cheaper than the class it is part of is priced.
type Rates struct {
	Input             money.Micros // input tokens not read from or written to the cache, text
	CachedInput       money.Micros // input tokens read from the prompt cache
	CacheWriteInput   money.Micros // input tokens written to the cache (Anthropic: for 5 minutes)
	CacheWriteInput1h money.Micros // input tokens written to Anthropic's cache for 1 hour
	AudioInput        money.Micros // audio input tokens not read from or written to the cache
	ImageInput        money.Micros // image input tokens not read from or written to the cache
	Output            money.Micros // output tokens, reasoning included, text
	AudioOutput       money.Micros // audio output tokens
	ImageOutput       money.Micros // image output tokens
}

// any reports whether r charges for any token.
func (r *Rates) any() bool {
	return r.Input > 0 || r.CachedInput > 0 || r.CacheWriteInput > 0 || r.CacheWriteInput1h > 0 ||
		r.AudioInput > 0 || r.ImageInput > 0 || r.Output > 0 || r.AudioOutput > 0 || r.ImageOutput > 0
}

// negative reports whether r has a negative rate.
func (r *Rates) negative() bool {
	return r.Input < 0 || r.CachedInput < 0 || r.CacheWriteInput < 0 || r.CacheWriteInput1h < 0 ||
		r.AudioInput < 0 || r.ImageInput < 0 || r.Output < 0 || r.AudioOutput < 0 || r.ImageOutput < 0
}

// Tier prices a whole request, or a whole step of one (see
// Usage.Iterations), whose input is above a number of tokens: Anthropic's
// long-context rates above 200,000 input tokens, OpenAI's above 272,000 on
// some models. All its tokens, input and output, are priced at the tier's
// rates, as both providers bill.
type Tier struct {
	// AboveInputTokens is the threshold: the tier applies when the step's
	// input tokens (cached and cache writes included) exceed it.
	AboveInputTokens int64
	Rates
}

// Variant is what a model costs when a response says it was served in a
// particular way: a service tier (OpenAI's "priority" or "flex",
// Anthropic's "priority"), a speed (Anthropic's "fast") or an inference
// geography (Anthropic's "us").
type Variant struct {
	// Rates and Tiers replace the model's token rates and tiers when
	// HasRates is set: the variant is priced as the provider's page
	// prices it, in its own table.
	Rates    Rates
	Tiers    []Tier
	HasRates bool
	// Multiplier, when not zero, scales every token rate in force, in
	// millionths (1,100,000 is Anthropic's 1.1× for US-only inference).
	// It does not scale tool fees or PerRequest. At most one variant that
	// a response selects may set it (config keeps it to inference_geo);
	// Cost refuses two with ErrCostRange.
	Multiplier int64
}

// Price is what one model costs on one route: token rates, with tiers and
// variants, per-call tool fees and per-unit rates. Every component that
// applies adds to the cost, and the request's total is rounded up to the
// micro-credit once (see Cost).
type Price struct {
	// Rates are the model's standard token rates.
	Rates
	// Tiers are long-context rates, by ascending AboveInputTokens; the
	// highest tier a step's input exceeds applies.
	Tiers []Tier
	// ServiceTier, Speed and InferenceGeo are the variants, keyed by the
	// value the response reports (OpenAI's service_tier; Anthropic's
	// usage.service_tier, usage.speed and usage.inference_geo). A value
	// without an entry is priced at the standard rates. They apply in
	// that order: one that has rates replaces the rates so far, one with
	// a Multiplier scales them.
	ServiceTier  map[string]Variant
	Speed        map[string]Variant
	InferenceGeo map[string]Variant

	// Tools are per-call fees of the provider-side tools, in
	// micro-credits per call (see usage.Tool for what one call is).
	Tools [usage.NumTools]money.Micros
	// PerRequest is charged once per request, on top of everything else.
	PerRequest money.Micros
	// PerImage prices a generated image by "SIZE" or "SIZE/QUALITY" (for
	// example "1024x1024" or "1024x1024/hd"); "*" matches any size.
	PerImage  map[string]money.Micros
	PerMinute money.Micros // per minute of audio
}

// Prices maps a model name to its price on one route. The key "*" prices
// every model without its own entry; without it, an unlisted model is
// refused with ErrModelNotPriced.
type Prices map[string]Price
