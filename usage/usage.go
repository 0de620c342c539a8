// Package usage is the token counts of one request: the one definition
// that the meter fills from a provider's response and the ledger records
// with the charge it pays for, so that a new class of tokens is added in
// one place. Like money, it is a leaf: it knows nothing of prices, stores,
// HTTP or logging.
package usage

import (
	"fmt"
	"iter"
	"strings"
)

// Tokens counts the tokens of one request by class, and the calls of the
// provider-side tools it made, in the ledger's convention whatever the
// provider's:
//
//   - InputTokens counts every input token the provider counted: tokens
//     read from the prompt cache and tokens written to it included, audio
//     and image tokens included. OpenAI's prompt_tokens and input_tokens
//     already include them all; Anthropic's input_tokens excludes
//     cache_read_input_tokens and cache_creation_input_tokens, so the
//     meter adds them, once.
//   - CachedInputTokens and CacheWriteInputTokens are the parts of
//     InputTokens read from and written to the prompt cache;
//     CacheWrite1hInputTokens is the part of CacheWriteInputTokens
//     written with Anthropic's 1-hour lifetime (the rest lives 5
//     minutes).
//   - AudioInputTokens and ImageInputTokens are the parts of InputTokens
//     that are audio and images (OpenAI's prompt_tokens_details and
//     input_tokens_details), whether or not they were cached.
//   - OutputTokens includes reasoning (thinking) tokens, which both
//     providers already count inside their output figure;
//     AudioOutputTokens and ImageOutputTokens are its audio and image
//     parts (OpenAI's completion_tokens_details, gpt-image's
//     output_tokens_details; all of a speech response's output).
//   - The *Calls fields count the calls of the tools a provider bills per
//     call, one per Tool (see Tool for what each counts).
//
// The JSON names are those of ledger entries, in the admin API and as
// stored (DESIGN "Ledger"); a zero count is left out, so an entry written
// before a class existed reads as zero.
//
// To add a class, add its field here and list it in TokenCounts and
// TokenSummary; TestTokensListEveryField fails until both do. To add a
// tool, add it to Tool as well.
type Tokens struct {
	InputTokens             int64 `json:"input_tokens,omitempty"`
	CachedInputTokens       int64 `json:"cached_input_tokens,omitempty"`
	CacheWriteInputTokens   int64 `json:"cache_write_input_tokens,omitempty"`
	CacheWrite1hInputTokens int64 `json:"cache_write_1h_input_tokens,omitempty"`
	AudioInputTokens        int64 `json:"audio_input_tokens,omitempty"`
	ImageInputTokens        int64 `json:"image_input_tokens,omitempty"`
	OutputTokens            int64 `json:"output_tokens,omitempty"`
	AudioOutputTokens       int64 `json:"audio_output_tokens,omitempty"`
	ImageOutputTokens       int64 `json:"image_output_tokens,omitempty"`

	WebSearchCalls       int64 `json:"web_search_calls,omitempty"`
	WebFetchCalls        int64 `json:"web_fetch_calls,omitempty"`
	CodeExecutionCalls   int64 `json:"code_execution_calls,omitempty"`
	FileSearchCalls      int64 `json:"file_search_calls,omitempty"`
	CodeInterpreterCalls int64 `json:"code_interpreter_calls,omitempty"`
	ImageGenerationCalls int64 `json:"image_generation_calls,omitempty"`
}

// TokenCounts yields each class's JSON name and count, in field order,
// zeros included: for code that writes or checks every class by name (the
// ledger's entry writer and its validation, log fields).
func (t Tokens) TokenCounts() iter.Seq2[string, int64] {
	return func(yield func(string, int64) bool) {
		_ = yield("input_tokens", t.InputTokens) &&
			yield("cached_input_tokens", t.CachedInputTokens) &&
			yield("cache_write_input_tokens", t.CacheWriteInputTokens) &&
			yield("cache_write_1h_input_tokens", t.CacheWrite1hInputTokens) &&
			yield("audio_input_tokens", t.AudioInputTokens) &&
			yield("image_input_tokens", t.ImageInputTokens) &&
			yield("output_tokens", t.OutputTokens) &&
			yield("audio_output_tokens", t.AudioOutputTokens) &&
			yield("image_output_tokens", t.ImageOutputTokens) &&
			yield("web_search_calls", t.WebSearchCalls) &&
			yield("web_fetch_calls", t.WebFetchCalls) &&
			yield("code_execution_calls", t.CodeExecutionCalls) &&
			yield("file_search_calls", t.FileSearchCalls) &&
			yield("code_interpreter_calls", t.CodeInterpreterCalls) &&
			yield("image_generation_calls", t.ImageGenerationCalls)
	}
}

// TokenSummary describes t in one line for people, as `tollgate ledger`
// prints a charge: "1200 in (1000 cached, 3 cache write), 300 out". Input
// and output are always shown; their parts and the tool calls only when
// not zero, e.g. "1200 in (300 cache write, 100 of them 1h, 50 audio),
// 300 out (20 audio), calls: 3 web_search, 1 web_fetch".
func (t Tokens) TokenSummary() string {
	var b strings.Builder
	part := func(whole string, n int64, parts ...any) {
		fmt.Fprintf(&b, "%d %s", n, whole)
		var sub []string
		for i := 0; i+1 < len(parts); i += 2 {
			if v := parts[i].(int64); v > 0 {
				sub = append(sub, fmt.Sprintf("%d %s", v, parts[i+1]))
			}
		}
		if len(sub) > 0 {
			b.WriteString(" (" + strings.Join(sub, ", ") + ")")
		}
	}
	part("in", t.InputTokens,
		t.CachedInputTokens, "cached",
		t.CacheWriteInputTokens, "cache write",
		t.CacheWrite1hInputTokens, "of them 1h",
		t.AudioInputTokens, "audio",
		t.ImageInputTokens, "image")
	b.WriteString(", ")
	part("out", t.OutputTokens,
		t.AudioOutputTokens, "audio",
		t.ImageOutputTokens, "image")
	var calls []string
	for tool := range Tool(NumTools) {
		if n := t.Calls(tool); n > 0 {
			calls = append(calls, fmt.Sprintf("%d %s", n, tool))
		}
	}
	if len(calls) > 0 {
		b.WriteString(", calls: " + strings.Join(calls, ", "))
	}
	return b.String()
}

// Tool names a provider-side tool that providers bill per call, on top of
// the tokens its results add to the input. Its String is the tool's key in
// a price's tools map and, with "_calls", its count's JSON name.
type Tool uint8

// The tools billed per call. What one call is:
const (
	// WebSearch: one search. Anthropic's
	// usage.server_tool_use.web_search_requests; one web_search_call
	// output item of OpenAI Responses; one chat completion of an OpenAI
	// search model (gpt-4o-search-preview and the like search once per
	// request).
	WebSearch Tool = iota
	// WebFetch: one page fetched, Anthropic's
	// usage.server_tool_use.web_fetch_requests.
	WebFetch
	// CodeExecution: one response of Anthropic's that ran code in a
	// container (its "container" is set); Anthropic bills container time
	// with a 5-minute minimum.
	CodeExecution
	// FileSearch: one file_search_call output item of OpenAI Responses.
	FileSearch
	// CodeInterpreter: one container an OpenAI Responses response ran
	// code_interpreter_call items in (OpenAI bills per container).
	CodeInterpreter
	// ImageGeneration: one image_generation_call output item of OpenAI
	// Responses.
	ImageGeneration
	// NumTools is the number of tools, not a tool.
	NumTools
)

var toolNames = [NumTools]string{"web_search", "web_fetch", "code_execution", "file_search", "code_interpreter", "image_generation"}

// String returns the tool's name, e.g. "web_search".
func (t Tool) String() string {
	if t < NumTools {
		return toolNames[t]
	}
	return fmt.Sprintf("Tool(%d)", uint8(t))
}

// ParseTool returns the tool named name, and false if there is none.
func ParseTool(name string) (Tool, bool) {
	for i, n := range toolNames {
		if n == name {
			return Tool(i), true
		}
	}
	return 0, false
}

// ToolNames lists the tools' names in Tool order.
func ToolNames() []string { return toolNames[:] }

// calls returns the field that counts tool's calls, or nil.
func (t *Tokens) calls(tool Tool) *int64 {
	switch tool {
	case WebSearch:
		return &t.WebSearchCalls
	case WebFetch:
		return &t.WebFetchCalls
	case CodeExecution:
		return &t.CodeExecutionCalls
	case FileSearch:
		return &t.FileSearchCalls
	case CodeInterpreter:
		return &t.CodeInterpreterCalls
	case ImageGeneration:
		return &t.ImageGenerationCalls
	}
	return nil
}

// Calls returns the number of calls of tool.
func (t Tokens) Calls(tool Tool) int64 {
	if p := t.calls(tool); p != nil {
		return *p
	}
	return 0
}

// SetCalls sets the number of calls of tool; an unknown tool is ignored.
func (t *Tokens) SetCalls(tool Tool, n int64) {
	if p := t.calls(tool); p != nil {
		*p = n
	}
}
