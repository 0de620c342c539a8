package meter

import (
	"bytes"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
	"unsafe"

	"github.com/tidwall/gjson"
)

// Request is what tollgate reads from a client's request body before
// forwarding it: enough to price it. ParseRequest builds it; the zero
// value is not useful.
type Request struct {
	API   API
	Model string // "" when the body names none (Prices.Lookup then needs "*")

	// Stream is true for "stream": true.
	Stream bool
	// IncludeUsage is true when an openai.chat stream asked for
	// stream_options.include_usage itself. When false, Rewrite forces it
	// and the Tap removes the usage chunk from what the client sees.
	IncludeUsage bool
	// LeaveStreamUsage is set by the caller, before Rewrite and NewTap,
	// for a route whose upstream rejects stream_options (an
	// OpenAI-compatible server): Rewrite then leaves stream_options as
	// the client sent them and the Tap removes nothing, so the stream is
	// charged by whatever usage it reports, or else estimated from its
	// text (Usage.Estimated).
	LeaveStreamUsage bool

	// MaxOutputTokens is the largest output cap the request sets in its
	// API's own fields (openai.chat: max_completion_tokens, max_tokens;
	// openai.responses: max_output_tokens; anthropic.messages:
	// max_tokens; google.gemini: generationConfig.maxOutputTokens), or 0.
	// Other APIs have no such field.
	MaxOutputTokens int64
	// N is the number of choices or images asked for ("n"; google.gemini:
	// generationConfig.candidateCount), at least 1.
	N int64

	// ImageSize and ImageQuality are the request's "size" and "quality"
	// (openai.images), possibly "auto" or empty.
	ImageSize    string
	ImageQuality string

	// InputTokens is the upper bound on input tokens used for the
	// reservation. The rule:
	//
	//	body bytes − bytes of prompt images + ImageTokenCeiling per prompt image
	//	+ max(0, ToolTokenFloor − bytes) per entry of "tools"
	//	+ RequestOverheadTokens
	//
	// Why bytes bound tokens: OpenAI's and Anthropic's tokenizers are
	// byte-level BPE, where every token stands for at least one byte of
	// UTF-8 text, so a text has at most as many tokens as bytes. The JSON
	// body spells every prompt character at least once, and escapes (\n,
	// \u00e9) only add bytes; the JSON syntax around each message (at
	// least 25 bytes for {"role":"user","content":""}) outweighs the few
	// tokens the chat format adds per message. Images are the exception
	// both ways (a base64 image is far more bytes than tokens, an image
	// URL far fewer), so each image part (image_url, input_image, image,
	// computer_screenshot, image_generation_call) counts ImageTokenCeiling
	// instead of its bytes.
	//
	// What the body cannot bound: context held upstream
	// (previous_response_id, conversation, stored prompts, file_id
	// references) and what built-in tools fetch (web and file search
	// results). Settlement charges the provider's count, so an
	// under-reservation there can take a balance below zero once, and the
	// next reservation is refused.
	//
	// For multipart bodies (audio transcriptions, image edits) the text
	// fields count by their bytes and each file as an image
	// (ImageTokenCeiling) or as audio (AudioTokensPerMinute × its
	// estimated duration).
	InputTokens int64
	// Images counts the images in the prompt (counted in InputTokens).
	Images int64
	// AudioMillis is the estimated duration of the audio (openai.audio):
	// for an upload, the duration its WAV, FLAC or MP3 header states, or
	// else its size at AudioBytesPerSecond; for speech, the input at
	// SpeechCharsPerMinute / speed.
	AudioMillis int64

	// serviceTier, speed and inferenceGeo are the request's own
	// "service_tier", "speed" and "inference_geo", "" when absent: they
	// decide which price variants the response may be billed at.
	serviceTier, speed, inferenceGeo string
	// tools are the server-side tools the request offers the model,
	// whose calls Estimate holds for (see ServerTools).
	tools []serverTool
	// maxToolCalls is an openai.responses "max_tool_calls": at most this
	// many built-in tool calls in all, or 0.
	maxToolCalls int64
	// cache1h is set when the body may write to Anthropic's 1-hour
	// cache: it holds the string "1h" (cache_control's "ttl": "1h", or
	// an advisor's caching). Without it, no token is a 1-hour write.
	cache1h bool
	// compaction is set when an anthropic.messages request lets the API
	// compact its context (context_management.edits[].type compact_*),
	// which adds billed steps of its own.
	compaction bool

	estInput    int64 // typical input tokens, for a response without usage
	estText     int64 // the part of estInput from a multipart body's text fields
	audioTokens int64 // AudioMillis as audio tokens
	// audioMinMillis is the least duration an upload of its size can have.
	audioMinMillis int64
	speech         bool // openai.audio text-to-speech (JSON) rather than a transcription
	// partialImages is an image stream's "partial_images" (0 to 3): each
	// partial image is billed as ImagePartialTokens more output tokens.
	partialImages int64
	// capPath is a google.gemini body's output cap field, in the
	// spelling the body uses (see parseGemini):
	// "generationConfig.maxOutputTokens" unless it spells it otherwise.
	capPath string
}

// imagePartTypes are the "type" values of prompt parts that carry an image.
var imagePartTypes = map[string]bool{
	"image_url":             true, // OpenAI chat
	"input_image":           true, // OpenAI Responses
	"image":                 true, // Anthropic
	"computer_screenshot":   true, // OpenAI Responses computer use
	"image_generation_call": true, // OpenAI Responses, a generated image passed back
}

// ParseRequest reads what pricing needs from a request body for api,
// without copying or keeping body.
//
// JSON APIs need a JSON object; openai.audio takes multipart/form-data for
// transcriptions and translations (the model is a form field, the file
// only counts by size) and JSON for speech; openai.images takes JSON for
// generations and multipart for edits and variations; flat needs no body
// (any content type, possibly empty) and reads "model" when the body
// happens to be JSON.
//
// Errors match ErrInvalidRequest (*RequestError, whose Reason is for the
// client): a body that is not valid JSON or not an object, a JSON body
// that nests arrays and objects more than MaxJSONDepth deep (on flat
// routes too, where a body counts as JSON when its bytes begin a valid
// JSON document deeper than the limit, whatever its Content-Type: the
// provider may parse it regardless; a body that is not JSON, such as a
// file upload, is never refused for its brackets), a malformed
// multipart form, a "model" that is not a string, an "n" that is not an
// integer from 1 to MaxN, an openai.responses "background": true (its
// usage never passes through tollgate), a key that appears twice in the
// JSON object or in its "stream_options" (for flat: "model" twice), and a
// multipart "model", "stream", "size", "quality" or "n" sent twice.
// Duplicates are refused because decoders disagree on which one wins
// (gjson the first, the providers' the last), so tollgate could price one
// model while the provider runs another. Fields that only lower the estimate ("stream",
// the output caps) are read leniently: a cap of the wrong type is ignored,
// so the route's cap applies.
func ParseRequest(api API, contentType string, body []byte) (Request, error) {
	r := Request{API: api, N: 1}
	if !api.Valid() {
		return r, fmt.Errorf("meter: unknown api %q", api)
	}
	if api == Flat {
		if len(body) == 0 {
			return r, nil
		}
		switch v, _ := checkJSON(body); v {
		case jsonTooDeep:
			// JSON by its first bytes, whatever its Content-Type says
			// (the provider may parse it regardless), and too deep.
			return Request{}, errTooDeep()
		case jsonValid:
			root := gjson.Parse(unsafeString(body))
			if root.IsObject() && countKey(root, "model") > 1 {
				return Request{}, duplicateKeyError("model")
			}
			if m := root.Get("model"); m.Type == gjson.String {
				r.Model = strings.Clone(m.String())
			}
		}
		return r, nil
	}
	if (api == OpenAIAudio || api == OpenAIImages) && isMultipart(contentType) {
		if err := r.parseMultipart(contentType, body); err != nil {
			return Request{}, err
		}
		return r, nil
	}
	if err := r.parseJSON(body); err != nil {
		return Request{}, err
	}
	return r, nil
}

// unsafeString views b as a string without copying. The request parsers
// use it so that gjson does not copy a body of many megabytes; every
// string kept from it is cloned, and b is not modified meanwhile.
func unsafeString(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(unsafe.SliceData(b), len(b))
}

func (r *Request) parseJSON(body []byte) error {
	// checkJSON before anything else reads the body: gjson's own
	// validation recurses once per level of nesting.
	switch v, _ := checkJSON(body); v {
	case jsonTooDeep:
		return errTooDeep()
	case jsonInvalid:
		return invalidf("the request body is not valid JSON")
	}
	root := gjson.Parse(unsafeString(body))
	if !root.IsObject() {
		return invalidf("the request body must be a JSON object")
	}
	// gjson reads the first of duplicate keys, the provider's decoder
	// (Python's json, like Go's and JavaScript's) the last: refuse what
	// the two would read differently, such as a cheap "model" followed by
	// a dear one, or a "stream_options" that stops the usage chunk.
	if k, dup := duplicateKey(root); dup {
		return duplicateKeyError(k)
	}
	if so := root.Get("stream_options"); so.IsObject() {
		if k, dup := duplicateKey(so); dup {
			return duplicateKeyError("stream_options." + k)
		}
	}
	switch m := root.Get("model"); m.Type {
	case gjson.String:
		r.Model = strings.Clone(m.String())
	case gjson.Null:
	default:
		return invalidf(`"model" must be a string, not %s`, m.Raw)
	}
	if r.API == GoogleGemini {
		return r.parseGemini(root, body)
	}
	r.Stream = root.Get("stream").Type == gjson.True
	if r.API == OpenAIResponses && root.Get("background").Type == gjson.True {
		// Background mode answers {"status":"queued","usage":null} at
		// once and runs the model afterwards; its usage only ever
		// reaches a later GET, so the output would go uncharged (OpenAI
		// "Background mode" guide).
		return invalidf(`"background": true is not supported through tollgate: the response is generated after this request ends, so its usage cannot be metered; send the request without "background"`)
	}
	for _, k := range capFields(r.API) {
		if v := root.Get(k); v.Type == gjson.Number && v.Num > 0 {
			r.MaxOutputTokens = max(r.MaxOutputTokens, capInt(v))
		}
	}
	if r.API == OpenAIChat || r.API == OpenAIImages {
		n, err := parseN(root.Get("n"))
		if err != nil {
			return err
		}
		r.N = n
	}
	if r.API == OpenAIChat && r.Stream {
		r.IncludeUsage = root.Get("stream_options.include_usage").Type == gjson.True
	}
	if r.API == OpenAIImages {
		if v := root.Get("size"); v.Type == gjson.String {
			r.ImageSize = strings.Clone(v.String())
		}
		if v := root.Get("quality"); v.Type == gjson.String {
			r.ImageQuality = strings.Clone(v.String())
		}
		if v := root.Get("partial_images"); v.Type == gjson.Number {
			r.partialImages = clampPartials(v.Num)
		}
	}

	if r.API == OpenAIAudio {
		return r.parseSpeech(root)
	}
	r.parseVariants(root)
	r.parseServerTools(root)
	r.cache1h = r.API == AnthropicMessages && bytes.Contains(body, []byte(`"1h"`))

	tokens := int64(len(body)) + RequestOverheadTokens
	// Images in the prompt count by the ceiling, not their bytes.
	var images, imageBytes int64
	for _, k := range []string{"messages", "input", "system"} {
		countImages(root.Get(k), 0, &images, &imageBytes)
	}
	if r.API == OpenAIImages {
		// JSON image edits: "images": [{"image_url": …} | {"file_id": …}], "mask": {…}.
		root.Get("images").ForEach(func(_, v gjson.Result) bool {
			images++
			imageBytes += int64(len(v.Raw))
			return true
		})
		if m := root.Get("mask"); m.IsObject() {
			images++
			imageBytes += int64(len(m.Raw))
		}
	}
	tokens += images*ImageTokenCeiling - imageBytes
	for _, k := range []string{"tools", "functions"} {
		root.Get(k).ForEach(func(_, v gjson.Result) bool {
			tokens += max(0, ToolTokenFloor-int64(len(v.Raw)))
			return true
		})
	}
	r.Images = images
	r.InputTokens = tokens
	r.estInput = ceilDiv(tokens-RequestOverheadTokens, BytesPerToken)
	return nil
}

// duplicateKey returns a key that the JSON object obj holds more than
// once, compared after unescaping, as every JSON decoder compares them.
func duplicateKey(obj gjson.Result) (string, bool) {
	var keys []string
	obj.ForEach(func(k, _ gjson.Result) bool {
		keys = append(keys, k.Str)
		return true
	})
	slices.Sort(keys)
	for i := 1; i < len(keys); i++ {
		if keys[i] == keys[i-1] {
			return keys[i], true
		}
	}
	return "", false
}

// countKey counts the keys of the JSON object obj equal to key.
func countKey(obj gjson.Result, key string) int {
	n := 0
	obj.ForEach(func(k, _ gjson.Result) bool {
		if k.Str == key {
			n++
		}
		return true
	})
	return n
}

func errTooDeep() error {
	return invalidf("the request body nests JSON arrays and objects more than %d levels deep, tollgate's limit; send a shallower body", MaxJSONDepth)
}

func duplicateKeyError(key string) error {
	return invalidf("the request body has the key %q more than once; send each key once", key)
}

// countImages walks prompt content (to a bounded depth) and counts the
// parts that carry an image and the bytes they take in the body.
func countImages(v gjson.Result, depth int, n, size *int64) {
	if depth > 8 || !(v.IsArray() || v.IsObject()) {
		return
	}
	if v.IsObject() {
		if t := v.Get("type"); t.Type == gjson.String && imagePartTypes[t.Str] {
			*n++
			*size += int64(len(v.Raw))
			return
		}
	}
	v.ForEach(func(_, c gjson.Result) bool {
		countImages(c, depth+1, n, size)
		return true
	})
}

// parseSpeech reads a text-to-speech body: {"model", "input", "voice",
// "instructions", "speed", "stream_format"}.
func (r *Request) parseSpeech(root gjson.Result) error {
	r.speech = true
	input := root.Get("input").String()
	instructions := root.Get("instructions").String()
	chars := int64(utf8.RuneCountInString(input) + utf8.RuneCountInString(instructions))
	speed := int64(1000) // thousandths
	if v := root.Get("speed"); v.Type == gjson.Number {
		if ms, ok := parseMillis([]byte(v.Raw)); ok {
			speed = min(max(ms, 250), 4000) // OpenAI accepts 0.25 to 4.0
		}
	}
	// Duration: chars / SpeechCharsPerMinute minutes at speed 1.0.
	r.AudioMillis = ceilDiv(int64(utf8.RuneCountInString(input))*60_000*1000, SpeechCharsPerMinute*speed)
	r.audioTokens = ceilDiv(r.AudioMillis*AudioTokensPerMinute, 60_000)
	// tts-1 bills characters, gpt-4o-mini-tts tokens; bytes bound both.
	r.InputTokens = int64(len(input)+len(instructions)) + RequestOverheadTokens
	r.estInput = chars
	return nil
}

// clampPartials reads "partial_images" within OpenAI's range, 0 to 3.
func clampPartials(f float64) int64 {
	if !(f > 0) {
		return 0
	}
	return int64(min(math.Ceil(f), 3))
}

// parseN reads "n": absent or null is 1; otherwise an integer from 1 to MaxN.
func parseN(v gjson.Result) (int64, error) {
	if !v.Exists() || v.Type == gjson.Null {
		return 1, nil
	}
	if v.Type != gjson.Number || math.IsNaN(v.Num) || v.Num != math.Trunc(v.Num) || v.Num < 1 || v.Num > MaxN {
		return 0, invalidf(`"n" must be an integer from 1 to %d, not %s`, MaxN, v.Raw)
	}
	return int64(v.Num), nil
}

// capInt reads a positive output cap, saturating at math.MaxInt64.
func capInt(v gjson.Result) int64 {
	if v.Num >= math.MaxInt64 {
		return math.MaxInt64
	}
	if n, err := strconv.ParseInt(v.Raw, 10, 64); err == nil {
		return n
	}
	return int64(math.Ceil(v.Num))
}
