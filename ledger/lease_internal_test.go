package ledger

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/tollgate-dev/tollgate/internal/redistest"
	"github.com/tollgate-dev/tollgate/money"
)

// TestLeaseCustomerDroppedWhileReserving: the tick looks at a customer
// while two reservations that came since wait for its sync lock: it must
// not drop it under them, and whatever they are granted settles.
func TestLeaseCustomerDroppedWhileReserving(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t)
	s := NewLeaseStore(redis.NewClient(&redis.Options{Addr: srv.Addr}), Options{}, LeaseOptions{MinRequests: -1, Share: 100, FlushInterval: 50 * time.Millisecond, Idle: time.Millisecond})
	t.Cleanup(func() { s.Close() })
	cust := "orphan-" + newToken()[:6]
	if _, err := s.Credit(ctx, Credit{Customer: cust, Amount: money.MustParse("1000"), Kind: KindGrant, Key: "k"}); err != nil {
		t.Fatal(err)
	}
	c := s.customer(cust)
	c.syncMu <- struct{}{} // a sync under way
	done := make(chan error, 2)
	go func() { done <- s.Reserve(ctx, cust, "h1", money.MustParse("100"), time.Minute) }()
	go func() { done <- s.Reserve(ctx, cust, "h2", money.MustParse("100"), time.Minute) }()
	time.Sleep(20 * time.Millisecond) // both wait for the sync, having decided to take a lease
	s.syncAll(ctx, false)
	c.unlockSync()
	for range 2 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	for _, h := range []string{"h1", "h2"} {
		if _, err := s.Settle(ctx, cust, h, money.MustParse("100"), Charge{Reference: h}); err != nil {
			t.Errorf("settle of granted hold %s: %v", h, err)
		}
	}
}

// TestLeaseRecentIDsBounded: a lease remembers the last maxLeaseRecent
// closed ids, oldest forgotten first, and none past leaseRecentKeep.
func TestLeaseRecentIDsBounded(t *testing.T) {
	c := &leaseCustomer{recent: map[string]int64{}}
	const far = int64(1) << 60 // the retention never ends in this test
	for i := range 3 * maxLeaseRecent {
		c.remember(fmt.Sprintf("h%d", i), far, 1000)
	}
	if len(c.recent) != maxLeaseRecent || len(c.recentQ) != maxLeaseRecent {
		t.Fatalf("remembers %d ids (queue %d), want %d", len(c.recent), len(c.recentQ), maxLeaseRecent)
	}
	for _, i := range []int{0, 2*maxLeaseRecent - 1} {
		if c.used(fmt.Sprintf("h%d", i), 1000) {
			t.Errorf("h%d is still remembered, beyond the newest %d", i, maxLeaseRecent)
		}
	}
	for _, i := range []int{2 * maxLeaseRecent, 3*maxLeaseRecent - 1} {
		if !c.used(fmt.Sprintf("h%d", i), 1000) {
			t.Errorf("h%d, among the newest %d, is forgotten", i, maxLeaseRecent)
		}
	}
	// Past the keep, one more id forgets every older one.
	c.remember("last", far, 1000+leaseRecentKeep.Milliseconds())
	if len(c.recent) != 1 || !c.used("last", 1000) {
		t.Fatalf("after the keep: remembers %d ids, want only the last", len(c.recent))
	}
}

// BenchmarkLeaseRemember: what remembering one closed id costs a lease
// whose queue is full (the steady state of a busy customer): constant,
// not a move of the whole queue.
func BenchmarkLeaseRemember(b *testing.B) {
	c := &leaseCustomer{recent: map[string]int64{}}
	ids := make([]string, 2*maxLeaseRecent)
	for i := range ids {
		ids[i] = fmt.Sprintf("tg_%032d", i)
	}
	for _, id := range ids[:maxLeaseRecent] {
		c.remember(id, 1<<60, 1000)
	}
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		c.remember(ids[i%len(ids)], 1<<60, 1000)
	}
}

// TestLeaseCloseFailsQueued: a settlement queued and never sent when the
// store's loop ends gets ErrStoreUnavailable from its done, once, and
// QueueSettle refuses from then on.
func TestLeaseCloseFailsQueued(t *testing.T) {
	srv := redistest.Start(t)
	s := NewLeaseStore(redis.NewClient(&redis.Options{Addr: srv.Addr}), Options{}, LeaseOptions{MinRequests: -1, Share: 100})
	t.Cleanup(func() { s.Close() })
	c := s.customer("closing-" + newToken()[:6])
	// The customer's sync lock keeps the store's ticks from sending the
	// made-up hold below to Redis.
	c.syncMu <- struct{}{}
	c.mu.Lock()
	c.live["h1"] = &leaseHold{amount: 10, expiry: time.Now().Add(time.Minute).UnixMilli()}
	c.mu.Unlock()
	errs := make(chan error, 2)
	if !s.QueueSettle(c.id, "h1", 5, Charge{Reference: "h1"}, func(_ Entry, err error) { errs <- err }) {
		t.Fatal("QueueSettle of a lent hold: not queued")
	}
	s.failQueued()
	s.failQueued()
	if err := <-errs; !errors.Is(err, ErrStoreUnavailable) {
		t.Fatalf("done got %v; want ErrStoreUnavailable", err)
	}
	select {
	case err := <-errs:
		t.Fatalf("done ran again, with %v", err)
	default:
	}
	c.mu.Lock()
	c.live["h2"] = &leaseHold{amount: 10, expiry: time.Now().Add(time.Minute).UnixMilli()}
	c.mu.Unlock()
	if s.QueueSettle(c.id, "h2", 5, Charge{Reference: "h2"}, func(Entry, error) {}) {
		t.Error("QueueSettle after failQueued: queued")
	}
	// The holds were made up here: nothing of them goes to Redis.
	c.mu.Lock()
	c.pending, c.open, c.live = nil, map[string]*leaseOp{}, map[string]*leaseHold{}
	c.mu.Unlock()
	c.unlockSync()
}

// TestLeaseChargesAtTheirTime: a lease sync applies each charge at the
// time it was made, as a Settle straight to Redis would: a lot that
// expired before a charge expires first (the charge becomes debt), one
// that expired after it still pays it. The customer's sync lock is held,
// so the ticks wait and each sync here is the test's, with the now a
// tick may bring: later than every charge, or older than the last one (a
// tick takes its time before it waits for the lock).
func TestLeaseChargesAtTheirTime(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t)
	var nowMs atomic.Int64
	t0 := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	nowMs.Store(t0.UnixMilli())
	clock := func() time.Time { return time.UnixMilli(nowMs.Load()).UTC() }
	s := NewLeaseStore(redis.NewClient(&redis.Options{Addr: srv.Addr}), Options{Now: clock}, LeaseOptions{MinRequests: -1, Share: 100, FlushInterval: MaxLeaseFlush})
	t.Cleanup(func() { s.Close() })
	expiry := t0.Add(time.Minute)
	c10 := money.MustParse("10")
	for _, tc := range []struct {
		name   string
		syncAt time.Time
		want   money.Micros // the balance after both charges and the expiry
	}{
		// before: 1 from the lot (9 left, then expired); after: 5 of debt.
		{"sync later than both charges", expiry.Add(10 * time.Second), money.MustParse("-5")},
		{"sync older than the last charge", expiry.Add(-30 * time.Second), money.MustParse("-5")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nowMs.Store(t0.UnixMilli())
			cust := "at-" + newToken()[:6]
			if _, err := s.Credit(ctx, Credit{Customer: cust, Amount: c10, Kind: KindGrant, Key: "promo", ExpiresAt: expiry}); err != nil {
				t.Fatal(err)
			}
			for _, h := range []string{"before", "after"} {
				if err := s.Reserve(ctx, cust, h, money.MustParse("4"), time.Hour); err != nil {
					t.Fatal(err)
				}
			}
			if st := s.Stats(); st.Lent < 2 {
				t.Fatalf("the holds were not lent: %+v", st)
			}
			c := s.customer(cust)
			c.syncMu <- struct{}{} // the ticks wait from here on
			defer c.unlockSync()
			charges := map[string]money.Micros{"before": money.MustParse("1"), "after": money.MustParse("5")}
			entries := make(chan Entry, 2)
			for _, q := range []struct {
				h  string
				at time.Time
			}{{"before", expiry.Add(-time.Millisecond)}, {"after", expiry.Add(time.Millisecond)}} {
				h := q.h
				nowMs.Store(q.at.UnixMilli())
				if !s.QueueSettle(cust, h, charges[h], Charge{Reference: h}, func(e Entry, err error) {
					if err != nil {
						t.Error(err)
					}
					entries <- e
				}) {
					t.Fatalf("%s not queued", h)
				}
			}
			if err := s.syncLocked(ctx, c, tc.syncAt.UnixMilli(), 0); err != nil {
				t.Fatal(err)
			}
			got := map[string]money.Micros{}
			for range 2 {
				e := <-entries
				got[e.Reference] = e.BalanceAfter
			}
			if got["before"] != money.MustParse("9") || got["after"] != tc.want {
				t.Errorf("balance after the charge made before the expiry %s, after it %s; want 9 and %s", got["before"], got["after"], tc.want)
			}
			nowMs.Store(expiry.Add(time.Hour).UnixMilli())
			acct, err := s.RedisStore.Account(ctx, cust)
			if err != nil {
				t.Fatal(err)
			}
			if acct.Balance != tc.want {
				t.Errorf("balance %s once everything is due, want %s", acct.Balance, tc.want)
			}
		})
	}
}

// TestLeaseSendsChargesBeforeItsOwnCalls: a call of this replica that
// reaches the customer's account in Redis (an account read, a credit, a
// sweep, reading lots or entries, a release, extension or settlement of
// a hold in Redis, a suspension or its lift) expires the lots due by its
// time; the charges this replica
// queued before a lot expired reach Redis first, so that the lot pays
// them. No tick runs during the test (an hour's flush interval): only
// the call can have sent the charge.
func TestLeaseSendsChargesBeforeItsOwnCalls(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t)
	var nowMs atomic.Int64
	t0 := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { return time.UnixMilli(nowMs.Load()).UTC() }
	// Events on: suspend.lua and lift.lua then read the account too.
	s := NewLeaseStore(redis.NewClient(&redis.Options{Addr: srv.Addr}), Options{Now: clock, Events: &EventOptions{}}, LeaseOptions{MinRequests: -1, Share: 50, FlushInterval: time.Hour})
	t.Cleanup(func() { s.Close() })
	expiry := t0.Add(time.Minute)
	for _, tc := range []struct {
		name string
		call func(cust string) error
		want money.Micros // the balance once the call and everything due ran
	}{
		{"account read", func(cust string) error { _, err := s.Account(ctx, cust); return err }, 0},
		{"credit", func(cust string) error {
			_, err := s.Credit(ctx, Credit{Customer: cust, Amount: money.MustParse("100"), Kind: KindTopup, Key: "pack"})
			return err
		}, money.MustParse("100")},
		{"sweep", func(string) error { _, err := s.Sweep(ctx); return err }, 0},
		// Found by a reader: these reached the account before the
		// queued charge, which then became debt.
		{"lots", func(cust string) error { _, err := s.Lots(ctx, cust); return err }, 0},
		{"entries", func(cust string) error { _, err := s.Entries(ctx, cust, "", 10); return err }, 0},
		{"release of a hold in Redis", func(cust string) error { return s.Release(ctx, cust, "r") }, 0},
		{"extend of a hold in Redis", func(cust string) error { return s.Extend(ctx, cust, "r", time.Hour) }, 0},
		{"settle of a hold in Redis", func(cust string) error { _, err := s.Settle(ctx, cust, "r", 0, Charge{Reference: "r"}); return err }, 0},
		{"suspend", func(cust string) error { return s.Suspend(ctx, cust, "fraud") }, 0},
		{"lift", func(cust string) error { return s.Lift(ctx, cust, "fraud") }, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nowMs.Store(t0.UnixMilli())
			cust := "own-" + newToken()[:6]
			if _, err := s.Credit(ctx, Credit{Customer: cust, Amount: money.MustParse("10"), Kind: KindGrant, Key: "promo", ExpiresAt: expiry}); err != nil {
				t.Fatal(err)
			}
			if err := s.Reserve(ctx, cust, "h", money.MustParse("4"), time.Hour); err != nil {
				t.Fatal(err)
			}
			// A hold in Redis, as a reservation the lease cannot serve
			// takes.
			if err := s.RedisStore.Reserve(ctx, cust, "r", money.MustParse("1"), 2*time.Hour); err != nil {
				t.Fatal(err)
			}
			nowMs.Store(expiry.Add(-time.Millisecond).UnixMilli())
			if !s.QueueSettle(cust, "h", money.MustParse("1"), Charge{Reference: "h"}, nil) {
				t.Fatal("h was not lent")
			}
			nowMs.Store(expiry.Add(time.Second).UnixMilli())
			if err := tc.call(cust); err != nil {
				t.Fatal(err)
			}
			c := s.customer(cust)
			if err := s.sync(ctx, c, unixMilli(s.now())); err != nil { // whatever is still queued
				t.Fatal(err)
			}
			acct, err := s.RedisStore.Account(ctx, cust)
			if err != nil {
				t.Fatal(err)
			}
			// The lot pays the charge of 1 made before its expiry, then
			// its 9 left expire.
			if acct.Balance != tc.want {
				t.Errorf("balance %s, want %s", acct.Balance, tc.want)
			}
		})
	}
}

// TestLeaseSyncOfManyCloses drives lease.lua directly with syncs as
// lease.go never sends them but a resend or a long outage may: 4,500
// closes in one call (more than one HMGET and one write of each kind
// carry, and more values than Lua's unpack takes at once), and hold ids
// that come twice in one call. Each close must be applied once, in
// order, as if it came alone: a settle whose id this very call already
// settled answers with that entry, one it released answers released,
// and a release of an id it settled changes nothing.
func TestLeaseSyncOfManyCloses(t *testing.T) {
	ctx := context.Background()
	rdb, rs, cust, keys := scriptCustomer(t, "many", money.MustParse("1000000"))
	now := time.Now().UnixMilli()
	retention := (35 * 24 * time.Hour).Milliseconds()
	type closeOp struct {
		kind, id string
		actual   int64
	}
	var closes []closeOp
	for i := range 4500 {
		closes = append(closes, closeOp{"s", fmt.Sprintf("h%04d", i), int64(i + 1)})
	}
	// Ids that come again later in the same call.
	closes = append(closes,
		closeOp{"s", "h0007", 999},                         // settled above: answers with entry 2+7
		closeOp{"r", "dup-r", 0}, closeOp{"s", "dup-r", 5}, // released, then a settle: released
		closeOp{"s", "dup-s", 11}, closeOp{"r", "dup-s", 0}, // settled, then a release: nothing
		closeOp{"s", "h4499", 1}, // the last of the first run, again
	)
	sync := func(seq int) []any {
		args := []any{"lease-x", now, retention, now + 10_000, 0, 0, 0, 25, 0, seq, 0, len(closes)}
		for _, c := range closes {
			body := ""
			if c.kind == "s" {
				body = chargeBody(Charge{Reference: c.id}, time.UnixMilli(now)).json()
			}
			args = append(args, c.kind, c.id, now, c.actual, body)
		}
		r, err := leaseScript.Run(ctx, rdb, keys, args...).Slice()
		if err != nil {
			t.Fatal(err)
		}
		if len(r) != leaseHead+3*len(closes) {
			t.Fatalf("reply of %d fields for %d closes", len(r), len(closes))
		}
		return r[leaseHead:]
	}
	// Entry 1 is the credit; the 4,500 settles are entries 2…4501, the
	// settle of dup-s entry 4502.
	var spent int64
	for i := range 4500 {
		spent += int64(i + 1)
	}
	spent += 11
	want := func(resent bool) [][3]any {
		var w [][3]any
		bal := int64(1_000_000_000_000)
		for i := range 4500 {
			bal -= int64(i + 1)
			if resent {
				w = append(w, [3]any{int64(1), int64(i + 2), nil})
			} else {
				w = append(w, [3]any{int64(0), int64(i + 2), bal})
			}
		}
		dupS := [3]any{int64(0), int64(4502), 1_000_000_000_000 - spent}
		if resent {
			dupS = [3]any{int64(1), int64(4502), nil}
		}
		return append(w,
			[3]any{int64(1), int64(9), nil},
			[3]any{int64(5), int64(0), ""}, [3]any{int64(2), int64(0), ""},
			dupS, [3]any{int64(5), int64(0), ""},
			[3]any{int64(1), int64(4501), nil},
		)
	}
	for round, resent := range []bool{false, true} {
		got := sync(round + 1)
		w := want(resent)
		if !resent {
			w[len(w)-5] = [3]any{int64(0), int64(0), ""} // the first release of dup-r is recorded
		}
		for i, c := range closes {
			code, seq, third := got[3*i], got[3*i+1], got[3*i+2]
			if code != w[i][0] || seq != w[i][1] || (w[i][2] != nil && third != w[i][2]) {
				t.Fatalf("round %d, close %d (%s %s): reply %v %v %v, want %v", round+1, i, c.kind, c.id, code, seq, third, w[i])
			}
			if w[i][2] == nil {
				if e, err := decodeEntry(cust, seq.(int64), third.(string)); err != nil || e.Reference != c.id {
					t.Fatalf("round %d, close %d (%s %s): entry %q: %+v, %v", round+1, i, c.kind, c.id, third, e, err)
				}
			}
		}
	}
	acct, err := rs.Account(ctx, cust)
	if err != nil {
		t.Fatal(err)
	}
	if want := money.Micros(1_000_000_000_000 - spent); acct.Balance != want {
		t.Fatalf("balance %s, want %s", acct.Balance, want)
	}
	if n := rdb.HLen(ctx, keys[4]).Val(); n != 4502 {
		t.Fatalf("%d entries, want 4502", n)
	}
	if n := rdb.ZCard(ctx, keys[3]).Val(); n != 4502 {
		t.Fatalf("%d closed holds to forget, want 4502", n)
	}
}

// TestLeaseSyncStoppedByCorruptData: a sync that meets a hold it cannot
// read stops with an error, keeping what it applied before it (Redis
// keeps a failing script's writes, so the account is saved with them).
// lease.go sends the same closes again with its next sync: each try must
// find the first charge applied, entry and settled record included, and
// charge it once.
func TestLeaseSyncStoppedByCorruptData(t *testing.T) {
	ctx := context.Background()
	rdb, rs, cust, keys := scriptCustomer(t, "corrupt", money.MustParse("1000"))
	if err := rs.Reserve(ctx, cust, "h1", money.MustParse("100"), time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := rdb.HSet(ctx, keys[1], "bad", "x garbage").Err(); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UnixMilli()
	body := chargeBody(Charge{Reference: "h1"}, time.UnixMilli(now)).json()
	for try := 1; try <= 3; try++ {
		err := leaseScript.Run(ctx, rdb, keys, "lease-x", now, (35 * 24 * time.Hour).Milliseconds(), now+10_000, 0, 0, 0, 25, 0, try, 0, 2,
			"s", "h1", now, int64(money.MustParse("50")), body,
			"s", "bad", now, 1, body).Err()
		if err == nil || !strings.Contains(err.Error(), "malformed hold bad") {
			t.Fatalf("try %d: %v, want the malformed hold reported", try, err)
		}
	}
	acct, err := rs.Account(ctx, cust)
	if err != nil {
		t.Fatal(err)
	}
	if acct.Balance != money.MustParse("950") || acct.Reserved != 0 {
		t.Errorf("after three tries: balance %s, reserved %s; want 950 and 0", acct.Balance, acct.Reserved)
	}
	page, err := rs.Entries(ctx, cust, "", 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Entries) != 2 || page.Entries[0].Reference != "h1" {
		t.Errorf("entries %+v; want the credit and one charge of h1", page.Entries)
	}
	if v := rdb.HGet(ctx, keys[1], "h1").Val(); !strings.HasPrefix(v, "s ") {
		t.Errorf("h1's record %q; want it settled", v)
	}
	if _, err := rdb.ZScore(ctx, keys[3], "h1").Result(); err != nil {
		t.Errorf("h1 in hold:forget: %v", err)
	}
}

// scriptCustomer starts a Redis and funds a new customer, named after
// prefix, with amount, for the tests that drive lease.lua directly: it
// returns a client of that Redis, a RedisStore on it, and the customer's
// id and keys.
func scriptCustomer(t *testing.T, prefix string, amount money.Micros) (*redis.Client, *RedisStore, string, []string) {
	t.Helper()
	srv := redistest.Start(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
	t.Cleanup(func() { rdb.Close() })
	rs := NewRedisStore(rdb, Options{})
	t.Cleanup(func() { rs.Close() })
	cust := prefix + "-" + newToken()[:6]
	if _, err := rs.Credit(context.Background(), Credit{Customer: cust, Amount: amount, Kind: KindGrant, Key: "fund"}); err != nil {
		t.Fatal(err)
	}
	return rdb, rs, cust, customerKeys(cust)
}

// TestLeaseScriptKeepsTheLayout drives lease.lua directly with random
// syncs of two leases of one customer — settles, releases and expiries
// of ids lent, reserved per request in Redis, already closed, or named
// twice in one call; calls of up to 1,100 closes across the script's
// chunk boundaries; late calls; charges into debt; the clock moving past
// hold, lot and closed-record expiries — between random credits,
// per-request reservations and sweeps, and after every call requires the
// invariants lua/lib.lua states for the customer's keys
// (checkRedisLayout), that the entries add up to the balance, and that
// no hold is charged again before its first charge's retention ended.
func TestLeaseScriptKeepsTheLayout(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	ctx := context.Background()
	for seed := range uint64(3) {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			t.Parallel()
			clock := &testClock{now: time.Now().UTC().Truncate(time.Millisecond)}
			retention := 5 * time.Second
			rs := NewRedisStore(redis.NewClient(&redis.Options{Addr: srv.Addr}), Options{Now: clock.Now, Retention: retention, releasedKeep: retention})
			t.Cleanup(func() { rs.Close() })
			cust := fmt.Sprintf("layout-%s-%d", newToken()[:6], seed)
			keys := customerKeys(cust)
			t.Cleanup(func() { rdb.Del(context.Background(), keys...) })
			rng := rand.New(rand.NewPCG(seed, 7))
			var lots, used []string
			syncs := map[string]int{}
			charged := map[string]int64{} // hold id -> the time of its last charge
			id := func() string {
				switch k := rng.IntN(10); {
				case k < 4 || len(used) == 0:
					s := "l" + strconv.Itoa(rng.IntN(1<<30))
					used = append(used, s)
					return s
				case k < 7:
					return used[len(used)-1-rng.IntN(min(len(used), 8))]
				default:
					return used[rng.IntN(len(used))]
				}
			}
			for call := range 300 {
				now := clock.Now()
				switch k := rng.IntN(10); {
				case k < 2:
					c := randomCredit(rng, cust, now, lots)
					c.Amount *= 1000
					if r, err := rs.Credit(ctx, c); err == nil && r.Lot != "" {
						lots = append(lots, r.Lot)
					}
				case k < 4:
					h := "p" + strconv.Itoa(rng.IntN(1<<30))
					ttl := []time.Duration{time.Millisecond, time.Second, time.Minute}[rng.IntN(3)]
					if rs.Reserve(ctx, cust, h, money.Micros(rng.IntN(50_000)), ttl) == nil {
						used = append(used, h)
					}
				case k < 5:
					if _, err := rs.sweepCustomers(ctx, []string{cust}); err != nil {
						t.Fatal(err)
					}
				}
				lease := []string{"lease-a", "lease-b"}[rng.IntN(2)]
				seq := syncs[lease] + 1
				if rng.IntN(8) == 0 && seq > 1 {
					seq -= 1 + rng.IntN(seq-1) // a late call
				}
				syncs[lease] = max(syncs[lease], seq)
				n := rng.IntN(7)
				if rng.IntN(40) == 0 {
					n = 1020 + rng.IntN(80)
				}
				nowMs := now.UnixMilli()
				target := int64(rng.IntN(200_000))
				inUse := int64(rng.IntN(int(target) + 1))
				args := []any{lease, nowMs, retention.Milliseconds(), nowMs + 10_000, target, inUse, int64(rng.IntN(50_000)), []int{25, 100}[rng.IntN(2)], int64(rng.IntN(2) * rng.IntN(20_000)), seq, rng.IntN(2), n}
				for range n {
					kind := []string{"s", "s", "s", "r", "e"}[rng.IntN(5)]
					h := id()
					at := nowMs - int64(rng.IntN(3000))
					actual := int64(rng.IntN(40_000))
					if rng.IntN(30) == 0 {
						actual = int64(rng.IntN(1 << 40))
					}
					body := ""
					if kind == "s" {
						body = chargeBody(Charge{Reference: h}, time.UnixMilli(at)).json()
					} else {
						actual = 0
					}
					args = append(args, kind, h, at, actual, body)
				}
				when := fmt.Sprintf("call %d (%s sync %d, %d closes)", call, lease, seq, n)
				r, err := leaseScript.Run(ctx, rdb, keys, args...).Slice()
				if err != nil {
					t.Fatalf("%s: %v", when, err)
				}
				if len(r) != leaseHead+3*n {
					t.Fatalf("%s: reply of %d fields", when, len(r))
				}
				for i := range n {
					h, at := args[13+5*i].(string), args[14+5*i].(int64)
					if args[12+5*i] != "s" || r[leaseHead+3*i] != int64(0) {
						continue
					}
					// Charged now: an earlier charge of the id must be past
					// its retention.
					if prev, ok := charged[h]; ok && prev+retention.Milliseconds() > nowMs {
						t.Fatalf("%s: hold %s charged again (at %d), though its charge at %d is kept until %d", when, h, at, prev, prev+retention.Milliseconds())
					}
					charged[h] = at
				}
				checkRedisLayout(t, rdb, cust, when)
				entries, err := rdb.HGetAll(ctx, keys[4]).Result()
				if err != nil {
					t.Fatal(err)
				}
				var sum int64
				for seq, v := range entries {
					var amount int64
					if _, err := fmt.Sscanf(v, "%d ", &amount); err != nil {
						t.Fatalf("%s: entry %s is %q", when, seq, v)
					}
					sum += amount
				}
				if bal, _ := rdb.HGet(ctx, keys[0], "balance").Int64(); bal != sum {
					t.Fatalf("%s: balance %d, entries add up to %d", when, bal, sum)
				}
				clock.Advance([]time.Duration{0, time.Millisecond, 100 * time.Millisecond, time.Second, 3 * time.Second}[rng.IntN(5)])
			}
		})
	}
}

// IsLeaseSync reports whether cmd is a lease sync (lease.lua's call,
// which names the replica's lease id): the fault tests' hooks pick them.
func IsLeaseSync(cmd redis.Cmder) bool {
	for _, a := range cmd.Args() {
		if s, ok := a.(string); ok && strings.HasPrefix(s, "tollgate-lease-") {
			return true
		}
	}
	return false
}

// syncHook is a go-redis hook that, once armed, calls do with the next
// lease sync before it is sent; a non-nil error loses the sync (it never
// reaches Redis, and its caller sees the error).
type syncHook struct {
	armed atomic.Bool
	do    func(cmd redis.Cmder) error
}

func (h *syncHook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *syncHook) take(cmd redis.Cmder) error {
	if !IsLeaseSync(cmd) || !h.armed.CompareAndSwap(true, false) {
		return nil
	}
	if err := h.do(cmd); err != nil {
		cmd.SetErr(err)
		return err
	}
	return nil
}
func (h *syncHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if err := h.take(cmd); err != nil {
			return err
		}
		return next(ctx, cmd)
	}
}
func (h *syncHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		for _, cmd := range cmds {
			if err := h.take(cmd); err != nil {
				return err
			}
		}
		return next(ctx, cmds)
	}
}

// TestLeaseMarkerOutlivesTheLateLease: a tick reads its clock before it
// waits for a customer's sync lock, so the sync that fences after a
// failed one may run on an older clock than the failed one. The marker it
// leaves must still outlive the lease the failed sync may take, or the
// failed sync, run by Redis after the marker expired, takes a lease no
// replica knows of.
func TestLeaseMarkerOutlivesTheLateLease(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t)
	clock := &testClock{now: time.Now().UTC().Truncate(time.Millisecond)}
	lost := make(chan []any, 1)
	h := &syncHook{do: func(cmd redis.Cmder) error {
		lost <- append([]any(nil), cmd.Args()...)
		return context.DeadlineExceeded
	}}
	client := redis.NewClient(&redis.Options{Addr: srv.Addr})
	client.AddHook(h)
	ttl := 10 * time.Second
	s := NewLeaseStore(client, Options{Now: clock.Now}, LeaseOptions{MinRequests: -1, Share: 50, FlushInterval: time.Hour, TTL: ttl, Idle: time.Hour})
	t.Cleanup(func() { s.Close() })
	b := NewRedisStore(redis.NewClient(&redis.Options{Addr: srv.Addr}), Options{Now: clock.Now})
	raw := redis.NewClient(&redis.Options{Addr: srv.Addr})
	t.Cleanup(func() { b.Close(); raw.Close() })
	cust := "marker-" + newToken()[:6]
	if _, err := b.Credit(ctx, Credit{Customer: cust, Amount: money.MustParse("1000"), Kind: KindGrant, Key: "k"}); err != nil {
		t.Fatal(err)
	}
	if err := s.Reserve(ctx, cust, "a0", money.MustParse("100"), time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := s.Release(ctx, cust, "a0"); err != nil {
		t.Fatal(err)
	}
	c := s.lookup(cust)
	tick := unixMilli(clock.Now()) // a tick's clock, read before it waits
	clock.Advance(3 * time.Second)
	// Meanwhile a sync on the later clock is lost, its lease still to
	// come.
	h.armed.Store(true)
	if err := c.lockSync(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.syncLocked(ctx, c, unixMilli(clock.Now()), 0); err == nil {
		t.Fatal("the lost sync succeeded")
	}
	c.unlockSync()
	stale := <-lost
	// The tick's sync fences on its older clock and leaves no lease.
	if err := s.sync(ctx, c, tick); err != nil {
		t.Fatal(err)
	}
	clock.Advance(ttl - 2*time.Second)              // past tick+ttl, before the lost sync's lease would expire
	if _, err := b.Account(ctx, cust); err != nil { // expires what is due
		t.Fatal(err)
	}
	if err := raw.Do(ctx, stale...).Err(); err != nil {
		t.Fatal(err)
	}
	if acct, err := b.Account(ctx, cust); err != nil || acct.Reserved != 0 {
		t.Errorf("after the lost sync ran, with nothing in use: %+v, %v", acct, err)
	}
}

// TestLeaseLendsNothingOnALotThatExpiredDuringItsSync: a reservation that
// syncs to take a lease lends from it only if the lot the sync reported
// has not expired by the time the sync is back.
func TestLeaseLendsNothingOnALotThatExpiredDuringItsSync(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t)
	clock := &testClock{now: time.Now().UTC().Truncate(time.Millisecond)}
	// The sync takes 2 s, as the replica's clock sees it.
	h := &syncHook{do: func(redis.Cmder) error { clock.Advance(2 * time.Second); return nil }}
	client := redis.NewClient(&redis.Options{Addr: srv.Addr})
	client.AddHook(h)
	s := NewLeaseStore(client, Options{Now: clock.Now}, LeaseOptions{MinRequests: -1, Share: 100, FlushInterval: time.Hour, TTL: time.Minute, Idle: time.Hour})
	t.Cleanup(func() { s.Close() })
	cust := "lotsync-" + newToken()[:6]
	if _, err := s.Credit(ctx, Credit{Customer: cust, Amount: money.MustParse("1000"), Kind: KindGrant, Key: "k", ExpiresAt: clock.Now().Add(time.Second)}); err != nil {
		t.Fatal(err)
	}
	h.armed.Store(true)
	err := s.Reserve(ctx, cust, "h1", money.MustParse("100"), time.Minute)
	if err == nil {
		t.Errorf("reserved 100 on a lot that expired while its lease was taken: %+v", s.Stats())
	}
}

// TestLeaseTickExpiresLentHolds: a lent hold that expires stops counting
// at once for the other replicas too, as a hold in Redis does: the tick's
// sync leaves it out of the lease. It is closed, as on Redis, by Sweep
// (which counts it) or a call touching it, and still charged if settled.
// (Found by a reader: the lease kept its credits until then, so another
// replica saw 900 of 1000 available after the only hold had expired.)
func TestLeaseTickExpiresLentHolds(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second) // without ticks, a wait for a sync would be endless
	defer cancel()
	srv := redistest.Start(t)
	clock := &testClock{now: time.Now().UTC().Truncate(time.Millisecond)}
	lo := LeaseOptions{MinRequests: -1, Share: 100, FlushInterval: time.Hour, TTL: time.Minute, Idle: time.Millisecond}
	a := NewLeaseStore(redis.NewClient(&redis.Options{Addr: srv.Addr}), Options{Now: clock.Now}, lo)
	b := NewLeaseStore(redis.NewClient(&redis.Options{Addr: srv.Addr}), Options{Now: clock.Now}, lo)
	t.Cleanup(func() { a.Close(); b.Close() })
	cust := "tickexp-" + newToken()[:6]
	if _, err := a.Credit(ctx, Credit{Customer: cust, Amount: money.MustParse("1000"), Kind: KindGrant, Key: "k"}); err != nil {
		t.Fatal(err)
	}
	if err := a.Reserve(ctx, cust, "h1", money.MustParse("100"), time.Second); err != nil {
		t.Fatal(err)
	}
	if a.Stats().Lent != 1 {
		t.Fatalf("h1 was not lent: %+v", a.Stats())
	}
	clock.Advance(2 * time.Second) // h1 expired
	time.Sleep(5 * time.Millisecond)
	for range 3 { // A's ticks, the customer quiet
		a.syncAll(ctx, false)
		clock.Advance(100 * time.Millisecond)
	}
	acct, err := b.Account(ctx, cust)
	if err != nil {
		t.Fatal(err)
	}
	if acct.Available != money.MustParse("1000") || acct.Reserved != 0 {
		t.Errorf("B sees available %s, reserved %s; A's only hold expired, want 1000 and 0", acct.Available, acct.Reserved)
	}
	if err := b.Reserve(ctx, cust, "b1", money.MustParse("1000"), time.Minute); err != nil {
		t.Errorf("B refused the whole balance though A's only hold expired: %v", err)
	}
	if n, err := a.Sweep(ctx); err != nil || n != 1 {
		t.Errorf("Sweep = %d, %v; want the expired hold closed and counted", n, err)
	}
	// The expired hold is still charged when it ends, as on Redis.
	e, err := a.Settle(ctx, cust, "h1", money.MustParse("30"), Charge{Reference: "h1"})
	if err != nil || e.Amount != -money.MustParse("30") {
		t.Errorf("Settle of the expired hold: %+v, %v; want a charge of 30", e, err)
	}
}

// TestLeaseQueuedChargeTakesItsCost: a queued charge larger than its hold
// takes its cost of the lease until it is synced, so that a hold lent
// meanwhile cannot spend what the charge takes beyond the hold (the
// usage happened). As the embedded store's settlements waiting for their
// commit do.
func TestLeaseQueuedChargeTakesItsCost(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t)
	s := NewLeaseStore(redis.NewClient(&redis.Options{Addr: srv.Addr}), Options{}, LeaseOptions{MinRequests: -1, Share: 100, FlushInterval: time.Hour})
	t.Cleanup(func() { s.Close() })
	cust := "queuedcost-" + newToken()[:6]
	if _, err := s.Credit(ctx, Credit{Customer: cust, Amount: money.MustParse("100"), Kind: KindGrant, Key: "k"}); err != nil {
		t.Fatal(err)
	}
	if err := s.Reserve(ctx, cust, "h", money.MustParse("30"), time.Minute); err != nil {
		t.Fatal(err)
	}
	if !s.QueueSettle(cust, "h", money.MustParse("60"), Charge{Reference: "h"}, nil) {
		t.Fatal("h was not lent")
	}
	c := s.lookup(cust)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lease = int64(money.MustParse("100")) // as if the lease held the whole balance
	if got := money.Micros(c.inUse); got != money.MustParse("60") {
		t.Errorf("in use %s with h's charge of 60 queued, want 60", got)
	}
	if _, ok := c.lend("b", int64(money.MustParse("41")), time.Minute, unixMilli(s.now()), false, 0); ok {
		t.Error("lent 41 of a lease of 100 while a charge of 60 was on its way")
	}
}

// TestLeaseSettleOfExpiredLentHoldSendsAtOnce: a Settle of a lent hold
// that expired sends its expiry to Redis itself and is charged there,
// rather than waiting for the next tick. (Found by a reader.)
func TestLeaseSettleOfExpiredLentHoldSendsAtOnce(t *testing.T) {
	srv := redistest.Start(t)
	clock := &testClock{now: time.Now().UTC().Truncate(time.Millisecond)}
	s := NewLeaseStore(redis.NewClient(&redis.Options{Addr: srv.Addr}), Options{Now: clock.Now}, LeaseOptions{MinRequests: -1, Share: 100, FlushInterval: time.Hour, TTL: time.Minute})
	t.Cleanup(func() { s.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	cust := "expsettle-" + newToken()[:6]
	if _, err := s.Credit(ctx, Credit{Customer: cust, Amount: money.MustParse("100"), Kind: KindGrant, Key: "k"}); err != nil {
		t.Fatal(err)
	}
	if err := s.Reserve(ctx, cust, "h", money.MustParse("10"), time.Second); err != nil || s.Stats().Lent != 1 {
		t.Fatalf("h not lent: %v, %+v", err, s.Stats())
	}
	clock.Advance(2 * time.Second)
	if e, err := s.Settle(ctx, cust, "h", money.MustParse("5"), Charge{Reference: "h"}); err != nil || e.Amount != -money.MustParse("5") {
		t.Errorf("Settle of the expired lent hold: %+v, %v; want a charge of 5 within a second", e, err)
	}
}

// TestLeaseNoFalseOverspendWarning: a charge larger than its hold, queued
// while a sync that gives the lease back is out, is no sign of credits
// the lease failed to back; the sync does not warn of an overspend.
// (Found by a reader of 98472d9.)
func TestLeaseNoFalseOverspendWarning(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t)
	core, logs := observer.New(zap.WarnLevel)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
	hook := &syncHook{}
	rdb.AddHook(hook)
	s := NewLeaseStore(rdb, Options{Logger: zap.New(core)}, LeaseOptions{MinRequests: -1, Share: 100, FlushInterval: time.Hour})
	t.Cleanup(func() { s.Close() })
	cust := "nowarn-" + newToken()[:6]
	if _, err := s.Credit(ctx, Credit{Customer: cust, Amount: money.MustParse("100"), Kind: KindGrant, Key: "k"}); err != nil {
		t.Fatal(err)
	}
	if err := s.Reserve(ctx, cust, "h", money.MustParse("10"), time.Minute); err != nil || s.Stats().Lent != 1 {
		t.Fatalf("h not lent: %v, %+v", err, s.Stats())
	}
	hook.do = func(redis.Cmder) error {
		if !s.QueueSettle(cust, "h", money.MustParse("60"), Charge{Reference: "h"}, nil) {
			t.Error("h was not lent")
		}
		return nil
	}
	hook.armed.Store(true)
	c := s.lookup(cust)
	c.mu.Lock()
	c.giveBack = true
	c.mu.Unlock()
	if err := s.sync(ctx, c, unixMilli(s.now())); err != nil {
		t.Fatal(err)
	}
	if n := logs.FilterMessageSnippet("lease came back smaller").Len(); n != 0 {
		t.Errorf("%d warnings of an overspend for a charge queued during a give-back", n)
	}
}
