package meter

import (
	"reflect"
	"testing"

	"github.com/tollgate-dev/tollgate/money"
)

// TestRateKeys checks that every rate name reaches its own field of Rates
// and every field has a name, so a rate added to Rates alone fails here.
func TestRateKeys(t *testing.T) {
	var r Rates
	seen := map[*money.Micros]string{}
	for _, k := range RateKeys() {
		f := r.Rate(k)
		if f == nil {
			t.Fatalf("Rate(%q) = nil", k)
		}
		if prev, dup := seen[f]; dup {
			t.Errorf("%s and %s name the same field", prev, k)
		}
		seen[f] = k
		if d := RateDefault(k); d != "" && r.Rate(d) == nil {
			t.Errorf("%s defaults to %q, not a rate", k, d)
		}
	}
	if n := reflect.TypeFor[Rates]().NumField(); len(seen) != n {
		t.Errorf("%d rate names for %d fields", len(seen), n)
	}
	if r.Rate("per_request") != nil {
		t.Error(`Rate("per_request") is not nil`)
	}
}

func TestFillDefaults(t *testing.T) {
	r := Rates{Input: 3_000_000, CacheWriteInput: 3_750_000, Output: 15_000_000, AudioOutput: 80_000_000}
	set := map[string]bool{"input": true, "cache_write_input": true, "output": true, "audio_output": true}
	r.FillDefaults(func(k string) bool { return set[k] })
	want := Rates{Input: 3_000_000, CachedInput: 3_000_000, CacheWriteInput: 3_750_000, CacheWriteInput1h: 3_750_000,
		AudioInput: 3_000_000, ImageInput: 3_000_000, Output: 15_000_000, AudioOutput: 80_000_000, ImageOutput: 15_000_000}
	if r != want {
		t.Errorf("got  %+v\nwant %+v", r, want)
	}
}
