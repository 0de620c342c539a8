// Package money is tollgate's fixed-point amount: credits with six decimals,
// held as an int64 count of micro-credits.
//
// It exists so that no float64 ever touches money. Amounts travel as decimal
// strings ("12.500000") on the wire and in config, and are parsed and printed
// here exactly. The package does not know about customers, prices or stores.
package money

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Micros is an amount of credits in millionths of a credit: 12.5 credits is
// Micros(12_500_000). It is signed: a debit is negative.
type Micros int64

// Credit is one whole credit.
const Credit Micros = 1_000_000

// Decimals is the number of decimal places an amount carries.
const Decimals = 6

// ErrSyntax reports text that is not a plain decimal amount.
var ErrSyntax = errors.New("money: not a decimal amount")

// ErrRange reports an amount too large to hold in int64 micro-credits.
var ErrRange = errors.New("money: amount out of range")

// Error describes why a string is not an amount. It matches ErrSyntax or
// ErrRange with errors.Is.
type Error struct {
	Input  string // the text that was parsed
	Reason string // what is wrong with it, and what to write instead
	Err    error  // ErrSyntax or ErrRange
}

func (e *Error) Error() string { return fmt.Sprintf("%q %s", e.Input, e.Reason) }

// Unwrap returns ErrSyntax or ErrRange.
func (e *Error) Unwrap() error { return e.Err }

// Parse reads a decimal amount of credits such as "12.5", "-3", "+0.000001"
// or "10000" into micro-credits. It accepts an optional sign, at least one
// digit before an optional decimal point, and one to six digits after it.
// It rejects everything else: exponents ("1e3"), NaN and Inf, more than six
// decimals (which would need rounding), empty strings, spaces, digit
// separators, and amounts beyond ±9223372036854.775807 credits. Errors are
// *Error values that say what to write instead.
func Parse(s string) (Micros, error) {
	bad := func(reason string) (Micros, error) {
		return 0, &Error{Input: s, Reason: reason, Err: ErrSyntax}
	}
	if s == "" {
		return bad(`is empty; want a decimal amount such as "10" or "12.5"`)
	}
	i := 0
	neg := false
	if s[0] == '+' || s[0] == '-' {
		neg = s[0] == '-'
		i++
	}
	intStart := i
	for i < len(s) && isDigit(s[i]) {
		i++
	}
	intPart := s[intStart:i]
	var fracPart string
	if i < len(s) && s[i] == '.' {
		i++
		fracStart := i
		for i < len(s) && isDigit(s[i]) {
			i++
		}
		fracPart = s[fracStart:i]
		if fracPart == "" && i == len(s) {
			return bad(`ends with a decimal point; write e.g. "12" or "12.0"`)
		}
	}
	if i < len(s) {
		switch c := s[i]; {
		case c == 'e' || c == 'E':
			return bad(`uses an exponent; write the amount in full, e.g. "1000" for 1e3`)
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			return bad(`contains white space; write just the amount, e.g. "12.5"`)
		case c == '_' || c == ',':
			return bad(`contains a digit separator; write e.g. "10000.5"`)
		default:
			return bad(`is not a decimal amount; want digits with an optional sign and decimal point, e.g. "12.5"`)
		}
	}
	if intPart == "" {
		return bad(`needs a digit before the decimal point, e.g. "0.5"`)
	}
	if len(fracPart) > Decimals {
		return bad(fmt.Sprintf("has %d decimals; amounts carry at most %d (one micro-credit is 0.000001)", len(fracPart), Decimals))
	}

	// Accumulate the magnitude in uint64 so that -9223372036854.775808
	// (math.MinInt64 micros) parses too.
	var mag uint64
	const limit = uint64(math.MaxInt64) + 1
	overflow := false
	add := func(d byte) {
		if overflow {
			return
		}
		if mag > (limit-uint64(d-'0'))/10 {
			overflow = true
			return
		}
		mag = mag*10 + uint64(d-'0')
	}
	for j := 0; j < len(intPart); j++ {
		add(intPart[j])
	}
	for j := 0; j < Decimals; j++ {
		if j < len(fracPart) {
			add(fracPart[j])
		} else {
			add('0')
		}
	}
	if overflow || (!neg && mag > math.MaxInt64) {
		return 0, &Error{Input: s, Reason: "is too large; amounts range from -9223372036854.775808 to 9223372036854.775807 credits", Err: ErrRange}
	}
	if neg {
		return Micros(-int64(mag-1) - 1), nil // no overflow at MinInt64
	}
	return Micros(mag), nil
}

// MustParse is Parse for constants in tests and examples; it panics on error.
func MustParse(s string) Micros {
	m, err := Parse(s)
	if err != nil {
		panic(err)
	}
	return m
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// String formats m as a decimal with exactly six places: "12.500000",
// "-0.000001", "0.000000".
func (m Micros) String() string {
	var buf [32]byte // the longest, -9223372036854.775808, is 21 bytes
	return string(m.AppendText(buf[:0]))
}

// Decimal formats m with only the decimals it needs, the way people write
// prices: "0.15", "10", "-0.000001".
func (m Micros) Decimal() string {
	s := strings.TrimRight(m.String(), "0")
	return strings.TrimSuffix(s, ".")
}

// AppendText appends the String form of m to b.
func (m Micros) AppendText(b []byte) []byte {
	mag := uint64(m)
	if m < 0 {
		b = append(b, '-')
		mag = -mag // two's complement: correct for math.MinInt64 too
	}
	b = strconv.AppendUint(b, mag/uint64(Credit), 10)
	frac := mag % uint64(Credit)
	b = append(b, '.')
	for div := uint64(Credit) / 10; div > 0; div /= 10 {
		b = append(b, byte('0'+frac/div%10))
	}
	return b
}

// MarshalText encodes m as its String form, so JSON and YAML carry amounts
// as decimal strings.
func (m Micros) MarshalText() ([]byte, error) { return m.AppendText(nil), nil }

// UnmarshalText parses text with Parse.
func (m *Micros) UnmarshalText(text []byte) error {
	v, err := Parse(string(text))
	if err != nil {
		return err
	}
	*m = v
	return nil
}

// UnmarshalJSON accepts a JSON string ("12.5") or a bare JSON number (12.5).
// A bare number is parsed from its text, never through float64, so 0.1 stays
// exactly 100000 micro-credits.
func (m *Micros) UnmarshalJSON(data []byte) error {
	if len(data) > 0 && data[0] == '"' {
		s, err := strconv.Unquote(string(data))
		if err != nil {
			return &Error{Input: string(data), Reason: "is not a valid JSON string", Err: ErrSyntax}
		}
		return m.UnmarshalText([]byte(s))
	}
	if string(data) == "null" {
		return &Error{Input: "null", Reason: `is not an amount; want a decimal string such as "12.5"`, Err: ErrSyntax}
	}
	return m.UnmarshalText(data)
}
