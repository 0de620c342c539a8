package config_test

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/config"
	"github.com/tollgate-dev/tollgate/plan"
)

// planRoutes are two routes for the plans tests, their models priced by
// name.
const planRoutes = `routes:
  - path: /v1/chat/completions
    api: openai.chat
    upstream: https://api.openai.com
    prices:
      gpt-4o-mini: {input: "0.15", output: "0.60"}
      gpt-4o: {input: "2.5", output: "10"}
  - path: /v1/embeddings
    api: openai.embeddings
    upstream: https://api.openai.com
    prices:
      text-embedding-3-small: {input: "0.02"}
`

func TestPlans(t *testing.T) {
	c := mustParse(t, planRoutes+`plans:
  free: {models: [gpt-4o-mini], routes: [/v1/chat/completions], max_output_tokens: 1024}
  pro: {models: ["*"]}
  embed: {models: [text-embedding-3-small], routes: [/v1/embeddings]}
  none: {models: [], routes: []}
default_plan: free
stripe:
  past_due_grace: 24h
  prices:
    price_pro: {plan: pro}
    price_pro_credits: {credits: "1000", plan: pro}
`, noEnv)
	want := map[string]config.Plan{
		"free":  {Models: []string{"gpt-4o-mini"}, Routes: []string{"/v1/chat/completions"}, MaxOutputTokens: 1024},
		"pro":   {Models: []string{"*"}},
		"embed": {Models: []string{"text-embedding-3-small"}, Routes: []string{"/v1/embeddings"}},
		"none":  {Models: []string{}, Routes: []string{}},
	}
	if !reflect.DeepEqual(c.Plans, want) {
		t.Errorf("plans = %#v\nwant %#v", c.Plans, want)
	}
	if c.DefaultPlan != "free" || c.Stripe.PastDueGrace != 24*time.Hour {
		t.Errorf("default_plan %q, past_due_grace %s", c.DefaultPlan, c.Stripe.PastDueGrace)
	}
	if p := c.Stripe.Prices["price_pro"]; p.Plan != "pro" || p.Credits != 0 {
		t.Errorf("price_pro = %+v; want plan pro and no credits", p)
	}
	if p := c.Stripe.Prices["price_pro_credits"]; p.Plan != "pro" || p.Credits.String() != "1000.000000" {
		t.Errorf("price_pro_credits = %+v", p)
	}
	cat := c.Catalog()
	if err := cat.Check(); err != nil {
		t.Fatal(err)
	}
	if cat.Default != "free" || cat.PastDueGrace != 24*time.Hour || cat.Plans["free"].MaxOutputTokens != 1024 || !cat.Plans["pro"].AllModels() {
		t.Errorf("catalog = %+v", cat)
	}
	if cat.Plans["none"].AllowsRoute("/v1/embeddings") || cat.Plans["none"].AllowsModel("gpt-4o") {
		t.Error("an empty plan allows something")
	}

	// Without plans there is no catalog, and the grace keeps its default.
	c = mustParse(t, planRoutes, noEnv)
	if c.Catalog() != nil || c.Plans != nil || c.Stripe.PastDueGrace != plan.DefaultPastDueGrace {
		t.Errorf("without plans: catalog %v, grace %s", c.Catalog(), c.Stripe.PastDueGrace)
	}
}

func TestPlanProblems(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want []string
	}{
		{
			name: "unknown model, route and default",
			yaml: planRoutes + `plans:
  free: {models: [gpt-4o-minii], routes: [/v1/chat/completion]}
  pro: {models: [claude-opus-4], max_output_tokens: -1}
default_plan: fre
`,
			want: []string{
				`line 14: plans.free.routes[0]: "/v1/chat/completion" is not a configured route path (routes: /v1/chat/completions, /v1/embeddings) (did you mean /v1/chat/completions?)`,
				`line 15: plans.pro.models[0]: "claude-opus-4" is priced on no route, so no request could use it`,
				`line 15: plans.pro.max_output_tokens: -1 is negative (want e.g. 1024, or 0 to keep the routes' own)`,
				`line 16: default_plan: "fre" is not one of the plans (free, pro) (did you mean free?)`,
			},
		},
		{
			name: "a model not priced on the plan's routes",
			yaml: planRoutes + `plans:
  free: {models: [gpt-4o-mini, gpt-4o-minii], routes: [/v1/embeddings]}
default_plan: free
`,
			want: []string{
				`line 14: plans.free.models[0]: "gpt-4o-mini" is not priced on any route this plan allows (/v1/embeddings prices text-embedding-3-small)`,
				`line 14: plans.free.models[1]: "gpt-4o-minii" is priced on no route, so no request could use it (did you mean gpt-4o-mini?)`,
			},
		},
		{
			name: "plans without default_plan",
			yaml: planRoutes + "plans:\n  free: {}\n",
			want: []string{`line 13: plans: are set but default_plan is not; set default_plan to the plan of customers without a subscription (one of free)`},
		},
		{
			name: "default_plan and a price's plan without plans",
			yaml: planRoutes + "default_plan: free\nstripe:\n  prices:\n    price_1: {plan: pro}\n",
			want: []string{
				`line 13: default_plan: "free" is set but there are no plans; define plans (e.g. {free: {models: [gpt-4o-mini]}}) or remove default_plan`,
				`line 16: stripe.prices.price_1.plan: "pro" names a plan but there are no plans; define plans or remove it`,
			},
		},
		{
			name: "a price's unknown plan, a bad key, a price with neither",
			yaml: planRoutes + `plans:
  free: {modles: [x]}
default_plan: free
stripe:
  past_due_grace: -1h
  prices:
    price_1: {plan: prp}
    price_2: {}
`,
			want: []string{
				`line 14: plans.free.modles: unknown key (did you mean models?); allowed keys: models, routes, max_output_tokens`,
				`line 17: stripe.past_due_grace: "-1h0m0s" is negative (want e.g. "72h", or 0 to drop the plan at once)`,
				`line 19: stripe.prices.price_1.plan: "prp" is not one of the plans (free)`,
				`line 20: stripe.prices.price_2: sets no credits and no plan (want e.g. {credits: "10000"}, {plan: pro}, or both)`,
			},
		},
		{
			name: "models not a list",
			yaml: planRoutes + "plans:\n  free: {models: gpt-4o}\ndefault_plan: free\n",
			want: []string{`line 14: plans.free.models: want a list, e.g. ["gpt-4o-mini"], or ["*"] for every model, got "gpt-4o"`},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := config.Parse(strings.NewReader(tc.yaml), noEnv)
			want := strings.Join(tc.want, "\n")
			if err == nil {
				t.Fatalf("Parse succeeded, want\n%s", want)
			}
			if got := err.Error(); got != want {
				t.Errorf("Parse error:\n%s\nwant:\n%s", got, want)
			}
		})
	}
}

// TestExamplePlans: the commented plans of config.example.yaml are valid
// once uncommented, and stripe.prices may then name them.
func TestExamplePlans(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "config.example.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(data), "\n")
	in := false
	found := 0
	for i, l := range lines {
		if strings.HasPrefix(l, "# plans:") {
			in = true
		}
		if in {
			lines[i] = strings.TrimPrefix(l, "# ")
			found++
		}
		if strings.HasPrefix(l, "# default_plan:") {
			in = false
		}
	}
	if found < 3 {
		t.Fatalf("config.example.yaml has no commented plans block (%d lines)", found)
	}
	text := strings.Join(lines, "\n")
	text = strings.Replace(text, `price_pro_monthly: {credits: "1000", expires: period_end, grace: 72h}`,
		`price_pro_monthly: {credits: "1000", expires: period_end, grace: 72h, plan: pro}`, 1)
	c := mustParse(t, text, envOf(exampleEnv))
	if c.DefaultPlan != "free" || len(c.Plans) != 2 || c.Stripe.Prices["price_pro_monthly"].Plan != "pro" || c.Stripe.PastDueGrace != plan.DefaultPastDueGrace {
		t.Errorf("plans %+v, default %q, prices %+v", c.Plans, c.DefaultPlan, c.Stripe.Prices)
	}
}
