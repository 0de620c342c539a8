package meter

import "strings"

// This file decides how a Tap reads a response: as one JSON document, as
// server-sent events, or as opaque bytes it only counts. The response's
// Content-Type is not trusted for that: gateways and misconfigured
// providers label SSE streams application/json or text/plain, and a
// stream metered as JSON was charged its input only, one counted as
// opaque text 22 times its output. The bytes decide, and the label only
// where they cannot:
//
//  1. Leading whitespace and a UTF-8 byte-order mark (which an SSE
//     decoder drops, WHATWG HTML "Server-sent events") are skipped.
//  2. "{" or "[" starts a JSON document. No SSE line starts so: it would
//     be a field named "{…", which SSE ignores. (openai.audio's "["
//     excepted, see below; on google.gemini a "[" starts the array of
//     responses streamGenerateContent sends without alt=sse.)
//  3. ":" (a comment) or one of the field names SSE defines, "data",
//     "event", "id" or "retry", followed by ":" or a line end, at the
//     start of a line starts an event stream.
//  4. Anything else, or a body that ends first, is an event stream when
//     the Content-Type says text/event-stream (a stream may begin with a
//     field of its own), and opaque otherwise: an audio file, a text
//     transcript, an HTML error page, counted and, for token APIs, charged
//     by its size, never free.
//
// What the request asked for ("stream": true) decides the usage-chunk
// filter, which must be known before the first byte (see NewTap); the
// framing is the bytes' to tell.
//
// openai.audio is the one API whose successful answers include plain text
// (response_format text, srt, vtt), which may begin with a bracket
// ("[Music] …"): there a leading "[" is JSON only when the Content-Type
// is JSON or absent (its JSON answers are objects).
//
// Detection looks at most at the first field name (five bytes after any
// whitespace); the bytes seen meanwhile reach the client at once, except
// a field name a filtering Tap holds until it knows whether the event is
// the usage chunk to remove, as it holds any incomplete event.

// Response framings, as the steps above choose them.
const (
	modeSniff  uint8 = iota // not known yet
	modeJSON                // one JSON document
	modeSSE                 // server-sent events
	modeOpaque              // anything else: counted, not parsed
	modeArray               // a google.gemini stream as one JSON array of responses (jsonarray.go)
)

// sseFields are the field names an SSE stream may start with, after which
// step 3 requires ":" or a line end.
var sseFields = [...]string{"data", "event", "id", "retry"}

// utf8BOM is the byte-order mark an SSE stream may begin with.
const utf8BOM = "\xEF\xBB\xBF"

// sniffState is a Tap's framing detection in progress.
type sniffState struct {
	fallback uint8 // the framing step 4 chooses: modeSSE or modeOpaque
	arrayOK  bool  // a leading "[" is JSON (false for audio not labelled JSON)
	indent   bool  // the current line began with a space or a tab
	bom      uint8 // bytes of a byte-order mark matched at the start of the body
	field    int8  // index in sseFields of the name being matched, or -1
	fieldN   uint8 // bytes of it matched
}

// initSniff prepares detection for req's response labelled contentType.
func (t *Tap) initSniff(req Request, contentType string) {
	// The media type without parameters, compared without allocating
	// (mime.ParseMediaType would allocate on every response).
	mt, _, _ := strings.Cut(contentType, ";")
	mt = strings.TrimSpace(mt)
	labelSSE := strings.EqualFold(mt, "text/event-stream")
	labelJSON := mt == "" || strings.EqualFold(mt, "application/json") ||
		(len(mt) > 5 && strings.EqualFold(mt[len(mt)-5:], "+json"))
	t.sn = sniffState{fallback: modeOpaque, arrayOK: req.API != OpenAIAudio || labelJSON, field: -1}
	if labelSSE {
		t.sn.fallback = modeSSE
	}
}

// sniff runs detection over p, the body's bytes from offset off. It
// returns start, the index of the byte at which the framing was decided,
// or len(p) when detection goes on; when the bytes leave the decision to
// the fallback (step 4), mode is still modeSniff and the caller applies
// it. line is the index from which p's bytes are part of the first SSE
// line, which a filter may have to hold.
func (t *Tap) sniff(p []byte, off int64) (start, line int) {
	sn := &t.sn
	line = 0
	if sn.field < 0 {
		line = len(p)
	}
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch {
		case sn.field >= 0:
			name := sseFields[sn.field]
			if int(sn.fieldN) < len(name) {
				if c == name[sn.fieldN] {
					sn.fieldN++
					continue
				}
				return i, line // not a field SSE defines
			}
			if c == ':' || c == '\n' || c == '\r' {
				t.decide(modeSSE)
			}
			return i, line
		case sn.bom > 0 && sn.bom < 3:
			if c != utf8BOM[sn.bom] {
				return i, i // a broken mark: not whitespace, not a field
			}
			sn.bom++
		case c == 0xEF && off+int64(i) == 0:
			sn.bom = 1
		case c == ' ' || c == '\t':
			sn.indent = true
		case c == '\n' || c == '\r':
			sn.indent = false
		case c == '[' && t.req.API == GoogleGemini:
			t.decide(modeArray)
			return i, i
		case c == '{' || (c == '[' && sn.arrayOK):
			t.decide(modeJSON)
			return i, i
		case sn.indent:
			return i, i // a line starting with a blank: no field SSE reads
		case c == ':':
			t.decide(modeSSE)
			return i, i
		default:
			for k, name := range sseFields {
				if c == name[0] {
					sn.field, sn.fieldN, line = int8(k), 1, i
				}
			}
			if sn.field < 0 {
				return i, i
			}
		}
	}
	return len(p), line
}

// decide ends detection with framing mode. For SSE it puts the line
// parser where the bytes seen so far left it: at the start of a line, or
// inside a field name (the one matched, or a blank for an indented line,
// or the bytes of a broken byte-order mark), so that parsing goes on
// exactly as if it had run from the first byte.
func (t *Tap) decide(mode uint8) {
	t.mode = mode
	t.sc.reset(schemaFor(t.req.API, mode == modeSSE))
	if mode != modeSSE {
		return
	}
	sn := &t.sn
	switch {
	case sn.field >= 0:
		t.ls, t.nlen = lsName, copy(t.name[:], sseFields[sn.field][:sn.fieldN])
	case sn.bom > 0 && sn.bom < 3:
		t.ls, t.nlen = lsName, copy(t.name[:], utf8BOM[:sn.bom])
	case sn.indent:
		t.ls, t.name[0], t.nlen = lsName, ' ', 1
	}
}
