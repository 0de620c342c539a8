package meter

import (
	"bytes"
	"strings"
	"testing"
)

// mislabels are Content-Types a gateway or a misconfigured provider has
// been seen to put on any response.
var mislabels = []string{"application/json", "text/plain; charset=utf-8", "", "text/event-stream", "application/octet-stream", "text/html"}

// TestFramingByBytes replays every recorded SSE stream and JSON body under
// every wrong Content-Type, through every reader (one byte at a time,
// random splits, the iotest readers), and requires exactly the usage,
// events and client bytes of the correctly labelled case: an SSE stream
// labelled application/json was charged its input only, one labelled
// text/plain 22 times its output.
func TestFramingByBytes(t *testing.T) {
	for _, tc := range loadCases(t) {
		if !strings.HasPrefix(tc.contentType, "text/event-stream") && tc.contentType != "application/json" {
			continue // a body that is neither (audio, text) has no framing to find
		}
		wantClient, wantUsage, wantTap := replay(t, tc, bytes.NewReader(tc.data))
		for _, ct := range mislabels {
			t.Run(tc.name+"/"+ct, func(t *testing.T) {
				mis := tc
				mis.contentType = ct
				for name, mk := range readers(tc.data) {
					if len(tc.data) > 64<<10 && name != "whole" && name != "randome" {
						continue // the multi-megabyte cases: TestGolden splits them every way
					}
					client, u, tap := replay(t, mis, mk())
					if !sameUsage(u, wantUsage) || tap.events != wantTap.events {
						t.Fatalf("%s reads: usage %+v (%d events)\n want %+v (%d events)", name, u, tap.events, wantUsage, wantTap.events)
					}
					if !bytes.Equal(client, wantClient) {
						t.Fatalf("%s reads: the client got %d bytes, want %d", name, len(client), len(wantClient))
					}
				}
			})
		}
	}
}

// TestFramingSniff pins how the framing is chosen when the label and the
// bytes disagree, and the edges of the detection: leading whitespace, a
// byte-order mark, a field name cut across reads, and bodies that are
// neither JSON nor SSE.
func TestFramingSniff(t *testing.T) {
	chatStream := chatReq(t, true)
	chatJSON := mustParse(t, OpenAIChat, "application/json", `{"model":"gpt-4o"}`)
	transcript := mustParse(t, OpenAIAudio, "multipart/form-data; boundary="+testBoundary,
		form(t, map[string]string{"model": "gpt-4o-transcribe", "response_format": "text"}, map[string][]byte{"file": wavFile(16000, 1, 16, 2)}))
	usageLine := "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":1}}\n\n"
	jsonBody := `{"choices":[{"message":{"content":"hello"}}],"usage":{"prompt_tokens":3,"completion_tokens":1}}`
	tests := []struct {
		name     string
		req      Request
		ct, body string
		mode     uint8
		in, out  int64 // usage wanted; in -1: the input is estimated
		est      bool  // Usage.Estimated
	}{
		{"SSE labelled JSON", chatStream, "application/json", contentEvent + usageLine + doneEvent, modeSSE, 5, 1, false},
		{"SSE labelled text/plain", chatStream, "text/plain", contentEvent + usageLine + doneEvent, modeSSE, 5, 1, false},
		{"SSE after blank lines", chatStream, "application/json", "\r\n\n" + usageLine, modeSSE, 5, 1, false},
		{"SSE starting with a comment", chatStream, "", ": ping\n\n" + usageLine, modeSSE, 5, 1, false},
		{"SSE starting with event:", chatStream, "text/plain", "event: x\n" + usageLine, modeSSE, 5, 1, false},
		{"SSE starting with id:", chatStream, "text/plain", "id: 7\n" + usageLine, modeSSE, 5, 1, false},
		{"SSE starting with retry:", chatStream, "text/plain", "retry: 1000\n\n" + usageLine, modeSSE, 5, 1, false},
		{"SSE starting with a bare data line", chatStream, "text/plain", "data\n\n" + usageLine, modeSSE, 5, 1, false},
		// WHATWG: a stream may start with a UTF-8 byte-order mark, which
		// the decoder drops.
		{"SSE after a BOM", chatStream, "application/json", "\uFEFF" + usageLine, modeSSE, 5, 1, false},
		{"JSON labelled SSE", chatJSON, "text/event-stream", jsonBody, modeJSON, 3, 1, false},
		{"JSON labelled text/plain, whitespace first", chatJSON, "text/plain", "\n  " + jsonBody, modeJSON, 3, 1, false},
		{"JSON answer to a stream request", chatStream, "text/event-stream", jsonBody, modeJSON, 3, 1, false},
		// Neither: the request and the label decide.
		{"unknown field first, labelled SSE", chatJSON, "text/event-stream", "foo: bar\n" + usageLine, modeSSE, 5, 1, false},
		{"indented field, labelled SSE", chatStream, "text/event-stream", " data: x\n\n" + usageLine, modeSSE, 5, 1, false},
		// A stream asked for is no reason to read a body as one: an
		// error page answering a stream request is charged by its size.
		{"unknown field first, labelled JSON", chatStream, "application/json", "foo: bar\n" + usageLine, modeOpaque, -1, 21, true},
		{"html page answering a stream request", chatStream, "text/html", "<html>bad gateway</html>", modeOpaque, -1, 6, true},
		{"a word that starts like a field", chatJSON, "text/plain", "database down", modeOpaque, -1, 4, true},
		{"html error page", chatJSON, "application/json", "<html>bad gateway</html>", modeOpaque, -1, 6, true},
		{"only whitespace", chatJSON, "application/json", " \n", modeOpaque, -1, 1, true},
		{"empty, stream asked", chatStream, "application/json", "", modeOpaque, -1, 0, true},
		{"empty, labelled SSE", chatStream, "text/event-stream", "", modeSSE, -1, 0, true},
		// A transcript in text format may begin with a bracket: for
		// openai.audio a bracket is JSON only when the label says so.
		{"bracketed transcript", transcript, "text/plain", "[Music] la la la", modeOpaque, -1, 4, true},
		{"JSON transcript", transcript, "application/json", `{"text":"hi","usage":{"type":"tokens","input_tokens":7,"output_tokens":2}}`, modeJSON, 7, 2, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for name, mk := range readers([]byte(tc.body)) {
				client, u, tap := replay(t, testCase{api: tc.req.API, data: []byte(tc.body), contentType: tc.ct, req: tc.req}, mk())
				if tap.mode != tc.mode {
					t.Fatalf("%s reads: framing %d, want %d", name, tap.mode, tc.mode)
				}
				if !bytes.Equal(client, []byte(tc.body)) {
					t.Errorf("%s reads: client got %q", name, client)
				}
				if tc.in >= 0 && u.InputTokens != tc.in || u.OutputTokens != tc.out || u.Estimated != tc.est {
					t.Errorf("%s reads: usage %+v, want %d in, %d out, estimated %v", name, u, tc.in, tc.out, tc.est)
				}
			}
		})
	}
}

// TestFramingFilter checks the usage-chunk filter under detection: it is
// decided by the request alone, before the first byte (the proxy drops
// Content-Length on it), and removes the injected chunk from a mislabelled
// stream as from a labelled one, even when the stream's first field name
// arrives one byte at a time.
func TestFramingFilter(t *testing.T) {
	for _, ct := range append(mislabels, "text/event-stream") {
		if !NewTap(chatReq(t, false), ct).Filters() {
			t.Errorf("%q: a chat stream without include_usage does not filter", ct)
		}
		if NewTap(chatReq(t, true), ct).Filters() || NewTap(mustParse(t, OpenAIChat, "application/json", `{"model":"m"}`), ct).Filters() {
			t.Errorf("%q: filters a stream whose client asked for usage, or a non-stream", ct)
		}
	}
	anyLabel := []string{"application/json", "text/plain", "text/event-stream"}
	for _, tc := range []struct {
		name   string
		labels []string
		chunks []string
		want   string
	}{
		{"usage chunk first, one byte at a time", anyLabel, strings.Split(usageEvent+contentEvent, ""), plainEvent},
		{"usage chunk first, cut in its name", anyLabel, []string{"da", "ta: " + usageEvent[6:] + doneEvent}, doneEvent},
		{"blank lines, then the usage chunk", anyLabel, []string{"\n\r\n", "d", "ata", ":", usageEvent[5:]}, "\n\r\n"},
		{"JSON answer passes", anyLabel, []string{`{"choices":[],`, `"usage":{"prompt_tokens":1}}`}, `{"choices":[],"usage":{"prompt_tokens":1}}`},
		// A name that is not a field SSE defines: a stream when labelled
		// one (and its usage chunk removed), else opaque, all passed.
		{"not a field, labelled SSE", []string{"text/event-stream"}, []string{"dat", "um: x\n\n" + usageEvent}, "datum: x\n\n"},
		{"not a field, labelled JSON", []string{"application/json"}, []string{"dat", "um: x\n\n" + usageEvent}, "datum: x\n\n" + usageEvent},
		{"not a field, held name released", anyLabel, []string{"retr", "ieved text"}, "retrieved text"},
		{"not a field, at the end", anyLabel, []string{"r", "e", "t", "r", "x"}, "retrx"},
		{"a body of only a field's start", anyLabel, []string{"d", "at"}, "dat"},
	} {
		for _, ct := range tc.labels {
			tap := NewTap(chatReq(t, false), ct)
			if got := feedAll(tap, tc.chunks...); got != tc.want {
				t.Errorf("%s, %s: client got %q, want %q", tc.name, ct, got, tc.want)
			}
		}
	}
}

func TestJSONBodyEdges(t *testing.T) {
	req := mustParse(t, OpenAIChat, "application/json", `{"model":"gpt-4o"}`)
	ok := `{"choices":[{"message":{"content":"hello"}}],"usage":{"prompt_tokens":3,"completion_tokens":1}}`
	if u := usageOf(t, req, "application/json", "\n "+ok+"\n"); u.Estimated || u.InputTokens != 3 {
		t.Errorf("whitespace around the body: %+v", u)
	}
	if u := usageOf(t, req, "", ok); u.Estimated {
		t.Errorf("no content type is JSON: %+v", u)
	}
	if u := usageOf(t, req, "application/vnd.api+json", ok); u.Estimated {
		t.Errorf("+json is JSON: %+v", u)
	}
	// Escaped keys are not the usage key; strings hiding braces do not confuse.
	tricky := `{"x":"}]\"{[","us\u0061ge":{"prompt_tokens":99},"choices":[{"message":{"content":"a\"b\\"}}],"usage":{"prompt_tokens":3,"completion_tokens":1}}`
	if u := usageOf(t, req, "application/json", tricky); u.InputTokens != 3 || u.OutputTokens != 1 || u.Estimated {
		t.Errorf("tricky body: %+v", u)
	}
	// Not JSON at all: nothing reported, estimated.
	if u := usageOf(t, req, "application/json", "<html>bad gateway</html>"); !u.Estimated {
		t.Errorf("html body: %+v", u)
	}
}
