package ledger

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

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
