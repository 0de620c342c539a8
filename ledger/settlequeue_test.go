package ledger_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tollgate-dev/tollgate/internal/redistest"
	"github.com/tollgate-dev/tollgate/ledger"
	"github.com/tollgate-dev/tollgate/money"
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

// settledOnce checks, after several more syncs, that done ran once and
// that the customer's balance is balance, with the ledger's invariants.
func (q *queued) settledOnce(t *testing.T, s ledger.Store, customer string, balance money.Micros) {
	t.Helper()
	time.Sleep(100 * time.Millisecond)
	if n := q.calls.Load(); n != 1 {
		t.Errorf("done ran %d times, want once", n)
	}
	if acct := mustAccount(t, s, customer); acct.Balance != balance {
		t.Errorf("balance %s, want %s: one charge", acct.Balance, balance)
	}
	checkInvariants(t, s, customer)
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
	mustReserve(t, a, cust, "h2", c("10"), time.Minute)
	if a.QueueSettle(cust, "h2", -1, ledger.Charge{Reference: "h2"}, q.done) {
		t.Error("QueueSettle of a negative amount: queued (Settle must report it)")
	}
	if _, err := a.Settle(ctx, cust, "h2", c("0"), ledger.Charge{Reference: "h2"}); err != nil {
		t.Fatal(err)
	}

	q.settledOnce(t, b, cust, c("970"))
}

// TestQueueSettleSyncFails: when the sync that carries a queued charge
// fails, done says so at once, and the charge stays queued: a Settle of
// the same hold cut short says so (ErrSettleQueued), and one that waits
// gets the one charge the next sync that succeeds recorded.
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
	// A Settle that gives up waiting says the store still holds the
	// charge, so that its caller does not report it lost.
	if err := queueFailing(t, a, q, cust, "h1", c("40")); !errors.Is(err, ledger.ErrSettleQueued) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Settle cut short while the charge is queued: %v; want ErrSettleQueued and the deadline", err)
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
	q.settledOnce(t, a, cust, c("960"))
}

// TestQueueSettleRefusedSync: while the syncs that carry a queued charge
// fail because Redis refuses them (stored data the script cannot read,
// which may never clear), a Settle cut short does not promise that the
// charge will be sent (ErrSettleQueued) but says why it is not recorded.
func TestQueueSettleRefusedSync(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
	a := ledger.NewLeaseStore(rdb, ledger.Options{}, ledger.LeaseOptions{MinRequests: -1, Share: 100, FlushInterval: 20 * time.Millisecond})
	t.Cleanup(func() { a.Close() })
	cust := "queuerefused-" + randomHex(4)
	mustCredit(t, a, cust, c("1000"))
	mustReserve(t, a, cust, "h1", c("100"), time.Minute)
	if a.Stats().Lent != 1 {
		t.Fatalf("h1 was not lent: %+v", a.Stats())
	}
	// The sync that carries h1's close reads h1's record: a malformed
	// one fails the script, every time.
	if err := rdb.HSet(ctx, "tollgate:{"+cust+"}:holds", "h1", "x garbage").Err(); err != nil {
		t.Fatal(err)
	}
	// Mended before Close, which would otherwise retry for 5s.
	t.Cleanup(func() { rdb.HDel(ctx, "tollgate:{"+cust+"}:holds", "h1") })
	err := queueFailing(t, a, newQueued(), cust, "h1", c("40"))
	if err == nil || errors.Is(err, ledger.ErrSettleQueued) || !strings.Contains(err.Error(), "malformed hold h1") {
		t.Fatalf("Settle cut short while every sync is refused: %v; want the refusal, not ErrSettleQueued", err)
	}
}

// queueFailing queues the settlement of lent hold id for amount while
// every sync fails, waits for done to report the failure, and returns
// what a Settle of the hold cut short after 50ms returns.
func queueFailing(t *testing.T, a *ledger.LeaseStore, q *queued, customer, id string, amount money.Micros) error {
	t.Helper()
	if !a.QueueSettle(customer, id, amount, ledger.Charge{Reference: id}, q.done) {
		t.Fatal("QueueSettle of a lent hold: not queued")
	}
	if r := q.wait(t); r.err == nil {
		t.Fatalf("done got %+v with no error while every sync fails", r.e)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := a.Settle(ctx, customer, id, amount, ledger.Charge{Reference: id})
	return err
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

// testQueueSettle (conformance, for the stores that queue settlements):
// QueueSettle of a live hold charges it once and hands done what Settle
// would return, the same entry a later Settle repeats; a hold that is
// unknown or already settled is not queued, and Settle answers for it.
func testQueueSettle(t *testing.T, e *env) {
	q, ok := e.s.(ledger.SettleQueuer)
	if !ok {
		t.Skip("this store does not queue settlements")
	}
	cust := e.customer("queued")
	mustCredit(t, e.s, cust, c("1000"))
	mustReserve(t, e.s, cust, "h1", c("100"), time.Minute)
	mustReserve(t, e.s, cust, "h2", c("100"), time.Minute)
	done := newQueued()
	ch := ledger.Charge{Reference: "h1", Route: "/v1/chat/completions", Model: "gpt-4o"}
	if !q.QueueSettle(cust, "h1", c("30"), ch, done.done) {
		t.Fatal("QueueSettle of a live hold: not queued")
	}
	r := done.wait(t)
	if r.err != nil || r.e.ID == "" || r.e.Kind != ledger.KindCharge || r.e.Amount != -c("30") || r.e.BalanceAfter != c("970") ||
		r.e.Reference != "h1" || r.e.Model != "gpt-4o" || r.e.Route != ch.Route {
		t.Fatalf("done got %+v, %v; want the charge of 30, balance after 970", r.e, r.err)
	}
	again, err := e.s.Settle(ctx, cust, "h1", c("30"), ch)
	if err != nil || again != r.e {
		t.Errorf("Settle after QueueSettle: %+v, %v; want done's entry %+v", again, err, r.e)
	}
	for _, id := range []string{"nope", "h1"} {
		if q.QueueSettle(cust, id, c("1"), ledger.Charge{Reference: id}, done.done) {
			t.Errorf("QueueSettle of %s, not a live hold: queued", id)
		}
	}
	// The other way, the same kind of entry.
	e2, err := e.s.Settle(ctx, cust, "h2", c("20"), ledger.Charge{Reference: "h2", Route: ch.Route, Model: "gpt-4o"})
	if err != nil || e2.Amount != -c("20") || e2.BalanceAfter != c("950") {
		t.Fatalf("Settle of h2: %+v, %v", e2, err)
	}
	if n := done.calls.Load(); n != 1 {
		t.Errorf("done ran %d times, want once", n)
	}
	if a := mustAccount(t, e.s, cust); a.Balance != c("950") || a.Reserved != 0 {
		t.Errorf("balance %s reserved %s; want 950 and 0", a.Balance, a.Reserved)
	}
}

// TestBoltQueuedSettlementCommittedByClose: a settlement queued while
// the embedded store waits out its commit gap is committed by Close,
// done hears so, and the charge is in the file when it is opened again;
// after Close nothing is queued.
func TestBoltQueuedSettlementCommittedByClose(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledger.db")
	s, err := ledger.OpenBolt(path, ledger.Options{})
	if err != nil {
		t.Fatal(err)
	}
	cust := "closing-" + randomHex(4)
	mustCredit(t, s, cust, c("100"))
	for _, id := range []string{"h1", "h2", "h3"} {
		mustReserve(t, s, cust, id, c("10"), time.Minute)
	}
	// h1's commit starts the gap; h2 waits it out, and Close comes first.
	if _, err := s.Settle(context.Background(), cust, "h1", c("1"), ledger.Charge{Reference: "h1"}); err != nil {
		t.Fatal(err)
	}
	done := newQueued()
	if !s.QueueSettle(cust, "h2", c("2"), ledger.Charge{Reference: "h2"}, done.done) {
		t.Fatal("QueueSettle of a live hold: not queued")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if r := done.wait(t); r.err != nil || r.e.Amount != -c("2") {
		t.Fatalf("done got %+v, %v; want the charge of 2", r.e, r.err)
	}
	if s.QueueSettle(cust, "h3", c("2"), ledger.Charge{Reference: "h3"}, done.done) {
		t.Error("QueueSettle of a live hold on a closed store: queued")
	}
	s, err = ledger.OpenBolt(path, ledger.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if a := mustAccount(t, s, cust); a.Balance != c("97") {
		t.Errorf("balance %s after reopening; want 97: both charges", a.Balance)
	}
	checkInvariants(t, s, cust)
}

// TestBoltQueuedSettlementBesideLotExpiry: a Reserve that finds a lot due
// holds the customer's mutex while its expiry commits; a queued
// settlement of the same customer committed with it needs that mutex to
// finish. Both finish (its continuation does not run on the writer the
// Reserve waits for).
func TestBoltQueuedSettlementBesideLotExpiry(t *testing.T) {
	clock := newFakeClock()
	s, err := ledger.OpenBolt(filepath.Join(t.TempDir(), "ledger.db"), ledger.Options{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	bg := context.Background()
	cust := "lotdue-" + randomHex(4)
	mustCredit(t, s, cust, c("100"))
	if _, err := s.Credit(bg, ledger.Credit{Customer: cust, Amount: c("50"), Kind: ledger.KindGrant, Key: "expiring", ExpiresAt: clock.Now().Add(time.Minute)}); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"h0", "h1"} {
		mustReserve(t, s, cust, id, c("10"), time.Hour)
	}
	// h0's commit starts the gap, so that h1 waits in the queue.
	if _, err := s.Settle(bg, cust, "h0", c("1"), ledger.Charge{Reference: "h0"}); err != nil {
		t.Fatal(err)
	}
	done := newQueued()
	if !s.QueueSettle(cust, "h1", c("2"), ledger.Charge{Reference: "h1"}, done.done) {
		t.Fatal("QueueSettle of a live hold: not queued")
	}
	clock.Advance(2 * time.Minute) // the lot of 50 is due
	reserved := make(chan error, 1)
	go func() { reserved <- s.Reserve(bg, cust, "h2", c("10"), time.Hour) }()
	select {
	case err := <-reserved:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Reserve did not return within 5s: deadlocked with the queued settlement")
	}
	if r := done.wait(t); r.err != nil {
		t.Fatal(r.err)
	}
	// The charges burn the expiring lot first: 150 - 3, and the 47 left
	// of that lot expire.
	if a := mustAccount(t, s, cust); a.Balance != c("100") || a.Reserved != c("10") {
		t.Errorf("balance %s reserved %s; want 100 and 10", a.Balance, a.Reserved)
	}
	checkInvariants(t, s, cust)
}

// TestBoltSettlingHoldCountsUntilCharged: while a settlement waits for
// its commit (the embedded store's settleGap), its hold keeps counting —
// past its expiry too, and for its charge where that is larger than the
// hold — so that a reservation meanwhile cannot spend what the charge
// takes. (Found by a reader: the hold stopped counting at its expiry,
// and counted only its amount, so B was admitted and available ended at
// -100 and -50.)
func TestBoltSettlingHoldCountsUntilCharged(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name         string
		hold, charge money.Micros
		expire       bool // the hold expires while its settlement waits
		wantBalance  money.Micros
	}{
		{"expires while its charge waits", c("100"), c("100"), true, 0},
		{"charged above its hold", c("10"), c("60"), false, c("40")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock := newFakeClock()
			s, err := ledger.OpenBolt(filepath.Join(t.TempDir(), "bolt.db"), ledger.Options{Now: clock.Now})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			cust := "settling-" + randomHex(4)
			mustCredit(t, s, cust, c("101"))
			// A settlement just committed: the next waits out the gap.
			mustReserve(t, s, cust, "h0", c("1"), time.Hour)
			if _, err := s.Settle(ctx, cust, "h0", c("1"), ledger.Charge{Reference: "h0"}); err != nil {
				t.Fatal(err)
			}
			mustReserve(t, s, cust, "a", tc.hold, time.Minute)
			q := newQueued()
			if !s.QueueSettle(cust, "a", tc.charge, ledger.Charge{Reference: "a"}, q.done) {
				t.Fatal("QueueSettle of a live hold: not queued")
			}
			if tc.expire {
				clock.Advance(2 * time.Minute)
			}
			want := c("100") - tc.charge // what is available once a's charge is in
			errB := s.Reserve(ctx, cust, "b", want+1, time.Hour)
			if r := q.wait(t); r.err != nil {
				t.Fatal(r.err)
			}
			if errB == nil {
				t.Errorf("b reserved %s while a's charge of %s was on its way; only %s was left", want+1, tc.charge, want)
			}
			a, err := s.Account(ctx, cust)
			if err != nil {
				t.Fatal(err)
			}
			if a.Balance != tc.wantBalance || a.Available < 0 {
				t.Errorf("balance %s, available %s; want %s and nothing overspent", a.Balance, a.Available, tc.wantBalance)
			}
		})
	}
}
