package ledger_test

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/ledger"
	"github.com/tollgate-dev/tollgate/money"
)

func mustPlan(t *testing.T, s ledger.Store, customer string) ledger.PlanState {
	t.Helper()
	ps, err := s.Plan(ctx, customer)
	if err != nil {
		t.Fatalf("plan of %s: %v", customer, err)
	}
	return ps
}

func wantWrite(t *testing.T, what string, w ledger.PlanWrite, err error, want ledger.PlanWrite) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	if w != want {
		t.Fatalf("%s = %+v; want %+v", what, w, want)
	}
}

// testPlanWrites: subscription states apply in ordering-key order whatever
// order they arrive in, replays change nothing, overrides set and clear,
// and every change (only a change) bumps the version.
func testPlanWrites(t *testing.T, e *env) {
	cust := e.customer("plan")
	if ps := mustPlan(t, e.s, cust); ps != (ledger.PlanState{}) {
		t.Fatalf("plan of an unknown customer = %+v; want zeros", ps)
	}
	// Removing an override nobody set writes nothing, not even a record.
	w, err := e.s.PutOverride(ctx, cust, "")
	wantWrite(t, "clear of nothing", w, err, ledger.PlanWrite{})
	if n := e.b.records(t, e.s, cust); n != 0 {
		t.Fatalf("clearing no override left %d records", n)
	}

	w, err = e.s.PutSubscription(ctx, cust, "active@20", 20)
	wantWrite(t, "first", w, err, ledger.PlanWrite{Changed: true, State: ledger.PlanState{Version: 1, Subscription: "active@20", SubscriptionOrder: 20}})
	w, err = e.s.PutSubscription(ctx, cust, "active@20", 20)
	wantWrite(t, "replay", w, err, ledger.PlanWrite{State: ledger.PlanState{Version: 1, Subscription: "active@20", SubscriptionOrder: 20}})
	w, err = e.s.PutSubscription(ctx, cust, "trialing@10", 10)
	wantWrite(t, "older", w, err, ledger.PlanWrite{Stale: true, State: ledger.PlanState{Version: 1, Subscription: "active@20", SubscriptionOrder: 20}})
	w, err = e.s.PutSubscription(ctx, cust, "active@20", 25)
	wantWrite(t, "same value, later order", w, err, ledger.PlanWrite{State: ledger.PlanState{Version: 1, Subscription: "active@20", SubscriptionOrder: 25}})
	w, err = e.s.PutSubscription(ctx, cust, "past_due@20", 20)
	wantWrite(t, "older than the raised order", w, err, ledger.PlanWrite{Stale: true, State: ledger.PlanState{Version: 1, Subscription: "active@20", SubscriptionOrder: 25}})
	w, err = e.s.PutSubscription(ctx, cust, "past_due@25", 25)
	wantWrite(t, "equal order, new value", w, err, ledger.PlanWrite{Changed: true, State: ledger.PlanState{Version: 2, Subscription: "past_due@25", SubscriptionOrder: 25}})
	w, err = e.s.PutOverride(ctx, cust, "ovr-pro")
	wantWrite(t, "set override", w, err, ledger.PlanWrite{Changed: true, State: ledger.PlanState{Version: 3, Subscription: "past_due@25", SubscriptionOrder: 25, Override: "ovr-pro"}})
	w, err = e.s.PutOverride(ctx, cust, "ovr-pro")
	wantWrite(t, "same override", w, err, ledger.PlanWrite{State: ledger.PlanState{Version: 3, Subscription: "past_due@25", SubscriptionOrder: 25, Override: "ovr-pro"}})
	w, err = e.s.PutSubscription(ctx, cust, "canceled@30", 30)
	wantWrite(t, "newer beside an override", w, err, ledger.PlanWrite{Changed: true, State: ledger.PlanState{Version: 4, Subscription: "canceled@30", SubscriptionOrder: 30, Override: "ovr-pro"}})
	w, err = e.s.PutOverride(ctx, cust, "")
	wantWrite(t, "clear override", w, err, ledger.PlanWrite{Changed: true, State: ledger.PlanState{Version: 5, Subscription: "canceled@30", SubscriptionOrder: 30}})
	if ps := mustPlan(t, e.s, cust); ps != (ledger.PlanState{Version: 5, Subscription: "canceled@30", SubscriptionOrder: 30}) {
		t.Fatalf("plan = %+v", ps)
	}
	// Plan inputs are not money: the account is untouched.
	wantAccount(t, e.s, cust, 0, 0)

	other := e.customer("plan-other")
	if _, err := e.s.PutOverride(ctx, other, `{"plan":"x"}`); err != nil {
		t.Fatal(err)
	}
	if ps := mustPlan(t, e.s, cust); ps.Override != "" {
		t.Fatalf("another customer's override shows: %+v", ps)
	}

	for _, tc := range []struct {
		name string
		err  error
	}{
		{"empty subscription", func() error { _, err := e.s.PutSubscription(ctx, cust, "", 1); return err }()},
		{"negative order", func() error { _, err := e.s.PutSubscription(ctx, cust, "x", -1); return err }()},
		{"too long", func() error {
			_, err := e.s.PutOverride(ctx, cust, strings.Repeat("x", ledger.MaxPlanValue+1))
			return err
		}()},
		{"not UTF-8", func() error { _, err := e.s.PutOverride(ctx, cust, "\xff"); return err }()},
		{"version below PlanUnknown", reservePlan(e.s, ctx, cust, "h", 0, ttl, -2)},
	} {
		if !errors.Is(tc.err, ledger.ErrInvalidArgument) {
			t.Errorf("%s: error %v; want ErrInvalidArgument", tc.name, tc.err)
		}
	}
	_, err = e.s.PutOverride(ctx, "bad id", "x")
	wantErr(t, err, ledger.ErrInvalidCustomer)
}

func wantPlanChanged(t *testing.T, err error, want ledger.PlanState) {
	t.Helper()
	var pce *ledger.PlanChangedError
	if !errors.As(err, &pce) || !errors.Is(err, ledger.ErrPlanChanged) {
		t.Fatalf("error = %v; want a *PlanChangedError", err)
	}
	if pce.State != want {
		t.Fatalf("PlanChangedError.State = %+v; want %+v", pce.State, want)
	}
}

// testReservePlanVersion: ReservePlan reserves only at the stored version
// and otherwise hands back the stored state, reserving nothing, before
// suspension and credits are looked at; the hold id's own checks come
// first, so that a resent call finds its hold.
func testReservePlanVersion(t *testing.T, e *env) {
	cust := e.customer("rp")
	wantPlanChanged(t, reservePlan(e.s, ctx, cust, "h0", c("1"), ttl, ledger.PlanUnknown), ledger.PlanState{})
	if err := reservePlan(e.s, ctx, cust, "h0", 0, ttl, 0); err != nil {
		t.Fatalf("free reserve of an unknown customer at version 0: %v", err)
	}
	err := reservePlan(e.s, ctx, cust, "h0b", c("1"), ttl, 0)
	var ice *ledger.InsufficientCreditsError
	if !errors.As(err, &ice) {
		t.Fatalf("reserve without credits at the right version: %v; want insufficient credits", err)
	}

	mustCredit(t, e.s, cust, c("10"))
	if err := reservePlan(e.s, ctx, cust, "h1", c("2"), ttl, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := e.s.PutOverride(ctx, cust, "o1"); err != nil {
		t.Fatal(err)
	}
	v1 := ledger.PlanState{Version: 1, Override: "o1"}
	wantPlanChanged(t, reservePlan(e.s, ctx, cust, "h2", c("2"), ttl, 0), v1)
	wantAccount(t, e.s, cust, c("10"), c("2"))
	// Plain Reserve does not look at plans.
	mustReserve(t, e.s, cust, "h3", c("1"), ttl)
	if err := reservePlan(e.s, ctx, cust, "h2", c("2"), ttl, 1); err != nil {
		t.Fatalf("reserve at the stored version: %v", err)
	}
	wantAccount(t, e.s, cust, c("10"), c("5"))
	// A used hold id is a duplicate whatever the version.
	wantErr(t, reservePlan(e.s, ctx, cust, "h1", c("1"), ttl, 0), ledger.ErrDuplicateHold)
	// The version is checked before credits and suspension.
	wantPlanChanged(t, reservePlan(e.s, ctx, cust, "h4", c("100"), ttl, 0), v1)
	if err := e.s.Suspend(ctx, cust, "dp_1"); err != nil {
		t.Fatal(err)
	}
	wantPlanChanged(t, reservePlan(e.s, ctx, cust, "h5", c("1"), ttl, 0), v1)
	wantErr(t, reservePlan(e.s, ctx, cust, "h5", c("1"), ttl, 1), ledger.ErrCustomerSuspended)
	mustSettle(t, e.s, cust, "h1", c("1"))
}

// testReservePlanRace: while the plan inputs change under a stream of
// reservations, no reservation that starts after a change has returned
// succeeds at a version older than that change's.
func testReservePlanRace(t *testing.T, e *env) {
	cust := e.customer("race")
	mustCredit(t, e.s, cust, c("1000000"))
	const (
		changes   = 40
		reservers = 8
	)
	var acked atomic.Int64 // the version of the last change that returned
	var stop atomic.Bool
	var served, refused atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, reservers)
	for g := range reservers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			known := ledger.PlanUnknown
			for i := 0; !stop.Load(); i++ {
				floor := acked.Load()
				hold := "g" + string(rune('a'+g)) + "-" + randomHex(6)
				err := reservePlan(e.s, ctx, cust, hold, c("0.000001"), ttl, known)
				var pce *ledger.PlanChangedError
				switch {
				case err == nil:
					if known < floor {
						errs <- errors.New("a reservation at a version older than an acknowledged change succeeded")
						return
					}
					served.Add(1)
					if err := e.s.Release(ctx, cust, hold); err != nil {
						errs <- err
						return
					}
				case errors.As(err, &pce):
					if pce.State.Version < floor {
						errs <- errors.New("PlanChangedError carries a version older than an acknowledged change")
						return
					}
					known = pce.State.Version
					refused.Add(1)
				default:
					errs <- err
					return
				}
			}
		}()
	}
	for i := range changes {
		// Let the reservers be served between changes, so that both
		// outcomes are exercised however the goroutines are scheduled.
		for served.Load() <= int64(i) && len(errs) == 0 {
			runtime.Gosched()
		}
		w, err := e.s.PutOverride(ctx, cust, "o"+randomHex(2)+string(rune('a'+i%26)))
		if err != nil {
			t.Fatal(err)
		}
		acked.Store(w.State.Version)
	}
	stop.Store(true)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if served.Load() == 0 || refused.Load() == 0 {
		t.Fatalf("served %d, refused %d: the race was not exercised", served.Load(), refused.Load())
	}
	wantAccount(t, e.s, cust, c("1000000"), 0)
}

// reservePlan is s.ReservePlan without the available credits it returns.
func reservePlan(s store, ctx context.Context, customer, holdID string, amount money.Micros, ttl time.Duration, planVersion int64) error {
	_, err := s.ReservePlan(ctx, customer, holdID, amount, ttl, planVersion)
	return err
}
