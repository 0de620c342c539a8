package stripesync_test

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tidwall/gjson"

	"github.com/tollgate-dev/tollgate/ledger"
	"github.com/tollgate-dev/tollgate/money"
	"github.com/tollgate-dev/tollgate/stripesync"
)

// month is the length of the tests' billing periods.
const month = 30 * 24 * time.Hour

// cycleStart is the start of the first billing period of the tests: the
// fake clock starts an hour into it.
var cycleStart = t0.Add(-time.Hour)

// cycleInvoice is the 2024-06-20 invoice of billing period n (0, 1, …):
// 3 × pro_monthly for [cycleStart + n months, cycleStart + n+1 months),
// paid by its own payment intent.
func (h *harness) cycleInvoice(n int, edits ...any) []byte {
	from, to := cycleStart.Add(time.Duration(n)*month), cycleStart.Add(time.Duration(n+1)*month)
	return h.fixture("invoice_paid_2024-06-20.json", append([]any{
		"id", fmt.Sprintf("evt_cycle%d", n),
		"data.object.id", h.id(fmt.Sprintf("in_cycle%d", n)),
		"data.object.payment_intent", h.id(fmt.Sprintf("pi_cycle%d", n)),
		"data.object.charge", h.id(fmt.Sprintf("ch_cycle%d", n)),
		"data.object.lines.data.0.period.start", from.Unix(),
		"data.object.lines.data.0.period.end", to.Unix(),
	}, edits...)...)
}

// at moves the fake clock forward to t.
func (h *harness) at(t time.Time) {
	h.t.Helper()
	d := t.Sub(h.clock.Now())
	if d < 0 {
		h.t.Fatalf("the clock cannot go back from %s to %s", h.clock.Now(), t)
	}
	h.clock.Advance(d)
}

// lots returns the customer's active lots as "remaining/amount@priority
// until RFC3339|never", in burn order.
func (h *harness) lots(customer string) []string {
	h.t.Helper()
	lots, err := h.store.Lots(context.Background(), customer)
	if err != nil {
		h.t.Fatalf("lots of %s: %v", customer, err)
	}
	out := make([]string, len(lots))
	for i, l := range lots {
		until := "never"
		if l.ExpiresAt != nil {
			until = l.ExpiresAt.UTC().Format(time.RFC3339)
		}
		out[i] = fmt.Sprintf("%s/%s@%d until %s", l.Remaining, l.Amount, l.Priority, until)
	}
	return out
}

func (h *harness) wantLots(customer string, want ...string) {
	h.t.Helper()
	if got := h.lots(customer); !slices.Equal(got, want) {
		h.t.Errorf("lots of %s:\n got %q\nwant %q", customer, got, want)
	}
}

// spend charges customer amount through a hold, as the proxy does.
func (h *harness) spend(customer, hold, amount string) {
	h.t.Helper()
	ctx := context.Background()
	if err := h.store.Reserve(ctx, customer, hold, money.MustParse(amount), time.Minute); err != nil {
		h.t.Fatalf("reserve %s: %v", amount, err)
	}
	if _, err := h.store.Settle(ctx, customer, hold, money.MustParse(amount), ledger.Charge{Reference: hold}); err != nil {
		h.t.Fatalf("settle %s: %v", amount, err)
	}
}

func kinds(es []ledger.Entry) string {
	var k []string
	for _, e := range es {
		k = append(k, fmt.Sprintf("%s %s", e.Kind, e.Amount))
	}
	return strings.Join(k, ", ")
}

// TestMonthlyInvoicesLeaveOnlyTheCurrentAllowance: a subscription line's
// credits expire at the end of its period, so two monthly invoices in a
// row leave only the current month's allowance spendable, whatever was
// left of the last one; replays change nothing.
func TestMonthlyInvoicesLeaveOnlyTheCurrentAllowance(t *testing.T) {
	forEachStore(t, func(t *testing.T, b backend) {
		h := open(t, b)
		globex := h.id("globex")
		h.mustDeliver(h.cycleInvoice(0), http.StatusOK)
		h.wantBalance(globex, "3000")
		h.wantLots(globex, "3000.000000/3000.000000@50 until "+cycleStart.Add(month).Format(time.RFC3339))
		h.spend(globex, "r1", "500")

		h.at(cycleStart.Add(month).Add(5 * time.Minute)) // the renewal, paid a little after the period turned
		h.mustDeliver(h.cycleInvoice(1), http.StatusOK)
		h.wantBalance(globex, "3000")
		h.wantLots(globex, "3000.000000/3000.000000@50 until "+cycleStart.Add(2*month).Format(time.RFC3339))
		// Replays of both, late or not, change nothing.
		for _, n := range []int{0, 1, 0} {
			if got := gjson.Get(h.mustDeliver(h.cycleInvoice(n), http.StatusOK).Body.String(), "outcome").String(); got != "duplicate" {
				t.Errorf("replay of invoice %d: outcome %q, want duplicate", n, got)
			}
		}
		h.wantBalance(globex, "3000")
		es := h.entries(globex)
		if got, want := kinds(es), "grant 3000.000000, charge -500.000000, expire -2500.000000, grant 3000.000000"; got != want {
			t.Fatalf("entries: %s\nwant %s", got, want)
		}
		if !es[2].At.Equal(cycleStart.Add(month)) || es[2].Reference != h.id("in_cycle0") {
			t.Errorf("expire entry %+v: want it dated at the end of the first period, naming its invoice", es[2])
		}
	})
}

// TestLateInvoiceGrantsNothingSpendable: invoices that arrive out of
// order, the older one after its period ended, grant only the current
// period: the late grant is recorded and expires at once.
func TestLateInvoiceGrantsNothingSpendable(t *testing.T) {
	forEachStore(t, func(t *testing.T, b backend) {
		h := open(t, b)
		globex := h.id("globex")
		h.at(cycleStart.Add(month).Add(time.Hour))
		h.mustDeliver(h.cycleInvoice(1), http.StatusOK)
		rec := h.mustDeliver(h.cycleInvoice(0), http.StatusOK) // late: its period is over
		if got := gjson.Get(rec.Body.String(), "outcome").String(); got != "applied" {
			t.Errorf("late invoice: outcome %q, want applied (recorded)", got)
		}
		h.wantBalance(globex, "3000")
		h.wantLots(globex, "3000.000000/3000.000000@50 until "+cycleStart.Add(2*month).Format(time.RFC3339))
		for _, n := range []int{1, 0, 0, 1} {
			h.mustDeliver(h.cycleInvoice(n), http.StatusOK)
		}
		h.wantBalance(globex, "3000")
		es := h.entries(globex)
		if got, want := kinds(es), "grant 3000.000000, grant 3000.000000, expire -3000.000000"; got != want {
			t.Fatalf("entries: %s\nwant %s", got, want)
		}
		if es[2].Lot != es[1].ID || !es[2].At.Equal(h.clock.Now()) {
			t.Errorf("expire entry %+v: want it to name the late grant's lot %s, dated when it was granted", es[2], es[1].ID)
		}
	})
}

// TestPriceLotSettings: stripe.prices' expires, grace and priority shape
// the lots a payment creates, one per distinct expiry and priority, each
// credited once.
func TestPriceLotSettings(t *testing.T) {
	ten := 10
	prices := testPrices()
	prices["pro_monthly"] = stripesync.Price{Credits: money.MustParse("1000"), Grace: 72 * time.Hour, Priority: &ten}
	prices["addon"] = stripesync.Price{Credits: money.MustParse("500"), Expires: stripesync.ExpiresNever}
	prices["bonus_pack"] = stripesync.Price{Credits: money.MustParse("2500"), Expires: stripesync.ExpiresAfter, ExpiresAfter: 720 * time.Hour, Priority: &ten}
	f := newFakeStripe(t)
	h := open(t, boltBackend(), withAPI(f.URL()), func(o *stripesync.Options) { o.Prices = prices })
	globex, acme := h.id("globex"), h.id("acme")

	// An invoice with the plan and an add-on that never expires.
	line0 := gjson.GetBytes(h.cycleInvoice(0), "data.object.lines.data.0").Value()
	inv := h.cycleInvoice(0,
		"data.object.lines.data.2", line0,
		"data.object.lines.data.2.id", "il_addon",
		"data.object.lines.data.2.price.id", "price_addon",
		"data.object.lines.data.2.price.lookup_key", "addon",
		"data.object.lines.data.2.quantity", 2)
	for range 2 {
		h.mustDeliver(inv, http.StatusOK)
	}
	h.wantLots(globex,
		"3000.000000/3000.000000@10 until "+cycleStart.Add(month+72*time.Hour).Format(time.RFC3339),
		"1000.000000/1000.000000@50 until never")
	es := h.entries(globex)
	if len(es) != 2 || es[0].Reference != h.id("in_cycle0") || es[1].Reference != h.id("in_cycle0") {
		t.Fatalf("entries %+v: want two grants referencing the invoice", es)
	}
	// Within the grace period the allowance still counts; after it, not.
	h.at(cycleStart.Add(month + 72*time.Hour - time.Second))
	h.wantBalance(globex, "4000")
	h.at(cycleStart.Add(month + 72*time.Hour))
	h.wantBalance(globex, "1000")

	// A Checkout purchase: 2 × the 10k pack (default: never expires) and
	// a bonus pack that expires 720h after the grant, spent first.
	f.lineItems[h.id("cs_test_b1LineItemsAcme0002")] = h.fixture("checkout_session_line_items.json")
	granted := h.clock.Now()
	h.mustDeliver(h.fixture("checkout_session_completed_basil.json"), http.StatusOK)
	h.mustDeliver(h.fixture("checkout_session_completed_basil.json"), http.StatusOK)
	h.wantLots(acme,
		"2500.000000/2500.000000@10 until "+granted.Add(720*time.Hour).Format(time.RFC3339),
		"20000.000000/20000.000000@50 until never")
}

// TestRefundTakesFromThePaymentsLotFirst: a refund claws back from the
// lot its payment created before any other, even one that burns first.
func TestRefundTakesFromThePaymentsLotFirst(t *testing.T) {
	forEachStore(t, func(t *testing.T, b backend) {
		h := open(t, b)
		acme := h.id("acme")
		h.mustDeliver(h.fixture("checkout_session_completed.json"), http.StatusOK) // 10000, lot 1
		second := h.fixture("checkout_session_completed.json",
			"data.object.id", h.id("cs_test_second"), "data.object.payment_intent", h.id("pi_second"), "data.object.metadata.tollgate_credits", "4000")
		h.mustDeliver(second, http.StatusOK) // lot 2, burns after lot 1
		// Half of the second payment is refunded: 2000 from its own lot.
		h.mustDeliver(h.fixture("charge_refunded.json", "data.object.id", h.id("ch_second"), "data.object.payment_intent", h.id("pi_second"),
			"data.object.amount", 10000, "data.object.amount_refunded", 5000), http.StatusOK)
		h.wantLots(acme, "10000.000000/10000.000000@50 until never", "2000.000000/4000.000000@50 until never")
		// The rest is refunded after the lot was partly spent: what it
		// lacks comes in burn order.
		h.spend(acme, "r1", "10500") // all of lot 1 and 500 of lot 2
		h.mustDeliver(h.fixture("charge_refunded.json", "data.object.id", h.id("ch_second"), "data.object.payment_intent", h.id("pi_second"),
			"data.object.amount", 10000, "data.object.amount_refunded", 10000), http.StatusOK)
		h.wantLots(acme)
		h.wantBalance(acme, "-500")
	})
}

// TestRefundOfSubscriptionInvoiceClawsBackItsGrant: a refund of an
// invoice payment takes back its share of the invoice's grant, from the
// grant's lot first, whichever API version names the invoice.
func TestRefundOfSubscriptionInvoiceClawsBackItsGrant(t *testing.T) {
	sixty := 60
	prices := testPrices()
	prices["pro_monthly"] = stripesync.Price{Credits: money.MustParse("1000"), Priority: &sixty} // spent after top-ups
	prices["price_1PProMonthly"] = prices["pro_monthly"]

	t.Run("2024-06-20", func(t *testing.T) {
		forEachStore(t, func(t *testing.T, b backend) {
			h := open(t, b, func(o *stripesync.Options) { o.Prices = prices })
			globex := h.id("globex")
			h.mustDeliver(h.fixture("checkout_session_completed.json", "data.object.metadata.tollgate_customer", globex), http.StatusOK)
			h.mustDeliver(h.cycleInvoice(0), http.StatusOK)
			refund := func(refunded int) []byte {
				return h.fixture("charge_refunded.json", "data.object.id", h.id("ch_cycle0"), "data.object.payment_intent", h.id("pi_cycle0"),
					"data.object.invoice", h.id("in_cycle0"), "data.object.amount", 24700, "data.object.amount_refunded", refunded)
			}
			h.mustDeliver(refund(24700/2), http.StatusOK) // half: 1500 of the 3000
			until := " until " + cycleStart.Add(month).Format(time.RFC3339)
			h.wantLots(globex, "10000.000000/10000.000000@50 until never", "1500.000000/3000.000000@60"+until)
			h.mustDeliver(refund(24700), http.StatusOK)
			h.mustDeliver(refund(24700/2), http.StatusOK) // late
			h.wantLots(globex, "10000.000000/10000.000000@50 until never")
			es := h.entries(globex)
			if got, want := kinds(es), "topup 10000.000000, grant 3000.000000, refund -1500.000000, refund -1500.000000"; got != want {
				t.Fatalf("entries: %s\nwant %s", got, want)
			}
			if !strings.Contains(es[2].Reason, "(invoice "+h.id("in_cycle0")+")") {
				t.Errorf("refund reason %q does not name the invoice", es[2].Reason)
			}
		})
	})
	t.Run("2025-03-31 through the API", func(t *testing.T) {
		f := newFakeStripe(t)
		h := open(t, boltBackend(), withAPI(f.URL()), func(o *stripesync.Options) { o.Prices = prices })
		globex := h.id("globex")
		inv := h.fixture("invoice_paid_2025-03-31.json")
		pi := h.id("pi_3RGlobexCycle02")
		// The 2025-03-31 invoice and refund name no payment intent and
		// no invoice; the payment intent, in the pinned version, names
		// the invoice, and the invoice is there to be read.
		f.objects["/v1/payment_intents/"+pi] = []byte(`{"id":"` + pi + `","object":"payment_intent","invoice":"` + h.id("in_1RGlobexCycle02") + `"}`)
		f.objects["/v1/invoices/"+h.id("in_1RGlobexCycle02")] = []byte(gjson.GetBytes(inv, "data.object").Raw)
		refund := h.fixture("charge_refunded_basil.json", "data.object.payment_intent", pi, "data.object.amount", 10000, "data.object.amount_refunded", 10000)
		// The refund overtakes the invoice: the grant is applied first.
		h.mustDeliver(refund, http.StatusOK)
		h.mustDeliver(inv, http.StatusOK)
		h.mustDeliver(refund, http.StatusOK)
		h.wantBalance(globex, "0")
		if got, want := kinds(h.entries(globex)), "grant 2000.000000, refund -2000.000000"; got != want {
			t.Fatalf("entries: %s\nwant %s", got, want)
		}
	})
}

// TestLostDisputeOnSubscriptionPaymentClawsBackItsGrant: a lost dispute
// is a refund by the bank: the invoice's grant is taken back, once, with
// a refund of the same payment.
func TestLostDisputeOnSubscriptionPaymentClawsBackItsGrant(t *testing.T) {
	h := open(t, boltBackend())
	globex := h.id("globex")
	h.mustDeliver(h.cycleInvoice(0), http.StatusOK)
	edits := []any{"data.object.payment_intent", h.id("pi_cycle0"), "data.object.charge", h.id("ch_cycle0")}
	h.mustDeliver(h.fixture("charge_refunded.json", "data.object.id", h.id("ch_cycle0"), "data.object.payment_intent", h.id("pi_cycle0"),
		"data.object.invoice", h.id("in_cycle0"), "data.object.amount", 24700, "data.object.amount_refunded", 24700/2), http.StatusOK)
	h.wantBalance(globex, "1500")
	h.mustDeliver(h.fixture("charge_dispute_created.json", edits...), http.StatusOK)
	h.mustDeliver(h.fixture("charge_dispute_closed_lost.json", edits...), http.StatusOK)
	h.wantBalance(globex, "0")
	if a := h.account(globex); a.Suspended {
		t.Error("still suspended after the dispute closed")
	}
}
