package proxy_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tollgate-dev/tollgate/ledger"
	"github.com/tollgate-dev/tollgate/money"
)

// failLeaseSyncs is a go-redis hook that fails every lease sync while on.
type failLeaseSyncs struct{ on atomic.Bool }

func (h *failLeaseSyncs) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *failLeaseSyncs) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if h.on.Load() && isLeaseSync(cmd) {
			cmd.SetErr(&net.OpError{Op: "read", Net: "tcp", Err: errors.New("injected")})
			return cmd.Err()
		}
		return next(ctx, cmd)
	}
}

func (h *failLeaseSyncs) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		for _, cmd := range cmds {
			if h.on.Load() && isLeaseSync(cmd) {
				cmd.SetErr(&net.OpError{Op: "read", Net: "tcp", Err: errors.New("injected")})
				return cmd.Err()
			}
		}
		return next(ctx, cmds)
	}
}

// failOnceNaming is a go-redis hook that fails the first command naming
// the id it is armed with, other than a lease sync, and then disarms.
type failOnceNaming struct{ id atomic.Pointer[string] }

func (h *failOnceNaming) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *failOnceNaming) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if h.fails(cmd) {
			return cmd.Err()
		}
		return next(ctx, cmd)
	}
}

func (h *failOnceNaming) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		for _, cmd := range cmds {
			if h.fails(cmd) {
				return cmd.Err()
			}
		}
		return next(ctx, cmds)
	}
}

// fails fails cmd if it is the one h is armed for.
func (h *failOnceNaming) fails(cmd redis.Cmder) bool {
	id := h.id.Load()
	if id == nil || isLeaseSync(cmd) || !names(cmd, *id) || !h.id.CompareAndSwap(id, nil) {
		return false
	}
	cmd.SetErr(&net.OpError{Op: "read", Net: "tcp", Err: errors.New("injected")})
	return true
}

func names(cmd redis.Cmder, id string) bool {
	for _, a := range cmd.Args() {
		if s, ok := a.(string); ok && s == id {
			return true
		}
	}
	return false
}

// isLeaseSync reports whether cmd runs lease.lua: its arguments name the
// replica's lease.
func isLeaseSync(cmd redis.Cmder) bool {
	for _, a := range cmd.Args() {
		if s, ok := a.(string); ok && strings.HasPrefix(s, "tollgate-lease-") {
			return true
		}
	}
	return false
}

// countingQueuer counts the settlements a LeaseStore queued, and those
// whose done reported an error.
type countingQueuer struct {
	*ledger.LeaseStore
	queued, failed atomic.Int32
}

func (q *countingQueuer) QueueSettle(customer, holdID string, actual money.Micros, c ledger.Charge, done func(ledger.Entry, error)) bool {
	ok := q.LeaseStore.QueueSettle(customer, holdID, actual, c, func(e ledger.Entry, err error) {
		if err != nil {
			q.failed.Add(1)
		}
		done(e, err)
	})
	if ok {
		q.queued.Add(1)
	}
	return ok
}

// TestQueuedSettlementOutlivesFailedSyncs: with leases, a request whose
// hold was lent is charged through the store's queue. When the syncs that
// carry the charges fail, the proxy falls back to its settlement retries;
// once Redis takes syncs again every request is charged exactly once,
// nothing is counted as a failed settlement, and Drain waits for all of
// them.
func TestQueuedSettlementOutlivesFailedSyncs(t *testing.T) {
	client := redisClient(t)
	hook := &failLeaseSyncs{}
	client.AddHook(hook)
	st := &countingQueuer{LeaseStore: ledger.NewLeaseStore(client, ledger.Options{}, testLeases)}
	t.Cleanup(func() { st.Close() })
	h := newHarness(t, harnessOptions{store: st, retryFor: time.Minute})
	cust := newCustomer()
	h.grant(cust, "1")
	body := chatBody("gpt-4o", "")
	send := func(n int) {
		for range n {
			if res, data := h.do(request{path: "/v1/chat/completions", customer: cust, body: body}); res.StatusCode != http.StatusOK {
				t.Fatalf("status %d: %s", res.StatusCode, data)
			}
		}
	}
	send(4) // the lease is taken after two
	h.settled(cust, 4)
	before := st.Stats()
	lent := before.Lent
	if lent == 0 {
		t.Fatalf("no hold came from a lease: %+v", st.Stats())
	}

	// The holds are lent before upstream answers; the syncs that would
	// carry their charges fail from then on.
	var answered atomic.Int32
	jsonBody := testdata(t, "chat_completion.json")
	h.up.handle(func(w http.ResponseWriter, r *http.Request, b []byte) {
		hook.on.Store(true)
		answered.Add(1)
		w.Header().Set("Content-Type", "application/json")
		w.Write(jsonBody)
	})
	send(3)
	after := st.Stats()
	if after.Lent == lent {
		t.Fatalf("none of the 3 requests was lent: %+v", after)
	}
	// A request reserved in Redis (the lease could not grow without a
	// sync) is settled there; the lent ones wait for a sync.
	want := 4 + int(after.Reserved-before.Reserved)
	for deadline := time.Now().Add(5 * time.Second); st.failed.Load() == 0 || len(chargesNow(t, h.store, cust)) < want; {
		if time.Now().After(deadline) {
			t.Fatalf("after 5s: %d queued settlements failed, %d charges (want %d)", st.failed.Load(), len(chargesNow(t, h.store, cust)), want)
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond) // more failed syncs
	if got := len(chargesNow(t, h.store, cust)); got != want {
		t.Fatalf("%d charges while every sync fails; want %d: the first 4 and those not lent (%+v)", got, want, after)
	}
	if got := int64(st.queued.Load()); got != after.Lent {
		t.Errorf("%d settlements queued; want one per lent hold, %d", got, after.Lent)
	}
	hook.on.Store(false)
	waitSettled(t, h.store, cust, 7, 10*time.Second)
	// Each settlement is counted once the proxy knows it is recorded.
	h.eventually("tollgate_hold_lifetime_seconds", map[string]string{"outcome": "settled"}, 7)
	if got := h.metric("tollgate_settle_failures_total", nil); got != 0 {
		t.Errorf("tollgate_settle_failures_total = %v; every charge was recorded in the end", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := h.srv.Drain(ctx); err != nil {
		t.Errorf("Drain: %v", err)
	}
	if acct := h.account(cust); acct.Reserved != 0 {
		t.Errorf("%s still reserved", acct.Reserved)
	}
}

// TestQueuedChargeIsNotGivenUp: a lent hold's charge that the store still
// holds queued while every sync fails is not given up when
// SettleRetryFor runs out, as the store sends it once Redis answers: no
// log or failure count announces as lost a charge recorded later (one
// warning says it is still queued, with what to do should the replica
// die). It is recorded once when syncs succeed again, and the proxy
// counts it settled, also when its first Settle answered by Redis fails:
// the retries start afresh once the store sent the charge. At shutdown,
// the proxy only warns that the store holds such a charge, and the store
// sends it before it closes.
func TestQueuedChargeIsNotGivenUp(t *testing.T) {
	client := redisClient(t)
	hook, once := &failLeaseSyncs{}, &failOnceNaming{}
	client.AddHook(hook)
	client.AddHook(once)
	st := ledger.NewLeaseStore(client, ledger.Options{}, testLeases)
	t.Cleanup(func() { hook.on.Store(false); st.Close() })
	h := newHarness(t, harnessOptions{store: st, retryFor: 200 * time.Millisecond, yaml: configWith(t, "settle_timeout: 2s", "settle_timeout: 100ms")})
	cust := newCustomer()
	h.grant(cust, "1")
	body := chatBody("gpt-4o", "")
	send := func() {
		t.Helper()
		if res, data := h.do(request{path: "/v1/chat/completions", customer: cust, body: body}); res.StatusCode != http.StatusOK {
			t.Fatalf("status %d: %s", res.StatusCode, data)
		}
	}
	for range 4 { // the lease is taken after two
		send()
	}
	h.settled(cust, 4)
	// sendLent sends a request lent before upstream answers; the syncs
	// that would carry its charge fail from then on.
	var arm atomic.Bool
	jsonBody := testdata(t, "chat_completion.json")
	h.up.handle(func(w http.ResponseWriter, r *http.Request, b []byte) {
		if arm.Load() {
			hook.on.Store(true)
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(jsonBody)
	})
	sendLent := func() string {
		t.Helper()
		lent := st.Stats().Lent
		arm.Store(true)
		res, data := h.do(request{path: "/v1/chat/completions", customer: cust, body: body})
		arm.Store(false)
		if res.StatusCode != http.StatusOK {
			t.Fatalf("status %d: %s", res.StatusCode, data)
		}
		if st.Stats().Lent == lent {
			t.Fatalf("the request was not lent: %+v", st.Stats())
		}
		return res.Header.Get("X-Tollgate-Request-Id")
	}
	id := sendLent()
	lost := func() int {
		return len(h.logs.FilterMessageSnippet("the charge is NOT recorded").All())
	}
	time.Sleep(time.Second) // SettleRetryFor five times over
	if n := len(chargesNow(t, h.store, cust)); n != 4 {
		t.Fatalf("%d charges while every sync fails, want 4", n)
	}
	if lost() != 0 || h.metric("tollgate_settle_failures_total", nil) != 0 {
		t.Fatalf("a charge the store holds queued was given up: %d logs, %v counted", lost(), h.metric("tollgate_settle_failures_total", nil))
	}
	queued := h.logs.FilterMessageSnippet("still queued in the store after the retry window").All()
	if len(queued) != 1 || queued[0].ContextMap()["apply"] == nil {
		t.Errorf("%d warnings that the charge is still queued after the window, want 1 with the command to apply it", len(queued))
	}
	// Syncs succeed again while the proxy waits out a backoff (it counts
	// a retry as it starts one), so that its next Settle is answered by
	// Redis, and fails once.
	once.id.Store(&id)
	for retries := h.metric("tollgate_settle_retries_total", nil); h.metric("tollgate_settle_retries_total", nil) == retries; {
		time.Sleep(time.Millisecond)
	}
	hook.on.Store(false)
	waitSettled(t, h.store, cust, 5, 10*time.Second)
	// The proxy learns the outcome after its backoff, from Redis.
	settled := func() float64 {
		return h.metric("tollgate_hold_lifetime_seconds", map[string]string{"outcome": "settled"})
	}
	for deadline := time.Now().Add(10 * time.Second); settled() != 5 && lost() == 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("after 10s the proxy counts %v requests settled, want 5", settled())
		}
	}
	if once.id.Load() != nil {
		t.Error("no Settle answered by Redis failed: the case of a failure after the store sent the charge did not run")
	}
	if lost() != 0 {
		t.Fatalf("%d logs of a lost charge: a failure after the store sent the charge was given up at once", lost())
	}

	for range 2 { // the lease, given back while the customer was idle, is taken again
		send()
	}
	h.settled(cust, 7)
	sendLent() // syncs fail again
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := h.srv.Drain(ctx); err != nil {
		t.Errorf("Drain: %v", err)
	}
	if n := len(h.logs.FilterMessageSnippet("the store holds the charge queued").All()); n != 1 || lost() != 0 || h.metric("tollgate_settle_failures_total", nil) != 0 {
		t.Errorf("at shutdown: %d warnings that the store holds the charge (want 1), %d logs of a lost charge, %v counted (want 0)", n, lost(), h.metric("tollgate_settle_failures_total", nil))
	}
	hook.on.Store(false)
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	after := ledger.NewRedisStore(redisClient(t), ledger.Options{})
	t.Cleanup(func() { after.Close() })
	if n := len(chargesNow(t, after, cust)); n != 8 {
		t.Errorf("%d charges after the store closed, want 8: it sends what it holds before it closes", n)
	}
	wantSumIsBalance(t, after, cust)
}
