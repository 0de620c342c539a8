package meter

import (
	"fmt"
	"math"
	"math/bits"

	"github.com/tollgate-dev/tollgate/money"
	"github.com/tollgate-dev/tollgate/usage"
)

// Usage is what one request consumed: its tokens and tool calls,
// normalised to the ledger's convention whatever the provider's
// (usage.Tokens says how), how the provider served it, and the units of
// the image and audio APIs, Images and AudioMillis; Price.Cost explains
// when those are charged instead of tokens.
type Usage struct {
	usage.Tokens

	// Iterations are the steps of an Anthropic response that reports
	// usage.iterations (compaction, the advisor tool, server-tool loops,
	// a fallback model), each billed at its own model's rates; nil
	// otherwise. The Tokens above are then the response's top-level
	// usage, which may leave steps out (compaction's), and are not what
	// is charged: Prices.Charge prices each step and records their sum.
	Iterations []Iteration `json:"iterations,omitempty"`

	// ServiceTier, Speed and InferenceGeo are how the provider says it
	// served the request (OpenAI's service_tier; Anthropic's
	// usage.service_tier, usage.speed and usage.inference_geo), which
	// select the price's variants; "" when the response does not say.
	ServiceTier  string `json:"service_tier,omitempty"`
	Speed        string `json:"speed,omitempty"`
	InferenceGeo string `json:"inference_geo,omitempty"`

	// Images is the number of images generated (openai.images).
	Images int64 `json:"images,omitempty"`
	// ImageSize and ImageQuality select the Price.PerImage entry, e.g.
	// "1024x1024" and "hd". The response's values win over the request's,
	// since a request may say "auto".
	ImageSize    string `json:"image_size,omitempty"`
	ImageQuality string `json:"image_quality,omitempty"`

	// AudioMillis is the duration of the audio transcribed or spoken
	// (openai.audio), in milliseconds: as the provider bills it, in
	// whole seconds, when the response states it (see Tap.End).
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

// Iteration is one step of an Anthropic response's usage.iterations: a
// sampling of the requested model ("message"), a compaction of the
// context ("compaction"), the advisor model's sub-inference
// ("advisor_message") or the fallback model's answer ("fallback_message").
// Its token counts follow usage.Tokens (input includes cache reads and
// writes); its tool counts are unused.
type Iteration struct {
	Type string `json:"type"`
	// Model is the model the step ran on; "" means the request's model
	// (compaction steps name none: they run on the requested model).
	Model string `json:"model,omitempty"`
	usage.Tokens
}

// The arithmetic sums every component exactly as a multiple of
// 1/costDenominator micro-credit and rounds once. costDenominator is the
// least common multiple of the rate denominators, 1,000,000 tokens
// (token rates are per 1M tokens) and 60,000 milliseconds (PerMinute),
// times multiplierUnit, the denominator of Variant.Multiplier.
const (
	multiplierUnit  = 1_000_000
	costDenominator = 3_000_000 * multiplierUnit
)

// Cost returns what u costs at price p: the exact sum of every component
// that applies, rounded up to the micro-credit once (DESIGN "Money"), so
// that no component's rounding is paid twice and no fraction is lost.
//
// The components:
//
//   - tokens, of each step: the response as a whole, or each of its
//     Iterations (all at p; Prices.Charge prices them at their own
//     models). A step's rates are p's, or those of the variants its
//     response selects (Usage.ServiceTier, Speed, InferenceGeo; see
//     Price), or of the highest Tier its input tokens exceed. The input
//     not read from or written to the cache is priced by modality:
//     AudioInputTokens at AudioInput, ImageInputTokens at ImageInput, the
//     rest at Input; CachedInputTokens at CachedInput;
//     CacheWrite1hInputTokens at CacheWriteInput1h and the other cache
//     writes at CacheWriteInput; AudioOutputTokens at AudioOutput,
//     ImageOutputTokens at ImageOutput and the other output at Output,
//     all per 1M tokens. Every token is priced once, at one rate.
//     Cached and written tokens are priced at the cache rates whatever
//     their modality, since providers do not say it.
//   - tool calls: each tool's calls × p.Tools.
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
// Cost returns an error matching ErrCostRange when a count or rate is
// negative, when the parts of a step's input or output exceed it (cached
// and cache-write tokens more than InputTokens, 1-hour writes more than
// the writes, audio and image tokens more than the input or output),
// when two selected variants set a Multiplier, or when the total does
// not fit in money.Micros. The arithmetic is 128-bit and never wraps.
func (p Price) Cost(u Usage) (money.Micros, error) {
	if u.FallbackInputTokens == 0 && u.FallbackOutputTokens == 0 && len(u.Iterations) == 0 {
		return Prices(nil).cost(&p, &u) // Charge would change nothing: skip its copies
	}
	_, cost, err := p.Charge(u)
	return cost, err
}

// Charge returns the usage a charge of u at p stands for, and its cost
// (the same as Cost). The usage is u itself, except that:
//
//   - when the cost is that of u's fallback tokens (see Cost), the
//     fallback tokens become InputTokens and OutputTokens, the fallback
//     fields are cleared, and Estimated is set;
//   - when u has Iterations, its token counts are their sum: what was
//     billed, which the top level may understate.
//
// A ledger entry recording it then shows the tokens charged. Charging the
// returned usage again costs the same.
func (p Price) Charge(u Usage) (Usage, money.Micros, error) {
	return Prices(nil).charge(&p, u)
}

// Charge returns the usage a charge of u, the usage of the response to r,
// stands for and its cost, at the prices of r's model, like Price.Charge,
// except that each of u's Iterations is priced at its own model's price:
// that model's entry, else the "*" entry, else (a model the request did
// not name, such as a server-side fallback's) the price of r's model. Its
// error matches ErrModelNotPriced when r's model has no price, and
// ErrCostRange as Price.Cost's does.
//
// On openai.chat, a response of a model whose price has a web_search fee
// counts one web search call: OpenAI's search models
// (gpt-4o-search-preview and the like) search on every request, with or
// without web_search_options, and report no count.
func (ps Prices) Charge(r Request, u Usage) (Usage, money.Micros, error) {
	p, err := ps.Lookup(r.Model)
	if err != nil {
		return Usage{}, 0, err
	}
	if r.API == OpenAIChat && p.Tools[usage.WebSearch] > 0 && u.WebSearchCalls == 0 {
		u.WebSearchCalls = 1
	}
	return ps.charge(&p, u)
}

// charge is Charge at p, the request model's price, with ps for the
// models of iterations (nil: all at p).
func (ps Prices) charge(p *Price, u Usage) (Usage, money.Micros, error) {
	if u.FallbackInputTokens < 0 || u.FallbackOutputTokens < 0 {
		return Usage{}, 0, fmt.Errorf("%w: usage has a negative count: %+v", ErrCostRange, u)
	}
	if p.chargesFallback(&u) {
		u.InputTokens, u.OutputTokens = u.FallbackInputTokens, u.FallbackOutputTokens
		u.FallbackInputTokens, u.FallbackOutputTokens = 0, 0
		u.Estimated = true
	}
	if len(u.Iterations) > 0 {
		u = withIterationTotals(u)
	}
	cost, err := ps.cost(p, &u)
	if err != nil {
		return Usage{}, 0, err
	}
	return u, cost, nil
}

// withIterationTotals returns u with its token counts the sum of its
// iterations', plus whatever the top level counts beyond them in a class
// (which Cost then prices as one more step of the request's model). The
// returned Iterations include that step, so charging the result again
// costs the same. The slice is copied, never shared with u.
func withIterationTotals(u Usage) Usage {
	var sum, extra usage.Tokens
	for i := range u.Iterations {
		addTokenClasses(&sum, &u.Iterations[i].Tokens)
	}
	top := u.Tokens
	over := false
	each := func(dst *int64, t, s int64) {
		if t > s {
			*dst = t - s
			over = true
		}
	}
	each(&extra.InputTokens, top.InputTokens, sum.InputTokens)
	each(&extra.CachedInputTokens, top.CachedInputTokens, sum.CachedInputTokens)
	each(&extra.CacheWriteInputTokens, top.CacheWriteInputTokens, sum.CacheWriteInputTokens)
	each(&extra.CacheWrite1hInputTokens, top.CacheWrite1hInputTokens, sum.CacheWrite1hInputTokens)
	each(&extra.OutputTokens, top.OutputTokens, sum.OutputTokens)
	its := append([]Iteration(nil), u.Iterations...)
	if over {
		// A part may exceed its whole in the difference: grow the whole.
		extra.CacheWriteInputTokens = max(extra.CacheWriteInputTokens, extra.CacheWrite1hInputTokens)
		extra.InputTokens = max(extra.InputTokens, satAdd(extra.CachedInputTokens, extra.CacheWriteInputTokens))
		its = append(its, Iteration{Type: "message", Tokens: extra})
		addTokenClasses(&sum, &extra)
	}
	// Tool calls are the response's; the steps report no media parts, so
	// the response's are kept within the sums (and priced by no step).
	sum.AudioInputTokens = min(top.AudioInputTokens, sum.InputTokens)
	sum.ImageInputTokens = min(top.ImageInputTokens, sum.InputTokens-sum.AudioInputTokens)
	sum.AudioOutputTokens = min(top.AudioOutputTokens, sum.OutputTokens)
	sum.ImageOutputTokens = min(top.ImageOutputTokens, sum.OutputTokens-sum.AudioOutputTokens)
	for tool := range usage.NumTools {
		sum.SetCalls(tool, top.Calls(tool))
	}
	u.Tokens = sum
	u.Iterations = its
	return u
}

// addTokenClasses adds the token classes an iteration reports (not the
// media parts or tool calls) of t to sum, saturating.
func addTokenClasses(sum, t *usage.Tokens) {
	sum.InputTokens = satAdd(sum.InputTokens, t.InputTokens)
	sum.CachedInputTokens = satAdd(sum.CachedInputTokens, t.CachedInputTokens)
	sum.CacheWriteInputTokens = satAdd(sum.CacheWriteInputTokens, t.CacheWriteInputTokens)
	sum.CacheWrite1hInputTokens = satAdd(sum.CacheWrite1hInputTokens, t.CacheWrite1hInputTokens)
	sum.OutputTokens = satAdd(sum.OutputTokens, t.OutputTokens)
}

// chargesFallback reports whether Cost charges u's fallback tokens at p.
func (p *Price) chargesFallback(u *Usage) bool {
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

// cost is Cost without the fallback and the iteration totals; see Cost.
// The iterations' models are looked up in ps.
func (ps Prices) cost(p *Price, u *Usage) (money.Micros, error) {
	if u.Images < 0 || u.AudioMillis < 0 {
		return 0, fmt.Errorf("%w: usage has a negative count: %+v", ErrCostRange, *u)
	}
	if p.PerRequest < 0 || p.PerMinute < 0 {
		return 0, fmt.Errorf("%w: price has a negative rate", ErrCostRange)
	}
	var acc accumulator
	if len(u.Iterations) == 0 {
		if err := p.addStep(&acc, u, &u.Tokens); err != nil {
			return 0, err
		}
	} else {
		// The media parts and tool counts are the response's, not a
		// step's; the steps' sum is checked like a step.
		if err := checkParts(&u.Tokens); err != nil {
			return 0, err
		}
		for i := range u.Iterations {
			it := &u.Iterations[i]
			ip := p
			if it.Model != "" && ps != nil {
				if q, ok := ps.find(it.Model); ok {
					ip = &q
				}
			}
			if err := ip.addStep(&acc, u, &it.Tokens); err != nil {
				return 0, err
			}
		}
	}

	var whole accumulator // whole micro-credits; scaled by costDenominator
	for tool, fee := range p.Tools {
		if fee == 0 {
			continue
		}
		n := u.Calls(usage.Tool(tool))
		if n < 0 || fee < 0 {
			return 0, fmt.Errorf("%w: a negative %s call count or fee", ErrCostRange, usage.Tool(tool))
		}
		whole.addProduct(uint64(n), uint64(fee))
	}
	whole.addProduct(1, uint64(p.PerRequest))

	byTokens := p.hasTokenRate() && (u.InputTokens > 0 || u.OutputTokens > 0)
	if u.Images > 0 && !byTokens {
		each, err := p.imagePrice(u.ImageSize, u.ImageQuality)
		if err != nil {
			return 0, err
		}
		whole.addProduct(uint64(u.Images), uint64(each))
	}
	acc.addScaled(whole, costDenominator)

	if u.AudioMillis > 0 && !byTokens {
		var audio accumulator // micro-credits × 60,000
		audio.addProduct(uint64(u.AudioMillis), uint64(p.PerMinute))
		acc.addScaled(audio, costDenominator/60_000)
	}

	if acc.overflow || acc.hi >= costDenominator {
		return 0, fmt.Errorf("%w: the cost of %+v does not fit in %d micro-credits", ErrCostRange, *u, int64(math.MaxInt64))
	}
	q, r := bits.Div64(acc.hi, acc.lo, costDenominator)
	if r > 0 {
		q++ // round up to the micro-credit, once
	}
	if q > math.MaxInt64 {
		return 0, fmt.Errorf("%w: the cost of %+v does not fit in %d micro-credits", ErrCostRange, *u, int64(math.MaxInt64))
	}
	return money.Micros(q), nil
}

// checkParts reports the token counts of t that are negative or whose
// parts exceed their whole.
func checkParts(t *usage.Tokens) error {
	if t.InputTokens|t.CachedInputTokens|t.CacheWriteInputTokens|t.CacheWrite1hInputTokens|t.AudioInputTokens|
		t.ImageInputTokens|t.OutputTokens|t.AudioOutputTokens|t.ImageOutputTokens < 0 {
		return fmt.Errorf("%w: usage has a negative token count: %+v", ErrCostRange, *t)
	}
	if uint64(t.CachedInputTokens)+uint64(t.CacheWriteInputTokens) > uint64(t.InputTokens) {
		return fmt.Errorf("%w: %d cached and %d cache-write tokens exceed %d input tokens",
			ErrCostRange, t.CachedInputTokens, t.CacheWriteInputTokens, t.InputTokens)
	}
	if t.CacheWrite1hInputTokens > t.CacheWriteInputTokens {
		return fmt.Errorf("%w: %d 1-hour cache-write tokens exceed %d cache-write tokens",
			ErrCostRange, t.CacheWrite1hInputTokens, t.CacheWriteInputTokens)
	}
	if uint64(t.AudioInputTokens)+uint64(t.ImageInputTokens) > uint64(t.InputTokens) {
		return fmt.Errorf("%w: %d audio and %d image tokens exceed %d input tokens",
			ErrCostRange, t.AudioInputTokens, t.ImageInputTokens, t.InputTokens)
	}
	if uint64(t.AudioOutputTokens)+uint64(t.ImageOutputTokens) > uint64(t.OutputTokens) {
		return fmt.Errorf("%w: %d audio and %d image tokens exceed %d output tokens",
			ErrCostRange, t.AudioOutputTokens, t.ImageOutputTokens, t.OutputTokens)
	}
	return nil
}

// addStep adds the tokens of one step, t, at p's rates for u's variants
// and t's input, to acc in units of 1/costDenominator micro-credit.
func (p *Price) addStep(acc *accumulator, u *Usage, t *usage.Tokens) error {
	if err := checkParts(t); err != nil {
		return err
	}
	r, mult, err := p.rates(u, t.InputTokens)
	if err != nil {
		return err
	}
	uncached := t.InputTokens - t.CachedInputTokens - t.CacheWriteInputTokens
	// Audio and image tokens cached or written are priced at the cache
	// rates; what remains of each, in the uncached input, at its own.
	audioIn := min(t.AudioInputTokens, uncached)
	imageIn := min(t.ImageInputTokens, uncached-audioIn)
	write1h := t.CacheWrite1hInputTokens
	var tokens accumulator // micro-credits × 1,000,000
	tokens.addProduct(uint64(uncached-audioIn-imageIn), uint64(r.Input))
	tokens.addProduct(uint64(t.CachedInputTokens), uint64(r.CachedInput))
	tokens.addProduct(uint64(t.CacheWriteInputTokens-write1h), uint64(r.CacheWriteInput))
	tokens.addProduct(uint64(t.OutputTokens-t.AudioOutputTokens-t.ImageOutputTokens), uint64(r.Output))
	// The parts most responses do not have.
	if audioIn|imageIn|write1h|t.AudioOutputTokens|t.ImageOutputTokens != 0 {
		tokens.addProduct(uint64(audioIn), uint64(r.AudioInput))
		tokens.addProduct(uint64(imageIn), uint64(r.ImageInput))
		tokens.addProduct(uint64(write1h), uint64(r.CacheWriteInput1h))
		tokens.addProduct(uint64(t.AudioOutputTokens), uint64(r.AudioOutput))
		tokens.addProduct(uint64(t.ImageOutputTokens), uint64(r.ImageOutput))
	}
	acc.addScaled(tokens, uint64(costDenominator/1_000_000/multiplierUnit)*uint64(mult))
	return nil
}

// rates returns the token rates of a step with input tokens under u's
// variants, and the multiplier (in millionths) to apply to them.
func (p *Price) rates(u *Usage, input int64) (*Rates, int64, error) {
	r, tiers := &p.Rates, p.Tiers
	mult := int64(0)
	if len(p.ServiceTier)+len(p.Speed)+len(p.InferenceGeo)+len(tiers) == 0 {
		if r.negative() {
			return nil, 0, fmt.Errorf("%w: price has a negative rate", ErrCostRange)
		}
		return r, multiplierUnit, nil
	}
	for _, sel := range [...]struct {
		m   map[string]Variant
		key string
	}{{p.ServiceTier, u.ServiceTier}, {p.Speed, u.Speed}, {p.InferenceGeo, u.InferenceGeo}} {
		if sel.key == "" || len(sel.m) == 0 {
			continue
		}
		v, ok := sel.m[sel.key]
		if !ok {
			continue
		}
		if v.HasRates {
			r, tiers = &v.Rates, v.Tiers
		}
		if v.Multiplier != 0 {
			if mult != 0 || v.Multiplier < 0 {
				return nil, 0, fmt.Errorf("%w: more than one multiplier, or a negative one, applies", ErrCostRange)
			}
			mult = v.Multiplier
		}
	}
	for i := len(tiers) - 1; i >= 0; i-- {
		if input > tiers[i].AboveInputTokens {
			r = &tiers[i].Rates
			break
		}
	}
	if r.negative() {
		return nil, 0, fmt.Errorf("%w: price has a negative rate", ErrCostRange)
	}
	if mult == 0 {
		mult = multiplierUnit
	}
	return r, mult, nil
}

// hasTokenRate reports whether p charges for tokens at all.
func (p *Price) hasTokenRate() bool { return p.Rates.any() }

// imagePrice finds the PerImage rate for one image; see Cost.
func (p *Price) imagePrice(size, quality string) (money.Micros, error) {
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
	if p, ok := ps.find(model); ok {
		return p, nil
	}
	return Price{}, &ModelNotPricedError{Model: model}
}

// find is Lookup without the error.
func (ps Prices) find(model string) (Price, bool) {
	if p, ok := ps[model]; ok && model != "" {
		return p, true
	}
	p, ok := ps["*"]
	return p, ok
}
