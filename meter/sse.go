package meter

import "bytes"

// This file holds the Tap's server-sent events parser: it splits the
// body into lines and events as it streams and feeds each event's data to
// the JSON scanner.

// SSE line states.
const (
	lsStart     uint8 = iota // at the start of a line
	lsName                   // reading a field name
	lsDataSpace              // after "data:", an optional space
	lsData                   // in the value of a data line
	lsIgnore                 // in a comment or a field we do not use
)

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
						t.beginData(i)
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
			t.beginData(i)
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

// beginData starts a data line whose value begins at p[i] of the Feed in
// progress.
func (t *Tap) beginData(i int) {
	if t.evData {
		t.sc.feed(newline) // data lines of one event join with LF
	} else {
		t.hint.lines = 0
	}
	if n := t.hint.lines; n < len(t.hint.first) {
		// The event's block is what is held, then cur from seg.
		t.hint.first[n] = len(t.hold) + i - t.seg
	}
	t.hint.lines++
	t.evData = true
}

// noteUsageNull notes, as the scanner ends an event's data, whether the
// filter removes a top-level "usage": null member from the event, and
// where the scanner saw its key.
func (t *Tap) noteUsageNull() {
	t.usageNull = t.filter && t.sc.f.complete && t.sc.f.nulls&(1<<slUsage) != 0
	t.hint.keyAt = t.sc.usageAt
}

// dispatch ends the current event (a blank line) and reports whether it
// is the usage chunk the filter removes; it notes in usageNull whether the
// event's JSON has a top-level "usage": null member for the filter to
// remove instead.
func (t *Tap) dispatch() bool {
	t.usageNull = false
	if !t.evData {
		return false
	}
	t.events++
	t.sc.finish()
	drop := t.commit(&t.sc.f, t.sc.f.complete)
	t.noteUsageNull()
	t.sc.reset(t.sc.sch)
	t.evData = false
	return drop && t.filter
}
