package meter

import (
	"bytes"
	"math/bits"
	"strconv"
	"strings"

	"github.com/tollgate-dev/tollgate/usage"
)

// This file holds what a Tap makes of the values the scanner captured, per
// API: commit folds each document into the response's totals, and usage
// turns the totals into the final Usage, estimating what the provider did
// not report (fallback_test.go pins those estimates).

// isTextDelta reports whether a Responses stream event type carries
// produced text in "delta": response.output_text.delta,
// response.function_call_arguments.delta, response.reasoning_summary_text.delta
// and the like, but not response.audio.delta (base64 audio).
func isTextDelta(typ *smallString) bool {
	if !typ.set {
		return true // a cut event whose type never arrived: keep its text
	}
	s := typ.b[:typ.n]
	return bytes.HasSuffix(s, []byte(".delta")) && string(s) != "response.audio.delta"
}

// commit folds one document's fields into the totals and reports whether
// it is an OpenAI chat usage chunk: a non-null usage with "choices": [].
// Text counts even from an incomplete document (it was produced); counts
// only from complete ones.
func (t *Tap) commit(f *fields, complete bool) bool {
	if t.mode != modeSSE || t.req.API != OpenAIResponses || isTextDelta(&f.str[ssType]) {
		t.textBytes += f.textBytes
		t.textValues += f.textValues
	}
	if !complete {
		return false
	}
	if f.str[ssSize].set {
		t.size = f.str[ssSize]
	}
	if f.str[ssQuality].set {
		t.quality = f.str[ssQuality]
	}
	if f.str[ssServiceTier].set {
		t.serviceTier = f.str[ssServiceTier]
	}
	if f.str[ssSpeed].set {
		t.speed = f.str[ssSpeed]
	}
	if f.str[ssGeo].set {
		t.geo = f.str[ssGeo]
	}
	if len(f.items.iterations) > 0 {
		t.iterations = f.items.iterations
	}
	if it := &f.items; t.req.API == OpenAIResponses && (t.tools != nil || it.ids.n > 0 || it.moreContainers > 0 || it.calls != [usage.NumTools]int64{}) {
		if t.tools == nil {
			t.tools = new(responseTools)
		}
		t.tools.count(it, &f.str[ssType])
	}
	if t.req.API == OpenAIImages && t.mode == modeSSE {
		typ := &f.str[ssType]
		if !typ.set || !bytes.HasSuffix(typ.b[:typ.n], []byte(".completed")) {
			return false
		}
		// Each completed event is one image with its own usage: add up.
		t.completed++
		for _, sl := range []uint8{slIn, slOut, slCached, slCacheWrite, slImageIn, slImageOut, slOutDetails} {
			if v, ok := f.get(sl); ok {
				t.rep[sl] = satAdd(t.rep[sl], v)
				t.repHas |= 1 << sl
			}
		}
		return false
	}
	// Providers' counters are cumulative (Anthropic's message_delta
	// repeats and grows them), so the largest report of each is the final
	// one, and a later zero or null can never erase an earlier count.
	// (Most events report none: visit only the slots set.)
	// That a usage object was present is kept (Gemini leaves zero counts
	// out of one), its value is not a count.
	t.repHas |= f.has & (1 << slUsage)
	for has := f.has &^ (1<<slChoices | 1<<slUsage); has != 0; has &= has - 1 {
		sl := uint8(bits.TrailingZeros32(has))
		v := f.num[sl]
		if sl == slData {
			t.rep[sl] = v // one body, one data array
		} else {
			t.rep[sl] = max(t.rep[sl], v)
		}
		t.repHas |= 1 << sl
	}
	if t.mode == modeJSON {
		t.docDone = true
	}
	n, hasChoices := f.get(slChoices)
	_, hasUsage := f.get(slUsage)
	return t.req.API == OpenAIChat && hasChoices && n == 0 && hasUsage
}

// Output-token estimates for an image whose usage never arrived, from
// OpenAI's published gpt-image-1 counts ("Image generation" guide, cost
// and latency): 272, 1,056 and 4,160 tokens for a 1024x1024 image at low,
// medium and high quality, in proportion to the area for other sizes
// (1024x1536 at high: 6,240), plus 100 per partial image of a stream.
// "auto" or unknown quality counts as high; "auto", unknown or larger
// sizes as the largest gpt-image-1 size, 1536x1024.
const (
	// ImagePartialTokens is what each partial image of a stream adds.
	ImagePartialTokens = 100
	imageMaxPixels     = 1536 * 1024
)

// ImageOutputTokens returns OpenAI's published output tokens of one
// gpt-image-1 image of size ("WIDTHxHEIGHT") and quality, by the rule
// above; tollgate estimates a cut image stream with it, and the mock
// provider reports it.
func ImageOutputTokens(size, quality string) int64 {
	per1024 := int64(4160) // high, auto, unknown
	switch quality {
	case "low":
		per1024 = 272
	case "medium":
		per1024 = 1056
	}
	pixels := int64(imageMaxPixels)
	if w, h, ok := strings.Cut(size, "x"); ok {
		wi, err1 := strconv.ParseInt(w, 10, 64)
		hi, err2 := strconv.ParseInt(h, 10, 64)
		if err1 == nil && err2 == nil && wi > 0 && hi > 0 && wi <= imageMaxPixels && hi <= imageMaxPixels {
			pixels = min(wi*hi, imageMaxPixels)
		}
	}
	return ceilDiv(pixels*per1024, 1024*1024)
}

// satMul returns a×b for non-negative a and b, saturating at the largest
// int64.
func satMul(a, b int64) int64 {
	if a > 0 && b > (1<<63-1)/a {
		return 1<<63 - 1
	}
	return a * b
}

// satAdd returns a+b, saturating at the largest int64 (and at the
// smallest, for a sum of negatives).
func satAdd(a, b int64) int64 {
	s := a + b
	switch {
	case b > 0 && s < a:
		return 1<<63 - 1
	case b < 0 && s > a:
		return -1 << 63
	}
	return s
}

func (t *Tap) has(sl uint8) bool { return t.repHas&(1<<sl) != 0 }

// BytesPerToken is the typical number of bytes of text per token that End
// uses to estimate tokens it did not see reported: about four for English
// with the byte-level BPE tokenizers OpenAI and Anthropic use. An estimate
// is a charge, not a reservation, so it aims at the typical value; the
// reservation (Request.Estimate) uses the upper bound instead.
const BytesPerToken = 4

func tokensOfText(textBytes, values int64) int64 {
	return max(values, ceilDiv(textBytes, BytesPerToken))
}

func ceilDiv(a, b int64) int64 {
	if a <= 0 {
		return 0
	}
	return (a-1)/b + 1
}

// usage builds the final Usage from the totals, estimating what is absent.
func (t *Tap) usage() Usage {
	r := &t.req
	var u Usage
	outEstimate := tokensOfText(t.textBytes, t.textValues)
	var opaque int64 // bytes of a body that is neither JSON nor SSE
	if t.mode == modeOpaque {
		opaque = t.total
	}
	if opaque > 0 && r.API != OpenAIAudio {
		// A body the Tap cannot parse (an HTML error page from a
		// gateway) still produced its bytes.
		outEstimate = ceilDiv(opaque, BytesPerToken)
	}
	switch r.API {
	case OpenAIChat, OpenAIResponses:
		t.tokens(&u, false)
		if !t.has(slOut) {
			u.OutputTokens = outEstimate
			u.Estimated = true
		}
		if t.tools != nil {
			for tool := range usage.NumTools {
				// Code interpreter: containers, as OpenAI bills it.
				u.SetCalls(tool, t.tools.calls(tool))
			}
		}
	case AnthropicMessages:
		t.tokens(&u, true)
		if t.has(slOut) {
			u.OutputTokens = max(u.OutputTokens, t.rep[slOutStart])
		} else {
			// No message_delta: message_start's count is provisional.
			u.OutputTokens = max(outEstimate, t.rep[slOutStart])
			u.Estimated = true
		}
		u.WebSearchCalls, u.WebFetchCalls = t.rep[slWebSearch], t.rep[slWebFetch]
		if t.has(slContainer) {
			u.CodeExecutionCalls = 1
		}
		u.Iterations = t.iterations
	case GoogleGemini:
		t.geminiTokens(&u, outEstimate)
	case OpenAIEmbeddings:
		t.tokens(&u, false)
	case OpenAIImages:
		reported := t.has(slIn) || t.has(slOut)
		if reported {
			t.tokens(&u, false)
		}
		switch {
		case t.mode == modeSSE && t.completed > 0:
			u.Images = t.completed
		case t.mode == modeJSON && t.docDone && t.has(slData):
			u.Images = t.rep[slData]
		default:
			// Cut, or not an image body (a JSON document without
			// "data" included): the images were made upstream.
			u.Images = max(t.rep[slData], t.completed, r.N)
			u.Estimated = true
		}
		u.ImageSize, u.ImageQuality = r.ImageSize, r.ImageQuality
		if t.size.set && !t.size.is(r.ImageSize) {
			u.ImageSize = t.size.String()
		}
		if t.quality.set && !t.quality.is(r.ImageQuality) {
			u.ImageQuality = t.quality.String()
		}
		// Without token usage, a route that prices the model by the
		// token would charge nothing (or the prompt alone), although the
		// images, most of the cost, were made.
		each := satAdd(ImageOutputTokens(u.ImageSize, u.ImageQuality), r.partialImages*ImagePartialTokens)
		in, out := r.estInput, satMul(u.Images, each)
		switch {
		case reported && !t.has(slOut):
			// An input count without an output count: the output is
			// absent, not zero.
			u.OutputTokens = out
			u.Estimated = true
		case reported:
		case u.Estimated:
			// The usage may have been lost with the rest of the body.
			u.InputTokens, u.OutputTokens = in, out
		case u.Images > 0:
			// A complete answer without usage: a model billed per
			// image (DALL·E). Price.Cost charges these tokens only
			// where the price has no per_image.
			u.FallbackInputTokens, u.FallbackOutputTokens = in, out
		}
	case OpenAIAudio:
		reported := t.has(slIn) || t.has(slOut)
		if reported {
			t.tokens(&u, false)
		}
		if t.has(slMillis) {
			u.AudioMillis = billedMillis(t.rep[slMillis])
		} else {
			// No duration in the response: the request's estimate, which
			// a per-minute price needs even when tokens were reported.
			u.AudioMillis = max(r.AudioMillis, r.audioMinMillis)
			u.Estimated = true
		}
		textOut := max(outEstimate, ceilDiv(opaque, BytesPerToken))
		audio := ceilDiv(satMul(u.AudioMillis, AudioTokensPerMinute), 60_000)
		switch {
		case reported && !t.has(slOut):
			// An input count without an output count: the output is
			// absent, not zero.
			u.OutputTokens = textOut
			if r.speech {
				u.OutputTokens = audio
			}
			u.Estimated = true
		case reported:
		case !t.has(slMillis):
			u.InputTokens = r.estInput
			if r.speech {
				u.OutputTokens = r.audioTokens
			} else {
				u.OutputTokens = textOut
			}
		case u.AudioMillis > 0:
			// A duration without tokens: a model billed by the minute
			// (whisper-1). Price.Cost charges these tokens only where
			// the price has no per_minute: the provider's duration as
			// audio tokens, as the estimate above converts the upload's.
			if r.speech {
				u.FallbackInputTokens, u.FallbackOutputTokens = r.estInput, audio
			} else {
				u.FallbackInputTokens, u.FallbackOutputTokens = satAdd(r.estText, audio), textOut
			}
		}
	case Flat:
		// Priced per request only.
	}
	t.parts(&u)
	u.ServiceTier, u.Speed, u.InferenceGeo = t.serviceTier.variant(), t.speed.variant(), t.geo.variant()
	return u
}

// parts fills u's audio and image parts of the input and output from the
// totals, within the counts they are parts of.
func (t *Tap) parts(u *Usage) {
	if !t.has(slIn) && !t.has(slOut) {
		return // nothing reported: no parts either
	}
	u.AudioInputTokens = min(t.rep[slAudioIn], u.InputTokens)
	u.ImageInputTokens = min(t.rep[slImageIn], u.InputTokens-u.AudioInputTokens)
	audioOut, imageOut := t.rep[slAudioOut], t.rep[slImageOut]
	switch {
	case t.req.API == OpenAIAudio && t.req.speech:
		// Speech output is audio, whatever the usage says.
		audioOut = u.OutputTokens
	case t.req.API == OpenAIImages && !t.has(slOutDetails):
		// gpt-image-1 reports no output details: its output is the
		// images.
		imageOut = u.OutputTokens
	}
	u.AudioOutputTokens = min(audioOut, u.OutputTokens)
	u.ImageOutputTokens = min(imageOut, u.OutputTokens-u.AudioOutputTokens)
}

// billedMillis rounds a reported audio duration the way OpenAI bills
// whisper-1, to the nearest second (OpenAI pricing, "Transcription and
// speech generation"), half up, and never to nothing: 36.71 s is billed
// as 37 s, 0.2 s as 1 s.
func billedMillis(ms int64) int64 {
	if ms <= 0 {
		return 0
	}
	return max(satMul(satAdd(ms, 500)/1000, 1000), 1000)
}

// tokens fills u's token counts from the totals, normalising Anthropic's
// exclusive input count, and estimates the input when none was reported.
func (t *Tap) tokens(u *Usage, anthropic bool) {
	if !t.has(slIn) && !t.has(slCached) && !t.has(slCacheWrite) {
		u.InputTokens = t.req.estInput
		u.Estimated = true
	} else {
		in, cached, write := t.rep[slIn], t.rep[slCached], t.rep[slCacheWrite]
		// Anthropic splits its writes by lifetime in cache_creation; the
		// total may be absent where the split is not.
		write = max(write, satAdd(t.rep[slCacheWrite1h], t.rep[slCacheWrite5m]))
		if anthropic {
			// input_tokens excludes both cache counts: add them, once.
			in = satAdd(satAdd(in, cached), write)
		}
		// OpenAI counts cached tokens inside the input; never let a
		// provider's inconsistency price more cached than input tokens.
		cached = min(cached, in)
		write = min(write, in-cached)
		u.InputTokens, u.CachedInputTokens, u.CacheWriteInputTokens = in, cached, write
		u.CacheWrite1hInputTokens = min(t.rep[slCacheWrite1h], write)
	}
	u.OutputTokens = t.rep[slOut]
}

// geminiTokens fills u from Gemini's usageMetadata totals (see the
// schemas' wire formats): the prompt (cached content included) plus the
// tool-use prompt as input, of which the cached content is cached input;
// the candidates plus the thoughts as output. Within a usageMetadata an
// absent count is zero (proto3 JSON leaves zeros out); a response
// without any is estimated. An answer that did not end (no finishReason,
// no blockReason, no closed body or array: the stream was cut) is
// charged at least the estimate of the text it produced, and Estimated,
// since text may have streamed after the last usageMetadata.
func (t *Tap) geminiTokens(u *Usage, outEstimate int64) {
	if !t.has(slUsage) {
		u.InputTokens, u.OutputTokens = t.req.estInput, outEstimate
		u.Estimated = true
		return
	}
	in := satAdd(t.rep[slIn], t.rep[slToolPrompt])
	u.InputTokens = in
	u.CachedInputTokens = min(t.rep[slCached], in)
	u.OutputTokens = satAdd(t.rep[slOut], t.rep[slThoughts])
	if !t.has(slFinish) && !t.docDone {
		u.OutputTokens = max(u.OutputTokens, outEstimate)
		u.Estimated = true
	}
}
