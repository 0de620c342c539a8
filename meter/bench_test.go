package meter

import (
	"bufio"
	"bytes"
	"fmt"
	"strings"
	"testing"

	"github.com/tidwall/gjson"

	"github.com/tollgate-dev/tollgate/usage"
)

// benchRead is the read size the benchmarks feed the Tap with: the proxy
// copies response bodies through a 32 KiB buffer, and a stream read off
// the network arrives in pieces no larger.
const benchRead = 32 << 10

// longChatStream is a 10,000-event chat completion stream, the shape of a
// long answer: one content chunk per token, then the usage chunk.
func longChatStream() []byte {
	var b bytes.Buffer
	words := []string{"The", " quick", " brown", " fox", " jumps", " over", " the", " lazy", " dog", ".", " Ünïcødé", " 文字", "\\n"}
	for i := 0; i < 10_000; i++ {
		fmt.Fprintf(&b, `data: {"id":"chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT","object":"chat.completion.chunk","created":1741569952,"model":"gpt-4o-2024-08-06","service_tier":"default","system_fingerprint":"fp_f9f4fb6dbf","choices":[{"index":0,"delta":{"content":"%s"},"logprobs":null,"finish_reason":null}],"usage":null}`+"\n\n", words[i%len(words)])
	}
	b.WriteString(`data: {"id":"chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT","object":"chat.completion.chunk","created":1741569952,"model":"gpt-4o-2024-08-06","choices":[],"usage":{"prompt_tokens":1117,"completion_tokens":10000,"total_tokens":11117,"prompt_tokens_details":{"cached_tokens":1024}}}` + "\n\ndata: [DONE]\n\n")
	return b.Bytes()
}

// longAnthropicStream is the Anthropic equivalent, with event: lines.
func longAnthropicStream() []byte {
	var b bytes.Buffer
	b.WriteString("event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude-sonnet-4-5\",\"usage\":{\"input_tokens\":472,\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":2048,\"output_tokens\":1}}}\n\n")
	for i := 0; i < 10_000; i++ {
		b.WriteString("event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\" a few words of text\"}}\n\n")
	}
	b.WriteString("event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":50000}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n")
	return b.Bytes()
}

// longGeminiStream is a 10,000-chunk Gemini stream with running
// usageMetadata in every chunk: as SSE events (alt=sse) or, when array,
// as the JSON array Gemini streams without alt=sse.
func longGeminiStream(array bool) []byte {
	var b bytes.Buffer
	for i := 0; i < 10_000; i++ {
		el := fmt.Sprintf(`{"candidates":[{"content":{"parts":[{"text":" a few words of text"}],"role":"model"},"index":0}],"usageMetadata":{"promptTokenCount":31,"candidatesTokenCount":%d,"totalTokenCount":%d,"promptTokensDetails":[{"modality":"TEXT","tokenCount":31}],"thoughtsTokenCount":412},"modelVersion":"gemini-2.5-flash","responseId":"dB5NaN2tAoGDm9IP5sTP0AY"}`, 5*(i+1), 31+412+5*(i+1))
		switch {
		case !array:
			b.WriteString("data: " + el + "\r\n\r\n")
		case i == 0:
			b.WriteString("[" + el)
		default:
			b.WriteString("\n,\r\n" + el)
		}
	}
	if array {
		b.WriteString("]")
	}
	return b.Bytes()
}

type benchCase struct {
	name        string
	data        []byte
	contentType string
	req         Request
}

func benchCases(b *testing.B) []benchCase {
	b.Helper()
	var cs []benchCase
	for _, tc := range loadCases(b) {
		if strings.HasPrefix(tc.contentType, "text/event-stream") {
			cs = append(cs, benchCase{tc.name, tc.data, tc.contentType, tc.req})
		}
	}
	chat := mustParseB(b, OpenAIChat, `{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true}}`)
	chatFiltered := mustParseB(b, OpenAIChat, `{"model":"gpt-4o","stream":true}`)
	anth := mustParseB(b, AnthropicMessages, `{"model":"claude-sonnet-4-5","max_tokens":1024,"stream":true}`)
	long := longChatStream()
	return append(cs,
		benchCase{"long/openai.chat", long, "text/event-stream", chat},
		benchCase{"long/openai.chat_filtered", long, "text/event-stream", chatFiltered},
		benchCase{"long/anthropic.messages", longAnthropicStream(), "text/event-stream", anth},
		benchCase{"long/google.gemini_sse", longGeminiStream(false), "text/event-stream", Request{API: GoogleGemini, Model: "gemini-2.5-flash", N: 1, Stream: true}},
		benchCase{"long/google.gemini_array", longGeminiStream(true), "application/json", Request{API: GoogleGemini, Model: "gemini-2.5-flash", N: 1, Stream: true}},
	)
}

func mustParseB(b *testing.B, api API, body string) Request {
	r, err := ParseRequest(api, "application/json", []byte(body))
	if err != nil {
		b.Fatal(err)
	}
	return r
}

// meterStream runs one stream through a Tap in benchRead pieces and
// returns the events it saw.
func meterStream(c benchCase) int64 {
	tap := NewTap(c.req, c.contentType)
	for i := 0; i < len(c.data); i += benchRead {
		tap.Feed(c.data[i:min(i+benchRead, len(c.data))])
	}
	tap.End()
	return tap.events
}

// BenchmarkTap measures stream extraction (SSE, and Gemini's JSON array): throughput (MB/s), allocations per
// stream (allocs/op) and events per stream (events/op); allocations per
// event are allocs/op ÷ events/op.
func BenchmarkTap(b *testing.B) {
	for _, c := range benchCases(b) {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(c.data)))
			var events int64
			for b.Loop() {
				events += meterStream(c)
			}
			b.ReportMetric(float64(events)/float64(b.N), "events/op")
		})
	}
}

// BenchmarkBaselineScanner is the baseline for BenchmarkTap: splitting the
// same bytes into lines with bufio.Scanner, the least any line-based SSE
// parser does, without looking inside a single line.
func BenchmarkBaselineScanner(b *testing.B) {
	for _, c := range benchCases(b) {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(c.data)))
			buf := make([]byte, 0, benchRead)
			var lines int
			for b.Loop() {
				sc := bufio.NewScanner(bytes.NewReader(c.data))
				sc.Buffer(buf, len(c.data)+1)
				for sc.Scan() {
					lines++
				}
			}
			b.ReportMetric(float64(lines)/float64(b.N), "lines/op")
		})
	}
}

// BenchmarkBaselineGjson is the conventional parser the Tap replaces
// (ai-gateway's shape): split lines with bufio.Scanner, then look the
// usage fields up in every data line with gjson.GetBytes. It buffers
// whole lines, so a multi-megabyte event costs its size in memory.
func BenchmarkBaselineGjson(b *testing.B) {
	paths := []string{"usage.prompt_tokens", "usage.completion_tokens", "usage.prompt_tokens_details.cached_tokens", "choices.0.delta.content"}
	for _, c := range benchCases(b) {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(c.data)))
			buf := make([]byte, 0, benchRead)
			var found int64
			for b.Loop() {
				sc := bufio.NewScanner(bytes.NewReader(c.data))
				sc.Buffer(buf, len(c.data)+1)
				for sc.Scan() {
					line, ok := bytes.CutPrefix(sc.Bytes(), []byte("data: "))
					if !ok || !gjson.ValidBytes(line) {
						continue
					}
					for _, p := range paths {
						if gjson.GetBytes(line, p).Exists() {
							found++
						}
					}
				}
			}
			b.ReportMetric(float64(found)/float64(b.N), "fields/op")
		})
	}
}

// TestAllocsPerEvent holds the Tap to at most one allocation per SSE
// event, for every testdata stream (the Tap itself and, when filtering,
// its two buffers are the only allocations, once per stream).
func TestAllocsPerEvent(t *testing.T) {
	if testing.Short() {
		t.Skip("allocation counting is slow under -short")
	}
	for _, tc := range loadCases(t) {
		if !strings.HasPrefix(tc.contentType, "text/event-stream") {
			continue
		}
		c := benchCase{tc.name, tc.data, tc.contentType, tc.req}
		events := meterStream(c)
		allocs := testing.AllocsPerRun(20, func() { meterStream(c) })
		if events == 0 || allocs/float64(events) > 1 {
			t.Errorf("%s: %.0f allocations for %d events", tc.name, allocs, events)
		}
	}
}

// BenchmarkCost measures pricing one settled usage, the work every
// settlement does after the stream ends: a chat usage with cache reads, an
// Anthropic usage with cache writes, a DALL·E image by size, and a
// whisper-1 duration.
func BenchmarkCost(b *testing.B) {
	chat := testPrices[OpenAIChat]["gpt-4o"]
	claude := testPrices[AnthropicMessages]["claude-sonnet-4-5"]
	dalle := testPrices[OpenAIImages]["dall-e-3"]
	whisper := testPrices[OpenAIAudio]["whisper-1"]
	cases := []struct {
		name  string
		price Price
		u     Usage
	}{
		{"chat", chat, Usage{Tokens: usage.Tokens{InputTokens: 2000, CachedInputTokens: 1500, OutputTokens: 300}}},
		{"anthropic", claude, Usage{Tokens: usage.Tokens{InputTokens: 12_012, CachedInputTokens: 8000, CacheWriteInputTokens: 4000, OutputTokens: 42}}},
		{"image", dalle, Usage{Images: 1, ImageSize: "1024x1024", ImageQuality: "hd"}},
		{"audio", whisper, Usage{AudioMillis: 36_710}},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.price.Cost(c.u); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
