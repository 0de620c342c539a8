package events_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/tollgate-dev/tollgate/events"
	"github.com/tollgate-dev/tollgate/internal/redistest"
	"github.com/tollgate-dev/tollgate/ledger"
	"github.com/tollgate-dev/tollgate/money"
)

const secret = "whsec_test_0123456789"

type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// receiver is the application's webhook endpoint: it verifies every
// delivery's signature and records the ids it acknowledged; it answers
// 503 while down.
type receiver struct {
	t     *testing.T
	clock *clock
	mu    sync.Mutex
	down  bool
	calls int
	ids   []string // acknowledged, in order
	types []string
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	if err := events.Verify(secret, req.Header.Get(events.SignatureHeader), body, r.clock.Now(), 5*time.Minute); err != nil {
		r.t.Errorf("delivery with a bad signature: %v", err)
		http.Error(w, "bad signature", http.StatusBadRequest)
		return
	}
	var ev struct{ ID, Type string }
	if err := json.Unmarshal(body, &ev); err != nil {
		r.t.Errorf("delivery is not JSON: %s", body)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls++
	if r.down {
		http.Error(w, "down", http.StatusServiceUnavailable)
		return
	}
	r.ids = append(r.ids, ev.ID)
	r.types = append(r.types, ev.Type)
}

func (r *receiver) setDown(down bool) { r.mu.Lock(); r.down = down; r.mu.Unlock() }

func (r *receiver) got() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.ids, " ")
}

func openBolt(t *testing.T, c *clock) *ledger.BoltStore {
	s, err := ledger.OpenBolt(filepath.Join(t.TempDir(), "tollgate.db"), ledger.Options{Now: c.Now, Events: &ledger.EventOptions{}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// metric returns the value of the counter name in reg (0 when absent).
func metric(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	return 0
}

func credit(t *testing.T, s ledger.Store, customer, key string) {
	t.Helper()
	if _, err := s.Credit(context.Background(), ledger.Credit{Customer: customer, Amount: money.Credit, Kind: ledger.KindGrant, Key: key}); err != nil {
		t.Fatal(err)
	}
}

// TestDeliveryRetriesInOrder: a receiver down for a while gets every
// event once it is up, in order, each signed; the waits double (a step
// before the retry time sends nothing); a restart continues from the
// stored cursor.
func TestDeliveryRetriesInOrder(t *testing.T) {
	ctx := t.Context()
	c := &clock{now: time.Now().Truncate(time.Second)}
	s := openBolt(t, c)
	rcv := &receiver{t: t, clock: c, down: true}
	srv := httptest.NewServer(rcv)
	defer srv.Close()
	reg := prometheus.NewRegistry()
	d := events.New(s, events.Options{URL: srv.URL, Secret: secret, Now: c.Now, Registerer: reg})
	for i := range 3 {
		credit(t, s, "acme", fmt.Sprint(i))
	}
	for i := range 4 {
		if err := d.Step(ctx); err != nil {
			t.Fatal(err)
		}
		if err := d.Step(ctx); err != nil { // before the retry time: no call
			t.Fatal(err)
		}
		if rcv.calls != i+1 {
			t.Fatalf("after %d failures: %d calls, want %d", i, rcv.calls, i+1)
		}
		c.Advance(time.Second << i)
	}
	rcv.setDown(false)
	if err := d.Step(ctx); err != nil {
		t.Fatal(err)
	}
	if got := rcv.got(); got != "evt_1 evt_2 evt_3" {
		t.Fatalf("delivered %q", got)
	}
	if n := metric(t, reg, "tollgate_event_deliveries_failed_total"); n != 4 {
		t.Fatalf("failed = %v, want 4", n)
	}
	if n := metric(t, reg, "tollgate_events_delivered_total"); n != 3 {
		t.Fatalf("delivered = %v, want 3", n)
	}

	// Another Deliverer (a restart) starts after the cursor.
	credit(t, s, "acme", "3")
	c.Advance(time.Minute) // the first one's lock has expired
	d2 := events.New(s, events.Options{URL: srv.URL, Secret: secret, Now: c.Now})
	if err := d2.Step(ctx); err != nil {
		t.Fatal(err)
	}
	if got := rcv.got(); got != "evt_1 evt_2 evt_3 evt_4" {
		t.Fatalf("after a restart: %q", got)
	}
}

// TestDeliveryGivesUpAfter72h: an event no receiver took for 72 hours is
// dropped and counted, and the next one is delivered.
func TestDeliveryGivesUpAfter72h(t *testing.T) {
	ctx := t.Context()
	c := &clock{now: time.Now().Truncate(time.Second)}
	s := openBolt(t, c)
	rcv := &receiver{t: t, clock: c, down: true}
	srv := httptest.NewServer(rcv)
	defer srv.Close()
	reg := prometheus.NewRegistry()
	d := events.New(s, events.Options{URL: srv.URL, Secret: secret, Now: c.Now, Registerer: reg})
	credit(t, s, "acme", "old")
	for range 30 {
		if err := d.Step(ctx); err != nil {
			t.Fatal(err)
		}
		c.Advance(3 * time.Hour)
	}
	rcv.setDown(false)
	credit(t, s, "acme", "new")
	if err := d.Step(ctx); err != nil {
		t.Fatal(err)
	}
	if got := rcv.got(); got != "evt_2" {
		t.Fatalf("delivered %q, want only evt_2", got)
	}
	if n := metric(t, reg, "tollgate_events_dropped_total"); n != 1 {
		t.Fatalf("dropped = %v", n)
	}
}

// TestOneDelivererAmongReplicas: two replicas sharing Redis deliver each
// event once between them, and only the lock holder posts; events written
// through either replica's outboxes arrive.
func TestOneDelivererAmongReplicas(t *testing.T) {
	ctx := t.Context()
	srvR := redistest.Start(t)
	c := &clock{now: time.Now().Truncate(time.Second)}
	var stores []*ledger.RedisStore
	for range 2 {
		s := ledger.NewRedisStore(redis.NewClient(&redis.Options{Addr: srvR.Addr}), ledger.Options{Now: c.Now, Events: &ledger.EventOptions{}})
		t.Cleanup(func() { s.Close() })
		stores = append(stores, s)
	}
	rcv := &receiver{t: t, clock: c}
	srv := httptest.NewServer(rcv)
	defer srv.Close()
	var ds []*events.Deliverer
	var regs []*prometheus.Registry
	for _, s := range stores {
		reg := prometheus.NewRegistry()
		regs = append(regs, reg)
		ds = append(ds, events.New(s, events.Options{URL: srv.URL, Secret: secret, Now: c.Now, Registerer: reg}))
	}
	var want []string
	for i := range 6 {
		credit(t, stores[i%2], fmt.Sprintf("c%d", i%3), fmt.Sprint(i))
		want = append(want, fmt.Sprintf("evt_%d", i+1))
		for _, d := range ds {
			if err := d.Step(ctx); err != nil {
				t.Fatal(err)
			}
		}
		c.Advance(time.Second)
	}
	if got := rcv.got(); got != strings.Join(want, " ") {
		t.Fatalf("delivered %q, want %q", got, strings.Join(want, " "))
	}
	a, b := metric(t, regs[0], "tollgate_events_delivered_total"), metric(t, regs[1], "tollgate_events_delivered_total")
	if a*b != 0 || a+b != 6 {
		t.Fatalf("delivered by replica: %v and %v; want all 6 by one", a, b)
	}
}
