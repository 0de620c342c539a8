package ledger

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"reflect"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tollgate-dev/tollgate/internal/redistest"
	"github.com/tollgate-dev/tollgate/money"
	"github.com/tollgate-dev/tollgate/usage"
)

// testClock is a clock that moves only when advanced.
type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// TestRedisMatchesBolt drives a RedisStore and a BoltStore through the
// same random operations on the same clock (holds of many lifetimes,
// renewals, settles, releases and credits of known and unknown holds and keys,
// credits creating lots of every priority and expiry, some already expired,
// debits and refunds from named lots, reads of accounts and lots, sweeps,
// and clock jumps past hold and lot expiry and retention) and requires
// the same answer from both every time. After every operation it also
// checks the invariants of the Redis layout that the scripts rely on to
// skip work (lua/lib.lua): account.expire_at, account.forget_at and
// account.lot_expire_at are at most the smallest score of their sorted
// sets, reserved is the sum of the live holds, and the lot keys agree
// with each other and hold the balance.
func TestRedisMatchesBolt(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	ctx := context.Background()
	for seed := range uint64(4) {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			clock := &testClock{now: time.Now().UTC().Truncate(time.Millisecond)}
			opts := Options{Now: clock.Now, Retention: time.Hour, releasedKeep: time.Hour}
			bolt, err := OpenBolt(filepath.Join(t.TempDir(), "ledger.db"), opts)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { bolt.Close() })
			red := NewRedisStore(redis.NewClient(&redis.Options{Addr: srv.Addr, Protocol: 2}), opts)
			t.Cleanup(func() { red.Close() })
			customers := []string{
				fmt.Sprintf("diff-%d-%d-a", time.Now().UnixNano(), seed),
				fmt.Sprintf("diff-%d-%d-b", time.Now().UnixNano(), seed),
			}
			t.Cleanup(func() {
				for _, c := range customers {
					rdb.Del(context.Background(), customerKeys(c)...)
				}
			})

			rng := rand.New(rand.NewPCG(seed, 42))
			ttls := []time.Duration{time.Millisecond, 50 * time.Millisecond, time.Second, time.Minute, 10 * time.Minute}
			jumps := []time.Duration{0, time.Millisecond, 30 * time.Millisecond, time.Second, 2 * time.Minute, 40 * time.Minute, 2 * time.Hour}
			hold := func() string { return "h" + strconv.Itoa(rng.IntN(40)) }
			lotIDs := map[string][]string{} // lots credits created, for debits to name
			for step := range 1500 {
				cust := customers[rng.IntN(len(customers))]
				var op string
				var gotR, gotB any
				switch k := rng.IntN(100); {
				case k < 30:
					id, amount, ttl := hold(), money.Micros(rng.IntN(400)), ttls[rng.IntN(len(ttls))]
					op = fmt.Sprintf("Reserve(%s, %s, %d, %s)", cust, id, amount, ttl)
					gotR = outcome(red.ReserveAvailable(ctx, cust, id, amount, ttl))
					gotB = outcome(bolt.ReserveAvailable(ctx, cust, id, amount, ttl))
				case k < 50:
					id, actual := hold(), money.Micros(rng.IntN(600))
					ch := Charge{Reference: id, Route: "/v1/chat/completions", Model: "m", Tokens: usage.Tokens{InputTokens: int64(rng.IntN(9)), OutputTokens: int64(rng.IntN(9))}}
					op = fmt.Sprintf("Settle(%s, %s, %d)", cust, id, actual)
					gotR = outcome(red.Settle(ctx, cust, id, actual, ch))
					gotB = outcome(bolt.Settle(ctx, cust, id, actual, ch))
				case k < 62:
					id := hold()
					op = fmt.Sprintf("Release(%s, %s)", cust, id)
					gotR = outcome(nil, red.Release(ctx, cust, id))
					gotB = outcome(nil, bolt.Release(ctx, cust, id))
				case k < 72:
					c := randomCredit(rng, cust, clock.Now(), lotIDs[cust])
					op = fmt.Sprintf("Credit(%s, %s, %d, %s, expires %s, priority %v, from %q)", cust, c.Key, c.Amount, c.Kind, c.ExpiresAt, c.Priority, c.FromLot)
					r, err := red.Credit(ctx, c)
					gotR = outcome(r, err)
					gotB = outcome(bolt.Credit(ctx, c))
					if r.Lot != "" {
						lotIDs[cust] = append(lotIDs[cust], r.Lot)
					}
				case k < 78:
					id, ttl := hold(), ttls[rng.IntN(len(ttls))]
					op = fmt.Sprintf("Extend(%s, %s, %s)", cust, id, ttl)
					gotR = outcome(nil, red.Extend(ctx, cust, id, ttl))
					gotB = outcome(nil, bolt.Extend(ctx, cust, id, ttl))
				case k < 80:
					op = fmt.Sprintf("Account(%s)", cust)
					gotR = outcome(red.Account(ctx, cust))
					gotB = outcome(bolt.Account(ctx, cust))
				case k < 82:
					op = fmt.Sprintf("Lots(%s)", cust)
					gotR = outcome(red.Lots(ctx, cust))
					gotB = outcome(bolt.Lots(ctx, cust))
				case k < 86:
					op = "Sweep"
					// Only the errors compare: the counts differ by
					// design, since bolt's Account reads past an expired
					// hold where Redis's closes it, so the next Sweep
					// finds one more in bolt.
					_, errR := red.sweepCustomers(ctx, customers)
					_, errB := bolt.Sweep(ctx)
					gotR, gotB = outcome(nil, errR), outcome(nil, errB)
				case k < 88:
					reason := "r" + strconv.Itoa(rng.IntN(2))
					op = fmt.Sprintf("Suspend(%s, %s)", cust, reason)
					gotR = outcome(nil, red.Suspend(ctx, cust, reason))
					gotB = outcome(nil, bolt.Suspend(ctx, cust, reason))
				case k < 90:
					reason := "r" + strconv.Itoa(rng.IntN(2))
					op = fmt.Sprintf("Lift(%s, %s)", cust, reason)
					gotR = outcome(nil, red.Lift(ctx, cust, reason))
					gotB = outcome(nil, bolt.Lift(ctx, cust, reason))
				default:
					// Time passes. Both stores then close the holds that
					// expired, at the same moment, by releasing a hold
					// id never used: a read in Redis closes expired
					// holds but one in bolt does not, so a hold would
					// otherwise start its retention at different times
					// in the two stores (see the report of this test).
					clock.Advance(jumps[rng.IntN(len(jumps))])
					for _, c := range customers {
						errR, errB := red.Release(ctx, c, "probe"), bolt.Release(ctx, c, "probe")
						if errR != nil || errB != nil {
							t.Fatalf("step %d: release probe: %v / %v", step, errR, errB)
						}
						checkRedisLayout(t, rdb, c, fmt.Sprintf("step %d: after the clock moved", step))
					}
					continue
				}
				if !reflect.DeepEqual(gotR, gotB) {
					t.Fatalf("step %d: %s\nredis: %+v\nbolt:  %+v", step, op, gotR, gotB)
				}
				checkRedisLayout(t, rdb, cust, fmt.Sprintf("step %d: %s", step, op))
			}
			for _, cust := range customers {
				pr, errR := red.Entries(ctx, cust, "", MaxPageSize)
				pb, errB := bolt.Entries(ctx, cust, "", MaxPageSize)
				if errR != nil || errB != nil || !reflect.DeepEqual(pr, pb) {
					t.Errorf("entries of %s differ: redis %v %+v\nbolt %v %+v", cust, errR, pr, errB, pb)
				}
			}
		})
	}
}

// randomCredit returns a credit for the differential test: a few keys
// (some replay, some conflict, most are new), both signs, lots of random
// priority and expiry (none, passed, due now, or soon), debits from a
// named lot (one of the latest lots created, or any id) or in burn order.
func randomCredit(rng *rand.Rand, customer string, now time.Time, lots []string) Credit {
	// A quarter reuse a few keys (replays and conflicts), the rest are
	// new.
	key := "k" + strconv.Itoa(rng.IntN(6))
	if rng.IntN(4) > 0 {
		key = "u" + strconv.FormatUint(rng.Uint64(), 36)
	}
	c := Credit{Customer: customer, Amount: money.Micros(rng.IntN(3000) - 800), Kind: KindGrant, Key: key}
	if c.Amount == 0 {
		c.Amount = 1
	}
	if c.Amount < 0 {
		c.Kind = KindRefund
		switch k := rng.IntN(4); {
		case k < 2 && len(lots) > 0:
			c.FromLot = lots[max(0, len(lots)-1-rng.IntN(4))]
		case k < 3:
			c.FromLot = strconv.Itoa(rng.IntN(60))
		}
		return c
	}
	if rng.IntN(3) > 0 {
		p := rng.IntN(5) * 25
		c.Priority = &p
	}
	offsets := []time.Duration{-time.Second, 0, time.Millisecond, 50 * time.Millisecond, time.Second, time.Minute, 10 * time.Minute, 2 * time.Hour}
	if rng.IntN(3) > 0 {
		c.ExpiresAt = now.Add(offsets[rng.IntN(len(offsets))])
	}
	return c
}

// sweepCustomers runs the sweep script on the given customers only, as
// Sweep would when it finds them, so that a test sharing a Redis with
// other tests counts only its own holds.
func (s *RedisStore) sweepCustomers(ctx context.Context, customers []string) (int, error) {
	now, total := s.now(), 0
	for _, c := range customers {
		n, _, err := s.sweepCustomer(ctx, c, now)
		if err != nil {
			return total, err
		}
		total += n
	}
	return total, nil
}

// outcome is a comparable summary of a store call's result: the value
// and which sentinel the error matches (error texts differ between the
// stores).
func outcome(v any, err error) any {
	if err == nil {
		return v
	}
	var ice *InsufficientCreditsError
	if errors.As(err, &ice) {
		return *ice
	}
	for _, s := range []error{ErrCustomerSuspended, ErrDuplicateHold, ErrHoldNotFound, ErrHoldReleased, ErrHoldSettled, ErrHoldExpired,
		ErrIdempotencyConflict, ErrInvalidAmount, ErrInvalidArgument, ErrStoreUnavailable} {
		if errors.Is(err, s) {
			return s
		}
	}
	return "unexpected error: " + err.Error()
}

// checkRedisLayout checks the invariants lua/lib.lua states for
// customer's keys.
func checkRedisLayout(t *testing.T, rdb *redis.Client, customer, when string) {
	t.Helper()
	ctx := context.Background()
	keys := customerKeys(customer)
	acct, err := rdb.HGetAll(ctx, keys[0]).Result()
	if err != nil {
		t.Fatal(err)
	}
	holds, err := rdb.HGetAll(ctx, keys[1]).Result()
	if err != nil {
		t.Fatal(err)
	}
	for i, field := range map[int]string{2: "expire_at", 3: "forget_at"} {
		first, err := rdb.ZRangeWithScores(ctx, keys[i], 0, 0).Result()
		if err != nil {
			t.Fatal(err)
		}
		if len(first) == 0 {
			continue
		}
		bound, ok := acct[field]
		if !ok {
			t.Fatalf("%s: %s has members but account.%s is missing", when, keys[i], field)
		}
		if b, _ := strconv.ParseFloat(bound, 64); b > first[0].Score {
			t.Fatalf("%s: account.%s = %s above the smallest score %.0f of %s", when, field, bound, first[0].Score, keys[i])
		}
	}
	live, err := rdb.ZRange(ctx, keys[2], 0, -1).Result()
	if err != nil {
		t.Fatal(err)
	}
	var sum int64
	for _, id := range live {
		amount, _, ok := cutLive(holds[id])
		if !ok {
			t.Fatalf("%s: hold %s in hold:expiry is %q in holds, not live", when, id, holds[id])
		}
		sum += amount
	}
	forget, err := rdb.ZRangeWithScores(ctx, keys[3], 0, -1).Result()
	if err != nil {
		t.Fatal(err)
	}
	closed := map[string]float64{}
	for _, z := range forget {
		closed[z.Member.(string)] = z.Score
	}
	nlive := 0
	for id, v := range holds {
		if _, _, ok := cutLive(v); ok {
			nlive++
			continue
		}
		var state string
		var at float64
		if _, err := fmt.Sscanf(v, "%s %f", &state, &at); err != nil {
			t.Fatalf("%s: hold %s is %q", when, id, v)
		}
		if score, ok := closed[id]; !ok || score != at {
			t.Fatalf("%s: closed hold %s (%q) has score %v in hold:forget (present: %v)", when, id, v, score, ok)
		}
		delete(closed, id)
	}
	if len(closed) > 0 {
		t.Fatalf("%s: hold:forget names holds that are not closed: %v", when, closed)
	}
	if nlive != len(live) {
		t.Fatalf("%s: %d live holds in holds, %d in hold:expiry", when, nlive, len(live))
	}
	if reserved, _ := strconv.ParseInt(acct["reserved"], 10, 64); reserved != sum {
		t.Fatalf("%s: account.reserved = %d, live holds sum to %d", when, reserved, sum)
	}
	checkRedisLots(t, rdb, customer, acct, when)
}

// checkRedisLots checks the lot keys of customer against each other and
// against the account: every lot is in lots:burn at its burn score and,
// when it expires, in lots:expiry at its expiry; nothing else is in
// either; account.head, when set, is the first lot in burn order, and its
// head_rem what that lot has left; account.lot_expire_at is at most the
// earliest expiry; lots hold
// what they should (remaining > 0, sum of remaining - debt = balance,
// debt only without lots); and account.lots, on an account with entries,
// is that balance.
func checkRedisLots(t *testing.T, rdb *redis.Client, customer string, acct map[string]string, when string) {
	t.Helper()
	ctx := context.Background()
	keys := customerKeys(customer)
	lots, err := rdb.HGetAll(ctx, keys[7]).Result()
	if err != nil {
		t.Fatal(err)
	}
	burn, err := rdb.ZRangeWithScores(ctx, keys[8], 0, -1).Result()
	if err != nil {
		t.Fatal(err)
	}
	expiry, err := rdb.ZRangeWithScores(ctx, keys[9], 0, -1).Result()
	if err != nil {
		t.Fatal(err)
	}
	burnScore := map[string]float64{}
	for _, z := range burn {
		burnScore[z.Member.(string)] = z.Score
	}
	expiryScore := map[string]float64{}
	for _, z := range expiry {
		expiryScore[z.Member.(string)] = z.Score
	}
	// The head cache: the first lot in burn order, whose record may hold
	// more than it has left.
	head, cached := acct["head"]
	if cached {
		if len(burn) == 0 || burn[0].Member != head {
			t.Fatalf("%s: account.head %q is not the first lot in burn order %v", when, head, burn)
		}
		if _, ok := acct["head_rem"]; !ok {
			t.Fatalf("%s: account.head without head_rem: %v", when, acct)
		}
	} else if _, ok := acct["head_rem"]; ok {
		t.Fatalf("%s: account.head_rem without head: %v", when, acct)
	}
	var sum int64
	expiring := 0
	for pid, raw := range lots {
		l, err := parseLotRecord(raw)
		if err != nil {
			t.Fatalf("%s: lot %s: %v", when, pid, err)
		}
		if len(pid) != lotIDWidth {
			t.Fatalf("%s: lot id %q is not padded", when, pid)
		}
		if cached && pid == head {
			rem, _ := strconv.ParseInt(acct["head_rem"], 10, 64)
			if rem <= 0 || rem > l.remaining {
				t.Fatalf("%s: head lot %s has %d left by the cache, %d by its record", when, pid, rem, l.remaining)
			}
			l.remaining = rem
		}
		sum += l.remaining
		never := int64(1<<43 - 1)
		exp := l.expires
		if exp == 0 {
			exp = never
		}
		if want := float64(int64(l.priority)<<43 + exp); burnScore[pid] != want {
			t.Fatalf("%s: lot %s (%q) has burn score %.0f; want %.0f", when, pid, raw, burnScore[pid], want)
		}
		if l.expires > 0 {
			expiring++
			if expiryScore[pid] != float64(l.expires) {
				t.Fatalf("%s: lot %s (%q) has expiry score %.0f", when, pid, raw, expiryScore[pid])
			}
		}
	}
	if len(burn) != len(lots) || len(expiry) != expiring {
		t.Fatalf("%s: %d lots, %d in lots:burn, %d expiring but %d in lots:expiry", when, len(lots), len(burn), expiring, len(expiry))
	}
	if len(expiry) > 0 {
		bound, ok := acct["lot_expire_at"]
		if b, _ := strconv.ParseFloat(bound, 64); !ok || b > expiry[0].Score {
			t.Fatalf("%s: account.lot_expire_at = %q (present: %v) above the earliest lot expiry %.0f", when, bound, ok, expiry[0].Score)
		}
	}
	balance, _ := strconv.ParseInt(acct["balance"], 10, 64)
	debt, _ := strconv.ParseInt(acct["debt"], 10, 64)
	if debt < 0 || (debt > 0 && len(lots) > 0) || sum-debt != balance {
		t.Fatalf("%s: lots hold %d, debt %d (with %d lots), balance %d", when, sum, debt, len(lots), balance)
	}
	if seq, _ := strconv.ParseInt(acct["seq"], 10, 64); seq > 0 && acct["lots"] != acct["balance"] {
		t.Fatalf("%s: account.lots %q is not the balance %q the lots hold: %v", when, acct["lots"], acct["balance"], acct)
	}
}

// cutLive parses a live holds value, "<amount> <attempt>".
func cutLive(v string) (int64, string, bool) {
	var amount int64
	var attempt string
	if _, err := fmt.Sscanf(v, "%d %s", &amount, &attempt); err != nil {
		return 0, "", false
	}
	return amount, attempt, true
}
