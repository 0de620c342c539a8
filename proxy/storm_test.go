package proxy_test

import (
	"context"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/ledger"
	"github.com/tollgate-dev/tollgate/money"
)

// stormRequests is how many requests race for one balance.
const stormRequests = 300

// TestStorm sends 300 concurrent requests against one balance that pays
// for about half of them, on each store and on two tollgate instances
// sharing one Redis. Nothing may be overspent: every request either
// succeeds and is charged exactly its cost, or is refused with 402; the
// balance equals the sum of the ledger, is not negative, and nothing stays
// reserved.
func TestStorm(t *testing.T) {
	t.Run("bolt", func(t *testing.T) {
		h := newHarness(t, harnessOptions{})
		storm(t, h.store, h)
	})
	t.Run("redis", func(t *testing.T) {
		h := newHarness(t, harnessOptions{store: redisStore(t)})
		storm(t, h.store, h)
	})
	t.Run("two instances sharing redis", func(t *testing.T) {
		up := newUpstream(t)
		a := newHarness(t, harnessOptions{store: redisStore(t), upstream: up})
		b := newHarness(t, harnessOptions{store: redisStore(t), upstream: up})
		storm(t, a.store, a, b)
	})
	t.Run("redis with leases", func(t *testing.T) {
		st := leaseStore(t, ledger.Options{})
		h := newHarness(t, harnessOptions{store: st})
		storm(t, h.store, h)
		if st.Stats().Lent == 0 {
			t.Errorf("no hold came from a lease: %+v", st.Stats())
		}
	})
	t.Run("two instances sharing redis with leases", func(t *testing.T) {
		up := newUpstream(t)
		sa, sb := leaseStore(t, ledger.Options{}), leaseStore(t, ledger.Options{})
		a := newHarness(t, harnessOptions{store: sa, upstream: up})
		b := newHarness(t, harnessOptions{store: sb, upstream: up})
		storm(t, a.store, a, b)
		if sa.Stats().Lent+sb.Stats().Lent == 0 {
			t.Errorf("no hold came from a lease: %+v, %+v", sa.Stats(), sb.Stats())
		}
	})
}

func storm(t *testing.T, st ledger.Store, instances ...*harness) {
	cust := newCustomer()
	balance := mustMicros(t, "0.5")
	instances[0].grant(cust, balance.String())
	// Each request costs 0.003253 (chat_completion.json's usage) and
	// reserves more (its worst case), so reservations contend harder than
	// charges.
	cost := mustMicros(t, "0.003253")
	ok, refused := fire(t, cust, nil, instances...)
	charges := waitSettled(t, st, cust, ok, 5*time.Second)
	var charged money.Micros
	for _, c := range charges {
		if c.Amount != -cost {
			t.Errorf("a charge of %s, want %s", -c.Amount, cost)
		}
		charged -= c.Amount
	}
	if charged != money.Micros(ok)*cost {
		t.Errorf("charged %s for %d successes, want %s", charged, ok, money.Micros(ok)*cost)
	}
	acct, err := st.Account(context.Background(), cust)
	if err != nil {
		t.Fatal(err)
	}
	var sum money.Micros
	page, err := st.Entries(context.Background(), cust, "", ledger.MaxPageSize)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range page.Entries {
		sum += e.Amount
	}
	if acct.Balance != sum || acct.Balance != balance-charged || acct.Balance < 0 || acct.Reserved != 0 {
		t.Errorf("balance %s, ledger sum %s, reserved %s; want balance %s = ledger sum ≥ 0 and nothing reserved",
			acct.Balance, sum, acct.Reserved, balance-charged)
	}
	t.Logf("%d succeeded, %d refused with 402; charged %s of %s", ok, refused, charged, balance)
}

// fire sends stormRequests concurrent chat requests for cust, spread over
// the instances, each reserving more than it costs (its worst case), so
// that reservations contend harder than charges. done, if set, is called
// as each response arrives with how many have. It checks that every
// request either succeeded or was refused with 402, some of each, and
// returns how many of each.
func fire(t *testing.T, cust string, done func(n int64), instances ...*harness) (ok, refused int) {
	t.Helper()
	body := chatBody("gpt-4o", `,"max_tokens":300`)
	tr := &http.Transport{MaxIdleConnsPerHost: stormRequests}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	statuses := make([]int, stormRequests)
	start := make(chan struct{})
	var finished atomic.Int64
	var wg sync.WaitGroup
	for i := range stormRequests {
		wg.Go(func() {
			<-start
			h := instances[i%len(instances)]
			req, _ := http.NewRequest(http.MethodPost, h.proxy.URL+"/v1/chat/completions", strings.NewReader(body))
			req.Header.Set("X-Tollgate-Customer", cust)
			res, err := client.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			res.Body.Close()
			statuses[i] = res.StatusCode
			if done != nil {
				done(finished.Add(1))
			}
		})
	}
	close(start)
	wg.Wait()
	for _, s := range statuses {
		switch s {
		case 200:
			ok++
		case 402:
			refused++
		default:
			t.Errorf("status %d", s)
		}
	}
	if ok == 0 || refused == 0 {
		t.Fatalf("%d succeeded and %d were refused; the balance should pay for some but not all", ok, refused)
	}
	return ok, refused
}

// TestStormWhileLotsExpire is TestStorm with the credits in two lots: a
// promotion spent first that expires while the storm is under way (the
// clock of the stores and the proxies moves past its expiry once a third
// of the requests are answered), and a pack that never expires. Nothing
// is overspent or lost: every success is charged exactly its cost, every
// refusal nothing; no charge takes from the promotion after its expiry,
// and the expiry takes exactly what it still held; the balance is the
// ledger's sum, nothing stays reserved, and the balance can only go below
// zero through holds reserved before the expiry, by at most what the
// expiry took away.
func TestStormWhileLotsExpire(t *testing.T) {
	newClock := func() *storeClock { return &storeClock{now: time.Now().UTC().Truncate(time.Millisecond)} }
	t.Run("bolt", func(t *testing.T) {
		clock := newClock()
		st, err := ledger.OpenBolt(filepath.Join(t.TempDir(), "tollgate.db"), ledger.Options{Now: clock.Now})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		stormLots(t, clock, st, newHarness(t, harnessOptions{store: st, now: clock.Now}))
	})
	t.Run("redis", func(t *testing.T) {
		clock := newClock()
		st := ledger.NewRedisStore(redisClient(t), ledger.Options{Now: clock.Now})
		t.Cleanup(func() { st.Close() })
		stormLots(t, clock, st, newHarness(t, harnessOptions{store: st, now: clock.Now}))
	})
	t.Run("two instances sharing redis", func(t *testing.T) {
		stormLotsTwice(t, newClock(), func(opts ledger.Options) ledger.Store {
			st := ledger.NewRedisStore(redisClient(t), opts)
			t.Cleanup(func() { st.Close() })
			return st
		})
	})
	t.Run("two instances sharing redis with leases", func(t *testing.T) {
		stormLotsTwice(t, newClock(), func(opts ledger.Options) ledger.Store { return leaseStore(t, opts) })
	})
}

// stormLotsTwice runs stormLots on two instances sharing one upstream,
// each on a store open returns on clock.
func stormLotsTwice(t *testing.T, clock *storeClock, open func(ledger.Options) ledger.Store) {
	up := newUpstream(t)
	var hs []*harness
	var first ledger.Store
	for range 2 {
		st := open(ledger.Options{Now: clock.Now})
		if first == nil {
			first = st
		}
		hs = append(hs, newHarness(t, harnessOptions{store: st, now: clock.Now, upstream: up}))
	}
	stormLots(t, clock, first, hs...)
}

func stormLots(t *testing.T, clock *storeClock, st ledger.Store, instances ...*harness) {
	ctx := context.Background()
	cust := newCustomer()
	cost := mustMicros(t, "0.003253")
	expiry := clock.Now().Add(time.Second)
	ten := 10
	promo, pack := mustMicros(t, "0.6"), mustMicros(t, "0.2")
	for _, c := range []ledger.Credit{
		{Customer: cust, Amount: promo, Kind: ledger.KindGrant, Key: "promo", Priority: &ten, ExpiresAt: expiry},
		{Customer: cust, Amount: pack, Kind: ledger.KindTopup, Key: "pack"},
	} {
		if _, err := st.Credit(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	ok, refused := fire(t, cust, func(n int64) {
		// The promotion expires mid-storm, early enough that it still
		// holds credits: n counts the clients that have read their
		// answer, and on a loaded machine the proxy may have charged far
		// more requests by then (the promotion pays for 184; at n = 100
		// it was once spent already).
		if n == stormRequests/10 {
			clock.Advance(time.Second)
		}
	}, instances...)
	waitSettled(t, st, cust, ok, 5*time.Second)

	acct, err := st.Account(ctx, cust)
	if err != nil {
		t.Fatal(err)
	}
	page, err := st.Entries(ctx, cust, "", ledger.MaxPageSize)
	if err != nil {
		t.Fatal(err)
	}
	// Replay the ledger, oldest first, past the two credits.
	entries := page.Entries
	slices.Reverse(entries)
	promoLeft, packLeft, debt := promo, pack, money.Micros(0)
	var expired *ledger.Entry
	var sum money.Micros
	for i, e := range entries {
		sum += e.Amount
		if i < 2 {
			continue
		}
		switch e.Kind {
		case ledger.KindCharge:
			if e.Amount != -cost {
				t.Errorf("a charge of %s, want %s", -e.Amount, cost)
			}
			take := -e.Amount
			if expired == nil {
				n := min(take, promoLeft)
				promoLeft, take = promoLeft-n, take-n
			}
			n := min(take, packLeft)
			packLeft, debt = packLeft-n, debt+take-n
		case ledger.KindExpire:
			if expired != nil || e.Lot != "1" || e.Amount != -promoLeft || !e.At.Equal(expiry) {
				t.Fatalf("expire entry %+v: the promotion (lot 1) held %s when it expired at %s", e, promoLeft, expiry)
			}
			expired = &entries[i]
			promoLeft = 0
		default:
			t.Fatalf("unexpected entry %+v", e)
		}
	}
	if expired == nil {
		t.Fatalf("the promotion did not expire with credits left (%s left of %s): the storm did not test expiry", promoLeft, promo)
	}
	if acct.Balance != sum || acct.Balance != packLeft-debt || acct.Debt != debt || acct.Reserved != 0 {
		t.Errorf("balance %s, ledger sum %s, debt %s, reserved %s; want balance %s = ledger sum, debt %s, nothing reserved",
			acct.Balance, sum, acct.Debt, acct.Reserved, packLeft-debt, debt)
	}
	if debt > -expired.Amount {
		t.Errorf("debt %s is more than the expiry took away (%s): requests admitted after it overspent", debt, -expired.Amount)
	}
	t.Logf("%d succeeded, %d refused with 402; the promotion expired with %s left; debt %s", ok, refused, -expired.Amount, debt)
}
