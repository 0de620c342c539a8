package stripesync_test

import (
	"net/http"
	"testing"

	"github.com/tidwall/gjson"

	"github.com/tollgate-dev/tollgate/ledger"
)

func TestRefundPartialThenFullThenLatePartial(t *testing.T) {
	forEachStore(t, func(t *testing.T, b backend) {
		h := open(t, b)
		acme := h.id("acme")
		h.mustDeliver(h.fixture("checkout_session_completed.json"), http.StatusOK)
		partial := h.fixture("charge_refunded.json") // 2500 of 10000 cents
		full := h.fixture("charge_refunded.json", "id", "evt_full", "data.object.amount_refunded", 10000, "data.object.refunded", true)

		h.mustDeliver(partial, http.StatusOK)
		h.wantBalance(acme, "7500")
		h.mustDeliver(full, http.StatusOK)
		h.wantBalance(acme, "0")
		// The partial refund's event arrives again, late.
		rec := h.mustDeliver(partial, http.StatusOK)
		if got := gjson.Get(rec.Body.String(), "outcome").String(); got != "duplicate" {
			t.Errorf("late partial: outcome %q, want duplicate", got)
		}
		h.wantBalance(acme, "0")
		es := h.entries(acme)
		if len(es) != 3 || es[1].Kind != ledger.KindRefund || es[1].Amount != -2500_000000 || es[2].Amount != -7500_000000 {
			t.Fatalf("entries %+v: want topup, -2500 and -7500 refunds", es)
		}
		if es[1].Reference != h.id("ch_3PTopupAcme0001") {
			t.Errorf("refund reference %q, want the charge", es[1].Reference)
		}
	})
}

func TestRefundsProcessedConcurrentlyClawBackOnce(t *testing.T) {
	forEachStore(t, func(t *testing.T, b backend) {
		h := open(t, b)
		acme := h.id("acme")
		h.mustDeliver(h.fixture("checkout_session_completed.json"), http.StatusOK)
		bodies := [][]byte{
			h.fixture("charge_refunded.json"),
			h.fixture("charge_refunded.json", "data.object.amount_refunded", 6000),
			h.fixture("charge_refunded.json", "data.object.amount_refunded", 10000),
		}
		concurrently(30, func(i int) {
			if c := h.deliver(bodies[i%3]).Code; c != http.StatusOK {
				t.Errorf("delivery %d: status %d", i, c)
			}
		})
		h.wantBalance(acme, "0")
	})
}

func TestRefundRoundsDownAndFullRefundIsExact(t *testing.T) {
	h := open(t, boltBackend())
	acme := h.id("acme")
	h.mustDeliver(h.fixture("checkout_session_completed.json", "data.object.metadata.tollgate_credits", "100"), http.StatusOK)
	for _, step := range []struct {
		refunded int
		want     string
	}{
		{1, "66.666667"}, // 100 × 1/3 = 33.3333333… clawed back as 33.333333
		{2, "33.333334"},
		{3, "0"},
	} {
		h.mustDeliver(h.fixture("charge_refunded.json", "data.object.amount", 3, "data.object.amount_refunded", step.refunded), http.StatusOK)
		h.wantBalance(acme, step.want)
	}
}

func TestRefundBeforeTopupWithoutAPIKeyWaits(t *testing.T) {
	h := open(t, boltBackend())
	acme := h.id("acme")
	refund := h.fixture("charge_refunded.json")
	// The charge's Stripe customer is already known to be acme.
	h.mustDeliver(h.fixture("checkout_session_completed_subscription.json",
		"data.object.customer", h.id("cus_QAcme000001"), "data.object.client_reference_id", acme), http.StatusOK)
	rec := h.deliver(refund)
	if rec.Code != http.StatusServiceUnavailable || gjson.Get(rec.Body.String(), "error.code").String() != "retry_later" {
		t.Fatalf("refund before its top-up: status %d %s; want 503 retry_later", rec.Code, rec.Body)
	}
	h.mustDeliver(h.fixture("checkout_session_completed.json"), http.StatusOK)
	h.mustDeliver(refund, http.StatusOK) // Stripe's retry
	h.wantBalance(acme, "7500")
}

func TestRefundOfUnrelatedPaymentIsAcknowledged(t *testing.T) {
	h := open(t, boltBackend())
	rec := h.mustDeliver(h.fixture("charge_refunded.json", "data.object.customer", "cus_stranger"), http.StatusOK)
	if got := gjson.Get(rec.Body.String(), "outcome").String(); got != "ignored" {
		t.Errorf("outcome %q, want ignored", got)
	}
}

func TestRefundBeforeTopupLooksItUp(t *testing.T) {
	f := newFakeStripe(t)
	h := open(t, boltBackend(), withAPI(f.URL()))
	acme := h.id("acme")
	// The basil full refund overtakes its checkout event; Stripe knows the
	// session behind the payment intent.
	f.sessions = append(f.sessions, []byte(gjson.GetBytes(h.fixture("checkout_session_completed_basil.json"), "data.object").Raw))
	f.lineItems[h.id("cs_test_b1LineItemsAcme0002")] = h.fixture("checkout_session_line_items.json")
	h.mustDeliver(h.fixture("charge_refunded_basil.json"), http.StatusOK)
	h.wantBalance(acme, "0")
	es := h.entries(acme)
	if len(es) != 2 || es[0].Amount != 22500_000000 || es[1].Amount != -22500_000000 {
		t.Fatalf("entries %+v: want the top-up applied, then clawed back", es)
	}
	// The checkout event arrives at last: nothing more happens.
	h.mustDeliver(h.fixture("checkout_session_completed_basil.json"), http.StatusOK)
	h.wantBalance(acme, "0")
	if n := len(h.entries(acme)); n != 2 {
		t.Errorf("%d entries after the late checkout event, want 2", n)
	}
}
