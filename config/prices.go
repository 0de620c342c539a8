package config

import (
	"slices"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/tollgate-dev/tollgate/meter"
	"github.com/tollgate-dev/tollgate/money"
	"github.com/tollgate-dev/tollgate/usage"
)

// This file is the schema of a route's prices and server_tools: which
// keys a price table takes on each api, and how they become a
// meter.Price. Values are checked in pricecheck.go.

// The keys of a model's price table, of a tier, of a variant and of a
// server-tool allowance, in documentation order.
var (
	priceKeys = append(meter.RateKeys(),
		"per_request", "per_image", "per_minute", "tools", "tiers", "service_tier", "speed", "inference_geo")
	tierKeys      = append([]string{"above_input_tokens"}, meter.RateKeys()...)
	variantKeys   = append(meter.RateKeys(), "tiers", "multiplier")
	allowanceKeys = []string{"max_uses", "input_tokens"}
)

// rateExamples are the example values error messages give for each rate.
var rateExamples = map[string]string{
	"input": "0.15", "cached_input": "0.075", "cache_write_input": "3.75", "cache_write_input_1h": "6.00",
	"audio_input": "40.00", "image_input": "10.00", "output": "0.60", "audio_output": "80.00", "image_output": "40.00",
}

// PriceKeys lists the YAML price keys that apply to api, in documentation
// order; for an unknown api, every price key. A route's model may set only
// these: a rate the meter can never apply (the response never reports
// its tokens, or the API has no such variant) is a mistake worth
// reporting, not a silent no-op.
func PriceKeys(api meter.API) []string {
	switch api {
	case meter.OpenAIChat:
		// Chat reports audio and image input and audio output
		// (gpt-4o-audio-preview); search models bill a web search call.
		return []string{"input", "cached_input", "cache_write_input", "audio_input", "image_input", "output", "audio_output",
			"per_request", "tools", "tiers", "service_tier"}
	case meter.OpenAIResponses:
		return []string{"input", "cached_input", "cache_write_input", "output", "per_request", "tools", "tiers", "service_tier"}
	case meter.AnthropicMessages:
		return []string{"input", "cached_input", "cache_write_input", "cache_write_input_1h", "output",
			"per_request", "tools", "tiers", "service_tier", "speed", "inference_geo"}
	case meter.OpenAIEmbeddings:
		return []string{"input", "per_request"}
	case meter.OpenAIImages:
		// GPT image models report token usage (text and image input,
		// cached input, text and image output); dall-e-2/3 are priced per
		// image.
		return []string{"input", "cached_input", "image_input", "output", "image_output", "per_request", "per_image"}
	case meter.OpenAIAudio:
		// whisper-1 is priced per minute; gpt-4o-transcribe and the TTS
		// models report token usage, audio input and audio output apart.
		return []string{"input", "audio_input", "output", "audio_output", "per_request", "per_minute"}
	case meter.GoogleGemini:
		// usageMetadata splits the prompt and the candidates by modality
		// (audio input and image output have their own rates on Gemini's
		// price list) and reports cached content; long-context rates
		// apply above 200,000 prompt tokens on the Pro models.
		return []string{"input", "cached_input", "audio_input", "image_input", "output", "audio_output", "image_output",
			"per_request", "tiers"}
	case meter.Flat:
		return []string{"per_request"}
	}
	return slices.Clone(priceKeys)
}

// ToolKeys lists the tools whose per-call fee a price on api may set
// (its "tools" keys): those the api's responses report calls of.
func ToolKeys(api meter.API) []string {
	switch api {
	case meter.OpenAIChat:
		// A search model's every request is one call (meter.Prices.Charge).
		return []string{"web_search"}
	case meter.OpenAIResponses:
		return []string{"web_search", "file_search", "code_interpreter", "image_generation"}
	case meter.AnthropicMessages:
		return []string{"web_search", "web_fetch", "code_execution"}
	}
	return nil
}

// ServerToolKinds lists the kinds of server-side tools a route on api may
// set allowances for (its "server_tools" keys), or nil where none run.
func ServerToolKinds(api meter.API) []string {
	switch api {
	case meter.OpenAIResponses:
		return []string{"web_search", "file_search", "code_interpreter", "image_generation", meter.ToolKindOther}
	case meter.AnthropicMessages:
		return []string{"web_search", "web_fetch", "code_execution", meter.ToolKindAdvisor, meter.ToolKindOther}
	}
	return nil
}

// variantDims are the variant keys of a price, in the order the meter
// applies them; only inference_geo takes a multiplier (Anthropic publishes
// US-only inference as 1.1× every token rate).
var variantDims = []string{"service_tier", "speed", "inference_geo"}

func (p *parser) prices(n *yaml.Node, path string, api meter.API) meter.Prices {
	prices := meter.Prices{}
	for _, kv := range p.pairs(n, path, `a mapping of model names to prices, e.g. {gpt-4o-mini: {input: "0.15", output: "0.60"}}`) {
		mp := keyPath(path, kv.key)
		p.record(mp, kv.kline, kv.kcol)
		prices[kv.key] = p.price(kv, mp, api)
	}
	return prices
}

func (p *parser) price(kv pair, path string, api meter.API) meter.Price {
	var pr meter.Price
	f := p.mapping(kv.val, path, `a mapping of price keys, e.g. {input: "0.15", output: "0.60"}`, priceKeys)
	allowed := PriceKeys(api)
	if f.n == 0 && !p.reported[path] {
		p.errorf(kv.kline, path, "sets no price; give at least one of %s", strings.Join(allowed, ", "))
		return pr
	}
	// applies reports whether key, present in f, is a price of api;
	// rates say so themselves (rates).
	applies := func(key string) bool {
		v := f.vals[key]
		if api.Valid() && !slices.Contains(allowed, key) {
			p.errorf(v.kline, keyPath(path, key), "is not a price of api %s; its prices are %s", api, strings.Join(allowed, ", "))
			return false
		}
		return true
	}
	pr.Rates, _ = p.rates(f, path, api, allowed)
	for _, u := range []struct {
		key, example string
		dst          *money.Micros
	}{{"per_request", "0.001", &pr.PerRequest}, {"per_minute", "0.006", &pr.PerMinute}} {
		if v, ok := f.vals[u.key]; ok && applies(u.key) {
			if m, ok := p.amount(v.val, keyPath(path, u.key), u.example); ok {
				*u.dst = m
			}
		}
	}
	if v, ok := f.vals["per_image"]; ok && applies("per_image") {
		pr.PerImage = p.perImage(v, keyPath(path, "per_image"))
	}
	if v, ok := f.vals["tools"]; ok && applies("tools") {
		pr.Tools = p.toolFees(v, keyPath(path, "tools"), api)
	}
	if v, ok := f.vals["tiers"]; ok && applies("tiers") {
		pr.Tiers = p.tiers(v, keyPath(path, "tiers"), api, allowed)
	}
	for _, dim := range variantDims {
		if v, ok := f.vals[dim]; ok && applies(dim) {
			variants := p.variants(v, keyPath(path, dim), dim, api, allowed)
			switch dim {
			case "service_tier":
				pr.ServiceTier = variants
			case "speed":
				pr.Speed = variants
			case "inference_geo":
				pr.InferenceGeo = variants
			}
		}
	}
	return pr
}

// rates parses the token rates of f, each a price of api (allowed, its
// PriceKeys), fills the ones it leaves out with their defaults
// (meter.RateDefault), and reports whether it set input and output.
func (p *parser) rates(f fields, path string, api meter.API, allowed []string) (r meter.Rates, inOut bool) {
	set := map[string]bool{}
	for _, key := range meter.RateKeys() {
		v, ok := f.vals[key]
		if !ok {
			continue
		}
		set[key] = true
		kp := keyPath(path, key)
		if api.Valid() && !slices.Contains(allowed, key) {
			p.errorf(v.kline, kp, "is not a price of api %s; its prices are %s", api, strings.Join(allowed, ", "))
			continue
		}
		if m, ok := p.amount(v.val, kp, rateExamples[key]); ok {
			*r.Rate(key) = m
		}
	}
	r.FillDefaults(func(key string) bool { return set[key] })
	return r, set["input"] && set["output"]
}

// toolFees parses a tools map: tool name → fee per call.
func (p *parser) toolFees(kv pair, path string, api meter.API) [usage.NumTools]money.Micros {
	var fees [usage.NumTools]money.Micros
	allowed := ToolKeys(api)
	for _, e := range p.pairs(kv.val, path, `a mapping of tool names to fees per call, e.g. {web_search: "0.01"}`) {
		ep := keyPath(path, e.key)
		p.record(ep, e.kline, e.kcol)
		tool, ok := usage.ParseTool(e.key)
		if !ok || (api.Valid() && !slices.Contains(allowed, e.key)) {
			hint := ""
			if s := suggest(e.key, allowed); s != "" && !ok {
				hint = " (did you mean " + s + "?)"
			}
			p.errorf(e.kline, ep, "is not a tool api %s bills per call%s; its tools are %s", api, hint, strings.Join(allowed, ", "))
			continue
		}
		if m, ok := p.amount(e.val, ep, "0.01"); ok {
			fees[tool] = m
		}
	}
	return fees
}

// tiers parses a list of long-context tiers of a price of api.
func (p *parser) tiers(kv pair, path string, api meter.API, allowed []string) []meter.Tier {
	n := p.resolve(kv.val)
	if isNull(n) {
		return nil
	}
	if n.Kind != yaml.SequenceNode {
		p.errorf(n.Line, path, `want a list of tiers, e.g. [{above_input_tokens: 200000, input: "6.00", output: "22.50"}], got %s`, kindName(n))
		return nil
	}
	var tiers []meter.Tier
	for i, item := range n.Content {
		tp := indexPath(path, i)
		if r := p.resolve(item); r != nil {
			p.record(tp, r.Line, r.Column)
		}
		f := p.mapping(item, tp, `a tier: a mapping with above_input_tokens and rates, e.g. {above_input_tokens: 200000, input: "6.00", output: "22.50"}`, tierKeys)
		var t meter.Tier
		threshold := p.integer(f, "above_input_tokens", "200000", &t.AboveInputTokens)
		var inOut bool
		t.Rates, inOut = p.rates(f, tp, api, allowed)
		switch {
		case p.reported[tp]:
		case !threshold && f.vals["above_input_tokens"].val == nil:
			p.errorf(f.line, tp, "sets no above_input_tokens (want the input tokens above which the tier applies, e.g. 200000)")
		case !inOut:
			p.errorf(f.line, tp, `sets no input or no output (want both: a tier prices every token of a request above its threshold, e.g. {above_input_tokens: 200000, input: "6.00", output: "22.50"})`)
		}
		tiers = append(tiers, t)
	}
	return tiers
}

// variants parses one variant dimension of a price of api: value →
// variant.
func (p *parser) variants(kv pair, path, dim string, api meter.API, allowed []string) map[string]meter.Variant {
	keys := variantKeys
	if dim != "inference_geo" {
		keys = slices.DeleteFunc(slices.Clone(keys), func(k string) bool { return k == "multiplier" })
	}
	example := map[string]string{
		"service_tier":  `{priority: {input: "4.25", cached_input: "2.125", output: "17.00"}}`,
		"speed":         `{fast: {input: "30.00", output: "150.00"}}`,
		"inference_geo": `{us: {multiplier: "1.1"}}`,
	}[dim]
	out := map[string]meter.Variant{}
	for _, e := range p.pairs(kv.val, path, "a mapping of "+dim+" values to prices, e.g. "+example) {
		vp := keyPath(path, e.key)
		p.record(vp, e.kline, e.kcol)
		f := p.mapping(e.val, vp, "a mapping of rates, e.g. "+example, keys)
		var v meter.Variant
		var inOut bool
		v.Rates, inOut = p.rates(f, vp, api, allowed)
		v.HasRates = hasRate(f)
		if t, ok := f.vals["tiers"]; ok {
			v.Tiers = p.tiers(t, keyPath(vp, "tiers"), api, allowed)
		}
		m, hasMult := f.vals["multiplier"]
		if hasMult {
			if x, ok := p.amount(m.val, keyPath(vp, "multiplier"), "1.1"); ok {
				v.Multiplier = int64(x)
			}
		}
		switch {
		case p.reported[vp]:
		case v.HasRates && !inOut:
			p.errorf(e.kline, vp, "sets no input or no output (want both: a variant's rates replace the model's, e.g. %s)", example)
		case !v.HasRates && len(v.Tiers) > 0:
			p.errorf(e.kline, vp, "sets tiers but no rates; give its input and output too")
		case !v.HasRates && !hasMult:
			p.errorf(e.kline, vp, "sets no price (want e.g. %s)", example)
		}
		out[e.key] = v
	}
	return out
}

// hasRate reports whether f sets any token rate.
func hasRate(f fields) bool {
	for _, k := range meter.RateKeys() {
		if _, ok := f.vals[k]; ok {
			return true
		}
	}
	return false
}

func (p *parser) perImage(kv pair, path string) map[string]money.Micros {
	m := map[string]money.Micros{}
	entries := p.pairs(kv.val, path, `a mapping of sizes to prices, e.g. {"1024x1024": "0.04", "1024x1024/hd": "0.08"}`)
	if len(entries) == 0 && !p.reported[path] {
		p.errorf(kv.kline, path, `is empty; give prices by size, e.g. {"1024x1024": "0.04"}`)
	}
	for _, e := range entries {
		ep := keyPath(path, e.key)
		p.record(ep, e.kline, e.kcol)
		if v, ok := p.amount(e.val, ep, "0.04"); ok {
			m[e.key] = v
		}
	}
	return m
}

// serverTools parses a route's server_tools: kind → allowance. A key it
// leaves out of an allowance takes meter.DefaultToolAllowance's.
func (p *parser) serverTools(kv pair, path string, api meter.API) meter.ServerTools {
	allowed := ServerToolKinds(api)
	if api.Valid() && len(allowed) == 0 {
		p.errorf(kv.kline, path, "does not apply to api %s, whose requests run no server-side tools; remove it", api)
		return nil
	}
	st := meter.ServerTools{}
	for _, e := range p.pairs(kv.val, path, `a mapping of server-tool kinds to allowances, e.g. {web_search: {max_uses: 5, input_tokens: 25000}}`) {
		ep := keyPath(path, e.key)
		p.record(ep, e.kline, e.kcol)
		if api.Valid() && !slices.Contains(allowed, e.key) {
			hint := ""
			if s := suggest(e.key, allowed); s != "" {
				hint = " (did you mean " + s + "?)"
			}
			p.errorf(e.kline, ep, "is not a server-side tool of api %s%s; its kinds are %s", api, hint, strings.Join(allowed, ", "))
			continue
		}
		f := p.mapping(e.val, ep, "a mapping with max_uses and input_tokens, e.g. {max_uses: 5, input_tokens: 25000}", allowanceKeys)
		a := meter.DefaultToolAllowance(e.key)
		p.integer(f, "max_uses", "5", &a.MaxUses)
		p.integer(f, "input_tokens", "25000", &a.InputTokens)
		st[e.key] = a
	}
	return st
}
