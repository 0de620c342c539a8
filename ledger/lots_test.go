package ledger_test

import (
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/ledger"
	"github.com/tollgate-dev/tollgate/money"
)

// The conformance cases of credit lots (DESIGN.md "Credit lots"), run on
// every store by TestConformance.

// checkLotInvariants checks, for acct's customer, that the active lots
// hold the balance: every lot has credits left (never zero, never below),
// they come in burn order, the sum of their remaining credits less the
// debt is the balance, debt and active lots never coexist, and
// NextExpiry names the earliest expiry and what expires then.
func checkLotInvariants(t *testing.T, s ledger.Store, acct ledger.Account) {
	t.Helper()
	cust := acct.Customer
	lots, err := s.Lots(ctx, cust)
	if err != nil {
		t.Errorf("invariants of %s: lots: %v", cust, err)
		return
	}
	var sum money.Micros
	var next *ledger.Expiry
	for i, l := range lots {
		if l.Remaining <= 0 || l.Remaining > l.Amount {
			t.Errorf("invariants of %s: lot %s has %s of %s left", cust, l.ID, l.Remaining, l.Amount)
		}
		if l.Priority < 0 || l.Priority > ledger.MaxPriority {
			t.Errorf("invariants of %s: lot %s has priority %d", cust, l.ID, l.Priority)
		}
		if i > 0 && !burnsBefore(lots[i-1], l) {
			t.Errorf("invariants of %s: lot %s listed before lot %s, out of burn order", cust, lots[i-1].ID, l.ID)
		}
		sum += l.Remaining
		if l.ExpiresAt != nil {
			switch {
			case next == nil || l.ExpiresAt.Before(next.At):
				next = &ledger.Expiry{Amount: l.Remaining, At: *l.ExpiresAt}
			case l.ExpiresAt.Equal(next.At):
				next.Amount += l.Remaining
			}
		}
	}
	if acct.Debt < 0 || (acct.Debt > 0 && len(lots) > 0) {
		t.Errorf("invariants of %s: debt %s with %d active lots", cust, acct.Debt, len(lots))
	}
	if len(lots) == ledger.MaxLots {
		return // the rest are not listed
	}
	if sum-acct.Debt != acct.Balance {
		t.Errorf("invariants of %s: lots hold %s, debt %s, but the balance is %s", cust, sum, acct.Debt, acct.Balance)
	}
	if !equalExpiry(next, acct.NextExpiry) {
		t.Errorf("invariants of %s: next expiry %v; the lots say %v", cust, acct.NextExpiry, next)
	}
}

func equalExpiry(a, b *ledger.Expiry) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Amount == b.Amount && a.At.Equal(b.At)
}

// burnsBefore reports whether lot a is spent before lot b: priority
// ascending, then expiry ascending with never last, then oldest first.
func burnsBefore(a, b ledger.Lot) bool {
	if a.Priority != b.Priority {
		return a.Priority < b.Priority
	}
	switch {
	case a.ExpiresAt == nil && b.ExpiresAt != nil:
		return false
	case a.ExpiresAt != nil && b.ExpiresAt == nil:
		return true
	case a.ExpiresAt != nil && !a.ExpiresAt.Equal(*b.ExpiresAt):
		return a.ExpiresAt.Before(*b.ExpiresAt)
	}
	ia, _ := strconv.ParseInt(a.ID, 10, 64)
	ib, _ := strconv.ParseInt(b.ID, 10, 64)
	return ia < ib
}

func prio(n int) *int { return &n }

func mustApply(t *testing.T, s ledger.Store, cr ledger.Credit) ledger.CreditResult {
	t.Helper()
	r, err := s.Credit(ctx, cr)
	if err != nil {
		t.Fatalf("credit %+v: %v", cr, err)
	}
	return r
}

// wantLots checks the customer's active lots, in burn order, as
// "id:remaining" pairs.
func wantLots(t *testing.T, s ledger.Store, customer string, want ...string) []ledger.Lot {
	t.Helper()
	lots, err := s.Lots(ctx, customer)
	if err != nil {
		t.Fatalf("lots of %s: %v", customer, err)
	}
	got := make([]string, len(lots))
	for i, l := range lots {
		got[i] = l.ID + ":" + l.Remaining.String()
	}
	for i, w := range want {
		id, amount, _ := strings.Cut(w, ":")
		want[i] = id + ":" + c(amount).String()
	}
	if !slices.Equal(got, want) {
		t.Fatalf("lots of %s = %v; want %v", customer, got, want)
	}
	return lots
}

// wantDebt checks the balance and debt.
func wantDebt(t *testing.T, s ledger.Store, customer string, balance, debt money.Micros) ledger.Account {
	t.Helper()
	a := mustAccount(t, s, customer)
	if a.Balance != balance || a.Debt != debt {
		t.Fatalf("account %s = balance %s debt %s; want %s, %s", customer, a.Balance, a.Debt, balance, debt)
	}
	return a
}

// allEntries returns the customer's entries, oldest first.
func allEntries(t *testing.T, s ledger.Store, customer string) []ledger.Entry {
	t.Helper()
	var all []ledger.Entry
	cursor := ""
	for {
		p, err := s.Entries(ctx, customer, cursor, ledger.MaxPageSize)
		if err != nil {
			t.Fatalf("entries of %s: %v", customer, err)
		}
		all = append(all, p.Entries...)
		if p.Next == "" {
			break
		}
		cursor = p.Next
	}
	slices.Reverse(all)
	return all
}

// testLotBurnOrder spends lots in burn order: priority ascending, then
// expiry ascending with never last, then oldest first; a charge and a
// debit both follow it, and what no lot covers is debt.
func testLotBurnOrder(t *testing.T, e *env) {
	cust := e.customer("burn")
	now := e.clock.Now()
	in := func(d time.Duration) time.Time { return now.Add(d) }
	add := func(key, amount string, p *int, exp time.Time) ledger.CreditResult {
		return mustApply(t, e.s, ledger.Credit{Customer: cust, Amount: c(amount), Kind: ledger.KindGrant, Key: key, Reference: key, Priority: p, ExpiresAt: exp})
	}
	add("a", "10", nil, time.Time{})        // lot 1: 50, never
	add("b", "10", nil, in(2*time.Hour))    // lot 2: 50, in 2h
	add("c", "10", prio(10), time.Time{})   // lot 3: 10, never
	add("d", "10", prio(50), in(time.Hour)) // lot 4: 50, in 1h
	add("e", "10", nil, time.Time{})        // lot 5: 50, never, newer than lot 1
	f := add("f", "5", prio(0), in(3*time.Hour))
	if f.Lot != "6" || !f.Applied {
		t.Fatalf("credit f = %+v; want lot 6 applied", f)
	}
	lots := wantLots(t, e.s, cust, "6:5", "3:10", "4:10", "2:10", "1:10", "5:10")
	exp := in(3 * time.Hour)
	wantF := ledger.Lot{ID: "6", Kind: ledger.KindGrant, Amount: c("5"), Remaining: c("5"), Priority: 0, ExpiresAt: &exp, Reference: "f", CreatedAt: now}
	if got := lots[0]; got.ID != wantF.ID || got.Kind != wantF.Kind || got.Amount != wantF.Amount || got.Priority != 0 ||
		got.ExpiresAt == nil || !got.ExpiresAt.Equal(exp) || got.Reference != "f" || !got.CreatedAt.Equal(now) {
		t.Fatalf("lot 6 = %+v; want %+v", got, wantF)
	}
	if got := lots[4]; got.ExpiresAt != nil || got.Priority != ledger.DefaultPriority {
		t.Fatalf("lot 1 = %+v; want never-expiring, priority %d", got, ledger.DefaultPriority)
	}
	if a := wantDebt(t, e.s, cust, c("55"), 0); !equalExpiry(a.NextExpiry, &ledger.Expiry{Amount: c("10"), At: in(time.Hour)}) {
		t.Fatalf("next expiry = %+v; want 10 in 1h", a.NextExpiry)
	}

	mustReserve(t, e.s, cust, "h1", c("12"), ttl)
	mustSettle(t, e.s, cust, "h1", c("12")) // lot 6 whole, 7 of lot 3
	wantLots(t, e.s, cust, "3:3", "4:10", "2:10", "1:10", "5:10")
	mustApply(t, e.s, ledger.Credit{Customer: cust, Amount: c("-20"), Kind: ledger.KindAdjust, Key: "fix"}) // lots 3, 4, and 7 of lot 2
	if a := wantDebt(t, e.s, cust, c("23"), 0); !equalExpiry(a.NextExpiry, &ledger.Expiry{Amount: c("3"), At: in(2 * time.Hour)}) {
		t.Fatalf("next expiry = %+v; want 3 in 2h", a.NextExpiry)
	}
	wantLots(t, e.s, cust, "2:3", "1:10", "5:10")
	mustReserve(t, e.s, cust, "h2", c("23"), ttl)
	en := mustSettle(t, e.s, cust, "h2", c("30")) // every lot, and 7 of debt
	if en.Amount != c("-30") || en.BalanceAfter != c("-7") {
		t.Fatalf("charge beyond every lot = %+v", en)
	}
	wantLots(t, e.s, cust)
	if a := wantDebt(t, e.s, cust, c("-7"), c("7")); a.NextExpiry != nil {
		t.Fatalf("next expiry with no lot = %+v", a.NextExpiry)
	}
}

// testLotExpiryBoundary expires a lot at exactly its expiry, whichever
// call comes first then: each one sees the balance without it, and the
// expire entry is the same, dated at the expiry.
func testLotExpiryBoundary(t *testing.T, e *env) {
	first := map[string]func(t *testing.T, cust string){
		"account": func(t *testing.T, cust string) { wantAccount(t, e.s, cust, c("5"), c("1")) },
		"reserve": func(t *testing.T, cust string) {
			err := e.s.Reserve(ctx, cust, "big", c("5"), ttl)
			var ice *ledger.InsufficientCreditsError
			if !errors.As(err, &ice) || ice.Available != c("4") {
				t.Fatalf("reserve at the expiry: %v; want 4 available", err)
			}
		},
		"settle": func(t *testing.T, cust string) {
			if en := mustSettle(t, e.s, cust, "live", c("1")); en.ID != "5" || en.BalanceAfter != c("4") {
				t.Fatalf("settle at the expiry = %+v; want entry 5 leaving 4", en)
			}
		},
		"credit": func(t *testing.T, cust string) {
			if r := mustCredit(t, e.s, cust, c("1")); r.Entry.ID != "5" || r.Entry.BalanceAfter != c("6") {
				t.Fatalf("credit at the expiry = %+v; want entry 5 leaving 6", r)
			}
		},
		"debit": func(t *testing.T, cust string) {
			r := mustApply(t, e.s, ledger.Credit{Customer: cust, Amount: c("-6"), Kind: ledger.KindAdjust, Key: "debit"})
			if r.Entry.ID != "5" || r.Entry.BalanceAfter != c("-1") {
				t.Fatalf("debit at the expiry = %+v; want entry 5 leaving -1", r)
			}
		},
		"lots": func(t *testing.T, cust string) { wantLots(t, e.s, cust, "2:5") },
		"entries": func(t *testing.T, cust string) {
			p, err := e.s.Entries(ctx, cust, "", 1)
			if err != nil || len(p.Entries) != 1 || p.Entries[0].Kind != ledger.KindExpire {
				t.Fatalf("entries at the expiry = %+v, %v; want the expire entry first", p, err)
			}
		},
		"release": func(t *testing.T, cust string) {
			if err := e.s.Release(ctx, cust, "live"); err != nil {
				t.Fatal(err)
			}
		},
		"extend": func(t *testing.T, cust string) { mustExtend(t, e.s, cust, "live", ttl) },
		"sweep": func(t *testing.T, cust string) {
			if _, err := e.s.Sweep(ctx); err != nil {
				t.Fatal(err)
			}
		},
	}
	names := make([]string, 0, len(first))
	for name := range first {
		names = append(names, name)
	}
	slices.Sort(names)
	start := e.clock.Now()
	at := start.Add(time.Hour)
	for _, name := range names {
		cust := e.customer("boundary-" + name)
		mustApply(t, e.s, ledger.Credit{Customer: cust, Amount: c("10"), Kind: ledger.KindGrant, Key: "promo", Reference: "promo", ExpiresAt: at})
		mustApply(t, e.s, ledger.Credit{Customer: cust, Amount: c("5"), Kind: ledger.KindTopup, Key: "pack", Priority: prio(60)})
		mustReserve(t, e.s, cust, "h0", c("3"), 2*time.Hour)
		mustSettle(t, e.s, cust, "h0", c("2")) // from the expiring lot: 8 left
		mustReserve(t, e.s, cust, "live", c("1"), 2*time.Hour)
	}
	e.clock.Advance(time.Hour - time.Millisecond)
	for _, name := range names {
		cust := e.prefix + "-boundary-" + name
		a := mustAccount(t, e.s, cust)
		if a.Balance != c("13") || a.Available != c("12") || !equalExpiry(a.NextExpiry, &ledger.Expiry{Amount: c("8"), At: at}) {
			t.Fatalf("%s a millisecond before the expiry: %+v", name, a)
		}
	}
	e.clock.Advance(time.Millisecond)
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			cust := e.prefix + "-boundary-" + name
			first[name](t, cust)
			all := allEntries(t, e.s, cust)
			want := ledger.Entry{ID: "4", Customer: cust, Kind: ledger.KindExpire, Amount: c("-8"), BalanceAfter: c("5"), Reference: "promo", Lot: "1", At: at}
			if len(all) < 4 || all[3] != want {
				t.Fatalf("entries = %+v\nwant entry 4 = %+v", all, want)
			}
			if a := mustAccount(t, e.s, cust); a.NextExpiry != nil {
				t.Fatalf("next expiry after the only expiring lot expired = %+v", a.NextExpiry)
			}
		})
	}
}

// testLotExpiryRaces lets lots expire under live holds and between
// concurrent reserves and settles. Holds are not tied to lots: a hold
// reserved before its credits expired still settles, from other lots or
// as debt, and the store orders every charge before or after an expiry,
// never both, so that the entries replay exactly: charges take from the
// expiring lot until the expire entry takes what is left of it.
func testLotExpiryRaces(t *testing.T, e *env) {
	cust := e.customer("under-hold")
	mustApply(t, e.s, ledger.Credit{Customer: cust, Amount: c("10"), Kind: ledger.KindGrant, Key: "g", ExpiresAt: e.clock.Now().Add(time.Minute)})
	mustReserve(t, e.s, cust, "h1", c("8"), ttl)
	e.clock.Advance(time.Minute - time.Millisecond)
	mustReserve(t, e.s, cust, "h2", c("2"), ttl) // the last 2 available
	wantErr(t, e.s.Reserve(ctx, cust, "h3", 1, ttl), ledger.ErrInsufficientCredits)
	e.clock.Advance(time.Millisecond)
	en := mustSettle(t, e.s, cust, "h1", c("5"))
	if en.ID != "3" || en.BalanceAfter != c("-5") {
		t.Fatalf("settle after the lot expired = %+v; want entry 3 leaving -5", en)
	}
	wantDebt(t, e.s, cust, c("-5"), c("5"))
	if err := e.s.Release(ctx, cust, "h2"); err != nil {
		t.Fatal(err)
	}
	wantErr(t, e.s.Reserve(ctx, cust, "h4", 0, ttl), ledger.ErrInsufficientCredits)

	const workers, rounds = 8, 12
	for round := range 3 {
		cust := e.customer(fmt.Sprintf("storm%d", round))
		expiry := e.clock.Now().Add(time.Duration(10+5*round) * time.Millisecond)
		mustApply(t, e.s, ledger.Credit{Customer: cust, Amount: 30, Kind: ledger.KindGrant, Key: "promo", Priority: prio(10), ExpiresAt: expiry})
		mustApply(t, e.s, ledger.Credit{Customer: cust, Amount: 10, Kind: ledger.KindTopup, Key: "pack"})
		var wg sync.WaitGroup
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range rounds {
					hold := fmt.Sprintf("w%d-%d", w, i)
					err := e.s.Reserve(ctx, cust, hold, 1, ttl)
					if errors.Is(err, ledger.ErrInsufficientCredits) {
						return
					}
					if err != nil {
						t.Error(err)
						return
					}
					if _, err := e.s.Settle(ctx, cust, hold, 1, ledger.Charge{Reference: hold}); err != nil {
						t.Error(err)
						return
					}
				}
			}()
		}
		for range 40 { // the clock crosses the expiry while they run
			e.clock.Advance(time.Millisecond)
			runtime.Gosched()
		}
		wg.Wait()
		// Replay the entries: charges spend the promo lot (priority 10)
		// first, until its expiry takes whatever it still held.
		promo, pack, debt, expired := money.Micros(30), money.Micros(10), money.Micros(0), false
		for _, en := range allEntries(t, e.s, cust)[2:] {
			switch en.Kind {
			case ledger.KindCharge:
				switch {
				case !expired && promo > 0:
					promo--
				case pack > 0:
					pack--
				default:
					debt++
				}
			case ledger.KindExpire:
				if expired || en.Lot != "1" || en.Amount != -promo || !en.At.Equal(expiry) {
					t.Fatalf("round %d: expire entry %+v; the promo lot held %s, expiring at %s", round, en, promo, expiry)
				}
				expired, promo = true, 0
			default:
				t.Fatalf("round %d: unexpected entry %+v", round, en)
			}
		}
		if promo > 0 && !expired {
			t.Fatalf("round %d: the promo lot still held %s after its expiry, but no expire entry recorded it", round, promo)
		}
		// Only holds live when the promo lot expired can overdraw, by
		// their amount (1) each.
		if debt > workers {
			t.Fatalf("round %d: debt %s; at most %d holds were live when the lot expired", round, debt, workers)
		}
		wantDebt(t, e.s, cust, pack-debt, debt)
	}
}

// testDebtThenRepay charges beyond every lot, then credits: a credit
// repays debt first and only the rest becomes a lot; a credit that comes
// expired repays nothing.
func testDebtThenRepay(t *testing.T, e *env) {
	cust := e.customer("debtor")
	now := e.clock.Now()
	mustCredit(t, e.s, cust, c("10"))
	mustReserve(t, e.s, cust, "h1", c("10"), ttl)
	mustSettle(t, e.s, cust, "h1", c("15"))
	wantDebt(t, e.s, cust, c("-5"), c("5"))
	wantLots(t, e.s, cust)

	r := mustApply(t, e.s, ledger.Credit{Customer: cust, Amount: c("3"), Kind: ledger.KindGrant, Key: "small", ExpiresAt: now.Add(time.Hour)})
	if r.Lot != "3" || r.Entry.BalanceAfter != c("-2") {
		t.Fatalf("credit into debt = %+v", r)
	}
	if a := wantDebt(t, e.s, cust, c("-2"), c("2")); a.NextExpiry != nil {
		t.Fatalf("next expiry of a lot that only repaid debt: %+v", a.NextExpiry)
	}
	wantLots(t, e.s, cust)
	wantErr(t, e.s.Reserve(ctx, cust, "h2", 0, ttl), ledger.ErrInsufficientCredits)

	mustApply(t, e.s, ledger.Credit{Customer: cust, Amount: c("10"), Kind: ledger.KindTopup, Key: "pack", Priority: prio(20)})
	lots := wantLots(t, e.s, cust, "4:8")
	if lots[0].Amount != c("10") || lots[0].Priority != 20 || lots[0].Kind != ledger.KindTopup {
		t.Fatalf("lot after repaying debt = %+v; want amount 10, priority 20", lots[0])
	}
	wantDebt(t, e.s, cust, c("8"), 0)

	mustApply(t, e.s, ledger.Credit{Customer: cust, Amount: c("-20"), Kind: ledger.KindAdjust, Key: "fix"})
	wantDebt(t, e.s, cust, c("-12"), c("12"))
	wantLots(t, e.s, cust)
	// A credit that comes expired is recorded and expires at once; it
	// must not become spendable by paying debt.
	mustApply(t, e.s, ledger.Credit{Customer: cust, Amount: c("4"), Kind: ledger.KindGrant, Key: "late", ExpiresAt: now})
	wantDebt(t, e.s, cust, c("-12"), c("12"))
	mustApply(t, e.s, ledger.Credit{Customer: cust, Amount: c("12"), Kind: ledger.KindTopup, Key: "settle-up"})
	wantDebt(t, e.s, cust, 0, 0)
	wantLots(t, e.s, cust)
	mustReserve(t, e.s, cust, "h3", 0, ttl)
	mustCredit(t, e.s, cust, c("1"))
	wantLots(t, e.s, cust, "9:1")
}

// testRefundFromLot claws a refund back from the lot its payment created
// first, then in burn order, then as debt; cumulative refunds keep taking
// from that lot, and a spent lot is simply skipped.
func testRefundFromLot(t *testing.T, e *env) {
	cust := e.customer("refund")
	refund := func(key, total, from string) ledger.CreditResult {
		t.Helper()
		return mustApply(t, e.s, ledger.Credit{Customer: cust, Amount: c(total), Kind: ledger.KindRefund, Key: key, Cumulative: true, FromLot: from})
	}
	topup := mustApply(t, e.s, ledger.Credit{Customer: cust, Amount: c("100"), Kind: ledger.KindTopup, Key: "cs_1", Reference: "pi_1"})
	mustApply(t, e.s, ledger.Credit{Customer: cust, Amount: c("50"), Kind: ledger.KindGrant, Key: "in_1", Priority: prio(10), ExpiresAt: e.clock.Now().Add(30 * 24 * time.Hour)})
	mustReserve(t, e.s, cust, "h1", c("30"), ttl)
	mustSettle(t, e.s, cust, "h1", c("30")) // from the grant, spent first
	wantLots(t, e.s, cust, "2:20", "1:100")
	if r := refund("claw:pi_1", "-40", topup.Lot); !r.Applied || r.Lot != "" {
		t.Fatalf("refund = %+v; want applied, no lot", r)
	}
	wantLots(t, e.s, cust, "2:20", "1:60")
	refund("claw:pi_1", "-100", topup.Lot) // the rest of the top-up
	wantLots(t, e.s, cust, "2:20")
	if r := refund("claw:pi_1", "-100", topup.Lot); r.Applied {
		t.Fatalf("replayed refund applied: %+v", r)
	}
	wantDebt(t, e.s, cust, c("20"), 0)

	second := mustApply(t, e.s, ledger.Credit{Customer: cust, Amount: c("40"), Kind: ledger.KindTopup, Key: "cs_2"})
	if second.Lot != "6" {
		t.Fatalf("second top-up = %+v; want lot 6", second)
	}
	mustReserve(t, e.s, cust, "h2", c("50"), ttl)
	mustSettle(t, e.s, cust, "h2", c("50")) // the grant's 20, then 30 of the top-up
	wantLots(t, e.s, cust, "6:10")
	refund("claw:pi_2", "-40", second.Lot) // 10 from its lot, 30 of debt
	wantLots(t, e.s, cust)
	wantDebt(t, e.s, cust, c("-30"), c("30"))

	// A lot that is no longer active is skipped: the refund takes in
	// burn order.
	other := e.customer("refund-spent")
	mustCredit(t, e.s, other, c("10"))
	promo := mustApply(t, e.s, ledger.Credit{Customer: other, Amount: c("10"), Kind: ledger.KindGrant, Key: "promo", Priority: prio(0)})
	mustReserve(t, e.s, other, "h1", c("10"), ttl)
	mustSettle(t, e.s, other, "h1", c("10"))
	mustApply(t, e.s, ledger.Credit{Customer: other, Amount: c("-4"), Kind: ledger.KindRefund, Key: "claw", FromLot: promo.Lot})
	wantLots(t, e.s, other, "1:6")
	// So is an id that was never a lot of this customer.
	mustApply(t, e.s, ledger.Credit{Customer: other, Amount: c("-1"), Kind: ledger.KindRefund, Key: "claw2", FromLot: "999"})
	wantLots(t, e.s, other, "1:5")
}

// testCreditComesExpired records a credit whose expiry has already passed
// (a late invoice.paid for a period that is over): its entry and an
// expire entry at once, nothing spendable, and replays change nothing.
func testCreditComesExpired(t *testing.T, e *env) {
	cust := e.customer("late")
	mustCredit(t, e.s, cust, c("5"))
	e.clock.Advance(time.Hour)
	now := e.clock.Now()
	late := ledger.Credit{Customer: cust, Amount: c("10"), Kind: ledger.KindGrant, Key: "in_late", Reference: "in_late", ExpiresAt: now}
	r := mustApply(t, e.s, late)
	want := ledger.Entry{ID: "2", Customer: cust, Kind: ledger.KindGrant, Amount: c("10"), BalanceAfter: c("15"), Reference: "in_late", At: now}
	if !r.Applied || r.Lot != "2" || r.Entry != want {
		t.Fatalf("credit = %+v\nwant applied lot 2, %+v", r, want)
	}
	all := allEntries(t, e.s, cust)
	wantExpire := ledger.Entry{ID: "3", Customer: cust, Kind: ledger.KindExpire, Amount: c("-10"), BalanceAfter: c("5"), Reference: "in_late", Lot: "2", At: now}
	if len(all) != 3 || all[2] != wantExpire {
		t.Fatalf("entries = %+v\nwant last %+v", all, wantExpire)
	}
	wantLots(t, e.s, cust, "1:5")
	wantAccount(t, e.s, cust, c("5"), 0)
	e.clock.Advance(time.Minute)
	if again := mustApply(t, e.s, late); again.Applied || again.Entry != want || again.Lot != "2" {
		t.Fatalf("replay = %+v; want the first entry, not applied", again)
	}
	wantAccount(t, e.s, cust, c("5"), 0)
	// An expiry long past does the same; one a millisecond ahead is a
	// spendable lot.
	mustApply(t, e.s, ledger.Credit{Customer: cust, Amount: c("7"), Kind: ledger.KindGrant, Key: "older", ExpiresAt: now.Add(-24 * time.Hour)})
	wantAccount(t, e.s, cust, c("5"), 0)
	mustApply(t, e.s, ledger.Credit{Customer: cust, Amount: c("7"), Kind: ledger.KindGrant, Key: "soon", ExpiresAt: e.clock.Now().Add(time.Millisecond)})
	wantAccount(t, e.s, cust, c("12"), 0)
	e.clock.Advance(time.Millisecond)
	wantAccount(t, e.s, cust, c("5"), 0)
}

// testLotsCumulativeReplay: each applied part of a cumulative credit is
// a lot of its own, and a replay creates none, whatever expiry or
// priority it names.
func testLotsCumulativeReplay(t *testing.T, e *env) {
	cust := e.customer("cumulative")
	grant := func(total string) ledger.CreditResult {
		return mustApply(t, e.s, ledger.Credit{Customer: cust, Amount: c(total), Kind: ledger.KindGrant, Key: "usage-bonus", Cumulative: true})
	}
	grant("10")
	if r := grant("25"); r.Lot != "2" || r.Entry.Amount != c("15") {
		t.Fatalf("second cumulative grant = %+v; want lot 2 of 15", r)
	}
	if r := grant("20"); r.Applied || r.Lot != "2" {
		t.Fatalf("smaller cumulative total = %+v; want the latest entry, not applied", r)
	}
	wantLots(t, e.s, cust, "1:10", "2:15")
	one := ledger.Credit{Customer: cust, Amount: c("5"), Kind: ledger.KindGrant, Key: "once", Priority: prio(5)}
	mustApply(t, e.s, one)
	one.Priority, one.ExpiresAt = prio(90), e.clock.Now().Add(time.Hour)
	if r := mustApply(t, e.s, one); r.Applied || r.Lot != "3" {
		t.Fatalf("replay with another expiry and priority = %+v; want lot 3, not applied", r)
	}
	lots := wantLots(t, e.s, cust, "3:5", "1:10", "2:15")
	if lots[0].Priority != 5 || lots[0].ExpiresAt != nil {
		t.Fatalf("replayed lot = %+v; want the first application's priority 5, no expiry", lots[0])
	}
}

// testSweepLots expires the lots of customers without traffic: the
// sweeper records their expire entries on time.
func testSweepLots(t *testing.T, e *env) {
	a, b := e.customer("a"), e.customer("b")
	now := e.clock.Now()
	mustApply(t, e.s, ledger.Credit{Customer: a, Amount: c("10"), Kind: ledger.KindGrant, Key: "g", ExpiresAt: now.Add(time.Minute)})
	mustCredit(t, e.s, a, c("5"))
	mustApply(t, e.s, ledger.Credit{Customer: b, Amount: c("3"), Kind: ledger.KindGrant, Key: "g", ExpiresAt: now.Add(2 * time.Minute)})
	mustApply(t, e.s, ledger.Credit{Customer: b, Amount: c("4"), Kind: ledger.KindGrant, Key: "h", ExpiresAt: now.Add(2 * time.Minute)})
	sweptLots := func(want int64) {
		t.Helper()
		if n, err := e.s.Sweep(ctx); err != nil || n != 0 {
			t.Fatalf("sweep = %d, %v; want no holds", n, err)
		}
		var got int64
		for _, entry := range e.logs.TakeAll() {
			if entry.Message == "swept expired lots" {
				got += entry.ContextMap()["lots"].(int64)
			}
		}
		if got != want {
			t.Fatalf("sweep expired %d lots; want %d", got, want)
		}
	}
	sweptLots(0)
	e.clock.Advance(time.Minute)
	sweptLots(1)
	sweptLots(0)
	e.clock.Advance(time.Minute)
	sweptLots(2)
	wantAccount(t, e.s, a, c("5"), 0)
	wantAccount(t, e.s, b, 0, 0)
	if all := allEntries(t, e.s, b); len(all) != 4 || all[2].Kind != ledger.KindExpire || all[2].Lot != "1" || all[3].Lot != "2" {
		t.Fatalf("entries of b = %+v; want both lots expired, oldest first", all)
	}
}

// testManyLots keeps 150 lots of mixed priorities and expiries in burn
// order through credits, charges and expiries, against a model; and
// lists at most MaxLots lots.
func testManyLots(t *testing.T, e *env) {
	cust := e.customer("many")
	now := e.clock.Now()
	var model []ledger.Lot
	for i := range 150 {
		cr := ledger.Credit{Customer: cust, Amount: money.Micros(1000 + i), Kind: ledger.KindGrant, Key: fmt.Sprintf("k%d", i), Priority: prio(i * 7 % 5 * 25)}
		var exp *time.Time
		if i%3 != 0 {
			at := now.Add(time.Duration(1+i*11%17) * time.Hour)
			cr.ExpiresAt, exp = at, &at
		}
		r := mustApply(t, e.s, cr)
		model = append(model, ledger.Lot{ID: r.Lot, Remaining: cr.Amount, Priority: *cr.Priority, ExpiresAt: exp})
	}
	check := func(when string) {
		t.Helper()
		slices.SortFunc(model, func(a, b ledger.Lot) int {
			if burnsBefore(a, b) {
				return -1
			}
			return 1
		})
		lots, err := e.s.Lots(ctx, cust)
		if err != nil {
			t.Fatal(err)
		}
		if len(lots) != len(model) {
			t.Fatalf("%s: %d lots; want %d", when, len(lots), len(model))
		}
		for i, l := range lots {
			if l.ID != model[i].ID || l.Remaining != model[i].Remaining {
				t.Fatalf("%s: lot %d is %s with %s; want %s with %s", when, i, l.ID, l.Remaining, model[i].ID, model[i].Remaining)
			}
		}
	}
	check("after the credits")
	spend := func(amount money.Micros) {
		for amount > 0 {
			take := min(amount, model[0].Remaining)
			model[0].Remaining -= take
			amount -= take
			if model[0].Remaining == 0 {
				model = model[1:]
			}
		}
	}
	for i := range 40 {
		hold := fmt.Sprintf("h%d", i)
		mustReserve(t, e.s, cust, hold, 2500, ttl)
		mustSettle(t, e.s, cust, hold, 2500)
		spend(2500)
	}
	check("after the charges")
	e.clock.Advance(5 * time.Hour)
	model = slices.DeleteFunc(model, func(l ledger.Lot) bool { return l.ExpiresAt != nil && !l.ExpiresAt.After(e.clock.Now()) })
	check("after 5 hours")

	crowd := e.customer("crowd")
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < ledger.MaxLots+10; i += 16 {
				if _, err := e.s.Credit(ctx, ledger.Credit{Customer: crowd, Amount: 1, Kind: ledger.KindGrant, Key: fmt.Sprintf("k%d", i)}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	lots, err := e.s.Lots(ctx, crowd)
	if err != nil || len(lots) != ledger.MaxLots || lots[0].ID != "1" || lots[ledger.MaxLots-1].ID != strconv.Itoa(ledger.MaxLots) {
		t.Fatalf("lots of a customer with %d: %d listed (%v); want the first %d", ledger.MaxLots+10, len(lots), err, ledger.MaxLots)
	}
	wantAccount(t, e.s, crowd, ledger.MaxLots+10, 0)
}

// testLotValidation refuses lot settings that make no sense, before any
// I/O, with ErrInvalidArgument.
func testLotValidation(t *testing.T, e *env) {
	cust := e.customer("lotcheck")
	now := e.clock.Now()
	for name, cr := range map[string]ledger.Credit{
		"priority below 0":      {Amount: 1, Kind: ledger.KindGrant, Priority: prio(-1)},
		"priority above 100":    {Amount: 1, Kind: ledger.KindGrant, Priority: prio(101)},
		"expiry on a debit":     {Amount: -1, Kind: ledger.KindAdjust, ExpiresAt: now.Add(time.Hour)},
		"priority on a debit":   {Amount: -1, Kind: ledger.KindAdjust, Priority: prio(10)},
		"from lot on a credit":  {Amount: 1, Kind: ledger.KindGrant, FromLot: "1"},
		"from lot not a number": {Amount: -1, Kind: ledger.KindRefund, FromLot: "one"},
		"from lot zero-padded":  {Amount: -1, Kind: ledger.KindRefund, FromLot: "01"},
		"from lot negative":     {Amount: -1, Kind: ledger.KindRefund, FromLot: "-1"},
		"expiry before 1970":    {Amount: 1, Kind: ledger.KindGrant, ExpiresAt: time.Unix(-1, 0)},
		"expiry after 2248":     {Amount: 1, Kind: ledger.KindGrant, ExpiresAt: time.UnixMilli(ledger.MaxExpiryMilli)},
		"kind expire":           {Amount: 1, Kind: ledger.KindExpire},
	} {
		cr.Customer, cr.Key = cust, "k"
		if _, err := e.s.Credit(ctx, cr); !errors.Is(err, ledger.ErrInvalidArgument) {
			t.Errorf("%s: %v; want ErrInvalidArgument", name, err)
		}
	}
	wantAccount(t, e.s, cust, 0, 0)
	// The edges are fine.
	mustApply(t, e.s, ledger.Credit{Customer: cust, Amount: 1, Kind: ledger.KindGrant, Key: "p0", Priority: prio(0)})
	mustApply(t, e.s, ledger.Credit{Customer: cust, Amount: 1, Kind: ledger.KindGrant, Key: "p100", Priority: prio(ledger.MaxPriority), ExpiresAt: time.UnixMilli(ledger.MaxExpiryMilli - 1)})
	mustApply(t, e.s, ledger.Credit{Customer: cust, Amount: -1, Kind: ledger.KindRefund, Key: "lot0", FromLot: ledger.MigratedLot})
	wantLots(t, e.s, cust, "2:0.000001")
}
