package stripesync_test

import (
	"context"
	"errors"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/tidwall/gjson"

	"github.com/tollgate-dev/tollgate/internal/redistest"
	"github.com/tollgate-dev/tollgate/ledger"
	"github.com/tollgate-dev/tollgate/stripesync"
)

// wantStoreDown delivers body and expects the 503 that makes Stripe retry.
func wantStoreDown(t *testing.T, h *harness, body []byte) {
	t.Helper()
	rec := h.deliver(body)
	if rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("store down: status %d, want 503; %s", rec.Code, rec.Body)
	}
	if got := gjson.Get(rec.Body.String(), "error.code").String(); got != "store_unavailable" {
		t.Errorf("store down: code %q, want store_unavailable", got)
	}
	if got := h.outcome("checkout.session.completed", "store_unavailable"); got != 1 {
		t.Errorf("store_unavailable count %d, want 1", got)
	}
}

func TestStoreDownThenRetryCreditsOnceBolt(t *testing.T) {
	c := &clock{t: t0}
	path := filepath.Join(t.TempDir(), "tollgate.db")
	down := mustOpenBolt(t, path, c.Now)
	h := newHarness(t, down, c)
	body := h.fixture("checkout_session_completed.json")
	if err := down.Close(); err != nil {
		t.Fatal(err)
	}
	wantStoreDown(t, h, body)

	// tollgate restarts on the same file; Stripe retries.
	h2 := newHarness(t, mustOpenBolt(t, path, c.Now), c)
	h2.mustDeliver(body, http.StatusOK)
	h2.mustDeliver(body, http.StatusOK)
	h2.wantBalance(h.id("acme"), "10000")
	if n := len(h2.entries(h.id("acme"))); n != 1 {
		t.Errorf("%d entries, want 1", n)
	}
}

func TestStoreDownThenRetryCreditsOnceRedis(t *testing.T) {
	srv := redistest.StartOwn(t)
	c := &clock{t: t0}
	st := ledger.NewRedisStore(redis.NewClient(&redis.Options{Addr: srv.Addr, MaxRetries: -1}), ledger.Options{Now: c.Now})
	t.Cleanup(func() { st.Close() })
	h := newHarness(t, st, c)
	body := h.fixture("checkout_session_completed.json")
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	wantStoreDown(t, h, body)
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	h.mustDeliver(body, http.StatusOK)
	h.mustDeliver(body, http.StatusOK)
	h.wantBalance(h.id("acme"), "10000")
	if n := len(h.entries(h.id("acme"))); n != 1 {
		t.Errorf("%d entries, want 1", n)
	}
}

// TestReconcileStopsWhileTheStoreIsDown: a store outage ends a run at the
// first event, with an error matching ledger.ErrStoreUnavailable, instead of
// trying every listed event and reporting them all as ErrIncomplete.
func TestReconcileStopsWhileTheStoreIsDown(t *testing.T) {
	c := &clock{t: t0}
	down := mustOpenBolt(t, filepath.Join(t.TempDir(), "tollgate.db"), c.Now)
	f := newFakeStripe(t)
	h := newHarness(t, down, c, withAPI(f.URL()))
	now := c.Now().Unix()
	f.addEvents(
		h.fixture("checkout_session_completed.json", "created", now-60),
		h.fixture("checkout_session_completed_basil.json", "created", now-30),
	)
	if err := down.Close(); err != nil {
		t.Fatal(err)
	}
	events, applied, err := h.syncer.Reconcile(context.Background(), time.Hour)
	if !errors.Is(err, ledger.ErrStoreUnavailable) || errors.Is(err, stripesync.ErrIncomplete) {
		t.Fatalf("err %v: want one matching ledger.ErrStoreUnavailable, not ErrIncomplete", err)
	}
	if events != 1 || applied != 0 {
		t.Errorf("events %d applied %d, want 1 and 0: the run stops at the first event", events, applied)
	}
	if got := h.outcome("checkout.session.completed", "store_unavailable"); got != 1 {
		t.Errorf("store_unavailable count %d, want 1", got)
	}
}
