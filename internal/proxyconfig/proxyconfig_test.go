package proxyconfig_test

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/config"
	"github.com/tollgate-dev/tollgate/internal/proxyconfig"
	"github.com/tollgate-dev/tollgate/meter"
)

// TestSettings: every setting the proxy takes comes from the file, none
// is left at its zero value, so that a setting added to proxy.Settings or
// proxy.Route fails here until it is carried over.
func TestSettings(t *testing.T) {
	cfg, err := config.Parse(strings.NewReader(`
admin: {token: admin-token-of-sixteen}
store: {hold_ttl: 2m, timeout: 300ms}
customer_header: X-Customer
max_request_bytes: 1024
request_body_timeout: 7s
settle_timeout: 3s
max_request_duration: 9m
routes:
  - path: /v1/responses
    api: openai.responses
    upstream: https://api.openai.com
    headers: {Authorization: "Bearer k"}
    max_output_tokens: 512
    server_tools: {web_search: {max_uses: 2}}
    prices:
      gpt-4o: {input: "2.50", output: "10"}
  - path: /openai/deployments/prod/chat/completions
    api: openai.chat
    upstream: https://my.openai.azure.com
    stream_usage: leave
    model_from: deployment
    prices:
      prod: {input: "2.50", output: "10"}
plans:
  free: {models: [gpt-4o], max_output_tokens: 100}
default_plan: free
stripe: {past_due_grace: 24h}
`), nil)
	if err != nil {
		t.Fatal(err)
	}
	set := proxyconfig.Settings(cfg)
	nonZero(t, "Settings", reflect.ValueOf(*set))
	if len(set.Routes) != 2 {
		t.Fatalf("%d routes, want 2", len(set.Routes))
	}
	r := set.Routes[0]
	// The openai.chat options apply to the second route only.
	if az := set.Routes[1]; !az.LeaveStreamUsage || !az.ModelFromDeployment {
		t.Errorf("routes[1] = %+v, want stream_usage leave and model_from deployment", az)
	}
	all := r
	all.LeaveStreamUsage, all.ModelFromDeployment = set.Routes[1].LeaveStreamUsage, set.Routes[1].ModelFromDeployment
	nonZero(t, "Routes[0]", reflect.ValueOf(all))

	if set.CustomerHeader != "X-Customer" || set.MaxRequestBytes != 1024 || set.RequestBodyTimeout != 7*time.Second ||
		set.SettleTimeout != 3*time.Second || set.MaxRequestDuration != 9*time.Minute || set.HoldTTL != 2*time.Minute ||
		set.StoreTimeout != 300*time.Millisecond || set.AdminToken != "admin-token-of-sixteen" {
		t.Errorf("settings = %+v", set)
	}
	if p := set.Plans; p == nil || p.Default != "free" || p.PastDueGrace != 24*time.Hour || p.Plans["free"].MaxOutputTokens != 100 {
		t.Errorf("plans = %+v", set.Plans)
	}
	if r.Path != "/v1/responses" || r.API != meter.OpenAIResponses || r.Upstream.String() != "https://api.openai.com" ||
		r.Headers.Get("Authorization") != "Bearer k" || r.MaxOutputTokens != 512 ||
		!reflect.DeepEqual(r.Prices, cfg.Routes[0].Prices) || r.ServerTools["web_search"].MaxUses != 2 {
		t.Errorf("route = %+v", r)
	}
}

// nonZero fails for each field of the struct v that holds its zero value.
func nonZero(t *testing.T, name string, v reflect.Value) {
	t.Helper()
	for i := range v.NumField() {
		if v.Field(i).IsZero() {
			t.Errorf("%s.%s is not set from the configuration", name, v.Type().Field(i).Name)
		}
	}
}
