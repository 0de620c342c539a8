// Package usage is the token counts of one request: the one definition
// that the meter fills from a provider's response and the ledger records
// with the charge it pays for, so that a new class of tokens is added in
// one place. Like money, it is a leaf: it knows nothing of prices, stores,
// HTTP or logging.
package usage

import (
	"fmt"
	"iter"
	"strings"
)

// Tokens counts the tokens of one request by class, in the ledger's
// convention whatever the provider's:
//
//   - InputTokens counts every input token the provider counted: tokens
//     read from the prompt cache and tokens written to it included.
//     OpenAI's prompt_tokens and input_tokens already include cached
//     tokens; Anthropic's input_tokens excludes cache_read_input_tokens and
//     cache_creation_input_tokens, so the meter adds them, once.
//   - CachedInputTokens and CacheWriteInputTokens are the parts of
//     InputTokens read from and written to the prompt cache.
//   - OutputTokens includes reasoning (thinking) tokens, which both
//     providers already count inside their output figure.
//
// The JSON names are those of ledger entries, in the admin API and as
// stored (DESIGN "Ledger"); a zero count is left out.
//
// To add a class, add its field here and list it in TokenCounts and
// TokenSummary; TestTokensListEveryField fails until both do.
type Tokens struct {
	InputTokens           int64 `json:"input_tokens,omitempty"`
	CachedInputTokens     int64 `json:"cached_input_tokens,omitempty"`
	CacheWriteInputTokens int64 `json:"cache_write_input_tokens,omitempty"`
	OutputTokens          int64 `json:"output_tokens,omitempty"`
}

// TokenCounts yields each class's JSON name and count, in field order,
// zeros included: for code that writes or checks every class by name (the
// ledger's entry writer and its validation, log fields).
func (t Tokens) TokenCounts() iter.Seq2[string, int64] {
	return func(yield func(string, int64) bool) {
		_ = yield("input_tokens", t.InputTokens) &&
			yield("cached_input_tokens", t.CachedInputTokens) &&
			yield("cache_write_input_tokens", t.CacheWriteInputTokens) &&
			yield("output_tokens", t.OutputTokens)
	}
}

// TokenSummary describes t in one line for people, as `tollgate ledger`
// prints a charge: "1200 in (1000 cached, 3 cache write), 300 out". Input
// and output are always shown; the parts of the input only when not zero.
func (t Tokens) TokenSummary() string {
	in := fmt.Sprintf("%d in", t.InputTokens)
	var sub []string
	if t.CachedInputTokens > 0 {
		sub = append(sub, fmt.Sprintf("%d cached", t.CachedInputTokens))
	}
	if t.CacheWriteInputTokens > 0 {
		sub = append(sub, fmt.Sprintf("%d cache write", t.CacheWriteInputTokens))
	}
	if len(sub) > 0 {
		in += " (" + strings.Join(sub, ", ") + ")"
	}
	return in + fmt.Sprintf(", %d out", t.OutputTokens)
}
