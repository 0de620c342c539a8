package stripesync_test

import (
	"net/http"
	"testing"

	"github.com/tidwall/gjson"

	"github.com/tollgate-dev/tollgate/ledger"
	"github.com/tollgate-dev/tollgate/money"
	"github.com/tollgate-dev/tollgate/stripesync"
)

func TestInvoicePaidGrantsOncePerInvoice(t *testing.T) {
	tests := []struct {
		name    string
		fixture string
		prices  map[string]stripesync.Price
		want    string
	}{
		{
			// 3 × pro_monthly (by the line's price lookup key); the
			// onboarding invoice item is priced but not a subscription
			// line.
			name:    "2024-06-20",
			fixture: "invoice_paid_2024-06-20.json",
			prices:  testPrices(),
			want:    "3000",
		},
		{
			// 2 × the price by id; the proration line is skipped.
			name:    "2025-03-31",
			fixture: "invoice_paid_2025-03-31.json",
			prices:  map[string]stripesync.Price{"price_1PProMonthly": {Credits: money.MustParse("1000")}},
			want:    "2000",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			forEachStore(t, func(t *testing.T, b backend) {
				h := open(t, b, func(o *stripesync.Options) { o.Prices = tc.prices })
				globex := h.id("globex")
				body := h.fixture(tc.fixture)
				concurrently(5, func(int) {
					if c := h.deliver(body).Code; c != http.StatusOK {
						t.Errorf("status %d", c)
					}
				})
				h.mustDeliver(body, http.StatusOK) // replay
				h.wantBalance(globex, tc.want)
				es := h.entries(globex)
				if len(es) != 1 || es[0].Kind != ledger.KindGrant || es[0].Reference != gjson.GetBytes(body, "data.object.id").String() {
					t.Fatalf("entries %+v: want one grant referencing the invoice", es)
				}
			})
		})
	}
}

func TestInvoiceNewShapeLooksUpLookupKeys(t *testing.T) {
	f := newFakeStripe(t)
	h := open(t, boltBackend(), withAPI(f.URL()))
	f.invoiceLines[h.id("in_1RGlobexCycle02")] = h.fixture("invoice_lines_2024-06-20.json")
	// stripe.prices names pro_monthly by lookup key, which a 2025-03-31
	// line does not carry: the lines are read again through the API.
	h.mustDeliver(h.fixture("invoice_paid_2025-03-31.json"), http.StatusOK)
	h.wantBalance(h.id("globex"), "2000")
	if n := f.callCount("/v1/invoices/"); n != 1 {
		t.Errorf("%d invoice line requests, want 1", n)
	}
}

func TestInvoiceWithMoreLinesNeedsTheAPI(t *testing.T) {
	h := open(t, boltBackend())
	rec := h.deliver(h.fixture("invoice_paid_2024-06-20.json", "data.object.lines.has_more", true))
	if rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("status %d, want 503; %s", rec.Code, rec.Body)
	}
	f := newFakeStripe(t)
	h = open(t, boltBackend(), withAPI(f.URL()))
	// The API has a third line the event left out: another 3 × Pro.
	full := h.fixture("invoice_paid_2024-06-20.json",
		"data.object.lines.data.2", gjson.GetBytes(h.fixture("invoice_paid_2024-06-20.json"), "data.object.lines.data.0").Value(),
		"data.object.lines.data.2.id", "il_extra")
	f.invoiceLines[h.id("in_1PGlobexCycle01")] = []byte(gjson.GetBytes(full, "data.object.lines").Raw)
	h.mustDeliver(h.fixture("invoice_paid_2024-06-20.json", "data.object.lines.has_more", true), http.StatusOK)
	h.wantBalance(h.id("globex"), "6000")
	if n := f.callCount("/v1/invoices/"); n != 2 {
		t.Errorf("%d invoice line page requests, want 2", n)
	}
}

func TestInvoiceCustomerFromSubscriptionCheckout(t *testing.T) {
	h := open(t, boltBackend())
	globex := h.id("globex")
	// No tollgate metadata on the subscription or its lines: only the
	// customer mapping can tell.
	invoice := h.fixture("invoice_paid_2024-06-20.json",
		"data.object.subscription_details.metadata", map[string]string{},
		"data.object.lines.data.0.metadata", map[string]string{})
	rec := h.deliver(invoice)
	if rec.Code != http.StatusServiceUnavailable || gjson.Get(rec.Body.String(), "error.code").String() != "retry_later" {
		t.Fatalf("invoice before its customer is known: status %d %s; want 503 retry_later", rec.Code, rec.Body)
	}
	// The subscription's checkout session introduces cus_QGlobex00001 as
	// globex (client_reference_id) and credits nothing itself.
	rec = h.mustDeliver(h.fixture("checkout_session_completed_subscription.json"), http.StatusOK)
	if got := gjson.Get(rec.Body.String(), "outcome").String(); got != "ignored" {
		t.Errorf("subscription checkout outcome %q, want ignored", got)
	}
	h.wantBalance(globex, "0")
	h.mustDeliver(invoice, http.StatusOK) // Stripe's retry
	h.wantBalance(globex, "3000")
}

func TestInvoiceReplayAfterMappingChangeGrantsNoOneElse(t *testing.T) {
	h := open(t, boltBackend())
	globex, initech := h.id("globex"), h.id("initech")
	invoice := h.fixture("invoice_paid_2024-06-20.json",
		"data.object.subscription_details.metadata", map[string]string{},
		"data.object.lines.data.0.metadata", map[string]string{})
	h.mustDeliver(h.fixture("checkout_session_completed_subscription.json"), http.StatusOK)
	h.mustDeliver(invoice, http.StatusOK)
	h.wantBalance(globex, "3000")
	// The same Stripe customer now pays for another tollgate customer.
	h.mustDeliver(h.fixture("checkout_session_completed_subscription.json",
		"data.object.id", "cs_test_other", "data.object.client_reference_id", initech), http.StatusOK)
	h.mustDeliver(invoice, http.StatusOK)
	h.wantBalance(globex, "3000")
	h.wantBalance(initech, "0")
}
