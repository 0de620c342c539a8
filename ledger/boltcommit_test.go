package ledger

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"github.com/tollgate-dev/tollgate/money"
)

// TestBoltGroupCommitIsolatesFailures queues credits and a write that fails
// into one group commit, and checks that the failing write gets its own
// error, nothing of it is stored, and every credit is stored and reported
// as applied: a neighbour's failure neither fails nor silently drops them.
func TestBoltGroupCommitIsolatesFailures(t *testing.T) {
	s, err := OpenBolt(filepath.Join(t.TempDir(), "ledger.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()

	// Hold the writer in a first commit so that everything below queues
	// up behind it and is committed together.
	release := make(chan struct{})
	blocking := make(chan struct{})
	blockerDone := make(chan error, 1)
	go func() {
		blockerDone <- s.update(func(*bbolt.Tx) error {
			close(blocking)
			<-release
			return nil
		})
	}()
	<-blocking

	const credits = 8
	errBoom := errors.New("boom")
	var wg sync.WaitGroup
	results := make([]error, credits)
	applied := make([]bool, credits)
	var failErr error
	for i := range credits {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := s.Credit(ctx, Credit{Customer: "batch", Amount: money.Micros(i + 1), Kind: KindGrant, Key: fmt.Sprintf("k%d", i)})
			results[i], applied[i] = err, r.Applied
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		failErr = s.update(func(tx *bbolt.Tx) error {
			// Write something first, so a leak of it would show.
			if err := tx.Bucket([]byte(bMeta)).Put([]byte("leaked"), []byte("x")); err != nil {
				return err
			}
			return errBoom
		})
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		s.mu.Lock()
		n := len(s.queue)
		s.mu.Unlock()
		if n == credits+1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d writes queued, want %d", n, credits+1)
		}
		time.Sleep(time.Millisecond)
	}
	close(release)
	wg.Wait()
	if err := <-blockerDone; err != nil {
		t.Fatalf("blocking write: %v", err)
	}

	if !errors.Is(failErr, errBoom) || errors.Is(s.fail("op", failErr), ErrStoreUnavailable) {
		t.Errorf("failing write returned %v; want its own error, not a store failure", failErr)
	}
	var want money.Micros
	for i, err := range results {
		if err != nil || !applied[i] {
			t.Errorf("credit %d: applied %v, %v; want applied", i, applied[i], err)
		}
		want += money.Micros(i + 1)
	}
	if _, ok, err := s.GetMeta(ctx, "leaked"); err != nil || ok {
		t.Errorf("the failed write's Put is stored (%v, %v)", ok, err)
	}
	a, err := s.Account(ctx, "batch")
	if err != nil {
		t.Fatal(err)
	}
	if a.Balance != want {
		t.Errorf("balance %s; want %s, the sum of the credits", a.Balance, want)
	}
	p, err := s.Entries(ctx, "batch", "", 0)
	if err != nil || len(p.Entries) != credits {
		t.Errorf("entries %d, %v; want %d", len(p.Entries), err, credits)
	}
}

// TestBoltSettlementsWaitForCompanyButNotPastClose queues settlements while
// the writer waits out their gap (set an hour long here), and checks that
// they wait rather than commit one by one, and that Close, an urgent
// write, wakes the writer and commits them before the file closes: a
// clean shutdown loses no charge.
func TestBoltSettlementsWaitForCompanyButNotPastClose(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledger.db")
	s, err := OpenBolt(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := s.Credit(ctx, Credit{Customer: "c", Amount: 1000, Kind: KindGrant, Key: "fund"}); err != nil {
		t.Fatal(err)
	}
	const n = 5
	for i := range n {
		if err := s.Reserve(ctx, "c", fmt.Sprintf("h%d", i), 100, time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	s.mu.Lock()
	s.lastCommit = time.Now().Add(time.Hour)
	s.mu.Unlock()

	errs := make(chan error, n)
	for i := range n {
		go func() {
			_, err := s.Settle(ctx, "c", fmt.Sprintf("h%d", i), 30, Charge{Reference: fmt.Sprintf("h%d", i)})
			errs <- err
		}()
	}
	for deadline := time.Now().Add(10 * time.Second); ; {
		s.mu.Lock()
		queued := len(s.queue)
		s.mu.Unlock()
		if queued == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d settlements queued (a settlement committed without waiting for its gap?)", queued, n)
		}
		time.Sleep(time.Millisecond)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatalf("a settlement queued before Close failed: %v", err)
		}
	}

	s, err = OpenBolt(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	a, err := s.Account(ctx, "c")
	if err != nil {
		t.Fatal(err)
	}
	if want := money.Micros(1000 - n*30); a.Balance != want {
		t.Fatalf("balance after reopening %s, want %s: a settlement was lost", a.Balance, want)
	}
}

// TestBoltQueuedContinuationOffTheWriter: a queued settlement's
// continuation takes its customer's mutex; a caller holding that mutex
// while it waits for the writer (Reserve and Account do, when a lot is
// due, and Reserve when settlements in flight cause a refusal) must
// still get its write committed.
func TestBoltQueuedContinuationOffTheWriter(t *testing.T) {
	s, err := OpenBolt(filepath.Join(t.TempDir(), "ledger.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	const cust = "offwriter"
	if _, err := s.Credit(ctx, Credit{Customer: cust, Amount: money.MustParse("10"), Kind: KindGrant, Key: "k"}); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"h0", "h1"} {
		if err := s.Reserve(ctx, cust, id, money.MustParse("1"), time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	// h0's commit starts the gap: h1 waits in the queue while the
	// mutex is taken below.
	if _, err := s.Settle(ctx, cust, "h0", money.MustParse("1"), Charge{Reference: "h0"}); err != nil {
		t.Fatal(err)
	}
	finished := make(chan error, 1)
	if !s.QueueSettle(cust, "h1", money.MustParse("1"), Charge{Reference: "h1"}, func(_ Entry, err error) { finished <- err }) {
		t.Fatal("QueueSettle of a live hold: not queued")
	}
	mc := s.holds.lock(cust)
	time.Sleep(3 * settleGap) // h1 is committed; its continuation waits for mc
	wrote := make(chan error, 1)
	go func() { wrote <- s.update(func(*bbolt.Tx) error { return nil }) }()
	select {
	case err := <-wrote:
		if err != nil {
			t.Error(err)
		}
	case <-time.After(5 * time.Second):
		t.Error("a write queued by the holder of the customer's mutex was not committed within 5s")
	}
	s.holds.unlock(cust, mc)
	if err := <-finished; err != nil {
		t.Fatal(err)
	}
}

// TestBoltRefusalCommitsSettlementsFirst: an answered request holds what
// it reserved until its charge commits, which may wait out the settle
// gap. A Reserve that only such holds keep from fitting commits them and
// decides again, so the next request of a customer near the end of its
// credits is not refused for want of credits it has; balance.depleted
// follows the second decision.
func TestBoltRefusalCommitsSettlementsFirst(t *testing.T) {
	s, err := OpenBolt(filepath.Join(t.TempDir(), "ledger.db"), Options{Events: &EventOptions{}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	if _, err := s.Credit(ctx, Credit{Customer: "c", Amount: 1000, Kind: KindGrant, Key: "fund"}); err != nil {
		t.Fatal(err)
	}
	if err := s.Reserve(ctx, "c", "h1", 1000, time.Minute); err != nil {
		t.Fatal(err)
	}
	// The writer waits out an hour-long gap before it commits h1's charge.
	s.mu.Lock()
	s.lastCommit = time.Now().Add(time.Hour)
	s.mu.Unlock()
	settled := make(chan error, 1)
	if !s.QueueSettle("c", "h1", 300, Charge{Reference: "h1"}, func(_ Entry, err error) { settled <- err }) {
		t.Fatal("QueueSettle of a live hold: not queued")
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		s.mu.Lock()
		queued := len(s.queue)
		s.mu.Unlock()
		if queued == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("h1's settlement did not queue (committed without waiting for its gap?)")
		}
	}

	// 800 does not fit even once h1 is charged 300: refused, with what is
	// available after the charge.
	var ice *InsufficientCreditsError
	if _, err := s.ReserveAvailable(ctx, "c", "h2", 800, time.Minute); !errors.As(err, &ice) || ice.Available != 700 {
		t.Fatalf("Reserve of 800 = %v; want insufficient credits with 700 available", err)
	}
	waitSettled := func(id string) {
		t.Helper()
		select {
		case err := <-settled:
			if err != nil {
				t.Fatalf("%s's settlement: %v", id, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s's settlement was not committed within 10s", id)
		}
	}
	waitSettled("h1")
	// Another answered request in flight, and 700 that fits once it is
	// charged: reserved.
	if err := s.Reserve(ctx, "c", "h3", 700, time.Minute); err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	s.lastCommit = time.Now().Add(time.Hour)
	s.mu.Unlock()
	if !s.QueueSettle("c", "h3", 100, Charge{Reference: "h3"}, func(_ Entry, err error) { settled <- err }) {
		t.Fatal("QueueSettle of a live hold: not queued")
	}
	avail, err := s.ReserveAvailable(ctx, "c", "h4", 600, time.Minute)
	if err != nil || avail != 0 {
		t.Fatalf("Reserve of 600 with h3's charge of 100 queued = %s, %v; want reserved, 0 left", avail, err)
	}
	waitSettled("h3")
	// Events are decided on the second look: balance.depleted for the
	// refusal that stood, none for the one the commit turned around.
	page, err := s.Events(ctx, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	var depleted []string
	for _, e := range page.Events {
		if e.Type == "balance.depleted" {
			depleted = append(depleted, fmt.Sprintf("%s/%s", e.Available, e.Amount))
		}
	}
	if want := "0.000700/0.000800"; len(depleted) != 1 || depleted[0] != want {
		t.Errorf("balance.depleted events %v; want one, %s", depleted, want)
	}
}

// TestBoltSettleDatedUnderItsMutex: a Settle that waits for its
// customer's mutex is dated when it gets it, so that its charge is never
// dated before what another call wrote meanwhile (here a credit that
// expired a lot at a later time): the entries stay in time order and the
// lots a charge burns are those of its date. (Found by a reader: the
// charge was dated before the wait and then paid by lots as they were
// after it.) A charge's lot may still expire while it waits for the
// mutex: as with a lease's charges, only expired lots kept for a grace
// period would let it pay with them.
func TestBoltSettleDatedUnderItsMutex(t *testing.T) {
	ctx := context.Background()
	clock := &testClock{now: time.Now().UTC().Truncate(time.Millisecond)}
	s, err := OpenBolt(filepath.Join(t.TempDir(), "bolt.db"), Options{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	const cust = "dated"
	t0 := clock.Now()
	for _, cr := range []Credit{
		{Customer: cust, Amount: money.MustParse("100"), Kind: KindGrant, Key: "m"},
		{Customer: cust, Amount: money.MustParse("100"), Kind: KindGrant, Key: "l", ExpiresAt: t0.Add(time.Second)},
	} {
		if _, err := s.Credit(ctx, cr); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Reserve(ctx, cust, "h", money.MustParse("50"), time.Hour); err != nil {
		t.Fatal(err)
	}
	mc := s.holds.lock(cust) // a call holding the customer's mutex
	settled := make(chan Entry, 1)
	go func() {
		e, err := s.Settle(ctx, cust, "h", money.MustParse("50"), Charge{Reference: "h"})
		if err != nil {
			t.Error(err)
		}
		settled <- e
	}()
	time.Sleep(50 * time.Millisecond) // Settle waits for the mutex
	clock.Advance(2 * time.Second)
	if _, err := s.Credit(ctx, Credit{Customer: cust, Amount: 1, Kind: KindGrant, Key: "later"}); err != nil { // expires l
		t.Fatal(err)
	}
	s.holds.unlock(cust, mc)
	e := <-settled
	page, err := s.Entries(ctx, cust, "", 10)
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i < len(page.Entries); i++ { // newest first
		if page.Entries[i-1].At.Before(page.Entries[i].At) {
			t.Errorf("entry %s at %s comes after entry %s at %s", page.Entries[i-1].ID, page.Entries[i-1].At, page.Entries[i].ID, page.Entries[i].At)
		}
	}
	if !e.At.Equal(clock.Now()) {
		t.Errorf("the charge is dated %s, want %s, when Settle got the mutex", e.At, clock.Now())
	}
}
