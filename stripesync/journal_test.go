package stripesync_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/ledger"
	"github.com/tollgate-dev/tollgate/stripesync"
)

// journal reads every record of the harness's store, newest first, once
// the Syncer has written what it queued.
func (h *harness) journal(customer string) []stripesync.Record {
	h.t.Helper()
	ctx := context.Background()
	if err := h.syncer.Flush(ctx); err != nil {
		h.t.Fatal(err)
	}
	var out []stripesync.Record
	q := ledger.JournalQuery{Customer: customer, Limit: 2}
	for {
		p, err := h.store.(ledger.Journal).ReadJournal(ctx, q)
		if err != nil {
			h.t.Fatalf("read the journal: %v", err)
		}
		for _, r := range p.Records {
			var rec stripesync.Record
			if err := json.Unmarshal(r.Data, &rec); err != nil {
				h.t.Fatalf("record %s: %v", r.Data, err)
			}
			out = append(out, rec)
		}
		if p.Next == "" {
			return out
		}
		q.Before = p.Next
	}
}

// wantRecord compares what a support engineer reads of a record.
type wantRecord struct {
	id, typ, source, customer, stripeCustomer string
	outcome                                   stripesync.Result
	detail, entry                             string
}

func checkRecords(t *testing.T, got []stripesync.Record, want []wantRecord) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%d records, want %d: %+v", len(got), len(want), got)
	}
	for i := range min(len(got), len(want)) {
		g, w := got[i], want[i]
		gw := wantRecord{g.ID, g.Type, g.Source, g.Customer, g.StripeCustomer, g.Outcome, g.Detail, g.LedgerEntry}
		if gw != w {
			t.Errorf("record %d:\n got %+v\nwant %+v", i, gw, w)
		}
	}
}

// TestJournalOutcomes delivers one signed event for each outcome and
// reads what the journal says about each.
func TestJournalOutcomes(t *testing.T) {
	forEachStore(t, func(t *testing.T, b backend) {
		h := open(t, b)
		acme, cusAcme, cusGlobex := h.id("acme"), h.id("cus_QAcme000001"), h.id("cus_QGlobex00001")
		paid := h.fixture("checkout_session_completed.json")
		h.mustDeliver(paid, http.StatusOK)
		h.mustDeliver(paid, http.StatusOK) // Stripe redelivers
		h.mustDeliver(h.fixture("checkout_session_completed_unpaid.json"), http.StatusOK)
		h.mustDeliver(h.fixture("checkout_session_completed.json",
			"id", "evt_unpriced", "data.object.id", "cs_test_unpriced", "data.object.payment_intent", "pi_unpriced",
			"data.object.metadata.tollgate_credits", nil,
			"data.object.line_items", map[string]any{"object": "list", "has_more": false, "data": []any{
				map[string]any{"id": "li_1", "object": "item", "quantity": 1, "price": map[string]any{"id": "price_123", "object": "price"}}}}),
			http.StatusOK)
		h.mustDeliver(h.fixture("checkout_session_completed.json", "id", "evt_live", "livemode", true), http.StatusOK)
		h.mustDeliver(h.fixture("customer_created.json"), http.StatusOK)
		h.mustDeliver(h.fixture("invoice_paid_2024-06-20.json",
			"data.object.subscription_details.metadata", map[string]string{},
			"data.object.lines.data.0.metadata", map[string]string{}), http.StatusServiceUnavailable)

		h.wantBalance(acme, "10000")
		cs := h.id("cs_test_a1TopupAcme0001")
		want := []wantRecord{
			{h.id("evt_1PInvoicePaid0001"), "invoice.paid", "webhook", "", cusGlobex, stripesync.Failed,
				"cannot tell which tollgate customer invoice " + h.id("in_1PGlobexCycle01") + " belongs to: set metadata.tollgate_customer on the subscription (subscription_data.metadata in Checkout), or let a checkout session with metadata.tollgate_customer or client_reference_id introduce Stripe customer " + cusGlobex + " first", ""},
			{h.id("evt_1PCustomerCreated01"), "customer.created", "webhook", "", "", stripesync.Ignored,
				"tollgate does not act on customer.created events", ""},
			{"evt_live", "checkout.session.completed", "webhook", acme, cusAcme, stripesync.Ignored,
				"live-mode event on a test endpoint: stripe.livemode is false, so only test-mode events are applied here", ""},
			{"evt_unpriced", "checkout.session.completed", "webhook", acme, cusAcme, stripesync.Ignored,
				"price price_123 is not in stripe.prices; nothing credited (add it, then reconcile)", ""},
			{h.id("evt_1PBankDebitCompleted01"), "checkout.session.completed", "webhook", acme, cusAcme, stripesync.Ignored,
				"payment_status unpaid: waiting for checkout.session.async_payment_succeeded", ""},
			{h.id("evt_1PTopupCompleted01"), "checkout.session.completed", "webhook", acme, cusAcme, stripesync.Duplicate,
				"checkout session " + cs + " was credited before (ledger entry 1); nothing changed", ""},
			{h.id("evt_1PTopupCompleted01"), "checkout.session.completed", "webhook", acme, cusAcme, stripesync.Applied,
				"10000.000000 credits for checkout session " + cs, "1"},
		}
		got := h.journal("")
		checkRecords(t, got, want)
		if len(got) > 0 && (got[len(got)-1].APIVersion != "2024-06-20" || got[len(got)-1].Livemode || !got[len(got)-1].ReceivedAt.Equal(t0)) {
			t.Errorf("first record = %+v", got[len(got)-1])
		}
		// The customer's view: everything that named acme, and nothing
		// else.
		checkRecords(t, h.journal(acme), want[2:])
		recent, err := stripesync.RecentEvents(context.Background(), h.store.(ledger.Journal), acme, 2)
		if err != nil || len(recent) != 2 || recent[0].ID != "evt_live" || recent[1].ID != "evt_unpriced" {
			t.Errorf("RecentEvents = %+v, %v", recent, err)
		}
	})
}

// TestJournalRefundAndDispute: claw-backs and suspensions name the entry
// and the customer.
func TestJournalRefundAndDispute(t *testing.T) {
	forEachStore(t, func(t *testing.T, b backend) {
		h := open(t, b)
		acme := h.id("acme")
		h.mustDeliver(h.fixture("checkout_session_completed.json"), http.StatusOK)
		h.mustDeliver(h.fixture("charge_refunded.json"), http.StatusOK)
		h.mustDeliver(h.fixture("charge_dispute_created.json"), http.StatusOK)
		h.mustDeliver(h.fixture("charge_dispute_closed_won.json"), http.StatusOK)
		got := h.journal(acme)
		if len(got) != 4 {
			t.Fatalf("%d records for %s: %+v", len(got), acme, got)
		}
		refund, created, closed := got[2], got[1], got[0]
		wantRefund := "Stripe refund of " + h.id("ch_3PTopupAcme0001") + ": 2500 of 10000 usd refunded (top-up " + h.id("cs_test_a1TopupAcme0001") +
			"): clawed back 2500.000000 credits (2500.000000 in all for payment " + h.id("pi_3PTopupAcme0001") + ")"
		if refund.Outcome != stripesync.Applied || refund.LedgerEntry != "2" || refund.Customer != acme || refund.Detail != wantRefund {
			t.Errorf("refund record = %+v", refund)
		}
		if created.Outcome != stripesync.Applied || created.Customer != acme || created.LedgerEntry != "" {
			t.Errorf("dispute created record = %+v", created)
		}
		if closed.Outcome != stripesync.Applied || closed.Customer != acme || closed.Detail != "dispute "+h.id("dp_1PAcmeDispute01")+" closed (won): suspension lifted" {
			t.Errorf("dispute closed record = %+v", closed)
		}
	})
}

// TestJournalReconcile: an event a webhook missed shows source reconcile;
// a run that finds it again adds one duplicate record, and later runs
// nothing.
func TestJournalReconcile(t *testing.T) {
	forEachStore(t, func(t *testing.T, b backend) {
		f := newFakeStripe(t)
		h := open(t, b, withAPI(f.URL()))
		f.addEvents(h.fixture("checkout_session_completed.json", "created", h.clock.Now().Add(-time.Hour).Unix()))
		ctx := context.Background()
		for range 3 {
			if _, _, err := h.syncer.Reconcile(ctx, 72*time.Hour); err != nil {
				t.Fatal(err)
			}
		}
		h.mustDeliver(h.fixture("checkout_session_completed.json"), http.StatusOK) // late webhook
		got := h.journal(h.id("acme"))
		var seen []string
		for _, r := range got {
			seen = append(seen, r.Source+" "+string(r.Outcome))
		}
		if want := []string{"webhook duplicate", "reconcile duplicate", "reconcile applied"}; len(seen) != 3 || seen[0] != want[0] || seen[1] != want[1] || seen[2] != want[2] {
			t.Errorf("records = %q, want %q", seen, want)
		}
		if len(got) == 3 && got[2].LedgerEntry != "1" {
			t.Errorf("reconcile record = %+v", got[2])
		}
		h.wantBalance(h.id("acme"), "10000")
	})
}

// failingJournal refuses every record.
type failingJournal struct{ ledger.Journal }

func (failingJournal) AppendJournal(context.Context, ledger.JournalRecord, string) (bool, error) {
	return false, errors.New("journal down")
}

// TestJournalFailureIsAMetric: a journal that cannot be written costs a
// counter, never the webhook's answer or the credit.
func TestJournalFailureIsAMetric(t *testing.T) {
	h := open(t, boltBackend(), func(o *stripesync.Options) { o.Journal = failingJournal{} })
	h.mustDeliver(h.fixture("checkout_session_completed.json"), http.StatusOK)
	if err := h.syncer.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	h.wantBalance(h.id("acme"), "10000")
	if got := h.counter("tollgate_stripe_journal_errors_total", "reason", "store"); got != 1 {
		t.Errorf("tollgate_stripe_journal_errors_total{reason=store} = %v, want 1", got)
	}
	if got := h.counter("tollgate_stripe_journal_errors_total", "reason", "queue_full"); got != 0 {
		t.Errorf("tollgate_stripe_journal_errors_total{reason=queue_full} = %v, want 0", got)
	}
}

// counter reads one series of a counter; -1 when it does not exist.
func (h *harness) counter(name, label, value string) float64 {
	h.t.Helper()
	mfs, err := h.reg.Gather()
	if err != nil {
		h.t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return -1
}

// TestJournalStoreDown: an event the store could not take is recorded
// as failed, in a journal that still works, with the message Stripe
// shows; in the store's own journal it is a counted write failure.
func TestJournalStoreDown(t *testing.T) {
	c := &clock{t: t0}
	down := mustOpenBolt(t, filepath.Join(t.TempDir(), "down.db"), c.Now)
	journal := mustOpenBolt(t, filepath.Join(t.TempDir(), "journal.db"), c.Now)
	h := newHarness(t, down, c, func(o *stripesync.Options) { o.Journal = journal })
	body := h.fixture("checkout_session_completed.json")
	if err := down.Close(); err != nil {
		t.Fatal(err)
	}
	wantStoreDown(t, h, body)
	h.store = journal
	checkRecords(t, h.journal(""), []wantRecord{{h.id("evt_1PTopupCompleted01"), "checkout.session.completed", "webhook", h.id("acme"), h.id("cus_QAcme000001"),
		stripesync.Failed, "the credit store is unavailable; nothing was applied", ""}})

	h2 := newHarness(t, down, c) // the store's own journal is down too
	wantStoreDown(t, h2, body)
	if err := h2.syncer.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := h2.counter("tollgate_stripe_journal_errors_total", "reason", "store"); got != 1 {
		t.Errorf("journal errors = %v, want 1", got)
	}
}
