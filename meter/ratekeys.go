package meter

import "github.com/tollgate-dev/tollgate/money"

// This file names the token rates as a price table spells them, for the
// config that parses them and the CLI that prints them, and holds the rule
// by which a rate left out follows another.

// rateKeys are the names of Rates' fields, in field order.
var rateKeys = [...]string{"input", "cached_input", "cache_write_input", "cache_write_input_1h", "audio_input", "image_input",
	"output", "audio_output", "image_output"}

// RateKeys lists the names of the token rates, in documentation order:
// the config keys of a price table, per 1M tokens.
func RateKeys() []string { return rateKeys[:] }

// Rate returns the rate named key (see RateKeys), or nil for a name that
// is not a rate's.
func (r *Rates) Rate(key string) *money.Micros {
	switch key {
	case "input":
		return &r.Input
	case "cached_input":
		return &r.CachedInput
	case "cache_write_input":
		return &r.CacheWriteInput
	case "cache_write_input_1h":
		return &r.CacheWriteInput1h
	case "audio_input":
		return &r.AudioInput
	case "image_input":
		return &r.ImageInput
	case "output":
		return &r.Output
	case "audio_output":
		return &r.AudioOutput
	case "image_output":
		return &r.ImageOutput
	}
	return nil
}

// RateDefault returns the name of the rate that the rate named key takes
// when a price table leaves it out, or "" for input and output, which are
// 0 (free) when left out. A part of a class is never priced below the
// class it belongs to by default: cache reads and writes, audio and
// image input at input; 1-hour cache writes at cache_write_input; audio
// and image output at output.
func RateDefault(key string) string {
	switch key {
	case "cached_input", "cache_write_input", "audio_input", "image_input":
		return "input"
	case "cache_write_input_1h":
		return "cache_write_input"
	case "audio_output", "image_output":
		return "output"
	}
	return ""
}

// FillDefaults gives every rate that set reports as left out its
// RateDefault, following chains (cache_write_input_1h takes
// cache_write_input's rate after its own default).
func (r *Rates) FillDefaults(set func(key string) bool) {
	for _, k := range rateKeys { // field order puts every default before its users
		if d := RateDefault(k); d != "" && !set(k) {
			*r.Rate(k) = *r.Rate(d)
		}
	}
}
