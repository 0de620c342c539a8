package meter

// This file reads the stream Gemini's streamGenerateContent sends without
// alt=sse: one JSON array, written element by element as the answer is
// generated ("[{…}\n,\r\n{…}\n]"), each element a GenerateContentResponse
// like one SSE event's data. The Tap passes the bytes through untouched
// and scans each element as its own document as it streams, so memory
// stays the scanner's, however long the array.

// Array parser states (Tap.arr).
const (
	arrOpen  uint8 = iota // before the array's "["
	arrFirst              // after "[": an element or "]"
	arrNext               // after an element: "," or "]"
	arrElem               // inside an element, which the scanner reads
	arrComma              // after ",": an element
	arrDone               // after "]"
	arrBad                // malformed: the rest is not read
)

// scanArray runs the array parser over p.
func (t *Tap) scanArray(p []byte) {
	for i := 0; i < len(p); {
		switch t.arr {
		case arrElem:
			i += t.sc.feedDoc(p[i:])
			switch t.sc.st {
			case stDone:
				t.events++
				t.commit(&t.sc.f, true)
				t.arr = arrNext
			case stBad:
				t.arr = arrBad
			}
		case arrBad:
			return
		default:
			c := p[i]
			if isSpace(c) {
				i++
				continue
			}
			switch {
			case t.arr == arrOpen && c == '[':
				t.arr = arrFirst
			case (t.arr == arrFirst || t.arr == arrNext) && c == ']':
				t.arr = arrDone
				t.docDone = true
			case t.arr == arrNext && c == ',':
				t.arr = arrComma
			case t.arr == arrFirst || t.arr == arrComma:
				t.sc.reset(t.sc.sch)
				t.arr = arrElem
				continue // the element's first byte is the scanner's
			default:
				t.arr = arrBad
				return
			}
			i++
		}
	}
}

// endArray ends the array at the end of the body: an element cut short
// still counts the text it streamed.
func (t *Tap) endArray() {
	if t.arr != arrElem {
		return
	}
	t.sc.finish()
	if t.commit(&t.sc.f, t.sc.f.complete); t.sc.f.complete {
		t.events++
	}
}
