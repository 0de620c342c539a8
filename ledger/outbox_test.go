package ledger_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/ledger"
	"github.com/tollgate-dev/tollgate/money"
)

// eventOpts turns events on with thresholds 10 and 1 credits.
var eventOpts = ledger.Options{Events: &ledger.EventOptions{LowBalance: []money.Micros{money.MustParse("10"), money.MustParse("1")}}}

// eventTests is the events behaviour every store must show.
var eventTests = []struct {
	name string
	fn   func(t *testing.T, e *env)
}{
	{"LowOncePerCrossingAndRearmed", testEventsLow},
	{"LowStormEmitsOnce", testEventsLowStorm},
	{"DepletedOnceAndRearmedByCredit", testEventsDepleted},
	{"CreditsGrantedExpiredClawedBack", testEventsCredits},
	{"SweepExpiryWritesEvents", testEventsSweep},
	{"SuspendedAndReinstated", testEventsSuspension},
	{"PlanChangedOncePerChange", testEventsPlanChanged},
	{"NoEventWithoutItsChange", testEventsOnlyWithChange},
	{"PagingAndOrder", testEventsPaging},
}

// TestEventsConformance runs the events tests on every store.
func TestEventsConformance(t *testing.T) {
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			setupRedis(t, b)
			for _, tc := range eventTests {
				t.Run(tc.name, func(t *testing.T) {
					e := newEnv(t, b, eventOpts)
					if rs, ok := redisOf(e.s); ok {
						t.Cleanup(func() {
							for _, c := range e.customers {
								rs.RawClient().Del(context.Background(), ledger.OutboxKey(c))
							}
						})
					}
					tc.fn(t, e)
				})
			}
		})
	}
}

// eventsOf moves pending events and returns every event of customer in
// the log, oldest first, each checked to render as a valid envelope.
func eventsOf(t *testing.T, e *env, customer string) []ledger.Event {
	t.Helper()
	ob := e.s.(ledger.Outbox)
	if _, err := ob.MoveEvents(ctx, false); err != nil {
		t.Fatalf("MoveEvents: %v", err)
	}
	var out []ledger.Event
	after := int64(0)
	for {
		p, err := ob.Events(ctx, after, ledger.MaxPageSize)
		if err != nil {
			t.Fatalf("Events: %v", err)
		}
		for _, ev := range p.Events {
			if ev.Seq <= after {
				t.Fatalf("event %d after %d: not in order", ev.Seq, after)
			}
			after = ev.Seq
			b, err := json.Marshal(ev)
			if err != nil || !json.Valid(b) {
				t.Fatalf("envelope of %s: %s, %v", ev.ID(), b, err)
			}
			if ev.Customer == customer {
				out = append(out, ev)
			}
		}
		if len(p.Events) == 0 || after >= p.Last {
			return out
		}
	}
}

// summary renders events as "type amount" lines, for exact comparison.
func summary(evs []ledger.Event) string {
	var b strings.Builder
	for _, ev := range evs {
		fmt.Fprintf(&b, "%s %s %s|", ev.Type, ev.Amount, ev.Text)
	}
	return b.String()
}

func charge(t *testing.T, e *env, customer, hold string, amount money.Micros) ledger.Entry {
	t.Helper()
	mustReserve(t, e.s, customer, hold, 0, time.Minute)
	return mustSettle(t, e.s, customer, hold, amount)
}

// testEventsLow: balance.low once per downward crossing of each threshold
// (10 and 1), re-armed by a top-up, with the causing entry and the
// available credits after it.
func testEventsLow(t *testing.T, e *env) {
	c := e.customer("low")
	mustCredit(t, e.s, c, 20*money.Credit)
	charge(t, e, c, "h1", 5*money.Credit) // 15: above both
	en := charge(t, e, c, "h2", 6*money.Credit)
	charge(t, e, c, "h3", money.Credit)    // 8: still below 10, no repeat
	charge(t, e, c, "h4", 8*money.Credit)  // 0: below 1
	mustCredit(t, e.s, c, 50*money.Credit) // 50: re-arms both
	charge(t, e, c, "h5", 45*money.Credit)
	evs := eventsOf(t, e, c)
	want := "credits.granted 20.000000 grant|balance.low 10.000000 |balance.low 1.000000 |credits.granted 50.000000 grant|balance.low 10.000000 |"
	if got := summary(evs); got != want {
		t.Fatalf("events:\n got %s\nwant %s", got, want)
	}
	low := evs[1]
	if low.Entry != en.ID || low.Balance != 9*money.Credit || low.Available != 9*money.Credit {
		t.Fatalf("first balance.low = %+v; want entry %s, balance and available 9", low, en.ID)
	}
	b, _ := json.Marshal(low)
	wantJSON := fmt.Sprintf(`{"id":"%s","object":"event","type":"balance.low","created":%d,"customer":"%s","data":{"balance":"9.000000","available":"9.000000","entry_id":"%s","threshold":"10.000000"}}`,
		low.ID(), e.clock.Now().Unix(), c, en.ID)
	if string(b) != wantJSON {
		t.Fatalf("envelope:\n got %s\nwant %s", b, wantJSON)
	}
}

// testEventsLowStorm: many concurrent charges cross the threshold once.
func testEventsLowStorm(t *testing.T, e *env) {
	c := e.customer("storm")
	mustCredit(t, e.s, c, 30*money.Credit)
	var wg sync.WaitGroup
	for i := range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h := fmt.Sprintf("s%d", i)
			if err := e.s.Reserve(ctx, c, h, 0, time.Minute); err != nil {
				t.Error(err)
				return
			}
			if _, err := e.s.Settle(ctx, c, h, money.Credit/2, ledger.Charge{Reference: h}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait() // 30 - 20 = 10: not below 10 yet
	charge(t, e, c, "last", money.Credit/2)
	charge(t, e, c, "more", money.Credit/2)
	if got, want := summary(eventsOf(t, e, c)), "credits.granted 30.000000 grant|balance.low 10.000000 |"; got != want {
		t.Fatalf("events:\n got %s\nwant %s", got, want)
	}
}

// testEventsDepleted: the first refusal after credits writes
// balance.depleted, later ones nothing, until a credit re-arms it; a
// customer never credited writes nothing (and gets no keys).
func testEventsDepleted(t *testing.T, e *env) {
	c := e.customer("dep")
	mustCredit(t, e.s, c, money.Credit)
	for i := range 3 {
		err := e.s.Reserve(ctx, c, fmt.Sprintf("r%d", i), 2*money.Credit, time.Minute)
		if !errors.Is(err, ledger.ErrInsufficientCredits) {
			t.Fatalf("reserve %d: %v", i, err)
		}
	}
	mustCredit(t, e.s, c, money.Credit)
	if err := e.s.Reserve(ctx, c, "again", 3*money.Credit, time.Minute); !errors.Is(err, ledger.ErrInsufficientCredits) {
		t.Fatal(err)
	}
	// A customer whose first credit is below a threshold never fell
	// below it: no balance.low.
	want := "credits.granted 1.000000 grant|balance.depleted 2.000000 |credits.granted 1.000000 grant|balance.depleted 3.000000 |"
	if got := summary(eventsOf(t, e, c)); got != want {
		t.Fatalf("events:\n got %s\nwant %s", got, want)
	}
	stranger := e.customer("stranger")
	if err := e.s.Reserve(ctx, stranger, "x", money.Credit, time.Minute); !errors.Is(err, ledger.ErrInsufficientCredits) {
		t.Fatal(err)
	}
	if evs := eventsOf(t, e, stranger); len(evs) != 0 {
		t.Fatalf("events of a customer never credited: %s", summary(evs))
	}
	if n := e.b.records(t, e.s, stranger); n != 0 {
		t.Fatalf("a refused stranger left %d records", n)
	}
}

// testEventsCredits: grants, a lot's expiry and a refund's claw-back, each
// with its entry, amount and lot.
func testEventsCredits(t *testing.T, e *env) {
	c := e.customer("credits")
	paid, err := e.s.Credit(ctx, ledger.Credit{Customer: c, Amount: 100 * money.Credit, Kind: ledger.KindTopup, Key: "pay"})
	if err != nil {
		t.Fatal(err)
	}
	promo, err := e.s.Credit(ctx, ledger.Credit{Customer: c, Amount: 5 * money.Credit, Kind: ledger.KindGrant, Key: "promo", ExpiresAt: e.clock.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	refund, err := e.s.Credit(ctx, ledger.Credit{Customer: c, Amount: -95 * money.Credit, Kind: ledger.KindRefund, Key: "refund", FromLot: paid.Lot})
	if err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(time.Hour)
	if _, err := e.s.Account(ctx, c); err != nil {
		t.Fatal(err)
	}
	// A credit that comes expired: granted and expired at once.
	late, err := e.s.Credit(ctx, ledger.Credit{Customer: c, Amount: money.Credit, Kind: ledger.KindGrant, Key: "late", ExpiresAt: e.clock.Now().Add(-time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	evs := eventsOf(t, e, c)
	// 100, 105, 10 (not below 10), 5 (below 10), 6, 5.
	want := "credits.granted 100.000000 topup|credits.granted 5.000000 grant|credits.clawed_back -95.000000 refund|" +
		"credits.expired -5.000000 |balance.low 10.000000 |credits.granted 1.000000 grant|credits.expired -1.000000 |"
	if got := summary(evs); got != want {
		t.Fatalf("events:\n got %s\nwant %s", got, want)
	}
	checks := []struct {
		ev         ledger.Event
		entry, lot string
		balance    money.Micros
	}{
		{evs[0], paid.Entry.ID, paid.Lot, 100 * money.Credit},
		{evs[1], promo.Entry.ID, promo.Lot, 105 * money.Credit},
		{evs[2], refund.Entry.ID, paid.Lot, 10 * money.Credit},
		{evs[3], "4", promo.Lot, 5 * money.Credit},
		{evs[5], late.Entry.ID, late.Lot, 6 * money.Credit},
		{evs[6], "6", late.Lot, 5 * money.Credit},
	}
	for i, ch := range checks {
		if ch.ev.Entry != ch.entry || ch.ev.Lot != ch.lot || ch.ev.Balance != ch.balance || ch.ev.Available != ch.balance {
			t.Errorf("check %d: %+v; want entry %s lot %s balance %s", i, ch.ev, ch.entry, ch.lot, ch.balance)
		}
	}
}

// testEventsSweep: a lot that expires without traffic is announced by
// Sweep.
func testEventsSweep(t *testing.T, e *env) {
	c := e.customer("sweep")
	if _, err := e.s.Credit(ctx, ledger.Credit{Customer: c, Amount: 20 * money.Credit, Kind: ledger.KindGrant, Key: "g", ExpiresAt: e.clock.Now().Add(time.Minute)}); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(time.Minute)
	if _, err := e.s.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	want := "credits.granted 20.000000 grant|credits.expired -20.000000 |balance.low 10.000000 |balance.low 1.000000 |"
	if got := summary(eventsOf(t, e, c)); got != want {
		t.Fatalf("events:\n got %s\nwant %s", got, want)
	}
}

// testEventsSuspension: suspended when the first reason comes into force,
// reinstated when the last is lifted; replays write nothing.
func testEventsSuspension(t *testing.T, e *env) {
	c := e.customer("susp")
	mustCredit(t, e.s, c, 20*money.Credit)
	for _, step := range []func() error{
		func() error { return e.s.Suspend(ctx, c, "dp_1") },
		func() error { return e.s.Suspend(ctx, c, "dp_2") },
		func() error { return e.s.Suspend(ctx, c, "dp_1") },
		func() error { return e.s.Lift(ctx, c, "dp_1") },
		func() error { return e.s.Lift(ctx, c, "dp_2") },
		func() error { return e.s.Lift(ctx, c, "dp_2") },
	} {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}
	evs := eventsOf(t, e, c)
	want := "credits.granted 20.000000 grant|customer.suspended 0.000000 dp_1|customer.reinstated 0.000000 dp_2|"
	if got := summary(evs); got != want {
		t.Fatalf("events:\n got %s\nwant %s", got, want)
	}
	if evs[1].Balance != 20*money.Credit || evs[1].Entry != "" {
		t.Fatalf("suspended: %+v", evs[1])
	}
}

// testEventsPlanChanged: every write that changes a customer's plan
// inputs announces plan.changed with the new version; a replayed, stale
// or same write announces nothing.
func testEventsPlanChanged(t *testing.T, e *env) {
	c := e.customer("plan")
	mustCredit(t, e.s, c, 5*money.Credit)
	for _, step := range []func() (ledger.PlanWrite, error){
		func() (ledger.PlanWrite, error) { return e.s.PutSubscription(ctx, c, `{"plan":"pro"}`, 10) },
		func() (ledger.PlanWrite, error) { return e.s.PutSubscription(ctx, c, `{"plan":"pro"}`, 11) }, // same value
		func() (ledger.PlanWrite, error) { return e.s.PutSubscription(ctx, c, `{"plan":"free"}`, 5) }, // stale
		func() (ledger.PlanWrite, error) { return e.s.PutOverride(ctx, c, `{"plan":"team"}`) },
		func() (ledger.PlanWrite, error) { return e.s.PutOverride(ctx, c, `{"plan":"team"}`) }, // same
		func() (ledger.PlanWrite, error) { return e.s.PutOverride(ctx, c, "") },
	} {
		if _, err := step(); err != nil {
			t.Fatal(err)
		}
	}
	evs := eventsOf(t, e, c)
	want := "credits.granted 5.000000 grant|plan.changed 0.000000 {\"plan_version\":1}|plan.changed 0.000000 {\"plan_version\":2}|plan.changed 0.000000 {\"plan_version\":3}|"
	if got := summary(evs); got != want {
		t.Fatalf("events:\n got %s\nwant %s", got, want)
	}
	if evs[1].Balance != 5*money.Credit || evs[1].Available != 5*money.Credit || evs[1].Entry != "" {
		t.Fatalf("plan.changed: %+v", evs[1])
	}
	b, err := json.Marshal(evs[3])
	if err != nil || !strings.Contains(string(b), `"plan_version":3`) {
		t.Fatalf("plan.changed envelope %s (%v): want data.plan_version 3", b, err)
	}
}

// testEventsOnlyWithChange: a change the store refuses writes no event,
// and a replayed credit writes none again.
func testEventsOnlyWithChange(t *testing.T, e *env) {
	c := e.customer("only")
	mustCredit(t, e.s, c, 20*money.Credit)
	cr := ledger.Credit{Customer: c, Amount: 5 * money.Credit, Kind: ledger.KindGrant, Key: "k"}
	for range 2 {
		if _, err := e.s.Credit(ctx, cr); err != nil {
			t.Fatal(err)
		}
	}
	cr.Amount = 6 * money.Credit
	if _, err := e.s.Credit(ctx, cr); !errors.Is(err, ledger.ErrIdempotencyConflict) {
		t.Fatal(err)
	}
	if _, err := e.s.Credit(ctx, ledger.Credit{Customer: c, Amount: ledger.MaxAmount, Kind: ledger.KindGrant, Key: "big"}); !errors.Is(err, ledger.ErrInvalidAmount) {
		t.Fatal(err)
	}
	if got, want := summary(eventsOf(t, e, c)), "credits.granted 20.000000 grant|credits.granted 5.000000 grant|"; got != want {
		t.Fatalf("events:\n got %s\nwant %s", got, want)
	}
}

// testEventsPaging: Events pages oldest first from any position, and
// MoveEvents twice moves nothing twice.
func testEventsPaging(t *testing.T, e *env) {
	c := e.customer("page")
	for i := range 7 {
		if _, err := e.s.Credit(ctx, ledger.Credit{Customer: c, Amount: money.Micros(i+1) * money.Credit, Kind: ledger.KindGrant, Key: fmt.Sprint(i)}); err != nil {
			t.Fatal(err)
		}
	}
	all := eventsOf(t, e, c)
	if len(all) != 7 {
		t.Fatalf("%d events, want 7", len(all))
	}
	ob := e.s.(ledger.Outbox)
	if n, err := ob.MoveEvents(ctx, true); err != nil || n != 0 {
		t.Fatalf("MoveEvents again = %d, %v; want 0", n, err)
	}
	p, err := ob.Events(ctx, all[2].Seq, 2)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Events) != 2 || p.Events[0].Seq != all[2].Seq+1 {
		t.Fatalf("page after %d: %+v", all[2].Seq, p.Events)
	}
	for i, ev := range all {
		if ev.Amount != money.Micros(i+1)*money.Credit {
			t.Fatalf("event %d: amount %s, out of order", i, ev.Amount)
		}
	}
}

// TestEventsOff: without Options.Events the stores write no outbox and
// refuse Outbox calls.
func TestEventsOff(t *testing.T) {
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			setupRedis(t, b)
			e := newEnv(t, b, ledger.Options{})
			c := e.customer("off")
			mustCredit(t, e.s, c, money.Credit)
			if _, err := e.s.(ledger.Outbox).Events(ctx, 0, 10); !errors.Is(err, ledger.ErrEventsOff) {
				t.Fatalf("Events: %v", err)
			}
			if rs, ok := redisOf(e.s); ok {
				if n := rs.RawClient().Exists(ctx, ledger.OutboxKey(c)).Val(); n != 0 {
					t.Fatal("an outbox was written with events off")
				}
			}
		})
	}
}

// TestRedisEventMoves: a crash between copying outbox entries to the log
// and deleting them copies nothing twice, and an outbox whose pending
// mark was lost (a crash between the script and the mark) is found by a
// scan; on a single Redis and on a cluster.
func TestRedisEventMoves(t *testing.T) {
	for _, b := range backends()[1:] {
		t.Run(b.name, func(t *testing.T) {
			setupRedis(t, b)
			e := newEnv(t, b, eventOpts)
			rs, _ := redisOf(e.s)
			rc := rs.RawClient()
			c := e.customer("moves")
			t.Cleanup(func() { rc.Del(context.Background(), ledger.OutboxKey(c)) })
			mustCredit(t, e.s, c, 20*money.Credit)
			mustCredit(t, e.s, c, 30*money.Credit)
			copied, err := rc.HGetAll(ctx, ledger.OutboxKey(c)).Result()
			if err != nil {
				t.Fatal(err)
			}
			if got := eventsOf(t, e, c); len(got) != 2 {
				t.Fatalf("%d events, want 2", len(got))
			}
			// The crash: the entries are back in the outbox, as if never
			// deleted, and the customer is pending again.
			if err := rc.HSet(ctx, ledger.OutboxKey(c), copied).Err(); err != nil {
				t.Fatal(err)
			}
			rc.SAdd(ctx, ledger.PendingEventsKey, c)
			if got := summary(eventsOf(t, e, c)); got != "credits.granted 20.000000 grant|credits.granted 30.000000 grant|" {
				t.Fatalf("after a replayed move: %s", got)
			}
			if n := rc.HLen(ctx, ledger.OutboxKey(c)).Val(); n != 2 {
				t.Fatalf("outbox has %d fields after the move, want 2 (n and low)", n)
			}

			mustCredit(t, e.s, c, 5*money.Credit)
			rc.SRem(ctx, ledger.PendingEventsKey, c) // the lost mark
			if got := eventsOf(t, e, c); len(got) != 2 {
				t.Fatalf("%d events without the mark, want 2", len(got))
			}
			if n, err := rs.MoveEvents(ctx, true); err != nil || n != 1 {
				t.Fatalf("MoveEvents with scan = %d, %v; want 1", n, err)
			}
			if got := eventsOf(t, e, c); len(got) != 3 {
				t.Fatalf("%d events after the scan, want 3", len(got))
			}
		})
	}
}
