package stripesync_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/tidwall/gjson"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/tollgate-dev/tollgate/stripesync"
)

// withMode sets Options.Livemode and records the Syncer's logs in logs.
func withMode(live bool, logs **observer.ObservedLogs) func(*stripesync.Options) {
	return func(o *stripesync.Options) {
		o.Livemode = &live
		core, observed := observer.New(zap.DebugLevel)
		o.Logger = zap.New(core)
		*logs = observed
	}
}

func modeName(live bool) string {
	if live {
		return "live"
	}
	return "test"
}

// TestLivemode: with test and live secrets configured together, an event
// of the other mode than stripe.livemode is acknowledged (so Stripe stops
// sending it) and ignored with a log line; an event of the configured mode
// is applied. Both are real signed deliveries.
func TestLivemode(t *testing.T) {
	for _, live := range []bool{false, true} {
		t.Run("livemode "+modeName(live), func(t *testing.T) {
			var logs *observer.ObservedLogs
			h := open(t, boltBackend(), withMode(live, &logs))
			acme := h.id("acme")

			other := h.fixture("checkout_session_completed.json", "livemode", !live)
			rec := h.mustDeliver(other, http.StatusOK)
			if got := gjson.Get(rec.Body.String(), "outcome").String(); got != "ignored" {
				t.Errorf("event of the other mode: outcome %q, want ignored", got)
			}
			h.wantBalance(acme, "0")
			if got := h.outcome("checkout.session.completed", "ignored"); got != 1 {
				t.Errorf("checkout.session.completed/ignored count %d, want 1", got)
			}
			lines := logs.FilterMessageSnippet("event of the other mode ignored").All()
			if len(lines) != 1 {
				t.Fatalf("%d log lines about the other mode, want 1", len(lines))
			}
			f := lines[0].ContextMap()
			if f["event_livemode"] != !live || f["livemode"] != live || f["event"] != h.id("evt_1PTopupCompleted01") {
				t.Errorf("log fields %v", f)
			}

			// The same purchase in the configured mode is a different
			// object in Stripe; ignoring the other mode's copy must not
			// have used up its idempotency key.
			own := h.fixture("checkout_session_completed.json", "livemode", live)
			rec = h.mustDeliver(own, http.StatusOK)
			if got := gjson.Get(rec.Body.String(), "outcome").String(); got != "applied" {
				t.Errorf("event of the configured mode: outcome %q, want applied", got)
			}
			h.wantBalance(acme, "10000")
		})
	}
}

// TestLivemodeMissing: an event that does not say its mode cannot be
// checked, so it is refused loudly (Stripe shows the error and retries)
// rather than applied or silently dropped.
func TestLivemodeMissing(t *testing.T) {
	var logs *observer.ObservedLogs
	h := open(t, boltBackend(), withMode(false, &logs))
	body := h.fixture("checkout_session_completed.json", "livemode", nil)
	rec := h.mustDeliver(body, http.StatusUnprocessableEntity)
	want := "event " + h.id("evt_1PTopupCompleted01") + " has no boolean livemode, so tollgate cannot tell a test event from a live one; Stripe sets it on every event"
	if got := gjson.Get(rec.Body.String(), "error.message").String(); got != want {
		t.Errorf("message %q\nwant    %q", got, want)
	}
	h.wantBalance(h.id("acme"), "0")
}

// TestReconcileLivemode: reconciliation applies the same rule as the
// webhook: events of the other mode are listed, counted, and ignored.
func TestReconcileLivemode(t *testing.T) {
	for _, live := range []bool{false, true} {
		t.Run("livemode "+modeName(live), func(t *testing.T) {
			f := newFakeStripe(t)
			var logs *observer.ObservedLogs
			h := open(t, boltBackend(), withAPI(f.URL()), withMode(live, &logs))
			now := h.clock.Now().Unix()
			f.addEvents(
				h.fixture("checkout_session_completed.json", "created", now-3600, "livemode", live),
				// Another purchase, for globex, in the other mode.
				h.fixture("checkout_session_completed.json", "created", now-1800, "livemode", !live,
					"id", h.id("evt_other_mode"), "data.object.id", h.id("cs_test_other_mode"),
					"data.object.payment_intent", h.id("pi_other_mode"), "data.object.metadata.tollgate_customer", h.id("globex")),
			)
			events, applied, err := h.syncer.Reconcile(context.Background(), 72*time.Hour)
			if err != nil {
				t.Fatalf("Reconcile: %v", err)
			}
			if events != 2 || applied != 1 {
				t.Errorf("events %d applied %d, want 2 and 1", events, applied)
			}
			h.wantBalance(h.id("acme"), "10000")
			h.wantBalance(h.id("globex"), "0")
			if n := logs.FilterMessageSnippet("event of the other mode ignored").Len(); n != 1 {
				t.Errorf("%d log lines about the other mode, want 1", n)
			}
		})
	}
}

// TestNewRequiresLivemode: no default is guessed: a Syncer that receives
// or fetches events must be told which mode it serves.
func TestNewRequiresLivemode(t *testing.T) {
	st := open(t, boltBackend()).store
	want := "stripesync: Livemode is not set: set stripe.livemode to true to apply live-mode events or false for test mode; events of the other mode are acknowledged and ignored"
	for _, opts := range []stripesync.Options{
		{WebhookSecrets: []string{testSecret}},
		{APIKey: testAPIKey},
	} {
		if _, err := stripesync.New(st, opts); err == nil || err.Error() != want {
			t.Errorf("New(%+v) = %v\nwant %s", opts, err, want)
		}
	}
	// Without secrets or a key there are no events to tell apart.
	if _, err := stripesync.New(st, stripesync.Options{}); err != nil {
		t.Errorf("New without Stripe settings: %v", err)
	}
}
