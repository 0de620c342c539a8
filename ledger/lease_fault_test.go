package ledger_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tollgate-dev/tollgate/internal/redistest"
	"github.com/tollgate-dev/tollgate/ledger"
	"github.com/tollgate-dev/tollgate/money"
)

// leaseFault is a go-redis hook on one replica's client that delays the
// reply of its next lease sync, loses it (the script ran; the caller sees
// a timeout), or fails every sync.
type leaseFault struct {
	delay   atomic.Int64 // ns, for the next sync only
	lose    atomic.Bool  // the next sync only
	failing atomic.Bool
	hit     chan struct{} // a delayed or lost sync has run
}

func newLeaseFault() *leaseFault { return &leaseFault{hit: make(chan struct{}, 1)} }

func (h *leaseFault) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *leaseFault) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		for _, cmd := range cmds {
			if ledger.IsLeaseSync(cmd) && (h.failing.Load() || h.delay.Load() > 0 || h.lose.Load()) {
				// One at a time through ProcessHook's logic.
				for _, c := range cmds {
					_ = h.ProcessHook(func(ctx context.Context, c redis.Cmder) error { return next(ctx, []redis.Cmder{c}) })(ctx, c)
				}
				return nil
			}
		}
		return next(ctx, cmds)
	}
}

func (h *leaseFault) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if !ledger.IsLeaseSync(cmd) {
			return next(ctx, cmd)
		}
		if h.failing.Load() {
			cmd.SetErr(&net.OpError{Op: "read", Net: "tcp", Err: errors.New("injected")})
			return cmd.Err()
		}
		err := next(ctx, cmd)
		if d := h.delay.Swap(0); d > 0 {
			h.hit <- struct{}{}
			time.Sleep(time.Duration(d)) // the script ran; its reply comes late
		}
		if h.lose.Swap(false) {
			cmd.SetErr(context.DeadlineExceeded) // the script ran; its reply is lost
			h.hit <- struct{}{}
			return cmd.Err()
		}
		return err
	}
}

// faultyReplica is a LeaseStore whose lease syncs h disturbs.
func faultyReplica(t *testing.T, addr string, h *leaseFault, opts ledger.Options, lo ledger.LeaseOptions) *ledger.LeaseStore {
	client := redis.NewClient(&redis.Options{Addr: addr})
	client.AddHook(h)
	s := ledger.NewLeaseStore(client, opts, lo)
	t.Cleanup(func() { s.Close() })
	return s
}

// racedByLateSync: replica A leases; B is refused, which recalls A's
// lease; A's sync that cuts it comes back late or never, and meanwhile A
// and B both reserve, A within what it may lend while the sync is out,
// B more than Redis would show were A's lease cut to what A used. Whatever each is granted, settling every grant in
// full must not take the balance below zero.
func racedByLateSync(t *testing.T, disturb func(*leaseFault)) {
	ctx := context.Background()
	srv := redistest.Start(t)
	h := newLeaseFault()
	a := faultyReplica(t, srv.Addr, h, ledger.Options{}, ledger.LeaseOptions{MinRequests: -1, Share: 100, FlushInterval: 100 * time.Millisecond})
	b := ledger.NewRedisStore(redis.NewClient(&redis.Options{Addr: srv.Addr}), ledger.Options{})
	t.Cleanup(func() { b.Close() })
	cust := "late-" + randomHex(4)
	mustCredit(t, b, cust, c("1000"))
	mustReserve(t, a, cust, "a0", c("100"), time.Minute)
	if a.Stats().Lent == 0 {
		t.Fatalf("A lent nothing: %+v", a.Stats())
	}
	if err := b.Reserve(ctx, cust, "b0", c("700"), time.Minute); !errors.Is(err, ledger.ErrInsufficientCredits) {
		t.Fatalf("B's 700 while A leases everything: %v; want refused (and A's lease recalled)", err)
	}
	disturb(h)
	<-h.hit
	granted := map[string]ledger.Store{"a0": a}
	// a1 fits in what A may lend while its sync is out; b1 fits in
	// what Redis shows available if A's lease were cut to a0 alone.
	if err := a.Reserve(ctx, cust, "a1", c("150"), time.Minute); err == nil {
		granted["a1"] = a
	} else if !errors.Is(err, ledger.ErrInsufficientCredits) {
		t.Fatal(err)
	}
	if err := b.Reserve(ctx, cust, "b1", c("850"), time.Minute); err == nil {
		granted["b1"] = b
	} else if !errors.Is(err, ledger.ErrInsufficientCredits) {
		t.Fatal(err)
	}
	amounts := map[string]money.Micros{"a0": c("100"), "a1": c("150"), "b1": c("850")}
	for id, s := range granted {
		if _, err := s.Settle(ctx, cust, id, amounts[id], ledger.Charge{Reference: id}); err != nil {
			t.Fatal(err)
		}
	}
	if acct := mustAccount(t, b, cust); acct.Balance < 0 {
		t.Errorf("granted %v on a balance of 1000: the customer overspent, balance %s", granted, acct.Balance)
	}
	checkInvariants(t, b, cust)
}

// TestLeaseLendsOnlyWhatASyncKeeps: while a sync that may cut the lease
// is on its way, the replica lends only within the allowance the sync
// keeps whatever it decides.
func TestLeaseLendsOnlyWhatASyncKeeps(t *testing.T) {
	racedByLateSync(t, func(h *leaseFault) { h.delay.Store(int64(150 * time.Millisecond)) })
}

// TestLeaseLendsNothingAfterALostReply: a sync whose reply was lost may
// have cut the lease; nothing is lent until a sync says what it is.
func TestLeaseLendsNothingAfterALostReply(t *testing.T) {
	racedByLateSync(t, func(h *leaseFault) { h.lose.Store(true) })
}

// TestLeaseRetakenAfterExpiry: a lease that expired in Redis while its
// replica could not sync, and was taken again, is a live hold like any
// other: when the retention of its expired record ends nothing deletes
// it, and reserved stays the sum of the live holds.
func TestLeaseRetakenAfterExpiry(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t)
	h := newLeaseFault()
	opts := ledger.Options{Retention: 500 * time.Millisecond}
	a := faultyReplica(t, srv.Addr, h, opts, ledger.LeaseOptions{MinRequests: -1, Share: 50, TTL: 300 * time.Millisecond, FlushInterval: 20 * time.Millisecond, Idle: time.Hour})
	b := ledger.NewRedisStore(redis.NewClient(&redis.Options{Addr: srv.Addr}), opts)
	t.Cleanup(func() { b.Close() })
	cust := "retaken-" + randomHex(4)
	mustCredit(t, b, cust, c("1000"))
	mustReserve(t, a, cust, "a0", c("10"), time.Hour)
	h.failing.Store(true) // past the lease's ttl: it expires in Redis
	time.Sleep(500 * time.Millisecond)
	h.failing.Store(false)
	for i := range 20 { // busy: the lease is taken again, and lives past the retention
		if err := a.Reserve(ctx, cust, fmt.Sprintf("k%d", i), c("1"), time.Hour); err != nil && !errors.Is(err, ledger.ErrInsufficientCredits) {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, err := a.Settle(ctx, cust, "a0", c("10"), ledger.Charge{Reference: "a0"}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	// The replica still syncs every flush interval, and a sync between
	// the two reads would set them apart: read until the account reads
	// the same on both sides of the holds.
	for try := 0; ; try++ {
		acct := mustAccount(t, b, cust)
		live := liveHolds(t, b, cust)
		if again := mustAccount(t, b, cust); again.Reserved != acct.Reserved && try < 100 {
			continue
		}
		if acct.Reserved != live {
			t.Fatalf("reserved %s, live holds %s: a lease's amount was left in reserved", acct.Reserved, live)
		}
		return
	}
}

// liveHolds sums the live holds Redis keeps for cust, leases included.
func liveHolds(t *testing.T, s *ledger.RedisStore, cust string) money.Micros {
	t.Helper()
	holds, err := s.RawClient().HGetAll(context.Background(), ledger.CustomerKeys(cust)[1]).Result()
	if err != nil {
		t.Fatal(err)
	}
	var sum money.Micros
	for _, v := range holds {
		var amount int64
		var tag string
		if _, err := fmt.Sscanf(v, "%d %s", &amount, &tag); err == nil {
			sum += money.Micros(amount)
		}
	}
	return sum
}

// TestLeaseRefusalIsNotDepletion: a refusal that only unused leases
// cause recalls them and is retried; it does not announce
// balance.depleted, which the customer's real first 402 must still do.
func TestLeaseRefusalIsNotDepletion(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t)
	opts := ledger.Options{Events: &ledger.EventOptions{}}
	lo := ledger.LeaseOptions{MinRequests: -1, Share: 50, FlushInterval: 20 * time.Millisecond}
	a := ledger.NewLeaseStore(redis.NewClient(&redis.Options{Addr: srv.Addr}), opts, lo)
	t.Cleanup(func() { a.Close() })
	b := ledger.NewLeaseStore(redis.NewClient(&redis.Options{Addr: srv.Addr}), opts, lo)
	t.Cleanup(func() { b.Close() })
	cust := "depleted-" + randomHex(4)
	mustCredit(t, a, cust, c("1000"))
	mustReserve(t, a, cust, "a0", c("100"), time.Minute)
	if _, err := b.ReserveAvailable(ctx, cust, "b1", c("800"), time.Minute); err != nil {
		t.Fatalf("b1: %v", err)
	}
	if hasEvent(t, a, cust, ledger.EventBalanceDepleted) {
		t.Fatal("balance.depleted for a refusal that leases caused")
	}
	// The real one is still announced.
	if _, err := b.ReserveAvailable(ctx, cust, "b2", c("500"), time.Minute); !errors.Is(err, ledger.ErrInsufficientCredits) {
		t.Fatalf("b2: %v", err)
	}
	if !hasEvent(t, a, cust, ledger.EventBalanceDepleted) {
		t.Fatal("no balance.depleted for the first real refusal")
	}
}

// hasEvent moves the pending events of s's Redis and reports whether
// the log holds one of typ for cust.
func hasEvent(t *testing.T, s ledger.Outbox, cust string, typ ledger.EventType) bool {
	t.Helper()
	if _, err := s.MoveEvents(context.Background(), true); err != nil {
		t.Fatal(err)
	}
	p, err := s.Events(context.Background(), 0, ledger.MaxPageSize)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range p.Events {
		if e.Customer == cust && e.Type == typ {
			return true
		}
	}
	return false
}

// deferHook holds back the first lease sync that pick accepts (nil: the
// first give-back, target == in use) once armed: the caller sees a lost
// reply, and the script is executed later by the test, if at all, as a
// Redis stall that reorders it after the next sync would.
type deferHook struct {
	armed atomic.Bool
	pick  func(target, inUse string) bool
	args  chan []any
}

func (h *deferHook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *deferHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		for _, cmd := range cmds {
			if h.take(cmd) {
				cmd.SetErr(context.DeadlineExceeded)
				return cmd.Err()
			}
		}
		return next(ctx, cmds)
	}
}
func (h *deferHook) take(cmd redis.Cmder) bool {
	if !h.armed.Load() || !ledger.IsLeaseSync(cmd) {
		return false
	}
	a := cmd.Args()
	// evalsha sha 10 keys... leaseID now retention expiry target inUse
	if len(a) < 19 {
		return false
	}
	target, inUse := fmt.Sprint(a[17]), fmt.Sprint(a[18])
	if h.pick == nil && target != inUse || h.pick != nil && !h.pick(target, inUse) {
		return false
	}
	h.armed.Store(false)
	h.args <- append([]any(nil), a...)
	return true
}
func (h *deferHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if h.take(cmd) {
			cmd.SetErr(context.DeadlineExceeded)
			return cmd.Err()
		}
		return next(ctx, cmd)
	}
}

// deferredReplica starts a Redis and on it a lease replica whose syncs
// pass h, a plain store b and a raw client (to run a held-back sync), and
// a customer with 1000 credits of which the replica holds "a0" (100).
func deferredReplica(t *testing.T, h *deferHook, lo ledger.LeaseOptions, prefix string) (a *ledger.LeaseStore, b *ledger.RedisStore, raw *redis.Client, cust string) {
	t.Helper()
	srv := redistest.Start(t)
	client := redis.NewClient(&redis.Options{Addr: srv.Addr})
	client.AddHook(h)
	a = ledger.NewLeaseStore(client, ledger.Options{}, lo)
	t.Cleanup(func() { a.Close() })
	raw = redis.NewClient(&redis.Options{Addr: srv.Addr})
	b = ledger.NewRedisStore(redis.NewClient(&redis.Options{Addr: srv.Addr}), ledger.Options{})
	t.Cleanup(func() { b.Close(); raw.Close() })
	cust = prefix + randomHex(4)
	mustCredit(t, b, cust, c("1000"))
	mustReserve(t, a, cust, "a0", c("100"), time.Minute)
	return a, b, raw, cust
}

// TestLeaseSyncAppliedLate: a give-back sync whose reply was given up on
// and which Redis runs only after the next sync (a stall reorders them)
// leaves the lease alone: it must not cut it under holds lent since.
func TestLeaseSyncAppliedLate(t *testing.T) {
	h := &deferHook{args: make(chan []any, 1)}
	a, b, raw, cust := deferredReplica(t, h, ledger.LeaseOptions{MinRequests: -1, Share: 100, FlushInterval: 500 * time.Millisecond}, "stale-")
	h.armed.Store(true)
	if err := a.Reserve(ctx, cust, "aBig", c("1050"), time.Minute); err == nil {
		t.Fatal("aBig granted")
	}
	var stale []any
	select {
	case stale = <-h.args:
	default:
		t.Fatal("no give-back sync was held back")
	}
	// The next sync (tick) runs normally.
	s0 := a.Stats().Syncs
	for a.Stats().Syncs == s0 {
		time.Sleep(5 * time.Millisecond)
	}
	mustReserve(t, a, cust, "a1", c("100"), time.Minute)
	// Now Redis runs the stale sync.
	if err := raw.Do(ctx, stale...).Err(); err != nil {
		t.Fatal(err)
	}
	granted := []string{"a0", "a1"}
	if err := b.Reserve(ctx, cust, "b1", c("850"), time.Minute); err == nil {
		granted = append(granted, "b1")
		mustSettle(t, b, cust, "b1", c("850"))
	}
	mustSettle(t, a, cust, "a0", c("100"))
	mustSettle(t, a, cust, "a1", c("100"))
	if acct := mustAccount(t, b, cust); acct.Balance < 0 {
		t.Errorf("granted %v on a balance of 1000: overspent, balance %s", granted, acct.Balance)
	}
}

// TestLeaseLateSyncAfterGiveBack: a sync that would grow the lease is
// given up on, the lease is given back (its record deleted), and only
// then does Redis run the stale sync. Without a record to compare its
// number with, it would take a lease no replica knows of, and the
// customer would be refused credits nobody uses until the lease's ttl;
// a give-back within a ttl of a failed sync leaves a marker instead,
// whether it is the first sync to succeed after the failure or a later
// one (the lease kept a while for a request still open).
func TestLeaseLateSyncAfterGiveBack(t *testing.T) {
	for _, openWhileSynced := range []bool{false, true} {
		t.Run(fmt.Sprintf("open=%v", openWhileSynced), func(t *testing.T) {
			h := &deferHook{args: make(chan []any, 1), pick: func(target, inUse string) bool { return target != inUse }}
			a, b, raw, cust := deferredReplica(t, h, ledger.LeaseOptions{MinRequests: -1, Share: 50, FlushInterval: 20 * time.Millisecond, Idle: 200 * time.Millisecond}, "lategiveback-")
			h.armed.Store(true)
			var stale []any
			select {
			case stale = <-h.args:
			case <-time.After(5 * time.Second):
				t.Fatal("no sync growing the lease was held back")
			}
			if openWhileSynced {
				// a0 is still open when the next sync succeeds: the
				// lease stays, numbered by that sync, until the customer
				// goes quiet.
				s0 := a.Stats().Syncs
				for a.Stats().Syncs == s0 {
					time.Sleep(5 * time.Millisecond)
				}
				if acct := mustAccount(t, b, cust); acct.Reserved == 0 {
					t.Fatalf("no lease after the sync: %+v", acct)
				}
			}
			if err := a.Release(ctx, cust, "a0"); err != nil {
				t.Fatal(err)
			}
			// The give-back: nothing in use, so the next ticks leave no
			// lease.
			deadline := time.Now().Add(5 * time.Second)
			for mustAccount(t, b, cust).Reserved != 0 {
				if time.Now().After(deadline) {
					t.Fatalf("the lease was not given back: %+v", mustAccount(t, b, cust))
				}
				time.Sleep(5 * time.Millisecond)
			}
			if err := raw.Do(ctx, stale...).Err(); err != nil {
				t.Fatal(err)
			}
			if acct := mustAccount(t, b, cust); acct.Reserved != 0 {
				t.Errorf("after the stale sync, with nothing in use anywhere: %+v", acct)
			}
			mustReserve(t, b, cust, "b1", c("1000"), time.Minute)
		})
	}
}

// TestLeaseFailedGiveBackIsRetried: the give-back sync of a customer gone
// quiet fails without reaching Redis. The replica cannot know what lease
// Redis holds, so it must not drop the customer as one without a lease:
// it syncs again until a sync says, and the lease comes back long before
// its ttl.
func TestLeaseFailedGiveBackIsRetried(t *testing.T) {
	h := &deferHook{args: make(chan []any, 1)}
	a, b, _, cust := deferredReplica(t, h, ledger.LeaseOptions{MinRequests: -1, Share: 50, FlushInterval: 20 * time.Millisecond, Idle: 200 * time.Millisecond, TTL: time.Minute}, "failedgiveback-")
	if err := a.Release(ctx, cust, "a0"); err != nil {
		t.Fatal(err)
	}
	h.armed.Store(true)
	select {
	case <-h.args: // dropped: it never reaches Redis
	case <-time.After(5 * time.Second):
		t.Fatal("no give-back sync")
	}
	deadline := time.Now().Add(5 * time.Second)
	for mustAccount(t, b, cust).Reserved != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("5 s after a failed give-back, with nothing in use: %+v", mustAccount(t, b, cust))
		}
		time.Sleep(10 * time.Millisecond)
	}
	mustReserve(t, b, cust, "b1", c("1000"), time.Minute)
}

// TestLeaseCloseRetriesAFailedGiveBack: Close gives every lease back;
// when its give-back sync fails, it syncs again (within its bound)
// rather than leave the lease held in Redis until its ttl.
func TestLeaseCloseRetriesAFailedGiveBack(t *testing.T) {
	h := &deferHook{args: make(chan []any, 1)}
	a, b, _, cust := deferredReplica(t, h, ledger.LeaseOptions{MinRequests: -1, Share: 50, FlushInterval: 20 * time.Millisecond, Idle: time.Hour, TTL: time.Minute}, "closegiveback-")
	if err := a.Release(ctx, cust, "a0"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for mustAccount(t, b, cust).Reserved == 0 { // the lease, kept while not idle
		if time.Now().After(deadline) {
			t.Fatal("no lease")
		}
		time.Sleep(5 * time.Millisecond)
	}
	h.armed.Store(true) // Close's give-back fails
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-h.args:
	default:
		t.Fatal("no give-back sync was held back")
	}
	if acct := mustAccount(t, b, cust); acct.Reserved != 0 {
		t.Errorf("after Close, with nothing in use: %+v", acct)
	}
}

// TestLeaseConcurrentDuplicateHold: of two concurrent reservations of
// one hold id, at most one is granted.
func TestLeaseConcurrentDuplicateHold(t *testing.T) {
	rs := replicas(t, 1, ledger.LeaseOptions{MinRequests: -1, Share: 100, FlushInterval: 20 * time.Millisecond})
	a := rs[0]
	bad := 0
	for i := range 20 {
		cust := "dup-" + strconv.Itoa(i) + randomHex(3)
		mustCredit(t, a, cust, c("1000"))
		var wg sync.WaitGroup
		var ok atomic.Int32
		start := make(chan struct{})
		for range 2 {
			wg.Go(func() {
				<-start
				err := a.Reserve(ctx, cust, "dup", c("100"), time.Minute)
				if err == nil {
					ok.Add(1)
				} else if !errors.Is(err, ledger.ErrDuplicateHold) {
					t.Error(err)
				}
			})
		}
		close(start)
		wg.Wait()
		if ok.Load() > 1 {
			bad++
		}
	}
	if bad > 0 {
		t.Errorf("%d/20 trials granted the same hold id twice", bad)
	}
}

// TestLeaseSuspendedCustomerLeavesTheTick: a suspended customer without
// a lease or holds is not synced every tick while it stays suspended.
func TestLeaseSuspendedCustomerLeavesTheTick(t *testing.T) {
	rs := replicas(t, 1, ledger.LeaseOptions{MinRequests: -1, Share: 100, FlushInterval: 10 * time.Millisecond, Idle: 50 * time.Millisecond})
	a := rs[0]
	cust := "susp-" + randomHex(4)
	mustCredit(t, a, cust, c("1000"))
	mustReserve(t, a, cust, "h", c("100"), time.Minute)
	if err := a.Release(ctx, cust, "h"); err != nil {
		t.Fatal(err)
	}
	if err := a.Suspend(ctx, cust, "review"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	s1 := a.Stats().Syncs
	time.Sleep(500 * time.Millisecond)
	if d := a.Stats().Syncs - s1; d > 5 {
		t.Errorf("%d syncs in 500ms for one idle suspended customer without a lease", d)
	}
}

// slowCommand is a go-redis hook that delays, once armed, the next
// command naming id, a per-request hold on its way to Redis.
type slowCommand struct {
	id    string
	by    time.Duration
	armed atomic.Bool
}

func (h *slowCommand) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *slowCommand) names(cmd redis.Cmder) bool {
	for _, a := range cmd.Args() {
		if s, ok := a.(string); ok && s == h.id {
			return true
		}
	}
	return false
}

func (h *slowCommand) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if h.names(cmd) && h.armed.Swap(false) {
			time.Sleep(h.by)
		}
		return next(ctx, cmd)
	}
}

func (h *slowCommand) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		for _, cmd := range cmds {
			if h.names(cmd) && h.armed.Swap(false) {
				time.Sleep(h.by)
			}
		}
		return next(ctx, cmds)
	}
}

// TestLeaseTickKeepsWhatAReserveGaveBack: a Reserve the lease is too
// small for gives the lease's unused credits back, then reserves in
// Redis. The ticks that sync the lease meanwhile must not take them back:
// with a Share above 50 % the lease would regrow over the credits the
// request needs, and a request that fits in the balance be refused. The
// request's trip to Redis is slowed by many flush intervals, so that
// ticks surely run in between.
func TestLeaseTickKeepsWhatAReserveGaveBack(t *testing.T) {
	const flush = 5 * time.Millisecond
	srv := redistest.Start(t)
	slow := &slowCommand{id: "h2", by: 20 * flush}
	client := redis.NewClient(&redis.Options{Addr: srv.Addr})
	client.AddHook(slow)
	a := ledger.NewLeaseStore(client, ledger.Options{}, ledger.LeaseOptions{MinRequests: -1, Share: 80, FlushInterval: flush})
	t.Cleanup(func() { a.Close() })
	cust := "giveback-" + randomHex(4)
	mustCredit(t, a, cust, c("100"))
	mustReserve(t, a, cust, "h1", c("75"), time.Minute)
	if st := a.Stats(); st.Lent != 1 {
		t.Fatalf("h1 was not lent: %+v", st)
	}
	// 22 does not fit in the lease (80, 75 in use) and is too large for
	// one (80 % of 100 holds fewer than four such requests): the lease
	// goes back to 75 and Redis shows 25 available.
	slow.armed.Store(true)
	avail, err := a.ReserveAvailable(context.Background(), cust, "h2", c("22"), time.Minute)
	if err != nil {
		t.Fatalf("22 of the 25 credits left: %v; want reserved", err)
	}
	if avail != c("3") {
		t.Errorf("available after h2 = %s, want 3", avail)
	}
	if slow.armed.Load() {
		t.Fatal("h2 never went to Redis: the test did not test the give-back")
	}
	checkInvariants(t, a, cust)
}
