package meter

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
	req    Request    // the request answered: its API, and what End estimates from
	mode   uint8      // the framing: modeSniff until the bytes decide, then modeJSON, modeSSE, modeArray or modeOpaque
	arr    uint8      // where the array parser is, in modeArray (jsonarray.go)
	sn     sniffState // framing detection, while mode is modeSniff
	filter bool       // the Tap removes the injected usage chunk (see NewTap)
	sc     scanner    // reads the current JSON document: the body, or one SSE event's data

	// SSE line state.
	ls       uint8   // where the parser is in the current line: lsStart … lsIgnore
	name     [8]byte // the current line's field name so far, up to its first 8 bytes
	nlen     int     // the field name's length, which may exceed len(name) (then it is not "data")
	afterCR  bool    // the last line ended with CR; a following LF belongs to it
	crBlank  bool    // ... and that line was blank: its event block ends after the LF
	evData   bool    // the current event has had a data line
	pendDrop bool    // the event awaiting its LF is the one to remove
	// usageNull is true from the end of an event whose JSON has a
	// top-level "usage": null until its block ends: the filter removes
	// that member (see filter.go).
	usageNull bool
	// hint locates that member in the event's block (filter.go).
	hint usageHint

	// Client-side filter (see Feed and filter.go). Within one Feed, cur is
	// cut into event blocks that go to the client or, for the usage chunk,
	// are dropped; the bytes of an event not yet ended are held for the
	// next Feed.

	// hold is the current event's bytes withheld from the client, from
	// earlier Feeds and then this one's tail, until the event's end shows
	// whether it is the usage chunk (at most MaxHeldEventBytes); while
	// detecting the framing, the start of a field name.
	hold []byte
	// out is Feed's result when it is not a prefix of p: the held bytes
	// released, then this Feed's kept blocks, with a dropped block left
	// out. Its array is reused by the next Feed.
	out  []byte
	pass bool // the current event outgrew MaxHeldEventBytes and is passing through
	// doc is the joined data of an event with several data lines while
	// the filter looks for its "usage": null member; reused.
	doc []byte
	// cur is the p of the Feed in progress, nil between Feeds.
	cur []byte
	// seg is where the current event's bytes in cur begin: after the last
	// event block that ended in this Feed, else where the first SSE line
	// begins. cur[seg:] is not decided yet.
	seg int
	// keepEnd is, while direct, the length of cur's prefix the client gets.
	keepEnd int
	// direct is true while this Feed's result is cur[:keepEnd], p itself
	// without a copy: nothing was held before it and nothing dropped yet.
	direct bool

	// Totals over the response. rep holds, per number slot, the value
	// the response reported: the largest of its reports (providers'
	// counters are cumulative), except that an image stream's token counts
	// are summed over its images and data is the body's one count.
	rep        [nSlots]int64
	repHas     uint32      // bit i set: rep[i] was reported
	completed  int64       // image stream: completed images
	textBytes  int64       // bytes of produced text, for the output estimate
	textValues int64       // non-empty text values, for the output estimate
	total      int64       // bytes fed
	size       smallString // the image size the response reported
	quality    smallString // the image quality the response reported
	events     int64       // SSE events dispatched
	docDone    bool        // the JSON body's document closed

	// How the response says it was served, as last reported.
	serviceTier, speed, geo smallString
	// iterations are the usage.iterations of the last complete document
	// that listed them: each lists every step so far, so the last
	// replaces the earlier and steps of different events never mix.
	iterations []Iteration
	// tools are a Responses response's built-in tool calls; nil until
	// one is seen.
	tools *responseTools

	ended bool  // End was called: Feed returns nothing, End returns final
	final Usage // the Usage End returned
}

// NewTap returns a Tap for the response to req, given the response's
// Content-Type. The body's own first bytes decide whether it is read as
// server-sent events, as one JSON document, or passed through and counted
// only (audio, text transcripts); the Content-Type decides only when the
// bytes do not (see framing.go), since gateways mislabel streams.
//
// The Tap removes what the forced include_usage adds from what the client
// sees only for an openai.chat stream whose client did not ask for usage
// (req.Stream && !req.IncludeUsage, and not req.LeaveStreamUsage); that is the body Request.Rewrite
// forced include_usage into. That is decided by the request alone, so
// that Filters can answer before the first byte. What it removes: the
// usage chunk, and the "usage": null member OpenAI adds to every other
// chunk (API reference, chat completion chunk: "usage … will only be
// present when you set stream_options: {"include_usage": true}"), so the
// client gets the bytes it would have got without tollgate — but for an
// event larger than MaxHeldEventBytes, which passes as it arrives and
// keeps its "usage": null (see Feed).
func NewTap(req Request, contentType string) *Tap {
	t := new(Tap)
	t.Reset(req, contentType)
	return t
}

// Reset makes t what NewTap(req, contentType) returns, so that a caller
// metering response after response can keep a few Taps (about 3 KB each)
// instead of allocating one per response. The byte slices Feed and End
// returned before Reset must no longer be in use; a Usage End returned
// stays valid.
func (t *Tap) Reset(req Request, contentType string) {
	*t = Tap{req: req}
	t.initSniff(req, contentType)
	t.filter = req.API == OpenAIChat && req.Stream && !req.IncludeUsage && !req.LeaveStreamUsage
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
// held until the event ends (at most MaxHeldEventBytes, then they pass,
// and the event reaches the client as it is), an event that turns out to
// be the injected usage chunk is dropped, and an event whose JSON has a
// top-level "usage": null loses that member;
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
	case modeArray:
		t.scanArray(p[start:])
		return p
	case modeOpaque:
		return p
	}
	if !t.filter {
		t.scanSSE(p, start)
		return p
	}
	return t.feedFiltered(p, start, line)
}

// End reports that the upstream body is over — io.EOF, a read error, or
// the client going away — and returns the bytes still owed to the client
// and the final Usage. Call it once; later calls return the same Usage and
// no bytes.
//
// rest is the event the filter was holding when the body ended
// (unterminated by a blank line), released as it came but for a top-level
// "usage": null member, or nothing. Write it
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
//     published counts by size and quality (see ImageOutputTokens), so
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
	case modeArray:
		t.endArray()
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
			t.noteUsageNull()
			t.evData = false
		}
		if t.filter && keep && len(t.hold) > 0 {
			rest = t.hold
			if t.usageNull && !t.pass {
				if from, to, ok := usageNullSpan(rest, &t.doc, t.hint); ok {
					rest = rest[:from+copy(rest[from:], rest[to:])]
				}
			}
		}
	}
	t.final = t.usage()
	return rest, t.final
}
