package meter

import (
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
