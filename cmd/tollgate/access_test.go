package main

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestAccess(t *testing.T) {
	var got string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = r.Method + " " + r.URL.EscapedPath() + " " + r.Header.Get("Authorization")
		w.Header().Set("Content-Type", "application/json")
		if r.URL.EscapedPath() == "/v1/customers/plain/access" {
			w.Write([]byte(`{"customer":"plain","plan":null,"plan_source":null,"subscription":null,"override":null,"balance":"1.000000","reserved":"0.000000","available":"1.000000","suspended":false,"next_expiry":null,"models":["gpt-4o"],"routes":["/v1/chat/completions"]}`))
			return
		}
		w.Write([]byte(`{"customer":"team/a","plan":"pro","plan_source":"override","subscription":{"id":"sub_1","status":"past_due","plan":"free","current_period_end":"2030-01-31T00:00:00Z","cancel_at_period_end":true,"past_due_since":"2030-01-02T00:00:00Z"},"override":{"plan":"pro","until":"2030-02-01T00:00:00Z","reason":"ticket 42","set_at":"2030-01-01T00:00:00Z"},"balance":"10.000000","reserved":"0.500000","available":"9.500000","suspended":true,"next_expiry":{"amount":"2.000000","at":"2030-01-31T00:00:00Z"},"models":["gpt-4o","gpt-4o-mini"],"routes":["/v1/chat/completions"],"why":"an admin override until 2030-02-01T00:00:00Z","stripe_events":[{"id":"evt_2","type":"invoice.paid","livemode":false,"received_at":"2030-01-05T00:00:00Z","source":"webhook","outcome":"ignored","detail":"price price_9 is not in stripe.prices"},{"id":"evt_1","type":"customer.subscription.updated","livemode":false,"received_at":"2030-01-02T00:00:00Z","source":"webhook","outcome":"applied","detail":"subscription sub_1 recorded as past_due"}]}`))
	}))
	t.Cleanup(srv.Close)
	t.Setenv("TOLLGATE_ADMIN_TOKEN", testToken)
	t.Setenv("TOLLGATE_ADMIN_URL", srv.URL)

	stdout, stderr, code := runCLI(t, "access", "team/a")
	want := "customer      team/a\n" +
		"plan          pro (override: an admin override until 2030-02-01T00:00:00Z)\n" +
		"subscription  sub_1 past_due, period ends 2030-01-31T00:00:00Z, cancels then, past due since 2030-01-02T00:00:00Z\n" +
		"override      pro until 2030-02-01T00:00:00Z: ticket 42\n" +
		"balance       10.000000\n" +
		"reserved      0.500000\n" +
		"available     9.500000\n" +
		"next expiry   2.000000 at 2030-01-31T00:00:00Z\n" +
		"suspended     yes: requests are refused until the Stripe dispute is closed\n" +
		"models        gpt-4o, gpt-4o-mini\n" +
		"routes        /v1/chat/completions\n" +
		"stripe event  2030-01-05T00:00:00Z invoice.paid ignored: price price_9 is not in stripe.prices\n" +
		"stripe event  2030-01-02T00:00:00Z customer.subscription.updated applied: subscription sub_1 recorded as past_due\n"
	if code != 0 || stdout != want || stderr != "" {
		t.Errorf("access = %q, %q, %d\nwant %q", stdout, stderr, code, want)
	}
	if got != "GET /v1/customers/team%2Fa/access Bearer "+testToken {
		t.Errorf("request %q", got)
	}
	stdout, _, code = runCLI(t, "access", "plain")
	want = "customer   plain\n" +
		"plan       - (no plans configured: every route and priced model)\n" +
		"balance    1.000000\n" +
		"reserved   0.000000\n" +
		"available  1.000000\n" +
		"models     gpt-4o\n" +
		"routes     /v1/chat/completions\n"
	if code != 0 || stdout != want {
		t.Errorf("access plain = %q (%d)\nwant %q", stdout, code, want)
	}
}
