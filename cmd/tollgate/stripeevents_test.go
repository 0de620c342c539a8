package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stripe/stripe-go/v79/webhook"

	"github.com/tollgate-dev/tollgate/internal/redistest"
	"github.com/tollgate-dev/tollgate/stripesync"
)

// TestStripeEventsServe delivers a signed event for each outcome to a
// running tollgate, on each store, and reads the journal back through the
// admin API with `tollgate stripe-events`.
func TestStripeEventsServe(t *testing.T) {
	stores := []struct {
		name  string
		store func(t *testing.T, dir string) string
	}{
		{"bolt", func(t *testing.T, dir string) string { return boltSection(dir) }},
		{"redis", func(t *testing.T, dir string) string {
			return fmt.Sprintf("redis_url: %q, hold_ttl: 1m", "redis://"+redistest.Start(t).Addr+"/0")
		}},
		{"cluster", func(t *testing.T, dir string) string {
			return fmt.Sprintf("redis_url: %q, hold_ttl: 1m", "redis://"+redistest.StartCluster(t).Addrs[0]+"/0")
		}},
	}
	for _, st := range stores {
		t.Run(st.name, func(t *testing.T) {
			dir := t.TempDir()
			s := startServe(t, writeConfig(t, dir, "http://127.0.0.1:1", st.store(t, dir), "", "10"))
			t.Setenv("TOLLGATE_ADMIN_TOKEN", serveToken)
			n := fmt.Sprint(time.Now().UnixNano())
			cust := "acme-" + n
			deliver := func(event string, status int) {
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
				if res.StatusCode != status {
					t.Fatalf("webhook: %d %s, want %d", res.StatusCode, data, status)
				}
			}
			session := func(evt, cs, live, status, meta, extra string) string {
				return `{"id":"` + evt + `","object":"event","api_version":"2024-06-20","livemode":` + live + `,"type":"checkout.session.completed","created":1700000000,` +
					`"data":{"object":{"id":"` + cs + `","object":"checkout.session","mode":"payment","payment_status":"` + status + `","payment_intent":"pi_` + cs +
					`","customer":"cus_` + n + `","metadata":{"tollgate_customer":"` + cust + `"` + meta + `}` + extra + `}}}`
			}
			paid := session("evt_paid_"+n, "cs_paid_"+n, "false", "paid", `,"tollgate_credits":"5"`, "")
			deliver(paid, 200)
			deliver(paid, 200)
			deliver(session("evt_unpaid_"+n, "cs_unpaid_"+n, "false", "unpaid", `,"tollgate_credits":"5"`, ""), 200)
			deliver(session("evt_price_"+n, "cs_price_"+n, "false", "paid", "",
				`,"line_items":{"object":"list","has_more":false,"data":[{"id":"li_1","object":"item","quantity":1,"price":{"id":"price_123","object":"price"}}]}`), 200)
			deliver(session("evt_live_"+n, "cs_live_"+n, "true", "paid", `,"tollgate_credits":"5"`, ""), 200)
			deliver(`{"id":"evt_who_`+n+`","object":"event","livemode":false,"type":"checkout.session.completed","created":1700000000,`+
				`"data":{"object":{"id":"cs_who_`+n+`","object":"checkout.session","mode":"payment","payment_status":"paid","customer":"cus_unknown_`+n+`","metadata":{"tollgate_credits":"5"}}}}`, 503)

			// The journal is written in the background: wait for it.
			var page struct {
				Events []stripesync.Record `json:"events"`
				Next   *string             `json:"next"`
			}
			deadline := time.Now().Add(10 * time.Second)
			for {
				out, stderr, code := runCLI(t, "stripe-events", "--customer", cust, "--json", "--admin", s.admin)
				if code != 0 {
					t.Fatalf("stripe-events --json: exit %d %s", code, stderr)
				}
				if err := json.Unmarshal([]byte(out), &page); err != nil {
					t.Fatalf("%v: %s", err, out)
				}
				if len(page.Events) >= 5 || time.Now().After(deadline) {
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
			var got []string
			for _, e := range page.Events {
				got = append(got, e.ID+" "+string(e.Outcome)+": "+e.Detail)
			}
			want := []string{
				"evt_live_" + n + " ignored: live-mode event on a test endpoint: stripe.livemode is false, so only test-mode events are applied here",
				"evt_price_" + n + " ignored: price price_123 is not in stripe.prices; nothing credited (add it, then reconcile)",
				"evt_unpaid_" + n + " ignored: payment_status unpaid: waiting for checkout.session.async_payment_succeeded",
				"evt_paid_" + n + " duplicate: checkout session cs_paid_" + n + " was credited before (ledger entry 1); nothing changed",
				"evt_paid_" + n + " applied: 5.000000 credits for checkout session cs_paid_" + n,
			}
			if strings.Join(got, "\n") != strings.Join(want, "\n") || page.Next != nil {
				t.Errorf("journal of %s:\n%s\nwant:\n%s", cust, strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
			if len(page.Events) == 5 {
				if e := page.Events[4]; e.LedgerEntry != "1" || e.Source != "webhook" || e.StripeCustomer != "cus_"+n || e.Customer != cust || e.APIVersion != "2024-06-20" {
					t.Errorf("applied record = %+v", e)
				}
			}
			if a := adminAccount(t, s.admin, cust); a.Balance != mustParse(t, "5") {
				t.Errorf("balance after a replay = %s, want 5", a.Balance)
			}

			// The table, a page at a time.
			out, stderr, code := runCLI(t, "stripe-events", "--customer", cust, "--limit", "2", "--admin", s.admin)
			lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
			if code != 0 || len(lines) != 3 || !strings.HasPrefix(lines[0], "RECEIVED") ||
				!strings.Contains(squeeze(lines[1]), "webhook checkout.session.completed ignored "+cust+" (cus_"+n+") - evt_live_"+n+" live-mode event on a test endpoint") ||
				!strings.HasPrefix(stderr, "more events: tollgate stripe-events --customer "+cust+" --before ") {
				t.Errorf("stripe-events --limit 2: exit %d\n%s%s", code, out, stderr)
			}
			// The failed event's record is written in the background too,
			// and the wait above counted only cust's: wait for it as well.
			failed := "checkout.session.completed failed - (cus_unknown_" + n + ") - evt_who_" + n + " cannot tell which tollgate customer paid checkout session cs_who_" + n
			for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
				out, _, code = runCLI(t, "stripe-events", "--type", "checkout.session.completed", "--limit", "1000", "--admin", s.admin)
				if code == 0 && strings.Contains(squeeze(out), failed) {
					break
				}
				if time.Now().After(deadline) {
					t.Errorf("stripe-events --type checkout.session.completed: exit %d\n%s", code, out)
					break
				}
			}
			out, _, _ = runCLI(t, "stripe-events", "--customer", "nobody-"+n, "--admin", s.admin)
			if out != "no Stripe events for nobody-"+n+" in the journal (it keeps 35 days)\n" {
				t.Errorf("no events: %q", out)
			}
			if _, stderr, code := runCLI(t, "stripe-events", "--before", "nope", "--admin", s.admin); code != 1 || !strings.Contains(stderr, `before "nope" is not a cursor`) {
				t.Errorf("bad cursor: exit %d %s", code, stderr)
			}
		})
	}
}

// squeeze makes every run of spaces in a table one space.
func squeeze(s string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = strings.Join(strings.Fields(l), " ")
	}
	return strings.Join(lines, "\n")
}
