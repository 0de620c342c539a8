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
	// capsMax is the largest output cap the body sets (capFields) when
	// every one it sets is a positive number, and 0 when it sets none or
	// one that is not (see capsStand). Unlike MaxOutputTokens, which a
	// caller may change, it is what the body says.
	capsMax int64
	// noCaps is true when a JSON body of an API whose cap fields are
	// top-level keys (capFieldIndexes; google.gemini's is nested and
	// parsed apart) sets none of them: Rewrite then adds the one it sets
	// at the object's end without reading the body again.
	noCaps bool
	// noStreamOptions is true when an openai.chat body has no
	// "stream_options" member: Rewrite then adds the one it forces at the
	// object's end without reading the body again.
	noStreamOptions bool
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

// The top-level fields parseJSON reads, as indexes into bodyFields.
const (
	fModel = iota
	fStream
	fStreamOptions
	fBackground
	fN
	fMaxTokens
	fMaxCompletionTokens
	fMaxOutputTokens
	fSize
	fQuality
	fPartialImages
	fServiceTier
	fSpeed
	fInferenceGeo
	fTools
	fFunctions
	fMessages
	fInput
	fSystem
	fImages
	fMask
	fContextManagement
	fMCPServers
	fMaxToolCalls
	fInstructions
	fContents
	fGenerationConfig
	fGenerationConfigSnake
	fSystemInstruction
	fSystemInstructionSnake
	nFields
)

// topField returns the index of a top-level key parseJSON reads, or -1.
func topField(key string) int {
	switch key {
	case "model":
		return fModel
	case "stream":
		return fStream
	case "stream_options":
		return fStreamOptions
	case "background":
		return fBackground
	case "n":
		return fN
	case "max_tokens":
		return fMaxTokens
	case "max_completion_tokens":
		return fMaxCompletionTokens
	case "max_output_tokens":
		return fMaxOutputTokens
	case "size":
		return fSize
	case "quality":
		return fQuality
	case "partial_images":
		return fPartialImages
	case "service_tier":
		return fServiceTier
	case "speed":
		return fSpeed
	case "inference_geo":
		return fInferenceGeo
	case "tools":
		return fTools
	case "functions":
		return fFunctions
	case "messages":
		return fMessages
	case "input":
		return fInput
	case "system":
		return fSystem
	case "images":
		return fImages
	case "mask":
		return fMask
	case "context_management":
		return fContextManagement
	case "mcp_servers":
		return fMCPServers
	case "max_tool_calls":
		return fMaxToolCalls
	case "instructions":
		return fInstructions
	case "contents":
		return fContents
	case "generationConfig":
		return fGenerationConfig
	case "generation_config":
		return fGenerationConfigSnake
	case "systemInstruction":
		return fSystemInstruction
	case "system_instruction":
		return fSystemInstructionSnake
	}
	return -1
}

// bodyFields holds the raw values of the top-level fields parseJSON
// reads, "" for an absent one, from one walk of the body's object.
type bodyFields [nFields]string

// get returns field f as gjson reads it (Exists false when absent).
func (b *bodyFields) get(f int) gjson.Result { return gjson.Parse(b[f]) }

func (r *Request) parseJSON(body []byte) error {
	// checkJSON before anything else reads the body: gjson's own
	// validation recurses once per level of nesting.
	switch v, _ := checkJSON(body); v {
	case jsonTooDeep:
		return errTooDeep()
	case jsonInvalid:
		return invalidf("the request body is not valid JSON")
	}
	raw := unsafeString(body)
	raw = raw[skipSpaceString(raw, 0):]
	if !isObject(raw) {
		return invalidf("the request body must be a JSON object")
	}
	// One walk of the object reads every field and its keys, and counts
	// the images in the prompt fields as it crosses them (the bulk of a
	// large body), for the estimate below.
	var fs bodyFields
	var keyBuf [32]string
	keys := keyBuf[:0]
	var images, imageBytes int64
	for it := iterate(raw); ; {
		k, at, ok := it.nextAt()
		if !ok {
			break
		}
		keys = append(keys, k)
		f := topField(k)
		switch {
		case f < 0 || fs[f] != "":
			it.i = skipRawValue(raw, at)
			continue
		case f == fMessages, f == fInput, f == fSystem:
			it.i = imagesAt(raw, at, 0, &images, &imageBytes)
		default:
			it.i = skipRawValue(raw, at)
		}
		fs[f] = raw[at:it.i]
	}
	// gjson reads the first of duplicate keys, the provider's decoder
	// (Python's json, like Go's and JavaScript's) the last: refuse what
	// the two would read differently, such as a cheap "model" followed by
	// a dear one, or a "stream_options" that stops the usage chunk.
	if k, dup := duplicateKey(keys); dup {
		return duplicateKeyError(k)
	}
	includeUsage := false
	if so := fs[fStreamOptions]; isObject(so) {
		keys = keys[:0]
		seen := false
		for it := iterate(so); ; {
			k, v, ok := it.next()
			if !ok {
				break
			}
			keys = append(keys, k)
			if k == "include_usage" && !seen {
				seen = true
				includeUsage = v == "true"
			}
		}
		if k, dup := duplicateKey(keys); dup {
			return duplicateKeyError("stream_options." + k)
		}
	}
	switch m := fs.get(fModel); m.Type {
	case gjson.String:
		r.Model = strings.Clone(m.String())
	case gjson.Null:
	default:
		return invalidf(`"model" must be a string, not %s`, m.Raw)
	}
	if r.API == GoogleGemini {
		return r.parseGemini(&fs, body)
	}
	r.Stream = fs[fStream] == "true"
	if r.API == OpenAIResponses && fs[fBackground] == "true" {
		// Background mode answers {"status":"queued","usage":null} at
		// once and runs the model afterwards; its usage only ever
		// reaches a later GET, so the output would go uncharged (OpenAI
		// "Background mode" guide).
		return invalidf(`"background": true is not supported through tollgate: the response is generated after this request ends, so its usage cannot be metered; send the request without "background"`)
	}
	positive, none := true, true
	for _, f := range capFieldIndexes(r.API) {
		switch v := fs.get(f); {
		case v.Type == gjson.Number && v.Num > 0:
			r.MaxOutputTokens = max(r.MaxOutputTokens, capInt(v))
			none = false
		case v.Exists():
			positive, none = false, false
		}
	}
	if positive {
		r.capsMax = r.MaxOutputTokens
	}
	r.noCaps = none
	if r.API == OpenAIChat || r.API == OpenAIImages {
		n, err := parseN(fs.get(fN))
		if err != nil {
			return err
		}
		r.N = n
	}
	if r.API == OpenAIChat && r.Stream {
		r.IncludeUsage = includeUsage
		r.noStreamOptions = fs[fStreamOptions] == ""
	}
	if r.API == OpenAIImages {
		if v, ok := jsonStr(fs[fSize]); ok {
			r.ImageSize = strings.Clone(v)
		}
		if v, ok := jsonStr(fs[fQuality]); ok {
			r.ImageQuality = strings.Clone(v)
		}
		if v := fs.get(fPartialImages); v.Type == gjson.Number {
			r.partialImages = clampPartials(v.Num)
		}
	}

	if r.API == OpenAIAudio {
		return r.parseSpeech(&fs)
	}
	r.parseVariants(&fs)
	r.parseServerTools(&fs)
	r.cache1h = r.API == AnthropicMessages && bytes.Contains(body, []byte(`"1h"`))

	tokens := int64(len(body)) + RequestOverheadTokens
	// Images in the prompt ("messages", "input", "system"; counted in
	// the walk) count by the ceiling, not their bytes.
	if r.API == OpenAIImages {
		// JSON image edits: "images": [{"image_url": …} | {"file_id": …}], "mask": {…}.
		for it := iterate(fs[fImages]); ; {
			_, v, ok := it.next()
			if !ok {
				break
			}
			images++
			imageBytes += int64(len(v))
		}
		if m := fs[fMask]; isObject(m) {
			images++
			imageBytes += int64(len(m))
		}
	}
	tokens += images*ImageTokenCeiling - imageBytes
	tokens += toolFloors(fs[fTools]) + toolFloors(fs[fFunctions])
	r.Images = images
	r.InputTokens = tokens
	r.estInput = ceilDiv(tokens-RequestOverheadTokens, BytesPerToken)
	return nil
}

// capFieldIndexes returns the bodyFields of capFields(api), outside
// google.gemini (whose cap parseGemini reads).
func capFieldIndexes(api API) []int {
	switch api {
	case OpenAIChat:
		return []int{fMaxCompletionTokens, fMaxTokens}
	case OpenAIResponses:
		return []int{fMaxOutputTokens}
	case AnthropicMessages:
		return []int{fMaxTokens}
	}
	return nil
}

// toolFloors returns what the entries of a "tools" (or "functions")
// value add to the input estimate beyond their bytes: ToolTokenFloor
// less the bytes of each.
func toolFloors(tools string) int64 {
	var tokens int64
	for it := iterate(tools); ; {
		_, v, ok := it.next()
		if !ok {
			return tokens
		}
		tokens += max(0, ToolTokenFloor-int64(len(v)))
	}
}

// duplicateKey returns a key that appears more than once in keys, the
// keys of a JSON object unescaped (as every JSON decoder compares them):
// the least in sort order. It sorts keys.
func duplicateKey(keys []string) (string, bool) {
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

// imagesAt walks the prompt content at s[i], valid JSON (to a bounded
// depth), and counts the parts that carry an image and the bytes they
// take in the body: the objects whose first "type" is one of
// imagePartTypes. It crosses the value once and returns the index past
// it.
func imagesAt(s string, i, depth int, n, size *int64) int {
	if depth > 8 || (s[i] != '{' && s[i] != '[') {
		return skipRawValue(s, i)
	}
	start := i
	// What the children hold counts unless the object turns out to be
	// an image part, whose "type" may come after some of them.
	var cn, csize int64
	typed := false
	for it := iterateAt(s, i); ; {
		k, at, ok := it.nextAt()
		if !ok {
			*n += cn
			*size += csize
			return it.i
		}
		if it.obj && !typed && k == "type" {
			typed = true
			if s[at] == '"' {
				it.i = skipRawString(s, at+1)
				if t, _ := jsonStr(s[at:it.i]); imagePartTypes[t] {
					end := skipContainer(s, it.i, 1)
					*n++
					*size += int64(end - start)
					return end
				}
				continue
			}
		}
		it.i = imagesAt(s, at, depth+1, &cn, &csize)
	}
}

// parseSpeech reads a text-to-speech body: {"model", "input", "voice",
// "instructions", "speed", "stream_format"}.
func (r *Request) parseSpeech(fs *bodyFields) error {
	r.speech = true
	input := fs.get(fInput).String()
	instructions := fs.get(fInstructions).String()
	chars := int64(utf8.RuneCountInString(input) + utf8.RuneCountInString(instructions))
	speed := int64(1000) // thousandths
	if v := fs.get(fSpeed); v.Type == gjson.Number {
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
