package stripesync_test

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/tidwall/gjson"

	"github.com/tollgate-dev/tollgate/ledger"
)

func TestDisputeSuspendsUntilWon(t *testing.T) {
	forEachStore(t, func(t *testing.T, b backend) {
		h := open(t, b)
		acme := h.id("acme")
		ctx := context.Background()
		h.mustDeliver(h.fixture("checkout_session_completed.json"), http.StatusOK)
		if err := h.store.Reserve(ctx, acme, "hold-before", 1_000000, time.Minute); err != nil {
			t.Fatalf("reserve before the dispute: %v", err)
		}
		created := h.fixture("charge_dispute_created.json")
		h.mustDeliver(created, http.StatusOK)
		err := h.store.Reserve(ctx, acme, "hold-during", 1_000000, time.Minute)
		if !errors.Is(err, ledger.ErrCustomerSuspended) {
			t.Fatalf("reserve during the dispute: %v, want ErrCustomerSuspended", err)
		}
		h.mustDeliver(h.fixture("charge_dispute_closed_won.json"), http.StatusOK)
		if err := h.store.Reserve(ctx, acme, "hold-after", 1_000000, time.Minute); err != nil {
			t.Fatalf("reserve after the dispute was won: %v", err)
		}
		// A late copy of "created" cannot suspend again.
		rec := h.mustDeliver(created, http.StatusOK)
		if got := gjson.Get(rec.Body.String(), "outcome").String(); got != "duplicate" {
			t.Errorf("late created: outcome %q, want duplicate", got)
		}
		if h.account(acme).Suspended {
			t.Error("suspended again by a late dispute.created")
		}
		h.wantBalance(acme, "10000")
	})
}

func TestDisputeClosedBeforeCreatedNeverSuspends(t *testing.T) {
	h := open(t, boltBackend())
	acme := h.id("acme")
	h.mustDeliver(h.fixture("checkout_session_completed.json"), http.StatusOK)
	h.mustDeliver(h.fixture("charge_dispute_closed_won.json"), http.StatusOK)
	h.mustDeliver(h.fixture("charge_dispute_created.json"), http.StatusOK)
	if h.account(acme).Suspended {
		t.Error("suspended by a dispute that was already closed")
	}
}

func TestDisputeLostAfterPartialRefundClawsBackTheTopupOnce(t *testing.T) {
	forEachStore(t, func(t *testing.T, b backend) {
		h := open(t, b)
		acme := h.id("acme")
		h.mustDeliver(h.fixture("checkout_session_completed.json"), http.StatusOK)
		h.mustDeliver(h.fixture("charge_refunded.json"), http.StatusOK) // 2500 back
		h.mustDeliver(h.fixture("charge_dispute_created.json"), http.StatusOK)
		lost := h.fixture("charge_dispute_closed_lost.json")
		h.mustDeliver(lost, http.StatusOK)
		h.wantBalance(acme, "0")
		if h.account(acme).Suspended {
			t.Error("still suspended after the dispute closed")
		}
		// A full refund event after the lost dispute, and replays of both.
		h.mustDeliver(h.fixture("charge_refunded.json", "data.object.amount_refunded", 10000), http.StatusOK)
		h.mustDeliver(lost, http.StatusOK)
		h.wantBalance(acme, "0")
		es := h.entries(acme)
		if len(es) != 3 || es[2].Amount != -7500_000000 || es[2].Reference != h.id("dp_1PAcmeDispute01") {
			t.Fatalf("entries %+v: want topup, -2500 refund, -7500 dispute", es)
		}
	})
}

func TestDisputeOfUnrecordedPaymentWithoutAPIKeyWaits(t *testing.T) {
	h := open(t, boltBackend())
	rec := h.deliver(h.fixture("charge_dispute_created.json"))
	if rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("status %d, want 503; %s", rec.Code, rec.Body)
	}
}

func TestDisputeOnSubscriptionPaymentSuspendsThroughTheAPI(t *testing.T) {
	f := newFakeStripe(t)
	h := open(t, boltBackend(), withAPI(f.URL()))
	globex := h.id("globex")
	h.mustDeliver(h.fixture("checkout_session_completed_subscription.json"), http.StatusOK) // maps cus_QGlobex00001
	pi := h.id("pi_3RGlobexCycle02")
	f.objects["/v1/payment_intents/"+pi] = []byte(`{"id":"` + pi + `","object":"payment_intent","customer":"` + h.id("cus_QGlobex00001") + `","metadata":{},"invoice":"` + h.id("in_1RGlobexCycle02") + `"}`)
	created := h.fixture("charge_dispute_created.json", "data.object.payment_intent", pi, "data.object.charge", h.id("ch_3RGlobexCycle02"))
	h.mustDeliver(created, http.StatusOK)
	if !h.account(globex).Suspended {
		t.Fatal("globex not suspended by a dispute on its subscription payment")
	}
	lost := h.fixture("charge_dispute_closed_lost.json", "data.object.payment_intent", pi, "data.object.charge", h.id("ch_3RGlobexCycle02"))
	h.mustDeliver(lost, http.StatusOK)
	if h.account(globex).Suspended {
		t.Fatal("globex still suspended after the dispute closed")
	}
	if n := len(h.entries(globex)); n != 0 {
		t.Errorf("%d entries: a lost dispute on a subscription payment must not claw back", n)
	}
}

func TestDisputeLiftsWhomItSuspended(t *testing.T) {
	f := newFakeStripe(t)
	h := open(t, boltBackend(), withAPI(f.URL()))
	globex, initech := h.id("globex"), h.id("initech")
	h.mustDeliver(h.fixture("checkout_session_completed_subscription.json"), http.StatusOK)
	pi := h.id("pi_3RGlobexCycle02")
	f.objects["/v1/payment_intents/"+pi] = []byte(`{"id":"` + pi + `","object":"payment_intent","customer":"` + h.id("cus_QGlobex00001") + `","metadata":{}}`)
	edits := []any{"data.object.payment_intent", pi, "data.object.charge", h.id("ch_3RGlobexCycle02")}
	h.mustDeliver(h.fixture("charge_dispute_created.json", edits...), http.StatusOK)
	// The Stripe customer is remapped while the dispute is open.
	h.mustDeliver(h.fixture("checkout_session_completed_subscription.json",
		"data.object.id", "cs_test_other", "data.object.client_reference_id", initech), http.StatusOK)
	h.mustDeliver(h.fixture("charge_dispute_closed_won.json", edits...), http.StatusOK)
	if h.account(globex).Suspended {
		t.Error("globex still suspended: the close lifted someone else")
	}
	if h.account(initech).Suspended {
		t.Error("initech suspended")
	}
}
