package mockprovider_test

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"io"
	"math"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
	"time"

	"github.com/tidwall/gjson"

	"github.com/tollgate-dev/tollgate/internal/mockprovider"
	"github.com/tollgate-dev/tollgate/meter"
	"github.com/tollgate-dev/tollgate/usage"
)

// clock is a fake clock the tests move by hand.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

type mock struct {
	*httptest.Server
	clock *clock
}

func newMock(t *testing.T) *mock {
	t.Helper()
	c := &clock{now: time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)}
	srv := httptest.NewServer(mockprovider.New(mockprovider.Options{Now: c.Now}))
	t.Cleanup(srv.Close)
	return &mock{Server: srv, clock: c}
}

// call is one request to the mock, as tollgate forwards it.
type call struct {
	api         meter.API
	path        string // the API's own path, e.g. /v1/chat/completions
	contentType string // default application/json
	body        string
	header      http.Header
}

// answer is the mock's response and what tollgate's meter reads from it.
type answer struct {
	status int
	header http.Header
	body   []byte
	usage  meter.Usage
}

func (m *mock) do(t *testing.T, c call) answer {
	t.Helper()
	if c.contentType == "" {
		c.contentType = "application/json"
	}
	req, err := http.NewRequest(http.MethodPost, m.URL+mockprovider.UpstreamPath(c.api)+c.path, strings.NewReader(c.body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", c.contentType)
	for k, v := range c.header {
		req.Header[k] = v
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	a := answer{status: res.StatusCode, header: res.Header, body: body}
	if res.StatusCode == http.StatusOK {
		a.usage = meterUsage(t, c, res.Header.Get("Content-Type"), body)
	}
	return a
}

// meterUsage is what tollgate's meter reads from body, fed one byte at a
// time, as the answer to c.
func meterUsage(t *testing.T, c call, contentType string, body []byte) meter.Usage {
	t.Helper()
	req, err := meter.ParseRequest(c.api, c.contentType, []byte(c.body))
	if err != nil {
		t.Fatalf("meter.ParseRequest: %v", err)
	}
	tap := meter.NewTap(req, contentType)
	r := iotest.OneByteReader(bytes.NewReader(body))
	buf := make([]byte, 1)
	for {
		n, err := r.Read(buf)
		tap.Feed(buf[:n])
		if err == io.EOF {
			break
		}
	}
	_, u := tap.End()
	return u
}

func tokens(in, cached, write, out int64) usage.Tokens {
	return usage.Tokens{InputTokens: in, CachedInputTokens: cached, CacheWriteInputTokens: write, OutputTokens: out}
}

// TestUsageRules pins the documented rules: what each API's answer
// reports, read by tollgate's own meter. The comments show the
// arithmetic: text tokens are ⌈bytes ÷ 4⌉ of a piece's strings.
func TestUsageRules(t *testing.T) {
	tests := []struct {
		name string
		call call
		want meter.Usage
		text string // a substring of the answer
	}{
		{
			// "user"+"Hello" = 9 bytes → 3; "You said: Hello" = 15 bytes → 4.
			name: "chat JSON",
			call: call{api: meter.OpenAIChat, path: "/v1/chat/completions",
				body: `{"model":"gpt-4o-mini","max_completion_tokens":4096,"messages":[{"role":"user","content":"Hello"}]}`},
			want: meter.Usage{Tokens: tokens(3, 0, 0, 4), ServiceTier: "default"},
			text: `"content":"You said: Hello"`,
		},
		{
			// system "system"+"Be brief." = 15 → 4; user 9 → 3; n=2 → 2 × 4 out.
			name: "chat JSON, system message, n=2",
			call: call{api: meter.OpenAIChat, path: "/v1/chat/completions",
				body: `{"model":"gpt-4o","n":2,"max_completion_tokens":100,"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Hello"}]}`},
			want: meter.Usage{Tokens: tokens(7, 0, 0, 8), ServiceTier: "default"},
			text: `"index":1`,
		},
		{
			// parts: "user" + "text" + "Hi" + the image (100) → ⌈10/4⌉ + 100.
			name: "chat JSON, image part",
			call: call{api: meter.OpenAIChat, path: "/v1/chat/completions",
				body: `{"model":"gpt-4o","max_tokens":50,"messages":[{"role":"user","content":[{"type":"text","text":"Hi"},{"type":"image_url","image_url":{"url":"data:image/png;base64,AAAA"}}]}]}`},
			want: meter.Usage{Tokens: tokens(103, 0, 0, 3), ServiceTier: "default"},
			text: `"content":"You said: Hi"`,
		},
		{
			// An audio part counts 100, reported as audio tokens as
			// OpenAI reports them (prompt_tokens_details.audio_tokens);
			// "user" + "text" + "Hi" → 3 more.
			name: "chat JSON, audio part",
			call: call{api: meter.OpenAIChat, path: "/v1/chat/completions",
				body: `{"model":"gpt-4o-audio-preview","max_tokens":50,"messages":[{"role":"user","content":[{"type":"text","text":"Hi"},{"type":"input_audio","input_audio":{"data":"AAAA","format":"wav"}}]}]}`},
			want: meter.Usage{Tokens: usage.Tokens{InputTokens: 103, AudioInputTokens: 100, OutputTokens: 3}, ServiceTier: "default"},
			text: `"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":100}`,
		},
		{
			// The tier asked for is the tier that serves it.
			name: "chat JSON, service_tier flex",
			call: call{api: meter.OpenAIChat, path: "/v1/chat/completions",
				body: `{"model":"o4-mini","service_tier":"flex","max_completion_tokens":100,"messages":[{"role":"user","content":"Hello"}]}`},
			want: meter.Usage{Tokens: tokens(3, 0, 0, 4), ServiceTier: "flex"},
			text: `"service_tier":"flex"`,
		},
		{
			// The cap of 2 tokens cuts the reply to 8 bytes, "You said".
			name: "chat JSON, cut by the cap",
			call: call{api: meter.OpenAIChat, path: "/v1/chat/completions",
				body: `{"model":"gpt-4o","max_tokens":2,"messages":[{"role":"user","content":"Hello"}]}`},
			want: meter.Usage{Tokens: tokens(3, 0, 0, 2), ServiceTier: "default"},
			text: `"content":"You said","refusal":null,"annotations":[]},"logprobs":null,"finish_reason":"length"`,
		},
		{
			name: "chat stream with the usage chunk",
			call: call{api: meter.OpenAIChat, path: "/v1/chat/completions",
				body: `{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"max_completion_tokens":4096,"messages":[{"role":"user","content":"Hello"}]}`},
			want: meter.Usage{Tokens: tokens(3, 0, 0, 4), ServiceTier: "default"},
			text: `"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7`,
		},
		{
			// "user" + "Hello" → 3 in; "You said: Hello" → 4 out.
			name: "responses JSON, input items",
			call: call{api: meter.OpenAIResponses, path: "/v1/responses",
				body: `{"model":"gpt-4.1","max_output_tokens":100,"input":[{"role":"user","content":"Hello"}]}`},
			want: meter.Usage{Tokens: tokens(3, 0, 0, 4), ServiceTier: "default"},
			text: `"status":"completed"`,
		},
		{
			// instructions "Be brief." → 3; input "Hello" → 2.
			name: "responses stream, instructions and a string input",
			call: call{api: meter.OpenAIResponses, path: "/v1/responses",
				body: `{"model":"gpt-4.1","stream":true,"max_output_tokens":100,"instructions":"Be brief.","input":"Hello"}`},
			want: meter.Usage{Tokens: tokens(5, 0, 0, 4), ServiceTier: "default"},
			text: "event: response.completed\n",
		},
		{
			// OpenAI serves a request for fast mode at "priority" and says so.
			name: "responses JSON, service_tier fast",
			call: call{api: meter.OpenAIResponses, path: "/v1/responses",
				body: `{"model":"gpt-4.1","service_tier":"fast","max_output_tokens":100,"input":"Hello"}`},
			want: meter.Usage{Tokens: tokens(2, 0, 0, 4), ServiceTier: "priority"},
			text: `"service_tier":"priority"`,
		},
		{
			name: "responses stream, service_tier priority",
			call: call{api: meter.OpenAIResponses, path: "/v1/responses",
				body: `{"model":"gpt-4.1","stream":true,"service_tier":"priority","max_output_tokens":100,"input":"Hello"}`},
			want: meter.Usage{Tokens: tokens(2, 0, 0, 4), ServiceTier: "priority"},
			text: `"service_tier":"priority"`,
		},
		{
			name: "responses stream, cut by the cap",
			call: call{api: meter.OpenAIResponses, path: "/v1/responses",
				body: `{"model":"gpt-4.1","stream":true,"max_output_tokens":1,"input":"Hello"}`},
			want: meter.Usage{Tokens: tokens(2, 0, 0, 1), ServiceTier: "default"},
			text: `"incomplete_details":{"reason":"max_output_tokens"}`,
		},
		{
			// system "Be brief." → 3; message "user"+"Hello" → 3.
			name: "anthropic JSON",
			call: call{api: meter.AnthropicMessages, path: "/v1/messages",
				body: `{"model":"claude-sonnet-4-5","max_tokens":1024,"system":"Be brief.","messages":[{"role":"user","content":"Hello"}]}`},
			want: meter.Usage{Tokens: tokens(6, 0, 0, 4), ServiceTier: "standard", InferenceGeo: "global"},
			text: `"service_tier":"standard","inference_geo":"global"}`,
		},
		{
			// Fast mode and US-only inference, reported as asked.
			name: "anthropic JSON, speed fast, inference_geo us",
			call: call{api: meter.AnthropicMessages, path: "/v1/messages",
				body: `{"model":"claude-opus-4-6","max_tokens":1024,"speed":"fast","inference_geo":"us","messages":[{"role":"user","content":"Hello"}]}`},
			want: meter.Usage{Tokens: tokens(3, 0, 0, 4), ServiceTier: "standard", Speed: "fast", InferenceGeo: "us"},
			text: `"service_tier":"standard","speed":"fast","inference_geo":"us"}`,
		},
		{
			name: "anthropic stream, cut by the cap",
			call: call{api: meter.AnthropicMessages, path: "/v1/messages",
				body: `{"model":"claude-sonnet-4-5","max_tokens":2,"stream":true,"messages":[{"role":"user","content":[{"type":"text","text":"Hello"}]}]}`},
			// "user" + "text" + "Hello" = 13 bytes → 4.
			want: meter.Usage{Tokens: tokens(4, 0, 0, 2), ServiceTier: "standard", InferenceGeo: "global"},
			text: `"stop_reason":"max_tokens"`,
		},
		{
			// "hello world" → 3, "hi" → 1.
			name: "embeddings, two strings",
			call: call{api: meter.OpenAIEmbeddings, path: "/v1/embeddings",
				body: `{"model":"text-embedding-3-small","input":["hello world","hi"],"dimensions":4}`},
			want: meter.Usage{Tokens: tokens(4, 0, 0, 0)},
			text: `"index":1`,
		},
		{
			name: "embeddings, token arrays, base64",
			call: call{api: meter.OpenAIEmbeddings, path: "/v1/embeddings",
				body: `{"model":"text-embedding-3-large","input":[[1,2,3],[4]],"encoding_format":"base64"}`},
			want: meter.Usage{Tokens: tokens(4, 0, 0, 0)},
			text: `"object":"embedding"`,
		},
		{
			// "a red fox" → 3 in; 1024x1024 medium → 1,056 out, × 2.
			name: "gpt-image JSON",
			call: call{api: meter.OpenAIImages, path: "/v1/images/generations",
				body: `{"model":"gpt-image-1","prompt":"a red fox","n":2,"size":"1024x1024","quality":"medium"}`},
			want: meter.Usage{Tokens: usage.Tokens{InputTokens: 3, OutputTokens: 2112, ImageOutputTokens: 2112},
				Images: 2, ImageSize: "1024x1024", ImageQuality: "medium"},
			text: `"b64_json":"iVBOR`,
		},
		{
			// 1024x1536 high → 6,240 per image, plus 100 for each of 2 partial images.
			name: "gpt-image stream",
			call: call{api: meter.OpenAIImages, path: "/v1/images/generations",
				body: `{"model":"gpt-image-1","prompt":"a red fox","stream":true,"partial_images":2,"size":"1024x1536","quality":"high"}`},
			want: meter.Usage{Tokens: usage.Tokens{InputTokens: 3, OutputTokens: 6440, ImageOutputTokens: 6440},
				Images: 1, ImageSize: "1024x1536", ImageQuality: "high"},
			text: "event: image_generation.completed\n",
		},
		{
			// An input image counts 100 image tokens; "a red fox" → 3
			// text tokens; 1024x1024 low → 272 out.
			name: "gpt-image edit, one input image",
			call: func() call {
				ct, body := multipartBody(t, map[string]string{"model": "gpt-image-1", "prompt": "a red fox", "size": "1024x1024", "quality": "low"},
					"image[]", "fox.png", []byte("\x89PNG"))
				return call{api: meter.OpenAIImages, path: "/v1/images/edits", contentType: ct, body: body}
			}(),
			want: meter.Usage{Tokens: usage.Tokens{InputTokens: 103, ImageInputTokens: 100, OutputTokens: 272, ImageOutputTokens: 272},
				Images: 1, ImageSize: "1024x1024", ImageQuality: "low"},
			text: `"input_tokens_details":{"image_tokens":100,"text_tokens":3}`,
		},
		{
			name: "dall-e-3: images, no tokens",
			call: call{api: meter.OpenAIImages, path: "/v1/images/generations",
				body: `{"model":"dall-e-3","prompt":"a red fox","size":"1024x1792","quality":"hd"}`},
			want: meter.Usage{Images: 1, ImageSize: "1024x1792", ImageQuality: "hd"},
			text: `"url":"data:image/png;base64,`,
		},
		{
			// "Hi there" (8 bytes) → 2 tokens a minute of speech at 750 chars a minute: 640 ms.
			name: "speech SSE",
			call: call{api: meter.OpenAIAudio, path: "/v1/audio/speech",
				body: `{"model":"gpt-4o-mini-tts","input":"Hi there","voice":"alloy","stream_format":"sse"}`},
			// 640 ms at 1,250 audio tokens a minute → 14 out.
			want: meter.Usage{Tokens: usage.Tokens{InputTokens: 2, OutputTokens: 14, AudioOutputTokens: 14}, AudioMillis: 640, Estimated: true},
			text: `"type":"speech.audio.done"`,
		},
		{
			name: "moderations (flat)",
			call: call{api: meter.Flat, path: "/v1/moderations", body: `{"input":"hello"}`},
			want: meter.Usage{},
			text: `"flagged":false`,
		},
	}
	m := newMock(t)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := m.do(t, tc.call)
			if a.status != http.StatusOK {
				t.Fatalf("status %d: %s", a.status, a.body)
			}
			if got := withoutFallback(a.usage); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("usage\n %+v, want\n %+v", got, tc.want)
			}
			if !bytes.Contains(a.body, []byte(tc.text)) {
				t.Errorf("the answer lacks %s:\n%s", tc.text, truncate(a.body))
			}
			if a.header.Get("X-Tollgate-Mock") != "true" {
				t.Errorf("X-Tollgate-Mock %q", a.header.Get("X-Tollgate-Mock"))
			}
		})
	}
}

// withoutFallback clears the meter's own estimates for answers that
// report units but no tokens (DALL·E, whisper-1): they are tollgate's,
// not the mock's.
func withoutFallback(u meter.Usage) meter.Usage {
	u.FallbackInputTokens, u.FallbackOutputTokens = 0, 0
	return u
}

func truncate(b []byte) []byte {
	if len(b) > 2000 {
		return append(b[:2000:2000], "…"...)
	}
	return b
}

// TestChatStreamUsageNull checks the include_usage convention: without it
// no chunk has a usage field; with it every chunk has "usage":null and an
// extra last chunk the totals.
func TestChatStreamUsageNull(t *testing.T) {
	m := newMock(t)
	body := func(opts string) string {
		return `{"model":"gpt-4o","stream":true` + opts + `,"messages":[{"role":"user","content":"Hello there"}]}`
	}
	plain := m.do(t, call{api: meter.OpenAIChat, path: "/v1/chat/completions", body: body("")})
	if bytes.Contains(plain.body, []byte(`"usage"`)) {
		t.Errorf("a stream without include_usage has usage fields:\n%s", plain.body)
	}
	if !plain.usage.Estimated {
		t.Errorf("usage %+v: want tollgate's estimate, with no usage chunk", plain.usage)
	}
	withUsage := m.do(t, call{api: meter.OpenAIChat, path: "/v1/chat/completions", body: body(`,"stream_options":{"include_usage":true}`)})
	events := strings.Split(strings.TrimSuffix(string(withUsage.body), "\n\n"), "\n\n")
	// role, "You", " said:", " Hello", " there", finish, usage, [DONE]
	if len(events) != 8 {
		t.Fatalf("%d events, want 8:\n%s", len(events), withUsage.body)
	}
	for i, ev := range events[:6] {
		if !strings.HasSuffix(ev, `,"usage":null}`) {
			t.Errorf("event %d does not end with \"usage\":null: %s", i, ev)
		}
	}
	if want := "data: [DONE]"; events[7] != want {
		t.Errorf("last event %q, want %q", events[7], want)
	}
	if !strings.HasPrefix(events[0], `data: {"id":"chatcmpl-mock`) || !strings.Contains(events[0], `"delta":{"role":"assistant","content":"","refusal":null}`) {
		t.Errorf("first event %s", events[0])
	}
	// Removing the usage fields and chunk gives exactly the stream without them, ids and all.
	stripped := strings.ReplaceAll(strings.Join(append(events[:6:6], events[7]), "\n\n")+"\n\n", `,"usage":null`, "")
	id := gjson.Get(strings.TrimPrefix(events[0], "data: "), "id").Str
	plainID := gjson.Get(strings.TrimPrefix(strings.SplitN(string(plain.body), "\n\n", 2)[0], "data: "), "id").Str
	if got := strings.ReplaceAll(string(plain.body), plainID, id); got != stripped {
		t.Errorf("the stream without include_usage\n%s\nis not the stream with it, stripped:\n%s", got, stripped)
	}
}

// TestOpenAIPromptCache checks automatic caching: a prompt prefix of 1,024
// tokens or more is cached by the first request and read by the next, in
// steps of 128 tokens, until it expires.
func TestOpenAIPromptCache(t *testing.T) {
	m := newMock(t)
	long := strings.Repeat("a", 4*1200-len("system")) // "system" + it = 4,800 bytes → 1,200 tokens
	first := `{"role":"system","content":"` + long + `"}`
	chat := func(msgs ...string) call {
		return call{api: meter.OpenAIChat, path: "/v1/chat/completions",
			body: `{"model":"gpt-4o","max_completion_tokens":100,"messages":[` + strings.Join(msgs, ",") + `]}`}
	}
	hello := `{"role":"user","content":"Hello"}` // 3 tokens
	again := `{"role":"user","content":"Again"}` // 3 tokens
	steps := []struct {
		name    string
		call    call
		advance time.Duration
		cached  int64
	}{
		{"first request writes", chat(first, hello), 0, 0},
		// The 1,203-token prefix is read: 1,152 in steps of 128.
		{"same prompt reads the whole prefix", chat(first, hello), time.Minute, 1152},
		// Only the system message is shared: 1,200 → 1,152.
		{"another question reads the system prefix", chat(first, again), time.Minute, 1152},
		{"a short prompt is never cached", chat(hello), 0, 0},
		{"another model has its own cache", call{api: meter.OpenAIChat, path: "/v1/chat/completions",
			body: `{"model":"gpt-4o-mini","max_completion_tokens":100,"messages":[` + first + `,` + hello + `]}`}, 0, 0},
		// Five minutes after its last use the prefix is gone.
		{"expired", chat(first, hello), mockprovider.CacheTTL, 0},
	}
	for _, s := range steps {
		m.clock.advance(s.advance)
		a := m.do(t, s.call)
		if a.usage.CachedInputTokens != s.cached {
			t.Errorf("%s: cached %d, want %d (usage %+v)", s.name, a.usage.CachedInputTokens, s.cached, a.usage)
		}
	}
}

// TestAnthropicPromptCache checks explicit caching: blocks marked
// cache_control are written by the first request, read by the next, and
// the part after a hit up to the last marker is written.
func TestAnthropicPromptCache(t *testing.T) {
	m := newMock(t)
	doc := strings.Repeat("b", 4*1100-len("text")) // with its "text" tag: 1,100 tokens
	system := `"system":[{"type":"text","text":"` + doc + `","cache_control":{"type":"ephemeral"}}]`
	msg := func(text string, marked bool) string {
		cc := ""
		if marked {
			cc = `,"cache_control":{"type":"ephemeral","ttl":"1h"}`
		}
		return `{"role":"user","content":[{"type":"text","text":"` + text + `"` + cc + `}]}`
	}
	req := func(msgs ...string) call {
		return call{api: meter.AnthropicMessages, path: "/v1/messages",
			body: `{"model":"claude-sonnet-4-5","max_tokens":100,` + system + `,"messages":[` + strings.Join(msgs, ",") + `]}`}
	}
	// "user" + "text" + "Hello" = 13 bytes → 4 tokens; a 2,000-byte
	// question with its tags → 502 (cache_control does not count).
	question := strings.Repeat("q", 2000)
	steps := []struct {
		name string
		call call
		want usage.Tokens // input counts every token, the cache's included
	}{
		{"writes the system prompt", req(msg("Hello", false)), tokens(1104, 0, 1100, 4)},
		{"reads it", req(msg("Hello", false)), tokens(1104, 1100, 0, 4)},
		// The hour-long marker on the question writes it after the hit,
		// a write of the 1-hour kind.
		{"reads the system, writes the question", req(msg(question, true)), func() usage.Tokens {
			w := tokens(1602, 1100, 502, 0)
			w.CacheWrite1hInputTokens = 502
			return w
		}()},
		{"reads both", req(msg(question, true)), tokens(1602, 1602, 0, 0)},
	}
	for _, s := range steps {
		a := m.do(t, s.call)
		s.want.OutputTokens = a.usage.OutputTokens // pinned by TestUsageRules
		if a.usage.Tokens != s.want {
			t.Errorf("%s: %+v, want %+v", s.name, a.usage.Tokens, s.want)
		}
	}
	// The question's hour-long write is reported as such.
	a := m.do(t, req(msg(strings.Repeat("r", 2000), true)))
	if got := gjson.GetBytes(a.body, "usage.cache_creation").Raw; got != `{"ephemeral_5m_input_tokens":0,"ephemeral_1h_input_tokens":502}` {
		t.Errorf("cache_creation %s", got)
	}
	// The stream reports the same counts in message_start and message_delta.
	streamCall := req(msg("Hello", false))
	streamCall.body = strings.Replace(streamCall.body, `"max_tokens":100`, `"max_tokens":100,"stream":true`, 1)
	if a := m.do(t, streamCall); a.usage.Tokens != tokens(1104, 1100, 0, 4) {
		t.Errorf("stream: %+v", a.usage.Tokens)
	}
}

// TestEmbeddingVectors checks that vectors are unit vectors of the asked
// dimensions, the same for the same input in both encodings.
func TestEmbeddingVectors(t *testing.T) {
	m := newMock(t)
	float := m.do(t, call{api: meter.OpenAIEmbeddings, path: "/v1/embeddings", body: `{"model":"text-embedding-3-small","input":"hello","dimensions":8}`})
	b64 := m.do(t, call{api: meter.OpenAIEmbeddings, path: "/v1/embeddings", body: `{"model":"text-embedding-3-small","input":"hello","dimensions":8,"encoding_format":"base64"}`})
	var vec []float64
	var norm float64
	for _, v := range gjson.GetBytes(float.body, "data.0.embedding").Array() {
		vec = append(vec, v.Num)
		norm += v.Num * v.Num
	}
	if len(vec) != 8 || math.Abs(norm-1) > 1e-5 {
		t.Fatalf("vector %v (norm² %v), want 8 dimensions of a unit vector", vec, norm)
	}
	raw, err := base64.StdEncoding.DecodeString(gjson.GetBytes(b64.body, "data.0.embedding").Str)
	if err != nil || len(raw) != 32 {
		t.Fatalf("base64 embedding: %v, %d bytes", err, len(raw))
	}
	for i := range vec {
		if got := math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:])); float32(vec[i]) != got {
			t.Errorf("dimension %d: base64 %v, float %v", i, got, vec[i])
		}
	}
}

// multipartBody builds an upload: the fields, then file as the form
// file field name of the file name filename.
func multipartBody(t *testing.T, fields map[string]string, name, filename string, file []byte) (contentType, body string) {
	t.Helper()
	var buf bytes.Buffer
	w := multipart.NewWriter(&buf)
	for k, v := range fields {
		if err := w.WriteField(k, v); err != nil {
			t.Fatal(err)
		}
	}
	fw, err := w.CreateFormFile(name, filename)
	if err != nil {
		t.Fatal(err)
	}
	fw.Write(file)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return w.FormDataContentType(), buf.String()
}

// TestAudio checks speech and transcriptions: the mock's MP3 of a speech
// lasts what tollgate estimates for it, and a transcription of that MP3
// reports its duration (whisper-1) or its tokens (GPT transcription).
func TestAudio(t *testing.T) {
	m := newMock(t)
	// 75 characters at 750 a minute: 6 s.
	speech := m.do(t, call{api: meter.OpenAIAudio, path: "/v1/audio/speech",
		body: `{"model":"tts-1","voice":"alloy","input":"` + strings.Repeat("x", 75) + `"}`})
	if ct := speech.header.Get("Content-Type"); ct != "audio/mpeg" || len(speech.body) != 250*96 {
		t.Fatalf("speech: %s, %d bytes; want 250 MP3 frames of 96 bytes", ct, len(speech.body))
	}
	if speech.usage.AudioMillis != 6000 || !speech.usage.Estimated {
		t.Errorf("speech usage %+v, want tollgate's estimate of 6 s", speech.usage)
	}

	tests := []struct {
		name   string
		fields map[string]string
		want   meter.Usage
		text   string
	}{
		{"whisper-1 JSON", map[string]string{"model": "whisper-1"},
			meter.Usage{AudioMillis: 6000},
			`{"text":"Mock transcript of 6 seconds of audio.","usage":{"type":"duration","seconds":6}}`},
		{"whisper-1 verbose", map[string]string{"model": "whisper-1", "response_format": "verbose_json"},
			meter.Usage{AudioMillis: 6000},
			`"duration":6,`},
		// 6 s at 1,250 a minute → 125 audio tokens, plus the prompt "Names: Ann" → 3.
		{"gpt-4o-transcribe JSON", map[string]string{"model": "gpt-4o-transcribe", "prompt": "Names: Ann"},
			meter.Usage{Tokens: usage.Tokens{InputTokens: 128, AudioInputTokens: 125, OutputTokens: 10}, AudioMillis: 6000, Estimated: true},
			`"input_token_details":{"text_tokens":3,"audio_tokens":125}`},
		{"gpt-4o-transcribe stream", map[string]string{"model": "gpt-4o-transcribe", "stream": "true"},
			meter.Usage{Tokens: usage.Tokens{InputTokens: 125, AudioInputTokens: 125, OutputTokens: 10}, AudioMillis: 6000, Estimated: true},
			`"type":"transcript.text.done"`},
		{"whisper-1 SRT", map[string]string{"model": "whisper-1", "response_format": "srt"},
			meter.Usage{AudioMillis: 6000, Estimated: true},
			"1\n00:00:00,000 --> 00:00:06,000\nMock transcript of 6 seconds of audio.\n\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ct, body := multipartBody(t, tc.fields, "file", "speech.mp3", speech.body)
			a := m.do(t, call{api: meter.OpenAIAudio, path: "/v1/audio/transcriptions", contentType: ct, body: body})
			if a.status != http.StatusOK {
				t.Fatalf("status %d: %s", a.status, a.body)
			}
			if !bytes.Contains(a.body, []byte(tc.text)) {
				t.Errorf("answer lacks %s:\n%s", tc.text, a.body)
			}
			// The SRT's text is estimated by the meter from its bytes.
			if tc.fields["response_format"] == "srt" {
				tc.want.Tokens = a.usage.Tokens
			}
			if got := withoutFallback(a.usage); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("usage\n %+v, want\n %+v", got, tc.want)
			}
		})
	}
}

// TestErrors checks the provider-shaped errors: on request, and for
// requests the provider would refuse.
func TestErrors(t *testing.T) {
	m := newMock(t)
	tests := []struct {
		name   string
		call   call
		status int
		body   string
	}{
		{"X-Mock-Status on OpenAI", call{api: meter.OpenAIChat, path: "/v1/chat/completions", body: `{}`,
			header: http.Header{"X-Mock-Status": {"429"}}}, 429,
			`{"error":{"message":"mock provider: status 429, as the X-Mock-Status header asked","type":"rate_limit_error","param":null,"code":null}}`},
		{"X-Mock-Status on Anthropic", call{api: meter.AnthropicMessages, path: "/v1/messages", body: `{}`,
			header: http.Header{"X-Mock-Status": {"529"}}}, 529,
			`{"type":"error","error":{"type":"overloaded_error","message":"mock provider: status 529, as the X-Mock-Status header asked"}}`},
		{"bad X-Mock-Status", call{api: meter.OpenAIChat, path: "/v1/chat/completions", body: `{}`,
			header: http.Header{"X-Mock-Status": {"200"}}}, 400,
			`{"error":{"message":"mock provider: X-Mock-Status \"200\" is not an error status from 400 to 599","type":"invalid_request_error","param":null,"code":null}}`},
		{"Anthropic without max_tokens", call{api: meter.AnthropicMessages, path: "/v1/messages",
			body: `{"model":"claude-sonnet-4-5","messages":[{"role":"user","content":"Hi"}]}`}, 400,
			`{"type":"error","error":{"type":"invalid_request_error","message":"max_tokens: Field required"}}`},
		{"chat without messages", call{api: meter.OpenAIChat, path: "/v1/chat/completions", body: `{"model":"gpt-4o"}`}, 400,
			`{"error":{"message":"Missing required parameter: 'messages'.","type":"invalid_request_error","param":null,"code":null}}`},
		{"unknown API", call{api: "openai.nope", path: "/v1/x", body: `{}`}, 404,
			`{"error":{"message":"mock provider: no API \"openai.nope\" in the path \"/openai.nope/v1/x\"; the path starts with the route's api, e.g. /openai.chat/v1/chat/completions","type":"not_found_error","param":null,"code":null}}`},
		{"speech in a format the mock does not make", call{api: meter.OpenAIAudio, path: "/v1/audio/speech",
			body: `{"model":"tts-1","voice":"alloy","input":"Hi","response_format":"opus"}`}, 400,
			`{"error":{"message":"mock provider: response_format \"opus\" is not made by the mock; use mp3, wav or pcm","type":"invalid_request_error","param":null,"code":null}}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := m.do(t, tc.call)
			if a.status != tc.status || string(a.body) != tc.body {
				t.Errorf("got %d %s\nwant %d %s", a.status, a.body, tc.status, tc.body)
			}
		})
	}
}

// TestGemini: generateContent answers Gemini's JSON, and
// streamGenerateContent both of its streams, with usageMetadata by the
// mock's rules, as tollgate's meter reads them; a media part counts
// MediaTokens, an audio one reported as AUDIO; errors are Google-shaped.
func TestGemini(t *testing.T) {
	m := newMock(t)
	// "You said: Hi": 12 bytes, 3 tokens. The prompt: "Hi" (1 token) and
	// an audio part (100, AUDIO).
	body := `{"contents":[{"role":"user","parts":[{"text":"Hi"},{"inline_data":{"mime_type":"audio/wav","data":"UklGRg=="}}]}]}`
	want := usage.Tokens{InputTokens: 101, AudioInputTokens: 100, OutputTokens: 3}
	for _, path := range []string{
		"/v1beta/models/gemini-2.5-flash:generateContent",
		"/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
		"/v1beta/models/gemini-2.5-flash:streamGenerateContent",
	} {
		t.Run(path, func(t *testing.T) {
			a := m.do(t, call{api: meter.GoogleGemini, path: path, body: body})
			if a.status != 200 || a.usage.Tokens != want || a.usage.Estimated {
				t.Fatalf("status %d, usage %+v estimated %v: %s", a.status, a.usage.Tokens, a.usage.Estimated, a.body)
			}
			if !bytes.Contains(a.body, []byte(`"text":"You sa`)) || !bytes.Contains(a.body, []byte(`"finishReason":"STOP"`)) {
				t.Errorf("body %s", a.body)
			}
		})
	}
	a := m.do(t, call{api: meter.GoogleGemini, path: "/v1beta/models/gemini-2.5-flash:generateContent", body: body, header: http.Header{"X-Mock-Status": {"429"}}})
	if want := `{"error":{"code":429,"message":"mock provider: status 429, as the X-Mock-Status header asked","status":"RESOURCE_EXHAUSTED"}}`; a.status != 429 || string(a.body) != want {
		t.Errorf("got %d %s, want %s", a.status, a.body, want)
	}
}
