package meter

import (
	"bytes"
	"encoding/json"
	"fmt"
	"testing"
)

// The request bodies BenchmarkParseRequest reads, written after the
// providers' documented request formats with keys in the order their
// official SDKs send them (the conversation before most scalar fields,
// so a reader that looks keys up one by one crosses it each time). Each
// grows a conversation turn by turn until the body reaches its size.

// benchText is one turn's prose: ASCII with some escapes and non-ASCII,
// as chat transcripts carry.
func benchText(turn, words int) string {
	vocab := []string{"the", "quarterly", "report", "shows", "revenue", "grew", "in", "Europe", "while", "costs",
		"fell;", "naïve", "forecasts", "über", "estimated", "growth", "at", "12%", "—", "see", "table", "2.\n"}
	var b bytes.Buffer
	fmt.Fprintf(&b, "Turn %d: ", turn)
	for i := range words {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(vocab[(turn*7+i)%len(vocab)])
	}
	return b.String()
}

// q returns s as a JSON string.
func q(s string) string {
	b, err := json.Marshal(s)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// benchSchema is a function's parameters, as JSON Schema.
const benchSchema = `{"type":"object","properties":{"location":{"type":"string","description":"City and country, e.g. Paris, France"},"unit":{"type":"string","enum":["celsius","fahrenheit"]},"days":{"type":"integer","minimum":1,"maximum":14}},"required":["location"],"additionalProperties":false}`

// grow builds head + turns joined by commas + tail, adding turns until
// the body is at least size bytes.
func grow(size int, head, tail string, turn func(i int) string) []byte {
	var b bytes.Buffer
	b.WriteString(head)
	for i := 0; ; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(turn(i))
		if b.Len()+len(tail) >= size {
			break
		}
	}
	b.WriteString(tail)
	return b.Bytes()
}

// benchChat is an openai.chat request (openai-python's order: messages,
// model, then the options) with function tools, tool calls and an image.
func benchChat(size int) []byte {
	head := `{"messages":[{"role":"system","content":"You are a careful financial analyst. Answer with figures and cite the table you used."},` +
		`{"role":"user","content":[{"type":"text","text":"What does this chart show?"},{"type":"image_url","image_url":{"url":"https://example.com/charts/q3-revenue.png","detail":"high"}}]},`
	tail := `],"model":"gpt-4o","max_completion_tokens":2048,"n":1,"parallel_tool_calls":true,"service_tier":"auto","stream":true,"stream_options":{"include_usage":true},"temperature":0.2,"tool_choice":"auto",` +
		`"tools":[{"type":"function","function":{"name":"get_weather","description":"Get the weather forecast for a city.","parameters":` + benchSchema + `,"strict":true}},` +
		`{"type":"function","function":{"name":"lookup_table","description":"Read one table of the quarterly report.","parameters":{"type":"object","properties":{"table":{"type":"integer"}},"required":["table"]}}}],"user":"user-1234"}`
	return grow(size, head, tail, func(i int) string {
		switch i % 4 {
		case 0:
			return `{"role":"user","content":` + q(benchText(i, 40)) + `}`
		case 1:
			return fmt.Sprintf(`{"role":"assistant","content":null,"tool_calls":[{"id":"call_%08d","type":"function","function":{"name":"lookup_table","arguments":"{\"table\":%d}"}}]}`, i, i)
		case 2:
			return fmt.Sprintf(`{"role":"tool","tool_call_id":"call_%08d","content":%s}`, i-1, q(benchText(i, 60)))
		}
		return `{"role":"assistant","content":` + q(benchText(i, 80)) + `}`
	})
}

// benchResponses is an openai.responses request (openai-python's order)
// with input items of several types, built-in and function tools.
func benchResponses(size int) []byte {
	head := `{"input":[{"type":"message","role":"user","content":[{"type":"input_text","text":"Compare these figures with last year's."},{"type":"input_image","image_url":"https://example.com/charts/q3-revenue.png","detail":"auto"}]},`
	tail := `],"instructions":"You are a careful financial analyst. Answer with figures and cite your sources.","max_output_tokens":4096,"max_tool_calls":8,"model":"gpt-4.1","parallel_tool_calls":true,"reasoning":{"effort":"medium"},"service_tier":"auto","store":false,"stream":true,"temperature":0.2,` +
		`"tools":[{"type":"web_search"},{"type":"file_search","vector_store_ids":["vs_68a1b2c3"]},{"type":"function","name":"get_weather","description":"Get the weather forecast for a city.","parameters":` + benchSchema + `,"strict":true}]}`
	return grow(size, head, tail, func(i int) string {
		switch i % 4 {
		case 0:
			return `{"type":"message","role":"user","content":[{"type":"input_text","text":` + q(benchText(i, 40)) + `}]}`
		case 1:
			return fmt.Sprintf(`{"type":"function_call","id":"fc_%08d","call_id":"call_%08d","name":"get_weather","arguments":"{\"location\":\"Paris, France\",\"days\":%d}","status":"completed"}`, i, i, i%14+1)
		case 2:
			return fmt.Sprintf(`{"type":"function_call_output","call_id":"call_%08d","output":%s}`, i-1, q(benchText(i, 60)))
		}
		return fmt.Sprintf(`{"type":"message","id":"msg_%08d","role":"assistant","status":"completed","content":[{"type":"output_text","annotations":[],"text":%s}]}`, i, q(benchText(i, 80)))
	})
}

// benchAnthropic is an anthropic.messages request (the SDK's order:
// max_tokens, messages, model, then the options) with tool use, a small
// base64 image, a cached system prompt and a server tool.
func benchAnthropic(size int) []byte {
	head := `{"max_tokens":4096,"messages":[{"role":"user","content":[{"type":"image","source":{"type":"base64","media_type":"image/png","data":"iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="}},{"type":"text","text":"What does this chart show?"}]},`
	tail := `],"model":"claude-sonnet-4-5","stream":true,"system":[{"type":"text","text":"You are a careful financial analyst. Answer with figures and cite the table you used.","cache_control":{"type":"ephemeral"}}],"temperature":0.2,"tool_choice":{"type":"auto"},` +
		`"tools":[{"name":"get_weather","description":"Get the weather forecast for a city.","input_schema":` + benchSchema + `},{"type":"web_search_20250305","name":"web_search","max_uses":5}]}`
	return grow(size, head, tail, func(i int) string {
		switch i % 4 {
		case 0:
			return `{"role":"user","content":` + q(benchText(i, 40)) + `}`
		case 1:
			return fmt.Sprintf(`{"role":"assistant","content":[{"type":"text","text":"Let me check."},{"type":"tool_use","id":"toolu_%08d","name":"get_weather","input":{"location":"Paris, France","days":%d}}]}`, i, i%14+1)
		case 2:
			return fmt.Sprintf(`{"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_%08d","content":%s}]}`, i-1, q(benchText(i, 60)))
		}
		return `{"role":"assistant","content":[{"type":"text","text":` + q(benchText(i, 80)) + `}]}`
	})
}

// benchGemini is a google.gemini generateContent request.
func benchGemini(size int) []byte {
	head := `{"contents":[{"role":"user","parts":[{"text":"What does this chart show?"},{"inlineData":{"mimeType":"image/png","data":"iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="}}]},`
	tail := `],"systemInstruction":{"parts":[{"text":"You are a careful financial analyst. Answer with figures."}]},` +
		`"tools":[{"functionDeclarations":[{"name":"get_weather","description":"Get the weather forecast for a city.","parameters":` + benchSchema + `}]}],` +
		`"generationConfig":{"temperature":0.2,"maxOutputTokens":2048,"candidateCount":1,"thinkingConfig":{"thinkingBudget":1024}}}`
	return grow(size, head, tail, func(i int) string {
		switch i % 4 {
		case 0:
			return `{"role":"user","parts":[{"text":` + q(benchText(i, 40)) + `}]}`
		case 1:
			return fmt.Sprintf(`{"role":"model","parts":[{"functionCall":{"name":"get_weather","args":{"location":"Paris, France","days":%d}}}]}`, i%14+1)
		case 2:
			return `{"role":"user","parts":[{"functionResponse":{"name":"get_weather","response":{"forecast":` + q(benchText(i, 60)) + `}}}]}`
		}
		return `{"role":"model","parts":[{"text":` + q(benchText(i, 80)) + `}]}`
	})
}

// benchRequests are BenchmarkParseRequest's bodies: each API at about
// 1 KB, 10 KB and 100 KB.
func benchRequests() []struct {
	name string
	api  API
	body []byte
} {
	type req = struct {
		name string
		api  API
		body []byte
	}
	var rs []req
	for _, g := range []struct {
		api  API
		body func(int) []byte
	}{
		{OpenAIChat, benchChat},
		{OpenAIResponses, benchResponses},
		{AnthropicMessages, benchAnthropic},
		{GoogleGemini, benchGemini},
	} {
		for _, size := range []int{1 << 10, 10 << 10, 100 << 10} {
			rs = append(rs, req{fmt.Sprintf("%s/%dKB", g.api, size>>10), g.api, g.body(size)})
		}
	}
	return rs
}

// TestBenchRequests checks that the benchmark's bodies parse, and are
// what they mean to be: valid JSON with the fields read.
func TestBenchRequests(t *testing.T) {
	for _, c := range benchRequests() {
		if !json.Valid(c.body) {
			t.Fatalf("%s: invalid JSON", c.name)
		}
		r, err := ParseRequest(c.api, "application/json", c.body)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if r.Model == "" && c.api != GoogleGemini || r.MaxOutputTokens == 0 || r.Images != 1 || r.InputTokens <= int64(len(c.body))/2 {
			t.Errorf("%s: %+v", c.name, r)
		}
	}
}

// BenchmarkParseRequest measures reading a JSON request body for pricing:
// the validation, the fields, and the input estimate.
func BenchmarkParseRequest(b *testing.B) {
	for _, c := range benchRequests() {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(c.body)))
			for b.Loop() {
				if _, err := ParseRequest(c.api, "application/json", c.body); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkRewrite measures Rewrite of BenchmarkParseRequest's bodies,
// whose output caps are within the ceiling, as the proxy calls it after
// ParseRequest: "parsed" as it runs, "read" with capsStand turned off, so
// that the body is read again to find the caps, as Rewrite did before
// capsStand (the baseline of the same run).
func BenchmarkRewrite(b *testing.B) {
	for _, c := range benchRequests() {
		r, err := ParseRequest(c.api, "application/json", c.body)
		if err != nil {
			b.Fatal(err)
		}
		if r.capsMax == 0 {
			b.Fatalf("%s: the caps do not stand as parsed", c.name)
		}
		ceiling := r.MaxOutputTokens * 2
		for _, mode := range []string{"parsed", "read"} {
			req := r
			if mode == "read" {
				req.capsMax = 0
			}
			b.Run(c.name+"/"+mode, func(b *testing.B) {
				b.ReportAllocs()
				b.SetBytes(int64(len(c.body)))
				for b.Loop() {
					out, _, err := req.Rewrite(c.body, ceiling)
					if err != nil || len(out) != len(c.body) {
						b.Fatalf("Rewrite changed the body (%d bytes, was %d) or failed: %v", len(out), len(c.body), err)
					}
				}
			})
		}
	}
}

// BenchmarkRewriteIncludeUsage measures Rewrite forcing include_usage
// into BenchmarkParseRequest's chat streams without stream_options, the
// usual stream request: "parsed" appends it as parsing found it missing,
// "read" looks it up and sets it with sjson, as Rewrite did before (the
// baseline of the same run).
func BenchmarkRewriteIncludeUsage(b *testing.B) {
	for _, size := range []int{1 << 10, 10 << 10, 100 << 10} {
		body := bytes.Replace(benchChat(size), []byte(`"stream_options":{"include_usage":true},`), nil, 1)
		r, err := ParseRequest(OpenAIChat, "application/json", body)
		if err != nil {
			b.Fatal(err)
		}
		if !r.noStreamOptions || r.IncludeUsage || r.capsMax == 0 {
			b.Fatalf("%d KB: not a stream without stream_options whose caps stand", size>>10)
		}
		benchRewriteModes(b, fmt.Sprintf("%dKB", size>>10), r, body, r.MaxOutputTokens,
			len(includeUsageMember)+1, func(r *Request) { r.noStreamOptions = false })
	}
}

// BenchmarkRewriteNoCap measures Rewrite on BenchmarkParseRequest's chat
// streams with neither an output cap nor stream_options, a request as
// many apps send it: "parsed" adds both members in one copy, as parsing
// found the body without them (noCaps, noStreamOptions); "read" looks the
// cap fields up and sets one with sjson, then appends stream_options, as
// Rewrite did before (the baseline of the same run).
func BenchmarkRewriteNoCap(b *testing.B) {
	for _, size := range []int{1 << 10, 10 << 10, 100 << 10} {
		body := bytes.Replace(benchChat(size), []byte(`"stream_options":{"include_usage":true},`), nil, 1)
		body = bytes.Replace(body, []byte(`"max_completion_tokens":2048,`), nil, 1)
		r, err := ParseRequest(OpenAIChat, "application/json", body)
		if err != nil {
			b.Fatal(err)
		}
		if !r.noCaps || !r.noStreamOptions || r.IncludeUsage {
			b.Fatalf("%d KB: not a stream without a cap and stream_options", size>>10)
		}
		benchRewriteModes(b, fmt.Sprintf("%dKB", size>>10), r, body, 1000,
			len(`,"max_completion_tokens":1000`)+len(includeUsageMember)+1, func(r *Request) { r.noCaps = false })
	}
}

// benchRewriteModes runs Rewrite on body as r was parsed ("parsed") and
// with read applied to it ("read", the path that reads the body again),
// and fails unless the result is grow bytes longer than body.
func benchRewriteModes(b *testing.B, name string, r Request, body []byte, ceiling int64, grow int, read func(*Request)) {
	for _, mode := range []string{"parsed", "read"} {
		req := r
		if mode == "read" {
			read(&req)
		}
		b.Run(name+"/"+mode, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				out, _, err := req.Rewrite(body, ceiling)
				if err != nil || len(out) != len(body)+grow {
					b.Fatalf("Rewrite gave %d bytes (from %d, want %d more), %v", len(out), len(body), grow, err)
				}
			}
		})
	}
}
