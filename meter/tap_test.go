package meter

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/tollgate-dev/tollgate/money"
	"github.com/tollgate-dev/tollgate/usage"
)

var update = flag.Bool("update", false, "update .golden files")

// testPrices are the route prices the golden costs are computed at. They
// follow the providers' published list prices in credits per 1M tokens.
var testPrices = map[API]Prices{
	OpenAIChat: {
		"gpt-4o-audio-preview": {Rates: Rates{Input: money.MustParse("2.50"), CachedInput: money.MustParse("2.50"), CacheWriteInput: money.MustParse("2.50"), CacheWriteInput1h: money.MustParse("2.50"),
			AudioInput: money.MustParse("40"), ImageInput: money.MustParse("2.50"), Output: money.MustParse("10"), AudioOutput: money.MustParse("80"), ImageOutput: money.MustParse("10")}},
		"gpt-4o-search-preview": {Rates: Rates{Input: money.MustParse("2.50"), CachedInput: money.MustParse("2.50"), CacheWriteInput: money.MustParse("2.50"), CacheWriteInput1h: money.MustParse("2.50"),
			AudioInput: money.MustParse("2.50"), ImageInput: money.MustParse("2.50"), Output: money.MustParse("10"), AudioOutput: money.MustParse("10"), ImageOutput: money.MustParse("10")},
			Tools: toolFees("web_search", "0.035")},
		"gpt-4o-mini-search-preview": {Rates: textRates("0.15", "0.15", "0.60"), Tools: toolFees("web_search", "0.0275")},
		// OpenAI-compatible upstreams: Groq, Together, a vLLM server.
		"llama-3.3-70b-versatile":                 {Rates: textRates("0.59", "0.59", "0.79")},
		"meta-llama/Llama-3.3-70B-Instruct-Turbo": {Rates: textRates("0.88", "0.88", "0.88")},
		"Qwen/Qwen2.5-7B-Instruct":                {Rates: textRates("0.10", "0.10", "0.10")},
		"gpt-4o": {Rates: Rates{Input: money.MustParse("2.50"), CachedInput: money.MustParse("1.25"), CacheWriteInput: money.MustParse("2.50"), Output: money.MustParse("10")},
			ServiceTier: map[string]Variant{"priority": {HasRates: true, Rates: textRates("4.25", "2.125", "17")}}},
		"o4-mini": {Rates: Rates{Input: money.MustParse("1.10"), CachedInput: money.MustParse("0.275"), CacheWriteInput: money.MustParse("1.10"), Output: money.MustParse("4.40")},
			ServiceTier: map[string]Variant{
				"flex":     {HasRates: true, Rates: textRates("0.55", "0.138", "2.20")},
				"priority": {HasRates: true, Rates: textRates("2", "0.50", "8")},
			}},
	},
	OpenAIResponses: {
		"gpt-4.1": {Rates: Rates{Input: money.MustParse("2"), CachedInput: money.MustParse("0.50"), CacheWriteInput: money.MustParse("2"), Output: money.MustParse("8")},
			// Built-in tools: web search $10 and file search $2.50 per
			// 1,000 calls, $0.03 per code interpreter container, an image
			// generation call at a high-quality square image's price.
			Tools: toolFees("web_search", "0.01", "file_search", "0.0025", "code_interpreter", "0.03", "image_generation", "0.167")},
		// Above 272,000 input tokens: 2× input, 1.5× output.
		"gpt-5.4": {Rates: textRates("2.50", "0.25", "15"), Tiers: []Tier{{AboveInputTokens: 272_000, Rates: textRates("5", "0.50", "22.50")}},
			ServiceTier: map[string]Variant{"priority": {HasRates: true, Rates: textRates("5", "0.50", "30")}}},
	},
	AnthropicMessages: {
		"claude-sonnet-4-5": {
			Rates: Rates{Input: money.MustParse("3"), CachedInput: money.MustParse("0.30"), CacheWriteInput: money.MustParse("3.75"), CacheWriteInput1h: money.MustParse("6"),
				AudioInput: money.MustParse("3"), ImageInput: money.MustParse("3"), Output: money.MustParse("15"), AudioOutput: money.MustParse("15"), ImageOutput: money.MustParse("15")},
			// Long context: above 200,000 input tokens every token at these rates.
			Tiers: []Tier{{AboveInputTokens: 200_000, Rates: Rates{Input: money.MustParse("6"), CachedInput: money.MustParse("0.60"), CacheWriteInput: money.MustParse("7.50"),
				CacheWriteInput1h: money.MustParse("12"), AudioInput: money.MustParse("6"), ImageInput: money.MustParse("6"), Output: money.MustParse("22.50"),
				AudioOutput: money.MustParse("22.50"), ImageOutput: money.MustParse("22.50")}}},
			// Web search $10 per 1,000; web fetch free; code execution 5 minutes at $0.05 an hour.
			Tools: toolFees("web_search", "0.01", "code_execution", "0.004167"),
		},
		"claude-haiku-4-5": {Rates: Rates{Input: money.MustParse("1"), CachedInput: money.MustParse("0.10"), CacheWriteInput: money.MustParse("1.25"), CacheWriteInput1h: money.MustParse("2"),
			AudioInput: money.MustParse("1"), ImageInput: money.MustParse("1"), Output: money.MustParse("5"), AudioOutput: money.MustParse("5"), ImageOutput: money.MustParse("5")}},
		"claude-opus-4-6": {
			Rates: Rates{Input: money.MustParse("5"), CachedInput: money.MustParse("0.50"), CacheWriteInput: money.MustParse("6.25"), CacheWriteInput1h: money.MustParse("10"),
				AudioInput: money.MustParse("5"), ImageInput: money.MustParse("5"), Output: money.MustParse("25"), AudioOutput: money.MustParse("25"), ImageOutput: money.MustParse("25")},
			// Fast mode: its own table; US-only inference: 1.1× whatever is in force.
			Speed: map[string]Variant{"fast": {HasRates: true, Rates: Rates{Input: money.MustParse("30"), CachedInput: money.MustParse("3"), CacheWriteInput: money.MustParse("37.50"),
				CacheWriteInput1h: money.MustParse("60"), AudioInput: money.MustParse("30"), ImageInput: money.MustParse("30"), Output: money.MustParse("150"),
				AudioOutput: money.MustParse("150"), ImageOutput: money.MustParse("150")}}},
			InferenceGeo: map[string]Variant{"us": {Multiplier: 1_100_000}},
			Tools:        toolFees("web_search", "0.01"),
		},
	},
	OpenAIEmbeddings: {
		"*": {Rates: Rates{Input: money.MustParse("0.02"), CachedInput: money.MustParse("0.02"), CacheWriteInput: money.MustParse("0.02")}},
	},
	OpenAIImages: {
		"dall-e-3": {PerImage: map[string]money.Micros{"1024x1024": money.MustParse("0.04"), "1024x1024/hd": money.MustParse("0.08"), "1792x1024/hd": money.MustParse("0.12")}},
		"dall-e-2": {PerImage: map[string]money.Micros{"256x256": money.MustParse("0.016"), "512x512": money.MustParse("0.018"), "1024x1024": money.MustParse("0.02")}},
		// Text and image tokens at their own rates.
		"gpt-image-1.5": {Rates: Rates{Input: money.MustParse("5"), CachedInput: money.MustParse("1.25"), CacheWriteInput: money.MustParse("5"), CacheWriteInput1h: money.MustParse("5"),
			AudioInput: money.MustParse("5"), ImageInput: money.MustParse("8"), Output: money.MustParse("10"), AudioOutput: money.MustParse("10"), ImageOutput: money.MustParse("32")}},
		"gpt-image-1": {Rates: Rates{Input: money.MustParse("5"), CachedInput: money.MustParse("1.25"), CacheWriteInput: money.MustParse("5"), ImageInput: money.MustParse("5"), Output: money.MustParse("40"), ImageOutput: money.MustParse("40")}, PerImage: map[string]money.Micros{"*": money.MustParse("0.25")}},
	},
	OpenAIAudio: {
		"whisper-1": {PerMinute: money.MustParse("0.006")},
		"gpt-4o-transcribe": {Rates: Rates{Input: money.MustParse("2.50"), CachedInput: money.MustParse("2.50"), CacheWriteInput: money.MustParse("2.50"), CacheWriteInput1h: money.MustParse("2.50"),
			AudioInput: money.MustParse("6"), ImageInput: money.MustParse("2.50"), Output: money.MustParse("10"), AudioOutput: money.MustParse("10"), ImageOutput: money.MustParse("10")}, PerMinute: money.MustParse("0.006")},
		"gpt-4o-mini-transcribe": {Rates: Rates{Input: money.MustParse("3"), CachedInput: money.MustParse("3"), CacheWriteInput: money.MustParse("3"), AudioInput: money.MustParse("3"), Output: money.MustParse("5"), AudioOutput: money.MustParse("5")}},
		"tts-1":                  {Rates: Rates{Input: money.MustParse("15"), CachedInput: money.MustParse("15"), CacheWriteInput: money.MustParse("15")}},
		"gpt-4o-mini-tts":        {Rates: Rates{Input: money.MustParse("0.60"), CachedInput: money.MustParse("0.60"), CacheWriteInput: money.MustParse("0.60"), AudioInput: money.MustParse("0.60"), Output: money.MustParse("12"), AudioOutput: money.MustParse("12")}},
	},
	GoogleGemini: {
		// Text, image and video input $0.30, audio $1.00; cached text
		// $0.03; output, thinking included, $2.50 (Gemini API pricing).
		"gemini-2.5-flash": {Rates: Rates{Input: money.MustParse("0.30"), CachedInput: money.MustParse("0.03"), CacheWriteInput: money.MustParse("0.30"),
			CacheWriteInput1h: money.MustParse("0.30"), AudioInput: money.MustParse("1"), ImageInput: money.MustParse("0.30"),
			Output: money.MustParse("2.50"), AudioOutput: money.MustParse("2.50"), ImageOutput: money.MustParse("2.50")}},
		// Image output $30 per 1M tokens (1,290 tokens an image).
		"gemini-2.5-flash-image": {Rates: Rates{Input: money.MustParse("0.30"), CachedInput: money.MustParse("0.03"), CacheWriteInput: money.MustParse("0.30"),
			CacheWriteInput1h: money.MustParse("0.30"), AudioInput: money.MustParse("1"), ImageInput: money.MustParse("0.30"),
			Output: money.MustParse("2.50"), AudioOutput: money.MustParse("2.50"), ImageOutput: money.MustParse("30")}},
		// Prompts above 200,000 tokens: every token at the higher rates.
		"gemini-2.5-pro": {Rates: textRates("1.25", "0.125", "10"), Tiers: []Tier{{AboveInputTokens: 200_000, Rates: textRates("2.50", "0.25", "15")}}},
	},
	Flat: {
		"*": {PerRequest: money.MustParse("0.01")},
	},
}

// textRates is a config-resolved table of input, cached input and output
// rates: every other input class at input, every other output at output.
func textRates(in, cached, out string) Rates {
	i, o := money.MustParse(in), money.MustParse(out)
	return Rates{Input: i, CachedInput: money.MustParse(cached), CacheWriteInput: i, CacheWriteInput1h: i, AudioInput: i, ImageInput: i,
		Output: o, AudioOutput: o, ImageOutput: o}
}

// toolFees builds Price.Tools from tool names and decimal fees.
func toolFees(kv ...string) [usage.NumTools]money.Micros {
	var fees [usage.NumTools]money.Micros
	for i := 0; i+1 < len(kv); i += 2 {
		tool, ok := usage.ParseTool(kv[i])
		if !ok {
			panic("unknown tool " + kv[i])
		}
		fees[tool] = money.MustParse(kv[i+1])
	}
	return fees
}

// testRouteMaxOutput is the route cap the golden preflight estimates use.
const testRouteMaxOutput = 4096

const testBoundary = "tollgate-test-boundary"

// golden is what a case's .golden.json holds.
type golden struct {
	Usage Usage  `json:"usage"`
	Cost  string `json:"cost"`
	// Charged is the usage the charge records (Prices.Charge), when it
	// is not Usage: the sum of the iterations, or a per-request call.
	Charged *Usage `json:"charged,omitempty"`
	// Preflight is the reservation for the case's request.
	Preflight     Usage  `json:"preflight"`
	PreflightCost string `json:"preflight_cost"`
	Events        int64  `json:"events"`
	// ClientBytes and ClientSHA256 pin what the client receives.
	ClientBytes  int    `json:"client_bytes"`
	ClientSHA256 string `json:"client_sha256"`
}

type testCase struct {
	api         API
	name        string // e.g. "openai.chat/stream_filtered"
	path        string // the response file
	data        []byte // the response bytes upstream sends
	contentType string
	req         Request
}

// loadCases reads every response file under testdata/<api>/ with its
// request (<case>.request.json or .request.multipart; a default otherwise).
func loadCases(t testing.TB) []testCase {
	t.Helper()
	var cases []testCase
	for _, api := range APIs() {
		dir := filepath.Join("testdata", string(api))
		ents, err := os.ReadDir(dir)
		if err != nil {
			t.Fatalf("read %s: %v", dir, err)
		}
		for _, e := range ents {
			name := e.Name()
			if e.IsDir() || strings.Contains(name, ".golden.") || strings.Contains(name, ".request.") {
				continue
			}
			base, ct := name, ""
			base = strings.TrimSuffix(base, ".gz")
			switch ext := filepath.Ext(base); ext {
			case ".sse":
				ct = "text/event-stream; charset=utf-8"
			case ".json":
				ct = "application/json"
			case ".txt":
				ct = "text/plain; charset=utf-8"
			case ".mp3":
				ct = "audio/mpeg"
			default:
				t.Fatalf("%s: unknown extension %q", name, ext)
			}
			stem := strings.TrimSuffix(base, filepath.Ext(base))
			tc := testCase{api: api, name: string(api) + "/" + stem, path: filepath.Join(dir, name), contentType: ct}
			tc.data = readFile(t, tc.path)
			tc.req = loadRequest(t, api, filepath.Join(dir, stem))
			cases = append(cases, tc)
		}
	}
	if len(cases) == 0 {
		t.Fatal("no test cases under testdata")
	}
	return cases
}

func readFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if strings.HasSuffix(path, ".gz") {
		zr, err := gzip.NewReader(bytes.NewReader(b))
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if b, err = io.ReadAll(zr); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
	}
	return b
}

func loadRequest(t testing.TB, api API, stem string) Request {
	t.Helper()
	body, ct := []byte(nil), "application/json"
	if b, err := os.ReadFile(stem + ".request.json"); err == nil {
		body = b
	} else if _, err := os.Stat(stem + ".request.json.gz"); err == nil {
		body = readFile(t, stem+".request.json.gz")
	} else if b, err := os.ReadFile(stem + ".request.multipart"); err == nil {
		body, ct = b, "multipart/form-data; boundary="+testBoundary
	} else if api != Flat {
		t.Fatalf("%s: no .request.json or .request.multipart", stem)
	}
	req, err := ParseRequest(api, ct, body)
	if err != nil {
		t.Fatalf("%s: ParseRequest: %v", stem, err)
	}
	if api == GoogleGemini {
		// The model and the method are in the path (<case>.request.path).
		path, err := os.ReadFile(stem + ".request.path")
		if err != nil {
			t.Fatalf("%s: %v", stem, err)
		}
		var ok bool
		if req.Model, req.Stream, ok = GeminiTarget(strings.TrimSpace(string(path))); !ok {
			t.Fatalf("%s: %q is not a generateContent path", stem, path)
		}
	}
	return req
}

// replay feeds data to a fresh Tap through r (which splits it into reads
// of some sizes) and returns what the client receives and the usage.
func replay(t testing.TB, tc testCase, r io.Reader) ([]byte, Usage, *Tap) {
	t.Helper()
	tap := NewTap(tc.req, tc.contentType)
	var client []byte
	buf := make([]byte, 32<<10)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			client = append(client, tap.Feed(buf[:n])...)
			tap.checkBounds(t, n)
		}
		if err == io.EOF {
			break
		}
		if err != nil && err != iotest.ErrTimeout {
			t.Fatalf("read: %v", err)
		}
	}
	rest, u := tap.End()
	client = append(client, rest...)
	return client, u, tap
}

// checkBounds asserts the documented memory bound after a Feed of n bytes.
func (t *Tap) checkBounds(tb testing.TB, n int) {
	tb.Helper()
	if len(t.hold) > MaxHeldEventBytes {
		tb.Fatalf("holding %d bytes, more than MaxHeldEventBytes", len(t.hold))
	}
	if !t.filter && (cap(t.hold) > 0 || cap(t.out) > 0) {
		tb.Fatalf("a Tap that does not filter allocated hold/out buffers")
	}
	if cap(t.out) > 2*(MaxHeldEventBytes+max(n, 32<<10)) {
		tb.Fatalf("output buffer grew to %d bytes", cap(t.out))
	}
	if cap(t.doc) > 2*(MaxHeldEventBytes+max(n, 32<<10)) || cap(t.hold) > 2*(MaxHeldEventBytes+max(n, 32<<10)) {
		tb.Fatalf("data buffer grew to %d bytes, hold to %d", cap(t.doc), cap(t.hold))
	}
}

// chunkReader returns reads of random sizes from 1 to maxRead bytes.
type chunkReader struct {
	data    []byte
	rng     *rand.Rand
	maxRead int
}

func (c *chunkReader) Read(p []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	n := min(1+c.rng.IntN(c.maxRead), len(p), len(c.data))
	copy(p, c.data[:n])
	c.data = c.data[n:]
	return n, nil
}

// readers lists the ways each case is replayed: every byte boundary
// (one-byte reads), random read sizes, and the iotest helpers.
func readers(data []byte) map[string]func() io.Reader {
	rs := map[string]func() io.Reader{
		"whole":   func() io.Reader { return bytes.NewReader(data) },
		"onebyte": func() io.Reader { return iotest.OneByteReader(bytes.NewReader(data)) },
		"half":    func() io.Reader { return iotest.HalfReader(bytes.NewReader(data)) },
		"dataerr": func() io.Reader { return iotest.DataErrReader(bytes.NewReader(data)) },
		"timeout": func() io.Reader { return iotest.TimeoutReader(bytes.NewReader(data)) },
	}
	for seed, maxRead := range []int{3, 17, 64, 509, 4096} {
		rs["random"+string(rune('a'+seed))] = func() io.Reader {
			return &chunkReader{data: data, rng: rand.New(rand.NewPCG(uint64(seed), 99)), maxRead: maxRead}
		}
	}
	return rs
}

// TestGolden replays every testdata stream and body through every reader
// and checks the usage, its cost, the preflight estimate and the bytes the
// client receives against <case>.golden.json. Run with -update to rewrite
// the goldens, then read the diff.
func TestGolden(t *testing.T) {
	for _, tc := range loadCases(t) {
		t.Run(tc.name, func(t *testing.T) {
			client, u, tap := replay(t, tc, bytes.NewReader(tc.data))
			if !tap.filter && !bytes.Equal(client, tc.data) {
				t.Fatalf("client bytes differ from upstream bytes without filtering")
			}
			charged, cost, err := testPrices[tc.api].Charge(tc.req, u)
			if err != nil {
				t.Fatalf("Charge(%+v): %v", u, err)
			}
			pre, preCost, err := testPrices[tc.api].Estimate(tc.req, testRouteMaxOutput, nil)
			if err != nil {
				t.Fatalf("Estimate: %v", err)
			}
			sum := sha256.Sum256(client)
			got := golden{
				Usage: u, Cost: cost.String(),
				Preflight: pre, PreflightCost: preCost.String(),
				Events:      tap.events,
				ClientBytes: len(client), ClientSHA256: hex.EncodeToString(sum[:]),
			}
			if !sameUsage(charged, u) {
				got.Charged = &charged
			}
			gotJSON, err := json.MarshalIndent(got, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			gotJSON = append(gotJSON, '\n')
			path := filepath.Join("testdata", string(tc.api), strings.TrimPrefix(tc.name, string(tc.api)+"/")+".golden.json")
			if *update {
				if err := os.WriteFile(path, gotJSON, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test ./meter -update to create it)", err)
			}
			if !bytes.Equal(gotJSON, want) {
				t.Errorf("golden mismatch for %s:\n got: %s\nwant: %s", path, gotJSON, want)
			}

			// Every way of splitting the bytes gives the same result.
			for name, mk := range readers(tc.data) {
				c2, u2, _ := replay(t, tc, mk())
				if !sameUsage(u2, u) {
					t.Errorf("%s reads: usage %+v, want %+v", name, u2, u)
				}
				if !bytes.Equal(c2, client) {
					t.Errorf("%s reads: client bytes differ (%d vs %d bytes)", name, len(c2), len(client))
				}
			}
		})
	}
}

// TestImagesCutNeverFree checks that an image response that ends before
// its usage (client gone, upstream cut, or no answer at all) is charged
// for the images on a route that prices GPT image models by the token, as
// config.example.yaml does: the image was made upstream, and its output
// tokens are most of its cost. gpt-image-1 publishes 4,160 output tokens
// for a high-quality 1024x1024 image and 100 per partial image.
func TestImagesCutNeverFree(t *testing.T) {
	tokens := Price{Rates: Rates{Input: 5_000_000, CachedInput: 1_250_000, CacheWriteInput: 5_000_000, ImageInput: 5_000_000, Output: 40_000_000, ImageOutput: 40_000_000}}
	perImage := Price{PerImage: map[string]money.Micros{"1024x1024": 40_000}}
	tests := []struct {
		name, req, ct, body string
		wantOut             int64
	}{
		{"json cut in b64", `{"model":"gpt-image-1","prompt":"otter","size":"1024x1024","quality":"high"}`,
			"application/json", `{"created":1713833628,"data":[{"b64_json":"iVBORw0KGgoAAAANSUhEUgAA`, 4160},
		{"no answer", `{"model":"gpt-image-1","prompt":"otter","size":"1024x1024","quality":"high","n":2}`,
			"", ``, 2 * 4160},
		// 1024x1536 at medium: 1,056 × 1.5 = 1,584; "auto" quality counts as high.
		{"medium tall", `{"model":"gpt-image-1","prompt":"otter","size":"1024x1536","quality":"medium"}`, "", ``, 1584},
		{"auto quality", `{"model":"gpt-image-1","prompt":"otter","size":"1024x1024","quality":"auto"}`, "", ``, 4160},
		// Unknown size: the largest gpt-image-1 size, 1536x1024 (6,240 at high).
		{"auto size", `{"model":"gpt-image-1","prompt":"otter"}`, "", ``, 6240},
		// An absurd size is no reason to charge more than the largest one.
		{"absurd size", `{"model":"gpt-image-1","prompt":"otter","size":"99999x99999","quality":"low"}`, "", ``, 408},
		// A stream cut after its partial images: 2 × 100 more.
		{"stream cut after partials", `{"model":"gpt-image-1","prompt":"otter","size":"1024x1024","quality":"low","stream":true,"partial_images":2}`,
			"text/event-stream", "event: image_generation.partial_image\ndata: {\"type\":\"image_generation.partial_image\",\"b64_json\":\"AAAA\",\"partial_image_index\":0}\n\n" +
				"event: image_generation.partial_image\ndata: {\"type\":\"image_generation.partial_image\",\"b64_json\":\"AAAA\",\"partial_image_index\":1}\n\n", 272 + 200},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := mustParse(t, OpenAIImages, "application/json", tc.req)
			u := usageOf(t, req, tc.ct, tc.body)
			if u.OutputTokens != tc.wantOut || !u.Estimated || u.Images != req.N {
				t.Fatalf("usage %+v, want %d estimated output tokens for %d images", u, tc.wantOut, req.N)
			}
			cost, err := tokens.Cost(u)
			if err != nil {
				t.Fatal(err)
			}
			// Output alone at 40 per 1M tokens (the input estimate adds a little).
			if min := money.Micros(tc.wantOut * 40); cost < min {
				t.Errorf("token route charged %s, less than the output's %s", cost, min)
			}
		})
	}
	// A route that prices per image still charges per image, not tokens.
	req := mustParse(t, OpenAIImages, "application/json", `{"model":"dall-e-2","size":"1024x1024","n":3}`)
	if cost, err := perImage.Cost(usageOf(t, req, "", "")); err != nil || cost != 120_000 {
		t.Errorf("per-image route: %s, %v; want 0.120000", cost, err)
	}
}

// TestOpaqueBodyNeverFree checks that a token API answered with a body
// that is neither JSON nor SSE by its bytes, nor labelled SSE (a gateway's
// error page with a 200), still charges output for the bytes it produced.
// An SSE stream under a wrong label is not such a body: it is metered as
// the stream it is (TestFramingByBytes).
func TestOpaqueBodyNeverFree(t *testing.T) {
	page := "<html><body>upstream said something</body></html>"
	for _, api := range []API{OpenAIChat, OpenAIResponses, AnthropicMessages} {
		req := mustParse(t, api, "application/json", `{"model":"m","stream":true,"max_tokens":10}`)
		for _, ct := range []string{"text/plain", "text/html", "application/json"} {
			u := usageOf(t, req, ct, page)
			if want := ceilDiv(int64(len(page)), BytesPerToken); u.OutputTokens != want || !u.Estimated {
				t.Errorf("%s, %s: usage %+v, want %d estimated output tokens", api, ct, u, want)
			}
		}
	}
}

// TestTapReset meters every recording, in turn and then backwards, through
// one Tap that Reset readies for each: the usage and the client's bytes
// are those of a fresh Tap, so nothing of one response leaks into the
// next.
func TestTapReset(t *testing.T) {
	cases := loadCases(t)
	var order []testCase
	order = append(order, cases...)
	for i := len(cases) - 1; i >= 0; i-- {
		order = append(order, cases[i])
	}
	tap := new(Tap)
	for _, tc := range order {
		want, wantUsage, _ := replay(t, tc, bytes.NewReader(tc.data))
		tap.Reset(tc.req, tc.contentType)
		var got []byte
		for rest := tc.data; len(rest) > 0; {
			n := min(len(rest), 1000)
			got = append(got, tap.Feed(rest[:n])...)
			rest = rest[n:]
		}
		end, u := tap.End()
		got = append(got, end...)
		if !sameUsage(u, wantUsage) {
			t.Errorf("%s: a reset Tap reported %+v, a fresh one %+v", tc.name, u, wantUsage)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s: a reset Tap gave the client %d bytes, a fresh one %d", tc.name, len(got), len(want))
		}
	}
}
