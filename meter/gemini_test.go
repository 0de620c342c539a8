package meter

import (
	"testing"

	"github.com/tollgate-dev/tollgate/usage"
)

func TestGeminiTarget(t *testing.T) {
	tests := []struct {
		name, path string
		model      string
		stream, ok bool
	}{
		{"generate", "/v1beta/models/gemini-2.5-flash:generateContent", "gemini-2.5-flash", false, true},
		{"stream", "/v1beta/models/gemini-2.5-pro:streamGenerateContent", "gemini-2.5-pro", true, true},
		{"v1", "/v1/models/gemini-2.0-flash-001:generateContent", "gemini-2.0-flash-001", false, true},
		{"vertex", "/v1/projects/p/locations/us-central1/publishers/google/models/gemini-2.5-flash:streamGenerateContent", "gemini-2.5-flash", true, true},
		{"count tokens", "/v1beta/models/gemini-2.5-flash:countTokens", "", false, false},
		{"embed", "/v1beta/models/text-embedding-004:embedContent", "", false, false},
		{"no method", "/v1beta/models/gemini-2.5-flash", "", false, false},
		{"no model", "/v1beta/models/:generateContent", "", false, false},
		{"not models", "/v1beta/tunedModels/x:generateContent", "", false, false},
		{"files", "/upload/v1beta/files", "", false, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			model, stream, ok := GeminiTarget(tc.path)
			if model != tc.model || stream != tc.stream || ok != tc.ok {
				t.Errorf("GeminiTarget(%q) = %q, %v, %v; want %q, %v, %v", tc.path, model, stream, ok, tc.model, tc.stream, tc.ok)
			}
		})
	}
}

func TestAzureDeployment(t *testing.T) {
	tests := []struct {
		path, want string
		ok         bool
	}{
		{"/openai/deployments/gpt4o-prod/chat/completions", "gpt4o-prod", true},
		{"/openai/deployments/my-mini/embeddings", "my-mini", true},
		{"/openai/v1/chat/completions", "", false},
		{"/openai/deployments//chat/completions", "", false},
	}
	for _, tc := range tests {
		if got, ok := AzureDeployment(tc.path); got != tc.want || ok != tc.ok {
			t.Errorf("AzureDeployment(%q) = %q, %v; want %q, %v", tc.path, got, ok, tc.want, tc.ok)
		}
	}
}

// TestGeminiRequest checks what a generateContent body reserves and how
// the output cap is enforced upstream, in either spelling of the fields.
func TestGeminiRequest(t *testing.T) {
	tests := []struct {
		name, body string
		wantCap    int64 // MaxOutputTokens
		wantN      int64
		wantOut    string // the body sent upstream with a ceiling of 1000
		wantErr    string
	}{
		{name: "no config", body: `{"contents":[]}`, wantN: 1,
			wantOut: `{"contents":[],"generationConfig":{"maxOutputTokens":1000}}`},
		{name: "camel within", body: `{"generationConfig":{"maxOutputTokens":500,"candidateCount":2}}`, wantCap: 500, wantN: 2,
			wantOut: `{"generationConfig":{"maxOutputTokens":500,"candidateCount":2}}`},
		{name: "snake above", body: `{"generation_config":{"max_output_tokens":99999}}`, wantCap: 99999, wantN: 1,
			wantOut: `{"generation_config":{"max_output_tokens":1000}}`},
		{name: "snake config, camel cap", body: `{"generation_config":{"temperature":0.2}}`, wantN: 1,
			wantOut: `{"generation_config":{"temperature":0.2,"maxOutputTokens":1000}}`},
		{name: "null config", body: `{"generationConfig":null}`, wantN: 1,
			wantOut: `{"generationConfig":{"maxOutputTokens":1000}}`},
		{name: "both spellings", body: `{"generationConfig":{},"generation_config":{}}`,
			wantErr: `meter: invalid request: the request body sets both "generationConfig" and "generation_config", two spellings of one field; send one`},
		{name: "both cap spellings", body: `{"generationConfig":{"maxOutputTokens":1,"max_output_tokens":100000}}`,
			wantErr: `meter: invalid request: the request body sets both "maxOutputTokens" and "max_output_tokens", two spellings of one field; send one`},
		{name: "bad candidate count", body: `{"generationConfig":{"candidateCount":0}}`,
			wantErr: `meter: invalid request: "generationConfig.candidateCount" must be an integer from 1 to 128, not 0`},
		{name: "config not an object", body: `{"generationConfig":"x"}`,
			wantErr: `meter: invalid request: "generationConfig" must be an object, not "x"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, err := ParseRequest(GoogleGemini, "application/json", []byte(tc.body))
			if tc.wantErr != "" {
				if err == nil || err.Error() != tc.wantErr {
					t.Fatalf("err = %v, want %s", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if r.MaxOutputTokens != tc.wantCap || r.N != tc.wantN {
				t.Errorf("cap %d, n %d; want %d, %d", r.MaxOutputTokens, r.N, tc.wantCap, tc.wantN)
			}
			out, _, err := r.Rewrite([]byte(tc.body), 1000)
			if err != nil {
				t.Fatal(err)
			}
			if string(out) != tc.wantOut {
				t.Errorf("upstream body %s, want %s", out, tc.wantOut)
			}
			slow := r
			slow.capsMax = 0 // read the body, as without capsStand
			if sout, _, err := slow.Rewrite([]byte(tc.body), 1000); err != nil || string(sout) != string(out) {
				t.Errorf("upstream body reading it again %s, %v; as parsed %s", sout, err, out)
			}
		})
	}
}

// TestGeminiImagesCountByCeiling checks that an inline image counts
// ImageTokenCeiling instead of its base64 bytes, and inline audio its
// bytes.
func TestGeminiImagesCountByCeiling(t *testing.T) {
	img := `{"contents":[{"parts":[{"inline_data":{"mime_type":"image/jpeg","data":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}}]}]}`
	r := mustParse(t, GoogleGemini, "application/json", img)
	part := `{"inline_data":{"mime_type":"image/jpeg","data":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}}`
	want := int64(len(img)-len(part)) + ImageTokenCeiling + RequestOverheadTokens
	if r.Images != 1 || r.InputTokens != want {
		t.Errorf("images %d, input %d; want 1, %d", r.Images, r.InputTokens, want)
	}
	audio := `{"contents":[{"parts":[{"inlineData":{"mimeType":"audio/wav","data":"AAAA"}}]}]}`
	if r := mustParse(t, GoogleGemini, "application/json", audio); r.Images != 0 || r.InputTokens != int64(len(audio))+RequestOverheadTokens {
		t.Errorf("audio: images %d, input %d", r.Images, r.InputTokens)
	}
}

// TestGeminiUsageRunningTotals checks the stream rules: usageMetadata
// repeats with running totals, so the last (the largest) wins; a chunk
// without it, or with a count left out, erases nothing reported before;
// within one usageMetadata an absent count is zero.
func TestGeminiUsageRunningTotals(t *testing.T) {
	req := Request{API: GoogleGemini, Model: "gemini-2.5-flash", N: 1, Stream: true, estInput: 3}
	tests := []struct {
		name, ct, body string
		want           usage.Tokens
		estimated      bool
	}{
		{"last wins", "text/event-stream",
			"data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"a\"}]}}],\"usageMetadata\":{\"promptTokenCount\":10,\"candidatesTokenCount\":1,\"thoughtsTokenCount\":50}}\r\n\r\n" +
				"data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"b\"}]},\"finishReason\":\"STOP\"}],\"usageMetadata\":{\"promptTokenCount\":10,\"candidatesTokenCount\":7,\"thoughtsTokenCount\":50}}\r\n\r\n",
			usage.Tokens{InputTokens: 10, OutputTokens: 57}, false},
		{"a last chunk without usage zeroes nothing", "text/event-stream",
			"data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"a\"}]}}],\"usageMetadata\":{\"promptTokenCount\":10,\"candidatesTokenCount\":4,\"cachedContentTokenCount\":8,\"thoughtsTokenCount\":9}}\r\n\r\n" +
				"data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"\"}]},\"finishReason\":\"STOP\"}]}\r\n\r\n",
			usage.Tokens{InputTokens: 10, CachedInputTokens: 8, OutputTokens: 13}, false},
		{"absent counts are zero", "application/json",
			`{"candidates":[{"content":{"parts":[{"text":"no"}]},"finishReason":"SAFETY"}],"usageMetadata":{"promptTokenCount":12,"totalTokenCount":12}}`,
			usage.Tokens{InputTokens: 12}, false},
		{"blocked prompt", "application/json",
			`{"promptFeedback":{"blockReason":"SAFETY"},"usageMetadata":{"promptTokenCount":20}}`,
			usage.Tokens{InputTokens: 20}, false},
		{"no usage at all", "application/json",
			`{"candidates":[{"content":{"parts":[{"text":"twelve bytes"}]},"finishReason":"STOP"}]}`,
			usage.Tokens{InputTokens: 3, OutputTokens: 3}, true},
		{"cut after a report", "text/event-stream",
			"data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"a\"}]}}],\"usageMetadata\":{\"promptTokenCount\":10,\"candidatesTokenCount\":1}}\r\n\r\n" +
				"data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"forty bytes of text produced after that!" + "\"}]}}]}\r\n\r\n",
			usage.Tokens{InputTokens: 10, OutputTokens: 11}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			u := usageOf(t, req, tc.ct, tc.body)
			if u.Tokens != tc.want || u.Estimated != tc.estimated {
				t.Errorf("usage %+v estimated %v, want %+v estimated %v", u.Tokens, u.Estimated, tc.want, tc.estimated)
			}
		})
	}
}

// TestLeaveStreamUsage checks the stream_usage: leave route option: the
// body goes upstream with the client's stream_options, the Tap removes
// nothing, and a stream without usage is charged by its text, estimated.
func TestLeaveStreamUsage(t *testing.T) {
	body := `{"model":"m","stream":true,"stream_options":{"include_usage":false},"max_tokens":50,"messages":[]}`
	r := mustParse(t, OpenAIChat, "application/json", body)
	r.LeaveStreamUsage = true
	out, _, err := r.Rewrite([]byte(body), 0)
	if err != nil {
		t.Fatal(err)
	}
	if string(out) != body {
		t.Errorf("upstream body %s, want it unchanged", out)
	}
	stream := "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"sixteen bytes ok\"}}],\"usage\":null}\n\ndata: [DONE]\n\n"
	tap := NewTap(r, "text/event-stream")
	if tap.Filters() {
		t.Fatal("a Tap under stream_usage: leave filters")
	}
	got := tap.Feed([]byte(stream))
	rest, u := tap.End()
	if string(got)+string(rest) != stream {
		t.Errorf("client got %q", string(got)+string(rest))
	}
	if u.OutputTokens != 4 || !u.Estimated || u.InputTokens != r.estInput {
		t.Errorf("usage %+v, want 4 estimated output tokens and the input estimate", u)
	}
}
