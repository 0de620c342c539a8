package meter

import (
	"slices"

	"github.com/tollgate-dev/tollgate/money"
	"github.com/tollgate-dev/tollgate/usage"
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
// Usage and its cost (DESIGN "Preflight estimate"), with the default
// server-tool allowances and any advisor priced at p. The proxy uses
// Prices.Estimate, which prices an advisor at its own model.
func (r Request) Estimate(p Price, ceiling int64) (Usage, money.Micros, error) {
	return Prices(nil).estimate(&p, r, ceiling, nil)
}

// Estimate returns the preflight reservation of r, a request to a route
// with prices ps and server-tool allowances st: a worst-case Usage and its
// cost (DESIGN "Preflight estimate").
//
//   - Input: r.InputTokens (see Request for the rule).
//   - Output: the request's cap (r.MaxOutputTokens), or the ceiling when
//     the request sets none, clamped to the ceiling, times r.N. The
//     ceiling is the route's max_output_tokens (or a lower one, such as a
//     customer plan's); ceiling ≤ 0 means none: the request's cap stands,
//     or DefaultMaxOutputTokens when it sets none. Rewrite with the same
//     ceiling makes the body sent upstream ask for no more, so the hold
//     bounds the output, which the providers count over the whole
//     response, every server-tool step included. Embeddings produce no
//     output tokens; speech produces its estimated audio tokens.
//   - Server-side tools (web search and fetch, code execution, file
//     search, code interpreter, image generation, the advisor, MCP): each
//     tool's max_uses calls, or its ServerTools allowance's MaxUses (for
//     openai.responses, at most max_tool_calls in all), each with its
//     per-call fee and its result's InputTokens. Every call starts
//     another sampling step that reads the prompt, the results so far and
//     the output so far again, so C calls hold r.InputTokens × (C+1), each
//     result once for every later step (the largest results first), and
//     the output cap × C more input. An advisor call is a step of the
//     advisor's model, priced at its price (Iterations), reading at most
//     the whole context and writing at most its max_tokens.
//   - Compaction (anthropic.messages context_management with a
//     compact_* edit): before each sampling step, a summarising step that
//     reads at most the whole context and writes at most the output cap.
//   - Units: r.N images of r's size and quality; r.AudioMillis of audio,
//     rounded up to whole seconds as providers bill it. Price.Cost
//     decides whether tokens or units are charged.
//   - flat: nothing but Price.PerRequest.
//
// Every token is priced at the highest rate of its kind in force (input:
// Input, CachedInput, CacheWriteInput, CacheWriteInput1h if the body asks
// for a 1-hour cache anywhere ("1h"), AudioInput, ImageInput;
// output: Output, AudioOutput, ImageOutput), since the request cannot
// know what the cache will hold or how the answer splits; the Usage shows
// the tokens in that class. The rates are those of the most expensive
// variant the response could be billed at: a request that names no
// service tier, or "auto", may be served at any tier the price lists (the
// project's or workspace's default decides, which tollgate cannot see);
// one that names a tier at that tier or the standard rates (a provider
// may serve it at standard); speed "fast" at fast or standard rates; a
// request that names no inference_geo at any geography listed (the
// workspace default decides), one that names one at it or the standard
// rates. Long-context tiers apply by the input held.
//
// Estimate returns a *ModelNotPricedError when r's model, or an advisor
// model the request names, has no price; and ErrCostRange when the worst
// case does not fit in money.Micros (an absurd cap × n at an absurd
// rate), which no balance can cover.
func (ps Prices) Estimate(r Request, ceiling int64, st ServerTools) (Usage, money.Micros, error) {
	p, err := ps.Lookup(r.Model)
	if err != nil {
		return Usage{}, 0, err
	}
	for _, t := range r.tools {
		if t.kind == ToolKindAdvisor && t.model != "" {
			if _, err := ps.Lookup(t.model); err != nil {
				return Usage{}, 0, err
			}
		}
	}
	return ps.estimate(&p, r, ceiling, st)
}

func (ps Prices) estimate(p *Price, r Request, ceiling int64, st ServerTools) (Usage, money.Micros, error) {
	var u Usage
	var advisor *Iteration
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
		if r.API == OpenAIImages {
			// An image's output tokens are its size's and quality's,
			// whatever a cap says: images have no cap field.
			out = max(out, satAdd(ImageOutputTokens(r.ImageSize, r.ImageQuality), satMul(r.partialImages, ImagePartialTokens)))
		}
		u.OutputTokens = satMul(out, max(r.N, 1))
		if r.API == OpenAIImages {
			u.Images = max(r.N, 1)
			u.ImageSize, u.ImageQuality = r.ImageSize, r.ImageQuality
		}
		if r.API == OpenAIAudio {
			u.AudioMillis = satMul(ceilDiv(r.AudioMillis, 1000), 1000)
		}
		if len(r.tools) > 0 || r.compaction {
			advisor = r.holdServerTools(&u, st, ceiling)
		}
	}
	if r.API == OpenAIChat && p.Tools[usage.WebSearch] > 0 {
		u.WebSearchCalls = 1 // see Prices.Charge
	}

	// The most expensive variant the response could be billed at.
	tiers, speeds, geos := r.variants(p)
	var best Usage
	bestCost := money.Micros(-1)
	for _, tier := range tiers {
		for _, speed := range speeds {
			for _, geo := range geos {
				c := u
				c.ServiceTier, c.Speed, c.InferenceGeo = tier, speed, geo
				if err := ps.label(p, &c, advisor, r.cache1h); err != nil {
					return Usage{}, 0, err
				}
				cost, err := ps.cost(p, &c)
				if err != nil {
					return Usage{}, 0, err
				}
				if cost > bestCost {
					best, bestCost = c, cost
				}
			}
		}
	}
	return best, bestCost, nil
}

// holdServerTools adds the calls of r's server-side tools to u, a request
// usage without them (see Estimate), and returns the step of an advisor
// model, or nil.
func (r *Request) holdServerTools(u *Usage, st ServerTools, ceiling int64) *Iteration {
	type group struct {
		kind           string
		calls, perCall int64
	}
	var groups []group
	var advisorCalls, advisorOut int64
	advisorModel := ""
	for _, t := range r.tools {
		a := st.allowance(t.kind)
		g := group{kind: t.kind, calls: t.maxUses, perCall: a.InputTokens}
		if g.calls == 0 {
			g.calls = a.MaxUses
		}
		if t.perCall > 0 {
			g.perCall = t.perCall
		}
		if t.kind == ToolKindAdvisor {
			if g.perCall == 0 {
				g.perCall = outputCap(0, ceiling)
			}
			advisorCalls = satAdd(advisorCalls, g.calls)
			advisorOut = max(advisorOut, g.perCall)
			advisorModel = t.model
		}
		groups = append(groups, g)
	}
	var calls int64
	for _, g := range groups {
		calls = satAdd(calls, g.calls)
	}
	if r.maxToolCalls > 0 && calls > r.maxToolCalls {
		// OpenAI's max_tool_calls bounds the calls of every built-in tool
		// together: hold for that many of the largest results, and for
		// each tool's fee as if every call were that tool's.
		calls = r.maxToolCalls
		for i := range groups {
			groups[i].calls = min(groups[i].calls, calls)
		}
	}
	// Fees: one per call; Anthropic bills code execution per container,
	// one per response.
	for _, g := range groups {
		if tool, ok := usage.ParseTool(g.kind); ok {
			n := g.calls
			if tool == usage.CodeExecution {
				n = 1
			}
			u.SetCalls(tool, max(u.Calls(tool), n))
		}
	}
	// Each result is read by every step after its call: the largest
	// results first is the worst case.
	slices.SortStableFunc(groups, func(a, b group) int {
		switch {
		case a.perCall > b.perCall:
			return -1
		case a.perCall < b.perCall:
			return 1
		}
		return 0
	})
	prompt := u.InputTokens
	out := u.OutputTokens
	in := satMul(prompt, satAdd(calls, 1))
	context := satAdd(prompt, out)
	pos := int64(0) // calls placed so far
	for _, g := range groups {
		n := min(g.calls, calls-pos)
		if n <= 0 {
			break
		}
		// The call at position k is read by the calls+1−k steps after
		// it; the calls at pos+1 … pos+n, n(2(calls−pos)−n+1)/2 times.
		reads := satMul(n, satAdd(satMul(2, calls-pos), 1-n)) / 2
		in = satAdd(in, satMul(g.perCall, reads))
		context = satAdd(context, satMul(g.perCall, n))
		pos += n
	}
	in = satAdd(in, satMul(out, calls))
	if r.compaction {
		// Compaction summarises the context in a step of its own before
		// a sampling step, at most once per step: each reads at most the
		// whole context and writes a summary, which the output cap
		// bounds (Anthropic "Compaction").
		steps := satAdd(calls, 1)
		in = satAdd(in, satMul(steps, context))
		u.OutputTokens = satAdd(u.OutputTokens, satMul(steps, out))
	}
	u.InputTokens = in
	if advisorCalls == 0 {
		return nil
	}
	// An advisor call reads at most the whole context and writes at most
	// its cap, at the advisor model's rates.
	advisorCalls = min(advisorCalls, calls)
	return &Iteration{Type: "advisor_message", Model: advisorModel, Tokens: usage.Tokens{
		InputTokens:  satMul(advisorCalls, context),
		OutputTokens: satMul(advisorCalls, advisorOut),
	}}
}

// variants returns the values of service tier, speed and inference
// geography whose variants of p the response to r could be billed at
// ("" for the standard rates); see Estimate.
func (r *Request) variants(p *Price) (tiers, speeds, geos []string) {
	switch r.API {
	case AnthropicMessages:
		return candidates(p.ServiceTier, r.serviceTier, true),
			candidates(p.Speed, r.speed, false),
			candidates(p.InferenceGeo, r.inferenceGeo, true)
	case OpenAIChat, OpenAIResponses:
		return candidates(p.ServiceTier, r.serviceTier, true), standardOnly, standardOnly
	}
	// The other APIs report no variant.
	return standardOnly, standardOnly, standardOnly
}

// standardOnly is the candidates of a dimension the API does not report.
var standardOnly = []string{""}

// candidates returns "" and the keys of m the response to a request
// asking for want may be billed at: every key when want is "" (or
// "auto") and unset means the account's default; else want's.
func candidates(m map[string]Variant, want string, unsetIsDefault bool) []string {
	out := []string{""}
	if len(m) == 0 {
		return out
	}
	if want == "" || want == "auto" {
		if !unsetIsDefault {
			if _, ok := m["standard"]; ok {
				out = append(out, "standard")
			}
			return out
		}
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		return append(out, keys...)
	}
	for k := range m {
		// OpenAI answers service_tier "priority" to a request for "fast"
		// (API reference, service_tier); Anthropic's "standard_only"
		// is served at "standard".
		if k == want || (want == "fast" && k == "priority") || (want == "priority" && k == "fast") ||
			(want == "standard_only" && k == "standard") {
			out = append(out, k)
		}
	}
	slices.Sort(out[1:])
	return out
}

// label puts u's input and output tokens (and the advisor step's, when
// not nil) in their dearest class at the rates in force for u's
// variants, so that Cost prices each token at the highest rate it could
// be billed at. With an advisor, u gets Iterations: its own step and the
// advisor's.
func (ps Prices) label(p *Price, u *Usage, advisor *Iteration, cache1h bool) error {
	main := usage.Tokens{InputTokens: u.InputTokens, OutputTokens: u.OutputTokens}
	if err := p.dearest(u, &main, cache1h); err != nil {
		return err
	}
	if advisor == nil {
		calls := u.Tokens
		u.Tokens = main
		for tool := range usage.NumTools {
			u.SetCalls(tool, calls.Calls(tool))
		}
		return nil
	}
	a := *advisor
	ap := p
	if a.Model != "" && ps != nil {
		if q, ok := ps.find(a.Model); ok {
			ap = &q
		}
	}
	if err := ap.dearest(u, &a.Tokens, cache1h); err != nil {
		return err
	}
	u.Iterations = []Iteration{{Type: "message", Tokens: main}, a}
	sum := main
	addTokenClasses(&sum, &a.Tokens)
	for tool := range usage.NumTools {
		sum.SetCalls(tool, u.Calls(tool))
	}
	u.Tokens = sum
	return nil
}

// dearest moves t's input and output into their dearest classes at p's
// rates in force for u's variants and t's input; 1-hour cache writes
// only when cache1h (see Request.cache1h).
func (p *Price) dearest(u *Usage, t *usage.Tokens, cache1h bool) error {
	r, _, err := p.rates(u, t.InputTokens)
	if err != nil {
		return err
	}
	in, out := t.InputTokens, t.OutputTokens
	*t = usage.Tokens{InputTokens: in, OutputTokens: out}
	write1h := r.CacheWriteInput1h
	if !cache1h {
		write1h = 0
	}
	switch max(r.Input, r.CachedInput, r.CacheWriteInput, write1h, r.AudioInput, r.ImageInput) {
	case r.Input:
	case write1h:
		t.CacheWriteInputTokens, t.CacheWrite1hInputTokens = in, in
	case r.CacheWriteInput:
		t.CacheWriteInputTokens = in
	case r.CachedInput:
		t.CachedInputTokens = in
	case r.AudioInput:
		t.AudioInputTokens = in
	default:
		t.ImageInputTokens = in
	}
	switch max(r.Output, r.AudioOutput, r.ImageOutput) {
	case r.Output:
	case r.AudioOutput:
		t.AudioOutputTokens = out
	default:
		t.ImageOutputTokens = out
	}
	return nil
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
