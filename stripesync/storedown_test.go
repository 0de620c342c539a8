package stripesync_test

import (
	"net/http"
	"path/filepath"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/tidwall/gjson"

	"github.com/tollgate-dev/tollgate/internal/redistest"
	"github.com/tollgate-dev/tollgate/ledger"
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
