package proxy_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go/v2"
	anthropicoption "github.com/anthropics/anthropic-sdk-go/v2/option"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/tidwall/gjson"

	"github.com/tollgate-dev/tollgate/ledger"
)

// planConfig is testConfig with three plans: free (embeddings and
// Anthropic's route, but only the embedding model), chat (gpt-4o on chat
// completions, output capped at 200 tokens) and pro (everything).
const planConfig = testConfig + `
plans:
  free: {models: [text-embedding-3-small], routes: [/v1/embeddings, /v1/messages]}
  chat: {models: [gpt-4o], routes: [/v1/chat/completions], max_output_tokens: 200}
  pro: {models: ["*"]}
default_plan: free
`

// accessAnswer is GET /v1/customers/{id}/access.
type accessAnswer struct {
	Customer     string  `json:"customer"`
	Plan         *string `json:"plan"`
	PlanSource   *string `json:"plan_source"`
	Subscription *struct {
		ID     string `json:"id"`
		Status string `json:"status"`
	} `json:"subscription"`
	Override *struct {
		Plan   string `json:"plan"`
		Until  string `json:"until"`
		Reason string `json:"reason"`
		SetAt  string `json:"set_at"`
	} `json:"override"`
	Balance    string          `json:"balance"`
	Reserved   string          `json:"reserved"`
	Available  string          `json:"available"`
	Suspended  bool            `json:"suspended"`
	NextExpiry *ledger.Expiry  `json:"next_expiry"`
	Models     []string        `json:"models"`
	Routes     []string        `json:"routes"`
	Why        string          `json:"why"`
	Extra      json.RawMessage `json:"-"`
	// StripeEvents are the ids of the linked journal records.
	StripeEvents []struct {
		ID      string `json:"id"`
		Type    string `json:"type"`
		Outcome string `json:"outcome"`
	} `json:"stripe_events"`
}

func decodeAccess(t *testing.T, res *http.Response, body []byte) accessAnswer {
	t.Helper()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", res.StatusCode, body)
	}
	var a accessAnswer
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&a); err != nil {
		t.Fatalf("access answer %s: %v", body, err)
	}
	return a
}

func str(p *string) string {
	if p == nil {
		return "<null>"
	}
	return *p
}

func (h *harness) setPlan(customer, body string) accessAnswer {
	h.t.Helper()
	res, data := h.call(http.MethodPut, "/v1/customers/"+customer+"/plan", adminToken, body)
	return decodeAccess(h.t.(*testing.T), res, data)
}

// TestPlanEnforcement: the customer's plan decides which routes and models
// are forwarded, and its ceiling the hold and the cap sent upstream;
// refusals are 403s in the route's dialect that name the plan and what
// would allow the request, and cost nothing.
func TestPlanEnforcement(t *testing.T) {
	h := newHarness(t, harnessOptions{yaml: planConfig})
	cust := newCustomer()
	h.grant(cust, "10")

	res, body := h.do(request{path: "/v1/chat/completions", customer: cust, body: chatBody("gpt-4o", "")})
	e := wantError(t, res, body, http.StatusForbidden, "route_not_entitled")
	want := "the free plan (from no subscription) does not include /v1/chat/completions; it includes /v1/embeddings, /v1/messages. Plans that include it: chat, pro; ask for an upgrade."
	if e.Error.Message != want || e.Error.Type != "permission_error" {
		t.Errorf("refusal %q (%s)\nwant %q", e.Error.Message, e.Error.Type, want)
	}

	res, body = h.do(request{path: "/v1/messages", customer: cust,
		body: `{"model":"claude-sonnet-4-5","max_tokens":100,"messages":[{"role":"user","content":"Hi"}]}`})
	if res.StatusCode != http.StatusForbidden {
		t.Fatalf("status %d: %s", res.StatusCode, body)
	}
	ae := decodeAnthropicError(t, body)
	want = "the free plan (from no subscription) does not include the model claude-sonnet-4-5; it includes text-embedding-3-small. Plans that include the model: pro; ask for an upgrade."
	if ae.Error.Code != "model_not_entitled" || ae.Error.Type != "permission_error" || ae.Error.Message != want {
		t.Errorf("anthropic refusal %+v\nwant message %q", ae.Error, want)
	}
	if n := len(h.up.requests()); n != 0 {
		t.Fatalf("%d refused requests reached the upstream", n)
	}

	// The embedding model on its route is in the plan.
	res, body = h.do(request{path: "/v1/embeddings", customer: cust, body: `{"model":"text-embedding-3-small","input":"hi"}`})
	if res.StatusCode != http.StatusOK {
		t.Fatalf("embeddings under free: %d %s", res.StatusCode, body)
	}
	h.settled(cust, 1)

	// An override to chat: chat completions are served, with the plan's
	// ceiling of 200 output tokens instead of the route's 1000.
	a := h.setPlan(cust, `{"plan":"chat","reason":"trial for ticket 42"}`)
	if str(a.Plan) != "chat" || str(a.PlanSource) != "override" || a.Override == nil || a.Override.Reason != "trial for ticket 42" {
		t.Fatalf("access after PUT: %+v", a)
	}
	res, body = h.do(request{path: "/v1/chat/completions", customer: cust, body: chatBody("gpt-4o", "")})
	if res.StatusCode != http.StatusOK {
		t.Fatalf("chat under the chat plan: %d %s", res.StatusCode, body)
	}
	if got := res.Header.Get("X-Tollgate-Output-Cap"); got != "200" {
		t.Errorf("X-Tollgate-Output-Cap %q, want the plan's 200", got)
	}
	if got := gjson.GetBytes(h.up.last(t).Body, "max_completion_tokens").Int(); got != 200 {
		t.Errorf("upstream max_completion_tokens %d, want 200", got)
	}
	h.settled(cust, 2)
	// A model the plan does not include, on a route it does.
	res, body = h.do(request{path: "/v1/chat/completions", customer: cust, body: chatBody("gpt-4o-mini", "")})
	e = wantError(t, res, body, http.StatusForbidden, "model_not_entitled")
	if want := "the chat plan (from an admin override) does not include the model gpt-4o-mini; it includes gpt-4o. Plans that include the model: pro; ask for an upgrade."; e.Error.Message != want {
		t.Errorf("refusal %q\nwant %q", e.Error.Message, want)
	}

	// Removing the override puts the customer back on free at once.
	res, body = h.call(http.MethodDelete, "/v1/customers/"+cust+"/plan", adminToken, "")
	if a := decodeAccess(t, res, body); str(a.Plan) != "free" || str(a.PlanSource) != "default" || a.Override != nil {
		t.Fatalf("access after DELETE: %+v", a)
	}
	res, body = h.do(request{path: "/v1/chat/completions", customer: cust, body: chatBody("gpt-4o", "")})
	wantError(t, res, body, http.StatusForbidden, "route_not_entitled")
	if a := h.account(cust); a.Reserved != 0 {
		t.Errorf("%s still reserved after refusals", a.Reserved)
	}
}

// TestPlanChangeSeenByEveryReplica: two proxies share one store, each
// with its own cache of plan inputs. A change made through one is obeyed
// by the other on its very next request, through ReservePlan's version
// check, and an upgrade is obeyed even where the cache says no.
func TestPlanChangeSeenByEveryReplica(t *testing.T) {
	for _, kind := range []string{"bolt", "redis"} {
		t.Run(kind, func(t *testing.T) {
			var st ledger.Store
			if kind == "bolt" {
				st = boltStore(t)
			} else {
				st = redisStore(t)
			}
			up := newUpstream(t)
			a := newHarness(t, harnessOptions{yaml: planConfig, store: st, upstream: up})
			b := newHarness(t, harnessOptions{yaml: planConfig, store: st, upstream: up})
			cust := newCustomer()
			a.grant(cust, "10")
			chat := request{path: "/v1/chat/completions", customer: cust, body: chatBody("gpt-4o", "")}

			// a caches "free" and refuses; b upgrades; a serves.
			res, body := a.do(chat)
			wantError(t, res, body, http.StatusForbidden, "route_not_entitled")
			b.setPlan(cust, `{"plan":"pro"}`)
			if res, body := a.do(chat); res.StatusCode != http.StatusOK {
				t.Fatalf("after the upgrade through b, a answered %d %s", res.StatusCode, body)
			}
			a.settled(cust, 1)
			// a caches "pro" and serves; b removes it; a refuses.
			if res, body := a.do(chat); res.StatusCode != http.StatusOK {
				t.Fatalf("%d %s", res.StatusCode, body)
			}
			a.settled(cust, 2)
			b.call(http.MethodDelete, "/v1/customers/"+cust+"/plan", adminToken, "")
			res, body = a.do(chat)
			wantError(t, res, body, http.StatusForbidden, "route_not_entitled")
		})
	}
}

// TestPlanSDKs: the official SDKs surface the 403s with tollgate's message.
func TestPlanSDKs(t *testing.T) {
	h := newHarness(t, harnessOptions{yaml: planConfig})
	ctx := context.Background()
	cust := newCustomer()
	h.grant(cust, "10")

	oc := openai.NewClient(option.WithBaseURL(h.proxy.URL+"/v1/"), option.WithAPIKey(clientKey),
		option.WithHeader("X-Tollgate-Customer", cust), option.WithMaxRetries(2))
	_, err := oc.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
		Model:    "gpt-4o",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Hello!")},
	})
	var oe *openai.Error
	if !errors.As(err, &oe) {
		t.Fatalf("error %v is not an *openai.Error", err)
	}
	if oe.StatusCode != 403 || oe.Code != "route_not_entitled" || oe.Type != "permission_error" ||
		!strings.HasPrefix(oe.Message, "the free plan (from no subscription) does not include /v1/chat/completions") {
		t.Errorf("openai error: status %d code %q type %q message %q", oe.StatusCode, oe.Code, oe.Type, oe.Message)
	}

	ac := anthropic.NewClient(anthropicoption.WithBaseURL(h.proxy.URL), anthropicoption.WithAPIKey("sk-ant-client-key"),
		anthropicoption.WithHeader("X-Tollgate-Customer", cust), anthropicoption.WithMaxRetries(2))
	_, err = ac.Messages.New(ctx, anthropic.MessageNewParams{
		Model: "claude-sonnet-4-5", MaxTokens: 100,
		Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("Hello, Claude"))},
	})
	var ane *anthropic.Error
	if !errors.As(err, &ane) {
		t.Fatalf("error %v is not an *anthropic.Error", err)
	}
	if ane.StatusCode != 403 || ane.Type() != anthropic.ErrorTypePermissionError ||
		!strings.Contains(err.Error(), "the free plan (from no subscription) does not include the model claude-sonnet-4-5") {
		t.Errorf("anthropic error: status %d type %q: %v", ane.StatusCode, ane.Type(), err)
	}
	if n := len(h.up.requests()); n != 0 {
		t.Errorf("%d requests reached the upstream; 403s are not retried and not forwarded", n)
	}
}

// noModelsRoute is testConfig without its flat /v1/models route, so that
// tollgate answers the model list itself.
func noModelsRoute(t *testing.T, yaml string) string {
	t.Helper()
	old := `  - path: /v1/models
    api: flat
    upstream: UPSTREAM
    prices:
      "*": {per_request: "0.001"}
`
	if !strings.Contains(yaml, old) {
		t.Fatal("testConfig has no /v1/models route to remove")
	}
	return strings.Replace(yaml, old, "", 1)
}

func listModels(t *testing.T, h *harness, customer string) (int, []string, []string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, h.proxy.URL+"/v1/models", nil)
	if customer != "" {
		req.Header.Set("X-Tollgate-Customer", customer)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var list struct {
		Object string `json:"object"`
		Data   []struct {
			ID      string `json:"id"`
			Object  string `json:"object"`
			Created int64  `json:"created"`
			OwnedBy string `json:"owned_by"`
		} `json:"data"`
	}
	if err := json.NewDecoder(res.Body).Decode(&list); err != nil {
		t.Fatal(err)
	}
	var ids, owners []string
	for _, m := range list.Data {
		if m.Object != "model" {
			t.Errorf("model %+v", m)
		}
		ids, owners = append(ids, m.ID), append(owners, m.OwnedBy)
	}
	if res.StatusCode == http.StatusOK && list.Object != "list" {
		t.Errorf("object %q", list.Object)
	}
	return res.StatusCode, ids, owners
}

// TestModelList: GET /v1/models lists what the customer may use, in
// OpenAI's shape, so that the SDK's models.list works; every priced model
// without plans.
func TestModelList(t *testing.T) {
	t.Run("with plans", func(t *testing.T) {
		h := newHarness(t, harnessOptions{yaml: noModelsRoute(t, planConfig)})
		cust := newCustomer()
		status, ids, owners := listModels(t, h, cust)
		if status != http.StatusOK || strings.Join(ids, ",") != "text-embedding-3-small" || owners[0] != "openai" {
			t.Errorf("free: %d %v %v", status, ids, owners)
		}
		h.setPlan(cust, `{"plan":"pro"}`)
		oc := openai.NewClient(option.WithBaseURL(h.proxy.URL+"/v1/"), option.WithAPIKey(clientKey), option.WithHeader("X-Tollgate-Customer", cust))
		page, err := oc.Models.List(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, m := range page.Data {
			got = append(got, m.ID+"@"+m.OwnedBy)
		}
		if want := "claude-sonnet-4-5@anthropic,gemini-2.5-flash@google,gpt-4.1@openai,gpt-4o@openai,text-embedding-3-small@openai"; strings.Join(got, ",") != want {
			t.Errorf("pro through the SDK: %v, want %s", got, want)
		}
		if status, _, _ := listModels(t, h, ""); status != http.StatusUnauthorized {
			t.Errorf("without a customer: %d, want 401", status)
		}
		if n := len(h.up.requests()); n != 0 {
			t.Errorf("the model list reached the upstream %d times", n)
		}
	})
	t.Run("without plans", func(t *testing.T) {
		h := newHarness(t, harnessOptions{yaml: noModelsRoute(t, testConfig)})
		status, ids, _ := listModels(t, h, "")
		if status != http.StatusOK || strings.Join(ids, ",") != "claude-sonnet-4-5,gemini-2.5-flash,gpt-4.1,gpt-4o,text-embedding-3-small" {
			t.Errorf("%d %v", status, ids)
		}
	})
	t.Run("a route for /v1/models is forwarded", func(t *testing.T) {
		h := newHarness(t, harnessOptions{yaml: planConfig})
		req, _ := http.NewRequest(http.MethodGet, h.proxy.URL+"/v1/models", nil)
		req.Header.Set("X-Tollgate-Customer", newCustomer())
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		// The default plan does not include the flat route: the route,
		// not the list, answered.
		if res.StatusCode != http.StatusForbidden {
			t.Errorf("status %d, want the flat route's 403 route_not_entitled", res.StatusCode)
		}
	})
}

// TestAccess: the one answer, with and without plans, and the override's
// validation.
func TestAccess(t *testing.T) {
	h := newHarness(t, harnessOptions{yaml: planConfig})
	cust := newCustomer()
	h.grant(cust, "10")
	res, body := h.call(http.MethodGet, "/v1/customers/"+cust+"/access", adminToken, "")
	a := decodeAccess(t, res, body)
	if str(a.Plan) != "free" || str(a.PlanSource) != "default" || a.Subscription != nil || a.Override != nil ||
		a.Balance != "10.000000" || a.Available != "10.000000" || a.Reserved != "0.000000" ||
		strings.Join(a.Models, ",") != "text-embedding-3-small" || strings.Join(a.Routes, ",") != "/v1/messages,/v1/embeddings" {
		t.Errorf("access %+v", a)
	}
	if a.StripeEvents == nil || len(a.StripeEvents) != 0 {
		t.Errorf("stripe_events %+v, want []", a.StripeEvents)
	}
	// The customer's newest Stripe events are linked, newest first, at
	// most accessStripeEvents of them; another customer's are not.
	j := h.store.(ledger.Journal)
	at := time.Now()
	for i := range 7 {
		who := cust
		if i == 6 {
			who = newCustomer()
		}
		data := fmt.Sprintf(`{"id":"evt_%d","type":"invoice.paid","outcome":"applied"}`, i)
		if _, err := j.AppendJournal(context.Background(), ledger.JournalRecord{At: at.Add(time.Duration(i) * time.Millisecond), Customer: who, Type: "invoice.paid", Data: []byte(data)}, ""); err != nil {
			t.Fatal(err)
		}
	}
	res, body = h.call(http.MethodGet, "/v1/customers/"+cust+"/access", adminToken, "")
	var ids []string
	for _, ev := range decodeAccess(t, res, body).StripeEvents {
		ids = append(ids, ev.ID)
	}
	if got := strings.Join(ids, ","); got != "evt_5,evt_4,evt_3,evt_2,evt_1" {
		t.Errorf("stripe_events %s, want the customer's five newest", got)
	}
	until := time.Now().Add(time.Hour).UTC().Truncate(time.Second).Format(time.RFC3339)
	a = h.setPlan(cust, `{"plan":"pro","until":"`+until+`","reason":"promo"}`)
	if str(a.Plan) != "pro" || a.Override.Until != until || len(a.Models) != 5 {
		t.Errorf("access after PUT %+v", a)
	}
	for _, tc := range []struct{ body, msg string }{
		{`{"plan":"gold"}`, `"plan" "gold" is not a configured plan; want one of chat, free, pro`},
		{`{}`, `"plan" is required: one of chat, free, pro`},
		{`{"plan":"pro","until":"tomorrow"}`, `"until" "tomorrow" is not an RFC 3339 time such as "2030-01-31T00:00:00Z"`},
		{`{"plan":"pro","until":"2001-01-01T00:00:00Z"}`, `"until" 2001-01-01T00:00:00Z is not in the future; leave it out for an override until removed`},
	} {
		res, body := h.call(http.MethodPut, "/v1/customers/"+cust+"/plan", adminToken, tc.body)
		if e := wantError(t, res, body, http.StatusBadRequest, "invalid_request"); e.Error.Message != tc.msg {
			t.Errorf("%s: %q, want %q", tc.body, e.Error.Message, tc.msg)
		}
	}
	res, body = h.call(http.MethodPost, "/v1/customers/"+cust+"/plan", adminToken, "{}")
	wantError(t, res, body, http.StatusMethodNotAllowed, "method_not_allowed")
	if !h.logged("plan override set", cust) {
		t.Error("the override was not logged for the audit trail")
	}

	// Without plans: no plan, every route and priced model; overrides
	// are refused as not configured.
	h2 := newHarness(t, harnessOptions{})
	res, body = h2.call(http.MethodGet, "/v1/customers/"+cust+"/access", adminToken, "")
	a = decodeAccess(t, res, body)
	if a.Plan != nil || a.PlanSource != nil || len(a.Routes) != 7 || len(a.Models) != 5 {
		t.Errorf("access without plans %+v", a)
	}
	res, body = h2.call(http.MethodPut, "/v1/customers/"+cust+"/plan", adminToken, `{"plan":"pro"}`)
	wantError(t, res, body, http.StatusBadRequest, "not_configured")
}

// logged reports whether a line msg with customer was logged.
func (h *harness) logged(msg, customer string) bool {
	for _, e := range h.logs.FilterMessage(msg).All() {
		if e.ContextMap()["customer"] == customer {
			return true
		}
	}
	return false
}

// TestPlanTimeTransitions: an override's until ends it by the clock alone,
// with no event and no timer: the next request is priced by the plan
// underneath.
func TestPlanTimeTransitions(t *testing.T) {
	clock := &storeClock{now: time.Now().UTC().Truncate(time.Millisecond)}
	store, err := ledger.OpenBolt(filepath.Join(t.TempDir(), "tollgate.db"), ledger.Options{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	h := newHarness(t, harnessOptions{yaml: planConfig, store: store, now: clock.Now})
	cust := newCustomer()
	h.grant(cust, "10")
	until := clock.Now().Add(time.Hour).Format(time.RFC3339Nano)
	h.setPlan(cust, `{"plan":"chat","until":"`+until+`"}`)
	chat := request{path: "/v1/chat/completions", customer: cust, body: chatBody("gpt-4o", "")}
	clock.Advance(time.Hour - time.Second)
	if res, body := h.do(chat); res.StatusCode != http.StatusOK {
		t.Fatalf("before until: %d %s", res.StatusCode, body)
	}
	h.settled(cust, 1)
	clock.Advance(time.Second)
	res, body := h.do(chat)
	if e := wantError(t, res, body, http.StatusForbidden, "route_not_entitled"); !strings.HasPrefix(e.Error.Message, "the free plan (from no subscription)") {
		t.Errorf("at until: %q", e.Error.Message)
	}
}

// TestModelListBehindPrefixRoute: without plans, a prefix route that
// matches /v1/models keeps forwarding it, as before plans; with plans,
// tollgate answers the customer's list.
func TestModelListBehindPrefixRoute(t *testing.T) {
	prefix := `  - path: /v1/
    api: flat
    upstream: UPSTREAM
    prices:
      "*": {per_request: "0.001"}
`
	for _, tc := range []struct {
		name, yaml string
		want       int
	}{
		{"without plans", noModelsRoute(t, testConfig) + "", http.StatusPaymentRequired},
		{"with plans", noModelsRoute(t, planConfig), http.StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			yaml := strings.Replace(tc.yaml, "routes:\n", "routes:\n"+prefix, 1)
			h := newHarness(t, harnessOptions{yaml: yaml})
			status, _, _ := listModels(t, h, newCustomer())
			if status != tc.want {
				t.Errorf("status %d, want %d", status, tc.want)
			}
		})
	}
}
