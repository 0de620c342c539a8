package meter

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"mime"
	"mime/multipart"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
	"unsafe"

	"github.com/tidwall/gjson"
	"github.com/tidwall/sjson"

	"github.com/tollgate-dev/tollgate/money"
)

// Constants of the preflight estimate. They are part of the contract:
// changing one changes what customers are asked to hold.
const (
	// DefaultMaxOutputTokens is the output cap of a request that sets none
	// on a route that sets none (the route's max_output_tokens ≤ 0).
	DefaultMaxOutputTokens = 4096

	// MaxN is the largest "n" a request may ask for: OpenAI's documented
	// maximum for chat completions (images allow at most 10). A larger n
	// is refused as an invalid request instead of being reserved.
	MaxN = 128

	// ImageTokenCeiling is what one image in a prompt counts for in the
	// input estimate, instead of the bytes that encode it: a 1 MB base64
	// image is about 1.4 million bytes but a few hundred to a few thousand
	// tokens. Providers bound the tokens of one image: OpenAI's tile
	// models at 1,445 (8 tiles × 170 + 85), its patch models at 1,536
	// patches × a model multiplier (≤ 2.46, so ≤ 3,779), Anthropic at
	// about 1,600 for the 1.15 megapixels it resizes to. 5,000 covers
	// them. Known exception: gpt-4o-mini counts an image as up to ~48,000
	// tokens (2,833 + 5,667 per tile) at a correspondingly lower rate; its
	// reservation falls short by a fraction of a cent per image and
	// settlement charges the provider's count regardless.
	ImageTokenCeiling = 5000

	// RequestOverheadTokens is added to every input estimate for tokens
	// the provider adds that the body does not spell out: chat-format
	// role and priming tokens and Anthropic's tool-use system prompt (346
	// tokens at most, Anthropic "Tool use" pricing).
	RequestOverheadTokens = 512

	// ToolTokenFloor is the least one entry of "tools" counts for. Built-in
	// tools are declared in a few bytes ({"type": "bash_20250124", ...})
	// but bring their own prompt of hundreds of tokens.
	ToolTokenFloor = 1024

	// AudioBytesPerSecond is the bitrate floor (16 kbit/s) the audio
	// duration estimate assumes for an upload whose header it cannot read
	// (WAV, FLAC and MP3 headers state the duration): a file of B bytes
	// counts as B / 2,000 seconds. Speech is rarely encoded below it (MP3
	// and AAC at 16 kbit/s are already poor), so the estimate is high for
	// common files (4× for 64 kbit/s Opus or AAC). It is used for the
	// reservation, and for the charge only when the response carries no
	// duration (response_format text, srt or vtt).
	AudioBytesPerSecond = 2000

	// AudioMaxBytesPerSecond (3 Mbit/s, above 24-bit 48 kHz stereo PCM)
	// bounds how short a file of a given size can be. A duration read from
	// the file's own header is the client's claim; when the response
	// reports no duration, the charge uses at least this bound, and for
	// MP3 and FLAC the tighter one of the format (448 kbit/s; 9/8 of the
	// PCM rate), so a doctored header cannot make a long recording cheap.
	// WAV PCM durations come from the fields decoders play by (sample
	// rate × block align), not from the header's byte rate.
	AudioMaxBytesPerSecond = 384_000

	// AudioTokensPerMinute converts an audio duration to audio tokens for
	// routes that price audio models by the token: OpenAI's per-token and
	// per-minute prices for gpt-4o-transcribe and gpt-4o-mini-tts imply
	// about 1,000 to 1,250 audio tokens a minute.
	AudioTokensPerMinute = 1250

	// SpeechCharsPerMinute estimates the duration of text-to-speech at
	// speed 1.0: 750 characters a minute, a slow narration pace (~125
	// words), so the estimate leans long. "speed" scales it.
	SpeechCharsPerMinute = 750
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

	// MaxOutputTokens is the largest output cap the request sets in its
	// API's own fields (openai.chat: max_completion_tokens, max_tokens;
	// openai.responses: max_output_tokens; anthropic.messages:
	// max_tokens), or 0. Other APIs have no such field.
	MaxOutputTokens int64
	// N is the number of choices or images asked for ("n"), at least 1.
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

	estInput    int64 // typical input tokens, for a response without usage
	estText     int64 // the part of estInput from a multipart body's text fields
	audioTokens int64 // AudioMillis as audio tokens
	// audioMinMillis is the least duration an upload of its size can have.
	audioMinMillis int64
	speech         bool // openai.audio text-to-speech (JSON) rather than a transcription
	// partialImages is an image stream's "partial_images" (0 to 3): each
	// partial image is billed as imagePartialTokens more output tokens.
	partialImages int64
}

// imagePartTypes are the "type" values of prompt parts that carry an image.
var imagePartTypes = map[string]bool{
	"image_url":             true, // OpenAI chat
	"input_image":           true, // OpenAI Responses
	"image":                 true, // Anthropic
	"computer_screenshot":   true, // OpenAI Responses computer use
	"image_generation_call": true, // OpenAI Responses, a generated image passed back
}

// maxFormField bounds the bytes read from one multipart text field.
const maxFormField = 1 << 20

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

func isMultipart(contentType string) bool {
	mt, _, err := mime.ParseMediaType(contentType)
	return err == nil && strings.HasPrefix(mt, "multipart/")
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

// parseMultipart reads a multipart/form-data body: audio transcriptions
// and translations, image edits and variations.
func (r *Request) parseMultipart(contentType string, body []byte) error {
	_, params, err := mime.ParseMediaType(contentType)
	if err != nil || params["boundary"] == "" {
		return invalidf("the multipart Content-Type has no boundary")
	}
	mr := multipart.NewReader(bytes.NewReader(body), params["boundary"])
	var textBytes, fileBytes, files, audioSize int64
	var audioHead []byte
	headLen := 64
	if r.API == OpenAIAudio {
		headLen = audioHeadBytes
	}
	head := make([]byte, 0, headLen)
	sawPart := false
	var seen uint8 // pricedFields read so far
	for {
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return invalidf("the multipart body is malformed: %v", err)
		}
		sawPart = true
		name := part.FormName()
		if part.FileName() != "" || name == "file" || name == "image" || name == "image[]" || name == "mask" {
			n, err := io.ReadFull(part, head[:cap(head)])
			if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
				return invalidf("the multipart body is malformed: %v", err)
			}
			rest, err := io.Copy(io.Discard, part)
			if err != nil {
				return invalidf("the multipart body is malformed: %v", err)
			}
			size := int64(n) + rest
			if files == 0 && r.API == OpenAIAudio {
				audioHead, audioSize = head[:n], size
				head = make([]byte, 0, 64) // keep audioHead intact
			}
			files++
			fileBytes += size
			continue
		}
		val, err := io.ReadAll(io.LimitReader(part, maxFormField+1))
		if err != nil {
			return invalidf("the multipart body is malformed: %v", err)
		}
		if len(val) > maxFormField {
			return invalidf("the multipart field %q is longer than %d bytes", name, maxFormField)
		}
		textBytes += int64(len(val))
		s := string(val)
		// The fields that price the request must not be ambiguous: form
		// decoders disagree on which of several values wins.
		if bit, ok := pricedFields[name]; ok {
			if seen&bit != 0 {
				return invalidf("the multipart field %q is sent more than once; send it once", name)
			}
			seen |= bit
		}
		switch name {
		case "model":
			r.Model = s
		case "stream":
			r.Stream = s == "true"
		case "size":
			r.ImageSize = s
		case "quality":
			r.ImageQuality = s
		case "partial_images":
			r.partialImages = clampPartials(numOrNaN(s))
		case "n":
			if r.API == OpenAIImages {
				n, err := parseN(gjson.Result{Type: gjson.Number, Raw: s, Num: numOrNaN(s)})
				if err != nil {
					return err
				}
				r.N = n
			}
		}
	}
	if !sawPart {
		return invalidf("the multipart body has no parts")
	}
	tokens := textBytes + RequestOverheadTokens
	if r.API == OpenAIAudio {
		ms, least, ok := audioDuration(audioHead, audioSize)
		if ok {
			r.AudioMillis = ms
		} else {
			r.AudioMillis = ceilDiv(fileBytes*1000, AudioBytesPerSecond)
		}
		// The header is the client's claim: a charge estimated from it is
		// never below what the file's size allows at the format's highest
		// bitrate, nor at AudioMaxBytesPerSecond.
		r.audioMinMillis = max(least, ceilDiv(fileBytes*1000, AudioMaxBytesPerSecond))
		r.audioTokens = ceilDiv(r.AudioMillis*AudioTokensPerMinute, 60_000)
		r.InputTokens = tokens + r.audioTokens
		// The charge estimate, like the duration it charges, does not go
		// below what the file's size allows.
		r.estText = ceilDiv(textBytes, BytesPerToken)
		r.estInput = r.estText +
			ceilDiv(max(r.AudioMillis, r.audioMinMillis)*AudioTokensPerMinute, 60_000)
		return nil
	}
	r.Images = files
	r.InputTokens = tokens + files*ImageTokenCeiling
	r.estInput = ceilDiv(r.InputTokens-RequestOverheadTokens, BytesPerToken)
	return nil
}

// pricedFields are the multipart text fields ParseRequest reads, each
// with its bit in a set of fields seen.
var pricedFields = map[string]uint8{"model": 1, "stream": 2, "size": 4, "quality": 8, "n": 16}

// clampPartials reads "partial_images" within OpenAI's range, 0 to 3.
func clampPartials(f float64) int64 {
	if !(f > 0) {
		return 0
	}
	return int64(min(math.Ceil(f), 3))
}

func numOrNaN(s string) float64 {
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return math.NaN()
	}
	return f
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

// Estimate returns the preflight reservation of r at price p: a worst-case
// Usage and its cost (DESIGN "Preflight estimate").
//
//   - Input: r.InputTokens (see Request for the rule), each token priced at
//     the highest of Input, CachedInput and CacheWriteInput, since the
//     request cannot know what the cache will hold; the Usage shows them
//     as cache writes or cache reads when that rate is the highest.
//   - Output: the request's cap (r.MaxOutputTokens), or the ceiling when
//     the request sets none, clamped to the ceiling, times r.N. The
//     ceiling is the route's max_output_tokens (or a lower one, such as a
//     customer plan's); ceiling ≤ 0 means none: the request's cap stands,
//     or DefaultMaxOutputTokens when it sets none. Rewrite with the same
//     ceiling makes the body sent upstream ask for no more, so the hold
//     bounds the output. Embeddings produce no output tokens; speech
//     produces its estimated audio tokens.
//   - Units: r.N images of r's size and quality; r.AudioMillis of audio.
//     Price.Cost decides whether tokens or units are charged.
//   - flat: nothing but Price.PerRequest.
//
// The proxy reserves the returned cost. It fails with ErrCostRange when
// the worst case does not fit in money.Micros (an absurd cap × n at an
// absurd rate), which no balance can cover.
func (r Request) Estimate(p Price, ceiling int64) (Usage, money.Micros, error) {
	var u Usage
	switch r.API {
	case Flat:
	case OpenAIEmbeddings:
		u.InputTokens = r.InputTokens
	default:
		u.InputTokens = r.InputTokens
		out := outputCap(r.MaxOutputTokens, ceiling)
		if r.API == OpenAIAudio && r.speech {
			out = r.audioTokens
		}
		n := max(r.N, 1)
		if out > math.MaxInt64/n {
			u.OutputTokens = math.MaxInt64
		} else {
			u.OutputTokens = out * n
		}
		if r.API == OpenAIImages {
			u.Images = n
			u.ImageSize, u.ImageQuality = r.ImageSize, r.ImageQuality
		}
		if r.API == OpenAIAudio {
			u.AudioMillis = r.AudioMillis
		}
	}
	switch top := max(p.Input, p.CachedInput, p.CacheWriteInput); {
	case top == p.Input:
	case top == p.CacheWriteInput:
		u.CacheWriteInputTokens = u.InputTokens
	default:
		u.CachedInputTokens = u.InputTokens
	}
	cost, err := p.Cost(u)
	if err != nil {
		return Usage{}, 0, err
	}
	return u, cost, nil
}

// outputCap applies DESIGN's rule: the request's cap or the ceiling,
// clamped to the ceiling.
func outputCap(req, ceiling int64) int64 {
	switch {
	case req > 0 && ceiling > 0:
		return min(req, ceiling)
	case req > 0:
		return req
	case ceiling > 0:
		return ceiling
	}
	return DefaultMaxOutputTokens
}

// capFields returns the request fields that cap an API's output, the one
// Rewrite sets when the request sets none first, or nil for an API
// without one (embeddings, images, audio, flat).
//
// openai.chat has two: max_tokens, deprecated, which OpenAI's reasoning
// models (o-series, gpt-5) refuse, and max_completion_tokens, which every
// current chat model accepts and which counts reasoning tokens too (API
// reference, "max_completion_tokens"). Rewrite adds the latter, and lowers
// whichever the client sent, so a model that takes only max_tokens (an
// older OpenAI-compatible server) keeps it.
func capFields(api API) []string {
	switch api {
	case OpenAIChat:
		return chatCapFields[:]
	case OpenAIResponses:
		return responsesCapFields[:]
	case AnthropicMessages:
		return anthropicCapFields[:]
	}
	return nil
}

var (
	chatCapFields      = [...]string{"max_completion_tokens", "max_tokens"}
	responsesCapFields = [...]string{"max_output_tokens"}
	anthropicCapFields = [...]string{"max_tokens"}
)

// Rewrite returns the body to send upstream, and the output cap it set
// in it, or 0 when the request's own stands. It edits the JSON with sjson
// into a new slice, keeping every other byte and leaving body untouched;
// a body it has nothing to change in is returned as is. The caller sets
// Content-Length from the result.
//
// Output cap: ceiling is the one given to Estimate, and the body sent
// upstream asks for no more output per choice than Estimate reserved
// (DESIGN "Preflight estimate": the route's cap, lowered by a plan, is a
// ceiling enforced upstream). In the API's own fields (see capFields), a
// cap that is a positive number within it stands; a higher one, or one
// that is zero, negative or not a number (a provider might read "100000"
// or -1, "no limit" to llama.cpp-style servers, its own way), is replaced
// by it; a null one is removed; and a request left without a cap gets one
// (openai.chat: max_completion_tokens). The returned cap is then the value
// set, for the X-Tollgate-Output-Cap response header. APIs without a cap
// field are left alone.
//
// Usage: for an openai.chat stream, Rewrite forces
// stream_options.include_usage to true — also over an explicit false — so
// that the stream ends with the usage chunk tollgate bills from (OpenAI API
// reference, stream_options: without it a stream carries no usage at all).
func (r Request) Rewrite(body []byte, ceiling int64) (out []byte, outputCap int64, err error) {
	out = body
	if fields := capFields(r.API); len(fields) > 0 {
		if out, outputCap, err = r.capOutput(out, fields, ceiling); err != nil {
			return nil, 0, err
		}
	}
	if r.API != OpenAIChat || !r.Stream || r.IncludeUsage {
		return out, outputCap, nil
	}
	if so := gjson.GetBytes(out, "stream_options"); so.Exists() && !so.IsObject() {
		// null or a scalar: replace it with an object.
		out, err = sjson.SetRawBytes(out, "stream_options", []byte(`{"include_usage":true}`))
	} else {
		out, err = sjson.SetBytes(out, "stream_options.include_usage", true)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("meter: force stream_options.include_usage: %w", err)
	}
	return out, outputCap, nil
}

// capOutput makes the cap fields of body ask for at most what Estimate
// reserves per choice under ceiling (see Rewrite).
func (r Request) capOutput(body []byte, fields []string, ceiling int64) ([]byte, int64, error) {
	limit := outputCap(r.MaxOutputTokens, ceiling)
	out, changed, capped := body, false, false
	var err error
	for _, f := range fields {
		v := gjson.GetBytes(out, f)
		switch {
		case !v.Exists():
			continue
		case v.Type == gjson.Null:
			// Unset, as OpenAI's and Anthropic's APIs read it; a value is
			// added below if no other field caps the output.
			out, err = sjson.DeleteBytes(out, f)
		case v.Type == gjson.Number && v.Num > 0 && capInt(v) <= limit:
			capped = true
			continue
		default:
			out, err = sjson.SetBytes(out, f, limit)
			capped = true
		}
		if err != nil {
			return nil, 0, fmt.Errorf("meter: cap %s: %w", f, err)
		}
		changed = true
	}
	if !capped {
		if out, err = sjson.SetBytes(out, fields[0], limit); err != nil {
			return nil, 0, fmt.Errorf("meter: cap %s: %w", fields[0], err)
		}
		changed = true
	}
	if !changed {
		return body, 0, nil
	}
	return out, limit, nil
}
