package meter

import "testing"

// TestParseRequestWalkEdges pins what ParseRequest reads from bodies that
// tell a one-walk reader from gjson's Get per field: scalar and object
// "tools", escaped keys, an image part whose "type" follows its children
// or repeats, the first of duplicate nested keys, and both spellings of
// a Gemini field. The expected values are those of the Get-based
// implementation the walk replaced.
func TestParseRequestWalkEdges(t *testing.T) {
	tests := []struct {
		api          API
		body         string
		model        string
		n            int64
		inputTokens  int64
		images       int64
		includeUsage bool
		tools        int
		compaction   bool
		err          string
	}{
		{OpenAIChat, `{"model":"m","tools":null,"functions":5,"messages":[{"content":[{"x":{"type":"image_url"}},{"type":"image_url","u":"x"}],"type":"text"}]}`, "m", 1, 12644, 2, false, 0, false, ""},
		{OpenAIChat, `{"model":"m","messages":[{"a":[{"type":"image_url"}],"type":"image_url"},{"type":"text","type":"image_url","b":{"type":"image_url"}},{"type":1,"c":{"type":"image_url"}}]}`, "m", 1, 15595, 3, false, 0, false, ""},
		{OpenAIChat, `{"mod\u0065l":"m","messages":[{"typ\u0065":"im\u0061ge_url"}],"stream":true,"stream_options":{"include_usage":true}}`, "m", 1, 5598, 1, true, 0, false, ""},
		{OpenAIChat, `{"model":"m","stream":true,"stream_options":{"include_usage":true,"include_usage":false}}`, "", 0, 0, 0, false, 0, false, "meter: invalid request: the request body has the key \"stream_options.include_usage\" more than once; send each key once"},
		{OpenAIImages, `{"model":"m","images":{"a":1,"b":[2]},"mask":{},"n":2}`, "m", 2, 15560, 3, false, 0, false, ""},
		{AnthropicMessages, `{"model":"m","tools":[1,[{"type":"web_search_20250305"}],{"type":"web_search_20250305","type":"mcp_toolset","max_uses":3,"max_uses":9}],"mcp_servers":"x"}`, "m", 1, 3628, 0, false, 2, false, ""},
		{AnthropicMessages, `{"model":"m","context_management":{"edits":{"a":{"type":"compact_1"}}},"mcp_servers":[{},{}]}`, "m", 1, 605, 0, false, 2, true, ""},
		{AnthropicMessages, `{"model":"m","context_management":[{"edits":[{"type":"compact_x"}]}]}`, "m", 1, 581, 0, false, 0, false, ""},
		{GoogleGemini, `{"contents":{"a":{"parts":{"p":{"inline_data":{"mime_type":"IMAGE/png"}}}}},"system_instruction":{"parts":[{"inlineData":{"mimeType":"image/x","mime_type":"image/y"}}]}}`, "", 1, 5640, 1, false, 0, false, ""},
		{GoogleGemini, `{"contents":[{"parts":[{"inlineData":{"mimeType":"image/png"},"inline_data":{}},{"inlineData":{"mimeType":"image/png"}}]},{"parts":[{"inlineData":{"mimeType":"image/png"}}],"parts":[]}]}`, "", 1, 10620, 2, false, 0, false, ""},
		{GoogleGemini, `{"generation_config":{"a":1,"a":2}}`, "", 0, 0, 0, false, 0, false, "meter: invalid request: the request body has the key \"generation_config.a\" more than once; send each key once"},
		{GoogleGemini, `{"generationConfig":{"candidateCount":5,"candidate_count":6}}`, "", 0, 0, 0, false, 0, false, "meter: invalid request: the request body sets both \"candidateCount\" and \"candidate_count\", two spellings of one field; send one"},
	}
	for _, tc := range tests {
		r, err := ParseRequest(tc.api, "application/json", []byte(tc.body))
		got := ""
		if err != nil {
			got = err.Error()
		}
		if got != tc.err || r.Model != tc.model || r.N != tc.n || r.InputTokens != tc.inputTokens || r.Images != tc.images ||
			r.IncludeUsage != tc.includeUsage || len(r.tools) != tc.tools || r.compaction != tc.compaction {
			t.Errorf("%s %s:\ngot  %+v, %v\nwant %+v", tc.api, tc.body, r, err, tc)
		}
	}
}
