package meter

import (
	"bytes"
	"slices"
)

// This file holds the usage-chunk filter: for an openai.chat stream whose
// client did not ask for usage, Request.Rewrite forces include_usage into
// the body sent upstream, and the Tap removes what that adds from what the
// client sees (see NewTap and Feed): the usage chunk, and the top-level
// "usage": null member of every other chunk.

// MaxHeldEventBytes bounds what a Tap holds back. Only a Tap that filters
// (openai.chat streams whose client did not ask for usage) holds anything:
// the current, incomplete SSE event, until its end shows whether it is the
// injected usage chunk. An event that grows past this bound cannot be that
// chunk (it is a few hundred bytes) and is released as it arrives.
//
// A Tap's memory is therefore its fixed-size state (about 1 KiB) plus, when
// filtering, at most MaxHeldEventBytes held and MaxHeldEventBytes + len(p)
// of output assembled per Feed (and as much again to join the data lines
// of an event that has several, while looking for its "usage": null),
// whatever the size of the response: a multi-megabyte b64_json image or
// response.completed event is scanned without being buffered.
const MaxHeldEventBytes = 64 << 10

// feedFiltered is Feed for a filtering Tap once the body is known to be
// SSE: it parses p from start and returns what the client gets now. The
// current event's bytes begin at p[line]; those before it passed through
// framing detection.
func (t *Tap) feedFiltered(p []byte, start, line int) []byte {
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
	var block []byte
	from, to, cut := 0, 0, false
	if !drop && t.usageNull && !t.pass {
		// (A passing event's head, where the hint points, already went
		// to the client: it passes unchanged.)
		block = t.cur[t.seg:end]
		if !t.direct && len(t.hold) > 0 {
			block = append(t.hold, block...)
		}
		from, to, cut = usageNullSpan(block, &t.doc, t.hint)
	}
	t.usageNull = false
	switch {
	case drop || cut:
		if t.direct {
			// From here on the result is assembled: make room for the
			// rest of this Feed at once.
			t.out = append(slices.Grow(t.out[:0], len(t.cur)), t.cur[:t.keepEnd]...)
			t.direct = false
		}
		if cut {
			t.out = append(t.out, block[:from]...)
			t.out = append(t.out, block[to:]...)
		}
	case t.direct:
		t.keepEnd = end
	default:
		t.out = append(t.out, t.hold...)
		t.out = append(t.out, t.cur[t.seg:end]...)
	}
	t.hold = t.hold[:0]
	t.seg = end
	t.pass = false
}

// usageHint locates an event's "usage": null member from what the Tap's
// parsers saw while the event streamed, so that the filter neither
// searches the event again nor splits it into lines by rules of its own:
// first holds where the values of the event's first data lines begin in
// its block, lines how many data lines it has, and keyAt where the
// member's key (its opening quote) lies in the event's data, the data
// lines' values joined by LF (the scanner's usageAt; -1 when the scanner
// saw no such key).
type usageHint struct {
	first        [8]int
	lines, keyAt int
}

// usageNullSpan finds, in block, the bytes of one SSE event (its lines,
// and the blank line that ends it if it arrived), the top-level
// "usage": null member of its JSON data, at the place h gives, together
// with the comma that separates it from its neighbour, and returns where
// it lies in block. ok is false when there is none to remove: the member
// must lie within one data line and its key be spelled plainly, as
// OpenAI sends it; anything else, and an event of more than len(h.first)
// data lines, is left as it is. scratch holds the data of an event with
// several data lines, reused from event to event.
func usageNullSpan(block []byte, scratch *[]byte, h usageHint) (from, to int, ok bool) {
	if h.keyAt < 0 || h.lines < 1 || h.lines > len(h.first) {
		return 0, 0, false
	}
	for l := range h.lines {
		if h.first[l] > len(block) {
			return 0, 0, false
		}
	}
	// The event's data is its data lines' values joined by LF (WHATWG
	// "Server-sent events"); at locates each value in it. One data line,
	// as OpenAI sends, is read in place.
	var (
		doc []byte
		at  [len(h.first)]int
	)
	for l := range h.lines {
		v := lineOf(block[h.first[l]:])
		switch l {
		case 0:
			doc = v
		case 1:
			*scratch = append(append(append((*scratch)[:0], doc...), '\n'), v...)
			doc = *scratch
		default:
			*scratch = append(append(*scratch, '\n'), v...)
			doc = *scratch
		}
		at[l] = len(doc) - len(v)
	}
	from, to, ok = usageNullAt(doc, h.keyAt)
	if !ok {
		return 0, 0, false
	}
	for l := h.lines - 1; l >= 0; l-- {
		if from >= at[l] {
			if l+1 < h.lines && to >= at[l+1] {
				return 0, 0, false // the member spans data lines
			}
			return h.first[l] + from - at[l], h.first[l] + to - at[l], true
		}
	}
	return 0, 0, false
}

// lineOf returns b up to its first line terminator (LF or CR).
func lineOf(b []byte) []byte {
	if e := bytes.IndexByte(b, '\n'); e >= 0 {
		b = b[:e]
	}
	if cr := bytes.IndexByte(b, '\r'); cr >= 0 {
		b = b[:cr]
	}
	return b
}

// usageKey is the key the filter removes, as JSON spells it.
var usageKey = []byte(`"usage"`)

// usageNullAt returns where the member "usage": null whose key begins at
// doc[k] lies in doc, an event's JSON, together with the comma that
// separates it from its neighbour: the one before it, or for the first
// member the one after it. ok is false if doc[k:] does not hold that
// member.
func usageNullAt(doc []byte, k int) (from, to int, ok bool) {
	if k < 0 || k > len(doc) || !bytes.HasPrefix(doc[k:], usageKey) {
		return 0, 0, false
	}
	// The key, then a colon and null, spaces allowed between them.
	i := skipSpace(doc, k+len(usageKey))
	if i >= len(doc) || doc[i] != ':' {
		return 0, 0, false
	}
	i = skipSpace(doc, i+1)
	if !bytes.HasPrefix(doc[i:], []byte("null")) {
		return 0, 0, false
	}
	from, to = k, i+len("null")
	if b := skipSpaceBack(doc, from-1); b >= 0 && doc[b] == ',' {
		from = b // a member before it: take its comma
	} else if a := skipSpace(doc, to); a < len(doc) && doc[a] == ',' {
		to = skipSpace(doc, a+1) // the first member: take the comma after it
	}
	return from, to, true
}

// skipSpace returns the index of the first non-space byte of b at or
// after i, or len(b).
func skipSpace(b []byte, i int) int {
	for i < len(b) && isSpace(b[i]) {
		i++
	}
	return i
}

// skipSpaceBack returns the index of the last non-space byte of b at or
// before i, or -1.
func skipSpaceBack(b []byte, i int) int {
	for i >= 0 && isSpace(b[i]) {
		i--
	}
	return i
}
