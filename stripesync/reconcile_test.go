package stripesync_test

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tidwall/gjson"

	"github.com/tollgate-dev/tollgate/money"
	"github.com/tollgate-dev/tollgate/stripesync"
)

// missedEvents loads a history the webhook never delivered into f: a
// card top-up, a bank-debit top-up, a line-item top-up, a subscription
// whose invoice names no tollgate customer (so it depends on the
// subscription's checkout session, which Stripe lists after it), a
// partial refund and a won dispute. Events are dated relative to now.
func missedEvents(h *harness, f *fakeStripe) {
	now := h.clock.Now().Unix()
	at := func(name string, ago time.Duration, edits ...any) []byte {
		return h.fixture(name, append([]any{"created", now - int64(ago/time.Second)}, edits...)...)
	}
	f.addEvents(
		at("checkout_session_completed.json", 70*time.Hour),
		at("checkout_session_completed_unpaid.json", 69*time.Hour),
		at("checkout_session_async_payment_succeeded.json", 60*time.Hour),
		at("checkout_session_completed_basil.json", 50*time.Hour),
		at("checkout_session_completed_subscription.json", 40*time.Hour),
		at("invoice_paid_2024-06-20.json", 39*time.Hour,
			"data.object.subscription_details.metadata", map[string]string{},
			"data.object.lines.data.0.metadata", map[string]string{}),
		at("charge_refunded.json", 30*time.Hour),
		at("charge_dispute_created.json", 20*time.Hour),
		at("charge_dispute_closed_won.json", 10*time.Hour),
		at("customer_created.json", 5*time.Hour), // not listed: not a requested type
		// Older than the window asked for below.
		at("checkout_session_completed.json", 100*time.Hour,
			"id", "evt_old", "data.object.id", "cs_test_old", "data.object.payment_intent", "pi_old"),
	)
	f.lineItems[h.id("cs_test_b1LineItemsAcme0002")] = h.fixture("checkout_session_line_items.json")
	// Stripe finds a payment's checkout session by payment intent.
	for _, name := range []string{"checkout_session_completed.json", "checkout_session_completed_basil.json"} {
		f.sessions = append(f.sessions, []byte(gjson.GetBytes(h.fixture(name), "data.object").Raw))
	}
}

func TestReconcileAppliesMissedEventsOnce(t *testing.T) {
	forEachStore(t, func(t *testing.T, b backend) {
		f := newFakeStripe(t)
		h := open(t, b, withAPI(f.URL()))
		missedEvents(h, f)
		acme, globex := h.id("acme"), h.id("globex")
		ctx := context.Background()

		events, applied, err := h.syncer.Reconcile(ctx, 72*time.Hour)
		if err != nil {
			t.Fatalf("Reconcile: %v", err)
		}
		// Listed: the 9 handled events in the window, newest first. The
		// won dispute comes first and finds its top-up through the API,
		// applies it and lifts a suspension that never started (so the
		// later "created" changes nothing, and the top-up's own event is
		// a duplicate); the refund claws back; the invoice waits for the
		// subscription's checkout, listed after it, and is retried; the
		// two other top-ups apply. Applied: won, refund, invoice, two
		// top-ups.
		if events != 9 || applied != 5 {
			t.Errorf("events %d applied %d, want 9 and 5", events, applied)
		}
		// 10000 − 2500 refunded + 5000.5 + 22500
		h.wantBalance(acme, "35000.5")
		h.wantBalance(globex, "3000")
		if h.account(acme).Suspended {
			t.Error("acme suspended after the dispute was won")
		}
		q := f.eventQueries[0]
		if got, want := q.Get("created[gte]"), strconv.FormatInt(h.clock.Now().Add(-72*time.Hour).Unix(), 10); got != want {
			t.Errorf("created[gte] = %s, want %s", got, want)
		}
		if len(f.eventQueries) != 5 { // 9 events, 2 per page
			t.Errorf("%d event pages requested, want 5", len(f.eventQueries))
		}

		entries := len(h.entries(acme)) + len(h.entries(globex))
		events, applied, err = h.syncer.Reconcile(ctx, 72*time.Hour)
		if err != nil || events != 9 || applied != 0 {
			t.Errorf("second run: events %d applied %d err %v, want 9, 0, nil", events, applied, err)
		}
		h.wantBalance(acme, "35000.5")
		h.wantBalance(globex, "3000")
		if n := len(h.entries(acme)) + len(h.entries(globex)); n != entries {
			t.Errorf("second run added entries: %d, want %d", n, entries)
		}

		// A webhook delivery of an event reconciliation applied changes
		// nothing either.
		rec := h.mustDeliver(h.fixture("checkout_session_completed.json"), http.StatusOK)
		if got := gjson.Get(rec.Body.String(), "outcome").String(); got != "duplicate" {
			t.Errorf("webhook after reconcile: outcome %q, want duplicate", got)
		}
	})
}

func TestReconcileWindowAndKey(t *testing.T) {
	f := newFakeStripe(t)
	h := open(t, boltBackend(), withAPI(f.URL()))
	ctx := context.Background()
	for _, since := range []time.Duration{0, -time.Hour, 721 * time.Hour} {
		if _, _, err := h.syncer.Reconcile(ctx, since); !errors.Is(err, stripesync.ErrInvalidWindow) {
			t.Errorf("since %s: err %v, want ErrInvalidWindow", since, err)
		}
	}
	_, _, err := h.syncer.Reconcile(ctx, 721*time.Hour)
	if want := "stripesync: invalid reconciliation window: since 721h0m0s is more than 720h (30 days), the longest Stripe keeps events"; err == nil || err.Error() != want {
		t.Errorf("error %v\nwant  %s", err, want)
	}
	if _, _, err := h.syncer.Reconcile(ctx, 720*time.Hour); err != nil {
		t.Errorf("since 720h: %v", err)
	}
	noKey := open(t, boltBackend())
	if _, _, err := noKey.syncer.Reconcile(ctx, time.Hour); !errors.Is(err, stripesync.ErrNoAPIKey) {
		t.Errorf("without an API key: %v, want ErrNoAPIKey", err)
	}
}

func TestReconcileReportsEventsItCannotApply(t *testing.T) {
	f := newFakeStripe(t)
	h := open(t, boltBackend(), withAPI(f.URL()))
	now := h.clock.Now().Unix()
	f.addEvents(
		h.fixture("checkout_session_completed.json", "created", now-60),
		h.fixture("checkout_session_completed_unpaid.json", "created", now-30,
			"data.object.payment_status", "paid", "data.object.metadata.tollgate_credits", "lots"),
	)
	events, applied, err := h.syncer.Reconcile(context.Background(), time.Hour)
	if !errors.Is(err, stripesync.ErrIncomplete) || !strings.Contains(err.Error(), h.id("evt_1PBankDebitCompleted01")) {
		t.Fatalf("err %v: want ErrIncomplete naming the bad event", err)
	}
	if events != 2 || applied != 1 {
		t.Errorf("events %d applied %d, want 2 and 1", events, applied)
	}
	h.wantBalance(h.id("acme"), "10000")
}

func TestReconcileAgainstStripeMock(t *testing.T) {
	base := startStripeMock(t)
	h := open(t, boltBackend(), withAPI(base), func(o *stripesync.Options) {
		// stripe-mock's line item fixture sells one unit of this price.
		o.Prices = map[string]stripesync.Price{"price_1PgafmB7WZ01zgkW02Hf9z6c": {Credits: money.MustParse("42")}}
	})
	ctx := context.Background()
	// The request must pass stripe-mock's validation against Stripe's
	// OpenAPI spec (types[], created[gte], limit); stripe-mock ignores the
	// filters and lists a plan.created event, which is acknowledged.
	events, applied, err := h.syncer.Reconcile(ctx, 720*time.Hour)
	if err != nil {
		t.Fatalf("Reconcile against stripe-mock: %v", err)
	}
	if events < 1 || applied != 0 {
		t.Errorf("events %d applied %d, want ≥1 listed and none applied", events, applied)
	}
	// Line items through the API client.
	h.mustDeliver(h.fixture("checkout_session_completed_basil.json"), http.StatusOK)
	h.wantBalance(h.id("acme"), "42")
	// Invoice lines through the API client: stripe-mock's line is not a
	// subscription line, so nothing is granted, but the call must pass.
	h.mustDeliver(h.fixture("invoice_paid_2025-03-31.json", "data.object.lines.has_more", true), http.StatusOK)
	// A refund of a payment tollgate never saw: the session lookup by
	// payment intent goes to stripe-mock, whose session is unpaid.
	rec := h.mustDeliver(h.fixture("charge_refunded.json", "data.object.payment_intent", "pi_unknown"), http.StatusOK)
	if got := gjson.Get(rec.Body.String(), "outcome").String(); got != "ignored" {
		t.Errorf("refund of an unknown payment: outcome %q, want ignored", got)
	}
	// A dispute on a payment that is no top-up: the payment intent lookup
	// goes to stripe-mock, whose payment has no customer.
	rec = h.mustDeliver(h.fixture("charge_dispute_created.json", "data.object.payment_intent", "pi_unknown"), http.StatusOK)
	if got := gjson.Get(rec.Body.String(), "outcome").String(); got != "ignored" {
		t.Errorf("dispute of an unknown payment: outcome %q, want ignored", got)
	}
}

func TestRunTakesTheStoreLock(t *testing.T) {
	f := newFakeStripe(t)
	h := open(t, boltBackend(), withAPI(f.URL()))
	missedEvents(h, f)
	ctx := context.Background()

	// Another replica holds the lock: this one does not reconcile.
	token, ok, err := h.store.TryLock(ctx, stripesync.ReconcileLock, time.Hour)
	if err != nil || !ok {
		t.Fatalf("TryLock: %v %v", ok, err)
	}
	runFor(t, h, 200*time.Millisecond)
	if n := f.callCount("/v1/events"); n != 0 {
		t.Fatalf("listed events %d times while another replica held the lock", n)
	}
	if err := h.store.Unlock(ctx, stripesync.ReconcileLock, token); err != nil {
		t.Fatal(err)
	}

	// Free: it runs at once and applies the missed events.
	runUntilGlobexCredited(t, h, time.Hour)
	h.wantBalance(h.id("acme"), "35000.5")
	h.wantBalance(h.id("globex"), "3000")
	// It keeps the lock for most of the interval, so a second replica on
	// the same store skips.
	if _, ok, _ := h.store.TryLock(ctx, stripesync.ReconcileLock, time.Second); ok {
		t.Error("the lock was free right after a run; other replicas would reconcile again")
	}
}

// An interval beyond a day still reconciles: the store refuses locks
// longer than a day, so Run must not ask for one.
func TestRunWithAnIntervalOfDays(t *testing.T) {
	f := newFakeStripe(t)
	h := open(t, boltBackend(), withAPI(f.URL()))
	missedEvents(h, f)
	runUntilGlobexCredited(t, h, 48*time.Hour)
	h.wantBalance(h.id("globex"), "3000")
	if _, ok, _ := h.store.TryLock(context.Background(), stripesync.ReconcileLock, time.Second); ok {
		t.Error("the lock was free right after a run; other replicas would reconcile again")
	}
}

// runUntilGlobexCredited runs h's periodic reconciliation (every interval,
// 72h window) until the missed events have credited globex, or 20 s.
func runUntilGlobexCredited(t *testing.T, h *harness, interval time.Duration) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.syncer.Run(ctx, interval, 72*time.Hour) }()
	deadline := time.Now().Add(20 * time.Second)
	for h.account(h.id("globex")).Balance == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
}

// runFor runs h's periodic reconciliation (hourly, 72h window) for d.
func runFor(t *testing.T, h *harness, d time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	if err := h.syncer.Run(ctx, time.Hour, 72*time.Hour); err != nil {
		t.Fatalf("Run: %v", err)
	}
}

func TestRunNeedsAnAPIKey(t *testing.T) {
	h := open(t, boltBackend())
	if err := h.syncer.Run(context.Background(), time.Minute, time.Hour); !errors.Is(err, stripesync.ErrNoAPIKey) {
		t.Fatalf("Run without a key: %v, want ErrNoAPIKey", err)
	}
}
