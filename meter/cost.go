package meter

import (
	"fmt"
	"math"
	"math/bits"

	"github.com/tollgate-dev/tollgate/money"
	"github.com/tollgate-dev/tollgate/usage"
)

// Usage is what one request consumed: its tokens, normalised to the
// ledger's convention whatever the provider's (usage.Tokens says how),
// and the units of the image and audio APIs, Images and AudioMillis;
// Price.Cost explains when those are charged instead of tokens.
type Usage struct {
	usage.Tokens

	// Images is the number of images generated (openai.images).
	Images int64 `json:"images,omitempty"`
	// ImageSize and ImageQuality select the Price.PerImage entry, e.g.
	// "1024x1024" and "hd". The response's values win over the request's,
	// since a request may say "auto".
	ImageSize    string `json:"image_size,omitempty"`
	ImageQuality string `json:"image_quality,omitempty"`

	// AudioMillis is the duration of the audio transcribed or spoken
	// (openai.audio), in milliseconds rounded up.
	AudioMillis int64 `json:"audio_millis,omitempty"`

	// Estimated is true when some figure above is tollgate's estimate
	// rather than the provider's report: the response ended before its
	// usage arrived (client gone, upstream cut, error event), or the API
	// does not report the unit (see Tap.End). A reported zero stays zero
	// with Estimated false.
	Estimated bool `json:"estimated"`

	// FallbackInputTokens and FallbackOutputTokens are tollgate's
	// estimate of the tokens of a complete openai.images or openai.audio
	// response that reported its units (Images; AudioMillis) but no
	// token counts, as DALL·E and whisper-1 responses do: the tokens the
	// same prompt, images or audio would take on a model billed by the
	// token (see Tap.End). They are not part of the usage the provider reported,
	// so they stay out of the token counts above and Estimated stays
	// false. Price.Cost charges them only at a price that has token
	// rates but no rate for those units (no per_image; no per_minute),
	// so that such a response is never free; Price.Charge then returns
	// them as the token counts, marked Estimated. Zero otherwise.
	FallbackInputTokens  int64 `json:"fallback_input_tokens,omitempty"`
	FallbackOutputTokens int64 `json:"fallback_output_tokens,omitempty"`
}

// tokenDenominator is the least common multiple of the two rate
// denominators: 1,000,000 tokens (token rates are per 1M tokens) and
// 60,000 milliseconds (PerMinute). Cost sums every component as a
// multiple of 1/tokenDenominator micro-credit, exactly, and rounds once.
const tokenDenominator = 3_000_000

// Cost returns what u costs at price p: the exact sum of every component
// that applies, rounded up to the micro-credit once (DESIGN "Money"), so
// that no component's rounding is paid twice and no fraction is lost.
//
// The components:
//
//   - tokens: (InputTokens − CachedInputTokens − CacheWriteInputTokens) ×
//     Input + CachedInputTokens × CachedInput + CacheWriteInputTokens ×
//     CacheWriteInput + OutputTokens × Output, all per 1M tokens. Cached
//     tokens are priced once, at their own rate, never also as input.
//   - PerRequest, once.
//   - Images × PerImage[key] and AudioMillis × PerMinute / 60,000, but only
//     when the usage has no tokens or p has no token rate. A model
//     that reports tokens (gpt-image-1, gpt-4o-transcribe) on a route
//     that prices tokens is charged by its tokens; the same response on a
//     route that prices only per image or per minute is charged by those.
//     Never both, so no unit is paid twice.
//   - The usage's fallback tokens (FallbackInputTokens,
//     FallbackOutputTokens) at the token rates, when the usage has no
//     tokens, p has a token rate, and p has no rate for the units the
//     usage has (no PerImage for Images, no PerMinute for AudioMillis):
//     a DALL·E image or a whisper-1 minute on a route that prices only
//     tokens is charged what a token-billed model would cost, never
//     nothing. See Charge for the usage this charges.
//
// The PerImage key is the first of "SIZE/QUALITY", "SIZE", "*/QUALITY" and
// "*" that p lists; if none is listed, the most expensive entry applies,
// so an image of a size the config forgot is never free.
//
// Cost returns an error matching ErrCostRange when a component is
// negative, when cached and cache-write tokens exceed InputTokens, or when
// the total does not fit in money.Micros. The arithmetic is 128-bit and
// never wraps.
func (p Price) Cost(u Usage) (money.Micros, error) {
	_, cost, err := p.Charge(u)
	return cost, err
}

// Charge returns the usage a charge of u at p stands for, and its cost
// (the same as Cost). The usage is u itself, except when the cost is
// that of u's fallback tokens (see Cost): then the fallback tokens become
// InputTokens and OutputTokens, the fallback fields are cleared, and
// Estimated is set, so that a ledger entry recording it shows the
// tokens charged and that they are an estimate. Charging the returned
// usage again costs the same.
func (p Price) Charge(u Usage) (Usage, money.Micros, error) {
	if u.FallbackInputTokens < 0 || u.FallbackOutputTokens < 0 {
		return Usage{}, 0, fmt.Errorf("%w: usage has a negative count: %+v", ErrCostRange, u)
	}
	if p.chargesFallback(u) {
		u.InputTokens, u.OutputTokens = u.FallbackInputTokens, u.FallbackOutputTokens
		u.FallbackInputTokens, u.FallbackOutputTokens = 0, 0
		u.Estimated = true
	}
	cost, err := p.cost(u)
	if err != nil {
		return Usage{}, 0, err
	}
	return u, cost, nil
}

// chargesFallback reports whether Cost charges u's fallback tokens at p.
func (p Price) chargesFallback(u Usage) bool {
	if u.FallbackInputTokens == 0 && u.FallbackOutputTokens == 0 {
		return false
	}
	if u.InputTokens != 0 || u.OutputTokens != 0 || !p.hasTokenRate() {
		return false
	}
	perImage := u.Images > 0 && len(p.PerImage) > 0
	perMinute := u.AudioMillis > 0 && p.PerMinute > 0
	return !perImage && !perMinute
}

// cost is Cost without the fallback; see Cost.
func (p Price) cost(u Usage) (money.Micros, error) {
	if u.InputTokens < 0 || u.CachedInputTokens < 0 || u.CacheWriteInputTokens < 0 ||
		u.OutputTokens < 0 || u.Images < 0 || u.AudioMillis < 0 {
		return 0, fmt.Errorf("%w: usage has a negative count: %+v", ErrCostRange, u)
	}
	if p.Input < 0 || p.CachedInput < 0 || p.CacheWriteInput < 0 || p.Output < 0 ||
		p.PerRequest < 0 || p.PerMinute < 0 {
		return 0, fmt.Errorf("%w: price has a negative rate", ErrCostRange)
	}
	cachedAndWritten := uint64(u.CachedInputTokens) + uint64(u.CacheWriteInputTokens)
	if cachedAndWritten > uint64(u.InputTokens) {
		return 0, fmt.Errorf("%w: %d cached and %d cache-write tokens exceed %d input tokens",
			ErrCostRange, u.CachedInputTokens, u.CacheWriteInputTokens, u.InputTokens)
	}
	uncached := uint64(u.InputTokens) - cachedAndWritten

	var acc accumulator
	// Token components, in micro-credits × 1,000,000; scaled by 3 below.
	var tokens accumulator
	tokens.addProduct(uncached, uint64(p.Input))
	tokens.addProduct(uint64(u.CachedInputTokens), uint64(p.CachedInput))
	tokens.addProduct(uint64(u.CacheWriteInputTokens), uint64(p.CacheWriteInput))
	tokens.addProduct(uint64(u.OutputTokens), uint64(p.Output))
	acc.addScaled(tokens, tokenDenominator/1_000_000)

	var whole accumulator // whole micro-credits; scaled by tokenDenominator
	whole.addProduct(1, uint64(p.PerRequest))

	byTokens := p.hasTokenRate() && (u.InputTokens > 0 || u.OutputTokens > 0)
	if u.Images > 0 && !byTokens {
		each, err := p.imagePrice(u.ImageSize, u.ImageQuality)
		if err != nil {
			return 0, err
		}
		whole.addProduct(uint64(u.Images), uint64(each))
	}
	acc.addScaled(whole, tokenDenominator)

	if u.AudioMillis > 0 && !byTokens {
		var audio accumulator // micro-credits × 60,000
		audio.addProduct(uint64(u.AudioMillis), uint64(p.PerMinute))
		acc.addScaled(audio, tokenDenominator/60_000)
	}

	if acc.overflow || acc.hi >= tokenDenominator {
		return 0, fmt.Errorf("%w: the cost of %+v does not fit in %d micro-credits", ErrCostRange, u, int64(math.MaxInt64))
	}
	q, r := bits.Div64(acc.hi, acc.lo, tokenDenominator)
	if r > 0 {
		q++ // round up to the micro-credit, once
	}
	if q > math.MaxInt64 {
		return 0, fmt.Errorf("%w: the cost of %+v does not fit in %d micro-credits", ErrCostRange, u, int64(math.MaxInt64))
	}
	return money.Micros(q), nil
}

// hasTokenRate reports whether p charges for tokens at all.
func (p Price) hasTokenRate() bool {
	return p.Input > 0 || p.CachedInput > 0 || p.CacheWriteInput > 0 || p.Output > 0
}

// imagePrice finds the PerImage rate for one image; see Cost.
func (p Price) imagePrice(size, quality string) (money.Micros, error) {
	if len(p.PerImage) == 0 {
		return 0, nil
	}
	var keys [4]string
	n := 0
	if size != "" && quality != "" {
		keys[n] = size + "/" + quality
		n++
	}
	if size != "" {
		keys[n] = size
		n++
	}
	if quality != "" {
		keys[n] = "*/" + quality
		n++
	}
	keys[n] = "*"
	n++
	for _, k := range keys[:n] {
		if v, ok := p.PerImage[k]; ok {
			if v < 0 {
				return 0, fmt.Errorf("%w: per_image %q is negative", ErrCostRange, k)
			}
			return v, nil
		}
	}
	var most money.Micros
	for k, v := range p.PerImage {
		if v < 0 {
			return 0, fmt.Errorf("%w: per_image %q is negative", ErrCostRange, k)
		}
		most = max(most, v)
	}
	return most, nil
}

// accumulator is an unsigned 128-bit sum that records overflow instead of
// wrapping.
type accumulator struct {
	hi, lo   uint64
	overflow bool
}

// addProduct adds a×b.
func (a *accumulator) addProduct(x, y uint64) {
	hi, lo := bits.Mul64(x, y)
	a.add(hi, lo)
}

func (a *accumulator) add(hi, lo uint64) {
	var c uint64
	a.lo, c = bits.Add64(a.lo, lo, 0)
	a.hi, c = bits.Add64(a.hi, hi, c)
	if c != 0 {
		a.overflow = true
	}
}

// addScaled adds b×m.
func (a *accumulator) addScaled(b accumulator, m uint64) {
	if b.overflow {
		a.overflow = true
		return
	}
	hiHi, hiLo := bits.Mul64(b.hi, m)
	loHi, loLo := bits.Mul64(b.lo, m)
	hi, c := bits.Add64(hiLo, loHi, 0)
	if hiHi != 0 || c != 0 {
		a.overflow = true
		return
	}
	a.add(hi, loLo)
}

// Lookup returns the price of model: its own entry, else the "*" entry.
// It returns a *ModelNotPricedError (matching ErrModelNotPriced) when
// there is neither, so an unlisted model is refused rather than served
// for free.
func (ps Prices) Lookup(model string) (Price, error) {
	if p, ok := ps[model]; ok && model != "" {
		return p, nil
	}
	if p, ok := ps["*"]; ok {
		return p, nil
	}
	return Price{}, &ModelNotPricedError{Model: model}
}
