package ledger_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tollgate-dev/tollgate/internal/redistest"
	"github.com/tollgate-dev/tollgate/ledger"
)

// queued records what QueueSettle's done was given, and how often.
type queued struct {
	calls atomic.Int32
	got   chan queuedResult
}

type queuedResult struct {
	e   ledger.Entry
	err error
}

func newQueued() *queued { return &queued{got: make(chan queuedResult, 4)} }

func (q *queued) done(e ledger.Entry, err error) {
	q.calls.Add(1)
	q.got <- queuedResult{e, err}
}

func (q *queued) wait(t *testing.T) queuedResult {
	t.Helper()
	select {
	case r := <-q.got:
		return r
	case <-time.After(5 * time.Second):
		t.Fatal("QueueSettle's done did not run within 5s")
		return queuedResult{}
	}
}

// TestQueueSettle: a hold the replica lent is settled without waiting;
// done runs once with what Settle returns for it (a later Settle repeats
// that entry), and the ledger holds one charge. Holds the replica did not
// lend are not queued: their Settle does the work.
func TestQueueSettle(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t)
	h := newLeaseFault()
	a := faultyReplica(t, srv.Addr, h, ledger.Options{}, ledger.LeaseOptions{MinRequests: -1, Share: 100, FlushInterval: 20 * time.Millisecond})
	b := ledger.NewRedisStore(redis.NewClient(&redis.Options{Addr: srv.Addr}), ledger.Options{})
	t.Cleanup(func() { b.Close() })
	cust := "queued-" + randomHex(4)
	mustCredit(t, b, cust, c("1000"))
	mustReserve(t, a, cust, "h1", c("100"), time.Minute)
	if a.Stats().Lent == 0 {
		t.Fatalf("A lent nothing: %+v", a.Stats())
	}

	q := newQueued()
	if !a.QueueSettle(cust, "h1", c("30"), ledger.Charge{Reference: "h1", Model: "gpt-4o"}, q.done) {
		t.Fatal("QueueSettle of a lent hold: not queued")
	}
	r := q.wait(t)
	if r.err != nil || r.e.ID == "" || r.e.Amount != -c("30") || r.e.Reference != "h1" || r.e.Model != "gpt-4o" || r.e.BalanceAfter != c("970") {
		t.Fatalf("done got %+v, %v; want the charge of 30, balance after 970", r.e, r.err)
	}
	again, err := a.Settle(ctx, cust, "h1", c("30"), ledger.Charge{Reference: "h1", Model: "gpt-4o"})
	if err != nil || again.ID != r.e.ID {
		t.Errorf("Settle after QueueSettle: %+v, %v; want entry %s again", again, err, r.e.ID)
	}

	// Not lent by A: unknown, reserved through B, already settled.
	mustReserve(t, b, cust, "b1", c("10"), time.Minute)
	for _, id := range []string{"nope", "b1", "h1"} {
		if a.QueueSettle(cust, id, c("1"), ledger.Charge{Reference: id}, q.done) {
			t.Errorf("QueueSettle of %s, a hold A did not lend or already settled: queued", id)
		}
	}
	if a.QueueSettle("someone-else-"+randomHex(4), "h1", c("1"), ledger.Charge{}, q.done) {
		t.Error("QueueSettle for a customer A never served: queued")
	}
	if a.QueueSettle(cust, "h1", -1, ledger.Charge{}, q.done) {
		t.Error("QueueSettle of a negative amount: queued (Settle must report it)")
	}

	time.Sleep(100 * time.Millisecond) // several syncs
	if n := q.calls.Load(); n != 1 {
		t.Errorf("done ran %d times, want once", n)
	}
	if acct := mustAccount(t, b, cust); acct.Balance != c("970") {
		t.Errorf("balance %s, want 970: one charge of 30", acct.Balance)
	}
	checkInvariants(t, b, cust)
}

// TestQueueSettleSyncFails: when the sync that carries a queued charge
// fails, done says so at once, and the charge stays queued: Settle of the
// same hold waits for the next sync that succeeds and returns the one
// charge it recorded.
func TestQueueSettleSyncFails(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t)
	h := newLeaseFault()
	a := faultyReplica(t, srv.Addr, h, ledger.Options{}, ledger.LeaseOptions{MinRequests: -1, Share: 100, FlushInterval: 20 * time.Millisecond})
	cust := "queuefail-" + randomHex(4)
	mustCredit(t, a, cust, c("1000"))
	mustReserve(t, a, cust, "h1", c("100"), time.Minute)

	h.failing.Store(true)
	q := newQueued()
	if !a.QueueSettle(cust, "h1", c("40"), ledger.Charge{Reference: "h1"}, q.done) {
		t.Fatal("QueueSettle of a lent hold: not queued")
	}
	if r := q.wait(t); r.err == nil {
		t.Fatalf("done got %+v with no error while every sync fails", r.e)
	}
	settled := make(chan error, 1)
	var e ledger.Entry
	go func() {
		var err error
		e, err = a.Settle(ctx, cust, "h1", c("40"), ledger.Charge{Reference: "h1"})
		settled <- err
	}()
	time.Sleep(100 * time.Millisecond)
	h.failing.Store(false)
	select {
	case err := <-settled:
		if err != nil || e.Amount != -c("40") || e.BalanceAfter != c("960") {
			t.Fatalf("Settle after the failed sync: %+v, %v; want the queued charge of 40", e, err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Settle did not return within 5s of Redis answering again")
	}
	time.Sleep(100 * time.Millisecond)
	if n := q.calls.Load(); n != 1 {
		t.Errorf("done ran %d times, want once", n)
	}
	if acct := mustAccount(t, a, cust); acct.Balance != c("960") {
		t.Errorf("balance %s, want 960: one charge of 40", acct.Balance)
	}
	checkInvariants(t, a, cust)
}

// TestQueueSettleAfterClose: a closed store queues nothing; Settle says
// why.
func TestQueueSettleAfterClose(t *testing.T) {
	srv := redistest.Start(t)
	a := ledger.NewLeaseStore(redis.NewClient(&redis.Options{Addr: srv.Addr}), ledger.Options{}, ledger.LeaseOptions{MinRequests: -1, Share: 100})
	cust := "queueclosed-" + randomHex(4)
	mustCredit(t, a, cust, c("1000"))
	mustReserve(t, a, cust, "h1", c("100"), time.Minute)
	a.Close()
	q := newQueued()
	if a.QueueSettle(cust, "h1", c("1"), ledger.Charge{Reference: "h1"}, q.done) {
		t.Fatal("QueueSettle on a closed store: queued")
	}
	if _, err := a.Settle(context.Background(), cust, "h1", c("1"), ledger.Charge{Reference: "h1"}); !errors.Is(err, ledger.ErrStoreUnavailable) {
		t.Errorf("Settle on a closed store: %v; want ErrStoreUnavailable", err)
	}
}
