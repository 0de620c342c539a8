package meter

// This file holds the usage-chunk filter: for an openai.chat stream whose
// client did not ask for usage, Request.Rewrite forces include_usage into
// the body sent upstream, and the Tap removes the chunk that this adds
// from what the client sees (see NewTap and Feed).

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
