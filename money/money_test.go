package money

import (
	"encoding/json"
	"errors"
	"math"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want Micros
	}{
		{"integer", "10", 10_000_000},
		{"one decimal", "12.5", 12_500_000},
		{"six decimals", "0.000001", 1},
		{"trailing zeros", "1.500000", 1_500_000},
		{"explicit plus", "+3", 3_000_000},
		{"negative", "-0.5", -500_000},
		{"negative zero", "-0", 0},
		{"zero", "0", 0},
		{"leading zeros", "007.25", 7_250_000},
		{"max", "9223372036854.775807", math.MaxInt64},
		{"min", "-9223372036854.775808", math.MinInt64},
		{"price per million", "0.075", 75_000},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Parse(tc.in)
			if err != nil {
				t.Fatalf("Parse(%q): %v", tc.in, err)
			}
			if got != tc.want {
				t.Fatalf("Parse(%q) = %d, want %d", tc.in, got, tc.want)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want string
		is   error
	}{
		{"empty", "", `"" is empty; want a decimal amount such as "10" or "12.5"`, ErrSyntax},
		{"seven decimals", "1.0000001", `"1.0000001" has 7 decimals; amounts carry at most 6 (one micro-credit is 0.000001)`, ErrSyntax},
		{"exponent", "1e3", `"1e3" uses an exponent; write the amount in full, e.g. "1000" for 1e3`, ErrSyntax},
		{"upper exponent", "2.5E2", `"2.5E2" uses an exponent; write the amount in full, e.g. "1000" for 1e3`, ErrSyntax},
		{"nan", "NaN", `"NaN" is not a decimal amount; want digits with an optional sign and decimal point, e.g. "12.5"`, ErrSyntax},
		{"inf", "-Inf", `"-Inf" is not a decimal amount; want digits with an optional sign and decimal point, e.g. "12.5"`, ErrSyntax},
		{"sign only", "-", `"-" needs a digit before the decimal point, e.g. "0.5"`, ErrSyntax},
		{"leading point", ".5", `".5" needs a digit before the decimal point, e.g. "0.5"`, ErrSyntax},
		{"trailing point", "12.", `"12." ends with a decimal point; write e.g. "12" or "12.0"`, ErrSyntax},
		{"space", " 1", `" 1" contains white space; write just the amount, e.g. "12.5"`, ErrSyntax},
		{"inner space", "1 000", `"1 000" contains white space; write just the amount, e.g. "12.5"`, ErrSyntax},
		{"separator", "10,000", `"10,000" contains a digit separator; write e.g. "10000.5"`, ErrSyntax},
		{"underscore", "10_000", `"10_000" contains a digit separator; write e.g. "10000.5"`, ErrSyntax},
		{"two points", "1.2.3", `"1.2.3" is not a decimal amount; want digits with an optional sign and decimal point, e.g. "12.5"`, ErrSyntax},
		{"double sign", "--1", `"--1" is not a decimal amount; want digits with an optional sign and decimal point, e.g. "12.5"`, ErrSyntax},
		{"hex", "0x10", `"0x10" is not a decimal amount; want digits with an optional sign and decimal point, e.g. "12.5"`, ErrSyntax},
		{"overflow", "9223372036854.775808", `"9223372036854.775808" is too large; amounts range from -9223372036854.775808 to 9223372036854.775807 credits`, ErrRange},
		{"negative overflow", "-9223372036854.775809", `"-9223372036854.775809" is too large; amounts range from -9223372036854.775808 to 9223372036854.775807 credits`, ErrRange},
		{"huge", "100000000000000000000000", `"100000000000000000000000" is too large; amounts range from -9223372036854.775808 to 9223372036854.775807 credits`, ErrRange},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Parse(tc.in)
			if err == nil {
				t.Fatalf("Parse(%q) = %d, want error", tc.in, got)
			}
			if err.Error() != tc.want {
				t.Fatalf("Parse(%q) error\n got: %s\nwant: %s", tc.in, err, tc.want)
			}
			if !errors.Is(err, tc.is) {
				t.Fatalf("Parse(%q) error %v does not match %v", tc.in, err, tc.is)
			}
		})
	}
}

func TestString(t *testing.T) {
	tests := []struct {
		in   Micros
		want string
	}{
		{0, "0.000000"},
		{1, "0.000001"},
		{-1, "-0.000001"},
		{12_500_000, "12.500000"},
		{-3_000_000, "-3.000000"},
		{math.MaxInt64, "9223372036854.775807"},
		{math.MinInt64, "-9223372036854.775808"},
	}
	for _, tc := range tests {
		if got := tc.in.String(); got != tc.want {
			t.Errorf("Micros(%d).String() = %q, want %q", int64(tc.in), got, tc.want)
		}
	}
}

func TestJSON(t *testing.T) {
	var v struct {
		A Micros `json:"a"`
		B Micros `json:"b"`
	}
	if err := json.Unmarshal([]byte(`{"a":"10.5","b":0.1}`), &v); err != nil {
		t.Fatal(err)
	}
	if v.A != 10_500_000 || v.B != 100_000 {
		t.Fatalf("got a=%d b=%d", v.A, v.B)
	}
	out, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(out), `{"a":"10.500000","b":"0.100000"}`; got != want {
		t.Fatalf("Marshal = %s, want %s", got, want)
	}
	for _, in := range []string{`{"a":1e3}`, `{"a":null}`, `{"a":"1.1234567"}`, `{"a":true}`} {
		if err := json.Unmarshal([]byte(in), &v); !errors.Is(err, ErrSyntax) {
			t.Errorf("Unmarshal(%s) error = %v, want ErrSyntax", in, err)
		}
	}
}

// FuzzParse checks that every accepted string round-trips exactly through
// String and that Parse never panics.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"0", "12.5", "-0.000001", "9223372036854.775807", "-9223372036854.775808", "1e3", "", ".", "+.", "1.0000000"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		m, err := Parse(s)
		if err != nil {
			return
		}
		back, err := Parse(m.String())
		if err != nil || back != m {
			t.Fatalf("round trip of %q: %q → %d, %v", s, m.String(), back, err)
		}
	})
}

func TestDecimal(t *testing.T) {
	tests := []struct {
		in   Micros
		want string
	}{
		{0, "0"},
		{150_000, "0.15"},
		{10_000_000, "10"},
		{100_000_000, "100"},
		{-1, "-0.000001"},
		{-2_500_000, "-2.5"},
	}
	for _, tc := range tests {
		if got := tc.in.Decimal(); got != tc.want {
			t.Errorf("Micros(%d).Decimal() = %q, want %q", int64(tc.in), got, tc.want)
		}
	}
}
