package meter

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"

	"github.com/tidwall/gjson"
)

// nested returns depth arrays, one inside the other, around inner.
func nested(depth int, inner string) string {
	return strings.Repeat("[", depth) + inner + strings.Repeat("]", depth)
}

func TestCheckJSON(t *testing.T) {
	tests := []struct {
		name    string
		body    string
		verdict jsonVerdict
		at      int
	}{
		{"object", `{"a":[1,-2.5e+3,true,false,null,"x\"\\\/\b\f\n\r\t\u00e9"],"b":{}}`, jsonValid, 66},
		{"whitespace around", " \t\r\n[ ] \n", jsonValid, 9},
		{"scalar", `"s"`, jsonValid, 3},
		{"number", `-0.5E-7`, jsonValid, 7},
		{"deepest accepted", nested(MaxJSONDepth, ""), jsonValid, 2 * MaxJSONDepth},
		{"objects count too", strings.Repeat(`{"a":`, MaxJSONDepth) + "1" + strings.Repeat("}", MaxJSONDepth), jsonValid, 6*MaxJSONDepth + 1},
		{"one level too deep", nested(MaxJSONDepth+1, ""), jsonTooDeep, MaxJSONDepth},
		{"too deep, unterminated", strings.Repeat("[", 1<<20), jsonTooDeep, MaxJSONDepth},
		{"too deep in an object", `{"model":"m","messages":` + nested(MaxJSONDepth, "") + `}`, jsonTooDeep, 24 + MaxJSONDepth - 1},
		{"invalid before too deep", "[x" + strings.Repeat("[", 1000), jsonInvalid, 1},
		{"brackets in strings do not nest", `["` + strings.Repeat("[", 1000) + `"]`, jsonValid, 1004},
		{"empty", ``, jsonInvalid, 0},
		{"only whitespace", "  ", jsonInvalid, 2},
		{"trailing garbage", `{} x`, jsonInvalid, 3},
		{"two values", `1 2`, jsonInvalid, 2},
		{"trailing comma", `[1,]`, jsonInvalid, 3},
		{"trailing comma in object", `{"a":1,}`, jsonInvalid, 7},
		{"mismatched close", `[1}`, jsonInvalid, 2},
		{"missing colon", `{"a" 1}`, jsonInvalid, 5},
		{"non-string key", `{1:2}`, jsonInvalid, 1},
		{"leading zero", `01`, jsonInvalid, 1},
		{"bare minus", `-`, jsonInvalid, 1},
		{"fraction without digits", `1.`, jsonInvalid, 2},
		{"exponent without digits", `1e+`, jsonInvalid, 3},
		{"control character in string", "\"a\x01\"", jsonInvalid, 2},
		{"bad escape", `"\x"`, jsonInvalid, 2},
		{"short unicode escape", `"\u12"`, jsonInvalid, 5},
		{"unterminated string", `"abc`, jsonInvalid, 4},
		{"bad literal", `tru`, jsonInvalid, 0},
		{"unclosed", `[1,2`, jsonInvalid, 4},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v, at := checkJSON([]byte(tc.body))
			if v != tc.verdict || at != tc.at {
				t.Errorf("checkJSON = %d at %d, want %d at %d", v, at, tc.verdict, tc.at)
			}
			if len(tc.body) < 1<<16 && (v == jsonValid) != json.Valid([]byte(tc.body)) && v != jsonTooDeep {
				t.Errorf("checkJSON says %d, encoding/json.Valid says %v", v, json.Valid([]byte(tc.body)))
			}
		})
	}
}

// deepBody is a request body an attacker sends: nothing but "[", under
// the default max_request_bytes of 32 MiB.
func deepBody(size int) []byte { return bytes.Repeat([]byte("["), size) }

// TestDeepNestingRefused checks that a body nested deeper than
// MaxJSONDepth is refused as an invalid request naming the limit, on
// every API, flat included, and that the deepest accepted nesting still
// parses.
func TestDeepNestingRefused(t *testing.T) {
	tooDeep := fmt.Sprintf("the request body nests JSON arrays and objects more than %d levels deep, tollgate's limit; send a shallower body", MaxJSONDepth)
	deepMessages := `{"model":"gpt-4o","messages":` + nested(MaxJSONDepth, "") + `}`
	okMessages := `{"model":"gpt-4o","messages":` + nested(MaxJSONDepth-1, "") + `}`
	for _, api := range APIs() {
		for _, tc := range []struct {
			name string
			body []byte
		}{
			{"24 MB of [", deepBody(24 << 20)},
			{"valid but too deep", []byte(deepMessages)},
			{"too deep inside a string-free object", []byte(strings.Repeat(`{"a":`, MaxJSONDepth+1))},
		} {
			t.Run(string(api)+"/"+tc.name, func(t *testing.T) {
				_, err := ParseRequest(api, "application/json", tc.body)
				var re *RequestError
				if !errors.As(err, &re) || !errors.Is(err, ErrInvalidRequest) || re.Reason != tooDeep {
					t.Fatalf("err = %v, want the nesting limit", err)
				}
			})
		}
		t.Run(string(api)+"/deepest accepted", func(t *testing.T) {
			r, err := ParseRequest(api, "application/json", []byte(okMessages))
			if err != nil || r.Model != "gpt-4o" {
				t.Fatalf("ParseRequest = %+v, %v; want the body accepted", r, err)
			}
		})
	}
	// A flat route takes any body: one that is not JSON by its first bytes
	// is not refused for brackets further on.
	for _, body := range []string{"[x" + strings.Repeat("[", 1000), "\x00" + strings.Repeat("{", 1000), "text [[[["} {
		if r, err := ParseRequest(Flat, "application/octet-stream", []byte(body)); err != nil || r.Model != "" {
			t.Errorf("flat %.10q: %+v, %v; want it accepted", body, r, err)
		}
	}
	// Multipart fields are not JSON.
	form := form(t, map[string]string{"model": "whisper-1", "prompt": strings.Repeat("[", 1000)}, map[string][]byte{"file": wavFile(16000, 1, 16, 1)})
	if _, err := ParseRequest(OpenAIAudio, "multipart/form-data; boundary="+testBoundary, []byte(form)); err != nil {
		t.Errorf("multipart with brackets in a field: %v", err)
	}
}

// TestDeepNestingBoundedStack checks that refusing a deeply nested body
// takes neither stack nor heap in proportion to it: before checkJSON, a
// recursive validator grew the goroutine's stack by about 100 bytes per
// level (a 24 MB body overflowed the 1 GB maximum and killed the
// process; 8 concurrent 4 MB bodies took RSS past 2 GB).
func TestDeepNestingBoundedStack(t *testing.T) {
	body := deepBody(4 << 20)
	for _, api := range []API{OpenAIChat, Flat} {
		var before, after runtime.MemStats
		done := make(chan error)
		go func() {
			runtime.ReadMemStats(&before)
			_, err := ParseRequest(api, "application/json", body)
			// Measured before the goroutine ends and its stack is freed.
			runtime.ReadMemStats(&after)
			done <- err
		}()
		if err := <-done; !errors.Is(err, ErrInvalidRequest) {
			t.Fatalf("%s: err = %v, want ErrInvalidRequest", api, err)
		}
		if grew := int64(after.StackInuse) - int64(before.StackInuse); grew > 1<<20 {
			t.Errorf("%s: the stack grew by %d bytes to refuse a %d-byte body", api, grew, len(body))
		}
		allocs := testing.AllocsPerRun(5, func() { _, _ = ParseRequest(api, "application/json", body) })
		if allocs > 4 {
			t.Errorf("%s: %.0f allocations to refuse a %d-byte body", api, allocs, len(body))
		}
	}
}

// BenchmarkDeepNesting measures refusing a 4 MB body of "[": constant
// time and no allocation but the error.
func BenchmarkDeepNesting(b *testing.B) {
	body := deepBody(4 << 20)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseRequest(OpenAIChat, "application/json", body); err == nil {
			b.Fatal("accepted")
		}
	}
}

// BenchmarkCheckJSON measures validating a typical large request body (a
// long conversation) against gjson.ValidBytes, which checkJSON replaces.
func BenchmarkCheckJSON(b *testing.B) {
	var sb strings.Builder
	sb.WriteString(`{"model":"gpt-4o","messages":[`)
	for i := range 2000 {
		if i > 0 {
			sb.WriteByte(',')
		}
		fmt.Fprintf(&sb, `{"role":"user","content":[{"type":"text","text":"Message %d: the quick brown fox jumps over the lazy dog \"quoted\" \u00e9"}]}`, i)
	}
	sb.WriteString(`],"max_tokens":100,"temperature":0.7}`)
	body := []byte(sb.String())
	b.Run("checkJSON", func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		for b.Loop() {
			if v, _ := checkJSON(body); v != jsonValid {
				b.Fatal(v)
			}
		}
	})
	b.Run("gjson.ValidBytes", func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		for b.Loop() {
			if !gjson.ValidBytes(body) {
				b.Fatal("invalid")
			}
		}
	})
}

// FuzzCheckJSON checks checkJSON against encoding/json.Valid (iterative,
// nesting up to 10,000) and gjson.ValidBytes: the same verdict on every
// body nested at most MaxJSONDepth deep, and jsonTooDeep only for a body
// whose valid prefix really opens more than MaxJSONDepth containers.
func FuzzCheckJSON(f *testing.F) {
	for _, s := range []string{
		`{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}`,
		`[1,-2.5e+3,true,false,null,"x\"\\\/\b\f\n\r\t\u00e9"]`,
		nested(MaxJSONDepth, `{}`), nested(MaxJSONDepth+1, ""), nested(MaxJSONDepth-1, `"]]]"`),
		strings.Repeat(`{"a":`, MaxJSONDepth+3), `{"a":[{"b":[]}],"c":{}}`, "01", `"\u12"`, "[1,]", " \n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		v, at := checkJSON(body)
		if at < 0 || at > len(body) {
			t.Fatalf("offset %d out of range", at)
		}
		valid := json.Valid(body)
		if v == jsonValid && (!valid || !gjson.ValidBytes(body)) {
			t.Fatalf("checkJSON accepts what encoding/json (%v) or gjson refuses", valid)
		}
		if v == jsonInvalid && valid {
			t.Fatalf("checkJSON refuses valid JSON at %d", at)
		}
		if v == jsonTooDeep {
			// The prefix is valid JSON so far: brackets outside strings
			// count its depth exactly.
			if d := bracketDepth(body[:at+1]); d != MaxJSONDepth+1 {
				t.Fatalf("too deep at %d where the depth is %d", at, d)
			}
		}
		if valid && bracketDepth(body) <= MaxJSONDepth && v != jsonValid {
			t.Fatalf("checkJSON refuses valid JSON of depth %d: %d at %d", bracketDepth(body), v, at)
		}
	})
}

// bracketDepth is the deepest nesting of containers in b, a valid JSON
// document or a prefix of one, counted naively.
func bracketDepth(b []byte) int {
	d, deepest, inString, esc := 0, 0, false, false
	for _, c := range b {
		switch {
		case esc:
			esc = false
		case inString && c == '\\':
			esc = true
		case c == '"':
			inString = !inString
		case inString:
		case c == '[' || c == '{':
			d++
			deepest = max(deepest, d)
		case c == ']' || c == '}':
			d--
		}
	}
	return deepest
}
