package meter

import "encoding/binary"

// MaxJSONDepth is the deepest nesting of arrays and objects that tollgate
// accepts in a JSON request body: 256 containers, the outermost included.
// A body nested deeper is refused with ErrInvalidRequest before anything
// else reads it, on every route, flat ones included (see ParseRequest).
//
// Why a limit: recursive JSON validators use stack in proportion to the
// nesting, so a 24 MB body of "[" once took tollgate down with a stack
// overflow, and a few concurrent 4 MB ones took gigabytes of stack. The
// body is now validated by checkJSON, which needs no recursion and no
// memory, and the limit keeps every later reader (gjson, sjson, and the
// provider's own parser) within bounds.
//
// Why 256: it is far above what real requests nest (OpenAI's structured
// outputs allow 10 levels of schema nesting, about 25 JSON levels with the
// request around them; a conversation with tool calls and schemas rarely
// exceeds 20), and above the defaults of the parsers that API front ends
// commonly run on (serde_json refuses beyond 128 levels, pydantic's jiter
// beyond 200), so tollgate does not refuse a body a provider would accept
// for its nesting, while staying far below Python's recursion limit of
// 1,000.
const MaxJSONDepth = 256

// jsonVerdict is what checkJSON found.
type jsonVerdict uint8

const (
	jsonValid   jsonVerdict = iota // one valid JSON value, at most MaxJSONDepth deep
	jsonInvalid                    // not valid JSON (found before any excess nesting)
	jsonTooDeep                    // a valid prefix opens more than MaxJSONDepth containers
)

// checkJSON validates b as one JSON value (RFC 8259) surrounded by
// optional whitespace, the grammar gjson.ValidBytes and encoding/json.Valid
// accept (strings are not checked for valid UTF-8, as neither does). It
// stops at the first byte that makes b invalid or that opens container
// number MaxJSONDepth+1, and returns that byte's offset with the verdict
// (len(b) for a valid body). It is iterative: no recursion, no allocation,
// one pass over b, so its stack and memory are constant whatever the body.
//
// Because the check stops at the first problem, jsonTooDeep means the
// bytes before the offset are the start of a valid JSON document: such a
// body is JSON by any reading, however it continues.
func checkJSON(b []byte) (jsonVerdict, int) {
	// objects[d] says whether the container at depth d (0-based) is an
	// object rather than an array.
	var objects [MaxJSONDepth]bool
	depth := 0
	const (
		wantValue    = iota // a value
		wantValueEnd        // '[' was just read: a value or ']'
		wantKey             // a key string
		wantKeyEnd          // '{' was just read: a key or '}'
		wantNext            // after a value: ',' or the closer, or the end at depth 0
	)
	st := wantValue
	i := 0
	for {
		for i < len(b) && isSpace(b[i]) {
			i++
		}
		if i == len(b) {
			if st == wantNext && depth == 0 {
				return jsonValid, i
			}
			return jsonInvalid, i
		}
		c := b[i]
		switch st {
		case wantValueEnd:
			if c == ']' {
				depth--
				i++
				st = wantNext
				continue
			}
			fallthrough
		case wantValue:
			switch {
			case c == '{' || c == '[':
				if depth == MaxJSONDepth {
					return jsonTooDeep, i
				}
				objects[depth] = c == '{'
				st = wantValueEnd
				if c == '{' {
					st = wantKeyEnd
				}
				depth++
				i++
				continue
			case c == '"':
				i = skipJSONString(b, i+1)
			case c == '-' || (c >= '0' && c <= '9'):
				i = skipJSONNumber(b, i)
			case c == 't':
				i = skipJSONLiteral(b, i, "true")
			case c == 'f':
				i = skipJSONLiteral(b, i, "false")
			case c == 'n':
				i = skipJSONLiteral(b, i, "null")
			default:
				return jsonInvalid, i
			}
			if i < 0 {
				return jsonInvalid, -i - 1
			}
			st = wantNext
		case wantKeyEnd:
			if c == '}' {
				depth--
				i++
				st = wantNext
				continue
			}
			fallthrough
		case wantKey:
			if c != '"' {
				return jsonInvalid, i
			}
			if i = skipJSONString(b, i+1); i < 0 {
				return jsonInvalid, -i - 1
			}
			for i < len(b) && isSpace(b[i]) {
				i++
			}
			if i == len(b) || b[i] != ':' {
				return jsonInvalid, i
			}
			i++
			st = wantValue
		default: // wantNext
			if depth == 0 {
				return jsonInvalid, i // something after the top-level value
			}
			inObject := objects[depth-1]
			switch {
			case c == ',' && inObject:
				st = wantKey
			case c == ',':
				st = wantValue
			case c == '}' && inObject, c == ']' && !inObject:
				depth--
				st = wantNext
			default:
				return jsonInvalid, i
			}
			i++
		}
	}
}

// SWAR constants: the lowest and the highest bit of every byte of a word.
const (
	lsb = 0x0101010101010101
	msb = 0x8080808080808080
)

// zeroByte has the high bit of a byte set where x has a zero byte (and
// possibly, after one, false alarms above it).
func zeroByte(x uint64) uint64 { return (x - lsb) &^ x & msb }

// skipJSONString crosses the rest of a string whose opening quote is
// before b[i], and returns the index after its closing quote, or -(k+1)
// for an invalid byte (or the end of b) at k.
func skipJSONString(b []byte, i int) int {
	for {
		// Eight bytes at a time while none of them needs attention
		// (SWAR: a byte below 0x20, a quote or a backslash sets its
		// high bit in the mask; a false alarm only sends the bytes to
		// the loop below).
		for len(b)-i >= 8 {
			x := binary.LittleEndian.Uint64(b[i:])
			if (x-lsb*0x20)&^x&msb|zeroByte(x^(lsb*'"'))|zeroByte(x^(lsb*'\\')) != 0 {
				break
			}
			i += 8
		}
		for i < len(b) {
			if c := b[i]; c < 0x20 || c == '"' || c == '\\' {
				break
			}
			i++
		}
		if i == len(b) {
			return -i - 1
		}
		switch b[i] {
		case '"':
			return i + 1
		case '\\':
			i++
			if i == len(b) {
				return -i - 1
			}
			switch b[i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i++
			case 'u':
				for range 4 {
					i++
					if i == len(b) || !isHex(b[i]) {
						return -i - 1
					}
				}
				i++
			default:
				return -i - 1
			}
		default: // a control character
			return -i - 1
		}
	}
}

func isHex(c byte) bool {
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// skipJSONNumber crosses the number that starts at b[i]:
// -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?. It returns the index
// after it, or -(k+1) for an invalid byte (or the end of b) at k.
func skipJSONNumber(b []byte, i int) int {
	if b[i] == '-' {
		i++
	}
	switch {
	case i == len(b) || !isDigit(b[i]):
		return -i - 1
	case b[i] == '0':
		i++
	default:
		for i < len(b) && isDigit(b[i]) {
			i++
		}
	}
	if i < len(b) && b[i] == '.' {
		i++
		if i == len(b) || !isDigit(b[i]) {
			return -i - 1
		}
		for i < len(b) && isDigit(b[i]) {
			i++
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if i == len(b) || !isDigit(b[i]) {
			return -i - 1
		}
		for i < len(b) && isDigit(b[i]) {
			i++
		}
	}
	return i
}

// skipJSONLiteral crosses lit (true, false or null) at b[i].
func skipJSONLiteral(b []byte, i int, lit string) int {
	if len(b)-i < len(lit) || string(b[i:i+len(lit)]) != lit {
		return -i - 1
	}
	return i + len(lit)
}
