package meter

import (
	"bytes"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// TestScannerFastPaths: the scanner crosses a compact key and a value
// nobody asked about in one step when they lie within one read, and
// byte by byte otherwise. Each document here is read whole (the fast
// paths), split, and one byte at a time, and must meter the same and
// as documented: escapes, spaces around the colon, keys at and past
// maxKeyLen, values that end at the read's end.
func TestScannerFastPaths(t *testing.T) {
	key40 := strings.Repeat("k", maxKeyLen)
	key41 := strings.Repeat("k", maxKeyLen+1)
	const usage = `"usage":{"prompt_tokens":3,"completion_tokens":4}`
	tests := []struct {
		name   string
		doc    string
		in     int64 // 0: no usage read (estimated)
		chars  int64 // produced text the doc carries, for an estimate
		events int64
	}{
		{"compact", `{"id":"chatcmpl-1","created":1741569952,` + usage + `}`, 3, 0, 1},
		{"escaped quote in a skipped string", `{"id":"a\"b\\","x":"\"",` + usage + `}`, 3, 0, 1},
		{"spaces around the colon", `{"id" : "a", "usage" : {"prompt_tokens" :3 ,"completion_tokens": 4}}`, 3, 0, 1},
		{"escaped key matches nothing", `{"us\u0061ge":{"prompt_tokens":3,"completion_tokens":4}}`, 0, 0, 1},
		{"escaped quote then a colon inside a key", `{"a\":1,"usage":{"prompt_tokens":3,"completion_tokens":4}}`, 0, 0, 1},
		{"escaped key before the usage", `{"a\"b":1,"c\\":"d",` + usage + `}`, 3, 0, 1},
		{"key of maxKeyLen", `{"` + key40 + `":"v","` + key40 + `":{"a":[1]},` + usage + `}`, 3, 0, 1},
		{"key past maxKeyLen", `{"` + key41 + `":"v",` + usage + `}`, 3, 0, 1},
		{"literals and numbers", `{"a":null,"b":true,"c":false,"d":-1.5e3,"e":0,` + usage + `,"f":12}`, 3, 0, 1},
		{"scalar last", `{"a":1}`, 0, 0, 1},
		{"text beside skipped values", `{"id":"x","choices":[{"index":0,"delta":{"content":"Hello"},"logprobs":null}],"usage":null}`, 0, 5, 1},
	}
	req := chatReq(t, true)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			stream := "data: " + tc.doc + "\n\n"
			for split := range uint16(8) {
				checkTap(t, req, "text/event-stream", []byte(stream), split)
			}
			tap := NewTap(req, "text/event-stream")
			tap.Feed([]byte(stream))
			_, u := tap.End()
			if tc.in != 0 && (u.InputTokens != tc.in || u.OutputTokens != 4 || u.Estimated) {
				t.Errorf("usage %+v; want 3 in, 4 out, reported", u)
			}
			if tc.in == 0 && !u.Estimated {
				t.Errorf("usage %+v; want an estimate", u)
			}
			if tap.textBytes != tc.chars || tap.events != tc.events {
				t.Errorf("%d bytes of text in %d events; want %d in %d", tap.textBytes, tap.events, tc.chars, tc.events)
			}
		})
	}
}

// FuzzScanner feeds one document to the scanner whole and one byte at a
// time, under each schema, and requires the same captured fields and the
// same state at the end: the fast paths (a key, or a value nobody asked
// about, within one read) must decide exactly as the byte-by-byte path.
// (FuzzSSE and FuzzJSON compare only the Usage a Tap derives from the
// fields.)
func FuzzScanner(f *testing.F) {
	for _, doc := range []string{
		`{"id":"chatcmpl-1","created":1741569952,"choices":[{"index":0,"delta":{"content":"Hi"},"logprobs":null}],"usage":null}`,
		`{"a\":1,"usage":{"prompt_tokens":3,"completion_tokens":4}}`,
		`{"type":"message_delta","usage":{"output_tokens":7,"iterations":[{"type":"message","input_tokens":1}]}}`,
		`{"response":{"output":[{"type":"web_search_call"},{"type":"code_interpreter_call","container_id":"c"}],"usage":{"input_tokens":2}}}`,
		`{"usageMetadata":{"promptTokenCount":4,"promptTokensDetails":[{"modality":"AUDIO","tokenCount":2}]}} `,
		"{\"id\" : \"x\" ,\n \"usage\":{\"prompt_tokens\" :1}}",
	} {
		f.Add([]byte(doc), uint8(0))
	}
	schemas := allSchemas()
	f.Fuzz(func(t *testing.T, doc []byte, sel uint8) {
		sch := schemas[int(sel)%len(schemas)]
		stop := sel&0x80 != 0 // feedDoc, as a JSON array's elements are read
		var whole, bytewise scanner
		whole.reset(sch)
		bytewise.reset(sch)
		nWhole := whole.run(doc, stop)
		nBytes := 0
		for i := 0; i < len(doc) && !(stop && bytewise.st == stDone); i++ {
			nBytes += bytewise.run(doc[i:i+1], stop)
		}
		whole.finish()
		bytewise.finish()
		if nWhole != nBytes {
			t.Fatalf("consumed %d bytes whole, %d byte by byte", nWhole, nBytes)
		}
		if whole.st != bytewise.st || whole.depth != bytewise.depth || whole.stack != bytewise.stack {
			t.Fatalf("state %d depth %d whole, %d depth %d byte by byte", whole.st, whole.depth, bytewise.st, bytewise.depth)
		}
		if !reflect.DeepEqual(whole.f, bytewise.f) || !reflect.DeepEqual(whole.item, bytewise.item) {
			t.Fatalf("fields differ:\nwhole     %+v\nbytewise  %+v", whole.f, bytewise.f)
		}
	})
}

// allSchemas returns every schema the scanner reads by: every API's,
// for both framings, each once, and flatSchema.
func allSchemas() []*schema {
	schemas := []*schema{flatSchema}
	for _, api := range APIs() {
		for _, sse := range []bool{false, true} {
			if sch := schemaFor(api, sse); !slices.Contains(schemas, sch) {
				schemas = append(schemas, sch)
			}
		}
	}
	return schemas
}

// TestSchemaLookup: lookup's key filter (kidBits) never hides a kid.
// Every key of every schema, and keys that are none (other lengths,
// other first and last bytes, the empty key), are looked up in every
// object node and must give what comparing with each kid gives.
func TestSchemaLookup(t *testing.T) {
	var keys []string
	schemas := allSchemas()
	for _, sch := range schemas {
		for _, n := range sch.nodes {
			if n.key != "" {
				keys = append(keys, n.key, n.key+"s", "x"+n.key, n.key[:len(n.key)-1], strings.ToUpper(n.key))
			}
		}
	}
	keys = append(keys, "", "id", "object", "created", "system_fingerprint", "index", "logprobs", "finish_reason", "\x80\xff")
	for _, sch := range schemas {
		for parent := range sch.nodes {
			for _, key := range keys {
				want := int16(-1)
				for _, k := range sch.nodes[parent].kids {
					if sch.nodes[k].key == key {
						want = k
					}
				}
				if got := sch.lookup(int16(parent), []byte(key)); got != want {
					t.Fatalf("lookup(%d, %q) = %d; want %d", parent, key, got, want)
				}
			}
		}
	}
}

// TestQuoteOrBackslash: the eight-bytes-at-a-time search finds the first
// quote or backslash wherever it lies in the word, and another after it
// does not matter, whatever the bytes before it (letters, NUL, the
// bytes next to '"' and '\\' in value, bytes ≥ 0x80); end when there is
// none.
func TestQuoteOrBackslash(t *testing.T) {
	slow := func(p []byte, i, end int) int {
		for ; i < end; i++ {
			if p[i] == '"' || p[i] == '\\' {
				return i
			}
		}
		return end
	}
	fill := []byte{'a', 0x00, 0x21, 0x23, 0x5b, 0x5d, 0x7f, 0x80, 0xa2, 0xdc, 0xff}
	for _, f := range fill {
		for _, stop := range []byte{'"', '\\', 0} {
			for n := 0; n <= 24; n++ {
				for at := 0; at <= n; at++ {
					p := bytes.Repeat([]byte{f}, n+1)
					if stop != 0 && at < n {
						p[at] = stop
						if at+1 < n {
							p[at+1] = '"' + '\\' - stop // the other one after it
						}
					}
					for i := 0; i <= min(at, 3); i++ {
						if got, want := quoteOrBackslash(p, i, n), slow(p, i, n); got != want {
							t.Fatalf("fill %#x, %q at %d of %d, from %d: %d; want %d", f, stop, at, n, i, got, want)
						}
					}
				}
			}
		}
	}
}
