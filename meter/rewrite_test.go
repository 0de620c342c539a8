package meter

import (
	"testing"

	"github.com/tidwall/gjson"
	"github.com/tidwall/sjson"
)

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
		{"adds after the white space before the brace", "{\"model\":\"gpt-4o\",\"stream\":true,\"max_tokens\":9 \n}\n",
			"{\"model\":\"gpt-4o\",\"stream\":true,\"max_tokens\":9 \n,\"stream_options\":{\"include_usage\":true}}"},
		{"drops the white space around the object", " \t{\"model\":\"gpt-4o\",\"stream\":true,\"max_tokens\":9}\r\n",
			`{"model":"gpt-4o","stream":true,"max_tokens":9,"stream_options":{"include_usage":true}}`},
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

// TestRewriteAddsCapInOneCopy checks Rewrite on bodies that set no output
// cap, which it completes without reading them again (noCaps), against
// the path that looks the fields up and sets them with sjson: the same
// bytes, the same cap, for each API with top-level cap fields, streams
// with and without stream_options, and white space around and inside the
// object.
func TestRewriteAddsCapInOneCopy(t *testing.T) {
	bodies := []struct {
		api  API
		body string
	}{
		{OpenAIChat, `{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}`},
		{OpenAIChat, `{"model":"gpt-4o","stream":true,"messages":[]}`},
		{OpenAIChat, "{\"model\":\"gpt-4o\",\"stream\":true,\"messages\":[] \n}\n"},
		{OpenAIChat, " \t{\"model\":\"gpt-4o\",\"stream\":true,\"messages\":[]}\r\n"},
		{OpenAIChat, `{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":false},"messages":[]}`},
		{OpenAIChat, `{"model":"gpt-4o","stream":true,"stream_options":null,"messages":[]}`},
		{OpenAIChat, `{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true},"messages":[]}`},
		{OpenAIResponses, `{"model":"gpt-4o","input":"hi"}`},
		{OpenAIResponses, "{\n  \"model\": \"gpt-4o\",\n  \"stream\": true,\n  \"input\": \"hi\"\n}"},
		{AnthropicMessages, `{"model":"claude-sonnet-4-5","messages":[{"role":"user","content":"hi"}]}`},
	}
	for _, tc := range bodies {
		r := mustParse(t, tc.api, "application/json", tc.body)
		if !r.noCaps {
			t.Fatalf("%s %q: parsed with a cap", tc.api, tc.body)
		}
		read := r
		read.noCaps = false
		for _, ceiling := range []int64{0, 300} {
			got, gotCap, err := r.Rewrite([]byte(tc.body), ceiling)
			want, wantCap, err2 := read.Rewrite([]byte(tc.body), ceiling)
			if err != nil || err2 != nil || string(got) != string(want) || gotCap != wantCap || gotCap <= 0 {
				t.Errorf("%s %q, ceiling %d:\n got %s, %d, %v\nwant %s, %d, %v", tc.api, tc.body, ceiling, got, gotCap, err, want, wantCap, err2)
			}
		}
	}
}

// appendMember writes what sjson writes when it adds a key, so that the
// body upstream gets does not depend on which way Rewrite took.
func TestAppendMember(t *testing.T) {
	for _, obj := range []string{`{}`, `{ }`, " {\n} ", `{"a":1}`, ` {"a":[1,2]} `, "{\"a\":1 \n}\n ", `{"a":{"b":{}}}`, "{\"a\":\"}\"\r\n}"} {
		got, ok := appendMember([]byte(obj), []byte(includeUsageMember))
		want, err := sjson.SetRawBytes([]byte(obj), "stream_options", []byte(`{"include_usage":true}`))
		if !ok || err != nil || string(got) != string(want) {
			t.Errorf("appendMember(%q) = %q, %v; sjson %q, %v", obj, got, ok, want, err)
		}
	}
	for _, notObj := range []string{``, ` `, `{`, `}`, `[1]`, `"{}"`, `1`} {
		if got, ok := appendMember([]byte(notObj), []byte(includeUsageMember)); ok {
			t.Errorf("appendMember(%q) = %q; want not ok", notObj, got)
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
		{"chat: both set within the cap stand", OpenAIChat, `{"model":"o3","max_tokens":100,"max_completion_tokens":300}`, 1000, "", 0},
		{"chat: a null beside a cap within is removed", OpenAIChat, `{"model":"o3","max_tokens":null,"max_completion_tokens":300}`, 1000,
			`{"model":"o3","max_completion_tokens":300}`, 300},
		{"chat: a string beside a cap within is replaced", OpenAIChat, `{"model":"o3","max_tokens":300,"max_completion_tokens":"5"}`, 1000,
			`{"model":"o3","max_tokens":300,"max_completion_tokens":300}`, 300},
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
	p := Price{Rates: Rates{Input: 1, Output: 1}}
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
			// The shortcuts for caps that stand (capsStand) and for a
			// missing stream_options answer as reading the body does.
			slow := r
			slow.capsMax, slow.noStreamOptions, slow.noCaps = 0, false, false
			if sout, scap, err := slow.Rewrite(in, tc.ceiling); err != nil || string(sout) != string(out) || scap != capSet {
				t.Errorf("Rewrite reading the body = %s, %d, %v; without reading it %s, %d", sout, scap, err, out, capSet)
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

// TestRewriteCapLoweredAfterParse: a caller that lowers MaxOutputTokens
// after parsing gets the body's cap lowered to it: the caps stand only
// against what the hold covers, not against what the body said.
func TestRewriteCapLoweredAfterParse(t *testing.T) {
	body := `{"model":"gpt-4o","max_tokens":500}`
	r := mustParse(t, OpenAIChat, "application/json", body)
	r.MaxOutputTokens = 100
	out, capSet, err := r.Rewrite([]byte(body), 1000)
	if want := `{"model":"gpt-4o","max_tokens":100}`; err != nil || string(out) != want || capSet != 100 {
		t.Errorf("Rewrite = %s, %d, %v; want %s, 100", out, capSet, err, want)
	}
}
