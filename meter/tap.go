package meter

import (
	"bytes"
	"strconv"
	"strings"
)

// MaxHeldEventBytes bounds what a Tap holds back. Only a Tap that filters
// (openai.chat streams whose client did not ask for usage) holds anything:
// the current, incomplete SSE event, until its end shows whether it is the
// injected usage chunk. An event that grows past this bound cannot be that
// chunk (it is a few hundred bytes) and is released as it arrives.
//
// A Tap's memory is therefore its fixed-size state (about 1 KiB) plus, when
// filtering, at most MaxHeldEventBytes held and MaxHeldEventBytes + len(p)
// of output assembled per Feed, whatever the size of the response: a
// multi-megabyte b64_json image or response.completed event is scanned
// without being buffered.
const MaxHeldEventBytes = 64 << 10

// Response framings (see framing.go).
const (
	modeSniff  uint8 = iota // not known yet
	modeJSON                // one JSON document
	modeSSE                 // server-sent events
	modeOpaque              // anything else: counted, not parsed
)

// SSE line states.
const (
	lsStart     uint8 = iota // at the start of a line
	lsName                   // reading a field name
	lsDataSpace              // after "data:", an optional space
	lsData                   // in the value of a data line
	lsIgnore                 // in a comment or a field we do not use
)

// Tap meters one response as its bytes pass from upstream to the client.
// Feed it every byte upstream sends, in order, in pieces of any size, then
// call End once. A Tap is not safe for concurrent use; one goroutine (the
// one copying the response body) owns it.
//
// The proxy wraps res.Body in a ReadCloser whose Read fills a buffer from
// upstream, passes it through Feed, and hands the client what Feed returns;
// on io.EOF it writes End's rest, and on EOF, error or Close it settles
// with End's Usage. The package example shows that ReadCloser.
type Tap struct {
	req    Request
	mode   uint8
	sn     sniffState // framing detection, while mode is modeSniff
	filter bool
	sc     scanner

	// SSE line state.
	ls       uint8
	name     [8]byte
	nlen     int
	afterCR  bool // the last line ended with CR; a following LF belongs to it
	crBlank  bool // ... and that line was blank: its event block ends after the LF
	evData   bool // the current event has had a data line
	pendDrop bool // the event awaiting its LF is the one to remove

	// Client-side filter (see Feed).
	hold    []byte
	out     []byte
	pass    bool // the current event outgrew MaxHeldEventBytes and is passing through
	cur     []byte
	seg     int
	keepEnd int
	direct  bool

	// Totals over the response.
	rep        [nSlots]int64
	repHas     uint32
	completed  int64 // image stream: completed images
	textBytes  int64
	textValues int64
	total      int64 // bytes fed
	size       smallString
	quality    smallString
	events     int64
	docDone    bool // the JSON body's document closed

	ended bool
	final Usage
}

// NewTap returns a Tap for the response to req, given the response's
// Content-Type. The body's own first bytes decide whether it is read as
// server-sent events, as one JSON document, or passed through and counted
// only (audio, text transcripts); the Content-Type decides only when the
// bytes do not (see framing.go), since gateways mislabel streams.
//
// The Tap removes the injected usage chunk from what the client sees only
// for an openai.chat stream whose client did not ask for usage
// (req.Stream && !req.IncludeUsage); that is the body Request.Rewrite
// forced include_usage into. That is decided by the request alone, so
// that Filters can answer before the first byte.
func NewTap(req Request, contentType string) *Tap {
	t := &Tap{req: req}
	t.initSniff(req, contentType)
	t.filter = req.API == OpenAIChat && req.Stream && !req.IncludeUsage
	return t
}

// Filters reports whether the Tap may remove bytes from what the client
// sees (the injected usage chunk, see NewTap), so that the response's
// Content-Length no longer holds. It is known before the first Feed: a
// Tap that filters and finds a JSON body removes nothing from it.
func (t *Tap) Filters() bool { return t.filter }

// Feed consumes p, the next bytes of the upstream body, and returns the
// bytes to send the client now.
//
// Without filtering the result is p itself: no copy, nothing held back.
// With filtering (see NewTap) the bytes of the current incomplete event are
// held until the event ends (at most MaxHeldEventBytes, then they pass),
// and an event that turns out to be the injected usage chunk is dropped;
// every other byte reaches the client unchanged and in order. The result
// then may alias an internal buffer that is valid until the next call to
// Feed (End leaves it alone). Feed keeps no reference to p after it
// returns.
func (t *Tap) Feed(p []byte) []byte {
	if t.ended || len(p) == 0 {
		return p[:0]
	}
	off := t.total
	t.total += int64(len(p))
	// start is where the decided framing's bytes begin in p; line is
	// where the first SSE line's bytes begin, which a filter may hold.
	start, line := 0, 0
	if t.mode == modeSniff {
		if start, line = t.sniff(p, off); t.mode == modeSniff {
			if start == len(p) {
				// Undecided: whitespace passes; a field name's start is
				// held by a filter, like any incomplete event.
				if t.filter && line < len(p) {
					t.hold = append(t.hold, p[line:]...)
					return p[:line]
				}
				return p
			}
			t.decide(t.sn.fallback)
		}
		if t.mode == modeOpaque && len(t.hold) > 0 {
			// A field name's start held by the filter, then not a field
			// after all: release it before the rest.
			t.out = append(append(t.out[:0], t.hold...), p...)
			t.hold = t.hold[:0]
			return t.out
		}
	}
	switch t.mode {
	case modeJSON:
		t.sc.feed(p[start:])
		return p
	case modeOpaque:
		return p
	}
	if !t.filter {
		t.scanSSE(p, start)
		return p
	}
	t.cur, t.seg, t.keepEnd = p, line, line
	t.direct = len(t.hold) == 0
	if !t.direct {
		t.out = t.out[:0]
	}
	t.scanSSE(p, start)
	rest := p[t.seg:]
	switch {
	case t.pass || len(t.hold)+len(rest) > MaxHeldEventBytes:
		if t.direct {
			t.keepEnd = len(p)
		} else {
			t.out = append(t.out, t.hold...)
			t.out = append(t.out, rest...)
		}
		t.hold = t.hold[:0]
		t.pass = true
	default:
		t.hold = append(t.hold, rest...)
	}
	t.cur = nil
	if t.direct {
		return p[:t.keepEnd]
	}
	return t.out
}

// blockEnd is called when the event block (the event's lines and the
// blank line that ends it) finishes at t.cur[:end]; drop says it is the
// usage chunk to remove.
func (t *Tap) blockEnd(end int, drop bool) {
	if !t.filter {
		return
	}
	if t.pass {
		drop = false // its head already went to the client
	}
	if drop {
		if t.direct {
			t.out = append(t.out[:0], t.cur[:t.keepEnd]...)
			t.direct = false
		}
	} else if t.direct {
		t.keepEnd = end
	} else {
		t.out = append(t.out, t.hold...)
		t.out = append(t.out, t.cur[t.seg:end]...)
	}
	t.hold = t.hold[:0]
	t.seg = end
	t.pass = false
}

// scanSSE runs the SSE line parser over p (WHATWG HTML, "Server-sent
// events", event stream interpretation): lines end in LF, CRLF or CR; a
// blank line dispatches the event; lines starting with ':' are comments;
// "data:" values lose one leading space and several data lines of one
// event join with LF. Only data lines are scanned; event:, id: and retry:
// are not needed (every provider repeats the event type in the JSON).
// Parsing starts at p[i].
func (t *Tap) scanSSE(p []byte, i int) {
	for i < len(p) {
		if t.afterCR {
			t.afterCR = false
			if p[i] == '\n' {
				i++
			}
			if t.crBlank {
				t.crBlank = false
				t.blockEnd(i, t.pendDrop)
			}
			continue
		}
		switch t.ls {
		case lsStart:
			switch p[i] {
			case '\n':
				i++
				t.blockEnd(i, t.dispatch())
			case '\r':
				i++
				t.pendDrop = t.dispatch()
				t.afterCR, t.crBlank = true, true
			case ':':
				t.ls = lsIgnore
				i++
			default:
				t.ls = lsName
				t.nlen = 0
			}
		case lsName:
			for i < len(p) {
				c := p[i]
				if c == ':' {
					i++
					if t.isData() {
						t.ls = lsDataSpace
					} else {
						t.ls = lsIgnore
					}
					break
				}
				if c == '\n' || c == '\r' {
					if t.isData() { // "data" alone: a data line with an empty value
						t.beginData()
					}
					i = t.endLine(p, i)
					break
				}
				if t.nlen < len(t.name) {
					t.name[t.nlen] = c
				}
				t.nlen++
				i++
			}
		case lsDataSpace:
			if p[i] == ' ' {
				i++
			}
			t.beginData()
			t.ls = lsData
		default: // lsData, lsIgnore
			seg := p[i:]
			eol := bytes.IndexByte(seg, '\n')
			if eol >= 0 {
				seg = seg[:eol]
			}
			if cr := bytes.IndexByte(seg, '\r'); cr >= 0 {
				seg, eol = seg[:cr], cr
			}
			if t.ls == lsData {
				t.sc.feed(seg)
			}
			if eol < 0 {
				return
			}
			i = t.endLine(p, i+eol)
		}
	}
}

// endLine consumes the line terminator at p[i] and returns the index after
// it. A CR may be followed by an LF in the next piece; afterCR handles that.
func (t *Tap) endLine(p []byte, i int) int {
	if p[i] == '\r' {
		t.afterCR = true
	}
	t.ls = lsStart
	return i + 1
}

func (t *Tap) isData() bool {
	return t.nlen == 4 && string(t.name[:4]) == "data"
}

var newline = []byte{'\n'}

func (t *Tap) beginData() {
	if t.evData {
		t.sc.feed(newline) // data lines of one event join with LF
	}
	t.evData = true
}

// dispatch ends the current event (a blank line) and reports whether it
// is the usage chunk the filter removes.
func (t *Tap) dispatch() bool {
	if !t.evData {
		return false
	}
	t.events++
	t.sc.finish()
	drop := t.commit(&t.sc.f, t.sc.f.complete)
	t.sc.reset(t.sc.sch)
	t.evData = false
	return drop && t.filter
}

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
	if t.req.API == OpenAIImages && t.mode == modeSSE {
		typ := &f.str[ssType]
		if !typ.set || !bytes.HasSuffix(typ.b[:typ.n], []byte(".completed")) {
			return false
		}
		// Each completed event is one image with its own usage: add up.
		t.completed++
		for _, sl := range []uint8{slIn, slOut, slCached, slCacheWrite} {
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
	for _, sl := range []uint8{slIn, slOut, slCached, slCacheWrite, slMillis, slData, slOutStart} {
		if v, ok := f.get(sl); ok {
			if sl == slData {
				t.rep[sl] = v // one body, one data array
			} else {
				t.rep[sl] = max(t.rep[sl], v)
			}
			t.repHas |= 1 << sl
		}
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
	imagePartialTokens = 100
	imageMaxPixels     = 1536 * 1024
)

// imageOutputTokens estimates the output tokens of one image of size
// ("WIDTHxHEIGHT") and quality; see imagePartialTokens.
func imageOutputTokens(size, quality string) int64 {
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

func satAdd(a, b int64) int64 {
	if s := a + b; s >= a {
		return s
	}
	return 1<<63 - 1
}

// End reports that the upstream body is over — io.EOF, a read error, or
// the client going away — and returns the bytes still owed to the client
// and the final Usage. Call it once; later calls return the same Usage and
// no bytes.
//
// rest is the event the filter was holding when the body ended
// (unterminated by a blank line), released untouched, or nothing. Write it
// to the client on a clean EOF; it is moot when the client is gone.
//
// The Usage is the provider's report where it arrived. Where it did not,
// End estimates and sets Usage.Estimated:
//
//   - input tokens: the request's typical input, its InputTokens rule
//     without RequestOverheadTokens at BytesPerToken bytes a token (the
//     upper bound is for reserving, not for charging); for speech, the
//     input's characters;
//   - output tokens: from the text the response streamed — content and
//     refusal deltas, tool-call arguments, reasoning/thinking text — as
//     max(text values, ceil(text bytes / BytesPerToken)): OpenAI streams
//     about one token per chunk, Anthropic several, so the larger of the
//     two counts is the closer. It is never zero for a response that
//     produced text; a body that is neither JSON nor SSE (see
//     framing.go) counts all its bytes as text. Reasoning the provider
//     hides cannot be seen and is not estimated.
//   - openai.images: the images the body listed, or the request's n when
//     the body was cut or is not an image body; and when the body was
//     cut before its usage, the images' output tokens from gpt-image-1's
//     published counts by size and quality (see imageOutputTokens), so
//     that a route pricing GPT image models by the token does not charge
//     the prompt alone;
//   - openai.audio: the request's duration estimate when the response
//     carries no duration (text, srt and vtt transcripts; speech audio),
//     but never less than the upload's size at AudioMaxBytesPerSecond.
//     Estimated is set then even when tokens were reported, since a
//     route priced per minute is charged by that estimate.
//
// A complete image or audio response that reports its units but no
// tokens (DALL·E's images, whisper-1's duration) is not estimated: its
// Usage is what the provider reported, plus FallbackInputTokens and
// FallbackOutputTokens for a price that has no rate for those units.
// They are the same estimates as above: the prompt estimate and the
// images' output tokens; or the transcription's text fields and its
// reported duration at AudioTokensPerMinute as input, and the transcript
// as output (for speech, the input's characters and the duration's audio
// tokens). An image or audio usage with an input count and no output
// count has its output estimated as above (the images' output tokens;
// the transcript; the speech's audio tokens) and Estimated set: absent is
// not zero.
func (t *Tap) End() (rest []byte, u Usage) {
	if t.ended {
		return nil, t.final
	}
	t.ended = true
	if t.mode == modeSniff {
		t.decide(t.sn.fallback)
	}
	switch t.mode {
	case modeOpaque:
		if len(t.hold) > 0 {
			rest = t.hold // a field name's start, held while detecting
		}
	case modeJSON:
		t.sc.finish()
		t.commit(&t.sc.f, t.sc.f.complete)
	case modeSSE:
		// Whatever is held is one event block, never any earlier bytes;
		// it is returned as is, without touching t.out, which may still
		// back what the last Feed returned.
		keep := true
		if t.afterCR && t.crBlank {
			// The body ended just after a blank line's CR: that block is
			// complete, and its fate was decided at the CR.
			t.afterCR, t.crBlank = false, false
			keep = !(t.filter && t.pendDrop && !t.pass)
		}
		if t.evData {
			// A last event without its blank line: lenient, since a
			// provider that forgets the final blank line still reported
			// the usage.
			t.events++
			t.sc.finish()
			if t.commit(&t.sc.f, t.sc.f.complete) && t.filter && !t.pass {
				keep = false
			}
			t.evData = false
		}
		if t.filter && keep && len(t.hold) > 0 {
			rest = t.hold
		}
	}
	t.final = t.usage()
	return rest, t.final
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
	case AnthropicMessages:
		t.tokens(&u, true)
		if t.has(slOut) {
			u.OutputTokens = max(u.OutputTokens, t.rep[slOutStart])
		} else {
			// No message_delta: message_start's count is provisional.
			u.OutputTokens = max(outEstimate, t.rep[slOutStart])
			u.Estimated = true
		}
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
		each := satAdd(imageOutputTokens(u.ImageSize, u.ImageQuality), r.partialImages*imagePartialTokens)
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
			u.AudioMillis = t.rep[slMillis]
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
	return u
}

// tokens fills u's token counts from the totals, normalising Anthropic's
// exclusive input count, and estimates the input when none was reported.
func (t *Tap) tokens(u *Usage, anthropic bool) {
	if !t.has(slIn) && !t.has(slCached) && !t.has(slCacheWrite) {
		u.InputTokens = t.req.estInput
		u.Estimated = true
	} else {
		in, cached, write := t.rep[slIn], t.rep[slCached], t.rep[slCacheWrite]
		if anthropic {
			// input_tokens excludes both cache counts: add them, once.
			in = satAdd(satAdd(in, cached), write)
		}
		// OpenAI counts cached tokens inside the input; never let a
		// provider's inconsistency price more cached than input tokens.
		cached = min(cached, in)
		write = min(write, in-cached)
		u.InputTokens, u.CachedInputTokens, u.CacheWriteInputTokens = in, cached, write
	}
	u.OutputTokens = t.rep[slOut]
}
