package usage

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

// TestTokensListEveryField checks that TokenCounts and TokenSummary cover
// every field of Tokens, so that a class added to the struct alone fails
// here instead of going missing from stored entries and the CLI.
func TestTokensListEveryField(t *testing.T) {
	typ := reflect.TypeFor[Tokens]()
	var all Tokens
	for i := range typ.NumField() {
		reflect.ValueOf(&all).Elem().Field(i).SetInt(int64(100 + i))
	}
	i := 0
	for name, n := range all.TokenCounts() {
		if i >= typ.NumField() {
			t.Fatalf("TokenCounts yields more than the %d fields of Tokens: %s", typ.NumField(), name)
		}
		f := typ.Field(i)
		tag, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name != tag || n != int64(100+i) {
			t.Errorf("TokenCounts #%d = %s %d, want field %s: %s %d", i, name, n, f.Name, tag, 100+i)
		}
		i++
	}
	if i != typ.NumField() {
		t.Errorf("TokenCounts yields %d classes, Tokens has %d fields", i, typ.NumField())
	}

	zero := Tokens{}.TokenSummary()
	for i := range typ.NumField() {
		var one Tokens
		reflect.ValueOf(&one).Elem().Field(i).SetInt(7)
		if one.TokenSummary() == zero {
			t.Errorf("TokenSummary does not show %s: %q with it set to 7", typ.Field(i).Name, zero)
		}
	}
}

// TestToolCalls checks that every Tool has a name that parses back and a
// *_calls field of Tokens that Calls and SetCalls reach.
func TestToolCalls(t *testing.T) {
	typ := reflect.TypeFor[Tokens]()
	seen := map[string]bool{}
	for tool := range NumTools {
		name := tool.String()
		if got, ok := ParseTool(name); !ok || got != tool {
			t.Errorf("ParseTool(%q) = %v, %v", name, got, ok)
		}
		var tk Tokens
		tk.SetCalls(tool, 5)
		if tk.Calls(tool) != 5 {
			t.Errorf("%s: Calls after SetCalls(5) = %d", name, tk.Calls(tool))
		}
		v := reflect.ValueOf(tk)
		for i := range typ.NumField() {
			if v.Field(i).Int() == 5 {
				if tag, _, _ := strings.Cut(typ.Field(i).Tag.Get("json"), ","); tag != name+"_calls" {
					t.Errorf("%s counts into %s", name, tag)
				}
				seen[name] = true
			}
		}
	}
	for i := range typ.NumField() {
		if tag, _, _ := strings.Cut(typ.Field(i).Tag.Get("json"), ","); strings.HasSuffix(tag, "_calls") && !seen[strings.TrimSuffix(tag, "_calls")] {
			t.Errorf("field %s is no Tool's", tag)
		}
	}
	if _, ok := ParseTool("web_searches"); ok {
		t.Error("ParseTool accepted an unknown name")
	}
}

func TestTokenCountsStops(t *testing.T) {
	var names []string
	for name := range (Tokens{InputTokens: 1, OutputTokens: 2}).TokenCounts() {
		names = append(names, name)
		if len(names) == 2 {
			break
		}
	}
	if got := strings.Join(names, " "); got != "input_tokens cached_input_tokens" {
		t.Errorf("got %s", got)
	}
}

func TestTokensJSON(t *testing.T) {
	tests := []struct {
		name string
		t    Tokens
		want string
	}{
		{"zero", Tokens{}, `{}`},
		{"some", Tokens{InputTokens: 1200, CachedInputTokens: 1000, OutputTokens: 300},
			`{"input_tokens":1200,"cached_input_tokens":1000,"output_tokens":300}`},
		{"all", Tokens{InputTokens: 4, CachedInputTokens: 3, CacheWriteInputTokens: 1, OutputTokens: 2},
			`{"input_tokens":4,"cached_input_tokens":3,"cache_write_input_tokens":1,"output_tokens":2}`},
		{"new classes", Tokens{InputTokens: 9, CacheWriteInputTokens: 4, CacheWrite1hInputTokens: 3, AudioInputTokens: 2, ImageInputTokens: 1,
			OutputTokens: 5, AudioOutputTokens: 4, ImageOutputTokens: 1, WebSearchCalls: 3, CodeInterpreterCalls: 1},
			`{"input_tokens":9,"cache_write_input_tokens":4,"cache_write_1h_input_tokens":3,"audio_input_tokens":2,"image_input_tokens":1,` +
				`"output_tokens":5,"audio_output_tokens":4,"image_output_tokens":1,"web_search_calls":3,"code_interpreter_calls":1}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := json.Marshal(tc.t)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tc.want {
				t.Errorf("got %s, want %s", got, tc.want)
			}
		})
	}
}

func TestTokenSummary(t *testing.T) {
	tests := []struct {
		name string
		t    Tokens
		want string
	}{
		{"zero", Tokens{}, "0 in, 0 out"},
		{"plain", Tokens{InputTokens: 100, OutputTokens: 20}, "100 in, 20 out"},
		{"cached", Tokens{InputTokens: 1200, CachedInputTokens: 1000, OutputTokens: 300}, "1200 in (1000 cached), 300 out"},
		{"cache write", Tokens{InputTokens: 1200, CacheWriteInputTokens: 3, OutputTokens: 300}, "1200 in (3 cache write), 300 out"},
		{"both", Tokens{InputTokens: 1200, CachedInputTokens: 1000, CacheWriteInputTokens: 3, OutputTokens: 300},
			"1200 in (1000 cached, 3 cache write), 300 out"},
		{"1h writes, media and calls", Tokens{InputTokens: 1200, CacheWriteInputTokens: 300, CacheWrite1hInputTokens: 100, AudioInputTokens: 50,
			OutputTokens: 300, AudioOutputTokens: 20, WebSearchCalls: 3, WebFetchCalls: 1},
			"1200 in (300 cache write, 100 of them 1h, 50 audio), 300 out (20 audio), calls: 3 web_search, 1 web_fetch"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.t.TokenSummary(); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}
