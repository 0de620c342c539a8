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
	aItem           // an object that is one element of a list: its end adds it up (slot: the item kind)
	aItemInt        // a non-negative integer count → item slot
	aItemStr        // a short string → item string slot
)

// Number slots: the integer values a schema captures into fields.num.
const (
	slIn           = iota // input / prompt tokens as the provider counts them
	slOut                 // output / completion tokens
	slCached              // cache-read input tokens
	slCacheWrite          // cache-write input tokens
	slMillis              // audio duration
	slChoices             // number of choices (openai.chat)
	slUsage               // a non-null usage object was present
	slData                // number of images in "data"
	slOutStart            // Anthropic message_start's provisional output count
	slCacheWrite1h        // Anthropic cache writes with the 1-hour lifetime
	slCacheWrite5m        // Anthropic cache writes with the 5-minute lifetime
	slAudioIn             // audio input tokens
	slImageIn             // image input tokens
	slAudioOut            // audio output tokens
	slImageOut            // image output tokens
	slOutDetails          // a non-null output_tokens_details was present (GPT image models)
	slWebSearch           // Anthropic server_tool_use.web_search_requests
	slWebFetch            // Anthropic server_tool_use.web_fetch_requests
	slContainer           // Anthropic's response ran in a code execution container
	slThoughts            // Gemini usageMetadata.thoughtsTokenCount, output beside candidatesTokenCount
	slToolPrompt          // Gemini usageMetadata.toolUsePromptTokenCount, input beside promptTokenCount
	slFinish              // Gemini: a candidate's finishReason or a promptFeedback.blockReason, so the answer ended
	nSlots
)

// String slots.
const (
	ssType        = iota // event "type"
	ssSize               // image size
	ssQuality            // image quality
	ssServiceTier        // the service tier that served the request
	ssSpeed              // Anthropic's usage.speed
	ssGeo                // Anthropic's usage.inference_geo
	nStrSlots
)

// Item kinds: the lists read element by element (aItem).
const (
	itemIteration   = iota // an Anthropic usage.iterations entry
	itemOutput             // an OpenAI Responses output item
	itemModalityIn         // a Gemini usageMetadata.promptTokensDetails entry
	itemModalityOut        // a Gemini usageMetadata.candidatesTokensDetails entry
)

// Item slots.
const (
	itIn      = iota // input_tokens (Anthropic: without the cache counts)
	itOut            // output_tokens
	itCached         // cache_read_input_tokens
	itWrite          // cache_creation_input_tokens
	itWrite1h        // cache_creation.ephemeral_1h_input_tokens
	itWrite5m        // cache_creation.ephemeral_5m_input_tokens
	nItemSlots
)

// Item string slots.
const (
	isType      = iota // "type"
	isModel            // "model"
	isContainer        // "container_id"
	nItemStrSlots
)

// node is one step of a schema path.
type node struct {
	key  string // key in the parent object ("" for the root and array elements)
	act  action
	slot uint8
	elem int16   // node for the elements of an array value, or -1
	kids []int16 // nodes for the keys of an object value
	// kidBits has keyBit(k) set for the key k of every kid: a key whose
	// bit is clear names none, and lookup says so without comparing.
	kidBits uint64
}

// keyBit is key's bit in a node's kidBits: one of 64 chosen by its
// length and its first and last bytes, which tell apart nearly all keys
// of one object. key is not empty.
func keyBit[K string | []byte](key K) uint64 {
	return 1 << ((uint(len(key))*31 + uint(key[0])*7 + uint(key[len(key)-1])) & 63)
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
	s.nodes[parent].kidBits |= keyBit(key)
	return id
}

// lookup returns the child of parent for key, or -1.
func (s *schema) lookup(parent int16, key []byte) int16 {
	n := &s.nodes[parent]
	if len(key) == 0 || n.kidBits&keyBit(key) == 0 {
		return -1
	}
	for _, k := range n.kids {
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
//   - Anthropic, further: usage.cache_creation.ephemeral_1h_input_tokens
//     and ephemeral_5m_input_tokens split the cache writes by lifetime;
//     usage.server_tool_use.web_search_requests and web_fetch_requests
//     count server-tool calls; usage.service_tier, usage.speed and
//     usage.inference_geo say how the request was served; a non-null
//     "container" (message.container in message_start, delta.container
//     in message_delta) says it ran code in a container; and
//     usage.iterations[] lists the steps billed separately, each with
//     type, model and its own counts (the same exclusive input_tokens).
//     message_delta repeats the whole list, cumulative: the last one
//     read replaces the earlier, never merged.
//   - OpenAI-compatible chat servers put usage elsewhere: Groq in
//     x_groq.usage of the last chunk; vLLM (continuous_usage_stats),
//     Together and OpenRouter in a usage object of a chunk that still has
//     choices, or in every chunk with running totals. Every chunk is
//     read, so the largest report, the last, wins wherever it is.
//   - OpenAI chat, further: service_tier (the tier that served it, in
//     every chunk), usage.prompt_tokens_details.audio_tokens and
//     .image_tokens, usage.completion_tokens_details.audio_tokens.
//   - OpenAI Responses, further: service_tier; output[] items of type
//     web_search_call, file_search_call, code_interpreter_call (with
//     container_id) and image_generation_call, in the body, in the
//     terminal event's response.output, and one by one in
//     response.output_item.added events.
//   - OpenAI images, further: usage.input_tokens_details.image_tokens
//     and usage.output_tokens_details.image_tokens (gpt-image-1 reports
//     no output details: all its output is image tokens).
//   - OpenAI audio: transcriptions report duration (verbose_json) and/or
//     usage {type: "duration", seconds} or {type: "tokens", input_tokens,
//     output_tokens, input_token_details {audio_tokens, text_tokens}};
//     streamed transcriptions end with
//     transcript.text.done carrying usage; streamed speech ends with
//     speech.audio.done carrying usage.
//   - Gemini generateContent (a GenerateContentResponse: the body, each
//     SSE event of streamGenerateContent?alt=sse, or each element of the
//     JSON array it streams without alt=sse): usageMetadata.
//     promptTokenCount (cachedContentTokenCount included),
//     .candidatesTokenCount (thoughts excluded), .thoughtsTokenCount,
//     .cachedContentTokenCount and .toolUsePromptTokenCount (beside the
//     prompt count: Gemini's totalTokenCount is prompt + candidates +
//     tool-use prompt + thoughts), and .promptTokensDetails[] /
//     .candidatesTokensDetails[] {modality, tokenCount} splitting the
//     counts by TEXT, IMAGE, AUDIO, VIDEO and DOCUMENT. A stream repeats
//     usageMetadata with running totals (the largest, the last, wins;
//     a chunk without it changes nothing). Fields that are zero are
//     left out (proto3 JSON), so within a usageMetadata absent is 0.
//     Text streams in candidates[].content.parts[].text (thoughts too,
//     with "thought": true), function calls in .functionCall; the last
//     chunk of a candidate carries its finishReason, a refused prompt
//     promptFeedback.blockReason.

func openAIChatUsage(prefix string) []rule {
	return []rule{
		{prefix + "usage", aPresent, slUsage},
		{prefix + "usage.prompt_tokens", aInt, slIn},
		{prefix + "usage.completion_tokens", aInt, slOut},
		{prefix + "usage.prompt_tokens_details.cached_tokens", aInt, slCached},
		{prefix + "usage.prompt_tokens_details.cache_write_tokens", aInt, slCacheWrite},
		{prefix + "usage.prompt_tokens_details.audio_tokens", aInt, slAudioIn},
		{prefix + "usage.prompt_tokens_details.image_tokens", aInt, slImageIn},
		{prefix + "usage.completion_tokens_details.audio_tokens", aInt, slAudioOut},
		{prefix + "service_tier", aStr, ssServiceTier},
	}
}

// groqUsage reads the usage Groq puts in x_groq.usage of a stream's
// last chunk (Groq API reference, chat completion chunk), with the same
// fields as OpenAI's. It marks no usage chunk: that chunk has choices and
// reaches the client whatever the filter does.
func groqUsage() []rule {
	const p = "x_groq.usage."
	return []rule{
		{p + "prompt_tokens", aInt, slIn},
		{p + "completion_tokens", aInt, slOut},
		{p + "prompt_tokens_details.cached_tokens", aInt, slCached},
	}
}

func openAIUsage(prefix string) []rule {
	return []rule{
		{prefix + "usage", aPresent, slUsage},
		{prefix + "usage.input_tokens", aInt, slIn},
		{prefix + "usage.output_tokens", aInt, slOut},
		{prefix + "usage.input_tokens_details.cached_tokens", aInt, slCached},
		{prefix + "usage.input_tokens_details.cache_write_tokens", aInt, slCacheWrite},
		{prefix + "service_tier", aStr, ssServiceTier},
	}
}

// imagesUsage is openAIUsage plus the image parts GPT image models report.
func imagesUsage() []rule {
	return append(openAIUsage(""),
		rule{"usage.input_tokens_details.image_tokens", aInt, slImageIn},
		rule{"usage.output_tokens_details", aPresent, slOutDetails},
		rule{"usage.output_tokens_details.image_tokens", aInt, slImageOut},
	)
}

// responsesOutput reads the output items of a Responses body or terminal
// event (prefix "response."), for the built-in tools' calls.
func responsesOutput(prefix string) []rule {
	return []rule{
		{prefix + "output[]", aItem, itemOutput},
		{prefix + "output[].type", aItemStr, isType},
		{prefix + "output[].container_id", aItemStr, isContainer},
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
	it := prefix + "usage.iterations[]"
	return []rule{
		{prefix + "usage", aPresent, slUsage},
		{prefix + "usage.input_tokens", aInt, slIn},
		{prefix + "usage.output_tokens", aInt, out},
		{prefix + "usage.cache_read_input_tokens", aInt, slCached},
		{prefix + "usage.cache_creation_input_tokens", aInt, slCacheWrite},
		{prefix + "usage.cache_creation.ephemeral_1h_input_tokens", aInt, slCacheWrite1h},
		{prefix + "usage.cache_creation.ephemeral_5m_input_tokens", aInt, slCacheWrite5m},
		{prefix + "usage.server_tool_use.web_search_requests", aInt, slWebSearch},
		{prefix + "usage.server_tool_use.web_fetch_requests", aInt, slWebFetch},
		{prefix + "usage.service_tier", aStr, ssServiceTier},
		{prefix + "usage.speed", aStr, ssSpeed},
		{prefix + "usage.inference_geo", aStr, ssGeo},
		{it, aItem, itemIteration},
		{it + ".type", aItemStr, isType},
		{it + ".model", aItemStr, isModel},
		{it + ".input_tokens", aItemInt, itIn},
		{it + ".output_tokens", aItemInt, itOut},
		{it + ".cache_read_input_tokens", aItemInt, itCached},
		{it + ".cache_creation_input_tokens", aItemInt, itWrite},
		{it + ".cache_creation.ephemeral_1h_input_tokens", aItemInt, itWrite1h},
		{it + ".cache_creation.ephemeral_5m_input_tokens", aItemInt, itWrite5m},
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
		groqUsage(),
		[]rule{{"choices", aCount, slChoices}},
		chatText(),
	)...)

	responsesSSESchema = compile(join(
		[]rule{{"type", aStr, ssType}, {"delta", aText, 0}},
		openAIUsage("response."),
		responsesOutput("response."),
		[]rule{
			// response.output_item.added: one item.
			{"item", aItem, itemOutput},
			{"item.type", aItemStr, isType},
			{"item.container_id", aItemStr, isContainer},
		},
	)...)

	responsesJSONSchema = compile(join(
		openAIUsage(""),
		responsesOutput(""),
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
			{"message.container", aPresent, slContainer},
			{"delta.container", aPresent, slContainer},
		},
		anthropicUsage("message."),
		anthropicUsage(""),
	)...)

	anthropicJSONSchema = compile(join(
		anthropicUsage(""),
		[]rule{
			{"container", aPresent, slContainer},
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
		imagesUsage(),
		[]rule{
			{"data", aCount, slData},
			{"size", aStr, ssSize},
			{"quality", aStr, ssQuality},
		},
	)...)

	imagesSSESchema = compile(join(
		imagesUsage(),
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
		rule{"usage.input_token_details.audio_tokens", aInt, slAudioIn},
		rule{"text", aText, 0},
	)

	audioSSESchema = compile(
		rule{"type", aStr, ssType},
		rule{"delta", aText, 0},
		rule{"usage", aPresent, slUsage},
		rule{"usage.seconds", aMillis, slMillis},
		rule{"usage.input_tokens", aInt, slIn},
		rule{"usage.output_tokens", aInt, slOut},
		rule{"usage.input_token_details.audio_tokens", aInt, slAudioIn},
	)

	geminiSchema = compile(
		rule{"usageMetadata", aPresent, slUsage},
		rule{"usageMetadata.promptTokenCount", aInt, slIn},
		rule{"usageMetadata.candidatesTokenCount", aInt, slOut},
		rule{"usageMetadata.thoughtsTokenCount", aInt, slThoughts},
		rule{"usageMetadata.cachedContentTokenCount", aInt, slCached},
		rule{"usageMetadata.toolUsePromptTokenCount", aInt, slToolPrompt},
		rule{"usageMetadata.promptTokensDetails[]", aItem, itemModalityIn},
		rule{"usageMetadata.promptTokensDetails[].modality", aItemStr, isType},
		rule{"usageMetadata.promptTokensDetails[].tokenCount", aItemInt, itIn},
		rule{"usageMetadata.candidatesTokensDetails[]", aItem, itemModalityOut},
		rule{"usageMetadata.candidatesTokensDetails[].modality", aItemStr, isType},
		rule{"usageMetadata.candidatesTokensDetails[].tokenCount", aItemInt, itIn},
		rule{"candidates[].content.parts[].text", aText, 0},
		rule{"candidates[].content.parts[].functionCall", aText, 0},
		rule{"candidates[].content.parts[].executableCode.code", aText, 0},
		rule{"candidates[].finishReason", aPresent, slFinish},
		rule{"promptFeedback.blockReason", aPresent, slFinish},
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
	case GoogleGemini:
		return geminiSchema
	}
	return flatSchema
}
