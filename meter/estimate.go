package meter

import (
	"math"

	"github.com/tollgate-dev/tollgate/money"
)

// This file holds the preflight estimate: the constants of the contract
// that decide what a request holds, and Request.Estimate, the worst-case
// Usage and cost the proxy reserves.

// Constants of the preflight estimate. They are part of the contract:
// changing one changes what customers are asked to hold.
const (
	// DefaultMaxOutputTokens is the output cap of a request that sets none
	// on a route that sets none (the route's max_output_tokens ≤ 0).
	DefaultMaxOutputTokens = 4096

	// MaxN is the largest "n" a request may ask for: OpenAI's documented
	// maximum for chat completions (images allow at most 10). A larger n
	// is refused as an invalid request instead of being reserved.
	MaxN = 128

	// ImageTokenCeiling is what one image in a prompt counts for in the
	// input estimate, instead of the bytes that encode it: a 1 MB base64
	// image is about 1.4 million bytes but a few hundred to a few thousand
	// tokens. Providers bound the tokens of one image: OpenAI's tile
	// models at 1,445 (8 tiles × 170 + 85), its patch models at 1,536
	// patches × a model multiplier (≤ 2.46, so ≤ 3,779), Anthropic at
	// about 1,600 for the 1.15 megapixels it resizes to. 5,000 covers
	// them. Known exception: gpt-4o-mini counts an image as up to ~48,000
	// tokens (2,833 + 5,667 per tile) at a correspondingly lower rate; its
	// reservation falls short by a fraction of a cent per image and
	// settlement charges the provider's count regardless.
	ImageTokenCeiling = 5000

	// RequestOverheadTokens is added to every input estimate for tokens
	// the provider adds that the body does not spell out: chat-format
	// role and priming tokens and Anthropic's tool-use system prompt (346
	// tokens at most, Anthropic "Tool use" pricing).
	RequestOverheadTokens = 512

	// ToolTokenFloor is the least one entry of "tools" counts for. Built-in
	// tools are declared in a few bytes ({"type": "bash_20250124", ...})
	// but bring their own prompt of hundreds of tokens.
	ToolTokenFloor = 1024

	// AudioBytesPerSecond is the bitrate floor (16 kbit/s) the audio
	// duration estimate assumes for an upload whose header it cannot read
	// (WAV, FLAC and MP3 headers state the duration): a file of B bytes
	// counts as B / 2,000 seconds. Speech is rarely encoded below it (MP3
	// and AAC at 16 kbit/s are already poor), so the estimate is high for
	// common files (4× for 64 kbit/s Opus or AAC). It is used for the
	// reservation, and for the charge only when the response carries no
	// duration (response_format text, srt or vtt).
	AudioBytesPerSecond = 2000

	// AudioMaxBytesPerSecond (3 Mbit/s, above 24-bit 48 kHz stereo PCM)
	// bounds how short a file of a given size can be. A duration read from
	// the file's own header is the client's claim; when the response
	// reports no duration, the charge uses at least this bound, and for
	// MP3 and FLAC the tighter one of the format (448 kbit/s; 9/8 of the
	// PCM rate), so a doctored header cannot make a long recording cheap.
	// WAV PCM durations come from the fields decoders play by (sample
	// rate × block align), not from the header's byte rate.
	AudioMaxBytesPerSecond = 384_000

	// AudioTokensPerMinute converts an audio duration to audio tokens for
	// routes that price audio models by the token: OpenAI's per-token and
	// per-minute prices for gpt-4o-transcribe and gpt-4o-mini-tts imply
	// about 1,000 to 1,250 audio tokens a minute.
	AudioTokensPerMinute = 1250

	// SpeechCharsPerMinute estimates the duration of text-to-speech at
	// speed 1.0: 750 characters a minute, a slow narration pace (~125
	// words), so the estimate leans long. "speed" scales it.
	SpeechCharsPerMinute = 750
)

// Estimate returns the preflight reservation of r at price p: a worst-case
// Usage and its cost (DESIGN "Preflight estimate").
//
//   - Input: r.InputTokens (see Request for the rule), each token priced at
//     the highest of Input, CachedInput and CacheWriteInput, since the
//     request cannot know what the cache will hold; the Usage shows them
//     as cache writes or cache reads when that rate is the highest.
//   - Output: the request's cap (r.MaxOutputTokens), or the ceiling when
//     the request sets none, clamped to the ceiling, times r.N. The
//     ceiling is the route's max_output_tokens (or a lower one, such as a
//     customer plan's); ceiling ≤ 0 means none: the request's cap stands,
//     or DefaultMaxOutputTokens when it sets none. Rewrite with the same
//     ceiling makes the body sent upstream ask for no more, so the hold
//     bounds the output. Embeddings produce no output tokens; speech
//     produces its estimated audio tokens.
//   - Units: r.N images of r's size and quality; r.AudioMillis of audio.
//     Price.Cost decides whether tokens or units are charged.
//   - flat: nothing but Price.PerRequest.
//
// The proxy reserves the returned cost. It fails with ErrCostRange when
// the worst case does not fit in money.Micros (an absurd cap × n at an
// absurd rate), which no balance can cover.
func (r Request) Estimate(p Price, ceiling int64) (Usage, money.Micros, error) {
	var u Usage
	switch r.API {
	case Flat:
	case OpenAIEmbeddings:
		u.InputTokens = r.InputTokens
	default:
		u.InputTokens = r.InputTokens
		out := outputCap(r.MaxOutputTokens, ceiling)
		if r.API == OpenAIAudio && r.speech {
			out = r.audioTokens
		}
		n := max(r.N, 1)
		if out > math.MaxInt64/n {
			u.OutputTokens = math.MaxInt64
		} else {
			u.OutputTokens = out * n
		}
		if r.API == OpenAIImages {
			u.Images = n
			u.ImageSize, u.ImageQuality = r.ImageSize, r.ImageQuality
		}
		if r.API == OpenAIAudio {
			u.AudioMillis = r.AudioMillis
		}
	}
	switch top := max(p.Input, p.CachedInput, p.CacheWriteInput); {
	case top == p.Input:
	case top == p.CacheWriteInput:
		u.CacheWriteInputTokens = u.InputTokens
	default:
		u.CachedInputTokens = u.InputTokens
	}
	cost, err := p.Cost(u)
	if err != nil {
		return Usage{}, 0, err
	}
	return u, cost, nil
}

// outputCap applies DESIGN's rule: the request's cap or the ceiling,
// clamped to the ceiling.
func outputCap(req, ceiling int64) int64 {
	switch {
	case req > 0 && ceiling > 0:
		return min(req, ceiling)
	case req > 0:
		return req
	case ceiling > 0:
		return ceiling
	}
	return DefaultMaxOutputTokens
}
