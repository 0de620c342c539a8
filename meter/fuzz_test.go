package meter

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/tidwall/gjson"

	"github.com/tollgate-dev/tollgate/money"
)

// The fuzz targets run their seed corpora (testdata/fuzz/<Target>/) as
// ordinary tests; `go test ./meter -run TestFuzzSeeds -update` rewrites the
// corpora from the golden cases. Each target checks, for arbitrary input:
// no panic; the documented memory bound (a Tap never holds more than
// MaxHeldEventBytes, its output buffer stays within MaxHeldEventBytes plus
// one read, and one that does not filter allocates no buffer at all); and
// that the result does not depend on how the bytes were split into reads.
// FuzzSSE also holds what the filter lets through to what it may cut
// (checkFilterCuts).

// fuzzReq builds a request for api from a selector, covering the filter:
// for openai.chat, sel's low bit says whether the client asked for usage.
func fuzzReq(sel uint16) Request {
	apis := APIs()
	api := apis[int(sel>>1)%len(apis)]
	r := Request{API: api, Model: "m", N: 1 + int64(sel>>4)%3, Stream: true, IncludeUsage: sel&1 == 1, estInput: 7}
	if api == OpenAIAudio && sel&8 != 0 {
		r.speech, r.audioTokens, r.AudioMillis = true, 40, 2000
	}
	return r
}

// splitFeed feeds data to a new Tap in reads cut by the split pattern.
func splitFeed(t *testing.T, req Request, ct string, data []byte, split uint16) ([]byte, Usage) {
	tap := NewTap(req, ct)
	var client []byte
	step := 1 + int(split)%97
	for i := 0; i < len(data); {
		n := min(step, len(data)-i)
		client = append(client, tap.Feed(data[i:i+n])...)
		tap.checkBounds(t, n)
		i += n
		step = 1 + (step*31+int(split))%211
	}
	rest, u := tap.End()
	return append(client, rest...), u
}

func checkTap(t *testing.T, req Request, ct string, data []byte, split uint16) {
	whole, u := splitFeed(t, req, ct, data, 0xFFFF) // large reads
	bySplit, u2 := splitFeed(t, req, ct, data, split)
	oneByte := NewTap(req, ct)
	var ob []byte
	for i := range data {
		ob = append(ob, oneByte.Feed(data[i:i+1])...)
	}
	rest, u3 := oneByte.End()
	ob = append(ob, rest...)
	if !sameUsage(u, u2) || !sameUsage(u, u3) {
		t.Fatalf("usage depends on read sizes: %+v / %+v / %+v", u, u2, u3)
	}
	if !bytes.Equal(whole, bySplit) || !bytes.Equal(whole, ob) {
		t.Fatalf("client bytes depend on read sizes")
	}
	if !oneByte.filter && !bytes.Equal(whole, data) {
		t.Fatalf("client bytes changed without filtering")
	}
	if oneByte.filter && !isSubsequence(whole, data) {
		t.Fatalf("filter did more than remove bytes")
	}
	if u.InputTokens < 0 || u.OutputTokens < 0 || u.CachedInputTokens+u.CacheWriteInputTokens > u.InputTokens || u.Images < 0 || u.AudioMillis < 0 {
		t.Fatalf("inconsistent usage %+v", u)
	}
	p := Price{Rates: Rates{Input: 1_000_000, CachedInput: 500_000, CacheWriteInput: 1_250_000, Output: 4_000_000}, PerMinute: 6000, PerImage: map[string]money.Micros{"*": 1}}
	_, _ = p.Cost(u) // may fail with ErrCostRange on absurd counts; must not panic
}

func isSubsequence(sub, s []byte) bool {
	i := 0
	for _, c := range s {
		if i < len(sub) && sub[i] == c {
			i++
		}
	}
	return i == len(sub)
}

func FuzzSSE(f *testing.F) {
	f.Add([]byte(contentEvent+usageEvent+doneEvent), uint16(0), uint16(3))
	f.Add([]byte("event: x\ndata: {\"id\":\"c\",\n: note\ndata:\"usage\" : null , \"choices\":[]}\n\n"+usageEvent), uint16(0), uint16(7))
	f.Add([]byte("data: {\"usage\":null}\n\ndata: {\"a\":1,\"usage\":null}\n\n"+usageEvent+"data: {\"a\":2}"), uint16(0), uint16(1))
	// Two "usage" keys: the filter cuts the first if it is null, and
	// keeps an event whose other one is no report; data after the
	// document.
	f.Add([]byte("data:{\"a\":[],\"usage\":null,\"usage\":0}\n\ndata:{\"usage\":null,\"usage\":null}\n\ndata:{\"usage\":null}0"), uint16(0), uint16(7))
	f.Fuzz(func(t *testing.T, data []byte, sel, split uint16) {
		req := fuzzReq(sel)
		checkTap(t, req, "text/event-stream", data, split)
		tap := NewTap(req, "text/event-stream")
		out, _ := feedAllBytes(tap, data)
		checkFilterCuts(t, tap, data, out)
	})
}

// checkFilterCuts holds what a filtering Tap let through to what the
// filter may do, event by event, for a stream of LF line endings whose
// events the filter holds whole: an event reaches the client unchanged;
// or is dropped, and then its data reported usage (a "usage" member that
// is not null); or loses one "usage": null member with the comma that
// separates it, in one cut within one line, and when its data is one
// JSON document with one "usage" key the rest is the same JSON (of two
// keys, the filter cuts the first). Like the meter, the filter does not
// insist on valid JSON: data with bytes after its document is read up
// to them. Streams outside that shape are left to checkTap.
func checkFilterCuts(t *testing.T, tap *Tap, in, out []byte) {
	t.Helper()
	if !tap.filter || tap.mode != modeSSE || len(in) >= MaxHeldEventBytes/2 ||
		bytes.ContainsRune(in, '\r') || bytes.Contains(in, []byte("\n\n\n")) ||
		len(in) == 0 || isSpace(in[0]) || bytes.HasPrefix(in, []byte("\xef\xbb\xbf")) {
		return
	}
	rest := out
	for _, b := range sseBlocks(in) {
		if bytes.HasPrefix(rest, b) {
			rest = rest[len(b):]
			continue
		}
		d, o := sseData(b), rest
		if n := bytes.Index(o, []byte("\n\n")); n >= 0 {
			o = o[:n+2]
		}
		if !cutsUsageNull(b, o) {
			if reportsUsage(d) {
				continue // the usage chunk, dropped
			}
			t.Fatalf("event %q reached the client as %q", b, o)
		}
		if json.Valid(d) && bytes.Count(d, usageKey) == 1 {
			var want, got map[string]any
			if err := json.Unmarshal(d, &want); err != nil {
				t.Fatalf("event %q lost a member but is no JSON object: %v", b, err)
			}
			delete(want, "usage")
			if err := json.Unmarshal(sseData(o), &got); err != nil || !reflect.DeepEqual(got, want) {
				t.Fatalf("event %q reached the client as %q: data %v (%v), want %v", b, o, got, err, want)
			}
		}
		rest = rest[len(o):]
	}
	if len(rest) > 0 {
		t.Fatalf("the client got %q beyond the stream's events", rest)
	}
}

// sseBlocks cuts an LF-only stream into its event blocks, each with the
// blank line that ends it (the last one may lack it).
func sseBlocks(b []byte) [][]byte {
	var bs [][]byte
	for len(b) > 0 {
		n := bytes.Index(b, []byte("\n\n"))
		if n < 0 {
			return append(bs, b)
		}
		bs, b = append(bs, b[:n+2]), b[n+2:]
	}
	return bs
}

// sseData returns an LF-only event block's data: its data lines' values
// joined by LF.
func sseData(block []byte) []byte {
	var d [][]byte
	for _, line := range bytes.Split(bytes.TrimRight(block, "\n"), []byte("\n")) {
		if v, ok := bytes.CutPrefix(line, []byte("data")); ok && (len(v) == 0 || v[0] == ':') {
			v, _ = bytes.CutPrefix(v, []byte(":"))
			v, _ = bytes.CutPrefix(v, []byte(" "))
			d = append(d, v)
		}
	}
	return bytes.Join(d, []byte("\n"))
}

// usageMember matches a "usage" key and the start of its value.
var usageMember = regexp.MustCompile(`"usage"[ \t\n\r]*:[ \t\n\r]*(.)`)

// reportsUsage reports whether data has a "usage" member whose value is
// not null.
func reportsUsage(data []byte) bool {
	for _, m := range usageMember.FindAllSubmatchIndex(data, -1) {
		if !bytes.HasPrefix(data[m[2]:], []byte("null")) {
			return true
		}
	}
	return false
}

// usageNull matches what the filter may cut: a "usage": null member with
// the comma before it, or with the comma and the space after it, or
// alone.
var usageNull = regexp.MustCompile(`^(,[ \t]*"usage"[ \t]*:[ \t]*null|"usage"[ \t]*:[ \t]*null([ \t]*,[ \t]*)?)$`)

// cutsUsageNull reports whether o is b with one span cut out of one
// line, a "usage": null member as usageNull says.
func cutsUsageNull(b, o []byte) bool {
	n := len(b) - len(o)
	if n <= 0 {
		return false
	}
	pre, suf := 0, 0
	for pre < len(o) && o[pre] == b[pre] {
		pre++
	}
	for suf < len(o) && o[len(o)-1-suf] == b[len(b)-1-suf] {
		suf++
	}
	// b is o[:j], a cut of n bytes, then o[j:], for every j from
	// len(o)-suf to pre: where the cut lies among equal bytes is open.
	for j := max(0, len(o)-suf); j <= pre; j++ {
		if cut := b[j : j+n]; !bytes.ContainsRune(cut, '\n') && usageNull.Match(cut) {
			return true
		}
	}
	return false
}

// FuzzSSELineEndings writes one stream with the line endings SSE allows
// (LF, CR, CRLF), mixed line by line as ends says, and requires that it
// meters exactly like the same stream written with LF only: the same
// usage and events, and the same client bytes up to line endings (the
// filter removes the same events). It is read under any Content-Type (it
// opens with a comment line, so its bytes say SSE) and at any split,
// which puts a lone CR at a read boundary, before the LF of its CRLF or
// before the next line (checkTap also replays it one byte at a time).
func FuzzSSELineEndings(f *testing.F) {
	f.Add([]byte(contentEvent+usageEvent+doneEvent), []byte{0, 1, 2, 1, 2, 0, 1}, uint16(0), uint16(3))
	f.Add([]byte(contentEvent+usageEvent+doneEvent), []byte{1, 1, 1, 1, 1, 1}, uint16(0x100), uint16(1))
	f.Add([]byte("event: message_start\n"+contentEvent+usageEvent), []byte{2}, uint16(0x207), uint16(0))
	f.Add([]byte("data: {\"choices\":[],\ndata: \"usage\":{\"prompt_tokens\":1}}\n\n"), []byte{1, 2, 1, 0}, uint16(0x300), uint16(5))
	// A blank line ended by CR just before the usage chunk, and one ended
	// by LF after it: once the chunk is dropped the client reads the two
	// as one CRLF (see sseLines).
	f.Add([]byte("\n\ndata:{\"choices\":[],\"usage\":00}\n\n"), []byte("00100"), uint16(256), uint16(1))
	f.Fuzz(func(t *testing.T, text, ends []byte, sel, split uint16) {
		lines := strings.Split(strings.ReplaceAll(string(text), "\r", ""), "\n")
		lines = append([]string{": fuzz"}, lines...)
		eols := make([]string, len(lines))
		for i := range lines {
			eols[i] = "\n"
			if len(ends) > 0 {
				eols[i] = [...]string{"\n", "\r", "\r\n"}[int(ends[i%len(ends)])%3]
			}
		}
		// A CR, an empty line and an LF would read as one CRLF: the
		// empty line would vanish. Write that CR as CRLF.
		for i := len(lines) - 2; i >= 0; i-- {
			if eols[i] == "\r" && lines[i+1] == "" && eols[i+1][0] == '\n' {
				eols[i] = "\r\n"
			}
		}
		var lf, mixed strings.Builder
		for i, l := range lines {
			lf.WriteString(l + "\n")
			mixed.WriteString(l + eols[i])
		}
		req := fuzzReq(sel)
		ct := mislabels[int(sel>>8)%len(mislabels)]
		checkTap(t, req, ct, []byte(mixed.String()), split)

		wantTap := NewTap(req, "text/event-stream")
		wantClient, wantUsage := feedAllBytes(wantTap, []byte(lf.String()))
		tap := NewTap(req, ct)
		client, u := feedAllBytes(tap, []byte(mixed.String()))
		if !sameUsage(u, wantUsage) || tap.events != wantTap.events || tap.mode != modeSSE {
			t.Fatalf("usage %+v (%d events, framing %d), with LF only %+v (%d events)", u, tap.events, tap.mode, wantUsage, wantTap.events)
		}
		// Events near MaxHeldEventBytes may pass the filter in one form
		// and not the other, their sizes differing by the CRs.
		if len(text) < MaxHeldEventBytes/4 {
			if got, want := sseLines(client), sseLines(wantClient); !slices.Equal(got, want) {
				t.Fatalf("client bytes differ beyond line endings:\n%q\n%q", client, wantClient)
			}
		}
	})
}

// sseLines returns the lines of an SSE stream, read as an SSE client
// reads them (LF, CRLF or CR ends a line), with each run of blank lines
// as one: what the stream means, whatever its line endings. Runs count
// as one because a dropped event may leave a blank line ended by CR just
// before one ended by LF, which then read as one CRLF; a run of blank
// lines dispatches nothing beyond its first.
func sseLines(b []byte) []string {
	var lines []string
	for len(b) > 0 {
		n := bytes.IndexAny(b, "\r\n")
		if n < 0 {
			lines = append(lines, string(b))
			break
		}
		line := string(b[:n])
		if b[n] == '\r' && n+1 < len(b) && b[n+1] == '\n' {
			n++
		}
		b = b[n+1:]
		if line == "" && len(lines) > 0 && lines[len(lines)-1] == "" {
			continue
		}
		lines = append(lines, line)
	}
	return lines
}

// feedAllBytes feeds data to tap in one piece and ends it.
func feedAllBytes(tap *Tap, data []byte) ([]byte, Usage) {
	client := bytes.Clone(tap.Feed(data))
	rest, u := tap.End()
	return append(client, rest...), u
}

func FuzzJSON(f *testing.F) {
	f.Add([]byte(`{"usage":{"prompt_tokens":1,"completion_tokens":2}}`), uint16(0), uint16(3))
	f.Fuzz(func(t *testing.T, data []byte, sel, split uint16) {
		checkTap(t, fuzzReq(sel), "application/json", data, split)
	})
}

func FuzzParseRequest(f *testing.F) {
	f.Add(uint16(0), "application/json", []byte(`{"model":"gpt-4o","stream":true,"messages":[]}`))
	// Nesting at and around MaxJSONDepth, valid and not, in every API
	// (the selector picks the API).
	for sel := range uint16(len(APIs())) {
		f.Add(sel, "application/json", []byte(`{"model":"gpt-4o","messages":`+nested(MaxJSONDepth-1, "")+`}`))
		f.Add(sel, "application/json", []byte(`{"model":"gpt-4o","messages":`+nested(MaxJSONDepth, "")+`}`))
		f.Add(sel, "application/json", bytes.Repeat([]byte("["), 1<<16))
		f.Add(sel, "text/plain", []byte(strings.Repeat(`{"a":`, MaxJSONDepth+1)))
		f.Add(sel, "application/octet-stream", []byte("[x"+strings.Repeat("[", MaxJSONDepth+1)))
	}
	// google.gemini: either spelling of each field, both, or a null config.
	gemini := uint16(slices.Index(APIs(), GoogleGemini))
	for _, b := range []string{
		`{"contents":[{"parts":[{"text":"hi"}]}],"generation_config":{"max_output_tokens":99999,"candidate_count":2}}`,
		`{"contents":[],"generationConfig":{"maxOutputTokens":10,"max_output_tokens":20}}`,
		`{"contents":[],"generationConfig":null}`,
		`{"generationConfig":{"candidateCount":0}}`,
		`{"contents":[{"parts":[{"inlineData":{"mimeType":"image/png","data":"AAAA"}}]}],"generationConfig":"x"}`,
	} {
		f.Add(gemini, "application/json", []byte(b))
	}
	f.Fuzz(func(t *testing.T, sel uint16, contentType string, body []byte) {
		apis := APIs()
		api := apis[int(sel)%len(apis)]
		orig := bytes.Clone(body)
		r, err := ParseRequest(api, contentType, body)
		if !bytes.Equal(body, orig) {
			t.Fatalf("ParseRequest modified the body")
		}
		verdict, _ := checkJSON(body)
		var re *RequestError
		form := (api == OpenAIAudio || api == OpenAIImages) && isMultipart(contentType)
		if tooDeep := errors.As(err, &re) && strings.Contains(re.Reason, "levels deep"); tooDeep != (verdict == jsonTooDeep && !form) {
			t.Fatalf("nesting: verdict %d, err %v", verdict, err)
		}
		if err != nil {
			if api == Flat && verdict != jsonTooDeep && !(verdict == jsonValid && countKey(gjson.ParseBytes(body), "model") > 1) {
				t.Fatalf("flat refused a body: %v", err)
			}
			return
		}
		if r.N < 1 || r.N > MaxN || r.InputTokens < 0 || r.MaxOutputTokens < 0 || r.AudioMillis < 0 {
			t.Fatalf("inconsistent request %+v", r)
		}
		p := Price{Rates: Rates{Input: 1, CachedInput: 1, CacheWriteInput: 2, Output: 3}, PerRequest: 1, PerMinute: 1, PerImage: map[string]money.Micros{"*": 1}}
		ceiling := int64(sel)
		u, _, err := r.Estimate(p, ceiling)
		if err != nil && !strings.HasPrefix(err.Error(), "meter: cost out of range") {
			t.Fatalf("Estimate: %v", err)
		}
		out, capSet, err := r.Rewrite(body, ceiling)
		if err != nil {
			t.Fatalf("Rewrite: %v", err)
		}
		// Caps that stand as parsed (capsStand) are not read again, nor
		// is a stream_options parsing found missing looked for; the body
		// says the same.
		slow := r
		slow.capsMax, slow.noStreamOptions, slow.noCaps = 0, false, false
		if sout, scap, err := slow.Rewrite(body, ceiling); err != nil || !bytes.Equal(sout, out) || scap != capSet {
			t.Fatalf("Rewrite reading the body = %q, %d, %v; as parsed %q, %d", sout, scap, err, out, capSet)
		}
		fields := r.outputCapFields()
		if len(fields) == 0 && !(api == OpenAIChat && r.Stream) {
			if !bytes.Equal(out, body) || capSet != 0 {
				t.Fatalf("Rewrite changed a body it should leave alone")
			}
			return
		}
		if capSet == 0 && !(api == OpenAIChat && r.Stream && !r.IncludeUsage) && !bytes.Equal(out, body) {
			t.Fatalf("Rewrite changed the body but reports no cap")
		}
		r2, err := ParseRequest(api, contentType, out)
		if err != nil || r2.Model != r.Model || r2.N != r.N || r2.Stream != r.Stream {
			t.Fatalf("rewritten body parses as %+v, %v", r2, err)
		}
		if api == OpenAIChat && r.Stream && !r2.IncludeUsage {
			t.Fatalf("Rewrite did not force include_usage: %s", out)
		}
		// The hold bounds the output: the rewritten body reserves the
		// same output, and every cap field it carries asks for no more.
		per := outputCap(r.MaxOutputTokens, ceiling)
		if u2, _, err2 := r2.Estimate(p, ceiling); err == nil && err2 == nil && u2.OutputTokens != u.OutputTokens {
			t.Fatalf("rewritten body reserves %d output tokens, the original %d", u2.OutputTokens, u.OutputTokens)
		}
		if r2.MaxOutputTokens != per {
			t.Fatalf("rewritten body caps at %d, want %d: %s", r2.MaxOutputTokens, per, out)
		}
		for _, f := range fields {
			if v := gjson.GetBytes(out, f); v.Exists() && (v.Type != gjson.Number || v.Num <= 0 || capInt(v) > per) {
				t.Fatalf("upstream reads %s = %s, above the %d reserved", f, v.Raw, per)
			}
		}
		if capSet != 0 && capSet != per {
			t.Fatalf("reported cap %d, want %d", capSet, per)
		}
	})
}

// TestFuzzSeeds checks the seed corpora exist, and with -update writes them
// from the golden cases (responses of up to 16 KiB) and their requests.
func TestFuzzSeeds(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz")
	if !*update {
		for _, target := range []string{"FuzzSSE", "FuzzJSON", "FuzzParseRequest"} {
			ents, err := os.ReadDir(filepath.Join(dir, target))
			if err != nil || len(ents) < 10 {
				t.Errorf("%s: seed corpus missing or small (%d files, %v); run go test ./meter -run TestFuzzSeeds -update", target, len(ents), err)
			}
		}
		return
	}
	apiIndex := map[API]uint16{}
	for i, a := range APIs() {
		apiIndex[a] = uint16(i)
	}
	write := func(target, name string, args ...string) {
		p := filepath.Join(dir, target, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		body := "go test fuzz v1\n" + strings.Join(args, "\n") + "\n"
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	u16 := func(v uint16) string { return fmt.Sprintf("uint16(%d)", v) }
	bs := func(b []byte) string { return "[]byte(" + strconv.Quote(string(b)) + ")" }
	str := func(s string) string { return "string(" + strconv.Quote(s) + ")" }
	for _, tc := range loadCases(t) {
		seedName := strings.ReplaceAll(tc.name, "/", "_")
		stem := filepath.Join("testdata", string(tc.api), strings.TrimPrefix(tc.name, string(tc.api)+"/"))
		if len(tc.data) <= 16<<10 {
			sel := apiIndex[tc.api] << 1
			if tc.req.IncludeUsage {
				sel |= 1
			}
			if strings.HasPrefix(tc.contentType, "text/event-stream") {
				write("FuzzSSE", seedName, bs(tc.data), u16(sel), u16(7))
			} else {
				write("FuzzJSON", seedName, bs(tc.data), u16(sel), u16(7))
			}
		}
		if b, err := os.ReadFile(stem + ".request.json"); err == nil && len(b) <= 16<<10 {
			write("FuzzParseRequest", seedName, u16(apiIndex[tc.api]), str("application/json"), bs(b))
		} else if b, err := os.ReadFile(stem + ".request.multipart"); err == nil {
			// Keep the form, shorten the file to keep the corpus small.
			if i := bytes.Index(b, []byte("Content-Type: audio/")); i > 0 {
				i += bytes.Index(b[i:], []byte("\r\n\r\n")) + 4
				end := bytes.LastIndex(b, []byte("\r\n--"+testBoundary))
				b = append(append(bytes.Clone(b[:i]), b[i:min(i+300, end)]...), b[end:]...)
			}
			write("FuzzParseRequest", seedName, u16(apiIndex[tc.api]), str("multipart/form-data; boundary="+testBoundary), bs(b))
		}
	}
}
