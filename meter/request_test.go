package meter

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"math"
	"mime/multipart"
	"strings"
	"testing"

	"github.com/tidwall/gjson"

	"github.com/tollgate-dev/tollgate/money"
)

func mustParse(t *testing.T, api API, contentType, body string) Request {
	t.Helper()
	r, err := ParseRequest(api, contentType, []byte(body))
	if err != nil {
		t.Fatalf("ParseRequest(%s, %q): %v", api, body, err)
	}
	return r
}

func TestParseRequestFields(t *testing.T) {
	tests := []struct {
		name string
		api  API
		body string
		want Request // only the exported fields below are compared
	}{
		{"chat stream", OpenAIChat, `{"model":"gpt-4o","stream":true,"max_tokens":100,"n":2}`,
			Request{Model: "gpt-4o", Stream: true, MaxOutputTokens: 100, N: 2}},
		{"chat asks for usage", OpenAIChat, `{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true}}`,
			Request{Model: "gpt-4o", Stream: true, IncludeUsage: true, N: 1}},
		{"chat include_usage false", OpenAIChat, `{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":false}}`,
			Request{Model: "gpt-4o", Stream: true, N: 1}},
		{"include_usage without stream is not a stream", OpenAIChat, `{"model":"gpt-4o","stream_options":{"include_usage":true}}`,
			Request{Model: "gpt-4o", N: 1}},
		{"largest of the caps", OpenAIChat, `{"model":"o3","max_tokens":50,"max_completion_tokens":5000}`,
			Request{Model: "o3", MaxOutputTokens: 5000, N: 1}},
		{"null and wrong-typed caps are ignored", OpenAIChat, `{"model":"o3","max_tokens":null,"max_completion_tokens":"9","n":null}`,
			Request{Model: "o3", N: 1}},
		{"negative cap ignored", OpenAIChat, `{"model":"o3","max_tokens":-5}`,
			Request{Model: "o3", N: 1}},
		{"huge cap saturates", OpenAIChat, `{"model":"o3","max_tokens":1e300}`,
			Request{Model: "o3", MaxOutputTokens: math.MaxInt64, N: 1}},
		{"responses", OpenAIResponses, `{"model":"gpt-4.1","stream":true,"max_output_tokens":2000,"n":7}`,
			Request{Model: "gpt-4.1", Stream: true, MaxOutputTokens: 2000, N: 1}},
		{"anthropic", AnthropicMessages, `{"model":"claude-sonnet-4-5","max_tokens":1024,"stream":true}`,
			Request{Model: "claude-sonnet-4-5", Stream: true, MaxOutputTokens: 1024, N: 1}},
		// Each API's cap is its own field; another API's does not cap it.
		{"anthropic ignores max_output_tokens", AnthropicMessages, `{"model":"c","max_output_tokens":10}`, Request{Model: "c", N: 1}},
		{"responses ignores max_tokens", OpenAIResponses, `{"model":"r","max_tokens":10}`, Request{Model: "r", N: 1}},
		{"images have no cap field", OpenAIImages, `{"model":"gpt-image-1","max_tokens":10}`, Request{Model: "gpt-image-1", N: 1}},
		{"no model", OpenAIEmbeddings, `{"input":"hi"}`, Request{N: 1}},
		{"images", OpenAIImages, `{"model":"dall-e-3","prompt":"otter","n":3,"size":"1792x1024","quality":"hd"}`,
			Request{Model: "dall-e-3", N: 3, ImageSize: "1792x1024", ImageQuality: "hd", InputTokens: 0}},
		{"n as float integer", OpenAIImages, `{"model":"dall-e-2","n":2.0}`, Request{Model: "dall-e-2", N: 2}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := mustParse(t, tc.api, "application/json", tc.body)
			got := Request{Model: r.Model, Stream: r.Stream, IncludeUsage: r.IncludeUsage,
				MaxOutputTokens: r.MaxOutputTokens, N: r.N, ImageSize: r.ImageSize, ImageQuality: r.ImageQuality}
			if got != tc.want {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
			if r.API != tc.api {
				t.Errorf("API = %q", r.API)
			}
		})
	}
}

func TestParseRequestInvalid(t *testing.T) {
	tests := []struct {
		name        string
		api         API
		contentType string
		body        string
		reason      string
	}{
		{"not json", OpenAIChat, "application/json", `{"model":`, "the request body is not valid JSON"},
		{"empty", AnthropicMessages, "application/json", ``, "the request body is not valid JSON"},
		{"array", OpenAIChat, "application/json", `[1,2]`, "the request body must be a JSON object"},
		{"model number", OpenAIChat, "application/json", `{"model":4}`, `"model" must be a string, not 4`},
		{"n zero", OpenAIChat, "application/json", `{"model":"m","n":0}`, `"n" must be an integer from 1 to 128, not 0`},
		{"n fraction", OpenAIChat, "application/json", `{"model":"m","n":1.5}`, `"n" must be an integer from 1 to 128, not 1.5`},
		{"n string", OpenAIImages, "application/json", `{"model":"m","n":"2"}`, `"n" must be an integer from 1 to 128, not "2"`},
		{"n too large", OpenAIChat, "application/json", `{"model":"m","n":129}`, `"n" must be an integer from 1 to 128, not 129`},
		{"multipart without boundary", OpenAIAudio, "multipart/form-data", `x`, "the multipart Content-Type has no boundary"},
		{"multipart garbage", OpenAIAudio, "multipart/form-data; boundary=b", `garbage`, "the multipart body has no parts"},
		{"multipart bad n", OpenAIImages, "multipart/form-data; boundary=" + testBoundary,
			form(t, map[string]string{"model": "dall-e-2", "n": "two"}, nil), `"n" must be an integer from 1 to 128, not two`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseRequest(tc.api, tc.contentType, []byte(tc.body))
			if !errors.Is(err, ErrInvalidRequest) {
				t.Fatalf("err = %v, want ErrInvalidRequest", err)
			}
			var re *RequestError
			if !errors.As(err, &re) || re.Reason != tc.reason {
				t.Fatalf("reason = %q, want %q", re.Reason, tc.reason)
			}
			if err.Error() != "meter: invalid request: "+tc.reason {
				t.Errorf("Error() = %q", err.Error())
			}
		})
	}
	if _, err := ParseRequest("openai.nope", "application/json", []byte(`{}`)); err == nil || errors.Is(err, ErrInvalidRequest) {
		t.Errorf("unknown api: err = %v, want a plain error", err)
	}
}

func TestParseRequestFlat(t *testing.T) {
	for _, tc := range []struct{ ct, body, model string }{
		{"", "", ""},
		{"application/octet-stream", "\x00\x01binary", ""},
		{"application/json", `{"model":"omni-moderation-latest","input":"x"}`, "omni-moderation-latest"},
		{"application/json", `{"model":`, ""},
		{"text/plain", `{"model":7}`, ""},
	} {
		r, err := ParseRequest(Flat, tc.ct, []byte(tc.body))
		if err != nil || r.Model != tc.model || r.N != 1 {
			t.Errorf("flat %q: %+v, %v; want model %q", tc.body, r, err, tc.model)
		}
	}
}

// TestParseRequestKeepsNoReference checks that strings taken from the body
// survive the body's buffer being reused (ParseRequest views the body
// without copying while it parses).
func TestParseRequestKeepsNoReference(t *testing.T) {
	body := []byte(`{"model":"gpt-4o","size":"1024x1024","quality":"hd"}`)
	r, err := ParseRequest(OpenAIImages, "application/json", body)
	if err != nil {
		t.Fatal(err)
	}
	for i := range body {
		body[i] = 'X'
	}
	if r.Model != "gpt-4o" || r.ImageSize != "1024x1024" || r.ImageQuality != "hd" {
		t.Errorf("request changed with its body: %+v", r)
	}
}

func TestInputTokensRule(t *testing.T) {
	big := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{0xAB, 0xCD, 0xEF}, 350_000)) // 1.4 MB of base64
	imagePart := `{"type":"image_url","image_url":{"url":"data:image/png;base64,` + big + `","detail":"high"}}`
	chatVision := `{"model":"gpt-4o","messages":[{"role":"user","content":[{"type":"text","text":"What is this?"},` + imagePart + `]}]}`
	urlPart := `{"type":"image_url","image_url":{"url":"https://example.com/a.png"}}`
	chatURL := `{"model":"gpt-4o","messages":[{"role":"user","content":[` + urlPart + `,` + urlPart + `]}]}`
	anthropicNested := `{"model":"claude","max_tokens":10,"messages":[{"role":"user","content":[{"type":"tool_result","tool_use_id":"t","content":[{"type":"image","source":{"type":"base64","media_type":"image/png","data":"` + big + `"}}]}]}]}`
	anthropicImage := `{"type":"image","source":{"type":"base64","media_type":"image/png","data":"` + big + `"}}`
	responsesImage := `{"model":"gpt-4.1","input":[{"role":"user","content":[{"type":"input_image","image_url":"data:image/png;base64,` + big + `"}]}]}`
	bashTool := `{"type":"bash_20250124","name":"bash"}`
	tools := `{"model":"claude","max_tokens":10,"tools":[` + bashTool + `],"messages":[{"role":"user","content":"hi"}]}`
	plain := `{"model":"gpt-4o","messages":[{"role":"user","content":"héllo\nworld"}]}`

	tests := []struct {
		name   string
		api    API
		body   string
		want   int64
		images int64
	}{
		// Text only: every body byte plus the overhead.
		{"text", OpenAIChat, plain, int64(len(plain)) + RequestOverheadTokens, 0},
		// The 1.4 MB image counts 5,000, not 1.4 million.
		{"base64 image", OpenAIChat, chatVision, int64(len(chatVision)-len(imagePart)) + ImageTokenCeiling + RequestOverheadTokens, 1},
		// URL images are few bytes but still count the ceiling.
		{"url images", OpenAIChat, chatURL, int64(len(chatURL)-2*len(urlPart)) + 2*ImageTokenCeiling + RequestOverheadTokens, 2},
		{"anthropic image inside tool_result", AnthropicMessages, anthropicNested,
			int64(len(anthropicNested)-len(anthropicImage)) + ImageTokenCeiling + RequestOverheadTokens, 1},
		{"responses input_image", OpenAIResponses, responsesImage,
			int64(len(responsesImage)-len(`{"type":"input_image","image_url":"data:image/png;base64,`+big+`"}`)) + ImageTokenCeiling + RequestOverheadTokens, 1},
		// A built-in tool declared in 38 bytes counts ToolTokenFloor.
		{"tool floor", AnthropicMessages, tools, int64(len(tools)) + ToolTokenFloor - int64(len(bashTool)) + RequestOverheadTokens, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := mustParse(t, tc.api, "application/json", tc.body)
			if r.InputTokens != tc.want || r.Images != tc.images {
				t.Errorf("InputTokens = %d, Images = %d; want %d, %d", r.InputTokens, r.Images, tc.want, tc.images)
			}
		})
	}
}

// TestInputTokensBoundText checks the premise of the rule on real
// tokenizer behaviour it relies on: a JSON string's text never has more
// UTF-8 bytes than its JSON spelling, so body bytes bound text bytes.
func TestInputTokensBoundText(t *testing.T) {
	for _, s := range []string{"plain", "tab\tnew\nline", `quote"back\slash`, "émoji 🎉 中文", "\u0000\u001f", "<>&"} {
		enc, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		body := `{"content":` + string(enc) + `}`
		got := gjson.Get(body, "content").String()
		if got != s {
			t.Fatalf("round trip %q → %q", s, got)
		}
		if len(s) > len(body) {
			t.Errorf("text %q has %d bytes, more than its JSON body's %d", s, len(s), len(body))
		}
	}
}

func form(t *testing.T, fields map[string]string, files map[string][]byte) string {
	t.Helper()
	var b bytes.Buffer
	w := multipart.NewWriter(&b)
	if err := w.SetBoundary(testBoundary); err != nil {
		t.Fatal(err)
	}
	for k, v := range fields {
		if err := w.WriteField(k, v); err != nil {
			t.Fatal(err)
		}
	}
	for k, v := range files {
		fw, err := w.CreateFormFile(k, "upload.bin")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := fw.Write(v); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func TestParseRequestMultipart(t *testing.T) {
	ct := "multipart/form-data; boundary=" + testBoundary
	// 64,000 bytes of audio at the 2,000 B/s floor: 32 s.
	audio := form(t, map[string]string{"model": "whisper-1", "prompt": "tollgate", "response_format": "text"},
		map[string][]byte{"file": make([]byte, 64_000)})
	r := mustParse(t, OpenAIAudio, ct, audio)
	textBytes := int64(len("whisper-1") + len("tollgate") + len("text"))
	audioTokens := int64(32_000 * AudioTokensPerMinute / 60_000) // 666.67 → 667
	audioTokens++
	if r.Model != "whisper-1" || r.AudioMillis != 32_000 || r.InputTokens != textBytes+RequestOverheadTokens+audioTokens {
		t.Errorf("audio: %+v (want 32,000 ms, %d input tokens)", r, textBytes+RequestOverheadTokens+audioTokens)
	}
	edit := form(t, map[string]string{"model": "gpt-image-1", "prompt": "add a hat", "n": "2", "size": "1024x1024", "quality": "low", "stream": "true"},
		map[string][]byte{"image[]": make([]byte, 300_000), "mask": make([]byte, 1000)})
	r = mustParse(t, OpenAIImages, ct, edit)
	if r.Model != "gpt-image-1" || r.N != 2 || r.ImageSize != "1024x1024" || r.ImageQuality != "low" || !r.Stream || r.Images != 2 {
		t.Errorf("image edit: %+v", r)
	}
	wantTokens := int64(len("gpt-image-1")+len("add a hat")+len("2")+len("1024x1024")+len("low")+len("true")) + RequestOverheadTokens + 2*ImageTokenCeiling
	if r.InputTokens != wantTokens {
		t.Errorf("image edit InputTokens = %d, want %d", r.InputTokens, wantTokens)
	}
}

func TestParseSpeech(t *testing.T) {
	input := strings.Repeat("a", 750) // one minute at speed 1.0
	r := mustParse(t, OpenAIAudio, "application/json", `{"model":"tts-1","input":"`+input+`","voice":"alloy"}`)
	if r.AudioMillis != 60_000 || r.estInput != 750 || r.audioTokens != AudioTokensPerMinute {
		t.Errorf("speed 1: %+v", r)
	}
	r = mustParse(t, OpenAIAudio, "application/json", `{"model":"tts-1","input":"`+input+`","speed":2}`)
	if r.AudioMillis != 30_000 {
		t.Errorf("speed 2: AudioMillis = %d, want 30,000", r.AudioMillis)
	}
	r = mustParse(t, OpenAIAudio, "application/json", `{"model":"tts-1","input":"`+input+`","speed":0.01}`)
	if r.AudioMillis != 240_000 {
		t.Errorf("speed below 0.25 clamps: AudioMillis = %d, want 240,000", r.AudioMillis)
	}
	// Characters, not bytes, for tts-1's per-character price.
	r = mustParse(t, OpenAIAudio, "application/json", `{"model":"tts-1","input":"héllo"}`)
	if r.estInput != 5 || r.InputTokens != 6+RequestOverheadTokens {
		t.Errorf("runes: estInput = %d, InputTokens = %d", r.estInput, r.InputTokens)
	}
}

func TestEstimate(t *testing.T) {
	p := Price{Input: 1_000_000, CachedInput: 500_000, CacheWriteInput: 1_000_000, Output: 2_000_000}
	// in is the input rule for a body without images or tools.
	in := func(body string) int64 { return int64(len(body)) + RequestOverheadTokens }
	const (
		capped   = `{"model":"m","max_tokens":100,"messages":[]}`
		over     = `{"model":"m","max_tokens":99999,"messages":[]}`
		plain    = `{"model":"m","messages":[]}`
		bigCap   = `{"model":"m","max_tokens":100000,"messages":[]}`
		withN    = `{"model":"m","n":3,"messages":[]}`
		claude   = `{"model":"m","max_tokens":10,"messages":[]}`
		embed    = `{"model":"m","input":"x"}`
		dalle    = `{"model":"dall-e-2","n":2,"size":"256x256"}`
		dearCach = 1_250_000
	)
	tests := []struct {
		name     string
		api      API
		body     string
		price    Price
		routeCap int64
		want     Usage
		cost     int64 // micro-credits: the rates are 1 and 2 per token
	}{
		// Request cap under the route cap: in×1 + 100×2.
		{"request cap", OpenAIChat, capped, p, 4096, Usage{InputTokens: in(capped), OutputTokens: 100}, in(capped) + 200},
		// Request cap above the route cap is clamped: in + 4096×2.
		{"clamped to route cap", OpenAIChat, over, p, 4096, Usage{InputTokens: in(over), OutputTokens: 4096}, in(over) + 8192},
		{"route cap when none", OpenAIChat, plain, p, 2000, Usage{InputTokens: in(plain), OutputTokens: 2000}, in(plain) + 4000},
		{"no caps anywhere", OpenAIChat, plain, p, 0, Usage{InputTokens: in(plain), OutputTokens: DefaultMaxOutputTokens}, in(plain) + 2*DefaultMaxOutputTokens},
		{"request cap, no route cap", OpenAIChat, bigCap, p, 0, Usage{InputTokens: in(bigCap), OutputTokens: 100_000}, in(bigCap) + 200_000},
		// n multiplies the output, not the input: in + 3×1000×2.
		{"times n", OpenAIChat, withN, p, 1000, Usage{InputTokens: in(withN), OutputTokens: 3000}, in(withN) + 6000},
		// Cache writes dearer than input: every input token at 1.25, as cache writes.
		{"worst-case cache rate", AnthropicMessages, claude,
			Price{Input: 1_000_000, CachedInput: 100_000, CacheWriteInput: dearCach, Output: 2_000_000}, 4096,
			Usage{InputTokens: in(claude), CacheWriteInputTokens: in(claude), OutputTokens: 10}, (in(claude)*5+3)/4 + 20},
		{"embeddings have no output", OpenAIEmbeddings, embed, p, 4096, Usage{InputTokens: in(embed)}, in(embed)},
		// dall-e: n images at the size's price (2 × 16,000); tokens do not apply.
		{"images per image", OpenAIImages, dalle, Price{PerImage: mapOf("256x256", 16_000)}, 4096,
			Usage{InputTokens: in(dalle), OutputTokens: 8192, Images: 2, ImageSize: "256x256"}, 32_000},
		{"flat", Flat, "", Price{PerRequest: 100, Input: 1_000_000}, 4096, Usage{}, 100},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, err := ParseRequest(tc.api, "application/json", []byte(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			u, cost, err := r.Estimate(tc.price, tc.routeCap)
			if err != nil {
				t.Fatal(err)
			}
			if u != tc.want || int64(cost) != tc.cost {
				t.Errorf("Estimate = %+v, %d\n    want %+v, %d", u, cost, tc.want, tc.cost)
			}
		})
	}
	// An absurd worst case is an error, not a wrapped number.
	r := mustParse(t, OpenAIChat, "application/json", `{"model":"m","n":128,"max_tokens":9223372036854775807}`)
	if _, _, err := r.Estimate(Price{Output: 1_000_000_000}, 0); !errors.Is(err, ErrCostRange) {
		t.Errorf("overflowing estimate: err = %v, want ErrCostRange", err)
	}
}

func mapOf(k string, v int64) map[string]money.Micros {
	return map[string]money.Micros{k: money.Micros(v)}
}

func TestRewrite(t *testing.T) {
	tests := []struct {
		name, body, want string
	}{
		{"adds stream_options", `{"model":"gpt-4o","stream":true,"messages":[],"max_tokens":9}`,
			`{"model":"gpt-4o","stream":true,"messages":[],"max_tokens":9,"stream_options":{"include_usage":true}}`},
		{"over an explicit false", `{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":false,"other":1},"max_tokens":9}`,
			`{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true,"other":1},"max_tokens":9}`},
		{"stream_options null", `{"stream":true,"stream_options":null,"model":"gpt-4o","max_tokens":9}`,
			`{"stream":true,"stream_options":{"include_usage":true},"model":"gpt-4o","max_tokens":9}`},
		{"keeps formatting elsewhere", "{\n  \"model\": \"gpt-4o\",\n  \"stream\": true,\n  \"max_tokens\": 9,\n  \"stream_options\": {}\n}",
			"{\n  \"model\": \"gpt-4o\",\n  \"stream\": true,\n  \"max_tokens\": 9,\n  \"stream_options\": {\"include_usage\":true}\n}"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := []byte(tc.body)
			r := mustParse(t, OpenAIChat, "application/json", tc.body)
			out, capSet, err := r.Rewrite(in, 0)
			if err != nil {
				t.Fatal(err)
			}
			if string(out) != tc.want || capSet != 0 {
				t.Errorf("Rewrite =\n%s\nwant\n%s", out, tc.want)
			}
			if string(in) != tc.body {
				t.Errorf("Rewrite modified its input: %s", in)
			}
			if r2 := mustParse(t, OpenAIChat, "application/json", string(out)); !r2.IncludeUsage {
				t.Errorf("rewritten body does not ask for usage")
			}
		})
	}
	for _, tc := range []struct {
		api  API
		body string
	}{
		{OpenAIChat, `{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true},"max_completion_tokens":1}`},
		{OpenAIChat, `{"model":"gpt-4o","max_tokens":4096}`},
		{OpenAIResponses, `{"model":"gpt-4o","stream":true,"max_output_tokens":100}`},
		{OpenAIEmbeddings, `{"model":"e","input":"x","max_tokens":100000}`},
	} {
		in := []byte(tc.body)
		out, capSet, err := mustParse(t, tc.api, "application/json", tc.body).Rewrite(in, 4096)
		if err != nil || &out[0] != &in[0] || len(out) != len(in) || capSet != 0 {
			t.Errorf("%s %s: Rewrite changed a body it should leave alone: %s, %v", tc.api, tc.body, out, err)
		}
	}
}

// TestRewriteOutputCap checks that the body sent upstream caps the output
// at the ceiling (the route's max_output_tokens) in the API's own field,
// so that the hold, which reserves that cap, bounds what the provider
// produces: a lower cap of the client's stands, a higher one is lowered,
// a missing, null, non-positive or non-numeric one is replaced.
func TestRewriteOutputCap(t *testing.T) {
	tests := []struct {
		name    string
		api     API
		body    string
		ceiling int64
		want    string // "" = unchanged
		wantCap int64
	}{
		{"chat: none set, max_completion_tokens added", OpenAIChat, `{"model":"o3"}`, 1000,
			`{"model":"o3","max_completion_tokens":1000}`, 1000},
		{"chat: max_tokens lowered in place", OpenAIChat, `{"model":"gpt-4o","max_tokens":100000,"messages":[]}`, 1000,
			`{"model":"gpt-4o","max_tokens":1000,"messages":[]}`, 1000},
		{"chat: max_completion_tokens lowered", OpenAIChat, `{"model":"o3","max_completion_tokens":5000}`, 1000,
			`{"model":"o3","max_completion_tokens":1000}`, 1000},
		{"chat: lower cap stands", OpenAIChat, `{"model":"gpt-4o","max_tokens":300}`, 1000, "", 0},
		{"chat: the cap itself stands", OpenAIChat, `{"model":"gpt-4o","max_tokens":1000}`, 1000, "", 0},
		{"chat: fraction under the cap stands", OpenAIChat, `{"model":"gpt-4o","max_tokens":999.5}`, 1000, "", 0},
		{"chat: both set, only the higher lowered", OpenAIChat, `{"model":"o3","max_tokens":100,"max_completion_tokens":5000}`, 1000,
			`{"model":"o3","max_tokens":100,"max_completion_tokens":1000}`, 1000},
		{"chat: null removed, max_completion_tokens added", OpenAIChat, `{"model":"o3","max_tokens":null}`, 1000,
			`{"model":"o3","max_completion_tokens":1000}`, 1000},
		{"chat: string replaced", OpenAIChat, `{"model":"o3","max_completion_tokens":"100000"}`, 1000,
			`{"model":"o3","max_completion_tokens":1000}`, 1000},
		// llama.cpp-style servers read -1 as "no limit".
		{"chat: negative replaced", OpenAIChat, `{"model":"m","max_tokens":-1}`, 1000, `{"model":"m","max_tokens":1000}`, 1000},
		{"chat: zero replaced", OpenAIChat, `{"model":"m","max_tokens":0}`, 1000, `{"model":"m","max_tokens":1000}`, 1000},
		{"chat: exponent lowered", OpenAIChat, `{"model":"m","max_tokens":1e9}`, 1000, `{"model":"m","max_tokens":1000}`, 1000},
		{"chat stream: cap and include_usage", OpenAIChat, `{"model":"gpt-4o","stream":true,"max_tokens":5000}`, 1000,
			`{"model":"gpt-4o","stream":true,"max_tokens":1000,"stream_options":{"include_usage":true}}`, 1000},
		{"responses: none set", OpenAIResponses, `{"model":"gpt-4.1","input":"hi"}`, 2048,
			`{"model":"gpt-4.1","input":"hi","max_output_tokens":2048}`, 2048},
		{"responses: lowered", OpenAIResponses, `{"model":"gpt-4.1","max_output_tokens":50000}`, 2048,
			`{"model":"gpt-4.1","max_output_tokens":2048}`, 2048},
		{"responses: max_tokens is not its field", OpenAIResponses, `{"model":"gpt-4.1","max_tokens":5}`, 2048,
			`{"model":"gpt-4.1","max_tokens":5,"max_output_tokens":2048}`, 2048},
		{"anthropic: none set", AnthropicMessages, `{"model":"claude-sonnet-4-5","messages":[]}`, 4096,
			`{"model":"claude-sonnet-4-5","messages":[],"max_tokens":4096}`, 4096},
		{"anthropic: lowered", AnthropicMessages, `{"model":"claude-sonnet-4-5","max_tokens":64000}`, 4096,
			`{"model":"claude-sonnet-4-5","max_tokens":4096}`, 4096},
		{"anthropic: lower stands", AnthropicMessages, `{"model":"claude-sonnet-4-5","max_tokens":1024}`, 4096, "", 0},
		// Without a ceiling the request's own cap stands; none at all gets
		// the default Estimate reserves.
		{"no ceiling: own cap stands", OpenAIChat, `{"model":"m","max_tokens":100000}`, 0, "", 0},
		{"no ceiling: default set", OpenAIChat, `{"model":"m"}`, 0, `{"model":"m","max_completion_tokens":4096}`, DefaultMaxOutputTokens},
		{"no ceiling: wrong type replaced by the default", AnthropicMessages, `{"model":"m","max_tokens":"x"}`, 0, `{"model":"m","max_tokens":4096}`, DefaultMaxOutputTokens},
		// APIs without a cap field are left alone.
		{"embeddings", OpenAIEmbeddings, `{"model":"e","input":"x"}`, 1000, "", 0},
		{"images", OpenAIImages, `{"model":"gpt-image-1","prompt":"otter","max_tokens":100000}`, 1000, "", 0},
		{"speech", OpenAIAudio, `{"model":"tts-1","input":"hi","voice":"alloy"}`, 1000, "", 0},
	}
	p := Price{Input: 1, Output: 1}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := []byte(tc.body)
			r := mustParse(t, tc.api, "application/json", tc.body)
			out, capSet, err := r.Rewrite(in, tc.ceiling)
			if err != nil {
				t.Fatal(err)
			}
			want := tc.want
			if want == "" {
				want = tc.body
			}
			if string(out) != want || capSet != tc.wantCap {
				t.Errorf("Rewrite = %s, %d\n     want %s, %d", out, capSet, want, tc.wantCap)
			}
			if string(in) != tc.body {
				t.Errorf("Rewrite modified its input: %s", in)
			}
			// The hold bounds the output: every cap field upstream reads
			// is a positive number no larger than what Estimate reserves
			// per choice, before and after the rewrite alike.
			u, _, err := r.Estimate(p, tc.ceiling)
			if err != nil {
				t.Fatal(err)
			}
			r2 := mustParse(t, tc.api, "application/json", string(out))
			u2, _, err := r2.Estimate(p, tc.ceiling)
			if err != nil {
				t.Fatal(err)
			}
			if u2.OutputTokens != u.OutputTokens {
				t.Errorf("the rewritten body reserves %d output tokens, the original %d", u2.OutputTokens, u.OutputTokens)
			}
			for _, f := range capFields(tc.api) {
				if v := gjson.GetBytes(out, f); v.Exists() && (v.Type != gjson.Number || v.Num <= 0 || int64(v.Num) > u.OutputTokens) {
					t.Errorf("upstream reads %s = %s, above the %d reserved", f, v.Raw, u.OutputTokens)
				}
			}
		})
	}
}

// TestParseRequestDuplicateKeys checks that a body whose keys could be
// read one way by tollgate and another way upstream is refused. gjson
// reads the first of duplicate keys; Python's json, Go's encoding/json and
// JavaScript's JSON.parse keep the last. Without the refusal,
// {"model":"gpt-4o-mini","model":"o1-pro"} would be priced as gpt-4o-mini
// and run as o1-pro, and a duplicated stream or stream_options would stop
// the usage chunk tollgate bills from.
func TestParseRequestDuplicateKeys(t *testing.T) {
	mp := "multipart/form-data; boundary=" + testBoundary
	twoModels := "--" + testBoundary + "\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n" +
		"--" + testBoundary + "\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\ngpt-4o-transcribe\r\n" +
		"--" + testBoundary + "--\r\n"
	tests := []struct {
		name        string
		api         API
		contentType string
		body        string
		reason      string
	}{
		{"model twice", OpenAIChat, "application/json", `{"model":"gpt-4o-mini","messages":[],"model":"o1-pro"}`,
			`the request body has the key "model" more than once; send each key once`},
		{"model twice, one escaped", AnthropicMessages, "application/json", `{"model":"claude-haiku-4-5","mod\u0065l":"claude-opus-4-1","max_tokens":5}`,
			`the request body has the key "model" more than once; send each key once`},
		{"stream twice", OpenAIChat, "application/json", `{"model":"o3","stream":false,"stream":true}`,
			`the request body has the key "stream" more than once; send each key once`},
		{"include_usage twice", OpenAIChat, "application/json", `{"model":"o3","stream":true,"stream_options":{"include_usage":true,"include_usage":false}}`,
			`the request body has the key "stream_options.include_usage" more than once; send each key once`},
		{"images n twice", OpenAIImages, "application/json", `{"model":"dall-e-3","n":1,"n":10}`,
			`the request body has the key "n" more than once; send each key once`},
		{"flat model twice", Flat, "application/json", `{"model":"a","model":"b"}`,
			`the request body has the key "model" more than once; send each key once`},
		{"multipart model twice", OpenAIAudio, mp, twoModels,
			`the multipart field "model" is sent more than once; send it once`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, err := ParseRequest(tc.api, tc.contentType, []byte(tc.body))
			var re *RequestError
			if !errors.As(err, &re) || !errors.Is(err, ErrInvalidRequest) {
				t.Fatalf("ParseRequest = %+v, %v; want a *RequestError", r, err)
			}
			if re.Reason != tc.reason {
				t.Errorf("reason = %q\n  want %q", re.Reason, tc.reason)
			}
		})
	}
	// Repeats that are not ambiguous stay accepted: the same key in
	// different objects, and multipart fields OpenAI takes as lists.
	for _, tc := range []struct {
		api      API
		ct, body string
	}{
		{OpenAIChat, "application/json", `{"model":"gpt-4o","messages":[{"role":"user","content":"a"},{"role":"user","content":"b"}]}`},
		{Flat, "application/json", `{"model":"m","input":"x","input":"y"}`},
		{OpenAIAudio, mp, form(t, map[string]string{"model": "whisper-1"}, nil) + ""},
	} {
		if _, err := ParseRequest(tc.api, tc.ct, []byte(tc.body)); err != nil {
			t.Errorf("%s %q: %v", tc.api, tc.body, err)
		}
	}
	granularities := "--" + testBoundary + "\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n" +
		"--" + testBoundary + "\r\nContent-Disposition: form-data; name=\"timestamp_granularities[]\"\r\n\r\nword\r\n" +
		"--" + testBoundary + "\r\nContent-Disposition: form-data; name=\"timestamp_granularities[]\"\r\n\r\nsegment\r\n" +
		"--" + testBoundary + "--\r\n"
	if _, err := ParseRequest(OpenAIAudio, mp, []byte(granularities)); err != nil {
		t.Errorf("repeated timestamp_granularities[]: %v", err)
	}
}

// TestParseRequestBackground checks that a Responses request in
// background mode is refused: the answer is {"status":"queued",
// "usage":null}, the model runs after the request ends, and its usage
// never passes through tollgate, so the output would never be charged
// (OpenAI "Background mode" guide).
func TestParseRequestBackground(t *testing.T) {
	for _, body := range []string{
		`{"model":"o3","input":"Write a very long novel","background":true}`,
		`{"model":"o3","input":"Write a very long novel","background":true,"stream":true}`,
	} {
		_, err := ParseRequest(OpenAIResponses, "application/json", []byte(body))
		var re *RequestError
		if !errors.As(err, &re) {
			t.Fatalf("%s: err = %v, want a *RequestError", body, err)
		}
		want := `"background": true is not supported through tollgate: the response is generated after this request ends, so its usage cannot be metered; send the request without "background"`
		if re.Reason != want {
			t.Errorf("reason = %q\n  want %q", re.Reason, want)
		}
	}
	for _, body := range []string{
		`{"model":"o3","input":"hi","background":false}`,
		`{"model":"o3","input":"hi","background":null}`,
	} {
		if _, err := ParseRequest(OpenAIResponses, "application/json", []byte(body)); err != nil {
			t.Errorf("%s: %v", body, err)
		}
	}
}
