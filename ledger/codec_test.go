package ledger

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/tollgate-dev/tollgate/usage"
)

// FuzzEntryBodyJSON checks the hand-written encoder of entry bodies
// against encoding/json: the output must be valid JSON that decodes to
// the same body as encoding/json's own encoding does.
func FuzzEntryBodyJSON(f *testing.F) {
	f.Add("charge", "tg_0123", "", "/v1/chat/completions", "gpt-4o-mini", int64(42), int64(0), int64(0), int64(14), int64(1767225600123456))
	f.Add("grant", "cs_1", "welcome \"bonus\"\n\t\\ <&>", "", "", int64(0), int64(0), int64(0), int64(0), int64(0))
	f.Add("charge", "x", "", "/v1/responses", "mødel\u2028\x00\x1f\xff\xfe", int64(1), int64(2), int64(3), int64(4), int64(-62135596800000000))
	f.Fuzz(func(t *testing.T, kind, reference, reason, route, model string, in, cached, write, out, atMicros int64) {
		at := time.UnixMicro(atMicros).UTC()
		if at.Year() < 0 || at.Year() > 9999 {
			t.Skip("encoding/json refuses years outside [0,9999]; no clock produces them")
		}
		b := entryBody{Kind: Kind(kind), Reference: reference, Reason: reason, At: at, Route: route, Model: model,
			Tokens: usage.Tokens{InputTokens: in, CachedInputTokens: cached, CacheWriteInputTokens: write, OutputTokens: out}}
		got := b.json()
		if !json.Valid([]byte(got)) {
			t.Fatalf("invalid JSON %q", got)
		}
		want, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		var fromGot, fromWant entryBody
		if err := json.Unmarshal([]byte(got), &fromGot); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(want, &fromWant); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(fromGot, fromWant) {
			t.Fatalf("%q decodes to %+v; encoding/json's %s to %+v", got, fromGot, want, fromWant)
		}
	})
}

func TestEntryBodyJSON(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 678000, time.UTC)
	tests := []struct {
		name string
		b    entryBody
		want string
	}{
		{"charge", entryBody{Kind: KindCharge, Reference: "tg_1", At: at, Route: "/v1/chat/completions", Model: "gpt-4o", Tokens: usage.Tokens{InputTokens: 42, OutputTokens: 14}},
			`{"kind":"charge","reference":"tg_1","at":"2026-01-02T03:04:05.000678Z","route":"/v1/chat/completions","model":"gpt-4o","input_tokens":42,"output_tokens":14}`},
		{"charge with every class", entryBody{Kind: KindCharge, Reference: "tg_2", At: at, Model: "claude-sonnet-4-5", Tokens: usage.Tokens{
			InputTokens: 9000, CachedInputTokens: 1000, CacheWriteInputTokens: 3000, CacheWrite1hInputTokens: 2000, AudioInputTokens: 10, ImageInputTokens: 20,
			OutputTokens: 300, AudioOutputTokens: 30, ImageOutputTokens: 40, WebSearchCalls: 3, WebFetchCalls: 2, CodeExecutionCalls: 1,
			FileSearchCalls: 4, CodeInterpreterCalls: 5, ImageGenerationCalls: 6}},
			`{"kind":"charge","reference":"tg_2","at":"2026-01-02T03:04:05.000678Z","model":"claude-sonnet-4-5","input_tokens":9000,` +
				`"cached_input_tokens":1000,"cache_write_input_tokens":3000,"cache_write_1h_input_tokens":2000,"audio_input_tokens":10,` +
				`"image_input_tokens":20,"output_tokens":300,"audio_output_tokens":30,"image_output_tokens":40,"web_search_calls":3,` +
				`"web_fetch_calls":2,"code_execution_calls":1,"file_search_calls":4,"code_interpreter_calls":5,"image_generation_calls":6}`},
		{"credit", entryBody{Kind: KindGrant, Reason: "say \"hi\"\n\\", At: at},
			`{"kind":"grant","reason":"say \"hi\"\n\\","at":"2026-01-02T03:04:05.000678Z"}`},
		{"control and invalid bytes", entryBody{Kind: KindAdjust, Reason: "a\x01b\xffc", At: at},
			`{"kind":"adjust","reason":"a\u0001b\ufffdc","at":"2026-01-02T03:04:05.000678Z"}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.b.json(); got != tc.want {
				t.Errorf("json() = %s\nwant     %s", got, tc.want)
			}
			if tc.b.Kind != KindCharge {
				return // the others replace invalid UTF-8, so do not round-trip
			}
			e, err := decodeEntry("alice", 7, formatEntry(-5, 10, tc.want))
			if err != nil {
				t.Fatal(err)
			}
			if want := tc.b.entry("alice", 7, -5, 10); !reflect.DeepEqual(e, want) {
				t.Errorf("decoded %+v\nwant    %+v", e, want)
			}
		})
	}
}

// TestDecodeEntryBeforeNewClasses checks that an entry stored before the
// token classes and tool counts after output_tokens existed still decodes,
// with those counts zero: entries are never rewritten.
func TestDecodeEntryBeforeNewClasses(t *testing.T) {
	raw := `-2256 97744 {"kind":"charge","reference":"tg_old","at":"2025-11-02T03:04:05.000678Z","route":"/v1/messages","model":"claude-sonnet-4-5","input_tokens":2520,"cached_input_tokens":2048,"output_tokens":15}`
	e, err := decodeEntry("bob", 3, raw)
	if err != nil {
		t.Fatal(err)
	}
	want := Entry{ID: "3", Customer: "bob", Kind: KindCharge, Amount: -2256, BalanceAfter: 97744, Reference: "tg_old",
		At: time.Date(2025, 11, 2, 3, 4, 5, 678000, time.UTC), Route: "/v1/messages", Model: "claude-sonnet-4-5",
		Tokens: usage.Tokens{InputTokens: 2520, CachedInputTokens: 2048, OutputTokens: 15}}
	if !reflect.DeepEqual(e, want) {
		t.Errorf("decoded %+v\nwant    %+v", e, want)
	}
}

// TestLotRecordRoundTrip checks that a lot record the embedded store
// writes parses back to itself, with the widest numbers and a reference
// holding spaces (the last field takes the rest of the record).
func TestLotRecordRoundTrip(t *testing.T) {
	for _, l := range []lotRecord{
		{remaining: 1, amount: 1, kind: KindGrant},
		{remaining: int64(MaxAmount), amount: int64(MaxAmount), priority: MaxPriority, expires: 1<<43 - 1, created: 1 << 42, kind: KindTopup, reference: "in_1 with spaces  and\ttabs"},
	} {
		got, err := parseLotRecord(string(l.appendText(nil)))
		if err != nil || got != l {
			t.Errorf("parseLotRecord(appendText(%+v)) = %+v, %v", l, got, err)
		}
	}
	// The text itself is what files written by earlier versions hold, and
	// what lua/lib.lua writes on Redis: it must not change. appendText
	// appends, keeping what the buffer holds.
	l := lotRecord{remaining: 1, amount: 2, priority: 3, expires: 4, created: 5, kind: KindGrant, reference: "a b"}
	if got, want := string(l.appendText([]byte("k="))), "k=1 2 3 4 5 grant a b"; got != want {
		t.Errorf("appendText = %q; want %q", got, want)
	}
}

// TestChargeText checks chargeText against what it must agree with: the
// text a stored entry decodes to (appendJSONString, read back by
// encoding/json, which turns each byte that is not UTF-8 into U+FFFD),
// cut to MaxTextLength bytes on a rune boundary. The cases sit around the
// limit and the cut chargeText makes first, which must not change the
// result.
func TestChargeText(t *testing.T) {
	stored := func(s string) string {
		var back string
		if err := json.Unmarshal(appendJSONString(nil, s), &back); err != nil {
			t.Fatalf("%.12q… does not encode as a JSON string: %v", s, err)
		}
		return truncateText(back)
	}
	ascii := func(n int) string { return strings.Repeat("a", n) }
	cases := []string{
		"", "gpt-4o", "gpt-\xff\xfe4o", "é\xc3", "\xf0\x9f\x98",
		strings.Repeat("\xff", 5000),
		strings.Repeat("é", 3000),
		ascii(1021) + "😀" + ascii(10),         // a 4-byte rune across the limit
		ascii(1020) + "😀" + ascii(10),         // one that ends on it
		ascii(1022) + "\xf0\x9f\x98" + "\xff", // a cut rune at the limit
		ascii(1023) + "\xff" + ascii(3000),
		ascii(1025) + "\xff",
		ascii(1025) + "😀",       // a rune across the first cut
		ascii(1023) + "€" + "x", // a 3-byte rune past the limit
		strings.Repeat("a\xff", 2000),
	}
	for n := MaxTextLength - 1; n <= MaxTextLength+utf8.UTFMax+1; n++ {
		cases = append(cases, ascii(n), ascii(n-1)+"\xff", ascii(n-2)+"é", ascii(n-3)+"€", ascii(n-3)+"\xe2\x82")
	}
	for _, s := range cases {
		got, want := chargeText(s), stored(s)
		if got != want {
			t.Errorf("chargeText(%d bytes %.12q…) = %d bytes %.12q…; want %d bytes %.12q…", len(s), s, len(got), got, len(want), want)
		}
		if len(got) > MaxTextLength || !utf8.ValidString(got) {
			t.Errorf("chargeText(%d bytes %.12q…) is %d bytes, valid UTF-8 %v", len(s), s, len(got), utf8.ValidString(got))
		}
	}
}
