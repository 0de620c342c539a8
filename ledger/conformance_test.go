package ledger_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/tollgate-dev/tollgate/internal/redistest"
	"github.com/tollgate-dev/tollgate/ledger"
	"github.com/tollgate-dev/tollgate/money"
	"github.com/tollgate-dev/tollgate/usage"
)

// store is what both implementations offer.
type store interface {
	ledger.Store
	ledger.Meta
}

// fakeClock is the stores' clock in tests: it moves only when advanced.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock {
	// Start on a millisecond boundary so that "exactly at expiry" means
	// the same thing to the test and to the stores (which keep unix ms).
	return &fakeClock{now: time.Now().UTC().Truncate(time.Millisecond)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// backend opens stores of one kind. open returns a new store on the
// backend, closed at the end of the test; forget deletes the given
// customers' data and meta/lock keys from a shared backend (nil when each
// store has its own file).
type backend struct {
	name   string
	open   func(t *testing.T, opts ledger.Options) store
	forget func(customers, metaKeys, locks []string)
	// records reports how many records the store keeps for customer:
	// Redis keys, or 1 for a bolt customer bucket.
	records func(t *testing.T, s store, customer string) int
	// admin is a client of the Redis backends' server, nil on bolt.
	admin redis.UniversalClient
}

// env is one conformance test's view of a store.
type env struct {
	b         *backend
	s         store
	clock     *fakeClock
	logs      *observer.ObservedLogs // what the store logged
	prefix    string
	mu        sync.Mutex
	customers []string
	metaKeys  []string
	locks     []string
}

// customer returns a customer id unique to this test run.
func (e *env) customer(name string) string {
	id := e.prefix + "-" + name
	e.mu.Lock()
	e.customers = append(e.customers, id)
	e.mu.Unlock()
	return id
}

func (e *env) metaKey(name string) string {
	k := e.prefix + "-" + name
	e.metaKeys = append(e.metaKeys, k)
	return k
}

func (e *env) lockName(name string) string {
	k := e.prefix + "-" + name
	e.locks = append(e.locks, k)
	return k
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// newEnv opens a store with a fake clock and registers, in this order of
// execution at the end of the test: the invariant check on every customer
// the test used, the deletion of its keys, and closing the store.
func newEnv(t *testing.T, b *backend, opts ledger.Options) *env {
	clock := newFakeClock()
	opts.Now = clock.Now
	core, logs := observer.New(zap.InfoLevel)
	opts.Logger = zap.New(core)
	e := &env{b: b, clock: clock, logs: logs, prefix: "t" + randomHex(4)}
	e.s = b.open(t, opts)
	if b.forget != nil {
		t.Cleanup(func() { b.forget(e.customers, e.metaKeys, e.locks) })
	}
	t.Cleanup(func() {
		for _, c := range e.customers {
			checkInvariants(t, e.s, c)
		}
	})
	return e
}

// checkInvariants checks what must hold for every customer after every
// test: entries run newest first with dense decreasing ids, each entry's
// balance_after is the sum of the amounts up to it, the sum of all amounts
// is the balance, available is balance minus a non-negative reserved, and
// the lots hold the balance (checkLotInvariants).
func checkInvariants(t *testing.T, s ledger.Store, customer string) {
	t.Helper()
	ctx := context.Background()
	acct, err := s.Account(ctx, customer)
	if err != nil {
		t.Errorf("invariants of %s: %v", customer, err)
		return
	}
	var all []ledger.Entry
	cursor := ""
	for {
		p, err := s.Entries(ctx, customer, cursor, ledger.MaxPageSize)
		if err != nil {
			t.Errorf("invariants of %s: %v", customer, err)
			return
		}
		all = append(all, p.Entries...)
		if p.Next == "" {
			break
		}
		cursor = p.Next
	}
	var sum money.Micros
	for i := len(all) - 1; i >= 0; i-- {
		e := all[i]
		if want := fmt.Sprint(len(all) - i); e.ID != want {
			t.Errorf("invariants of %s: entry at position %d has id %s, want %s", customer, i, e.ID, want)
		}
		if e.Customer != customer {
			t.Errorf("invariants of %s: entry %s names customer %q", customer, e.ID, e.Customer)
		}
		sum += e.Amount
		if e.BalanceAfter != sum {
			t.Errorf("invariants of %s: entry %s balance_after %s, sum of amounts so far %s", customer, e.ID, e.BalanceAfter, sum)
		}
	}
	if sum != acct.Balance {
		t.Errorf("invariants of %s: sum of entries %s != balance %s", customer, sum, acct.Balance)
	}
	if acct.Reserved < 0 || acct.Available != acct.Balance-acct.Reserved {
		t.Errorf("invariants of %s: balance %s reserved %s available %s", customer, acct.Balance, acct.Reserved, acct.Available)
	}
	checkLotInvariants(t, s, acct)
}

// backends returns the stores under test: bolt always, then a single Redis
// and a 3-master Redis Cluster, each started by its subtest (and skipped
// there, or failed under CI, without redis-server).
func backends() []*backend {
	return []*backend{
		{
			name: "bolt",
			open: func(t *testing.T, opts ledger.Options) store {
				s, err := ledger.OpenBolt(filepath.Join(t.TempDir(), "ledger.db"), opts)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { s.Close() })
				return s
			},
			records: func(t *testing.T, s store, customer string) int {
				ok, err := s.(*ledger.BoltStore).HasCustomer(customer)
				if err != nil {
					t.Fatal(err)
				}
				if ok {
					return 1
				}
				return 0
			},
		},
		{name: "redis"},
		{name: "cluster"},
		{name: "redis-leases"},
	}
}

// conformanceLeases lease from the first reservation, as much as is
// available, and sync often, so that the conformance tests run on lent
// holds wherever a lease can serve them.
var conformanceLeases = ledger.LeaseOptions{MinRequests: -1, Share: 100, FlushInterval: 5 * time.Millisecond}

// leaseLent and leaseReserved add up the redis-leases stores' holds taken
// from a lease and from Redis: TestConformance checks that leases served.
var leaseLent, leaseReserved atomic.Int64

// setupRedis fills in b's open and forget for the redis and cluster
// backends, starting the servers for the lifetime of t.
func setupRedis(t *testing.T, b *backend) {
	var newClient func() redis.UniversalClient
	var admin redis.UniversalClient
	switch b.name {
	case "redis", "redis-leases":
		srv := redistest.Start(t)
		newClient = func() redis.UniversalClient { return redis.NewClient(&redis.Options{Addr: srv.Addr}) }
	case "cluster":
		c := redistest.StartCluster(t)
		newClient = func() redis.UniversalClient { return redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs}) }
	default:
		return
	}
	admin = newClient()
	t.Cleanup(func() { admin.Close() })
	b.admin = admin
	b.open = func(t *testing.T, opts ledger.Options) store {
		if b.name == "redis-leases" {
			s := ledger.NewLeaseStore(newClient(), opts, conformanceLeases)
			t.Cleanup(func() {
				st := s.Stats()
				leaseLent.Add(st.Lent)
				leaseReserved.Add(st.Reserved)
				s.Close()
			})
			return s
		}
		s := ledger.NewRedisStore(newClient(), opts)
		t.Cleanup(func() { s.Close() })
		return s
	}
	b.records = func(t *testing.T, _ store, customer string) int {
		n, err := admin.Exists(context.Background(), ledger.CustomerKeys(customer)...).Result()
		if err != nil {
			t.Fatal(err)
		}
		return int(n)
	}
	b.forget = func(customers, metaKeys, locks []string) {
		ctx := context.Background()
		for _, c := range customers {
			// One DEL per customer: its keys share one cluster slot.
			if err := admin.Del(ctx, ledger.CustomerKeys(c)...).Err(); err != nil {
				t.Errorf("delete keys of %s: %v", c, err)
			}
		}
		for _, k := range metaKeys {
			admin.Del(ctx, ledger.MetaKey(k))
		}
		for _, k := range locks {
			admin.Del(ctx, ledger.LockKey(k))
		}
	}
}

// conformanceTests is the behaviour every store must show, identically.
var conformanceTests = []struct {
	name string
	opts ledger.Options
	fn   func(t *testing.T, e *env)
}{
	{name: "UnknownCustomerReadsAsZero", fn: testUnknownCustomer},
	{name: "CreditAppendsEntry", fn: testCreditAppendsEntry},
	{name: "CallsReturnTheEntriesTheyList", fn: testReturnedEntriesAreListed},
	{name: "ZeroCostLeavesNoRecord", fn: testZeroCostLeavesNoRecord},
	{name: "ConcurrentReservesNeverOverspend", fn: testConcurrentReserves},
	{name: "ReserveReportsAvailable", fn: testReserveReportsAvailable},
	{name: "RefusalSaysWhetherHoldsBlock", fn: testRefusalHeldBack},
	{name: "SettleAboveHoldGoesNegative", fn: testSettleAboveHold},
	{name: "SettleBelowHoldReleasesRest", fn: testSettleBelowHold},
	{name: "SettleIsIdempotent", fn: testSettleIdempotent},
	{name: "QueueSettleAnswersAsSettle", fn: testQueueSettle},
	{name: "ReleaseIsIdempotent", fn: testReleaseIdempotent},
	{name: "ReleaseBeforeReserveClosesTheID", fn: testReleaseBeforeReserve},
	{name: "ConcurrentSettleAndRelease", fn: testConcurrentSettleRelease},
	{name: "ExpiredHoldStopsCounting", fn: testExpiredHold},
	{name: "ExtendRenewsLiveHold", fn: testExtend},
	{name: "ExtendOfClosedHoldFails", fn: testExtendClosed},
	{name: "ExtendRacesExpiry", fn: testExtendRacesExpiry},
	{name: "CreditIsIdempotent", fn: testCreditIdempotent},
	{name: "CumulativeCredit", fn: testCumulativeCredit},
	{name: "Pagination", fn: testPagination},
	{name: "SuspendAndLift", fn: testSuspendLift},
	{name: "LiftBeforeSuspendStaysLifted", fn: testLiftBeforeSuspend},
	{name: "DuplicateHold", fn: testDuplicateHold},
	{name: "HoldsAreScopedToCustomer", fn: testCustomerScope},
	{name: "Validation", fn: testValidation},
	{name: "AmountBounds", fn: testAmountBounds},
	{name: "Sweep", fn: testSweep},
	{name: "SweepManyHolds", fn: testSweepMany},
	{name: "Retention", opts: ledger.Options{Retention: time.Hour}, fn: testRetention},
	{name: "Meta", fn: testMeta},
	{name: "MetaIfAbsent", fn: testMetaIfAbsent},
	{name: "Locks", fn: testLocks},
	{name: "ClosedStoreIsUnavailable", fn: testClosedStore},
	{name: "ReadyWhenHealthy", fn: testReadyWhenHealthy},
	{name: "LotBurnOrder", fn: testLotBurnOrder},
	{name: "LotExpiresAtTheBoundary", fn: testLotExpiryBoundary},
	{name: "LotExpiryRacesReserveAndSettle", fn: testLotExpiryRaces},
	{name: "DebtThenRepay", fn: testDebtThenRepay},
	{name: "RefundFromPaymentLot", fn: testRefundFromLot},
	{name: "CreditThatComesExpired", fn: testCreditComesExpired},
	{name: "LotsAcrossCumulativeAndReplay", fn: testLotsCumulativeReplay},
	{name: "SweepExpiresLots", fn: testSweepLots},
	{name: "ManyLots", fn: testManyLots},
	{name: "LotValidation", fn: testLotValidation},
	{name: "PlanWritesOrdered", fn: testPlanWrites},
	{name: "ReservePlanChecksVersion", fn: testReservePlanVersion},
	{name: "ReservePlanRacesPlanChange", fn: testReservePlanRace},
}

// testReadyWhenHealthy: a store that answers and takes writes is ready,
// before and after it served, and stays so.
func testReadyWhenHealthy(t *testing.T, e *env) {
	for i := range 3 {
		if err := e.s.Ready(ctx); err != nil {
			t.Fatalf("Ready %d: %v", i, err)
		}
		mustCredit(t, e.s, e.customer("c"), money.Credit)
	}
}

// TestConformance runs every conformance test against every store. The
// stores run in parallel with each other; the tests of one store run one
// at a time, because Sweep with an advanced clock would expire the holds
// of a neighbour sharing the server.
func TestConformance(t *testing.T) {
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			setupRedis(t, b)
			for _, tc := range conformanceTests {
				t.Run(tc.name, func(t *testing.T) {
					tc.fn(t, newEnv(t, b, tc.opts))
				})
			}
			if b.name == "redis-leases" && b.admin != nil {
				// Most holds of the suite must have come from a lease,
				// or it tested the per-request path twice.
				lent, reserved := leaseLent.Load(), leaseReserved.Load()
				t.Logf("holds lent %d, reserved in Redis %d", lent, reserved)
				if lent < reserved {
					t.Errorf("holds lent %d, reserved in Redis %d: leases served too few", lent, reserved)
				}
			}
		})
	}
}

var ctx = context.Background()

func mustCredit(t *testing.T, s ledger.Store, customer string, amount money.Micros) ledger.CreditResult {
	t.Helper()
	r, err := s.Credit(ctx, ledger.Credit{Customer: customer, Amount: amount, Kind: ledger.KindGrant, Key: "k-" + randomHex(6)})
	if err != nil {
		t.Fatalf("credit %s %s: %v", customer, amount, err)
	}
	return r
}

func mustReserve(t *testing.T, s ledger.Store, customer, hold string, amount money.Micros, ttl time.Duration) {
	t.Helper()
	if err := s.Reserve(ctx, customer, hold, amount, ttl); err != nil {
		t.Fatalf("reserve %s %s: %v", hold, amount, err)
	}
}

func mustSettle(t *testing.T, s ledger.Store, customer, hold string, actual money.Micros) ledger.Entry {
	t.Helper()
	e, err := s.Settle(ctx, customer, hold, actual, ledger.Charge{Reference: hold})
	if err != nil {
		t.Fatalf("settle %s %s: %v", hold, actual, err)
	}
	return e
}

func mustAccount(t *testing.T, s ledger.Store, customer string) ledger.Account {
	t.Helper()
	a, err := s.Account(ctx, customer)
	if err != nil {
		t.Fatalf("account %s: %v", customer, err)
	}
	return a
}

// wantAccount checks balance, reserved and available.
func wantAccount(t *testing.T, s ledger.Store, customer string, balance, reserved money.Micros) {
	t.Helper()
	a := mustAccount(t, s, customer)
	if a.Balance != balance || a.Reserved != reserved || a.Available != balance-reserved {
		t.Fatalf("account %s = balance %s reserved %s available %s; want %s, %s, %s", customer, a.Balance, a.Reserved, a.Available, balance, reserved, balance-reserved)
	}
}

func wantErr(t *testing.T, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("error = %v; want %v", err, target)
	}
}

const ttl = 10 * time.Minute

func c(s string) money.Micros { return money.MustParse(s) }

func testUnknownCustomer(t *testing.T, e *env) {
	cust := e.customer("nobody")
	a := mustAccount(t, e.s, cust)
	if a != (ledger.Account{Customer: cust}) {
		t.Fatalf("account of unknown customer = %+v; want zeros", a)
	}
	p, err := e.s.Entries(ctx, cust, "", 0)
	if err != nil || len(p.Entries) != 0 || p.Next != "" {
		t.Fatalf("entries of unknown customer = %+v, %v; want an empty last page", p, err)
	}
	if err := e.s.Release(ctx, cust, "h1"); err != nil {
		t.Fatalf("release of unknown hold: %v", err)
	}
	_, err = e.s.Settle(ctx, cust, "h1", c("1"), ledger.Charge{})
	wantErr(t, err, ledger.ErrHoldNotFound)
}

// testZeroCostLeavesNoRecord checks that free requests naming customers
// the store has never seen create nothing, so that anyone able to send
// requests to a free route cannot grow the store; that the refusals of a
// free request still apply; and that a customer with entries still gets
// its zero charges on record.
func testZeroCostLeavesNoRecord(t *testing.T, e *env) {
	wantRecords := func(customer string, want int) {
		t.Helper()
		if got := e.b.records(t, e.s, customer); got != want {
			t.Fatalf("%s has %d records; want %d", customer, got, want)
		}
	}
	stranger := e.customer("stranger")
	for i := range 3 {
		hold := fmt.Sprintf("free-%d", i)
		mustReserve(t, e.s, stranger, hold, 0, ttl)
		wantRecords(stranger, 0)
		en, err := e.s.Settle(ctx, stranger, hold, 0, ledger.Charge{Reference: hold, Route: "/v1/models", Tokens: usage.Tokens{InputTokens: 3}})
		if err != nil {
			t.Fatalf("settle of a free hold: %v", err)
		}
		want := ledger.Entry{Customer: stranger, Kind: ledger.KindCharge, Reference: hold, Route: "/v1/models", Tokens: usage.Tokens{InputTokens: 3}, At: e.clock.Now()}
		if en != want {
			t.Fatalf("settle of a free hold = %+v\nwant the unrecorded %+v", en, want)
		}
		// A repeat is as idempotent as any settle.
		if again, err := e.s.Settle(ctx, stranger, hold, 0, ledger.Charge{Reference: hold, Route: "/v1/models", Tokens: usage.Tokens{InputTokens: 3}}); err != nil || again != en {
			t.Fatalf("repeated settle = %+v, %v; want %+v", again, err, en)
		}
		wantRecords(stranger, 0)
	}
	mustReserve(t, e.s, stranger, "released", 0, ttl)
	if err := e.s.Release(ctx, stranger, "released"); err != nil {
		t.Fatal(err)
	}
	wantRecords(stranger, 0)
	if a := mustAccount(t, e.s, stranger); a != (ledger.Account{Customer: stranger}) {
		t.Fatalf("account = %+v; want zeros", a)
	}
	// A charge for a hold never stored is still refused: only a zero one
	// is taken for the free hold it was.
	_, err := e.s.Settle(ctx, stranger, "free-0", c("0.000001"), ledger.Charge{})
	wantErr(t, err, ledger.ErrHoldNotFound)
	wantRecords(stranger, 0)

	// Free requests are refused for a suspended customer and for one
	// below zero, as before.
	suspended := e.customer("suspended")
	if err := e.s.Suspend(ctx, suspended, "dp_1"); err != nil {
		t.Fatal(err)
	}
	wantErr(t, e.s.Reserve(ctx, suspended, "h1", 0, ttl), ledger.ErrCustomerSuspended)
	debtor := e.customer("debtor")
	mustCredit(t, e.s, debtor, c("1"))
	mustReserve(t, e.s, debtor, "h1", c("1"), ttl)
	mustSettle(t, e.s, debtor, "h1", c("2"))
	wantErr(t, e.s.Reserve(ctx, debtor, "h2", 0, ttl), ledger.ErrInsufficientCredits)

	// A customer with entries keeps its zero charges on record, with
	// their tokens, and a settled free hold is not reusable.
	known := e.customer("known")
	mustCredit(t, e.s, known, c("1"))
	mustReserve(t, e.s, known, "h1", 0, ttl)
	en, err := e.s.Settle(ctx, known, "h1", 0, ledger.Charge{Reference: "h1", Tokens: usage.Tokens{InputTokens: 3}})
	if err != nil || en.ID != "2" || en.Amount != 0 || en.BalanceAfter != c("1") || en.InputTokens != 3 {
		t.Fatalf("zero settle of a known customer = %+v, %v; want entry 2", en, err)
	}
	wantErr(t, e.s.Reserve(ctx, known, "h1", 0, ttl), ledger.ErrDuplicateHold)
}

// testReturnedEntriesAreListed checks that the entry a Credit or Settle
// returns is the one Entries lists afterwards, field for field, with text
// that JSON must escape and every token count set.
func testReturnedEntriesAreListed(t *testing.T, e *env) {
	cust := e.customer("echo")
	cr, err := e.s.Credit(ctx, ledger.Credit{Customer: cust, Amount: c("5"), Kind: ledger.KindGrant, Key: "k-echo",
		Reference: "in_\"quoted\"\n", Reason: "tab\there, é, \u2028 and \x01"})
	if err != nil {
		t.Fatal(err)
	}
	mustReserve(t, e.s, cust, "h-echo", c("1"), ttl)
	e.clock.Advance(1234567 * time.Nanosecond) // an entry's time keeps microseconds
	tokens := usage.Tokens{InputTokens: 1000, CachedInputTokens: 100, CacheWriteInputTokens: 50, CacheWrite1hInputTokens: 20,
		AudioInputTokens: 5, ImageInputTokens: 6, OutputTokens: 300, AudioOutputTokens: 7, ImageOutputTokens: 8,
		WebSearchCalls: 1, WebFetchCalls: 2, CodeExecutionCalls: 3, FileSearchCalls: 4, CodeInterpreterCalls: 5, ImageGenerationCalls: 6}
	settled, err := e.s.Settle(ctx, cust, "h-echo", c("0.25"), ledger.Charge{Reference: "h-echo", Route: "/v1/chat/completions", Model: "gpt-4o \"mini\"\\", Tokens: tokens})
	if err != nil {
		t.Fatal(err)
	}
	// A model name can come from the URL path (Gemini, Azure), so it may
	// not be UTF-8: each bad byte is stored as U+FFFD, and the call says so.
	mustReserve(t, e.s, cust, "h-bad", c("1"), ttl)
	mangled, err := e.s.Settle(ctx, cust, "h-bad", c("0.5"), ledger.Charge{Reference: "h-bad", Route: "/v1/\xc3", Model: "gpt-\xff\xfe4o"})
	if err != nil {
		t.Fatal(err)
	}
	if mangled.Route != "/v1/\ufffd" || mangled.Model != "gpt-\ufffd\ufffd4o" {
		t.Errorf("Settle returned route %q, model %q; want each invalid byte as U+FFFD", mangled.Route, mangled.Model)
	}
	page, err := e.s.Entries(ctx, cust, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	want := []ledger.Entry{mangled, settled, cr.Entry}
	if len(page.Entries) != len(want) {
		t.Fatalf("Entries lists %d entries; want %d", len(page.Entries), len(want))
	}
	for i, got := range page.Entries {
		if !reflect.DeepEqual(got, want[i]) {
			t.Errorf("Entries lists\n%+v\nthe call returned\n%+v", got, want[i])
		}
	}
}

func testCreditAppendsEntry(t *testing.T, e *env) {
	cust := e.customer("alice")
	r, err := e.s.Credit(ctx, ledger.Credit{Customer: cust, Amount: c("12.5"), Kind: ledger.KindTopup, Key: "cs_1", Reference: "cs_1", Reason: "checkout"})
	if err != nil {
		t.Fatal(err)
	}
	want := ledger.Entry{ID: "1", Customer: cust, Kind: ledger.KindTopup, Amount: c("12.5"), BalanceAfter: c("12.5"), Reference: "cs_1", Reason: "checkout", At: e.clock.Now()}
	if !r.Applied || r.Entry != want {
		t.Fatalf("credit = %+v\nwant applied %+v", r, want)
	}
	mustReserve(t, e.s, cust, "req-1", c("2"), ttl)
	wantAccount(t, e.s, cust, c("12.5"), c("2"))
	e.clock.Advance(time.Second)
	ch := ledger.Charge{Reference: "req-1", Route: "/v1/chat/completions", Model: "gpt-4o-mini", Tokens: usage.Tokens{InputTokens: 1200, CachedInputTokens: 1000, CacheWriteInputTokens: 3, OutputTokens: 50}}
	got, err := e.s.Settle(ctx, cust, "req-1", c("0.25"), ch)
	if err != nil {
		t.Fatal(err)
	}
	want = ledger.Entry{ID: "2", Customer: cust, Kind: ledger.KindCharge, Amount: c("-0.25"), BalanceAfter: c("12.25"), Reference: "req-1", At: e.clock.Now(),
		Route: ch.Route, Model: ch.Model, Tokens: usage.Tokens{InputTokens: 1200, CachedInputTokens: 1000, CacheWriteInputTokens: 3, OutputTokens: 50}}
	if got != want {
		t.Fatalf("settle entry = %+v\nwant %+v", got, want)
	}
	p, err := e.s.Entries(ctx, cust, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Entries) != 2 || p.Entries[0] != want || p.Entries[1] != r.Entry || p.Next != "" {
		t.Fatalf("entries = %+v", p)
	}
	wantAccount(t, e.s, cust, c("12.25"), 0)
}

func testConcurrentReserves(t *testing.T, e *env) {
	const k, n = 10, 40
	cust := e.customer("race")
	mustCredit(t, e.s, cust, c("10"))
	var ok, refused atomic.Int32
	var wg sync.WaitGroup
	stop := make(chan struct{})
	readerDone := make(chan struct{})
	go func() { // available is never seen below zero meanwhile
		defer close(readerDone)
		for {
			select {
			case <-stop:
				return
			default:
			}
			a, err := e.s.Account(ctx, cust)
			if err != nil {
				t.Error(err)
				return
			}
			if a.Available < 0 {
				t.Errorf("available %s < 0 during reservations", a.Available)
				return
			}
		}
	}()
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := e.s.Reserve(ctx, cust, fmt.Sprintf("h%d", i), c("1"), ttl)
			var ice *ledger.InsufficientCreditsError
			switch {
			case err == nil:
				ok.Add(1)
			case errors.As(err, &ice) && errors.Is(err, ledger.ErrInsufficientCredits):
				if ice.Required != c("1") || ice.Available < 0 || ice.Available >= c("1") || ice.Customer != cust {
					t.Errorf("insufficient credits error %+v", ice)
				}
				refused.Add(1)
			default:
				t.Errorf("reserve: %v", err)
			}
		}()
	}
	wg.Wait()
	close(stop)
	<-readerDone
	if ok.Load() != k || refused.Load() != n-k {
		t.Fatalf("%d reserved, %d refused; want %d and %d", ok.Load(), refused.Load(), k, n-k)
	}
	wantAccount(t, e.s, cust, c("10"), c("10"))
}

// testReserveReportsAvailable checks that ReserveAvailable returns the
// available credits with its own hold deducted, for the proxy's
// X-Tollgate-Available, and nothing on a refusal.
func testReserveReportsAvailable(t *testing.T, e *env) {
	cust := e.customer("avail")
	mustCredit(t, e.s, cust, c("10"))
	for _, step := range []struct {
		hold   string
		amount money.Micros
		want   money.Micros
	}{
		{"h1", c("3"), c("7")},
		{"h2", c("2.5"), c("4.5")},
		{"h3", 0, c("4.5")},
		{"h4", c("4.5"), 0},
	} {
		got, err := e.s.ReserveAvailable(ctx, cust, step.hold, step.amount, ttl)
		if err != nil || got != step.want {
			t.Fatalf("ReserveAvailable(%s, %s) = %s, %v; want %s available after", step.hold, step.amount, got, err, step.want)
		}
	}
	wantAccount(t, e.s, cust, c("10"), c("10"))
	mustSettle(t, e.s, cust, "h1", c("1"))
	if got, err := e.s.ReserveAvailable(ctx, cust, "h5", c("0.5"), ttl); err != nil || got != c("1.5") {
		t.Fatalf("ReserveAvailable after a settlement = %s, %v; want 1.500000", got, err)
	}
	if got, err := e.s.ReserveAvailable(ctx, cust, "h6", c("2"), ttl); err == nil || got != 0 {
		t.Fatalf("refused ReserveAvailable = %s, %v; want 0 and insufficient credits", got, err)
	}
	// A free request of a customer the store has never seen: nothing
	// available, nothing stored.
	if got, err := e.s.ReserveAvailable(ctx, e.customer("stranger"), "h1", 0, ttl); err != nil || got != 0 {
		t.Fatalf("free ReserveAvailable of a stranger = %s, %v; want 0, nil", got, err)
	}
}

// testRefusalHeldBack checks the Reserved an *InsufficientCreditsError
// carries, from which the proxy tells a client whether retrying may help:
// only when the balance covers the amount and other holds are in the way.
func testRefusalHeldBack(t *testing.T, e *env) {
	cust := e.customer("heldback")
	mustCredit(t, e.s, cust, c("10"))
	mustReserve(t, e.s, cust, "h1", c("8"), ttl)
	refusal := func(hold string, amount money.Micros) *ledger.InsufficientCreditsError {
		t.Helper()
		err := e.s.Reserve(ctx, cust, hold, amount, ttl)
		var ice *ledger.InsufficientCreditsError
		if !errors.As(err, &ice) {
			t.Fatalf("Reserve(%s) = %v; want insufficient credits", amount, err)
		}
		return ice
	}
	want := ledger.InsufficientCreditsError{Customer: cust, Available: c("2"), Required: c("5"), Reserved: c("8")}
	if ice := refusal("h2", c("5")); *ice != want || !ice.HeldBack() {
		t.Fatalf("refusal = %+v, held back %t; want %+v, held back", *ice, ice.HeldBack(), want)
	}
	// Exactly the balance: still only the hold is in the way.
	if ice := refusal("h3", c("10")); !ice.HeldBack() {
		t.Fatalf("refusal of the whole balance = %+v: not held back", *ice)
	}
	// More than the balance: no hold closing can help.
	want = ledger.InsufficientCreditsError{Customer: cust, Available: c("2"), Required: c("10.000001"), Reserved: c("8")}
	if ice := refusal("h4", c("10.000001")); *ice != want || ice.HeldBack() {
		t.Fatalf("refusal = %+v, held back %t; want %+v, not held back", *ice, ice.HeldBack(), want)
	}
	// No holds at all: the balance is the limit.
	if err := e.s.Release(ctx, cust, "h1"); err != nil {
		t.Fatal(err)
	}
	if ice := refusal("h5", c("11")); ice.Reserved != 0 || ice.HeldBack() {
		t.Fatalf("refusal without holds = %+v, held back %t; want nothing reserved, not held back", *ice, ice.HeldBack())
	}
	// In debt with a hold open: even a free request waits for credits,
	// not for the hold.
	mustReserve(t, e.s, cust, "h6", c("10"), ttl)
	mustReserve(t, e.s, cust, "h7", 0, ttl)
	mustSettle(t, e.s, cust, "h6", c("12"))
	want = ledger.InsufficientCreditsError{Customer: cust, Available: c("-2"), Required: 0, Reserved: 0}
	if ice := refusal("h8", 0); *ice != want || ice.HeldBack() {
		t.Fatalf("refusal in debt = %+v, held back %t; want %+v, not held back", *ice, ice.HeldBack(), want)
	}
}

func testSettleAboveHold(t *testing.T, e *env) {
	cust := e.customer("over")
	mustCredit(t, e.s, cust, c("10"))
	mustReserve(t, e.s, cust, "h1", c("5"), ttl)
	entry := mustSettle(t, e.s, cust, "h1", c("12"))
	if entry.Amount != c("-12") || entry.BalanceAfter != c("-2") {
		t.Fatalf("entry = %+v", entry)
	}
	wantAccount(t, e.s, cust, c("-2"), 0)
	err := e.s.Reserve(ctx, cust, "h2", c("0.000001"), ttl)
	var ice *ledger.InsufficientCreditsError
	if !errors.As(err, &ice) || ice.Available != c("-2") || ice.Required != c("0.000001") {
		t.Fatalf("reserve after overdraft: %v; want insufficient credits, -2 available", err)
	}
	// A free request is refused too while the balance is negative.
	wantErr(t, e.s.Reserve(ctx, cust, "h3", 0, ttl), ledger.ErrInsufficientCredits)
}

func testSettleBelowHold(t *testing.T, e *env) {
	cust := e.customer("under")
	mustCredit(t, e.s, cust, c("10"))
	mustReserve(t, e.s, cust, "h1", c("5"), ttl)
	mustReserve(t, e.s, cust, "h2", c("4"), ttl)
	wantAccount(t, e.s, cust, c("10"), c("9"))
	mustSettle(t, e.s, cust, "h1", c("3"))
	wantAccount(t, e.s, cust, c("7"), c("4"))
	// The released 2 credits can be reserved again at once.
	mustReserve(t, e.s, cust, "h3", c("3"), ttl)
	wantErr(t, e.s.Reserve(ctx, cust, "h4", c("0.000001"), ttl), ledger.ErrInsufficientCredits)
	mustSettle(t, e.s, cust, "h2", 0)
	wantAccount(t, e.s, cust, c("7"), c("3"))
}

func testSettleIdempotent(t *testing.T, e *env) {
	cust := e.customer("idem")
	mustCredit(t, e.s, cust, c("10"))
	mustReserve(t, e.s, cust, "h1", c("5"), ttl)
	first := mustSettle(t, e.s, cust, "h1", c("3"))
	e.clock.Advance(time.Minute)
	again := mustSettle(t, e.s, cust, "h1", c("4")) // a different amount changes nothing
	if again != first {
		t.Fatalf("repeated settle = %+v; want the first entry %+v", again, first)
	}
	wantAccount(t, e.s, cust, c("7"), 0)

	mustReserve(t, e.s, cust, "h2", c("5"), ttl)
	var wg sync.WaitGroup
	entries := make([]ledger.Entry, 10)
	for i := range entries {
		wg.Add(1)
		go func() {
			defer wg.Done()
			en, err := e.s.Settle(ctx, cust, "h2", c("2"), ledger.Charge{})
			if err != nil {
				t.Error(err)
			}
			entries[i] = en
		}()
	}
	wg.Wait()
	for _, en := range entries {
		if en != entries[0] {
			t.Fatalf("concurrent settles returned different entries: %+v and %+v", en, entries[0])
		}
	}
	wantAccount(t, e.s, cust, c("5"), 0)
}

func testReleaseIdempotent(t *testing.T, e *env) {
	cust := e.customer("rel")
	mustCredit(t, e.s, cust, c("10"))
	mustReserve(t, e.s, cust, "h1", c("5"), ttl)
	for i := 0; i < 2; i++ {
		if err := e.s.Release(ctx, cust, "h1"); err != nil {
			t.Fatal(err)
		}
		wantAccount(t, e.s, cust, c("10"), 0)
	}
	_, err := e.s.Settle(ctx, cust, "h1", c("1"), ledger.Charge{})
	wantErr(t, err, ledger.ErrHoldReleased)

	// Release after Settle: nil, and the charge stands.
	mustReserve(t, e.s, cust, "h2", c("5"), ttl)
	mustSettle(t, e.s, cust, "h2", c("1"))
	if err := e.s.Release(ctx, cust, "h2"); err != nil {
		t.Fatal(err)
	}
	wantAccount(t, e.s, cust, c("9"), 0)
	if en := mustSettle(t, e.s, cust, "h2", c("1")); en.ID != "2" {
		t.Fatalf("settle after release of a settled hold = %+v; want the first entry", en)
	}
}

// testReleaseBeforeReserve: a Release that finds no hold by its id still
// closes the id, for a customer with entries, so that a Reserve of it
// arriving afterwards is refused and holds nothing. That is the order a
// proxy's Release after a Reserve whose answer it never got can take on
// Redis: both written while Redis is paused, served on different
// connections once it resumes, the Release first. Without this the late
// hold kept its credits from the customer until it expired. A customer
// without entries (nothing to hold) gets no record of it.
func testReleaseBeforeReserve(t *testing.T, e *env) {
	cust := e.customer("late")
	mustCredit(t, e.s, cust, c("10"))
	if err := e.s.Release(ctx, cust, "late"); err != nil {
		t.Fatal(err)
	}
	// Longer than a lease tick (5 ms in these tests): a replica that
	// remembers the id must not forget it as soon as it next syncs.
	time.Sleep(30 * time.Millisecond)
	wantErr(t, e.s.Reserve(ctx, cust, "late", c("1"), ttl), ledger.ErrDuplicateHold)
	wantAccount(t, e.s, cust, c("10"), 0)
	_, err := e.s.Settle(ctx, cust, "late", c("1"), ledger.Charge{})
	wantErr(t, err, ledger.ErrHoldReleased)
	wantAccount(t, e.s, cust, c("10"), 0)

	// A settled id stays settled: the Release finds its record.
	mustReserve(t, e.s, cust, "done", c("2"), ttl)
	mustSettle(t, e.s, cust, "done", c("2"))
	if err := e.s.Release(ctx, cust, "done"); err != nil {
		t.Fatal(err)
	}
	if en := mustSettle(t, e.s, cust, "done", c("2")); en.ID != "2" {
		t.Fatalf("settle after release of a settled hold = %+v; want the first entry", en)
	}
	wantAccount(t, e.s, cust, c("8"), 0)

	stranger := e.customer("nothing")
	before := e.b.records(t, e.s, stranger)
	if err := e.s.Release(ctx, stranger, "late"); err != nil {
		t.Fatal(err)
	}
	if n := e.b.records(t, e.s, stranger); n != before {
		t.Fatalf("a release for a customer without entries left %d records; want %d", n, before)
	}
	mustReserve(t, e.s, stranger, "late", 0, ttl)
}

func testConcurrentSettleRelease(t *testing.T, e *env) {
	cust := e.customer("both")
	mustCredit(t, e.s, cust, c("100"))
	const holds = 12
	settled := 0
	for i := 0; i < holds; i++ {
		mustReserve(t, e.s, cust, fmt.Sprintf("h%d", i), c("5"), ttl)
	}
	var wg sync.WaitGroup
	results := make([]error, holds)
	for i := 0; i < holds; i++ {
		hold := fmt.Sprintf("h%d", i)
		wg.Add(2)
		go func() {
			defer wg.Done()
			_, results[i] = e.s.Settle(ctx, cust, hold, c("2"), ledger.Charge{})
		}()
		go func() {
			defer wg.Done()
			if err := e.s.Release(ctx, cust, hold); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	for i, err := range results {
		switch {
		case err == nil:
			settled++
		case errors.Is(err, ledger.ErrHoldReleased):
		default:
			t.Fatalf("settle h%d: %v", i, err)
		}
	}
	// Whatever won each race, the balance reflects exactly the settles
	// that reported success, and nothing stays reserved.
	wantAccount(t, e.s, cust, c("100")-money.Micros(settled)*c("2"), 0)
	for i, err := range results {
		_, again := e.s.Settle(ctx, cust, fmt.Sprintf("h%d", i), c("2"), ledger.Charge{})
		if (err == nil) != (again == nil) {
			t.Fatalf("h%d: settle said %v, a repeat says %v", i, err, again)
		}
	}
}

func testExpiredHold(t *testing.T, e *env) {
	cust := e.customer("exp")
	mustCredit(t, e.s, cust, c("10"))
	mustReserve(t, e.s, cust, "h1", c("6"), time.Minute)
	mustReserve(t, e.s, cust, "h2", c("4"), time.Minute)
	e.clock.Advance(time.Minute - time.Millisecond)
	wantAccount(t, e.s, cust, c("10"), c("10"))
	wantErr(t, e.s.Reserve(ctx, cust, "h3", c("1"), ttl), ledger.ErrInsufficientCredits)
	e.clock.Advance(time.Millisecond) // exactly at expiry
	wantAccount(t, e.s, cust, c("10"), 0)
	mustReserve(t, e.s, cust, "h3", c("10"), ttl) // the expired holds' credits are free again

	// Settling an expired hold still charges: the usage happened.
	en := mustSettle(t, e.s, cust, "h1", c("6"))
	if en.Amount != c("-6") || en.BalanceAfter != c("4") {
		t.Fatalf("settle of expired hold = %+v", en)
	}
	if again := mustSettle(t, e.s, cust, "h1", c("6")); again != en {
		t.Fatalf("repeated settle of expired hold = %+v; want %+v", again, en)
	}
	// Releasing an expired hold is allowed and makes a late Settle fail.
	if err := e.s.Release(ctx, cust, "h2"); err != nil {
		t.Fatal(err)
	}
	_, err := e.s.Settle(ctx, cust, "h2", c("1"), ledger.Charge{})
	wantErr(t, err, ledger.ErrHoldReleased)
	wantAccount(t, e.s, cust, c("4"), c("10"))
}

func mustExtend(t *testing.T, s ledger.Store, customer, hold string, ttl time.Duration) {
	t.Helper()
	if err := s.Extend(ctx, customer, hold, ttl); err != nil {
		t.Fatalf("extend %s by %s: %v", hold, ttl, err)
	}
}

// testExtend renews a hold past its first expiry: it keeps counting until
// the renewed expiry and no longer, a repeat or a shorter renewal changes
// nothing, and holds expiring around it (the bound the Redis scripts keep
// of the earliest expiry) expire on time.
func testExtend(t *testing.T, e *env) {
	cust := e.customer("ext")
	mustCredit(t, e.s, cust, c("10"))
	mustReserve(t, e.s, cust, "long", c("6"), time.Minute)
	mustReserve(t, e.s, cust, "short", c("1"), 2*time.Minute)
	e.clock.Advance(50 * time.Second)
	mustExtend(t, e.s, cust, "long", time.Minute) // now expires at 110s
	mustExtend(t, e.s, cust, "long", time.Minute) // idempotent
	mustExtend(t, e.s, cust, "long", time.Second) // never shortens
	e.clock.Advance(20 * time.Second)             // 70s: past the first expiry
	wantAccount(t, e.s, cust, c("10"), c("7"))
	wantErr(t, e.s.Reserve(ctx, cust, "h", c("4"), ttl), ledger.ErrInsufficientCredits)
	if n, err := e.s.Sweep(ctx); err != nil || n != 0 {
		t.Fatalf("sweep at 70s = %d, %v; want 0", n, err)
	}
	e.clock.Advance(40*time.Second - time.Millisecond) // 110s - 1ms
	wantAccount(t, e.s, cust, c("10"), c("7"))
	e.clock.Advance(time.Millisecond) // 110s: the renewed expiry
	wantAccount(t, e.s, cust, c("10"), c("1"))
	e.clock.Advance(10 * time.Second) // 120s: short expires, on time
	wantAccount(t, e.s, cust, c("10"), 0)
	// The renewed hold settles like any other, expired or not.
	if en := mustSettle(t, e.s, cust, "long", c("5")); en.Amount != c("-5") || en.BalanceAfter != c("5") {
		t.Fatalf("settle of a renewed hold = %+v", en)
	}

	// Renewing again and again keeps a hold alive indefinitely.
	mustReserve(t, e.s, cust, "stream", c("5"), time.Minute)
	for range 10 {
		e.clock.Advance(40 * time.Second)
		mustExtend(t, e.s, cust, "stream", time.Minute)
	}
	wantAccount(t, e.s, cust, c("5"), c("5"))
	if n, err := e.s.Sweep(ctx); err != nil || n != 0 {
		t.Fatalf("sweep of a renewed hold = %d, %v; want 0", n, err)
	}
	e.clock.Advance(time.Minute)
	if n, err := e.s.Sweep(ctx); err != nil || n != 1 {
		t.Fatalf("sweep after the last renewal ran out = %d, %v; want 1", n, err)
	}
	wantAccount(t, e.s, cust, c("5"), 0)
}

// testExtendClosedHold checks that renewing a hold that is no longer live
// fails with a sentinel saying why, and changes nothing.
func testExtendClosed(t *testing.T, e *env) {
	cust, other := e.customer("closed"), e.customer("other")
	mustCredit(t, e.s, cust, c("10"))
	mustReserve(t, e.s, cust, "expired", c("1"), time.Minute)
	mustReserve(t, e.s, cust, "released", c("1"), ttl)
	mustReserve(t, e.s, cust, "settled", c("1"), ttl)
	mustReserve(t, e.s, cust, "expired-released", c("1"), time.Minute)
	if err := e.s.Release(ctx, cust, "released"); err != nil {
		t.Fatal(err)
	}
	mustSettle(t, e.s, cust, "settled", c("1"))
	e.clock.Advance(time.Minute) // exactly at the expiry: expired
	if err := e.s.Release(ctx, cust, "expired-released"); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		customer, hold string
		want           error
	}{
		{cust, "expired", ledger.ErrHoldExpired},
		{cust, "released", ledger.ErrHoldReleased},
		{cust, "expired-released", ledger.ErrHoldReleased},
		{cust, "settled", ledger.ErrHoldSettled},
		{cust, "never", ledger.ErrHoldNotFound},
		{other, "settled", ledger.ErrHoldNotFound}, // holds are per customer
	} {
		for range 2 { // and again: the answer stands
			if err := e.s.Extend(ctx, tc.customer, tc.hold, ttl); !errors.Is(err, tc.want) {
				t.Errorf("extend %s of %s: %v; want %v", tc.hold, tc.customer, err, tc.want)
			}
		}
	}
	wantAccount(t, e.s, cust, c("9"), 0)
	// The failed renewal of an expired hold does not stop its charge.
	if en := mustSettle(t, e.s, cust, "expired", c("1")); en.BalanceAfter != c("8") {
		t.Fatalf("settle of an expired hold after a failed renewal = %+v", en)
	}
	_, err := e.s.Settle(ctx, cust, "released", c("1"), ledger.Charge{})
	wantErr(t, err, ledger.ErrHoldReleased)
	// A free hold not stored (Reserve) has nothing to renew.
	stranger := e.customer("stranger")
	mustReserve(t, e.s, stranger, "free", 0, ttl)
	wantErr(t, e.s.Extend(ctx, stranger, "free", ttl), ledger.ErrHoldNotFound)
	if n := e.b.records(t, e.s, stranger); n != 0 {
		t.Fatalf("a failed renewal left %d records of a customer never seen", n)
	}
}

// testExtendRacesExpiry renews one hold from many goroutines while the
// clock crosses its expiry. The store orders each renewal before or after
// the expiry, never both: a renewal that wins keeps the hold alive for
// every later one, and one that loses finds it expired, so either every
// renewal succeeds and the hold still counts, or every one fails with
// ErrHoldExpired and it does not.
func testExtendRacesExpiry(t *testing.T, e *env) {
	for round := range 8 {
		cust := e.customer(fmt.Sprintf("race%d", round))
		mustCredit(t, e.s, cust, c("10"))
		mustReserve(t, e.s, cust, "h", c("4"), 20*time.Millisecond)
		e.clock.Advance(20*time.Millisecond - time.Duration(round)*time.Millisecond)
		const renewers = 6
		errs := make([]error, renewers)
		var wg sync.WaitGroup
		for i := range renewers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[i] = e.s.Extend(ctx, cust, "h", time.Minute)
			}()
		}
		for range 8 { // the clock moves while they run
			e.clock.Advance(time.Millisecond)
		}
		wg.Wait()
		ok := 0
		for _, err := range errs {
			switch {
			case err == nil:
				ok++
			case errors.Is(err, ledger.ErrHoldExpired):
			default:
				t.Fatalf("round %d: extend: %v", round, err)
			}
		}
		if ok != 0 && ok != renewers {
			t.Fatalf("round %d: %d of %d renewals succeeded; the hold was renewed and expired at once: %v", round, ok, renewers, errs)
		}
		if ok == renewers {
			wantAccount(t, e.s, cust, c("10"), c("4"))
		} else {
			wantAccount(t, e.s, cust, c("10"), 0)
		}
	}
}

func testCreditIdempotent(t *testing.T, e *env) {
	cust := e.customer("cred")
	cr := ledger.Credit{Customer: cust, Amount: c("25"), Kind: ledger.KindTopup, Key: "cs_test_1"}
	var wg sync.WaitGroup
	results := make([]ledger.CreditResult, 20)
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := e.s.Credit(ctx, cr)
			if err != nil {
				t.Error(err)
			}
			results[i] = r
		}()
	}
	wg.Wait()
	applied := 0
	for _, r := range results {
		if r.Applied {
			applied++
		}
		if r.Entry != results[0].Entry {
			t.Fatalf("credits returned different entries: %+v and %+v", r.Entry, results[0].Entry)
		}
	}
	if applied != 1 {
		t.Fatalf("%d of 20 concurrent credits applied; want 1", applied)
	}
	wantAccount(t, e.s, cust, c("25"), 0)

	e.clock.Advance(30 * 24 * time.Hour) // days later: still a replay
	r, err := e.s.Credit(ctx, cr)
	if err != nil || r.Applied || r.Entry != results[0].Entry {
		t.Fatalf("replay = %+v, %v", r, err)
	}
	for name, bad := range map[string]ledger.Credit{
		"amount":     {Customer: cust, Amount: c("26"), Kind: ledger.KindTopup, Key: "cs_test_1"},
		"kind":       {Customer: cust, Amount: c("25"), Kind: ledger.KindGrant, Key: "cs_test_1"},
		"cumulative": {Customer: cust, Amount: c("25"), Kind: ledger.KindTopup, Key: "cs_test_1", Cumulative: true},
	} {
		if _, err := e.s.Credit(ctx, bad); !errors.Is(err, ledger.ErrIdempotencyConflict) {
			t.Errorf("same key, other %s: %v; want ErrIdempotencyConflict", name, err)
		}
	}
	// Keys are scoped to the customer.
	other := e.customer("cred2")
	cr.Customer = other
	if r, err := e.s.Credit(ctx, cr); err != nil || !r.Applied {
		t.Fatalf("same key for another customer = %+v, %v; want applied", r, err)
	}
	wantAccount(t, e.s, cust, c("25"), 0)
}

func testCumulativeCredit(t *testing.T, e *env) {
	cust := e.customer("refund")
	mustCredit(t, e.s, cust, c("100"))
	refund := func(total string) ledger.CreditResult {
		t.Helper()
		r, err := e.s.Credit(ctx, ledger.Credit{Customer: cust, Amount: c(total), Kind: ledger.KindRefund, Key: "pi_1", Cumulative: true})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	r1 := refund("-30")
	if !r1.Applied || r1.Entry.Amount != c("-30") {
		t.Fatalf("first refund = %+v", r1)
	}
	r2 := refund("-100")
	if !r2.Applied || r2.Entry.Amount != c("-70") || r2.Entry.BalanceAfter != 0 {
		t.Fatalf("second refund = %+v; want -70 applied", r2)
	}
	r3 := refund("-30") // the first event, arriving late
	if r3.Applied || r3.Entry != r2.Entry {
		t.Fatalf("late refund = %+v; want not applied, latest entry", r3)
	}
	if r := refund("-100"); r.Applied {
		t.Fatalf("replayed refund applied: %+v", r)
	}
	wantAccount(t, e.s, cust, 0, 0)
	_, err := e.s.Credit(ctx, ledger.Credit{Customer: cust, Amount: c("10"), Kind: ledger.KindRefund, Key: "pi_1", Cumulative: true})
	wantErr(t, err, ledger.ErrIdempotencyConflict)
	_, err = e.s.Credit(ctx, ledger.Credit{Customer: cust, Amount: c("-100"), Kind: ledger.KindRefund, Key: "pi_1"})
	wantErr(t, err, ledger.ErrIdempotencyConflict)
}

func testPagination(t *testing.T, e *env) {
	cust := e.customer("pages")
	const n = 25
	for i := 1; i <= n; i++ {
		mustCredit(t, e.s, cust, money.Micros(i))
	}
	var ids []string
	cursor, pages := "", 0
	for {
		p, err := e.s.Entries(ctx, cust, cursor, 10)
		if err != nil {
			t.Fatal(err)
		}
		pages++
		for _, en := range p.Entries {
			ids = append(ids, en.ID)
			if en.Amount != money.Micros(len(ids)*-1+n+1) {
				t.Fatalf("entry %s amount %d; want %d", en.ID, en.Amount, n+1-len(ids))
			}
		}
		if p.Next == "" {
			if len(p.Entries) != 5 {
				t.Fatalf("last page has %d entries; want 5", len(p.Entries))
			}
			break
		}
		if len(p.Entries) != 10 {
			t.Fatalf("page %d has %d entries; want 10", pages, len(p.Entries))
		}
		cursor = p.Next
	}
	if pages != 3 || len(ids) != n || ids[0] != "25" || ids[n-1] != "1" {
		t.Fatalf("%d pages, ids %v", pages, ids)
	}
	// A page that ends exactly at the oldest entry is the last one.
	p, err := e.s.Entries(ctx, cust, "", n)
	if err != nil || len(p.Entries) != n || p.Next != "" {
		t.Fatalf("one full page: %d entries, next %q, %v", len(p.Entries), p.Next, err)
	}
	p, err = e.s.Entries(ctx, cust, "", 0)
	if err != nil || len(p.Entries) != n {
		t.Fatalf("default page size: %d entries, %v", len(p.Entries), err)
	}

	first, _ := e.s.Entries(ctx, cust, "", 10)
	other := e.customer("pages2")
	mustCredit(t, e.s, other, 1)
	for _, bad := range []string{first.Next + "x", "!!", "MA", strings.Repeat("A", 40)} {
		if _, err := e.s.Entries(ctx, cust, bad, 10); !errors.Is(err, ledger.ErrInvalidCursor) {
			t.Errorf("cursor %q: %v; want ErrInvalidCursor", bad, err)
		}
	}
	if _, err := e.s.Entries(ctx, other, first.Next, 10); !errors.Is(err, ledger.ErrInvalidCursor) {
		t.Errorf("another customer's cursor: %v; want ErrInvalidCursor", err)
	}
	for _, limit := range []int{-1, ledger.MaxPageSize + 1} {
		if _, err := e.s.Entries(ctx, cust, "", limit); !errors.Is(err, ledger.ErrInvalidArgument) {
			t.Errorf("limit %d: %v; want ErrInvalidArgument", limit, err)
		}
	}
}

func testSuspendLift(t *testing.T, e *env) {
	cust := e.customer("susp")
	mustCredit(t, e.s, cust, c("10"))
	for i := 0; i < 2; i++ { // idempotent
		if err := e.s.Suspend(ctx, cust, "dp_1"); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.s.Suspend(ctx, cust, "dp_2"); err != nil {
		t.Fatal(err)
	}
	if a := mustAccount(t, e.s, cust); !a.Suspended || a.Balance != c("10") {
		t.Fatalf("account = %+v; want suspended", a)
	}
	wantErr(t, e.s.Reserve(ctx, cust, "h1", c("1"), ttl), ledger.ErrCustomerSuspended)
	if err := e.s.Lift(ctx, cust, "dp_1"); err != nil {
		t.Fatal(err)
	}
	wantErr(t, e.s.Reserve(ctx, cust, "h1", c("1"), ttl), ledger.ErrCustomerSuspended)
	for i := 0; i < 2; i++ {
		if err := e.s.Lift(ctx, cust, "dp_2"); err != nil {
			t.Fatal(err)
		}
	}
	if a := mustAccount(t, e.s, cust); a.Suspended {
		t.Fatalf("account = %+v; want lifted", a)
	}
	mustReserve(t, e.s, cust, "h1", c("1"), ttl)
	// A replayed suspension of a lifted dispute does nothing.
	if err := e.s.Suspend(ctx, cust, "dp_1"); err != nil {
		t.Fatal(err)
	}
	mustReserve(t, e.s, cust, "h2", c("1"), ttl)
	// Credits and settles still work while suspended.
	if err := e.s.Suspend(ctx, cust, "dp_3"); err != nil {
		t.Fatal(err)
	}
	mustSettle(t, e.s, cust, "h1", c("1"))
	mustCredit(t, e.s, cust, c("1"))
	wantAccount(t, e.s, cust, c("10"), c("1"))
}

func testLiftBeforeSuspend(t *testing.T, e *env) {
	cust := e.customer("order")
	mustCredit(t, e.s, cust, c("10"))
	if err := e.s.Lift(ctx, cust, "dp_1"); err != nil {
		t.Fatal(err)
	}
	if err := e.s.Suspend(ctx, cust, "dp_1"); err != nil {
		t.Fatal(err)
	}
	if a := mustAccount(t, e.s, cust); a.Suspended {
		t.Fatal("a suspension that arrived after its lift suspended the customer")
	}
	mustReserve(t, e.s, cust, "h1", c("1"), ttl)
}

func testDuplicateHold(t *testing.T, e *env) {
	cust := e.customer("dup")
	mustCredit(t, e.s, cust, c("10"))
	mustReserve(t, e.s, cust, "live", c("1"), time.Minute)
	wantErr(t, e.s.Reserve(ctx, cust, "live", c("1"), time.Minute), ledger.ErrDuplicateHold)
	mustReserve(t, e.s, cust, "settled", c("1"), ttl)
	mustSettle(t, e.s, cust, "settled", c("1"))
	wantErr(t, e.s.Reserve(ctx, cust, "settled", c("1"), ttl), ledger.ErrDuplicateHold)
	mustReserve(t, e.s, cust, "released", c("1"), ttl)
	if err := e.s.Release(ctx, cust, "released"); err != nil {
		t.Fatal(err)
	}
	wantErr(t, e.s.Reserve(ctx, cust, "released", c("1"), ttl), ledger.ErrDuplicateHold)
	e.clock.Advance(time.Minute)
	wantErr(t, e.s.Reserve(ctx, cust, "live", c("1"), ttl), ledger.ErrDuplicateHold) // expired
	wantAccount(t, e.s, cust, c("9"), 0)
}

func testCustomerScope(t *testing.T, e *env) {
	a, b := e.customer("a"), e.customer("b")
	mustCredit(t, e.s, a, c("10"))
	mustReserve(t, e.s, a, "h1", c("4"), ttl)
	_, err := e.s.Settle(ctx, b, "h1", c("4"), ledger.Charge{})
	wantErr(t, err, ledger.ErrHoldNotFound)
	if err := e.s.Release(ctx, b, "h1"); err != nil {
		t.Fatal(err)
	}
	wantAccount(t, e.s, a, c("10"), c("4"))
	wantAccount(t, e.s, b, 0, 0)
	if err := e.s.Reserve(ctx, b, "h1", 0, ttl); err != nil { // hold ids are per customer
		t.Fatal(err)
	}
}

// testValidation checks that bad input fails with its sentinel, on the
// test's store and on a closed one: validation happens before any I/O.
func testValidation(t *testing.T, e *env) {
	closed := e.b.open(t, ledger.Options{})
	closed.Close()
	cust := e.customer("valid")
	long := strings.Repeat("x", ledger.MaxIDLength+1)
	tests := []struct {
		name string
		call func(s store) error
		want error
	}{
		{"empty customer", func(s store) error { _, err := s.Account(ctx, ""); return err }, ledger.ErrInvalidCustomer},
		{"customer with space", func(s store) error { return s.Reserve(ctx, "a b", "h", 1, ttl) }, ledger.ErrInvalidCustomer},
		{"customer with brace", func(s store) error {
			_, err := s.Credit(ctx, ledger.Credit{Customer: "a{b}", Amount: 1, Kind: ledger.KindGrant, Key: "k"})
			return err
		}, ledger.ErrInvalidCustomer},
		{"customer too long", func(s store) error { _, err := s.Entries(ctx, long, "", 0); return err }, ledger.ErrInvalidCustomer},
		{"customer non-ascii", func(s store) error { return s.Suspend(ctx, "café", "r") }, ledger.ErrInvalidCustomer},
		{"empty hold id", func(s store) error { return s.Reserve(ctx, cust, "", 1, ttl) }, ledger.ErrInvalidArgument},
		{"hold id too long", func(s store) error { return s.Release(ctx, cust, long) }, ledger.ErrInvalidArgument},
		{"negative reserve", func(s store) error { return s.Reserve(ctx, cust, "h", -1, ttl) }, ledger.ErrInvalidAmount},
		{"reserve above max", func(s store) error { return s.Reserve(ctx, cust, "h", ledger.MaxAmount+1, ttl) }, ledger.ErrInvalidAmount},
		{"zero ttl", func(s store) error { return s.Reserve(ctx, cust, "h", 1, 0) }, ledger.ErrInvalidArgument},
		{"ttl too long", func(s store) error { return s.Reserve(ctx, cust, "h", 1, ledger.MaxHoldTTL+1) }, ledger.ErrInvalidArgument},
		{"extend without ttl", func(s store) error { return s.Extend(ctx, cust, "h", 0) }, ledger.ErrInvalidArgument},
		{"extend ttl too long", func(s store) error { return s.Extend(ctx, cust, "h", ledger.MaxHoldTTL+1) }, ledger.ErrInvalidArgument},
		{"extend bad hold id", func(s store) error { return s.Extend(ctx, cust, "a b", ttl) }, ledger.ErrInvalidArgument},
		{"extend bad customer", func(s store) error { return s.Extend(ctx, "", "h", ttl) }, ledger.ErrInvalidCustomer},
		{"negative settle", func(s store) error { _, err := s.Settle(ctx, cust, "h", -1, ledger.Charge{}); return err }, ledger.ErrInvalidAmount},
		{"settle above max", func(s store) error {
			_, err := s.Settle(ctx, cust, "h", ledger.MaxAmount+1, ledger.Charge{})
			return err
		}, ledger.ErrInvalidAmount},
		{"negative tokens", func(s store) error {
			_, err := s.Settle(ctx, cust, "h", 1, ledger.Charge{Tokens: usage.Tokens{OutputTokens: -1}})
			return err
		}, ledger.ErrInvalidArgument},
		{"zero credit", func(s store) error {
			_, err := s.Credit(ctx, ledger.Credit{Customer: cust, Kind: ledger.KindGrant, Key: "k"})
			return err
		}, ledger.ErrInvalidAmount},
		{"credit below -max", func(s store) error {
			_, err := s.Credit(ctx, ledger.Credit{Customer: cust, Amount: -ledger.MaxAmount - 1, Kind: ledger.KindAdjust, Key: "k"})
			return err
		}, ledger.ErrInvalidAmount},
		{"credit kind charge", func(s store) error {
			_, err := s.Credit(ctx, ledger.Credit{Customer: cust, Amount: 1, Kind: ledger.KindCharge, Key: "k"})
			return err
		}, ledger.ErrInvalidArgument},
		{"credit kind unknown", func(s store) error {
			_, err := s.Credit(ctx, ledger.Credit{Customer: cust, Amount: 1, Kind: "gift", Key: "k"})
			return err
		}, ledger.ErrInvalidArgument},
		{"credit without key", func(s store) error {
			_, err := s.Credit(ctx, ledger.Credit{Customer: cust, Amount: 1, Kind: ledger.KindGrant})
			return err
		}, ledger.ErrInvalidArgument},
		{"credit key with space", func(s store) error {
			_, err := s.Credit(ctx, ledger.Credit{Customer: cust, Amount: 1, Kind: ledger.KindGrant, Key: "a b"})
			return err
		}, ledger.ErrInvalidArgument},
		{"credit reason too long", func(s store) error {
			_, err := s.Credit(ctx, ledger.Credit{Customer: cust, Amount: 1, Kind: ledger.KindGrant, Key: "k", Reason: strings.Repeat("r", ledger.MaxTextLength+1)})
			return err
		}, ledger.ErrInvalidArgument},
		{"empty reason", func(s store) error { return s.Lift(ctx, cust, "") }, ledger.ErrInvalidArgument},
		{"bad page size", func(s store) error { _, err := s.Entries(ctx, cust, "", -5); return err }, ledger.ErrInvalidArgument},
		{"bad cursor", func(s store) error { _, err := s.Entries(ctx, cust, "zzz", 1); return err }, ledger.ErrInvalidCursor},
		{"empty meta key", func(s store) error { return s.PutMeta(ctx, "", "v") }, ledger.ErrInvalidArgument},
		{"meta value too long", func(s store) error { return s.PutMeta(ctx, "k", strings.Repeat("v", ledger.MaxMetaValueLength+1)) }, ledger.ErrInvalidArgument},
		{"meta if absent with bad key", func(s store) error { _, _, err := s.PutMetaIfAbsent(ctx, "a b", "v"); return err }, ledger.ErrInvalidArgument},
		{"meta if absent too long", func(s store) error {
			_, _, err := s.PutMetaIfAbsent(ctx, "k", strings.Repeat("v", ledger.MaxMetaValueLength+1))
			return err
		}, ledger.ErrInvalidArgument},
		{"lock without ttl", func(s store) error { _, _, err := s.TryLock(ctx, "l", 0); return err }, ledger.ErrInvalidArgument},
		{"lock with bad name", func(s store) error { return s.Unlock(ctx, "a b", "t") }, ledger.ErrInvalidArgument},
	}
	for _, tc := range tests {
		for _, s := range []struct {
			name string
			s    store
		}{{"open", e.s}, {"closed", closed}} {
			if err := tc.call(s.s); !errors.Is(err, tc.want) {
				t.Errorf("%s (%s store): %v; want %v", tc.name, s.name, err, tc.want)
			}
		}
	}
	wantAccount(t, e.s, cust, 0, 0)

	// Over-long charge text is truncated, never a reason to lose a charge.
	mustCredit(t, e.s, cust, c("1"))
	mustReserve(t, e.s, cust, "h", c("1"), ttl)
	en, err := e.s.Settle(ctx, cust, "h", c("1"), ledger.Charge{Model: strings.Repeat("m", 5000)})
	if err != nil || len(en.Model) != ledger.MaxTextLength {
		t.Fatalf("settle with a long model: %d bytes of model, %v", len(en.Model), err)
	}
}

func testAmountBounds(t *testing.T, e *env) {
	cust := e.customer("max")
	if r := mustCredit(t, e.s, cust, ledger.MaxAmount); r.Entry.BalanceAfter != ledger.MaxAmount {
		t.Fatalf("credit of MaxAmount = %+v", r)
	}
	_, err := e.s.Credit(ctx, ledger.Credit{Customer: cust, Amount: 1, Kind: ledger.KindGrant, Key: "one-more"})
	wantErr(t, err, ledger.ErrInvalidAmount)
	mustReserve(t, e.s, cust, "h1", ledger.MaxAmount, ttl)
	wantAccount(t, e.s, cust, ledger.MaxAmount, ledger.MaxAmount)
	mustSettle(t, e.s, cust, "h1", ledger.MaxAmount)
	mustReserve(t, e.s, cust, "h2", 0, ttl)
	mustSettle(t, e.s, cust, "h2", 0)
	mustCredit(t, e.s, cust, -ledger.MaxAmount)
	wantAccount(t, e.s, cust, -ledger.MaxAmount, 0)
	_, err = e.s.Settle(ctx, cust, "h2", 1, ledger.Charge{}) // replay: fine
	if err != nil {
		t.Fatal(err)
	}
	// A charge that would leave the representable range is refused and the
	// hold stays open, so that nothing is lost silently.
	other := e.customer("min")
	mustCredit(t, e.s, other, -ledger.MaxAmount+1)
	wantErr(t, e.s.Reserve(ctx, other, "h3", 0, ttl), ledger.ErrInsufficientCredits)
	mustCredit(t, e.s, other, ledger.MaxAmount)
	mustReserve(t, e.s, other, "h3", 1, ttl)
	mustCredit(t, e.s, other, -ledger.MaxAmount)
	_, err = e.s.Settle(ctx, other, "h3", 2, ledger.Charge{})
	wantErr(t, err, ledger.ErrInvalidAmount)
	wantAccount(t, e.s, other, -ledger.MaxAmount+1, 1)
	mustSettle(t, e.s, other, "h3", 1)
	wantAccount(t, e.s, other, -ledger.MaxAmount, 0)
}

func testSweep(t *testing.T, e *env) {
	a, b := e.customer("a"), e.customer("b")
	mustCredit(t, e.s, a, c("10"))
	mustCredit(t, e.s, b, c("10"))
	mustReserve(t, e.s, a, "a1", c("1"), time.Minute)
	mustReserve(t, e.s, a, "a2", c("1"), time.Minute)
	mustReserve(t, e.s, a, "a3", c("1"), time.Hour)
	mustReserve(t, e.s, b, "b1", c("1"), time.Minute)
	if n, err := e.s.Sweep(ctx); err != nil || n != 0 {
		t.Fatalf("sweep before expiry = %d, %v; want 0", n, err)
	}
	e.clock.Advance(2 * time.Minute)
	if n, err := e.s.Sweep(ctx); err != nil || n != 3 {
		t.Fatalf("sweep = %d, %v; want 3", n, err)
	}
	if n, err := e.s.Sweep(ctx); err != nil || n != 0 {
		t.Fatalf("second sweep = %d, %v; want 0", n, err)
	}
	wantAccount(t, e.s, a, c("10"), c("1"))
	wantAccount(t, e.s, b, c("10"), 0)
	// A swept hold is an expired hold: settling it charges.
	mustSettle(t, e.s, b, "b1", c("1"))
	wantAccount(t, e.s, b, c("9"), 0)
}

// testSweepMany expires more holds than one sweep batch holds.
func testSweepMany(t *testing.T, e *env) {
	const holds = 1234
	cust := e.customer("many")
	mustCredit(t, e.s, cust, holds)
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < holds; i += 8 {
				if err := e.s.Reserve(ctx, cust, fmt.Sprintf("h%d", i), 1, time.Minute); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	wantAccount(t, e.s, cust, holds, holds)
	e.clock.Advance(time.Minute)
	if n, err := e.s.Sweep(ctx); err != nil || n != holds {
		t.Fatalf("sweep = %d, %v; want %d", n, err, holds)
	}
	wantAccount(t, e.s, cust, holds, 0)
}

// testRetention runs with Options.Retention = 1h.
func testRetention(t *testing.T, e *env) {
	cust := e.customer("ret")
	mustCredit(t, e.s, cust, c("10"))
	mustReserve(t, e.s, cust, "h1", c("1"), ttl)
	first := mustSettle(t, e.s, cust, "h1", c("1"))
	// More settled ids than Redis forgets in one call once their
	// retention ends (lib.lua's prune), for the Release below.
	for i := range 20 {
		id := fmt.Sprintf("old-%02d", i)
		mustReserve(t, e.s, cust, id, c("1"), ttl)
		mustSettle(t, e.s, cust, id, 0)
	}
	mustReserve(t, e.s, cust, "h2", c("1"), ttl)
	if err := e.s.Release(ctx, cust, "h2"); err != nil {
		t.Fatal(err)
	}
	// Every store remembers a released hold for its ttl at least; the
	// embedded one forgets it soon after (boltholds.go), Redis at the
	// retention. Either way a late Settle charges nothing.
	e.clock.Advance(ttl - time.Millisecond)
	_, err := e.s.Settle(ctx, cust, "h2", c("1"), ledger.Charge{})
	wantErr(t, err, ledger.ErrHoldReleased)
	e.clock.Advance(time.Hour - ttl)
	if en := mustSettle(t, e.s, cust, "h1", c("1")); en != first {
		t.Fatalf("settle within retention = %+v; want %+v", en, first)
	}
	if _, err = e.s.Settle(ctx, cust, "h2", c("1"), ledger.Charge{}); !errors.Is(err, ledger.ErrHoldReleased) && !errors.Is(err, ledger.ErrHoldNotFound) {
		t.Fatalf("settle of a released hold within retention: %v; want released or not found", err)
	}
	wantAccount(t, e.s, cust, c("9"), 0)
	e.clock.Advance(time.Millisecond)
	// An id closed longer ago than the retention, whether or not the store
	// forgot it yet, is as unknown as one never seen: a Release of it
	// closes it again (see testReleaseBeforeReserve).
	if err := e.s.Release(ctx, cust, "old-19"); err != nil {
		t.Fatal(err)
	}
	wantErr(t, e.s.Reserve(ctx, cust, "old-19", c("1"), ttl), ledger.ErrDuplicateHold)
	_, err = e.s.Settle(ctx, cust, "h1", c("1"), ledger.Charge{})
	wantErr(t, err, ledger.ErrHoldNotFound)
	if _, err := e.s.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	_, err = e.s.Settle(ctx, cust, "h2", c("1"), ledger.Charge{})
	wantErr(t, err, ledger.ErrHoldNotFound)
	// A forgotten hold id may be used again.
	mustReserve(t, e.s, cust, "h1", c("1"), ttl)
	wantAccount(t, e.s, cust, c("9"), c("1"))
}

func testMeta(t *testing.T, e *env) {
	k := e.metaKey("stripe:cus_1")
	if v, ok, err := e.s.GetMeta(ctx, k); err != nil || ok || v != "" {
		t.Fatalf("get missing = %q, %v, %v", v, ok, err)
	}
	for _, v := range []string{"alice", "", "bob with spaces\nand lines"} {
		if err := e.s.PutMeta(ctx, k, v); err != nil {
			t.Fatal(err)
		}
		if got, ok, err := e.s.GetMeta(ctx, k); err != nil || !ok || got != v {
			t.Fatalf("get = %q, %v, %v; want %q", got, ok, err, v)
		}
	}
}

// testMetaIfAbsent checks the write-if-absent that binds a business
// object to one value: of concurrent writers exactly one stores, and every
// writer learns the value that stands.
func testMetaIfAbsent(t *testing.T, e *env) {
	k := e.metaKey("stripe:invoice:in_1")
	const writers = 16
	var wg sync.WaitGroup
	currents := make([]string, writers)
	stored := make([]bool, writers)
	for i := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cur, ok, err := e.s.PutMetaIfAbsent(ctx, k, fmt.Sprintf("customer-%d", i))
			if err != nil {
				t.Error(err)
			}
			currents[i], stored[i] = cur, ok
		}()
	}
	wg.Wait()
	winner := -1
	for i := range writers {
		if stored[i] {
			if winner >= 0 {
				t.Fatalf("writers %d and %d both stored", winner, i)
			}
			winner = i
		}
	}
	if winner < 0 {
		t.Fatal("no writer stored")
	}
	want := fmt.Sprintf("customer-%d", winner)
	for i, cur := range currents {
		if cur != want {
			t.Errorf("writer %d was told %q; the stored value is %q", i, cur, want)
		}
	}
	if got, ok, err := e.s.GetMeta(ctx, k); err != nil || !ok || got != want {
		t.Fatalf("get = %q, %v, %v; want %q", got, ok, err, want)
	}
	// An empty value is a value: it is stored and then stands.
	empty := e.metaKey("empty")
	if cur, ok, err := e.s.PutMetaIfAbsent(ctx, empty, ""); err != nil || !ok || cur != "" {
		t.Fatalf("put empty = %q, %v, %v; want stored", cur, ok, err)
	}
	if cur, ok, err := e.s.PutMetaIfAbsent(ctx, empty, "x"); err != nil || ok || cur != "" {
		t.Fatalf("put over empty = %q, %v, %v; want the empty value to stand", cur, ok, err)
	}
	// PutMeta still replaces.
	if err := e.s.PutMeta(ctx, k, "other"); err != nil {
		t.Fatal(err)
	}
	if cur, ok, err := e.s.PutMetaIfAbsent(ctx, k, "again"); err != nil || ok || cur != "other" {
		t.Fatalf("put if absent after PutMeta = %q, %v, %v; want \"other\", not stored", cur, ok, err)
	}
}

func testLocks(t *testing.T, e *env) {
	name := e.lockName("reconcile")
	tok1, ok, err := e.s.TryLock(ctx, name, time.Minute)
	if err != nil || !ok || tok1 == "" {
		t.Fatalf("first lock = %q, %v, %v", tok1, ok, err)
	}
	if _, ok, err := e.s.TryLock(ctx, name, time.Minute); err != nil || ok {
		t.Fatalf("second lock = %v, %v; want held", ok, err)
	}
	if err := e.s.Unlock(ctx, name, "not-the-token"); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := e.s.TryLock(ctx, name, time.Minute); ok {
		t.Fatal("a wrong token released the lock")
	}
	e.clock.Advance(time.Minute) // the holder's time is up
	tok2, ok, err := e.s.TryLock(ctx, name, time.Minute)
	if err != nil || !ok || tok2 == tok1 {
		t.Fatalf("lock after expiry = %q, %v, %v", tok2, ok, err)
	}
	if err := e.s.Unlock(ctx, name, tok1); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := e.s.TryLock(ctx, name, time.Minute); ok {
		t.Fatal("the expired holder released the next holder's lock")
	}
	if err := e.s.Unlock(ctx, name, tok2); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := e.s.TryLock(ctx, name, time.Minute); err != nil || !ok {
		t.Fatalf("lock after unlock = %v, %v", ok, err)
	}
}

func testClosedStore(t *testing.T, e *env) {
	s := e.b.open(t, ledger.Options{})
	cust := e.customer("closed")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	calls := map[string]func() error{
		"Reserve": func() error { return s.Reserve(ctx, cust, "h", 1, ttl) },
		"Settle":  func() error { _, err := s.Settle(ctx, cust, "h", 1, ledger.Charge{}); return err },
		"Release": func() error { return s.Release(ctx, cust, "h") },
		"Extend":  func() error { return s.Extend(ctx, cust, "h", ttl) },
		"Credit": func() error {
			_, err := s.Credit(ctx, ledger.Credit{Customer: cust, Amount: 1, Kind: ledger.KindGrant, Key: "k"})
			return err
		},
		"Account": func() error { _, err := s.Account(ctx, cust); return err },
		"Entries": func() error { _, err := s.Entries(ctx, cust, "", 0); return err },
		"Suspend": func() error { return s.Suspend(ctx, cust, "r") },
		"Lift":    func() error { return s.Lift(ctx, cust, "r") },
		"Sweep":   func() error { _, err := s.Sweep(ctx); return err },
		"Ping":    func() error { return s.Ping(ctx) },
		"Ready":   func() error { return s.Ready(ctx) },
		"PutMeta": func() error { return s.PutMeta(ctx, "k", "v") },
		"GetMeta": func() error { _, _, err := s.GetMeta(ctx, "k"); return err },
		"PutMetaIfAbsent": func() error {
			_, _, err := s.PutMetaIfAbsent(ctx, "k", "v")
			return err
		},
		"TryLock": func() error { _, _, err := s.TryLock(ctx, "l", time.Second); return err },
		"Unlock":  func() error { return s.Unlock(ctx, "l", "t") },
	}
	for name, call := range calls {
		if err := call(); !errors.Is(err, ledger.ErrStoreUnavailable) {
			t.Errorf("%s on a closed store: %v; want ErrStoreUnavailable", name, err)
		}
	}
	if err := e.s.Ping(ctx); err != nil {
		t.Fatalf("ping: %v", err)
	}
}
