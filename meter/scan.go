package meter

import (
	"bytes"
	"encoding/binary"
	"math/bits"

	"github.com/tollgate-dev/tollgate/usage"
)

// This file holds the incremental JSON scanner every response extractor
// uses. It is fed a document in pieces of any size (a JSON body as it
// streams, or the data of one SSE event) and captures only the few values a
// schema names: token counts, an event type, the size of streamed text. It
// never buffers the document: memory is the fixed-size scanner plus nothing,
// whatever the size of the document, so a multi-megabyte b64_json image or
// a response.completed event that repeats the whole output costs no more
// than a short chunk. Values outside the schema are skipped by counting
// brackets, with long strings crossed by bytes.IndexByte.
//
// The scanner is tolerant, not a validator: malformed input stops capture
// for the rest of the document (stBad) and never panics.

const (
	maxTrack  = 12 // deepest schema path, in containers
	maxKeyLen = 40 // longer keys match nothing
	maxLitLen = 64 // longer captured scalars/strings are ignored
)

// smallString is a string slot: up to maxLitLen bytes, no allocation.
type smallString struct {
	b   [maxLitLen]byte
	n   uint8
	set bool
}

func (s *smallString) String() string { return string(s.b[:s.n]) }

// variant returns s, a service tier, speed or geography, as a string,
// or "" when it was not set. The values providers send are returned
// without allocating.
func (s *smallString) variant() string {
	if !s.set {
		return ""
	}
	b := s.b[:s.n]
	for _, v := range knownVariants {
		if string(b) == v { // compared in place, without allocating
			return v
		}
	}
	return s.String()
}

// knownVariants are the service tiers, speeds and geographies providers
// report (OpenAI's service_tier; Anthropic's usage.service_tier, speed
// and inference_geo).
var knownVariants = [...]string{"default", "standard", "priority", "flex", "scale", "auto", "fast", "global", "us", "batch"}

// is reports whether s holds exactly v (no allocation).
func (s *smallString) is(v string) bool { return s.set && string(s.b[:s.n]) == v }

// fields are the values captured from one document.
type fields struct {
	has        uint32 // bit i set: num[i] was captured
	nulls      uint32 // bit i set: an aPresent value for slot i was null
	num        [nSlots]int64
	str        [nStrSlots]smallString
	textBytes  int64 // bytes of produced text
	textValues int64 // non-empty text values
	complete   bool  // the document's top-level value closed

	// items is what the document's closed list elements (see aItem)
	// added up to.
	items itemTotals
}

// reset empties f for the next document. The string slots' bytes are
// left as they are: only a set slot is read.
func (f *fields) reset() {
	f.has = 0
	for i := range f.str {
		f.str[i].set = false
	}
	f.textBytes, f.textValues, f.complete = 0, 0, false
	f.items.iterations = nil
	f.items.calls = [usage.NumTools]int64{}
	f.items.ids.n, f.items.moreContainers = 0, 0
}

// itemFields are the values captured from one element of a list the
// schema reads element by element: an Anthropic usage.iterations entry or
// an OpenAI Responses output item.
type itemFields struct {
	has uint8 // bit i set: num[i] was captured
	num [nItemSlots]int64
	str [nItemStrSlots]smallString
}

// itemTotals are what the closed elements of one document add up to.
type itemTotals struct {
	// iterations are the usage.iterations entries, in order; nil when
	// the document has none.
	iterations []Iteration
	// calls counts the Responses output items of each tool.
	calls [usage.NumTools]int64
	// ids are the distinct container ids of the code_interpreter_call
	// items; moreContainers counts those it cannot tell apart (no id, or
	// the set full).
	ids            containerSet
	moreContainers int64
}

// containerSet holds the distinct container ids of a response's
// code_interpreter_call items, up to len(ids).
type containerSet struct {
	ids [maxContainers]smallString
	n   int
}

// maxIterations bounds the usage.iterations entries kept per document; a
// later entry is added to the last one of its type and model (which can
// only price it higher, at a long-context tier).
const maxIterations = 256

// maxContainers bounds the distinct container ids tracked per response;
// beyond it each code_interpreter_call counts as a container of its own.
const maxContainers = 8

func (f *fields) set(slot uint8, v int64) {
	f.has |= 1 << slot
	f.num[slot] = v
}

func (f *fields) get(slot uint8) (int64, bool) {
	return f.num[slot], f.has&(1<<slot) != 0
}

// Scanner states.
const (
	stValue    uint8 = iota // expecting a value
	stObjFirst              // after '{': a key or '}'
	stObjKey                // after ',' in an object: a key
	stKey                   // inside a key
	stColon                 // after a key: ':'
	stArrFirst              // after '[': a value or ']'
	stNext                  // after a value in a tracked container: ',' or a close
	stString                // inside a string value at a tracked position
	stScalar                // inside a number or literal at a tracked position
	stSkip                  // inside a container nobody asked about
	stDone                  // the top-level value closed
	stBad                   // malformed: ignore the rest of the document
)

type frame struct {
	node int16
	obj  bool
}

// scanner extracts fields from one JSON document fed in pieces.
type scanner struct {
	sch *schema
	f   fields
	// item is the list element being read (see aItem).
	item itemFields

	st    uint8
	depth int
	stack [maxTrack]frame
	cur   int16 // schema node of the value about to start, or -1

	key  [maxKeyLen]byte
	klen int
	kbad bool // key too long or escaped: matches nothing

	lit    [maxLitLen]byte
	llen   int
	lbad   bool
	litAct action // action for the current string/scalar
	litSlt uint8

	esc      bool  // inside a string, the previous byte was a backslash
	quoteAt  int   // cached position of the next quote in the current piece (see skipString)
	skip     int   // nesting depth inside a skipped container
	skipStr  bool  // inside a string while skipping
	skipText bool  // measure the skipped value as text
	valBytes int64 // size of the current aText value so far

	// base is how many bytes of the document earlier pieces held: p[i]
	// of the piece being scanned is the document's byte base+i.
	base int
	// keyAt is where, in the document, the opening quote of the key
	// being read lies; usageAt is that of the first top-level key whose
	// schema node reports slUsage, or -1. The usage-chunk filter finds
	// the "usage": null member there instead of searching the event
	// again (see usageNullSpan).
	keyAt, usageAt int
}

func (s *scanner) reset(sch *schema) {
	s.sch = sch
	s.f.reset()
	s.st = stValue
	s.depth = 0
	s.cur = 0
	s.klen, s.kbad = 0, false
	s.llen, s.lbad = 0, false
	s.esc, s.skip, s.skipStr, s.skipText = false, 0, false, false
	s.valBytes = 0
	s.base, s.usageAt = 0, -1
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// feed scans the next piece of the document.
func (s *scanner) feed(p []byte) {
	s.run(p, false)
	s.base += len(p)
}

// feedDoc scans the next piece of the document up to its end and returns
// the bytes it consumed: all of p, or those up to the close of the
// top-level value, after which the state is stDone (what follows belongs
// to the caller, such as an array's ",").
func (s *scanner) feedDoc(p []byte) int {
	n := s.run(p, true)
	s.base += n
	return n
}

func (s *scanner) run(p []byte, stopAtDone bool) int {
	i := 0
	for i < len(p) {
		switch s.st {
		case stValue:
			c := p[i]
			if isSpace(c) {
				i++
				continue
			}
			i = s.beginValue(p, i)
		case stObjFirst, stObjKey:
			c := p[i]
			i++
			switch {
			case isSpace(c):
			case c == '"':
				i = s.beginKey(p, i)
			case c == '}' && s.st == stObjFirst:
				s.closeContainer()
			default:
				s.st = stBad
			}
		case stKey:
			i = s.scanKey(p, i)
		case stColon:
			c := p[i]
			i++
			switch {
			case isSpace(c):
			case c == ':':
				parent := s.stack[s.depth-1].node
				if s.kbad {
					s.cur = -1
				} else {
					s.cur = s.sch.lookup(parent, s.key[:s.klen])
					s.noteUsageKey()
				}
				s.st = stValue
			default:
				s.st = stBad
			}
		case stArrFirst:
			c := p[i]
			if isSpace(c) {
				i++
				continue
			}
			if c == ']' {
				i++
				s.closeContainer()
				continue
			}
			s.beginElement()
		case stNext:
			c := p[i]
			i++
			top := &s.stack[s.depth-1]
			switch {
			case isSpace(c):
			case c == ',':
				if top.obj {
					s.st = stObjKey
					if i < len(p) && p[i] == '"' {
						i = s.beginKey(p, i+1)
					}
				} else {
					s.beginElement()
				}
			case c == '}' && top.obj, c == ']' && !top.obj:
				s.closeContainer()
			default:
				s.st = stBad
			}
		case stString:
			i = s.scanString(p, i)
		case stScalar:
			i = s.scanScalar(p, i)
		case stSkip:
			i = s.scanSkip(p, i)
		case stDone:
			if stopAtDone {
				return i
			}
			if !isSpace(p[i]) {
				s.st = stBad
			}
			i++
		default: // stBad
			return i
		}
	}
	return i
}

// beginElement starts the next element of the tracked array on top.
func (s *scanner) beginElement() {
	top := s.stack[s.depth-1]
	n := &s.sch.nodes[top.node]
	if n.act == aCount {
		s.f.set(n.slot, s.f.num[n.slot]+1)
	}
	s.cur = n.elem
	s.st = stValue
}

// beginValue starts the value whose first byte is p[i] and returns the
// index after the bytes it consumed.
func (s *scanner) beginValue(p []byte, i int) int {
	c := p[i]
	var n *node
	if s.cur >= 0 {
		n = &s.sch.nodes[s.cur]
	}
	switch {
	case c == '{':
		if n != nil && n.act == aPresent {
			s.f.set(n.slot, 1)
		}
		if n != nil && n.act == aItem {
			s.item = itemFields{}
		}
		if n != nil && len(n.kids) > 0 {
			if s.push(frame{node: s.cur, obj: true}) {
				s.st = stObjFirst
			}
			return i + 1
		}
		s.beginSkip(n != nil && n.act == aText)
		return i + 1
	case c == '[':
		if n != nil && n.act == aPresent {
			s.f.set(n.slot, 1)
		}
		if n != nil && (n.elem >= 0 || n.act == aCount) {
			if n.act == aCount {
				s.f.set(n.slot, 0)
			}
			if s.push(frame{node: s.cur, obj: false}) {
				s.st = stArrFirst
			}
			return i + 1
		}
		s.beginSkip(n != nil && n.act == aText)
		return i + 1
	case c == '"':
		if n == nil {
			// A string nobody asked about that closes within p without
			// escapes is crossed at once (what scanString does with it).
			if q := bytes.IndexByte(p[i+1:], '"'); q >= 0 && bytes.IndexByte(p[i+1:i+1+q], '\\') < 0 {
				s.endValue()
				return i + q + 2
			}
		}
		s.st = stString
		s.litAct, s.llen, s.lbad = aNone, 0, false
		if n != nil {
			s.litAct, s.litSlt = n.act, n.slot
		}
		s.valBytes = 0
		s.quoteAt = -1
		return i + 1
	case c == '-' || (c >= '0' && c <= '9') || c == 't' || c == 'f' || c == 'n':
		if n == nil {
			// Likewise a number or literal nobody asked about that ends
			// within p.
			for j := i + 1; j < len(p); j++ {
				if delim[p[j]] {
					s.endValue()
					return j // the delimiter is handled in stNext/stDone
				}
			}
		}
		s.st = stScalar
		s.litAct, s.llen, s.lbad = aNone, 0, false
		if n != nil {
			s.litAct, s.litSlt = n.act, n.slot
		}
		return i // scanScalar captures from the first byte
	default:
		s.st = stBad
		return i + 1
	}
}

// push opens a tracked container; false (and stBad) if the stack is full,
// which compiled schemas never allow (compile bounds their depth).
func (s *scanner) push(f frame) bool {
	if s.depth == maxTrack {
		s.st = stBad
		return false
	}
	s.stack[s.depth] = f
	s.depth++
	return true
}

// closeContainer closes the tracked container on top.
func (s *scanner) closeContainer() {
	s.depth--
	if n := &s.sch.nodes[s.stack[s.depth].node]; n.act == aItem {
		s.closeItem(n.slot)
	}
	s.endValue()
}

// endValue moves on after a complete value.
func (s *scanner) endValue() {
	if s.depth == 0 {
		s.st = stDone
		s.f.complete = true
		return
	}
	s.st = stNext
}

func (s *scanner) beginSkip(text bool) {
	s.st = stSkip
	s.skip = 1
	s.skipStr = false
	s.skipText = text
	s.valBytes = 1 // the opening bracket
	s.quoteAt = -1
}

// beginKey starts the key whose opening quote is p[i-1] and returns the
// index after the bytes it consumed. A key that closes within p, without
// escapes and with the colon right after it (compact JSON, as providers
// send it) is looked up at once, a value expected next; any other goes
// through stKey and stColon, whose result is the same.
func (s *scanner) beginKey(p []byte, i int) int {
	s.keyAt = s.base + i - 1
	end := min(len(p)-1, i+maxKeyLen) // room for the colon after the quote
	if j := quoteOrBackslash(p, i, end); j < end && p[j] == '"' && p[j+1] == ':' {
		s.cur = s.sch.lookup(s.stack[s.depth-1].node, p[i:j])
		s.noteUsageKey()
		s.st = stValue
		return j + 2
	}
	s.st = stKey
	s.klen, s.kbad = 0, false
	return i
}

// quoteOrBackslash returns the index of the first '"' or '\\' in
// p[i:end], or end when there is none (as when end <= i). Keys are a few
// bytes to a few dozen, so it reads eight at a time (SWAR, see zeroByte)
// rather than calling IndexByte twice; end must not exceed len(p).
func quoteOrBackslash(p []byte, i, end int) int {
	for ; end-i >= 8; i += 8 {
		x := binary.LittleEndian.Uint64(p[i:])
		// zeroByte's lowest bit is exact for each byte sought (its false
		// alarms lie above a true one), so the lowest of the two is the
		// first byte that is either.
		if m := zeroByte(x^(lsb*'"')) | zeroByte(x^(lsb*'\\')); m != 0 {
			return i + bits.TrailingZeros64(m)/8
		}
	}
	for ; i < end; i++ {
		if c := p[i]; c == '"' || c == '\\' {
			return i
		}
	}
	return end
}

// noteUsageKey records in usageAt the key just looked up if it is the
// first top-level key that reports slUsage.
func (s *scanner) noteUsageKey() {
	if s.depth == 1 && s.cur >= 0 && s.usageAt < 0 {
		if n := &s.sch.nodes[s.cur]; n.act == aPresent && n.slot == slUsage {
			s.usageAt = s.keyAt
		}
	}
}

// scanKey reads key bytes; keys are short, so byte by byte is fine, but
// the closing quote is found with IndexByte.
func (s *scanner) scanKey(p []byte, i int) int {
	for i < len(p) {
		if s.esc {
			s.esc = false
			s.kbad = true
			i++
			continue
		}
		q := bytes.IndexByte(p[i:], '"')
		seg := p[i:]
		if q >= 0 {
			seg = p[i : i+q]
		}
		if b := bytes.IndexByte(seg, '\\'); b >= 0 {
			// Escaped keys match nothing (no provider escapes the ASCII
			// keys we look for); consume up to and past the backslash.
			s.kbad = true
			s.esc = true
			i += b + 1
			continue
		}
		if !s.kbad {
			if s.klen+len(seg) > maxKeyLen {
				s.kbad = true
			} else {
				s.klen += copy(s.key[s.klen:], seg)
			}
		}
		if q < 0 {
			return len(p)
		}
		s.st = stColon
		return i + q + 1
	}
	return i
}

// skipString crosses string content from p[i], honouring escapes, and
// returns the index of the closing quote (closed) or len(p). The position
// of the next quote is cached in s.quoteAt so that a long string full of
// escapes is still crossed in linear time. Callers set s.quoteAt = -1 at
// the start of each piece they pass.
func (s *scanner) skipString(p []byte, i int) (int, bool) {
	if s.esc {
		if i >= len(p) {
			return i, false
		}
		s.esc = false
		i++
	}
	for {
		if s.quoteAt < i {
			if q := bytes.IndexByte(p[i:], '"'); q >= 0 {
				s.quoteAt = i + q
			} else {
				s.quoteAt = len(p)
			}
		}
		b := bytes.IndexByte(p[i:s.quoteAt], '\\')
		if b < 0 {
			if s.quoteAt == len(p) {
				return len(p), false
			}
			return s.quoteAt, true
		}
		i += b + 2
		if i > len(p) {
			s.esc = true
			return len(p), false
		}
	}
}

func (s *scanner) scanString(p []byte, i int) int {
	s.quoteAt = -1
	end, closed := s.skipString(p, i)
	seg := p[i:end]
	switch s.litAct {
	case aText:
		s.valBytes += int64(len(seg))
	case aStr, aItemStr:
		if !s.lbad {
			if s.llen+len(seg) > maxLitLen {
				s.lbad = true
			} else {
				s.llen += copy(s.lit[s.llen:], seg)
			}
		}
	}
	if !closed {
		return end
	}
	switch s.litAct {
	case aText:
		if s.valBytes > 0 {
			s.f.textBytes += s.valBytes
			s.f.textValues++
		}
	case aStr, aItemStr:
		if !s.lbad {
			ss := &s.f.str[s.litSlt]
			if s.litAct == aItemStr {
				ss = &s.item.str[s.litSlt]
			}
			ss.n = uint8(copy(ss.b[:], s.lit[:s.llen]))
			ss.set = true
		}
	case aPresent:
		s.f.set(s.litSlt, 1)
	}
	s.endValue()
	return end + 1
}

// delim marks the bytes that end a number or literal: a separator, a
// close, or white space.
var delim = [256]bool{',': true, '}': true, ']': true, ' ': true, '\t': true, '\n': true, '\r': true}

func (s *scanner) scanScalar(p []byte, i int) int {
	start := i
	for i < len(p) && !delim[p[i]] {
		i++
	}
	if s.litAct != aNone && !s.lbad {
		if s.llen+(i-start) > maxLitLen {
			s.lbad = true
		} else {
			s.llen += copy(s.lit[s.llen:], p[start:i])
		}
	}
	if i == len(p) {
		return i // the scalar may continue in the next piece
	}
	s.finishScalar()
	return i // the delimiter is handled in stNext/stDone
}

// finishScalar stores a complete number or literal.
func (s *scanner) finishScalar() {
	lit := s.lit[:s.llen]
	if !s.lbad {
		switch s.litAct {
		case aInt:
			if v, ok := parseCount(lit); ok {
				s.f.set(s.litSlt, v)
			}
		case aItemInt:
			if v, ok := parseCount(lit); ok {
				s.item.num[s.litSlt] = v
				s.item.has |= 1 << s.litSlt
			}
		case aMillis:
			if v, ok := parseMillis(lit); ok {
				s.f.set(s.litSlt, v)
			}
		case aPresent:
			if string(lit) != "null" {
				s.f.set(s.litSlt, 1)
			} else {
				s.f.nulls |= 1 << s.litSlt
			}
		}
	}
	s.endValue()
}

// scanSkip crosses a container nobody asked about, counting brackets.
func (s *scanner) scanSkip(p []byte, i int) int {
	start := i
	s.quoteAt = -1
	for i < len(p) {
		if s.skipStr {
			end, closed := s.skipString(p, i)
			if !closed {
				i = end
				break
			}
			s.skipStr = false
			i = end + 1
			continue
		}
		// Jump to the next byte that matters.
		j := indexStructural(p[i:])
		if j < 0 {
			i = len(p)
			break
		}
		i += j
		switch p[i] {
		case '"':
			s.skipStr = true
		case '{', '[':
			s.skip++
		default: // '}', ']'
			s.skip--
			if s.skip == 0 {
				i++
				if s.skipText {
					s.valBytes += int64(i - start)
					if s.valBytes > 0 {
						s.f.textBytes += s.valBytes
						s.f.textValues++
					}
				}
				s.endValue()
				return i
			}
		}
		i++
	}
	if s.skipText {
		s.valBytes += int64(i - start)
	}
	return i
}

// structural marks the bytes scanSkip stops at.
var structural = [256]bool{'"': true, '{': true, '}': true, '[': true, ']': true}

func indexStructural(p []byte) int {
	for i, c := range p {
		if structural[c] {
			return i
		}
	}
	return -1
}

// finish ends the document at the end of its input: a scalar at the top
// level completes here; anything still open stays incomplete, though the
// text measured so far is kept (it was produced).
func (s *scanner) finish() {
	switch s.st {
	case stScalar:
		s.finishScalar()
	case stString:
		if s.litAct == aText && s.valBytes > 0 {
			s.f.textBytes += s.valBytes
			s.f.textValues++
			s.valBytes = 0
		}
	case stSkip:
		if s.skipText && s.valBytes > 0 {
			s.f.textBytes += s.valBytes
			s.f.textValues++
			s.valBytes = 0
		}
	}
}

// parseCount reads a JSON number as a non-negative integer count. A
// fraction rounds up (providers send integers; a fraction must not make
// usage cheaper). Exponents, signs and overflow make it not a count.
func parseCount(b []byte) (int64, bool) {
	ms, ok := parseMillis(b)
	if !ok {
		return 0, false
	}
	return ms/1000 + min(ms%1000, 1), true
}

// parseMillis reads a non-negative JSON number of seconds (such as 8.47 or
// 12) as milliseconds, rounded up, exactly: no float64 on the way. It
// accepts an exponent, since encoders print small or large floats that way
// (1e-05, 1.5E+3).
func parseMillis(b []byte) (int64, bool) {
	const limit = int64(1) << 60
	i := 0
	if i < len(b) && b[i] == '-' {
		// Only -0 style values are harmless; a negative count is not a count.
		return 0, false
	}
	var mant int64 // significant digits
	var scale int  // decimal exponent of mant's last digit
	var lost bool  // nonzero digits dropped beyond precision
	digits := 0
	for ; i < len(b) && b[i] >= '0' && b[i] <= '9'; i++ {
		digits++
		if mant < limit/10 {
			mant = mant*10 + int64(b[i]-'0')
		} else {
			scale++ // keep magnitude, drop precision (only for absurd values)
			lost = lost || b[i] != '0'
		}
	}
	if digits == 0 {
		return 0, false
	}
	if i < len(b) && b[i] == '.' {
		i++
		fd := 0
		for ; i < len(b) && b[i] >= '0' && b[i] <= '9'; i++ {
			fd++
			if mant < limit/10 {
				mant = mant*10 + int64(b[i]-'0')
				scale--
			} else {
				lost = lost || b[i] != '0'
			}
		}
		if fd == 0 {
			return 0, false
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		neg := false
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			neg = b[i] == '-'
			i++
		}
		e, ed := 0, 0
		for ; i < len(b) && b[i] >= '0' && b[i] <= '9'; i++ {
			ed++
			if e < 10000 {
				e = e*10 + int(b[i]-'0')
			}
		}
		if ed == 0 {
			return 0, false
		}
		if neg {
			e = -e
		}
		scale += e
	}
	if i != len(b) {
		return 0, false
	}
	// value = mant × 10^scale seconds; milliseconds = mant × 10^(scale+3).
	scale += 3
	if mant == 0 {
		return 0, true
	}
	for scale > 0 {
		if mant > limit/10 {
			return 0, false
		}
		mant *= 10
		scale--
	}
	for scale < 0 {
		if mant%10 != 0 {
			lost = true
		}
		mant /= 10
		scale++
		if mant == 0 {
			break
		}
	}
	if lost {
		mant++ // round up
	}
	return mant, true
}
