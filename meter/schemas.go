package meter

import "strings"

// A schema is compiled from rules, each a path into a JSON document with
// what to capture there and into which slot of fields; the scanner
// (scan.go) follows it and skips everything else.

// action says what to do with the value at a schema node.
type action uint8

const (
	aNone    action = iota
	aInt            // a non-negative integer count → slot (ceil of a decimal)
	aMillis         // non-negative decimal seconds → milliseconds, rounded up → slot
	aStr            // a short string → string slot (its raw JSON text, escapes kept)
	aText           // the value's size in bytes → produced text (a string's bytes between its quotes)
	aCount          // an array → its number of elements → slot
	aPresent        // any value but null → slot = 1
)

// Number slots: the integer values a schema captures into fields.num.
const (
	slIn         = iota // input / prompt tokens as the provider counts them
	slOut               // output / completion tokens
	slCached            // cache-read input tokens
	slCacheWrite        // cache-write input tokens
	slMillis            // audio duration
	slChoices           // number of choices (openai.chat)
	slUsage             // a non-null usage object was present
	slData              // number of images in "data"
	slOutStart          // Anthropic message_start's provisional output count
	nSlots
)

// String slots.
const (
	ssType    = iota // event "type"
	ssSize           // image size
	ssQuality        // image quality
	nStrSlots
)

// node is one step of a schema path.
type node struct {
	key  string // key in the parent object ("" for the root and array elements)
	act  action
	slot uint8
	elem int16   // node for the elements of an array value, or -1
	kids []int16 // nodes for the keys of an object value
}

// schema is a compiled set of rules; nodes[0] is the document root.
type schema struct {
	nodes []node
}

// rule is one path of a schema: "usage.prompt_tokens",
// "choices[].delta.content". A segment ending in "[]" means the elements of
// the array at that key.
type rule struct {
	path string
	act  action
	slot uint8
}

// compile builds a schema. It panics on a malformed path: schemas are
// package constants, so that is a programming error caught by any test.
func compile(rules ...rule) *schema {
	s := &schema{nodes: []node{{elem: -1}}}
	for _, r := range rules {
		cur := int16(0)
		depth := 1
		for _, seg := range strings.Split(r.path, ".") {
			arr := strings.HasSuffix(seg, "[]")
			seg = strings.TrimSuffix(seg, "[]")
			if seg == "" {
				panic("meter: empty segment in schema path " + r.path)
			}
			cur = s.child(cur, seg)
			if arr {
				depth++
				if s.nodes[cur].elem < 0 {
					s.nodes = append(s.nodes, node{elem: -1})
					s.nodes[cur].elem = int16(len(s.nodes) - 1)
				}
				cur = s.nodes[cur].elem
			}
			depth++
		}
		if depth > maxTrack {
			panic("meter: schema path too deep: " + r.path)
		}
		s.nodes[cur].act = r.act
		s.nodes[cur].slot = r.slot
	}
	return s
}

func (s *schema) child(parent int16, key string) int16 {
	for _, k := range s.nodes[parent].kids {
		if s.nodes[k].key == key {
			return k
		}
	}
	s.nodes = append(s.nodes, node{key: key, elem: -1})
	id := int16(len(s.nodes) - 1)
	s.nodes[parent].kids = append(s.nodes[parent].kids, id)
	return id
}

// lookup returns the child of parent for key, or -1.
func (s *schema) lookup(parent int16, key []byte) int16 {
	for _, k := range s.nodes[parent].kids {
		if s.nodes[k].key == string(key) {
			return k
		}
	}
	return -1
}

// The schemas below name, per API and framing, the only values the
// extractors read from a response. Everything else is skipped unread.
// They are immutable after package initialisation.
//
// Wire formats, as documented by the providers:
//
//   - OpenAI chat completions: usage.prompt_tokens (cached tokens
//     included), usage.completion_tokens (reasoning included),
//     usage.prompt_tokens_details.cached_tokens and .cache_write_tokens.
//     Streams carry usage only when stream_options.include_usage is set,
//     in one extra chunk before "data: [DONE]" whose choices is [] (API
//     reference, "stream_options"). Text streams in choices[].delta.
//   - OpenAI Responses: response.usage.input_tokens (cached included),
//     .output_tokens (reasoning included), .input_tokens_details.
//     cached_tokens, in the response.completed, response.incomplete and
//     response.failed events, or usage at the top of a JSON body. Text
//     streams in the "delta" of the response.*.delta events.
//   - Anthropic Messages: usage.input_tokens EXCLUDES
//     cache_read_input_tokens and cache_creation_input_tokens.
//     message_start carries message.usage; message_delta carries usage
//     whose counts are cumulative (take the largest, never sum), and may
//     repeat the input and cache counts. Text streams in the delta of
//     content_block_delta events (text, partial_json, thinking).
//   - OpenAI embeddings: usage.prompt_tokens.
//   - OpenAI images: data[] (one element per image), usage.input_tokens,
//     .output_tokens (GPT image models only), and, in newer responses,
//     size and quality. Streams send image_generation.completed /
//     image_edit.completed events, each with one image and its usage.
//   - OpenAI audio: transcriptions report duration (verbose_json) and/or
//     usage {type: "duration", seconds} or {type: "tokens", input_tokens,
//     output_tokens}; streamed transcriptions end with
//     transcript.text.done carrying usage; streamed speech ends with
//     speech.audio.done carrying usage.

func openAIChatUsage(prefix string) []rule {
	return []rule{
		{prefix + "usage", aPresent, slUsage},
		{prefix + "usage.prompt_tokens", aInt, slIn},
		{prefix + "usage.completion_tokens", aInt, slOut},
		{prefix + "usage.prompt_tokens_details.cached_tokens", aInt, slCached},
		{prefix + "usage.prompt_tokens_details.cache_write_tokens", aInt, slCacheWrite},
	}
}

func openAIUsage(prefix string) []rule {
	return []rule{
		{prefix + "usage", aPresent, slUsage},
		{prefix + "usage.input_tokens", aInt, slIn},
		{prefix + "usage.output_tokens", aInt, slOut},
		{prefix + "usage.input_tokens_details.cached_tokens", aInt, slCached},
		{prefix + "usage.input_tokens_details.cache_write_tokens", aInt, slCacheWrite},
	}
}

func anthropicUsage(prefix string) []rule {
	out := uint8(slOut)
	if prefix == "message." {
		// message_start's output_tokens is a provisional count (1 or so)
		// of a message that has not been written yet; only message_delta
		// reports the output.
		out = slOutStart
	}
	return []rule{
		{prefix + "usage", aPresent, slUsage},
		{prefix + "usage.input_tokens", aInt, slIn},
		{prefix + "usage.output_tokens", aInt, out},
		{prefix + "usage.cache_read_input_tokens", aInt, slCached},
		{prefix + "usage.cache_creation_input_tokens", aInt, slCacheWrite},
	}
}

func join(parts ...[]rule) []rule {
	var all []rule
	for _, p := range parts {
		all = append(all, p...)
	}
	return all
}

// chatText lists where chat completions put produced text, for both the
// stream (delta) and the JSON body (message).
func chatText() []rule {
	var rs []rule
	for _, m := range []string{"delta", "message"} {
		p := "choices[]." + m + "."
		rs = append(rs,
			rule{p + "content", aText, 0},
			rule{p + "refusal", aText, 0},
			rule{p + "reasoning_content", aText, 0}, // OpenAI-compatible reasoning servers
			rule{p + "reasoning", aText, 0},
			rule{p + "tool_calls[].function.arguments", aText, 0},
			rule{p + "function_call.arguments", aText, 0},
			rule{p + "audio.transcript", aText, 0},
		)
	}
	return append(rs, rule{"choices[].text", aText, 0}) // legacy completions shape
}

var (
	chatSchema = compile(join(
		openAIChatUsage(""),
		[]rule{{"choices", aCount, slChoices}},
		chatText(),
	)...)

	responsesSSESchema = compile(join(
		[]rule{{"type", aStr, ssType}, {"delta", aText, 0}},
		openAIUsage("response."),
	)...)

	responsesJSONSchema = compile(join(
		openAIUsage(""),
		[]rule{
			{"output[].content[].text", aText, 0},
			{"output[].content[].refusal", aText, 0},
			{"output[].summary[].text", aText, 0},
			{"output[].arguments", aText, 0},
			{"output[].input", aText, 0},
			{"output[].code", aText, 0},
		},
	)...)

	anthropicSSESchema = compile(join(
		[]rule{
			{"type", aStr, ssType},
			{"delta.text", aText, 0},
			{"delta.partial_json", aText, 0},
			{"delta.thinking", aText, 0},
		},
		anthropicUsage("message."),
		anthropicUsage(""),
	)...)

	anthropicJSONSchema = compile(join(
		anthropicUsage(""),
		[]rule{
			{"content[].text", aText, 0},
			{"content[].thinking", aText, 0},
			{"content[].input", aText, 0},
		},
	)...)

	embeddingsSchema = compile(
		rule{"usage", aPresent, slUsage},
		rule{"usage.prompt_tokens", aInt, slIn},
	)

	imagesJSONSchema = compile(join(
		openAIUsage(""),
		[]rule{
			{"data", aCount, slData},
			{"size", aStr, ssSize},
			{"quality", aStr, ssQuality},
		},
	)...)

	imagesSSESchema = compile(join(
		openAIUsage(""),
		[]rule{
			{"type", aStr, ssType},
			{"size", aStr, ssSize},
			{"quality", aStr, ssQuality},
		},
	)...)

	audioJSONSchema = compile(
		rule{"duration", aMillis, slMillis},
		rule{"usage", aPresent, slUsage},
		rule{"usage.seconds", aMillis, slMillis},
		rule{"usage.input_tokens", aInt, slIn},
		rule{"usage.output_tokens", aInt, slOut},
		rule{"text", aText, 0},
	)

	audioSSESchema = compile(
		rule{"type", aStr, ssType},
		rule{"delta", aText, 0},
		rule{"usage", aPresent, slUsage},
		rule{"usage.seconds", aMillis, slMillis},
		rule{"usage.input_tokens", aInt, slIn},
		rule{"usage.output_tokens", aInt, slOut},
	)

	// flatSchema captures nothing: a flat route charges per request.
	flatSchema = compile()
)

// schemaFor returns the schema of api for SSE or JSON framing.
func schemaFor(api API, sse bool) *schema {
	switch api {
	case OpenAIChat:
		return chatSchema
	case OpenAIResponses:
		if sse {
			return responsesSSESchema
		}
		return responsesJSONSchema
	case AnthropicMessages:
		if sse {
			return anthropicSSESchema
		}
		return anthropicJSONSchema
	case OpenAIEmbeddings:
		return embeddingsSchema
	case OpenAIImages:
		if sse {
			return imagesSSESchema
		}
		return imagesJSONSchema
	case OpenAIAudio:
		if sse {
			return audioSSESchema
		}
		return audioJSONSchema
	}
	return flatSchema
}
