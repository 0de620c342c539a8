package proxy_test

import (
	"context"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/ledger"
	"github.com/tollgate-dev/tollgate/money"
)

// countingStore counts the store calls a request makes before it is
// forwarded.
type countingStore struct {
	ledger.Store
	reserve, reservePlan, plan atomic.Int64
}

func (c *countingStore) ReserveAvailable(ctx context.Context, customer, holdID string, amount money.Micros, ttl time.Duration) (money.Micros, error) {
	c.reserve.Add(1)
	return c.Store.ReserveAvailable(ctx, customer, holdID, amount, ttl)
}

func (c *countingStore) ReservePlan(ctx context.Context, customer, holdID string, amount money.Micros, ttl time.Duration, v int64) (money.Micros, error) {
	c.reservePlan.Add(1)
	return c.Store.ReservePlan(ctx, customer, holdID, amount, ttl, v)
}

func (c *countingStore) Plan(ctx context.Context, customer string) (ledger.PlanState, error) {
	c.plan.Add(1)
	return c.Store.Plan(ctx, customer)
}

func (c *countingStore) counts() [3]int64 {
	return [3]int64{c.reserve.Swap(0), c.reservePlan.Swap(0), c.plan.Swap(0)}
}

// TestPlanRoundTrips pins what plans cost on the request path: nothing
// without plans (one Reserve, as before); with plans, one read for a
// customer's first request in the process, then one ReservePlan per
// request, and after a change made elsewhere one more ReservePlan, whose
// refusal carries the new state.
func TestPlanRoundTrips(t *testing.T) {
	chat := func(h *harness, cust string) {
		t.Helper()
		if res, body := h.do(request{path: "/v1/chat/completions", customer: cust, body: chatBody("gpt-4o", "")}); res.StatusCode != http.StatusOK {
			t.Fatalf("%d %s", res.StatusCode, body)
		}
	}
	t.Run("without plans", func(t *testing.T) {
		cs := &countingStore{Store: boltStore(t)}
		h := newHarness(t, harnessOptions{store: cs})
		cust := newCustomer()
		h.grant(cust, "10")
		for range 3 {
			chat(h, cust)
			if got := cs.counts(); got != [3]int64{1, 0, 0} {
				t.Fatalf("Reserve, ReservePlan, Plan calls = %v; want one ReserveAvailable", got)
			}
		}
	})
	t.Run("with plans", func(t *testing.T) {
		cs := &countingStore{Store: boltStore(t)}
		h := newHarness(t, harnessOptions{yaml: planConfig, store: cs})
		other := newHarness(t, harnessOptions{yaml: planConfig, store: cs})
		cust := newCustomer()
		h.grant(cust, "10")
		other.setPlan(cust, `{"plan":"pro"}`)
		cs.counts()
		chat(h, cust)
		if got := cs.counts(); got != [3]int64{0, 1, 1} {
			t.Fatalf("first request: Reserve, ReservePlan, Plan calls = %v; want one read and one ReservePlan", got)
		}
		h.settled(cust, 1)
		for i := range 3 {
			chat(h, cust)
			if got := cs.counts(); got != [3]int64{0, 1, 0} {
				t.Fatalf("request %d: calls = %v; want one ReservePlan", i+2, got)
			}
		}
		other.setPlan(cust, `{"plan":"chat"}`)
		cs.counts()
		chat(h, cust)
		if got := cs.counts(); got != [3]int64{0, 2, 0} {
			t.Fatalf("after a change elsewhere: calls = %v; want two ReservePlan and no read", got)
		}
	})
}
