package ledger_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tollgate-dev/tollgate/internal/redistest"
	"github.com/tollgate-dev/tollgate/ledger"
	"github.com/tollgate-dev/tollgate/money"
)

// replicas returns n LeaseStores sharing one new Redis, as n tollgate
// replicas would, each with its own client.
func replicas(t *testing.T, n int, lo ledger.LeaseOptions) []*ledger.LeaseStore {
	t.Helper()
	srv := redistest.Start(t)
	var out []*ledger.LeaseStore
	for range n {
		s := ledger.NewLeaseStore(redis.NewClient(&redis.Options{Addr: srv.Addr}), ledger.Options{}, lo)
		t.Cleanup(func() { s.Close() })
		out = append(out, s)
	}
	return out
}

// TestLeaseNeverStarvesAnotherReplica: replica A leases a large slice of
// a customer's credits; replica B then asks for more than Redis shows
// available but no more than A's requests leave: B is served, because
// its refusal recalls A's lease, and a request beyond what is left is
// still refused.
func TestLeaseNeverStarvesAnotherReplica(t *testing.T) {
	ctx := context.Background()
	rs := replicas(t, 2, ledger.LeaseOptions{MinRequests: 1, Share: 50, FlushInterval: 20 * time.Millisecond})
	a, b := rs[0], rs[1]
	cust := "starve-" + randomHex(4)
	mustCredit(t, a, cust, c("1000"))

	// A holds 100 and leases more: up to half of what is available.
	for i := range 3 {
		mustReserve(t, a, cust, fmt.Sprintf("a%d", i), c("100"), time.Minute)
		if err := a.Release(ctx, cust, fmt.Sprintf("a%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	mustReserve(t, a, cust, "a-open", c("100"), time.Minute)
	if st := a.Stats(); st.Lent == 0 {
		t.Fatalf("A lent nothing: %+v", st)
	}
	acct, err := b.Account(ctx, cust)
	if err != nil {
		t.Fatal(err)
	}
	if acct.Available > c("600") {
		t.Fatalf("B sees %s available; A's lease should hold more than its request", acct.Available)
	}

	// 900 is what A's one open request leaves: B gets 800 of it.
	if _, err := b.ReserveAvailable(ctx, cust, "b1", c("800"), time.Minute); err != nil {
		t.Fatalf("B refused 800 of the 900 A's requests leave: %v", err)
	}
	// 100 are left; 150 is refused, and says how much is there.
	_, err = b.ReserveAvailable(ctx, cust, "b2", c("150"), time.Minute)
	var ice *ledger.InsufficientCreditsError
	if !errors.As(err, &ice) {
		t.Fatalf("B's 150 of 100 left: %v; want insufficient credits", err)
	}
	// Both settle; the balance is what they charged.
	if _, err := a.Settle(ctx, cust, "a-open", c("60"), ledger.Charge{Reference: "a-open"}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Settle(ctx, cust, "b1", c("700"), ledger.Charge{Reference: "b1"}); err != nil {
		t.Fatal(err)
	}
	wantAccount(t, a, cust, c("240"), 0)
	checkInvariants(t, a, cust)
}

// TestLeaseStormAcrossReplicas: 300 requests on two replicas ask for more
// than the balance; every hold comes from a lease or from Redis, settles
// for at most what it held, and the customer ends with balance = sum of
// the entries, never below zero, and what is left spendable from either
// replica, to the last credit.
func TestLeaseStormAcrossReplicas(t *testing.T) {
	ctx := context.Background()
	rs := replicas(t, 2, ledger.LeaseOptions{MinRequests: 2, FlushInterval: 10 * time.Millisecond})
	cust := "storm-" + randomHex(4)
	mustCredit(t, rs[0], cust, c("50"))

	const requests = 300
	var wg sync.WaitGroup
	var mu sync.Mutex
	var charged money.Micros
	errs := make(chan error, requests)
	for i := range requests {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := rs[i%2]
			hold := fmt.Sprintf("h%d", i)
			amount := c("0.5") + money.Micros(rand.IntN(500_000))
			if err := s.Reserve(ctx, cust, hold, amount, time.Minute); err != nil {
				if !errors.Is(err, ledger.ErrInsufficientCredits) {
					errs <- err
				}
				return
			}
			actual := money.Micros(rand.Int64N(int64(amount) + 1))
			if rand.IntN(10) == 0 {
				if err := s.Release(ctx, cust, hold); err != nil {
					errs <- err
				}
				return
			}
			if _, err := s.Settle(ctx, cust, hold, actual, ledger.Charge{Reference: hold}); err != nil {
				errs <- err
				return
			}
			mu.Lock()
			charged += actual
			mu.Unlock()
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	st0, st1 := rs[0].Stats(), rs[1].Stats()
	t.Logf("replica 0 %+v, replica 1 %+v, charged %s", st0, st1, charged)
	if st0.Lent+st1.Lent == 0 {
		t.Fatal("no hold came from a lease: the storm did not test leases")
	}
	acct := mustAccount(t, rs[0], cust)
	if acct.Balance != c("50")-charged || acct.Balance < 0 {
		t.Fatalf("balance %s; want 50 - %s, and not below zero", acct.Balance, charged)
	}
	checkInvariants(t, rs[0], cust)

	// Every credit left is spendable from either replica, leases or not.
	left := acct.Balance
	for i, s := range rs {
		hold := fmt.Sprintf("all%d", i)
		if _, err := s.ReserveAvailable(ctx, cust, hold, left, time.Minute); err != nil {
			t.Fatalf("replica %d: reserve all %s left: %v", i, left, err)
		}
		if err := s.Release(ctx, cust, hold); err != nil {
			t.Fatal(err)
		}
	}
}

// TestLeaseOfKilledReplicaExpires: a replica killed with leases out
// leaves them to expire as holds do, after the lease ttl; until then
// what they hold is out of reach, after it everything is back.
func TestLeaseOfKilledReplicaExpires(t *testing.T) {
	ctx := context.Background()
	const ttl = time.Second
	rs := replicas(t, 2, ledger.LeaseOptions{MinRequests: 1, Share: 50, TTL: ttl, FlushInterval: 20 * time.Millisecond})
	a, b := rs[0], rs[1]
	cust := "killed-" + randomHex(4)
	mustCredit(t, b, cust, c("100"))
	for i := range 3 {
		mustReserve(t, a, cust, fmt.Sprintf("a%d", i), c("10"), time.Hour)
	}
	if a.Stats().Lent == 0 {
		t.Fatalf("A lent nothing: %+v", a.Stats())
	}
	a.Crash()
	killed := time.Now()
	acct := mustAccount(t, b, cust)
	if acct.Reserved == 0 {
		t.Fatal("the killed replica's lease does not show as reserved")
	}
	for {
		acct = mustAccount(t, b, cust)
		if acct.Reserved == 0 {
			break
		}
		if time.Since(killed) > ttl+2*time.Second {
			t.Fatalf("%s still reserved %v after the kill; the lease ttl is %v", acct.Reserved, time.Since(killed), ttl)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if time.Since(killed) < ttl/2 {
		t.Fatalf("the lease was gone %v after the kill; its ttl is %v", time.Since(killed), ttl)
	}
	if _, err := b.ReserveAvailable(ctx, cust, "b-all", c("100"), time.Minute); err != nil {
		t.Fatalf("after the lease expired, all 100 should be available: %v", err)
	}
}

// redisOf returns the RedisStore under s, with or without leases.
func redisOf(s ledger.Store) (*ledger.RedisStore, bool) {
	switch s := s.(type) {
	case *ledger.RedisStore:
		return s, true
	case *ledger.LeaseStore:
		return s.RedisStore, true
	}
	return nil, false
}
