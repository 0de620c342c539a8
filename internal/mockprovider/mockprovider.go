// Package mockprovider is a stand-in for OpenAI, Anthropic and Gemini that
// `tollgate serve --mock` serves in process, so that tollgate can be tried,
// and applications tested against it, without provider keys. It answers
// every metered API in the provider's own wire format — OpenAI chat
// completions (JSON, and SSE with the include_usage chunk), Responses
// (JSON and SSE), embeddings, images (JSON and SSE), audio transcriptions,
// translations and speech; Anthropic messages (JSON and SSE, with prompt
// cache reads and writes); Gemini generateContent (JSON, and
// streamGenerateContent as SSE with alt=sse or as a JSON array without) —
// and reports usage that follows from the
// request by fixed rules, so that a charge can be predicted and asserted:
//
//   - Text tokens: ⌈bytes ÷ 4⌉ of the UTF-8 text of every JSON string
//     value in a piece of the prompt (role names and type tags included,
//     keys not), plus MediaTokens for each image, file or audio part
//     instead of its bytes. The prompt's pieces are its messages (chat,
//     Anthropic), its input items and instructions (Responses), Anthropic's
//     tools and system blocks; input tokens are their sum.
//   - The reply is "You said: " followed by the text of the last user
//     message ("You said nothing." without one). Output tokens are ⌈its bytes ÷ 4⌉; a reply longer
//     than the request's output cap × 4 bytes is cut there, and the answer
//     says so as the provider would (finish_reason "length", stop_reason
//     "max_tokens", status "incomplete"). n choices cost n times.
//   - Prompt caching follows the providers' documented behaviour, held in
//     memory per process: OpenAI caches automatically every prompt prefix
//     of CacheMinTokens or more and later requests read the longest one
//     cached, in CacheIncrement-token steps; Anthropic caches the prefixes
//     that end at a block marked cache_control (at least CacheMinTokens
//     long): the first request writes them, later ones read them. An entry
//     lives CacheTTL after its last use ("ttl": "1h" marks one for an
//     hour).
//   - Embeddings: each input's text tokens (a token array: its length).
//     Images: the prompt's text tokens; GPT image models report output
//     tokens by size and quality as OpenAI publishes them
//     (meter.ImageOutputTokens), DALL·E models report images only.
//     Audio: the upload's duration as its header states it (else its size
//     at meter.AudioBytesPerSecond); speech: its input at
//     meter.SpeechCharsPerMinute.
//   - The parts of a count are reported where the provider reports them,
//     in its fields: an OpenAI chat prompt's audio parts as its audio
//     tokens (prompt_tokens_details.audio_tokens; image parts are text
//     tokens there, as OpenAI bills them); a GPT image model's input
//     images (MediaTokens each) and prompt apart
//     (input_tokens_details.image_tokens, text_tokens), its output all
//     image tokens; a transcription model's audio
//     (meter.AudioTokensPerMinute) and prompt apart
//     (input_token_details.audio_tokens, text_tokens); Anthropic's cache
//     writes by lifetime (cache_creation).
//   - How a request was served: OpenAI answers report service_tier, the
//     tier the request asks for ("priority", "flex", "scale"; "fast" is
//     served at "priority"), else "default"; Anthropic's usage reports
//     service_tier "standard", speed when the request names one (as
//     named: "fast" for fast mode) and inference_geo as the request names
//     it, else "global".
//
// The request header X-Mock-Status: CODE (400 to 599) makes it answer that
// status with the provider's error shape instead, to test how an
// application handles provider errors.
//
// It does not meter, price or charge: tollgate's proxy does that to these
// answers exactly as to a real provider's. Images are a 1×1 PNG and speech
// is silence, whatever was asked. It calls nothing over the network.
package mockprovider

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/tollgate-dev/tollgate/meter"
)

// Rules of the mock's usage; the package comment explains them.
const (
	// BytesPerToken is how many bytes of text the mock counts as a token.
	BytesPerToken = 4
	// MediaTokens is what one image, file or audio part of a prompt
	// counts for, whatever its size.
	MediaTokens = 100
	// CacheMinTokens is the shortest prompt prefix the mock caches:
	// OpenAI's automatic caching starts at 1,024 tokens, and so does
	// Anthropic's for its Sonnet and Opus models.
	CacheMinTokens = 1024
	// CacheIncrement is the step of OpenAI's cached token counts.
	CacheIncrement = 128
	// CacheTTL is how long a cached prefix lives after its last use:
	// five minutes, the providers' default.
	CacheTTL = 5 * time.Minute
	// maxBody bounds the request body the mock reads; tollgate's
	// max_request_bytes is lower unless raised far above its default.
	maxBody = 256 << 20
)

// StatusHeader is the request header that makes the mock answer with an
// error of the given status (400 to 599) in the provider's shape.
const StatusHeader = "X-Mock-Status"

// Options configure a Provider. The zero value is ready to use.
type Options struct {
	// Now is the clock for timestamps in answers and for prompt cache
	// expiry. Default time.Now.
	Now func() time.Time
}

// Provider answers API requests as OpenAI and Anthropic would. Create it
// with New; it is safe for concurrent use.
type Provider struct {
	now   func() time.Time
	cache *promptCache
}

// New returns a Provider with an empty prompt cache.
func New(opts Options) *Provider {
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	return &Provider{now: now, cache: newPromptCache(maxCacheEntries)}
}

// UpstreamPath is the path below the Provider's address that serves the
// wire format of api: a route of that api whose upstream is the
// Provider's URL followed by this path gets that API's answers, whatever
// the route's own path. It is "/" followed by the api's name, e.g.
// "/openai.chat".
func UpstreamPath(api meter.API) string { return "/" + string(api) }

// ServeHTTP answers a request whose path is UpstreamPath(api) followed by
// the API's own path, e.g. /openai.chat/v1/chat/completions.
func (p *Provider) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	name, rest, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
	api := meter.API(name)
	d := dialectOf(api)
	w.Header().Set("X-Tollgate-Mock", "true")
	d.setRequestID(w)
	if !api.Valid() {
		d.fail(w, http.StatusNotFound, fmt.Sprintf("mock provider: no API %q in the path %q; the path starts with the route's api, e.g. /openai.chat/v1/chat/completions", name, r.URL.Path))
		return
	}
	if v := r.Header.Get(StatusHeader); v != "" {
		code, err := strconv.Atoi(v)
		if err != nil || code < 400 || code > 599 {
			d.fail(w, http.StatusBadRequest, fmt.Sprintf("mock provider: %s %q is not an error status from 400 to 599", StatusHeader, v))
			return
		}
		d.fail(w, code, fmt.Sprintf("mock provider: status %d, as the %s header asked", code, StatusHeader))
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			d.fail(w, http.StatusRequestEntityTooLarge, "mock provider: request body too large")
			return
		}
		d.fail(w, http.StatusBadRequest, "mock provider: reading the request body: "+err.Error())
		return
	}
	if r.Method != http.MethodPost && api != meter.Flat {
		d.fail(w, http.StatusMethodNotAllowed, "mock provider: "+string(api)+" answers POST only")
		return
	}
	req, err := meter.ParseRequest(api, r.Header.Get("Content-Type"), body)
	if err != nil {
		var re *meter.RequestError
		msg := err.Error()
		if errors.As(err, &re) {
			msg = re.Reason
		}
		d.fail(w, http.StatusBadRequest, msg)
		return
	}
	x := &exchange{p: p, w: w, r: r, d: d, req: req, body: body, path: "/" + rest}
	switch api {
	case meter.OpenAIChat:
		x.chat()
	case meter.OpenAIResponses:
		x.responses()
	case meter.AnthropicMessages:
		x.messages()
	case meter.OpenAIEmbeddings:
		x.embeddings()
	case meter.OpenAIImages:
		x.images()
	case meter.OpenAIAudio:
		x.audio()
	case meter.GoogleGemini:
		x.gemini()
	default:
		x.flat()
	}
}

// exchange is one request being answered.
type exchange struct {
	p    *Provider
	w    http.ResponseWriter
	r    *http.Request
	d    dialect
	req  meter.Request
	body []byte
	path string // the API's own path, e.g. /v1/chat/completions
}

// model is the request's model, or def when it names none.
func (x *exchange) model(def string) string {
	if x.req.Model == "" {
		return def
	}
	return x.req.Model
}

// writeJSON answers 200 with v as JSON.
func (x *exchange) writeJSON(v any) {
	b := marshal(v)
	h := x.w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(b)))
	x.w.WriteHeader(http.StatusOK)
	_, _ = x.w.Write(b) // the client went away; nothing to do
}

// marshal encodes v as the providers do: compact, without escaping <, >
// and & as \u003c and the like. The values it is given always encode.
func marshal(v any) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		panic("mockprovider: " + err.Error()) // a programming error: every answer type encodes
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}

// newID returns an id with the provider's prefix for the object.
func newID(prefix string) string { return prefix + rand.Text() }

func ceilDiv(a, b int64) int64 {
	if a <= 0 {
		return 0
	}
	return (a-1)/b + 1
}
