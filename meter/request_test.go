package meter

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"

	"github.com/tidwall/gjson"
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
			if !reflect.DeepEqual(got, tc.want) {
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
