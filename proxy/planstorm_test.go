package proxy_test

import (
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/ledger"
)

// TestPlanStorm sends a storm of chat completions through two tollgate
// instances sharing one store while the customer's plan flips underneath
// between one that includes chat completions and one that does not, each
// change made through the second instance's admin API. Every answer is
// checked against the changes acknowledged before the request was sent:
// once a change is acknowledged (its PUT or DELETE answered) and until
// the next one begins, no request is served under the plan it removed,
// and none is refused under the plan it granted.
func TestPlanStorm(t *testing.T) {
	t.Run("bolt", func(t *testing.T) {
		st := boltStore(t)
		planStorm(t, st, st)
	})
	t.Run("redis", func(t *testing.T) {
		planStorm(t, redisStore(t), redisStore(t))
	})
}

func planStorm(t *testing.T, sa, sb ledger.Store) {
	const (
		workers = 8
		changes = 24
	)
	up := newUpstream(t)
	a := newHarness(t, harnessOptions{yaml: planConfig, store: sa, upstream: up})
	b := newHarness(t, harnessOptions{yaml: planConfig, store: sb, upstream: up})
	cust := newCustomer()
	a.grant(cust, "1000")
	chat := request{path: "/v1/chat/completions", customer: cust, body: chatBody("gpt-4o", "")}

	// Change i (from 1) grants chat when odd (PUT chat), removes it when
	// even (DELETE: back to free). Change 0 is the start: free.
	var started, acked atomic.Int64
	allowed := func(change int64) bool { return change%2 == 1 }
	var stop atomic.Bool
	var served, refused, violations atomic.Int64
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			instance := []*harness{a, b}[w%2]
			for !stop.Load() {
				k := acked.Load()
				res, body := doRequest(t, instance.proxy.URL, chat)
				unchanged := started.Load() == k // no later change began meanwhile
				switch res.StatusCode {
				case http.StatusOK:
					served.Add(1)
					if unchanged && !allowed(k) {
						violations.Add(1)
						t.Errorf("served after change %d (free) was acknowledged", k)
					}
				case http.StatusForbidden:
					refused.Add(1)
					if unchanged && allowed(k) {
						violations.Add(1)
						t.Errorf("refused after change %d (chat) was acknowledged: %s", k, body)
					}
				default:
					t.Errorf("status %d: %s", res.StatusCode, body)
					return
				}
			}
		}()
	}
	for i := int64(1); i <= changes; i++ {
		// Let a few requests through under each plan.
		for n := served.Load() + refused.Load(); served.Load()+refused.Load() < n+workers && !t.Failed(); {
			time.Sleep(time.Millisecond)
		}
		started.Store(i)
		if allowed(i) {
			b.setPlan(cust, `{"plan":"chat","reason":"storm"}`)
		} else if res, body := b.call(http.MethodDelete, "/v1/customers/"+cust+"/plan", adminToken, ""); res.StatusCode != http.StatusOK {
			t.Fatalf("DELETE: %d %s", res.StatusCode, body)
		}
		acked.Store(i)
	}
	stop.Store(true)
	wg.Wait()
	if served.Load() == 0 || refused.Load() == 0 {
		t.Fatalf("served %d, refused %d: the storm did not exercise both plans", served.Load(), refused.Load())
	}
	t.Logf("%d served, %d refused across %d plan changes, %d violations", served.Load(), refused.Load(), changes, violations.Load())
	charges := waitSettled(t, sa, cust, int(served.Load()), 10*time.Second)
	if len(charges) != int(served.Load()) {
		t.Errorf("%d charges for %d served requests", len(charges), served.Load())
	}
}
