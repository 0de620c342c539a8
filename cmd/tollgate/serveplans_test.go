package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stripe/stripe-go/v79/webhook"
)

// TestServePlans runs serve with plans: a customer without a
// subscription is on a plan without chat completions; a Stripe
// subscription to the pro price puts them on pro at once, its deletion
// takes it away, and a late copy of an older "active" changes nothing.
// `tollgate access` tells the story.
func TestServePlans(t *testing.T) {
	dir := t.TempDir()
	up := newFakeProvider(t)
	cfg := fmt.Sprintf(`listen: 127.0.0.1:0
admin: {listen: "127.0.0.1:0", token: %s}
store: {%s}
settle_timeout: 2s
stripe:
  webhook_secret: %s
  livemode: false
  prices:
    price_pro: {plan: pro}
routes:
  - path: /v1/chat/completions
    api: openai.chat
    upstream: %s
    headers: {Authorization: "Bearer sk-provider"}
    max_output_tokens: 1000
    prices:
      gpt-4o: {input: "2.50", output: "10"}
plans:
  free: {models: [], routes: []}
  pro: {models: ["*"], max_output_tokens: 500}
default_plan: free
`, serveToken, boltSection(dir), webhookSecret, up.URL)
	path := filepath.Join(dir, "tollgate.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	s := startServe(t, path)
	t.Setenv("TOLLGATE_ADMIN_TOKEN", serveToken)
	if _, stderr, code := runCLI(t, "credit", "acme", "10", "--key", "welcome", "--admin", s.admin); code != 0 {
		t.Fatalf("credit: %s", stderr)
	}
	deliver := func(event string) {
		t.Helper()
		signed := webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{Payload: []byte(event), Secret: webhookSecret, Timestamp: time.Now()})
		req, _ := http.NewRequest(http.MethodPost, s.admin+"/webhooks/stripe", strings.NewReader(event))
		req.Header.Set("Stripe-Signature", signed.Header)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		data, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != 200 {
			t.Fatalf("webhook: %d %s", res.StatusCode, data)
		}
	}
	subscription := func(typ, status string, created int64) string {
		return fmt.Sprintf(`{"id":"evt_%d","object":"event","livemode":false,"type":%q,"created":%d,"data":{"object":{"id":"sub_1","object":"subscription","status":%q,"customer":"cus_1","cancel_at_period_end":false,"current_period_end":4102444800,"metadata":{"tollgate_customer":"acme"},"items":{"object":"list","data":[{"id":"si_1","price":{"id":"price_pro","lookup_key":null},"quantity":1}]}}}}`,
			created, typ, created, status)
	}

	res, data := chat(t, s.proxy, "acme", chatRequest)
	if res.StatusCode != 403 || !strings.Contains(string(data), `"code":"route_not_entitled"`) {
		t.Fatalf("without a subscription: %d %s", res.StatusCode, data)
	}
	deliver(subscription("customer.subscription.created", "active", 1700000000))
	res, data = chat(t, s.proxy, "acme", chatRequest)
	if res.StatusCode != 200 || res.Header.Get("X-Tollgate-Output-Cap") != "500" {
		t.Fatalf("subscribed: %d %s (cap %q)", res.StatusCode, data, res.Header.Get("X-Tollgate-Output-Cap"))
	}
	out, stderr, code := runCLI(t, "access", "acme", "--admin", s.admin)
	if code != 0 || !strings.Contains(out, "plan          pro (subscription: subscription sub_1 (active))\n") ||
		!strings.Contains(out, "subscription  sub_1 active, period ends 2100-01-01T00:00:00Z\n") || !strings.Contains(out, "models        gpt-4o\n") {
		t.Errorf("access: %d %q %q", code, out, stderr)
	}
	deliver(subscription("customer.subscription.deleted", "canceled", 1700000200))
	deliver(subscription("customer.subscription.updated", "active", 1700000100)) // late
	res, data = chat(t, s.proxy, "acme", chatRequest)
	if res.StatusCode != 403 || !strings.Contains(string(data), `the free plan (from subscription sub_1 is canceled) does not include /v1/chat/completions`) {
		t.Errorf("after the cancellation: %d %s", res.StatusCode, data)
	}
	out, _, _ = runCLI(t, "access", "acme", "--admin", s.admin)
	if !strings.Contains(out, "plan          free (default: subscription sub_1 is canceled)\n") || !strings.Contains(out, "models        none\n") {
		t.Errorf("access after the cancellation: %q", out)
	}
}
