package stripesync_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/tidwall/gjson"

	"github.com/tollgate-dev/tollgate/ledger"
)

func TestTopupConcurrentDeliveriesCreditOnce(t *testing.T) {
	forEachStore(t, func(t *testing.T, b backend) {
		h := open(t, b)
		body := h.fixture("checkout_session_completed.json")
		codes := make([]int, 20)
		concurrently(20, func(i int) { codes[i] = h.deliver(body).Code })
		for i, c := range codes {
			if c != http.StatusOK {
				t.Errorf("delivery %d: status %d, want 200", i, c)
			}
		}
		acme := h.id("acme")
		h.wantBalance(acme, "10000")
		es := h.entries(acme)
		if len(es) != 1 {
			t.Fatalf("%d entries, want 1: %+v", len(es), es)
		}
		e := es[0]
		if e.Kind != ledger.KindTopup || e.Reference != h.id("cs_test_a1TopupAcme0001") || e.Reason != "Stripe Checkout top-up" {
			t.Errorf("entry %+v: want a topup referencing the session", e)
		}
		if a, d := h.outcome("checkout.session.completed", "applied"), h.outcome("checkout.session.completed", "duplicate"); a != 1 || d != 19 {
			t.Errorf("metrics: applied %d duplicate %d, want 1 and 19", a, d)
		}
	})
}

func TestTopupCompletedThenAsyncSucceededCreditsOnce(t *testing.T) {
	forEachStore(t, func(t *testing.T, b backend) {
		h := open(t, b)
		// A card payment: completed arrives paid; a (spurious or
		// replayed) async_payment_succeeded for the same session must
		// not credit again — also when both race.
		completed := h.fixture("checkout_session_completed.json")
		async := h.fixture("checkout_session_completed.json", "type", "checkout.session.async_payment_succeeded", "id", "evt_async_dup")
		concurrently(10, func(i int) {
			body := completed
			if i%2 == 1 {
				body = async
			}
			if c := h.deliver(body).Code; c != http.StatusOK {
				t.Errorf("delivery %d: status %d", i, c)
			}
		})
		h.mustDeliver(async, http.StatusOK)
		h.wantBalance(h.id("acme"), "10000")
		if n := len(h.entries(h.id("acme"))); n != 1 {
			t.Errorf("%d entries, want 1", n)
		}
	})
}

func TestTopupUnpaidThenSucceededCreditsOnce(t *testing.T) {
	forEachStore(t, func(t *testing.T, b backend) {
		h := open(t, b)
		acme := h.id("acme")
		rec := h.mustDeliver(h.fixture("checkout_session_completed_unpaid.json"), http.StatusOK)
		if got := gjson.Get(rec.Body.String(), "outcome").String(); got != "ignored" {
			t.Errorf("unpaid completed: outcome %q, want ignored", got)
		}
		h.wantBalance(acme, "0")
		succeeded := h.fixture("checkout_session_async_payment_succeeded.json")
		h.mustDeliver(succeeded, http.StatusOK)
		h.wantBalance(acme, "5000.5")
		// Stripe retries and a late replay of the unpaid completion.
		h.mustDeliver(succeeded, http.StatusOK)
		h.mustDeliver(h.fixture("checkout_session_completed_unpaid.json"), http.StatusOK)
		h.wantBalance(acme, "5000.5")
	})
}

func TestTopupFromLineItemsBasilShape(t *testing.T) {
	f := newFakeStripe(t)
	h := open(t, boltBackend(), withAPI(f.URL()))
	f.lineItems[h.id("cs_test_b1LineItemsAcme0002")] = h.fixture("checkout_session_line_items.json")
	body := h.fixture("checkout_session_completed_basil.json")
	h.mustDeliver(body, http.StatusOK)
	// 2 × price_1RCredits10k (10000 by price id) + 1 × bonus_pack (2500 by
	// lookup key); the sticker's price is not configured and is skipped.
	// Two pages of line items (the fake serves two per page).
	h.wantBalance(h.id("acme"), "22500")
	if n := f.callCount("/v1/checkout/sessions/"); n != 2 {
		t.Errorf("%d line item page requests, want 2", n)
	}
	h.mustDeliver(body, http.StatusOK)
	h.wantBalance(h.id("acme"), "22500")
	if n := f.callCount("/v1/checkout/sessions/"); n != 2 {
		t.Errorf("a replay fetched the line items again (%d requests): the payment record should answer", n)
	}
}

func TestTopupNothingPricedIsAcknowledged(t *testing.T) {
	f := newFakeStripe(t)
	h := open(t, boltBackend(), withAPI(f.URL()))
	f.lineItems[h.id("cs_test_b1LineItemsAcme0002")] = h.fixture("checkout_session_line_items.json",
		"data.0.price.id", "price_other", "data.1.price.lookup_key", "other")
	rec := h.mustDeliver(h.fixture("checkout_session_completed_basil.json"), http.StatusOK)
	if got := gjson.Get(rec.Body.String(), "outcome").String(); got != "ignored" {
		t.Errorf("outcome %q, want ignored", got)
	}
	h.wantBalance(h.id("acme"), "0")
}

func TestTopupRefusals(t *testing.T) {
	tests := []struct {
		name     string
		edits    []any
		apiKey   bool
		want     int
		wantCode string
		wantMsg  string
	}{
		{
			name:     "credits not a decimal",
			edits:    []any{"data.object.metadata.tollgate_credits", "10k"},
			want:     http.StatusUnprocessableEntity,
			wantCode: "invalid_event",
			wantMsg:  `metadata.tollgate_credits: "10k" is not a decimal amount`,
		},
		{
			name:     "credits negative",
			edits:    []any{"data.object.metadata.tollgate_credits", "-5"},
			want:     http.StatusUnprocessableEntity,
			wantCode: "invalid_event",
			wantMsg:  "metadata.tollgate_credits -5.000000 must be positive",
		},
		{
			name:     "invalid customer id",
			edits:    []any{"data.object.metadata.tollgate_customer", "acme corp"},
			want:     http.StatusUnprocessableEntity,
			wantCode: "invalid_event",
			wantMsg:  "checkout session metadata.tollgate_customer is not a valid tollgate customer id",
		},
		{
			name:     "no customer anywhere",
			edits:    []any{"data.object.metadata.tollgate_customer", nil, "data.object.customer", nil},
			want:     http.StatusServiceUnavailable,
			wantCode: "retry_later",
			wantMsg:  "create sessions with metadata.tollgate_customer or client_reference_id",
		},
		{
			name:     "line items without an API key",
			edits:    []any{"data.object.metadata.tollgate_credits", nil},
			want:     http.StatusServiceUnavailable,
			wantCode: "retry_later",
			wantMsg:  "reading its line items needs stripe.api_key",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := open(t, boltBackend())
			rec := h.deliver(h.fixture("checkout_session_completed.json", tc.edits...))
			if rec.Code != tc.want {
				t.Fatalf("status %d, want %d; %s", rec.Code, tc.want, rec.Body)
			}
			if got := gjson.Get(rec.Body.String(), "error.code").String(); got != tc.wantCode {
				t.Errorf("code %q, want %q", got, tc.wantCode)
			}
			if got := gjson.Get(rec.Body.String(), "error.message").String(); !strings.Contains(got, tc.wantMsg) {
				t.Errorf("message %q\ndoes not contain %q", got, tc.wantMsg)
			}
			h.wantBalance(h.id("acme"), "0")
		})
	}
}

func TestTopupCustomerFromClientReferenceAndMapping(t *testing.T) {
	h := open(t, boltBackend())
	// First purchase names the customer in client_reference_id and
	// introduces Stripe customer cus_QAcme000001.
	h.mustDeliver(h.fixture("checkout_session_completed.json",
		"data.object.metadata.tollgate_customer", nil,
		"data.object.client_reference_id", h.id("acme")), http.StatusOK)
	// A second purchase by the same Stripe customer names nobody.
	h.mustDeliver(h.fixture("checkout_session_completed_unpaid.json",
		"data.object.payment_status", "paid",
		"data.object.metadata.tollgate_customer", nil), http.StatusOK)
	h.wantBalance(h.id("acme"), "15000.5")
}
