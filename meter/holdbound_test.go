package meter

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/tollgate-dev/tollgate/money"
	"github.com/tollgate-dev/tollgate/usage"
)

// TestHoldCoversCharge checks DESIGN's promise that the preflight hold
// bounds the charge, for randomly generated requests whose output and
// tool use the request bounds (a max_tokens; every server tool's
// max_uses, or the route's allowance, and results within their per-call
// allowance; an advisor's max_tokens) and for every response the provider
// could send them: any split of the input into cache reads, 5-minute and
// (when the body asks for them) 1-hour cache writes, any number of tool
// calls within the bounds, each result re-read by the later steps, any
// compaction, the service tier, speed and geography the request may be
// served at, reported with or without usage.iterations. Prices are
// random too, with variants, a geography multiplier and long-context
// tiers that never price a class below the rates under them (as config
// enforces).
func TestHoldCoversCharge(t *testing.T) {
	rng := rand.New(rand.NewPCG(10, 20))
	for i := range 2500 {
		c := newHoldCase(rng)
		r, err := ParseRequest(c.api, "application/json", c.body)
		if err != nil {
			t.Fatalf("case %d: %v\n%s", i, err, c.body)
		}
		if c.api == GoogleGemini {
			r.Model = "m" // from the path
		}
		est, hold, err := c.prices.Estimate(r, c.ceiling, c.tools)
		if err != nil {
			t.Fatalf("case %d: Estimate: %v", i, err)
		}
		for j := range 20 {
			u := c.response(rng, r)
			charged, cost, err := c.prices.Charge(r, u)
			if err != nil {
				t.Fatalf("case %d/%d: Charge(%+v): %v", i, j, u, err)
			}
			if cost > hold {
				t.Fatalf("case %d/%d: charged %s, more than the hold %s\nrequest %.300s…\nceiling %d, allowances %+v\nusage %+v\ncharged %+v\nhold %+v\nprices %+v",
					i, j, cost, hold, c.body, c.ceiling, c.tools, u, charged, est, c.prices)
			}
		}
	}
}

// holdCase is one generated request with its route.
type holdCase struct {
	api     API
	body    []byte
	prompt  int64 // the most text tokens the body can hold: its bytes
	prices  Prices
	ceiling int64
	tools   ServerTools

	maxOut       int64 // the output cap the request sets, or 0
	n            int64 // google.gemini candidateCount, or 0
	serverTools  []genTool
	maxToolCalls int64
	advisorModel string
	advisorUses  int64
	advisorOut   int64
	compaction   bool
	cache1h      bool
	tier, speed  string // asked for, "" when not
	geo          string
}

type genTool struct {
	kind    string
	maxUses int64 // 0: the route's allowance
	perCall int64 // web_fetch max_content_tokens, or 0
}

func randRates(rng *rand.Rand) Rates {
	m := func() money.Micros { return money.Micros(rng.Int64N(50_000_000)) }
	return Rates{Input: m(), CachedInput: m(), CacheWriteInput: m(), CacheWriteInput1h: m(), AudioInput: m(), ImageInput: m(),
		Output: m(), AudioOutput: m(), ImageOutput: m()}
}

// raise returns r with every rate raised by up to 50 credits: a tier
// above r.
func raise(rng *rand.Rand, r Rates) Rates {
	up := func(v money.Micros) money.Micros { return v + money.Micros(rng.Int64N(50_000_000)) }
	return Rates{Input: up(r.Input), CachedInput: up(r.CachedInput), CacheWriteInput: up(r.CacheWriteInput),
		CacheWriteInput1h: up(r.CacheWriteInput1h), AudioInput: up(r.AudioInput), ImageInput: up(r.ImageInput),
		Output: up(r.Output), AudioOutput: up(r.AudioOutput), ImageOutput: up(r.ImageOutput)}
}

func randTiers(rng *rand.Rand, base Rates) []Tier {
	var tiers []Tier
	threshold, r := int64(0), base
	for range rng.IntN(3) {
		threshold += 1 + rng.Int64N(300_000)
		r = raise(rng, r)
		tiers = append(tiers, Tier{AboveInputTokens: threshold, Rates: r})
	}
	return tiers
}

func randPrice(rng *rand.Rand) Price {
	p := Price{Rates: randRates(rng)}
	p.Tiers = randTiers(rng, p.Rates)
	for tool := range usage.NumTools {
		if rng.IntN(2) == 0 {
			p.Tools[tool] = money.Micros(rng.Int64N(200_000))
		}
	}
	p.PerRequest = money.Micros(rng.Int64N(1000))
	if rng.IntN(2) == 0 {
		p.ServiceTier = map[string]Variant{}
		for _, k := range []string{"priority", "flex", "standard", "scale"} {
			if rng.IntN(2) == 0 {
				r := randRates(rng)
				p.ServiceTier[k] = Variant{HasRates: true, Rates: r, Tiers: randTiers(rng, r)}
			}
		}
	}
	if rng.IntN(2) == 0 {
		r := randRates(rng)
		p.Speed = map[string]Variant{"fast": {HasRates: true, Rates: r}}
	}
	if rng.IntN(2) == 0 {
		p.InferenceGeo = map[string]Variant{"us": {Multiplier: 1_000_000 + rng.Int64N(1_000_000)}}
		if rng.IntN(2) == 0 {
			p.InferenceGeo["eu"] = Variant{HasRates: true, Rates: randRates(rng)}
		}
	}
	return p
}

func newHoldCase(rng *rand.Rand) *holdCase {
	c := &holdCase{api: []API{AnthropicMessages, OpenAIChat, OpenAIResponses, GoogleGemini}[rng.IntN(4)]}
	c.prices = Prices{"m": randPrice(rng), "adv": randPrice(rng)}
	if rng.IntN(2) == 0 {
		c.ceiling = 1 + rng.Int64N(20_000)
	}
	if rng.IntN(2) == 0 {
		c.tools = ServerTools{}
		for _, k := range ServerToolKinds() {
			if rng.IntN(2) == 0 {
				c.tools[k] = ToolAllowance{MaxUses: 1 + rng.Int64N(6), InputTokens: 1 + rng.Int64N(40_000)}
			}
		}
	}
	body := map[string]any{"model": "m"}
	text := strings.Repeat("word ", rng.IntN(20_000))
	if rng.IntN(3) == 0 && c.api == AnthropicMessages {
		c.cache1h = true
		body["system"] = []any{map[string]any{"type": "text", "text": "rules", "cache_control": map[string]any{"type": "ephemeral", "ttl": "1h"}}}
	}
	body["messages"] = []any{map[string]any{"role": "user", "content": text}}
	if rng.IntN(5) > 0 {
		c.maxOut = 1 + rng.Int64N(8000)
		field := map[API]string{AnthropicMessages: "max_tokens", OpenAIChat: "max_completion_tokens", OpenAIResponses: "max_output_tokens"}[c.api]
		body[field] = c.maxOut
	}
	if rng.IntN(2) == 0 {
		c.tier = []string{"auto", "default", "priority", "flex", "fast", "standard_only"}[rng.IntN(6)]
		body["service_tier"] = c.tier
	}
	switch c.api {
	case AnthropicMessages:
		if rng.IntN(3) == 0 {
			c.speed = "fast"
			body["speed"] = "fast"
		}
		if rng.IntN(3) == 0 {
			c.geo = []string{"us", "global", "eu"}[rng.IntN(3)]
			body["inference_geo"] = c.geo
		}
		var tools []any
		for _, k := range []string{"web_search", "web_fetch", "code_execution"} {
			if rng.IntN(2) == 0 {
				continue
			}
			g := genTool{kind: k}
			typ := map[string]string{"web_search": "web_search_20250305", "web_fetch": "web_fetch_20250910", "code_execution": "code_execution_20250825"}[k]
			tool := map[string]any{"type": typ, "name": k}
			if rng.IntN(2) == 0 {
				g.maxUses = 1 + rng.Int64N(5)
				tool["max_uses"] = g.maxUses
			}
			if k == "web_fetch" && rng.IntN(2) == 0 {
				g.perCall = 1 + rng.Int64N(30_000)
				tool["max_content_tokens"] = g.perCall
			}
			c.serverTools = append(c.serverTools, g)
			tools = append(tools, tool)
		}
		if rng.IntN(3) == 0 {
			c.advisorModel, c.advisorOut = "adv", 1+rng.Int64N(3000)
			tool := map[string]any{"type": "advisor_20260301", "name": "advisor", "model": "adv", "max_tokens": c.advisorOut}
			if rng.IntN(2) == 0 {
				c.advisorUses = 1 + rng.Int64N(3)
				tool["max_uses"] = c.advisorUses
			}
			tools = append(tools, tool)
		}
		if tools != nil {
			body["tools"] = tools
		}
		if rng.IntN(4) == 0 {
			c.compaction = true
			body["context_management"] = map[string]any{"edits": []any{map[string]any{"type": "compact_20260112"}}}
		}
	case GoogleGemini:
		// Gemini names the model in the path and spells its fields
		// either way; a tier is not asked for.
		delete(body, "model")
		delete(body, "messages")
		delete(body, "max_completion_tokens")
		delete(body, "service_tier")
		c.tier = ""
		body["contents"] = []any{map[string]any{"role": "user", "parts": []any{map[string]any{"text": text}}}}
		cfg := map[string]any{}
		capKey, nKey := "maxOutputTokens", "candidateCount"
		if rng.IntN(2) == 0 {
			capKey, nKey = "max_output_tokens", "candidate_count"
		}
		if c.maxOut > 0 {
			cfg[capKey] = c.maxOut
		}
		if rng.IntN(3) == 0 {
			c.n = 1 + rng.Int64N(4)
			cfg[nKey] = c.n
		}
		if len(cfg) > 0 {
			body[[]string{"generationConfig", "generation_config"}[rng.IntN(2)]] = cfg
		}
	case OpenAIResponses:
		delete(body, "messages")
		body["input"] = text
		var tools []any
		for _, k := range []string{"web_search", "file_search", "code_interpreter", "image_generation"} {
			if rng.IntN(2) == 0 {
				c.serverTools = append(c.serverTools, genTool{kind: k})
				tools = append(tools, map[string]any{"type": k})
			}
		}
		if tools != nil {
			body["tools"] = tools
		}
		if rng.IntN(2) == 0 {
			c.maxToolCalls = 1 + rng.Int64N(6)
			body["max_tool_calls"] = c.maxToolCalls
		}
	}
	b, err := json.Marshal(body)
	if err != nil {
		panic(err)
	}
	c.body = b
	c.prompt = int64(len(b))
	return c
}

// response generates a usage the provider could report for r.
func (c *holdCase) response(rng *rand.Rand, r Request) Usage {
	cap := outputCap(c.maxOut, c.ceiling)
	// upTo picks a count within n, often n itself: the worst case is
	// what the hold must cover.
	upTo := func(n int64) int64 {
		if n <= 0 {
			return 0
		}
		if rng.IntN(2) == 0 {
			return n
		}
		return rng.Int64N(n + 1)
	}
	// The calls of each tool, within their bounds.
	type call struct {
		kind   string
		result int64
	}
	var calls []call
	for _, g := range c.serverTools {
		a := c.tools.allowance(g.kind)
		n := g.maxUses
		if n == 0 {
			n = a.MaxUses
		}
		per := a.InputTokens
		if g.perCall > 0 {
			per = g.perCall
		}
		for range upTo(n) {
			calls = append(calls, call{g.kind, upTo(per)})
		}
	}
	advisorUses := c.advisorUses
	if advisorUses == 0 {
		advisorUses = c.tools.allowance(ToolKindAdvisor).MaxUses
	}
	if c.advisorModel != "" {
		for range upTo(advisorUses) {
			calls = append(calls, call{ToolKindAdvisor, upTo(c.advisorOut)})
		}
	}
	rng.Shuffle(len(calls), func(i, j int) { calls[i], calls[j] = calls[j], calls[i] })
	if c.maxToolCalls > 0 && int64(len(calls)) > c.maxToolCalls {
		calls = calls[:c.maxToolCalls]
	}

	// The steps: every call ends one and starts the next, which reads the
	// prompt, every result and every output so far.
	var u Usage
	var steps []Iteration
	outLeft := cap
	if c.n > 1 {
		outLeft *= c.n // each candidate writes up to the cap
	}
	context := upTo(c.prompt)
	step := func(typ, model string, in, out int64) {
		steps = append(steps, Iteration{Type: typ, Model: model, Tokens: c.split(rng, in, out)})
	}
	for k := 0; k <= len(calls); k++ {
		if c.compaction && rng.IntN(2) == 0 {
			step("compaction", "", context, upTo(cap))
		}
		out := upTo(outLeft)
		outLeft -= out
		step("message", "", context, out)
		context += out
		if k == len(calls) {
			break
		}
		cl := calls[k]
		switch tool, ok := usage.ParseTool(cl.kind); {
		case cl.kind == ToolKindAdvisor:
			step("advisor_message", c.advisorModel, upTo(context), cl.result)
		case ok && tool == usage.CodeExecution:
			u.CodeExecutionCalls = 1
		case ok && tool == usage.CodeInterpreter:
			u.CodeInterpreterCalls++
		case ok:
			u.SetCalls(tool, u.Calls(tool)+1)
		}
		context += cl.result
	}

	// How the provider served it, among what the request allows: a tier
	// not asked for is the account's default, which may be any; one
	// asked for is served, or downgraded to the standard tier (OpenAI
	// answers "priority" to "fast"; Anthropic "standard" to
	// "standard_only"). Fast only when asked for. No geography asked for
	// is the workspace's default, which may be any. OpenAI reports no
	// speed or geography.
	served := map[string][]string{"": {"", "default", "standard", "priority", "flex", "scale"}, "auto": {"", "default", "standard", "priority", "flex", "scale"},
		"default": {"", "default"}, "priority": {"", "default", "priority"}, "fast": {"", "default", "priority"}, "flex": {"", "default", "flex"},
		"standard_only": {"", "standard"}}
	u.ServiceTier = pick(rng, served[c.tier])
	if c.api == GoogleGemini {
		u.ServiceTier = "" // Gemini reports no tier
	}
	if c.api == AnthropicMessages {
		u.Speed = pick(rng, []string{"", "standard"})
		if c.speed == "fast" && rng.IntN(2) == 0 {
			u.Speed = "fast"
		}
		u.InferenceGeo = c.geo
		if c.geo == "" {
			u.InferenceGeo = pick(rng, []string{"", "global", "us", "eu"})
		}
	}

	advised := slices.ContainsFunc(steps, func(s Iteration) bool { return s.Type == "advisor_message" })
	if c.api == AnthropicMessages && (advised || rng.IntN(2) == 0) {
		// An advisor runs on another model: Anthropic reports its steps
		// in iterations, each at its model's rates.
		u.Iterations = steps
		// The top level: the last step, as with compaction.
		u.Tokens = mergeCalls(steps[len(steps)-1].Tokens, u.Tokens)
		return u
	}
	// No iterations: the top level sums every step, whatever its model.
	var sum usage.Tokens
	for _, s := range steps {
		addTokenClasses(&sum, &s.Tokens)
	}
	if c.api != AnthropicMessages {
		// OpenAI reports audio and image parts within the input.
		sum.AudioInputTokens = upTo(sum.InputTokens - sum.CachedInputTokens - sum.CacheWriteInputTokens)
		sum.ImageInputTokens = upTo(sum.InputTokens - sum.AudioInputTokens)
		sum.AudioOutputTokens = upTo(sum.OutputTokens)
		sum.ImageOutputTokens = upTo(sum.OutputTokens - sum.AudioOutputTokens)
	}
	u.Tokens = mergeCalls(sum, u.Tokens)
	return u
}

// split reports in input tokens as cache reads, writes (1-hour ones when
// the body asks for them) and the rest, with out output tokens.
func (c *holdCase) split(rng *rand.Rand, in, out int64) usage.Tokens {
	t := usage.Tokens{InputTokens: in, OutputTokens: out}
	if in > 0 {
		t.CachedInputTokens = rng.Int64N(in + 1)
		t.CacheWriteInputTokens = rng.Int64N(in - t.CachedInputTokens + 1)
		if c.cache1h {
			t.CacheWrite1hInputTokens = rng.Int64N(t.CacheWriteInputTokens + 1)
		}
	}
	return t
}

func mergeCalls(tokens, calls usage.Tokens) usage.Tokens {
	for tool := range usage.NumTools {
		tokens.SetCalls(tool, calls.Calls(tool))
	}
	return tokens
}

func pick(rng *rand.Rand, s []string) string { return s[rng.IntN(len(s))] }

// TestHoldCaseGenerator guards the property test against testing
// nothing: its requests do use tools, compaction, advisors and variants.
func TestHoldCaseGenerator(t *testing.T) {
	rng := rand.New(rand.NewPCG(10, 20))
	seen := map[string]int{}
	for range 600 {
		c := newHoldCase(rng)
		for _, g := range c.serverTools {
			seen[g.kind]++
		}
		if c.advisorModel != "" {
			seen["advisor"]++
		}
		if c.compaction {
			seen["compaction"]++
		}
		if c.cache1h {
			seen["1h"]++
		}
		if c.maxToolCalls > 0 {
			seen["max_tool_calls"]++
		}
	}
	var missing []string
	for _, k := range append(ServerToolKinds(), "compaction", "1h", "max_tool_calls") {
		if k != ToolKindOther && seen[k] < 15 {
			missing = append(missing, fmt.Sprintf("%s (%d)", k, seen[k]))
		}
	}
	slices.Sort(missing)
	if len(missing) > 0 {
		t.Errorf("generated too few requests with %v", missing)
	}
}
