package meter

import (
	"strings"

	"github.com/tidwall/gjson"
)

// This file walks a request body that checkJSON has passed: the members
// of an object or the elements of an array, each as its raw text, in one
// pass. The request parsers read every field they need in a single walk
// of its object, instead of a gjson Get per field, each of which scans
// the object again from its start (crossing a 100 KB "messages" once per
// field read after it). Values are not unescaped unless read, so crossing
// a long conversation allocates nothing.
//
// A field is the first member with its key, compared after unescaping,
// as gjson's Get finds it; callers refuse duplicate keys where they
// matter (see duplicateKey).

// jsonIter yields the members of a JSON object, the elements of an
// array, or a scalar once, as gjson's Result.ForEach does for the value
// of a Get.
type jsonIter struct {
	s      string
	i      int  // where the next member starts; past the close at the end
	obj    bool // an object: nextAt returns keys
	scalar bool // a scalar, not yet returned
	done   bool
}

// iterate starts walking raw, the text of one valid JSON value without
// surrounding space (or with space after it), or "" for an absent value,
// which yields nothing.
func iterate(raw string) jsonIter {
	if raw == "" {
		return jsonIter{done: true}
	}
	return iterateAt(raw, 0)
}

// iterateAt starts walking the valid JSON value at s[i].
func iterateAt(s string, i int) jsonIter {
	switch s[i] {
	case '{':
		return jsonIter{s: s, i: i + 1, obj: true}
	case '[':
		return jsonIter{s: s, i: i + 1}
	}
	return jsonIter{s: s, i: i, scalar: true}
}

// nextAt returns the next member's key (unescaped; "" for an array
// element or a scalar) and the index in s where its value starts, or ok
// false at the end. The caller crosses the value and sets it.i past it.
func (it *jsonIter) nextAt() (key string, at int, ok bool) {
	if it.done {
		return "", 0, false
	}
	s := it.s
	if it.scalar {
		it.scalar, it.done = false, true
		return "", it.i, true
	}
	i := skipSpaceString(s, it.i)
	switch s[i] {
	case '}', ']':
		it.i, it.done = i+1, true
		return "", 0, false
	case ',':
		i = skipSpaceString(s, i+1)
	}
	if it.obj {
		end := skipRawString(s, i+1)
		key = jsonKey(s[i:end])
		i = skipSpaceString(s, skipSpaceString(s, end)+1) // past ':'
	}
	return key, i, true
}

// next returns the next member's key ("" for an array element or a
// scalar) and raw value, or ok false at the end.
func (it *jsonIter) next() (key, val string, ok bool) {
	key, i, ok := it.nextAt()
	if !ok {
		return "", "", false
	}
	end := skipRawValue(it.s, i)
	it.i = end
	return key, it.s[i:end], true
}

// jsonStr returns the string a raw JSON value holds, and whether it is
// a string.
func jsonStr(raw string) (string, bool) {
	if len(raw) < 2 || raw[0] != '"' {
		return "", false
	}
	if s := raw[1 : len(raw)-1]; strings.IndexByte(s, '\\') < 0 {
		return s, true
	}
	return gjson.Parse(raw).Str, true
}

// jsonKey returns an object key, given as its raw JSON string,
// unescaped; it allocates only for a key with escapes.
func jsonKey(raw string) string {
	s, _ := jsonStr(raw)
	return s
}

// isObject reports whether raw is a JSON object.
func isObject(raw string) bool { return raw != "" && raw[0] == '{' }

func skipSpaceString(s string, i int) int {
	for i < len(s) && isSpace(s[i]) {
		i++
	}
	return i
}

// skipRawString returns the index past the closing quote of the string
// whose content starts at s[i].
func skipRawString(s string, i int) int {
	for {
		q := strings.IndexByte(s[i:], '"')
		if q < 0 {
			return len(s)
		}
		j := i + q
		// The quote is escaped when an odd number of backslashes
		// precede it.
		k := j
		for s[k-1] == '\\' {
			k--
		}
		if (j-k)%2 == 0 {
			return j + 1
		}
		i = j + 1
	}
}

// skipRawValue returns the index past the valid JSON value at s[i].
func skipRawValue(s string, i int) int {
	switch s[i] {
	case '"':
		return skipRawString(s, i+1)
	case '{', '[':
		return skipContainer(s, i+1, 1)
	}
	for i < len(s) && !delim[s[i]] {
		i++
	}
	return i
}

// skipContainer returns the index past the close of the container that
// s[i] is inside, depth levels deep.
func skipContainer(s string, i, depth int) int {
	for i < len(s) {
		switch s[i] {
		case '"':
			i = skipRawString(s, i+1)
			continue
		case '{', '[':
			depth++
		case '}', ']':
			depth--
			if depth == 0 {
				return i + 1
			}
		}
		i++
	}
	return len(s)
}

// firstMember returns the raw value of obj's first member named key, or
// "" when obj has none or is not an object.
func firstMember(obj, key string) string {
	if !isObject(obj) {
		return ""
	}
	for it := iterate(obj); ; {
		k, v, ok := it.next()
		if !ok {
			return ""
		}
		if k == key {
			return v
		}
	}
}
