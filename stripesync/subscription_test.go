package stripesync_test

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/tidwall/gjson"

	"github.com/tollgate-dev/tollgate/money"
	"github.com/tollgate-dev/tollgate/plan"
	"github.com/tollgate-dev/tollgate/stripesync"
)

// planPrices are stripe.prices with plans: the fixtures' pro price grants
// credits and the pro plan; price_basic the basic plan alone.
func planPrices(o *stripesync.Options) {
	o.Prices = map[string]stripesync.Price{
		"price_1PProMonthly": {Credits: money.MustParse("1000"), Plan: "pro"},
		"price_basic":        {Plan: "basic"},
	}
}

// planCatalog is what the proxy would decide with.
var planCatalog = &plan.Catalog{
	Plans: map[string]*plan.Plan{
		"free":  {Name: "free"},
		"basic": {Name: "basic"},
		"pro":   {Name: "pro"},
	},
	Default:      "free",
	PastDueGrace: plan.DefaultPastDueGrace,
}

// recorded is the subscription state recorded for customer.
func (h *harness) recorded(customer string) plan.State {
	h.t.Helper()
	ps, err := h.store.Plan(context.Background(), customer)
	if err != nil {
		h.t.Fatal(err)
	}
	st, err := plan.Decode(ps.Version, ps.Subscription, ps.Override)
	if err != nil {
		h.t.Fatal(err)
	}
	return st
}

// subEvent is the fixture's subscription event with its type, status and
// created time set, and a distinct event id.
func (h *harness) subEvent(fixture, typ, status string, created int64, edits ...any) []byte {
	h.t.Helper()
	all := append([]any{"type", typ, "data.object.status", status, "created", created, "id", fmt.Sprintf("evt_%s_%d", status, created)}, edits...)
	return h.fixture(fixture, all...)
}

func wantPlan(t *testing.T, h *harness, customer string, at time.Time, wantStatus, wantPlan string) plan.State {
	t.Helper()
	st := h.recorded(customer)
	status := ""
	if st.Subscription != nil {
		status = st.Subscription.Status
	}
	if got := planCatalog.Effective(st, at); status != wantStatus || got.Plan.Name != wantPlan {
		t.Fatalf("recorded %q, plan %s (%s); want %q, plan %s", status, got.Plan.Name, got.Why, wantStatus, wantPlan)
	}
	return st
}

var fixtures = []string{"customer_subscription_updated_2024-06-20.json", "customer_subscription_updated_2025-03-31.json"}

// TestSubscriptionTransitions: each status a subscription goes through,
// in order, from both API versions' shapes, gives the plan DESIGN says.
func TestSubscriptionTransitions(t *testing.T) {
	for _, fx := range fixtures {
		t.Run(fx, func(t *testing.T) {
			forEachStore(t, func(t *testing.T, b backend) {
				h := open(t, b, planPrices)
				globex := h.id("globex")
				base := int64(1746000000)
				at := time.Unix(base, 0).UTC()
				periodEnd := time.Unix(1748736000, 0).UTC()

				h.mustDeliver(h.subEvent(fx, stripesync.EventSubscriptionCreated, "trialing", base), http.StatusOK)
				st := wantPlan(t, h, globex, at, "trialing", "pro")
				if s := st.Subscription; !s.CurrentPeriodEnd.Equal(periodEnd) || s.Price != "price_1PProMonthly" || s.ID != gjson.GetBytes(h.fixture(fx), "data.object.id").String() {
					t.Errorf("recorded %+v", s)
				}
				h.mustDeliver(h.subEvent(fx, stripesync.EventSubscriptionUpdated, "active", base+10), http.StatusOK)
				wantPlan(t, h, globex, at, "active", "pro")

				// past_due keeps the plan for the grace, from the first
				// event that showed it, then the default.
				h.mustDeliver(h.subEvent(fx, stripesync.EventSubscriptionUpdated, "past_due", base+20), http.StatusOK)
				h.mustDeliver(h.subEvent(fx, stripesync.EventSubscriptionUpdated, "past_due", base+30, "data.object.metadata.note", "retry"), http.StatusOK)
				st = wantPlan(t, h, globex, at, "past_due", "pro")
				if !st.Subscription.PastDueSince.Equal(time.Unix(base+20, 0)) {
					t.Errorf("past_due since %s, want the first past_due event's time", st.Subscription.PastDueSince)
				}
				wantPlan(t, h, globex, time.Unix(base+20, 0).Add(72*time.Hour-time.Second), "past_due", "pro")
				wantPlan(t, h, globex, time.Unix(base+20, 0).Add(72*time.Hour), "past_due", "free")

				h.mustDeliver(h.subEvent(fx, stripesync.EventSubscriptionUpdated, "active", base+40), http.StatusOK)
				wantPlan(t, h, globex, at, "active", "pro")
				// Cancel at period end: the plan stays until the period
				// ends.
				h.mustDeliver(h.subEvent(fx, stripesync.EventSubscriptionUpdated, "active", base+50, "data.object.cancel_at_period_end", true), http.StatusOK)
				wantPlan(t, h, globex, periodEnd.Add(-time.Second), "active", "pro")
				wantPlan(t, h, globex, periodEnd, "active", "free")
				for _, status := range []string{"unpaid", "incomplete_expired", "canceled"} {
					typ := stripesync.EventSubscriptionUpdated
					if status == "canceled" {
						typ = stripesync.EventSubscriptionDeleted
					}
					base += 100
					h.mustDeliver(h.subEvent(fx, typ, status, base), http.StatusOK)
					wantPlan(t, h, globex, at, status, "free")
				}
			})
		})
	}
}

// TestSubscriptionOutOfOrder: the same four events in every order, and
// replayed, leave the newest state; an upgrade mid-period changes the plan.
func TestSubscriptionOutOfOrder(t *testing.T) {
	forEachStore(t, func(t *testing.T, b backend) {
		h := open(t, b, planPrices)
		base := int64(1746000000)
		fx := fixtures[1]
		perms := permutations(4)
		for i, perm := range perms {
			cust := h.id(fmt.Sprintf("cust%d", i))
			sub := fmt.Sprintf("sub_perm%d", i)
			edit := []any{"data.object.metadata.tollgate_customer", cust, "data.object.id", sub}
			basic := append(edit, "data.object.items.data.0.price.id", "price_basic")
			events := [][]byte{
				h.subEvent(fx, stripesync.EventSubscriptionCreated, "trialing", base, edit...),
				h.subEvent(fx, stripesync.EventSubscriptionUpdated, "active", base+10, edit...),
				// A change of plan within the period: the item's price.
				h.subEvent(fx, stripesync.EventSubscriptionUpdated, "active", base+20, basic...),
				h.subEvent(fx, stripesync.EventSubscriptionUpdated, "past_due", base+30, basic...),
			}
			for _, j := range perm {
				h.mustDeliver(events[j], http.StatusOK)
			}
			st := wantPlan(t, h, cust, time.Unix(base+30, 0), "past_due", "basic")
			if !st.Subscription.PastDueSince.Equal(time.Unix(base+30, 0)) {
				t.Fatalf("perm %v: past_due since %s", perm, st.Subscription.PastDueSince)
			}
			// Replays change nothing, in any order.
			v := st.Version
			for _, j := range perm {
				rec := h.mustDeliver(events[j], http.StatusOK)
				if got := gjson.Get(rec.Body.String(), "outcome").String(); got != "duplicate" {
					t.Fatalf("perm %v: replay of event %d: outcome %q, want duplicate", perm, j, got)
				}
			}
			if got := h.recorded(cust).Version; got != v {
				t.Fatalf("perm %v: replays moved the version from %d to %d", perm, v, got)
			}
		}
	})
}

// permutations returns every order of 0..n-1 (n ≤ 4 here).
func permutations(n int) [][]int {
	if n == 0 {
		return [][]int{{}}
	}
	var out [][]int
	for _, p := range permutations(n - 1) {
		for i := 0; i <= len(p); i++ {
			q := append(append(append([]int{}, p[:i]...), n-1), p[i:]...)
			out = append(out, q)
		}
	}
	return out
}

// TestSubscriptionOtherSubscriptionEnds: the end of a customer's old
// subscription does not take away the plan of the live one that replaced
// it, whatever order their events come in.
func TestSubscriptionOtherSubscriptionEnds(t *testing.T) {
	forEachStore(t, func(t *testing.T, b backend) {
		h := open(t, b, planPrices)
		globex := h.id("globex")
		fx := fixtures[0]
		base := int64(1746000000)
		h.mustDeliver(h.subEvent(fx, stripesync.EventSubscriptionCreated, "active", base, "data.object.id", "sub_new"), http.StatusOK)
		rec := h.mustDeliver(h.subEvent(fx, stripesync.EventSubscriptionDeleted, "canceled", base+5, "data.object.id", "sub_old"), http.StatusOK)
		if got := gjson.Get(rec.Body.String(), "outcome").String(); got != "ignored" {
			t.Errorf("the old subscription's end: outcome %q, want ignored", got)
		}
		wantPlan(t, h, globex, time.Unix(base, 0), "active", "pro")

		// A subscription to a price tollgate does not know (another
		// product on the account), of a customer it does not know: 200,
		// ignored, nothing recorded.
		stranger := h.id("stranger")
		rec = h.mustDeliver(h.subEvent(fx, stripesync.EventSubscriptionCreated, "active", base+10,
			"data.object.id", "sub_other", "data.object.items.data.0.price.id", "price_elsewhere",
			"data.object.items.data.0.price.lookup_key", nil, "data.object.metadata.tollgate_customer", stranger), http.StatusOK)
		if got := gjson.Get(rec.Body.String(), "outcome").String(); got != "ignored" {
			t.Errorf("an unpriced subscription: outcome %q, want ignored", got)
		}
		if st := h.recorded(stranger); st.Subscription != nil {
			t.Errorf("recorded %+v", st.Subscription)
		}
	})
}

// TestPaymentFailed: without an API key, a failed renewal marks the
// recorded subscription past_due from the event's time; a failed first
// invoice, or one of another subscription, changes nothing.
func TestPaymentFailed(t *testing.T) {
	forEachStore(t, func(t *testing.T, b backend) {
		h := open(t, b, planPrices)
		globex := h.id("globex")
		base := int64(1746000000)
		failed := h.fixture("invoice_payment_failed_2025-03-31.json")
		h.mustDeliver(failed, http.StatusOK) // nothing recorded yet: ignored
		if st := h.recorded(globex); st.Subscription != nil {
			t.Fatalf("recorded %+v from a lone payment failure", st.Subscription)
		}
		h.mustDeliver(h.subEvent(fixtures[1], stripesync.EventSubscriptionUpdated, "active", base), http.StatusOK)
		first := h.fixture("invoice_payment_failed_2025-03-31.json", "data.object.billing_reason", "subscription_create")
		h.mustDeliver(first, http.StatusOK)
		wantPlan(t, h, globex, time.Unix(base, 0), "active", "pro")
		h.mustDeliver(failed, http.StatusOK)
		st := wantPlan(t, h, globex, time.Unix(base, 0), "past_due", "pro")
		if since := gjson.GetBytes(failed, "created").Int(); !st.Subscription.PastDueSince.Equal(time.Unix(since, 0)) {
			t.Errorf("past_due since %s, want the event's time", st.Subscription.PastDueSince)
		}
		wantPlan(t, h, globex, time.Unix(gjson.GetBytes(failed, "created").Int(), 0).Add(72*time.Hour), "past_due", "free")
		// The subscription's own update, older than the failure, is stale.
		rec := h.mustDeliver(h.subEvent(fixtures[1], stripesync.EventSubscriptionUpdated, "active", base+1), http.StatusOK)
		if got := gjson.Get(rec.Body.String(), "outcome").String(); got != "duplicate" {
			t.Errorf("an older update after the failure: outcome %q, want duplicate", got)
		}
	})
}

// TestSubscriptionFetchedWithAPIKey: with an API key, an event records the
// subscription as Stripe has it now, so a late event cannot bring back a
// state that is over; reconciliation replays subscription events through
// the same path.
func TestSubscriptionFetchedWithAPIKey(t *testing.T) {
	forEachStore(t, func(t *testing.T, b backend) {
		fake := newFakeStripe(t)
		h := open(t, b, planPrices, withAPI(fake.URL()))
		globex := h.id("globex")
		base := int64(1746000000)
		fx := fixtures[1]
		// Stripe's current state: canceled.
		now := h.subEvent(fx, stripesync.EventSubscriptionDeleted, "canceled", base+100)
		subID := gjson.GetBytes(now, "data.object.id").String()
		fake.mu.Lock()
		fake.objects["/v1/subscriptions/"+subID] = []byte(gjson.GetBytes(now, "data.object").Raw)
		fake.mu.Unlock()
		// A late "active" event, delivered after the cancellation.
		h.mustDeliver(h.subEvent(fx, stripesync.EventSubscriptionUpdated, "active", base), http.StatusOK)
		wantPlan(t, h, globex, time.Unix(base, 0), "canceled", "free")
		if n := fake.callCount("/v1/subscriptions/"); n != 1 {
			t.Errorf("%d subscription fetches, want 1", n)
		}

		// Reconciliation lists subscription events and applies them.
		other := h.id("initech")
		ev := h.subEvent(fx, stripesync.EventSubscriptionCreated, "trialing", h.clock.Now().Add(-time.Hour).Unix(),
			"data.object.id", "sub_recon", "data.object.metadata.tollgate_customer", other)
		fake.addEvents(ev)
		fake.mu.Lock()
		fake.objects["/v1/subscriptions/"+gjson.GetBytes(ev, "data.object.id").String()] = []byte(gjson.GetBytes(ev, "data.object").Raw)
		fake.mu.Unlock()
		events, applied, err := h.syncer.Reconcile(context.Background(), 72*time.Hour)
		if err != nil || events != 1 || applied != 1 {
			t.Fatalf("reconcile: %d events, %d applied, %v", events, applied, err)
		}
		wantPlan(t, h, other, h.clock.Now(), "trialing", "pro")
	})
}

// TestSubscriptionUnknownCustomer: a priced subscription whose customer
// tollgate cannot tell is refused with 503, so that Stripe retries once
// a checkout introduced the customer; then it applies.
func TestSubscriptionUnknownCustomer(t *testing.T) {
	forEachStore(t, func(t *testing.T, b backend) {
		h := open(t, b, planPrices)
		ev := h.subEvent(fixtures[0], stripesync.EventSubscriptionCreated, "active", 1746000000, "data.object.metadata", map[string]string{})
		rec := h.mustDeliver(ev, http.StatusServiceUnavailable)
		if got := gjson.Get(rec.Body.String(), "error.code").String(); got != "retry_later" {
			t.Errorf("code %q: %s", got, rec.Body)
		}
		globex := h.id("globex")
		if err := h.store.PutMeta(context.Background(), "stripe:customer:"+h.id("cus_QGlobex00001"), globex); err != nil {
			t.Fatal(err)
		}
		h.mustDeliver(ev, http.StatusOK)
		wantPlan(t, h, globex, time.Unix(1746000000, 0), "active", "pro")
	})
}
