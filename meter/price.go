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
	Flat              API = "flat"               // any endpoint, a fixed price per request
)

// APIs lists every API in the order the documentation gives them.
func APIs() []API {
	return []API{OpenAIChat, OpenAIResponses, OpenAIEmbeddings, OpenAIImages, OpenAIAudio, AnthropicMessages, Flat}
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

// Price is what one model costs on one route. Token rates are micro-credits
// per 1M tokens, as providers publish them; the other rates are
// micro-credits per unit. Every component that applies adds to the cost, and
// the request's total is rounded up to the micro-credit once.
//
// Config loading fills the defaults, so a Price here is complete:
// CachedInput and CacheWriteInput equal Input when the config leaves them
// out (never cheaper than the provider may bill).
type Price struct {
	Input           money.Micros // per 1M input tokens not read from cache
	CachedInput     money.Micros // per 1M input tokens read from the prompt cache
	CacheWriteInput money.Micros // per 1M input tokens written to the prompt cache
	Output          money.Micros // per 1M output tokens, reasoning included
	PerRequest      money.Micros // per request, on top of everything else
	// PerImage prices a generated image by "SIZE" or "SIZE/QUALITY" (for
	// example "1024x1024" or "1024x1024/hd"); "*" matches any size.
	PerImage  map[string]money.Micros
	PerMinute money.Micros // per minute of audio
}

// Prices maps a model name to its price on one route. The key "*" prices
// every model without its own entry; without it, an unlisted model is
// refused with ErrModelNotPriced.
type Prices map[string]Price
