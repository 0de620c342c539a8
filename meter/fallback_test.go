package meter

import (
	"errors"
	"testing"

	"github.com/tollgate-dev/tollgate/money"
	"github.com/tollgate-dev/tollgate/usage"
)

// Prices of the never-free tests, in micro-credits per 1M tokens (so a
// token at "5" costs 5 micro-credits), per image and per minute.
var (
	tokensOnly  = Price{Rates: Rates{Input: 5_000_000, CachedInput: 5_000_000, CacheWriteInput: 5_000_000, ImageInput: 5_000_000, Output: 40_000_000, ImageOutput: 40_000_000}}
	imageOnly   = Price{PerImage: map[string]money.Micros{"1024x1024": 40_000, "1024x1024/hd": 80_000}}
	imageBoth   = Price{Rates: Rates{Input: 5_000_000, CachedInput: 5_000_000, CacheWriteInput: 5_000_000, ImageInput: 5_000_000, Output: 40_000_000, ImageOutput: 40_000_000}, PerImage: map[string]money.Micros{"*": 40_000}}
	audioTokens = Price{Rates: Rates{Input: 6_000_000, CachedInput: 6_000_000, CacheWriteInput: 6_000_000, AudioInput: 6_000_000, Output: 10_000_000, AudioOutput: 10_000_000}}
	audioMinute = Price{PerMinute: 6_000}
	audioBoth   = Price{Rates: Rates{Input: 6_000_000, CachedInput: 6_000_000, CacheWriteInput: 6_000_000, AudioInput: 6_000_000, Output: 10_000_000, AudioOutput: 10_000_000}, PerMinute: 6_000}
)

// TestImagesCompleteNeverFree checks complete image responses that report
// no token usage, as DALL·E's never do: at a price with token rates only
// (a "*" entry with input and output), they are charged the estimated
// tokens of the images (gpt-image-1's 4,160 output tokens for a
// high-quality 1024x1024 image, "hd" and unknown qualities counting as
// high), marked Estimated by Charge; a price with per_image charges per
// image as before, whether or not it also has token rates.
func TestImagesCompleteNeverFree(t *testing.T) {
	// 37 bytes: the input estimate is ceil(37 / 4) = 10 tokens.
	const dalle3 = `{"model":"dall-e-3","prompt":"otter"}`
	// 77 bytes: ceil(77 / 4) = 20 tokens.
	const dalle2 = `{"model":"dall-e-2","prompt":"otter","n":2,"size":"1024x1024","quality":"hd"}`
	tests := []struct {
		name, req, ct, body string
		images              int64
		fallbackIn          int64
		fallbackOut         int64
		// Costs at tokensOnly, imageOnly and imageBoth.
		tokens, image, both money.Micros
	}{
		{
			// The response names its size and quality; no size in the
			// request. 10×5 + 4,160×40 = 50 + 166,400 = 166,450.
			name: "dall-e-3 json", req: dalle3, ct: "application/json",
			body:   `{"created":1713833628,"data":[{"revised_prompt":"An otter","url":"https://example.com/a.png"}],"size":"1024x1024","quality":"hd"}`,
			images: 1, fallbackIn: 10, fallbackOut: 4160,
			tokens: 166_450, image: 80_000, both: 40_000,
		},
		{
			// Two images of 4,160 tokens: 20×5 + 8,320×40 = 100 + 332,800 = 332,900.
			name: "dall-e-2 json n=2", req: dalle2, ct: "application/json",
			body:   `{"created":1713833628,"data":[{"url":"https://example.com/a.png"},{"url":"https://example.com/b.png"}]}`,
			images: 2, fallbackIn: 20, fallbackOut: 8320,
			tokens: 332_900, image: 160_000, both: 80_000,
		},
		{
			// A stream whose completed event carries no usage (an
			// OpenAI-compatible server): one image, as in the JSON case.
			name: "stream without usage", req: dalle3, ct: "text/event-stream",
			body:   "event: image_generation.completed\ndata: {\"type\":\"image_generation.completed\",\"b64_json\":\"AAAA\",\"size\":\"1024x1024\",\"quality\":\"high\"}\n\n",
			images: 1, fallbackIn: 10, fallbackOut: 4160,
			tokens: 166_450, image: 40_000, both: 40_000,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := mustParse(t, OpenAIImages, "application/json", tc.req)
			u := usageOf(t, req, tc.ct, tc.body)
			if u.Images != tc.images || u.Estimated || u.InputTokens != 0 || u.OutputTokens != 0 ||
				u.FallbackInputTokens != tc.fallbackIn || u.FallbackOutputTokens != tc.fallbackOut {
				t.Fatalf("usage %+v, want %d reported images, no tokens, fallback %d in / %d out",
					u, tc.images, tc.fallbackIn, tc.fallbackOut)
			}
			for _, pc := range []struct {
				name  string
				price Price
				want  money.Micros
			}{{"tokens only", tokensOnly, tc.tokens}, {"per image only", imageOnly, tc.image}, {"both", imageBoth, tc.both}} {
				got, err := pc.price.Cost(u)
				if err != nil || got != pc.want {
					t.Errorf("%s: Cost = %s, %v; want %s", pc.name, got, err, pc.want)
				}
			}
			charged, cost, err := tokensOnly.Charge(u)
			if err != nil || cost != tc.tokens {
				t.Fatalf("Charge = %s, %v; want %s", cost, err, tc.tokens)
			}
			if charged.InputTokens != tc.fallbackIn || charged.OutputTokens != tc.fallbackOut || !charged.Estimated ||
				charged.FallbackInputTokens != 0 || charged.FallbackOutputTokens != 0 || charged.Images != tc.images {
				t.Errorf("Charge usage %+v, want the fallback as estimated tokens", charged)
			}
			// A per-image price charges the usage as reported.
			if charged, _, _ := imageOnly.Charge(u); !sameUsage(charged, u) {
				t.Errorf("per-image Charge changed the usage to %+v", charged)
			}
		})
	}

	// A response that reports its tokens gets no fallback: the tokens rule.
	req := mustParse(t, OpenAIImages, "application/json", `{"model":"gpt-image-1","prompt":"otter"}`)
	u := usageOf(t, req, "application/json", `{"created":1,"data":[{"b64_json":"AAAA"}],"usage":{"input_tokens":50,"output_tokens":272}}`)
	if u.FallbackInputTokens != 0 || u.FallbackOutputTokens != 0 || u.OutputTokens != 272 || u.Estimated {
		t.Errorf("reported usage %+v, want 272 output tokens and no fallback", u)
	}
}

// TestImagesBodyWithoutData checks that a complete JSON answer that lists
// no "data" (not an image body) is charged like a cut one, the request's
// n images and their estimated tokens, instead of zero images.
func TestImagesBodyWithoutData(t *testing.T) {
	req := mustParse(t, OpenAIImages, "application/json", `{"model":"dall-e-2","prompt":"otter","n":3,"size":"1024x1024","quality":"low"}`)
	u := usageOf(t, req, "application/json", `{"created":1713833628}`)
	// 3 × 272 low-quality 1024x1024 output tokens.
	if u.Images != 3 || !u.Estimated || u.OutputTokens != 3*272 {
		t.Fatalf("usage %+v, want 3 estimated images of 272 tokens", u)
	}
	if cost, err := imageOnly.Cost(u); err != nil || cost != 120_000 {
		t.Errorf("per-image price: %s, %v; want 0.120000", cost, err)
	}
	// An empty data list is the provider's report of no image.
	u = usageOf(t, req, "application/json", `{"created":1713833628,"data":[]}`)
	if u.Images != 0 || u.Estimated {
		t.Errorf("empty data: %+v, want 0 images, not estimated", u)
	}
}

// TestAudioDurationNeverFree checks complete transcriptions that report a
// duration and no tokens, as whisper-1's do: at a price with token rates
// only, the duration is charged as audio tokens (AudioTokensPerMinute)
// plus the prompt fields as input and the transcript as output; a price
// with per_minute charges by the minute as before.
func TestAudioDurationNeverFree(t *testing.T) {
	ct := "multipart/form-data; boundary=" + testBoundary
	// Text fields: "whisper-1" (9 bytes) + "verbose_json" (12) = 21 bytes,
	// ceil(21 / 4) = 6 tokens. The file's header is not read (the
	// provider's duration is).
	body := form(t, map[string]string{"model": "whisper-1", "response_format": "verbose_json"}, map[string][]byte{"file": make([]byte, 4000)})
	req := mustParse(t, OpenAIAudio, ct, body)
	// "It is a test." is 13 bytes: ceil(13 / 4) = 4 tokens, from one value.
	tests := []struct {
		name, body        string
		millis            int64
		fallbackIn        int64
		tokens, min, both money.Micros
	}{
		{
			// 90 s: 6 + 90,000 × 1,250 / 60,000 = 6 + 1,875 = 1,881 input tokens.
			// 1,881×6 + 4×10 = 11,286 + 40 = 11,326; per minute 1.5 × 6,000 = 9,000.
			name: "verbose_json duration", body: `{"task":"transcribe","language":"english","duration":90.0,"text":"It is a test."}`,
			millis: 90_000, fallbackIn: 1881, tokens: 11_326, min: 9_000, both: 9_000,
		},
		{
			// usage {type: duration}: 7 s, 6 + ceil(7,000 × 1,250 / 60,000) =
			// 6 + 146 = 152; 152×6 + 4×10 = 952; per minute 7/60 × 6,000 = 700.
			name: "json usage seconds", body: `{"text":"It is a test.","usage":{"type":"duration","seconds":7}}`,
			millis: 7_000, fallbackIn: 152, tokens: 952, min: 700, both: 700,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			u := usageOf(t, req, "application/json", tc.body)
			want := Usage{AudioMillis: tc.millis, FallbackInputTokens: tc.fallbackIn, FallbackOutputTokens: 4}
			if !sameUsage(u, want) {
				t.Fatalf("usage %+v\nwant  %+v", u, want)
			}
			for _, pc := range []struct {
				name  string
				price Price
				want  money.Micros
			}{{"tokens only", audioTokens, tc.tokens}, {"per minute only", audioMinute, tc.min}, {"both", audioBoth, tc.both}} {
				got, err := pc.price.Cost(u)
				if err != nil || got != pc.want {
					t.Errorf("%s: Cost = %s, %v; want %s", pc.name, got, err, pc.want)
				}
			}
			charged, _, _ := audioTokens.Charge(u)
			if charged.InputTokens != tc.fallbackIn || charged.OutputTokens != 4 || !charged.Estimated || charged.AudioMillis != tc.millis {
				t.Errorf("Charge usage %+v, want the fallback as estimated tokens", charged)
			}
		})
	}

	// gpt-4o-transcribe reports tokens: no fallback, charged by its tokens.
	u := usageOf(t, req, "application/json", `{"text":"It is a test.","usage":{"type":"tokens","input_tokens":100,"output_tokens":5}}`)
	if u.FallbackInputTokens != 0 || u.FallbackOutputTokens != 0 {
		t.Errorf("reported tokens: %+v, want no fallback", u)
	}
	if cost, err := audioTokens.Cost(u); err != nil || cost != 100*6+5*10 {
		t.Errorf("reported tokens: Cost = %s, %v; want 0.000650", cost, err)
	}
}

// TestChargeFallbackRules pins when Cost charges the fallback tokens and
// that Charge's usage costs the same when charged again.
func TestChargeFallbackRules(t *testing.T) {
	fb := Usage{FallbackInputTokens: 10, FallbackOutputTokens: 100}
	tests := []struct {
		name  string
		price Price
		usage Usage
		want  money.Micros
	}{
		// 10×5 + 100×40 = 4,050.
		{"images without per_image", tokensOnly, withImages(fb, 1), 4_050},
		{"images with per_image", imageBoth, withImages(fb, 1), 40_000},
		// Reported tokens win over the fallback: 1×5 + 2×40 = 85.
		{"reported tokens", tokensOnly, Usage{Tokens: usage.Tokens{InputTokens: 1, OutputTokens: 2}, Images: 1, FallbackInputTokens: 10, FallbackOutputTokens: 100}, 85},
		// A price without token rates never charges tokens.
		{"per request only", Price{PerRequest: 7}, withImages(fb, 1), 7},
		// 10×6 + 100×10 = 1,060.
		{"audio without per_minute", audioTokens, Usage{AudioMillis: 60_000, FallbackInputTokens: 10, FallbackOutputTokens: 100}, 1_060},
		{"audio with per_minute", audioBoth, Usage{AudioMillis: 60_000, FallbackInputTokens: 10, FallbackOutputTokens: 100}, 6_000},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			charged, cost, err := tc.price.Charge(tc.usage)
			if err != nil || cost != tc.want {
				t.Fatalf("Charge = %s, %v; want %s", cost, err, tc.want)
			}
			if again, err := tc.price.Cost(charged); err != nil || again != cost {
				t.Errorf("Cost of the charged usage %+v = %s, %v; want %s", charged, again, err, cost)
			}
		})
	}
	if _, err := tokensOnly.Cost(Usage{Images: 1, FallbackOutputTokens: -1}); !errors.Is(err, ErrCostRange) {
		t.Errorf("negative fallback: %v, want ErrCostRange", err)
	}
}

func withImages(u Usage, n int64) Usage {
	u.Images = n
	return u
}

// TestOutputAbsentIsNotZero checks image and audio usage that reports an
// input count but no output count: the output is absent, so it is
// estimated (as for chat), not charged as zero.
func TestOutputAbsentIsNotZero(t *testing.T) {
	img := mustParse(t, OpenAIImages, "application/json", `{"model":"gpt-image-1","prompt":"otter","size":"1024x1024","quality":"low"}`)
	u := usageOf(t, img, "application/json", `{"created":1,"data":[{"b64_json":"AAAA"}],"usage":{"input_tokens":50}}`)
	// One low-quality 1024x1024 image: 272 output tokens.
	if u.InputTokens != 50 || u.OutputTokens != 272 || !u.Estimated {
		t.Errorf("images: %+v, want 50 input and 272 estimated output tokens", u)
	}
	// 50×5 + 272×40 = 250 + 10,880 = 11,130.
	if cost, err := tokensOnly.Cost(u); err != nil || cost != 11_130 {
		t.Errorf("images: Cost = %s, %v; want 0.011130", cost, err)
	}

	ct := "multipart/form-data; boundary=" + testBoundary
	audio := mustParse(t, OpenAIAudio, ct, form(t, map[string]string{"model": "gpt-4o-transcribe"}, map[string][]byte{"file": make([]byte, 4000)}))
	u = usageOf(t, audio, "application/json", `{"text":"It is a test.","usage":{"type":"tokens","input_tokens":100}}`)
	// "It is a test.": ceil(13 / 4) = 4 tokens.
	if u.InputTokens != 100 || u.OutputTokens != 4 || !u.Estimated {
		t.Errorf("audio: %+v, want 100 input and 4 estimated output tokens", u)
	}

	speech := mustParse(t, OpenAIAudio, "application/json", `{"model":"gpt-4o-mini-tts","input":"Hello there","voice":"coral","stream_format":"sse"}`)
	u = usageOf(t, speech, "text/event-stream", "data: {\"type\":\"speech.audio.done\",\"usage\":{\"input_tokens\":12}}\n\n")
	// 11 characters at 750 a minute: 880 ms, ceil(880 × 1,250 / 60,000) = 19 audio tokens.
	if u.InputTokens != 12 || u.OutputTokens != 19 || !u.Estimated {
		t.Errorf("speech: %+v, want 12 input and 19 estimated output tokens", u)
	}
}
