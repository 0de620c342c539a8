package config

import (
	"regexp"
	"strings"

	"github.com/tollgate-dev/tollgate/meter"
	"github.com/tollgate-dev/tollgate/money"
	"github.com/tollgate-dev/tollgate/usage"
)

// This file checks the values of a route's prices and server_tools (their
// keys are prices.go's): no negative rate or fee, image sizes spelled as
// OpenAI spells them, tiers that rise, multipliers in range.

// imageKey matches a per_image key: SIZE or SIZE/QUALITY where SIZE is
// WIDTHxHEIGHT, "auto" or "*" (any size), as OpenAI's images API spells
// them (https://platform.openai.com/docs/api-reference/images/create).
// "*/QUALITY" prices a quality at any size; meter.Price.Cost looks it up
// after "SIZE/QUALITY" and "SIZE".
var imageKey = regexp.MustCompile(`^(\*|auto|[0-9]+x[0-9]+)(/[a-z]+)?$`)

// maxMultiplier bounds an inference_geo multiplier: 100×, far above any
// provider's, so that a typo ("110" for "1.10") is caught.
const maxMultiplier = 100 * money.Credit

func (k *checker) prices(path string, prices meter.Prices) {
	if len(prices) == 0 {
		k.errorf(path, `none set (want at least one model, e.g. gpt-4o-mini: {input: "0.15", output: "0.60"}, or "*" for every model)`)
		return
	}
	for _, model := range sortedKeys(prices) {
		pr := prices[model]
		mp := keyPath(path, model)
		if strings.TrimSpace(model) == "" {
			k.errorf(mp, `the model name is empty (want e.g. "gpt-4o-mini", or "*" for every model)`)
			continue
		}
		k.rates(mp, &pr.Rates)
		k.tiers(keyPath(mp, "tiers"), &pr.Rates, pr.Tiers)
		k.nonNegative(keyPath(mp, "per_request"), pr.PerRequest)
		k.nonNegative(keyPath(mp, "per_minute"), pr.PerMinute)
		for tool, fee := range pr.Tools {
			k.nonNegative(keyPath(keyPath(mp, "tools"), usage.Tool(tool).String()), fee)
		}
		ip := keyPath(mp, "per_image")
		for _, size := range sortedKeys(pr.PerImage) {
			sp := keyPath(ip, size)
			if !imageKey.MatchString(size) {
				k.errorf(sp, `%q is not an image size (want "SIZE", "SIZE/QUALITY", "*/QUALITY" or "*", e.g. "1024x1024" or "1024x1024/hd")`, size)
				continue
			}
			k.nonNegative(sp, pr.PerImage[size])
		}
		for _, dim := range []struct {
			key string
			m   map[string]meter.Variant
		}{{"service_tier", pr.ServiceTier}, {"speed", pr.Speed}, {"inference_geo", pr.InferenceGeo}} {
			for _, name := range sortedKeys(dim.m) {
				v := dim.m[name]
				vp := keyPath(keyPath(mp, dim.key), name)
				if v.HasRates {
					k.rates(vp, &v.Rates)
					k.tiers(keyPath(vp, "tiers"), &v.Rates, v.Tiers)
				}
				if v.Multiplier < 0 || v.Multiplier > int64(maxMultiplier) || (v.Multiplier == 0 && !v.HasRates) {
					k.errorf(keyPath(vp, "multiplier"), "%q is out of range (want a factor above 0 and at most 100, e.g. \"1.1\")", money.Micros(v.Multiplier).Decimal())
				}
			}
		}
	}
}

// rates checks a table's rates. A rate equal to the one it defaults to is
// checked there: one message for one mistake.
func (k *checker) rates(path string, r *meter.Rates) {
	for _, key := range meter.RateKeys() {
		v := *r.Rate(key)
		if d := meter.RateDefault(key); d != "" && v == *r.Rate(d) {
			continue
		}
		k.nonNegative(keyPath(path, key), v)
	}
}

// tiers checks that thresholds rise and that no tier prices a class below
// the rates under it (base): a tier prices every token of a request above
// its threshold, so a cheaper one would make a longer request cost less,
// and the preflight, which holds at the tier of the most input a request
// can have, relies on rates that only rise.
func (k *checker) tiers(path string, base *meter.Rates, tiers []meter.Tier) {
	under, prev := base, int64(0)
	for i := range tiers {
		t := &tiers[i]
		tp := indexPath(path, i)
		k.rates(tp, &t.Rates)
		switch {
		case t.AboveInputTokens <= 0:
			k.errorf(keyPath(tp, "above_input_tokens"), "%d must be greater than 0 (input tokens, e.g. 200000)", t.AboveInputTokens)
		case t.AboveInputTokens <= prev:
			k.errorf(keyPath(tp, "above_input_tokens"), "%d must be greater than the tier before's %d: list tiers from the lowest threshold up", t.AboveInputTokens, prev)
		}
		prev = max(prev, t.AboveInputTokens)
		for _, key := range meter.RateKeys() {
			if d := meter.RateDefault(key); d != "" && *t.Rate(key) == *t.Rate(d) && *under.Rate(key) == *under.Rate(d) {
				continue // both follow d: d's message covers it
			}
			if got, below := *t.Rate(key), *under.Rate(key); got < below {
				k.errorf(keyPath(tp, key), "%q is below the rate under it (%q): a tier prices every token of a request above its threshold, so it may not be cheaper than the rates below it",
					got.Decimal(), below.Decimal())
			}
		}
		under = &t.Rates
	}
}

// serverTools checks a route's allowances.
func (k *checker) serverTools(path string, st meter.ServerTools) {
	for _, kind := range sortedKeys(st) {
		a := st[kind]
		kp := keyPath(path, kind)
		if a.MaxUses <= 0 {
			k.errorf(keyPath(kp, "max_uses"), "%d must be greater than 0 (calls held for when the request's tool sets no max_uses, e.g. 5)", a.MaxUses)
		}
		// An advisor's 0 is the default: its advice is held at the
		// route's output ceiling.
		if a.InputTokens < 0 || (a.InputTokens == 0 && kind != meter.ToolKindAdvisor) {
			k.errorf(keyPath(kp, "input_tokens"), "%d must be greater than 0 (input tokens one call's result may add, e.g. 25000)", a.InputTokens)
		}
	}
}

func (k *checker) nonNegative(path string, m money.Micros) {
	if m < 0 {
		k.errorf(path, "%q is negative (want a price of 0 or more)", m.Decimal())
	}
}
