package config

import (
	"slices"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/tollgate-dev/tollgate/plan"
)

// planKeys are the keys of one plans entry.
var planKeys = []string{"models", "routes", "max_output_tokens"}

// Plan is one entry of plans (YAML "plans.<name>"): what a customer on
// it may use.
type Plan struct {
	// Models are the model names the plan allows (YAML "models"). Each
	// is "*" (every model) or a model some route the plan allows prices
	// by name (or prices with "*"). Unset allows every model; an empty
	// list none.
	Models []string
	// Routes are the paths of the routes the plan allows (YAML
	// "routes"), as configured in routes[].path, or "*". Unset allows
	// every route; an empty list none.
	Routes []string
	// MaxOutputTokens lowers the output ceiling of every route that has
	// one (YAML "max_output_tokens"): requests are reserved for and sent
	// upstream with at most this many output tokens. 0 or unset keeps the
	// routes' own. Must be ≥ 0.
	MaxOutputTokens int64
}

// Catalog returns the plans as package plan takes them, or nil when the
// configuration has none (everything is allowed).
func (c *Config) Catalog() *plan.Catalog {
	if c.Plans == nil {
		return nil
	}
	cat := &plan.Catalog{Plans: make(map[string]*plan.Plan, len(c.Plans)), Default: c.DefaultPlan, PastDueGrace: c.Stripe.PastDueGrace}
	for name, p := range c.Plans {
		cat.Plans[name] = &plan.Plan{Name: name, Models: p.Models, Routes: p.Routes, MaxOutputTokens: p.MaxOutputTokens}
	}
	return cat
}

// plans reads plans and default_plan.
func (p *parser) plans(f fields) {
	p.str(f, "default_plan", &p.cfg.DefaultPlan)
	kv, ok := f.vals["plans"]
	if !ok {
		return
	}
	pairs := p.pairs(kv.val, "plans", `a mapping of plan names to plans, e.g. {free: {models: [gpt-4o-mini]}, pro: {models: ["*"]}}`)
	if pairs == nil {
		return
	}
	p.cfg.Plans = make(map[string]Plan, len(pairs))
	for _, e := range pairs {
		path := keyPath("plans", e.key)
		p.record(path, e.kline, e.kcol)
		pf := p.mapping(e.val, path, "a plan: a mapping with models, routes and max_output_tokens", planKeys)
		var pl Plan
		pl.Models = p.list(pf, "models", `["gpt-4o-mini"], or ["*"] for every model`)
		pl.Routes = p.list(pf, "routes", `["/v1/chat/completions"], or ["*"] for every route`)
		p.integer(pf, "max_output_tokens", "1024", &pl.MaxOutputTokens)
		p.cfg.Plans[e.key] = pl
	}
}

// list reads a list of strings; nil when the key is absent or null, and
// an empty, non-nil slice for [].
func (p *parser) list(f fields, key, example string) []string {
	kv, ok := f.vals[key]
	if !ok {
		return nil
	}
	path := keyPath(f.path, key)
	n := p.resolve(kv.val)
	if isNull(n) {
		return nil
	}
	if n.Kind != yaml.SequenceNode {
		p.errorf(n.Line, path, "want a list, e.g. %s, got %s", example, kindName(n))
		return nil
	}
	out := make([]string, 0, len(n.Content))
	for i, item := range n.Content {
		if v, _, ok := p.scalar(item, indexPath(path, i)); ok {
			out = append(out, v)
		}
	}
	return out
}

// plans checks plans, default_plan and the plans stripe.prices name.
func (k *checker) plans() {
	c := k.c
	if c.Plans == nil {
		if c.DefaultPlan != "" {
			k.errorf("default_plan", "%q is set but there are no plans; define plans (e.g. {free: {models: [gpt-4o-mini]}}) or remove default_plan", c.DefaultPlan)
		}
		for _, id := range sortedKeys(c.Stripe.Prices) {
			if name := c.Stripe.Prices[id].Plan; name != "" {
				k.errorf(keyPath(keyPath("stripe.prices", id), "plan"), "%q names a plan but there are no plans; define plans or remove it", name)
			}
		}
		return
	}
	names := sortedKeys(c.Plans)
	known := func(name string) bool { _, ok := c.Plans[name]; return ok }
	switch {
	case c.DefaultPlan == "":
		k.errorf("plans", "are set but default_plan is not; set default_plan to the plan of customers without a subscription (one of %s)", strings.Join(names, ", "))
	case !known(c.DefaultPlan):
		k.errorf("default_plan", "%q is not one of the plans (%s)%s", c.DefaultPlan, strings.Join(names, ", "), didYouMean(c.DefaultPlan, names))
	}
	if c.Stripe.PastDueGrace < 0 {
		k.errorf("stripe.past_due_grace", `%q is negative (want e.g. "72h", or 0 to drop the plan at once)`, c.Stripe.PastDueGrace.String())
	}
	for _, id := range sortedKeys(c.Stripe.Prices) {
		if name := c.Stripe.Prices[id].Plan; name != "" && !known(name) {
			k.errorf(keyPath(keyPath("stripe.prices", id), "plan"), "%q is not one of the plans (%s)%s", name, strings.Join(names, ", "), didYouMean(name, names))
		}
	}
	paths := make([]string, len(c.Routes))
	for i, r := range c.Routes {
		paths[i] = r.Path
	}
	for _, name := range names {
		pl := c.Plans[name]
		pp := keyPath("plans", name)
		if strings.TrimSpace(name) == "" {
			k.errorf(pp, "the plan name is empty")
		}
		badRoute := false
		for i, r := range pl.Routes {
			if r != plan.All && !slices.Contains(paths, r) {
				badRoute = true
				k.errorf(indexPath(keyPath(pp, "routes"), i), "%q is not a configured route path (routes: %s)%s", r, strings.Join(paths, ", "), didYouMean(r, paths))
			}
		}
		if badRoute {
			continue // the models would be checked against the wrong routes
		}
		allowed := &plan.Plan{Routes: pl.Routes}
		for i, m := range pl.Models {
			if m == plan.All {
				continue
			}
			here, anywhere := false, false
			var offered, models, all []string
			for _, r := range c.Routes {
				_, named := r.Prices[m]
				_, fallback := r.Prices[ModelFallback]
				anywhere = anywhere || named || fallback
				all = append(all, sortedKeys(r.Prices)...)
				if !allowed.AllowsRoute(r.Path) {
					continue
				}
				here = here || named || fallback
				names := sortedKeys(r.Prices)
				offered = append(offered, r.Path+" prices "+strings.Join(names, ", "))
				models = append(models, names...)
			}
			mp := indexPath(keyPath(pp, "models"), i)
			switch {
			case here:
			case !anywhere:
				k.errorf(mp, "%q is priced on no route, so no request could use it%s", m, didYouMean(m, all))
			default:
				k.errorf(mp, "%q is not priced on any route this plan allows (%s)%s", m, strings.Join(offered, "; "), didYouMean(m, models))
			}
		}
		if pl.MaxOutputTokens < 0 {
			k.errorf(keyPath(pp, "max_output_tokens"), "%d is negative (want e.g. 1024, or 0 to keep the routes' own)", pl.MaxOutputTokens)
		}
	}
}

// didYouMean is " (did you mean X?)" for the closest of names, or "".
func didYouMean(x string, names []string) string {
	if s := suggest(x, names); s != "" {
		return " (did you mean " + s + "?)"
	}
	return ""
}
