package meter

import (
	"bytes"
	"io"
	"math/rand/v2"
	"strings"
	"testing"
	"testing/iotest"
)

// usageBlock finds the injected usage chunk's event block (its data line
// and the blank line after it) in an OpenAI chat stream written with eol.
func usageBlock(t *testing.T, stream, eol string) string {
	t.Helper()
	i := strings.Index(stream, `"choices":[],"usage":{`)
	if i < 0 {
		t.Fatal("no usage chunk in stream")
	}
	start := strings.LastIndex(stream[:i], eol+eol) + 2*len(eol)
	end := strings.Index(stream[i:], eol+eol) + i + 2*len(eol)
	return stream[start:end]
}

// stripUsageNull is stream as the provider sends it without
// include_usage: no "usage":null member in any chunk.
func stripUsageNull(stream string) string {
	return strings.ReplaceAll(stream, `,"usage":null`, "")
}

// TestFilterRemovesOnlyTheUsageChunk checks the client sees exactly the
// upstream bytes minus the usage chunk's event block and the "usage":null
// member include_usage adds to every other chunk, at every read size.
func TestFilterRemovesOnlyTheUsageChunk(t *testing.T) {
	for _, tc := range []struct{ file, eol string }{
		{"stream_filtered.sse", "\n"},
		{"stream_crlf.sse", "\r\n"},
		{"stream_cr.sse", "\r"},
		{"stream_utf8.sse", "\n"},
	} {
		t.Run(tc.file, func(t *testing.T) {
			stream := string(readFile(t, "testdata/openai.chat/"+tc.file))
			block := usageBlock(t, stream, tc.eol)
			want := stripUsageNull(strings.Replace(stream, block, "", 1))
			if !strings.HasSuffix(want, "data: [DONE]"+tc.eol+tc.eol) || len(want) >= len(stream) || !strings.Contains(stream, `"usage":null`) {
				t.Fatalf("test setup: bad expectation")
			}
			req := mustParse(t, OpenAIChat, "application/json", `{"model":"gpt-4o","stream":true}`)
			tcase := testCase{api: OpenAIChat, data: []byte(stream), contentType: "text/event-stream", req: req}
			for name, mk := range readers([]byte(stream)) {
				client, u, _ := replay(t, tcase, mk())
				if string(client) != want {
					t.Errorf("%s reads: client got\n%q\nwant\n%q", name, client, want)
				}
				if u.InputTokens != 1117 || u.CachedInputTokens != 1024 || u.Estimated {
					t.Errorf("%s reads: usage %+v", name, u)
				}
			}
		})
	}
}

func feedAll(tap *Tap, chunks ...string) string {
	var out []byte
	for _, c := range chunks {
		out = append(out, tap.Feed([]byte(c))...)
	}
	rest, _ := tap.End()
	return string(append(out, rest...))
}

func chatReq(t *testing.T, includeUsage bool) Request {
	t.Helper()
	body := `{"model":"gpt-4o","stream":true}`
	if includeUsage {
		body = `{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true}}`
	}
	return mustParse(t, OpenAIChat, "application/json", body)
}

const (
	contentEvent = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}],\"usage\":null}\n\n"
	plainEvent   = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n\n" // contentEvent without include_usage
	usageEvent   = "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":1}}\n\n"
	doneEvent    = "data: [DONE]\n\n"
)

func TestFilterCases(t *testing.T) {
	tests := []struct {
		name         string
		includeUsage bool
		chunks       []string
		want         string
	}{
		{"client asked: nothing removed", true, []string{contentEvent, usageEvent, doneEvent}, contentEvent + usageEvent + doneEvent},
		{"client did not ask: usage chunk and usage null removed", false, []string{contentEvent, usageEvent, doneEvent}, plainEvent + doneEvent},
		{"usage chunk split across reads", false, []string{contentEvent + usageEvent[:20], usageEvent[20:41], usageEvent[41:] + doneEvent}, plainEvent + doneEvent},
		{"usage null split across reads", false, []string{contentEvent[:50], contentEvent[50:62], contentEvent[62:], contentEvent, doneEvent}, plainEvent + plainEvent + doneEvent},
		{"usage null first, with spaces", false, []string{"data: { \"usage\" : null , \"choices\":[]}\n\n"}, "data: { \"choices\":[]}\n\n"},
		{"usage null alone", false, []string{"data: {\"usage\":null}\n\n"}, "data: {}\n\n"},
		{"usage null with CRLF and an event line", false, []string{"event: chunk\r\ndata: {\"a\":1,\"usage\":null}\r\n\r\n"}, "event: chunk\r\ndata: {\"a\":1}\r\n\r\n"},
		{"usage null after a CR, its LF in the next read", false, []string{"data: {\"a\":1,\"usage\":null}\r\r", "\ndata: [DONE]\r\r"}, "data: {\"a\":1}\r\r\ndata: [DONE]\r\r"},
		{"usage null on the second data line", false, []string{"data: {\"a\":1,\ndata: \"b\":2,\"usage\":null}\n\n"}, "data: {\"a\":1,\ndata: \"b\":2}\n\n"},
		// Removing a member, or its comma, across data lines would have to
		// join them; such an event is left as it is.
		{"usage null across data lines kept", false, []string{"data: {\"a\":1,\"usage\":\ndata: null}\n\n"}, "data: {\"a\":1,\"usage\":\ndata: null}\n\n"},
		{"comma on the line before kept", false, []string{"data: {\"a\":1,\ndata: \"usage\":null}\n\n"}, "data: {\"a\":1,\ndata: \"usage\":null}\n\n"},
		// The data lines are the parser's: "data" alone is one (an empty
		// value), an indented "data:" is not (its field is " data").
		{"data lines without a colon", false, []string{"data\ndata\ndata\ndata: {\"usage\":null,\"x\":{\"usage\":null}}\n\n"}, "data\ndata\ndata\ndata: {\"x\":{\"usage\":null}}\n\n"},
		{"an indented data line is no data line", false, []string{"  data:  {\"usage\":null}\ndata: {\ndata: \"usage\":null}\n\n"}, "  data:  {\"usage\":null}\ndata: {\ndata: }\n\n"},
		{"nested usage null kept", false, []string{"data: {\"x\":{\"usage\":null}}\n\n"}, "data: {\"x\":{\"usage\":null}}\n\n"},
		{"escaped key kept", false, []string{"data: {\"a\":1,\"\\u0075sage\":null}\n\n"}, "data: {\"a\":1,\"\\u0075sage\":null}\n\n"},
		// A provider that puts usage on a content chunk: the chunk carries
		// content the client needs, so it is never removed.
		{"usage on a content chunk is kept", false,
			[]string{"data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}],\"usage\":{\"prompt_tokens\":1}}\n\n", doneEvent},
			"data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}],\"usage\":{\"prompt_tokens\":1}}\n\n" + doneEvent},
		{"empty choices without usage is kept", false, []string{"data: {\"choices\":[],\"usage\":null}\n\n"}, "data: {\"choices\":[]}\n\n"},
		// The stream ended without the last blank line: released as it
		// is, but for its usage null.
		{"unterminated last event released", false, []string{contentEvent, "data: {\"choices\":[{\"delta\":{\"content\":\"y\"}}],\"usage\":null}"},
			plainEvent + "data: {\"choices\":[{\"delta\":{\"content\":\"y\"}}]}"},
		{"last event ended by a CR", false, []string{contentEvent, "data: {\"a\":1,\"usage\":null}\r\r"}, plainEvent + "data: {\"a\":1}\r\r"},
		// ... unless it is the complete usage chunk.
		{"unterminated usage chunk removed", false, []string{contentEvent, strings.TrimSuffix(usageEvent, "\n")}, plainEvent},
		{"comments and event lines kept", false, []string{": ping\n\n", "event: x\n" + contentEvent, usageEvent}, ": ping\n\n" + "event: x\n" + plainEvent},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := feedAll(NewTap(chatReq(t, tc.includeUsage), "text/event-stream"), tc.chunks...)
			if got != tc.want {
				t.Errorf("client got\n%q\nwant\n%q", got, tc.want)
			}
		})
	}
}

// TestFilterHoldsOnlyTheIncompleteEvent checks that complete events pass
// at once and only the tail of an unfinished event waits.
func TestFilterHoldsOnlyTheIncompleteEvent(t *testing.T) {
	tap := NewTap(chatReq(t, false), "text/event-stream")
	half := contentEvent[:30]
	if got := string(tap.Feed([]byte(contentEvent + half))); got != plainEvent {
		t.Fatalf("first Feed returned %q, want the complete event only", got)
	}
	if got := string(tap.Feed([]byte(contentEvent[30:]))); got != plainEvent {
		t.Fatalf("second Feed returned %q", got)
	}
}

// TestFilterReleasesLargeEvents checks the memory bound: an event larger
// than MaxHeldEventBytes is released as it arrives, not held.
func TestFilterReleasesLargeEvents(t *testing.T) {
	tap := NewTap(chatReq(t, false), "text/event-stream")
	big := "data: {\"choices\":[{\"delta\":{\"content\":\"" + strings.Repeat("z", 3*MaxHeldEventBytes) + "\"}}]}\n\n"
	var client []byte
	for i := 0; i < len(big); i += 4096 {
		out := tap.Feed([]byte(big[i:min(i+4096, len(big))]))
		client = append(client, out...)
		tap.checkBounds(t, 4096)
	}
	if len(client) != len(big) {
		t.Fatalf("client has %d of %d bytes of a large event before its end", len(client), len(big))
	}
	rest, u := tap.End()
	if len(rest) != 0 || string(client) != big {
		t.Fatalf("large event altered")
	}
	if u.OutputTokens != int64(3*MaxHeldEventBytes/BytesPerToken) || !u.Estimated {
		t.Errorf("usage %+v", u)
	}
}

// TestFilterPassesReleasedEventsUnchanged checks that an event released
// for its size keeps its "usage": null: its head, where the member's
// comma may lie, already went to the client, so cutting the member from
// the tail alone could leave the client invalid JSON.
func TestFilterPassesReleasedEventsUnchanged(t *testing.T) {
	tap := NewTap(chatReq(t, false), "text/event-stream")
	big := "data: {\"choices\":[{\"delta\":{\"content\":\"" + strings.Repeat("z", 2*MaxHeldEventBytes) + "\"}}],\ndata: \"usage\":null}\n\n"
	var client []byte
	for i := 0; i < len(big); i += 4096 {
		client = append(client, tap.Feed([]byte(big[i:min(i+4096, len(big))]))...)
	}
	rest, _ := tap.End()
	client = append(client, rest...)
	if string(client) != big {
		t.Fatalf("released event altered: it ends %q", client[max(0, len(client)-40):])
	}
}

// TestNoFilterIsZeroCopy checks that a Tap that does not filter hands back
// the caller's own slice.
func TestNoFilterIsZeroCopy(t *testing.T) {
	for _, tc := range []struct {
		req Request
		ct  string
	}{
		{chatReq(t, true), "text/event-stream"},
		{chatReq(t, true), "application/json"},
		{mustParse(t, OpenAIChat, "application/json", `{"model":"gpt-4o"}`), "application/json"},
		{mustParse(t, AnthropicMessages, "application/json", `{"model":"c","stream":true}`), "text/event-stream"},
	} {
		tap := NewTap(tc.req, tc.ct)
		p := []byte(contentEvent + usageEvent)
		out := tap.Feed(p)
		if len(out) != len(p) || &out[0] != &p[0] {
			t.Errorf("%s %s: Feed copied", tc.req.API, tc.ct)
		}
	}
}

func TestEndIsIdempotent(t *testing.T) {
	tap := NewTap(chatReq(t, false), "text/event-stream")
	tap.Feed([]byte(contentEvent + "data: {\"cho"))
	rest, u := tap.End()
	if string(rest) != "data: {\"cho" {
		t.Errorf("rest = %q", rest)
	}
	rest2, u2 := tap.End()
	if rest2 != nil || !sameUsage(u2, u) {
		t.Errorf("second End = %q, %+v", rest2, u2)
	}
	if out := tap.Feed([]byte("more")); len(out) != 0 {
		t.Errorf("Feed after End returned %q", out)
	}
}

// TestEndKeepsFeedResult checks that End does not overwrite what the last
// Feed returned (a proxy may get data and io.EOF from one upstream Read
// and call End before the client has taken the data).
func TestEndKeepsFeedResult(t *testing.T) {
	tap := NewTap(chatReq(t, false), "text/event-stream")
	tap.Feed([]byte(contentEvent[:25]))
	out := tap.Feed([]byte(contentEvent[25:] + "data: {\"choices\":[{\"delta\":{\"content\":\"tail\"}}]}"))
	want := string(out)
	if want != plainEvent {
		t.Fatalf("Feed returned %q", want)
	}
	rest, _ := tap.End()
	if string(out) != want {
		t.Errorf("End overwrote the last Feed result: %q", out)
	}
	if string(rest) != "data: {\"choices\":[{\"delta\":{\"content\":\"tail\"}}]}" {
		t.Errorf("rest = %q", rest)
	}
}

// TestFilterRandomStreams builds random OpenAI chat streams — LF, CRLF and
// CR line ends, comments, event:/id:/retry: lines, data split over several
// lines, "data:" with and without its space, blank-line runs — with the
// usage chunk somewhere in them, and checks at random read sizes and at
// one-byte reads that the client receives exactly the stream without the
// usage chunk's block and the "usage":null members when it did not ask for
// usage, the stream itself when it did, and that the usage is read either
// way.
func TestFilterRandomStreams(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 11))
	eols := []string{"\n", "\r\n", "\r"}
	block := func(eol string, data []string, extra bool) string {
		var b strings.Builder
		if extra && rng.IntN(2) == 0 {
			b.WriteString(": keep-alive" + eol)
		}
		if extra && rng.IntN(2) == 0 {
			b.WriteString("event: chunk" + eol)
		}
		for _, d := range data {
			if rng.IntN(4) == 0 {
				b.WriteString("data:" + d + eol)
			} else {
				b.WriteString("data: " + d + eol)
			}
		}
		if extra && rng.IntN(3) == 0 {
			b.WriteString("id: 42" + eol + "retry: 1000" + eol)
		}
		b.WriteString(eol)
		return b.String()
	}
	content := func(i int) []string {
		text := strings.Repeat("é🎉a\\\"", rng.IntN(5)) + strings.Repeat("x", rng.IntN(3)*700)
		j := `{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"` + text + `"}}],"usage":null}`
		if rng.IntN(3) == 0 { // split over two data lines, joined by LF
			k := strings.Index(j, `"choices"`)
			return []string{j[:k], j[k:]}
		}
		_ = i
		return []string{j}
	}
	usage := []string{`{"id":"c","object":"chat.completion.chunk","choices":[],"usage":{"prompt_tokens":11,"completion_tokens":7,"prompt_tokens_details":{"cached_tokens":3}}}`}
	for iter := 0; iter < 300; iter++ {
		var stream, want strings.Builder
		prevCR := false
		n := 1 + rng.IntN(6)
		at := rng.IntN(n + 1)
		for i := 0; i <= n; i++ {
			eol := eols[rng.IntN(len(eols))]
			if i == at {
				b := block(eol, usage, true)
				stream.WriteString(b)
				prevCR = eol == "\r"
				continue
			}
			if i == n {
				b := block(eol, []string{"[DONE]"}, false)
				stream.WriteString(b)
				want.WriteString(b)
				continue
			}
			b := block(eol, content(i), true)
			if !prevCR && rng.IntN(4) == 0 {
				b = eol + b // a stray blank line: an empty block of its own
			}
			stream.WriteString(b)
			want.WriteString(b)
			prevCR = eol == "\r"
		}
		data := []byte(stream.String())
		for _, asked := range []bool{false, true} {
			tc := testCase{api: OpenAIChat, data: data, contentType: "text/event-stream", req: chatReq(t, asked)}
			expect := stripUsageNull(want.String())
			if asked {
				expect = stream.String()
			}
			for seed, mk := range []func() io.Reader{
				func() io.Reader { return iotest.OneByteReader(bytes.NewReader(data)) },
				func() io.Reader {
					return &chunkReader{data: data, rng: rand.New(rand.NewPCG(uint64(iter), 1)), maxRead: 7}
				},
				func() io.Reader {
					return &chunkReader{data: data, rng: rand.New(rand.NewPCG(uint64(iter), 2)), maxRead: 900}
				},
			} {
				client, u, _ := replay(t, tc, mk())
				if string(client) != expect {
					t.Fatalf("iteration %d, asked %v, reader %d:\nstream %q\n   got %q\n  want %q", iter, asked, seed, data, client, expect)
				}
				if u.InputTokens != 11 || u.OutputTokens != 7 || u.CachedInputTokens != 3 || u.Estimated {
					t.Fatalf("iteration %d, asked %v, reader %d: usage %+v\nstream %q", iter, asked, seed, u, data)
				}
			}
		}
	}
}
