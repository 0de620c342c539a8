package meter

import (
	"bytes"
	"testing"

	"github.com/tollgate-dev/tollgate/money"
)

// TestDimensionCosts checks the charge of each testdata case of a billed
// dimension against the arithmetic worked out by hand beside it, at
// testPrices (credits per 1M tokens, per call, per minute), in
// micro-credits. The goldens record the same costs; this table says why
// they are right. Each dimension has a JSON and an SSE case.
func TestDimensionCosts(t *testing.T) {
	want := map[string]money.Micros{
		// Gemini (gemini-2.5-flash: input 0.30, cached 0.03, audio input
		// 1, output 2.50): the prompt includes the cached content and
		// thoughts are output: 266×0.30 + 1,024×0.03 + (161 + 786)×2.50
		// = 79.8 + 30.72 + 2,367.5 = 2,478.02 → 2,479.
		"google.gemini/generate": 2_479,
		// Running totals, the last wins: 31×0.30 + (63 + 412)×2.50
		// = 9.3 + 1,187.5 = 1,196.8 → 1,197; the same as SSE and as the
		// JSON array.
		"google.gemini/stream":       1_197,
		"google.gemini/stream_array": 1_197,
		// The tool-use prompt is input (gemini-2.5-pro: 1.25, out 10):
		// (42 + 3,120)×1.25 + (63 + 890)×10 = 3,952.5 + 9,530 → 13,483.
		"google.gemini/grounding_stream": 13_483,
		// Audio input at 1, image output at 30 (gemini-2.5-flash-image):
		// 8×0.30 + 160×1 + 11×2.50 + 1,290×30 = 2.4 + 160 + 27.5 + 38,700
		// = 38,889.9 → 38,890.
		"google.gemini/audio_image": 38_890,
		// Long context: 250,113 prompt tokens > 200,000, so every token at
		// the tier (2.50, cached 0.25, out 15): 50,113×2.50 + 200,000×0.25
		// + (37 + 1,800)×15 = 125,282.5 + 50,000 + 27,555 → 202,838.
		"google.gemini/long_context": 202_838,
		// Anthropic 1-hour cache writes (claude-sonnet-4-5: input 3, 5m
		// write 3.75, 1h write 6, read 0.30, output 15):
		// 21×3 + 1,800×3.75 + 3,000×6 + 120×15 = 63 + 6,750 + 18,000 + 1,800.
		"anthropic.messages/cache_1h": 26_613,
		// 21×3 + 3,000×0.30 + 1,800×3.75 + 95×15 = 63 + 900 + 6,750 + 1,425.
		"anthropic.messages/cache_1h_stream": 9_138,
		// Compaction: the compaction step (180,000 in, 3,500 out) and the
		// answer (23,000 in, 1,000 out), both at sonnet's rates:
		// 540,000 + 52,500 + 69,000 + 15,000. The top level alone
		// would be 84,000.
		"anthropic.messages/compaction": 676_500,
		// The same steps, streamed: message_start lists the steps so
		// far, message_delta all of them; the last list replaces the
		// first, never added to it.
		"anthropic.messages/compaction_stream": 676_500,
		// Advisor: haiku's steps (1,200 + 1,900 in, 80 + 300 out at 1
		// and 5) and opus's advice (1,300 in, 600 out at 5 and 25):
		// 3,100 + 1,900 + 6,500 + 15,000.
		"anthropic.messages/advisor":        26_500,
		"anthropic.messages/advisor_stream": 26_500,
		// Web search $10 and web fetch $0 per 1,000 calls:
		// 41,200×3 + 910×15 + 3×10,000 + 1×0 = 123,600 + 13,650 + 30,000.
		"anthropic.messages/web_search": 167_250,
		// 10,682×3 + 510×15 + 1×10,000 = 32,046 + 7,650 + 10,000.
		"anthropic.messages/web_search_stream": 49_696,
		// Code execution: a container, 5 minutes at $0.05 an hour
		// (0.004167): 2,100×3 + 400×15 + 4,167 = 6,300 + 6,000 + 4,167.
		"anthropic.messages/code_execution": 16_467,
		// 1,900×3 + 150×15 + 4,167 = 5,700 + 2,250 + 4,167.
		"anthropic.messages/code_execution_stream": 12_117,
		// Long context: 150,000 + 60,000 read = 210,000 > 200,000, so
		// every token at the tier's rates (6, read 0.60, out 22.50):
		// 150,000×6 + 60,000×0.60 + 2,000×22.50 = 900,000 + 36,000 + 45,000.
		"anthropic.messages/long_context": 981_000,
		// 199,000 + 1,000 read = 200,000, not above: standard rates.
		// 199,000×3 + 1,000×0.30 + 500×15 = 597,000 + 300 + 7,500.
		"anthropic.messages/long_context_stream": 604_800,
		// Fast mode (claude-opus-4-6 fast: 30, read 3, 5m write 37.50,
		// out 150) in the US (× 1.1):
		// (1,000×30 + 2,000×3 + 500×37.50 + 800×150) × 1.1
		// = (30,000 + 6,000 + 18,750 + 120,000) × 1.1 = 174,750 × 1.1.
		"anthropic.messages/fast_us": 192_225,
		// Standard speed in the US: (1,000×5 + 2,000×0.50 + 500×6.25 +
		// 800×25) × 1.1 = 29,125 × 1.1 = 32,037.5 → 32,038.
		"anthropic.messages/geo_us_stream": 32_038,
		// Audio in chat (gpt-4o-audio-preview: text 2.50/10, audio
		// 40/80): 200×2.50 + 1,000×40 + 100×10 + 800×80
		// = 500 + 40,000 + 1,000 + 64,000. At text rates: 12,000.
		"openai.chat/audio": 105_500,
		// 150×2.50 + 1,000×40 + 60×10 + 400×80 = 375 + 40,000 + 600 + 32,000.
		"openai.chat/audio_stream": 72_975,
		// Priority (gpt-4o: 4.25, out 17): 1,000×4.25 + 500×17.
		"openai.chat/priority": 12_750,
		// Flex (o4-mini: 0.55, read 0.138, out 2.20):
		// 976×0.55 + 1,024×0.138 + 3,000×2.20 = 536.8 + 141.312 + 6,600
		// = 7,278.112 → 7,279.
		"openai.chat/flex_stream": 7_279,
		// A search model's call, $35 per 1,000, on every request:
		// 15×2.50 + 120×10 + 35,000 = 37.5 + 1,200 + 35,000 → 36,238.
		"openai.chat/search": 36_238,
		// gpt-4o-mini-search-preview without web_search_options still
		// searches ($27.50 per 1,000): 9×0.15 + 40×0.60 + 27,500
		// = 1.35 + 24 + 27,500 → 27,526.
		"openai.chat/search_stream": 27_526,
		// Responses built-in tools (gpt-4.1: 2, out 8): 2 web searches
		// at $10/1,000, 1 file search at $2.50/1,000, 2 code interpreter
		// calls in 1 container at $0.03, 1 image at 0.167:
		// 5,200×2 + 700×8 + 20,000 + 2,500 + 30,000 + 167,000.
		"openai.responses/tools": 235_500,
		// Counted from output_item.added events and response.completed:
		// 1 search, 1 file search, 2 containers:
		// 3,900×2 + 420×8 + 10,000 + 2,500 + 60,000.
		"openai.responses/tools_stream": 83_660,
		// Long context (gpt-5.4 above 272,000: 5, read 0.50, out 22.50):
		// 200,000×5 + 100,000×0.50 + 5,000×22.50
		// = 1,000,000 + 50,000 + 112,500.
		"openai.responses/long_context": 1_162_500,
		// Priority, asked as "fast", answered "priority" (gpt-5.4: 5,
		// out 30): 1,000×5 + 200×30.
		"openai.responses/priority_stream": 11_000,
		// gpt-image-1.5 tokens (text 5/10, image 8/32):
		// 100×5 + 1,300×8 + 140×10 + 4,160×32 = 500 + 10,400 + 1,400 + 133,120.
		"openai.images/edit_tokens": 145_420,
		// 100×5 + 1,300×8 + 140×10 + 4,260×32 = 500 + 10,400 + 1,400 + 136,320.
		"openai.images/edit_tokens_stream": 148_620,
		// Audio tokens in a transcription (gpt-4o-transcribe: text 2.50,
		// audio 6, out 10): 50×2.50 + 1,400×6 + 300×10 = 125 + 8,400 + 3,000.
		"openai.audio/transcription_prompt": 11_525,
		// 20×2.50 + 100×6 + 6×10 = 50 + 600 + 60.
		"openai.audio/transcription_prompt_stream": 710,
		// whisper-1 bills the 36.71 s recording as 37 s:
		// 37,000 ms × 6,000 / 60,000.
		"openai.audio/whisper_seconds": 3_700,
	}
	seen := map[string]bool{}
	for _, tc := range loadCases(t) {
		w, ok := want[tc.name]
		if !ok {
			continue
		}
		seen[tc.name] = true
		t.Run(tc.name, func(t *testing.T) {
			_, u, _ := replay(t, tc, bytes.NewReader(tc.data))
			_, cost, err := testPrices[tc.api].Charge(tc.req, u)
			if err != nil {
				t.Fatal(err)
			}
			if cost != w {
				t.Errorf("charged %s, want %s", cost, w)
			}
			_, hold, err := testPrices[tc.api].Estimate(tc.req, testRouteMaxOutput, nil)
			if err != nil {
				t.Fatal(err)
			}
			if hold < cost {
				t.Errorf("held %s, less than the charge %s", hold, cost)
			}
		})
	}
	for name := range want {
		if !seen[name] {
			t.Errorf("no testdata case %s", name)
		}
	}
}
