package proxy_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/tollgate-dev/tollgate/internal/redistest"
	"github.com/tollgate-dev/tollgate/ledger"
	"github.com/tollgate-dev/tollgate/money"
)

// Bounds the hung-store tests assert. They are generous (a loaded CI
// machine with the race detector), yet far below what a hung Redis cost
// before store.timeout: 10 to 25 seconds.
const (
	hungRequestBound = 3 * time.Second
	readyzBound      = 1500 * time.Millisecond // /readyz promises 1s
)

// ownRedis starts a Redis for one test with extra redis-server arguments,
// and a store on it built as serve builds it.
func ownRedis(t *testing.T, args ...string) (*redistest.Server, *ledger.RedisStore) {
	t.Helper()
	srv := redistest.StartOwnWith(t, args...)
	st := ledger.NewRedisStore(fastClient(srv.Addr), ledger.Options{})
	t.Cleanup(func() { st.Close() })
	return srv, st
}

// timed runs f and returns how long it took.
func timed(f func()) time.Duration {
	start := time.Now()
	f()
	return time.Since(start)
}

// wantSumIsBalance checks that the customer's entries add up to the
// balance and that nothing is left reserved.
func wantSumIsBalance(t *testing.T, st ledger.Store, customer string) {
	t.Helper()
	a, err := st.Account(context.Background(), customer)
	if err != nil {
		t.Fatal(err)
	}
	p, err := st.Entries(context.Background(), customer, "", ledger.MaxPageSize)
	if err != nil {
		t.Fatal(err)
	}
	var sum money.Micros
	for _, e := range p.Entries {
		sum += e.Amount
	}
	if sum != a.Balance || a.Reserved != 0 {
		t.Errorf("%s: entries sum to %s, balance %s, reserved %s", customer, sum, a.Balance, a.Reserved)
	}
}

// TestRedisHung: while Redis hangs (SIGSTOP: connections open, nothing
// answered) a request is refused with 503 billing_unavailable within
// store.timeout and /readyz answers within its bound, for every one of
// several concurrent callers; after SIGCONT everything recovers and every
// request is charged exactly once.
func TestRedisHung(t *testing.T) {
	srv, st := ownRedis(t)
	h := newHarness(t, harnessOptions{store: st, yaml: configWith(t, "timeout: 5s", "timeout: 500ms")})
	cust := newCustomer()
	body := chatBody("gpt-4o", "")
	h.grant(cust, "10")
	if res, data := h.do(request{path: "/v1/chat/completions", customer: cust, body: body}); res.StatusCode != 200 {
		t.Fatalf("%d %s", res.StatusCode, data)
	}
	h.settled(cust, 1)

	if err := srv.Pause(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Resume() })
	var wg sync.WaitGroup
	refuseWhileHung(t, &wg, h, cust, body, 8)
	for range 3 {
		wg.Go(func() {
			var res *http.Response
			var data []byte
			d := timed(func() { res, data = getURL(t, h.admin.URL+"/readyz", "") })
			if res.StatusCode != 503 || !strings.Contains(decodeError(t, data).Error.Message, "not ready: the credit store did not answer within store.timeout (500ms)") {
				t.Errorf("/readyz %d %s with Redis hung", res.StatusCode, data)
			}
			if d > readyzBound {
				t.Errorf("/readyz took %s with Redis hung (want < %s)", d, readyzBound)
			}
		})
	}
	wg.Wait()
	resumeAndServe(t, srv, h, st, cust, body, 2)
}

// refuseWhileHung sends n concurrent requests for customer on wg, each of
// which must be refused with 503 billing_unavailable within
// hungRequestBound while Redis hangs.
func refuseWhileHung(t *testing.T, wg *sync.WaitGroup, h *harness, customer, body string, n int) {
	for range n {
		wg.Go(func() {
			var res *http.Response
			var data []byte
			d := timed(func() {
				res, data = doRequest(t, h.proxy.URL, request{path: "/v1/chat/completions", customer: customer, body: body})
			})
			if res.StatusCode != 503 || decodeError(t, data).Error.Code != "billing_unavailable" {
				t.Errorf("with Redis hung: %d %s", res.StatusCode, data)
			}
			if d > hungRequestBound {
				t.Errorf("the 503 took %s with Redis hung; store.timeout should bound it (want < %s)", d, hungRequestBound)
			}
		})
	}
}

// resumeAndServe resumes Redis and checks that, once ready, the proxy
// serves customer again and that its charges (settled in all) add up
// to its balance.
func resumeAndServe(t *testing.T, srv *redistest.Server, h *harness, st ledger.Store, customer, body string, settled int) {
	t.Helper()
	if err := srv.Resume(); err != nil {
		t.Fatal(err)
	}
	waitReady(t, h)
	if res, data := h.do(request{path: "/v1/chat/completions", customer: customer, body: body}); res.StatusCode != 200 {
		t.Fatalf("after Redis resumed: %d %s", res.StatusCode, data)
	}
	h.settled(customer, settled)
	wantSumIsBalance(t, st, customer)
}

// TestRedisHungWithLeases: with credit leases (serve's default), a
// customer whose reservation needs Redis (no lease yet) is refused with
// 503 billing_unavailable within store.timeout while Redis hangs, and is
// served and charged once after it resumes.
func TestRedisHungWithLeases(t *testing.T) {
	srv := redistest.StartOwnWith(t)
	st := ledger.NewLeaseStore(fastClient(srv.Addr), ledger.Options{}, testLeases)
	t.Cleanup(func() { st.Close() })
	h := newHarness(t, harnessOptions{store: st, yaml: configWith(t, "timeout: 5s", "timeout: 500ms")})
	cust := newCustomer()
	body := chatBody("gpt-4o", "")
	h.grant(cust, "10")

	if err := srv.Pause(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Resume() })
	var wg sync.WaitGroup
	refuseWhileHung(t, &wg, h, cust, body, 4)
	wg.Wait()
	resumeAndServe(t, srv, h, st, cust, body, 1)
}

// stallingStore is a real store whose reservations wait for their
// context to end, as a Redis call does on a hung server, and report what
// ended it.
type stallingStore struct {
	ledger.Store
	ended chan error
}

func (s *stallingStore) ReserveAvailable(ctx context.Context, customer, holdID string, amount money.Micros, ttl time.Duration) (money.Micros, error) {
	<-ctx.Done()
	s.ended <- ctx.Err()
	return 0, fmt.Errorf("reserve %s: %w: %w", holdID, ledger.ErrStoreUnavailable, ctx.Err())
}

// TestStoreTimeoutBoundsReservation: a store that waits on the
// reservation's context is cut off at store.timeout (the context the
// proxy passes arms its deadline only when a store waits on it), and the
// client gets 503 billing_unavailable.
func TestStoreTimeoutBoundsReservation(t *testing.T) {
	st := &stallingStore{Store: boltStore(t), ended: make(chan error, 1)}
	h := newHarness(t, harnessOptions{store: st, yaml: configWith(t, "timeout: 5s", "timeout: 200ms")})
	cust := newCustomer()
	h.grant(cust, "10")
	var res *http.Response
	var data []byte
	d := timed(func() {
		res, data = h.do(request{path: "/v1/chat/completions", customer: cust, body: chatBody("gpt-4o", "")})
	})
	if res.StatusCode != 503 || decodeError(t, data).Error.Code != "billing_unavailable" {
		t.Errorf("with the store stalled: %d %s; want 503 billing_unavailable", res.StatusCode, data)
	}
	select {
	case err := <-st.ended:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("the reservation's context ended with %v; want its deadline", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the stalled reservation never ended")
	}
	if d < 200*time.Millisecond || d > hungRequestBound {
		t.Errorf("the 503 took %s; want store.timeout (200ms), not more than %s", d, hungRequestBound)
	}
}

// waitReady polls /readyz until it answers 200, for at most 5 seconds.
func waitReady(t *testing.T, h *harness) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		res, data := getURL(t, h.admin.URL+"/readyz", "")
		if res.StatusCode == 200 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz not ready after 5s: %d %s", res.StatusCode, data)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// wantNotReady checks that /readyz answers 503 billing_unavailable within
// its bound, with a message that contains want.
func wantNotReady(t *testing.T, h *harness, want string) {
	t.Helper()
	var res *http.Response
	var data []byte
	d := timed(func() { res, data = getURL(t, h.admin.URL+"/readyz", "") })
	if res.StatusCode != 503 {
		t.Fatalf("/readyz %d %s; want 503 (%s)", res.StatusCode, data, want)
	}
	if e := decodeError(t, data); e.Error.Code != "billing_unavailable" || !strings.Contains(e.Error.Message, want) {
		t.Fatalf("/readyz said %q (%s); want it to say %q", e.Error.Message, e.Error.Code, want)
	}
	if d > readyzBound {
		t.Errorf("/readyz took %s", d)
	}
}

// wantRefused checks that a request is refused with 503
// billing_unavailable and charges nothing.
func wantRefused(t *testing.T, h *harness, customer string) {
	t.Helper()
	res, data := h.do(request{path: "/v1/chat/completions", customer: customer, body: chatBody("gpt-4o", "")})
	if res.StatusCode != 503 || decodeError(t, data).Error.Code != "billing_unavailable" {
		t.Fatalf("request: %d %s; want 503 billing_unavailable", res.StatusCode, data)
	}
}

func wantServed(t *testing.T, h *harness, customer string) {
	t.Helper()
	res, data := h.do(request{path: "/v1/chat/completions", customer: customer, body: chatBody("gpt-4o", "")})
	if res.StatusCode != 200 {
		t.Fatalf("request: %d %s; want 200", res.StatusCode, data)
	}
}

// TestReadyzWhenRedisOutOfMemory: Redis at maxmemory with noeviction
// answers PING but refuses every write. /readyz says so, with what to
// do, and becomes ready again by itself once memory is raised.
func TestReadyzWhenRedisOutOfMemory(t *testing.T) {
	srv, st := ownRedis(t)
	h := newHarness(t, harnessOptions{store: st})
	cust := newCustomer()
	h.grant(cust, "10")
	waitReady(t, h)
	wantServed(t, h, cust)
	h.settled(cust, 1)

	admin := srv.Client(t)
	if err := admin.ConfigSet(context.Background(), "maxmemory", "1").Err(); err != nil {
		t.Fatal(err)
	}
	wantRefused(t, h, cust)
	wantNotReady(t, h, "not ready: ledger: store unavailable: writes fail (OOM command not allowed when used memory > 'maxmemory'.); Redis is out of memory and refuses writes: raise maxmemory (CONFIG SET maxmemory, and in redis.conf)")
	if got := h.metric("tollgate_store_ready", nil); got != 0 {
		t.Errorf("tollgate_store_ready %v while writes fail", got)
	}

	if err := admin.ConfigSet(context.Background(), "maxmemory", "0").Err(); err != nil {
		t.Fatal(err)
	}
	waitReady(t, h)
	if got := h.metric("tollgate_store_ready", nil); got != 1 {
		t.Errorf("tollgate_store_ready %v once writes work", got)
	}
	wantServed(t, h, cust)
	h.settled(cust, 2)
	wantSumIsBalance(t, st, cust)
}

// TestReadyzWhenRedisEvicts: a Redis whose maxmemory-policy may evict keys
// is not ready, and requests are refused, until the policy is noeviction.
func TestReadyzWhenRedisEvicts(t *testing.T) {
	srv, st := ownRedis(t, "--maxmemory-policy", "allkeys-lru")
	h := newHarness(t, harnessOptions{store: st})
	cust := newCustomer()
	wantNotReady(t, h, "not ready: Redis "+srv.Addr+" has maxmemory-policy allkeys-lru: tollgate's idempotency keys and ledger must never be evicted; "+
		"set maxmemory-policy noeviction (CONFIG SET maxmemory-policy noeviction, and in redis.conf")
	wantRefused(t, h, cust)
	if err := srv.Client(t).ConfigSet(context.Background(), "maxmemory-policy", "noeviction").Err(); err != nil {
		t.Fatal(err)
	}
	waitReady(t, h)
	h.grant(cust, "10")
	wantServed(t, h, cust)
	h.settled(cust, 1)
}

// TestRedisDataLoss: Redis restarts empty (no persistence) under a
// running tollgate. /readyz turns 503 saying what happened and what to
// do, the loss is logged and counted once, and nothing is billed, until an
// operator accepts the loss through the admin API.
func TestRedisDataLoss(t *testing.T) {
	srv, st := ownRedis(t)
	h := newHarness(t, harnessOptions{store: st})
	cust := newCustomer()
	waitReady(t, h) // tollgate marks the Redis it serves from
	h.grant(cust, "10")
	wantServed(t, h, cust)
	h.settled(cust, 1)
	if got := h.metric("tollgate_store_data_losses_total", nil); got != 0 {
		t.Fatalf("tollgate_store_data_losses_total %v before any loss", got)
	}

	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		wantNotReady(t, h, "not ready: Redis lost tollgate's data (1 of its 1 marker keys are gone: tollgate:marker is missing)")
	}
	wantNotReady(t, h, "run `tollgate accept-data-loss` (POST /v1/store/accept-data-loss on the admin API)")
	if got := h.metric("tollgate_store_data_losses_total", nil); got != 1 {
		t.Errorf("tollgate_store_data_losses_total %v after one loss, want 1", got)
	}
	// The store logs the loss at error level (see ledger's tests); the
	// proxy logs the change of readiness once, not on every probe.
	if n := h.logs.FilterMessage("not ready: the credit store cannot be trusted with requests now").FilterField(zap.Error(&ledger.DataLostError{
		Detail: "1 of its 1 marker keys are gone: tollgate:marker is missing"})).Len(); n != 1 {
		t.Errorf("the loss was logged %d times by the proxy, want once", n)
	}
	wantRefused(t, h, cust)
	// A credit replayed now would find its idempotency key gone and pay
	// out twice: refused too.
	res, data := h.call("POST", "/v1/customers/"+cust+"/credits", adminToken, `{"amount":"10","idempotency_key":"replayed"}`)
	wantError(t, res, data, 503, "billing_unavailable")

	res, data = h.call("POST", "/v1/store/accept-data-loss", adminToken, "")
	if res.StatusCode != 200 || !strings.Contains(string(data), `"status":"ready"`) {
		t.Fatalf("accept-data-loss: %d %s", res.StatusCode, data)
	}
	waitReady(t, h)
	h.grant(cust, "10")
	wantServed(t, h, cust)
	h.settled(cust, 1) // the ledger restarted empty
	wantSumIsBalance(t, st, cust)
}

// TestAcceptDataLossNeedsRedis: the embedded store has no markers to
// answer for.
func TestAcceptDataLossNeedsRedis(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	res, data := h.call("POST", "/v1/store/accept-data-loss", adminToken, "")
	wantError(t, res, data, 400, "not_configured")
	res, data = h.call("GET", "/v1/store/accept-data-loss", adminToken, "")
	wantError(t, res, data, 405, "method_not_allowed")
	res, data = h.call("POST", "/v1/store/accept-data-loss", "", "")
	wantError(t, res, data, 401, "unauthorized")
}
