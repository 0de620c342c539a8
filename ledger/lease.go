package ledger

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/tollgate-dev/tollgate/money"
)

// LeaseStore is a RedisStore whose replica leases credits: for a customer
// it serves often, it reserves a slice of the available credits as one
// hold of its own (the lease) and then takes the holds of that customer's
// requests from the lease in memory, without a round trip to Redis. What
// those holds become (a charge, a release, an expiry) goes to Redis in one
// script per customer every LeaseOptions.FlushInterval (lease.lua), which
// also renews the lease and sizes it anew. Every settled request still
// appends its own charge entry, still idempotent per hold id: a Settle
// returns once its charge is in Redis.
//
// What a lease never does:
//
//   - exceed LeaseOptions.Share percent of what is available to the
//     customer (counting the lease), or grow while the customer is
//     suspended;
//   - keep another replica from credits: a reservation refused because
//     leases hold what it needs asks every replica to give its unused
//     lease back (account.recall; no lease grows for RECALL_MS in
//     lua/reserve.lua, 2 s), and retries for up to
//     LeaseOptions.RecallWait while they do. A replica
//     whose lease is too small for a request gives back what it does not
//     use and reserves that request in Redis, so as available nears a
//     request's estimate every replica is back to per-request holds;
//   - outlive its replica: it is a hold with LeaseOptions.TTL, renewed
//     by the syncs; a replica killed with kill -9 frees it when it
//     expires. The charges of that replica not synced yet (at most one
//     FlushInterval of settlements) are lost with it.
//
// A replica lends only while its last sync succeeded less than
// leaseFresh flush intervals ago, and not past the next lot expiry it
// knows of: when Redis stops answering, reservations fail as they do
// without leases, within that time. A change made through another
// replica (a suspension, a debit, a plan change) reaches this one's
// lending at its next sync, so up to one FlushInterval of requests may be
// admitted under the old state; changes made through this store stop its
// lending at once.
//
// Hold ids must be unique across replicas and over time, as the proxy's
// request ids are (80 random bits and the time): a lent hold is checked
// against the holds this replica lent and recently closed only, not
// against Redis. An id that was held in Redis (by another replica, or by
// this one before it leased, or lent here and closed longer ago than it
// remembers) may be lent again, and its Settle then answers with the
// first charge of the id instead of charging. Account, on this replica,
// counts its own lease as the holds it lends; another replica's unused
// lease reads as reserved.
type LeaseStore struct {
	*RedisStore
	opts    LeaseOptions
	leaseID string

	mu        sync.Mutex
	customers map[string]*leaseCustomer

	stop    chan struct{}
	done    chan struct{}
	closing sync.Once

	lent, reserved, syncs, syncFailures atomic.Int64 // LeaseStats
	// syncSeq numbers the lease syncs: lease.lua leaves the lease alone
	// for a sync that ran after a later one (a reply given up on).
	syncSeq atomic.Int64
	crashed atomic.Bool // a test's kill -9 (export_test.go)
	closed  atomic.Bool // the loop ended: QueueSettle refuses (failQueued)
}

// LeaseStats counts what a LeaseStore did since it opened.
type LeaseStats struct {
	// Lent holds were taken from a lease in memory; Reserved ones from
	// Redis, per request.
	Lent, Reserved int64
	// Syncs are the lease.lua calls that succeeded, SyncFailures the
	// ones that failed (their closes go with the next).
	Syncs, SyncFailures int64
}

// Stats returns what s did since it opened.
func (s *LeaseStore) Stats() LeaseStats {
	return LeaseStats{Lent: s.lent.Load(), Reserved: s.reserved.Load(), Syncs: s.syncs.Load(), SyncFailures: s.syncFailures.Load()}
}

var (
	_ Store        = (*LeaseStore)(nil)
	_ SettleQueuer = (*LeaseStore)(nil)
)

// LeaseOptions configures leases (LeaseStore). The zero value is ready to
// use.
type LeaseOptions struct {
	// FlushInterval is how often a replica syncs each lease: settled
	// charges reach Redis within it. Zero means DefaultLeaseFlush.
	FlushInterval time.Duration
	// TTL is the lease's hold ttl, renewed by every sync: how long the
	// unused credits of a replica that died stay out of reach. Zero means
	// DefaultLeaseTTL.
	TTL time.Duration
	// Share is the most a lease takes of the credits available to the
	// customer, in percent (1 to 100). Zero means DefaultLeaseShare.
	Share int
	// MinRequests is how many reservations of one customer a replica
	// serves within a second before it takes a lease: a customer with
	// fewer is cheaper served by per-request holds. Zero means
	// DefaultLeaseMinRequests; negative leases from the first one.
	MinRequests int
	// Idle is how long a lease stays without a reservation before it is
	// given back. Zero means DefaultLeaseIdle.
	Idle time.Duration
	// RecallWait is how long a reservation refused for want of credits
	// that leases hold waits for them to come back, retrying every
	// FlushInterval while the unused leases would still cover it. Zero
	// means 8 × FlushInterval; the caller's deadline may end it earlier.
	RecallWait time.Duration
}

// Lease defaults.
const (
	DefaultLeaseFlush       = 50 * time.Millisecond
	MaxLeaseFlush           = 100 * time.Millisecond
	DefaultLeaseTTL         = 10 * time.Second
	DefaultLeaseShare       = 25
	DefaultLeaseMinRequests = 8
	DefaultLeaseIdle        = 2 * time.Second
)

// leaseFresh is how many flush intervals old a replica's last successful
// sync of a lease may be for it to lend from the lease: a few syncs may
// be slow, but a Redis that stopped answering stops the lending within
// this.
const leaseFresh = 5

// leaseHeadroom is how many of its largest recent requests a lease is
// sized to take beyond what is in use: a lease too small for that is
// given back (see wantLease).
const leaseHeadroom = 4

// leaseParallel is how many leases a tick syncs at once.
const leaseParallel = 16

var (
	//go:embed lua/lease.lua
	leaseLua    string
	leaseScript = redis.NewScript(libLua + leaseLua)
)

func (o LeaseOptions) withDefaults() LeaseOptions {
	if o.FlushInterval <= 0 {
		o.FlushInterval = DefaultLeaseFlush
	}
	if o.TTL <= 0 {
		o.TTL = DefaultLeaseTTL
	}
	if o.Share <= 0 || o.Share > 100 {
		o.Share = DefaultLeaseShare
	}
	if o.MinRequests == 0 {
		o.MinRequests = DefaultLeaseMinRequests
	}
	if o.Idle <= 0 {
		o.Idle = DefaultLeaseIdle
	}
	if o.RecallWait <= 0 {
		o.RecallWait = 8 * o.FlushInterval
	}
	return o
}

// NewLeaseStore returns a store on client (see NewRedisStore) that leases
// credits as LeaseStore says, and starts its syncs; Close stops them,
// syncing what is left and giving every lease back.
func NewLeaseStore(client redis.UniversalClient, opts Options, lopts LeaseOptions) *LeaseStore {
	s := &LeaseStore{
		RedisStore: NewRedisStore(client, opts),
		opts:       lopts.withDefaults(),
		leaseID:    "tollgate-lease-" + newToken(),
		customers:  map[string]*leaseCustomer{},
		stop:       make(chan struct{}),
		done:       make(chan struct{}),
	}
	go s.loop()
	return s
}

// leaseCustomer is one customer's lease on this replica. mu guards every
// field; syncMu (lockSync) is held for the whole of a sync (so that one runs at a
// time, and Account can read between two).
type leaseCustomer struct {
	id     string
	mu     sync.Mutex
	syncMu chan struct{} // a lock whose wait a context can end: lockSync

	lease  int64 // the lease as of the last sync (0: none)
	expiry int64 // when Redis expires the lease, unix ms
	synced int64 // the last successful sync, unix ms
	avail  int64 // balance - reserved in Redis at the last sync (reserved counts the lease)
	planV  int64 // the stored plan version at the last sync
	// lotExpiry is when the next lot expires, as of the last sync (0:
	// none): from then on the balance the lease was sized on is gone
	// in part, so the lease lends nothing until the next sync.
	lotExpiry int64
	fresh     int64 // leaseFresh flush intervals, ms
	stopped   bool  // the last sync said not to lend, or this store changed the customer since
	// unsure is set by a sync that failed and cleared by one that
	// succeeds: what lease Redis holds is not known meanwhile, so such a
	// customer is synced every tick and never dropped, and its lease is
	// given back. The failed sync may also still run in Redis, late, and
	// take a lease expiring at most a TTL after it was sent: until
	// fenceUntil (store clock, ms) every sync fences (lease.lua's
	// ARGV[11]) and the customer is kept, so that a late sync takes no
	// lease after one that left none.
	unsure     bool
	fenceUntil int64
	// refused is the error of the last sync, when it failed for another
	// reason than Redis being unreachable or busy (corrupt data the
	// script refuses, a malformed reply); nil once one succeeds. Such
	// a failure may never clear, so a Settle cut short does not promise
	// that the charge it waits for will be sent (ErrSettleQueued).
	refused error
	changes int64 // stopLending calls: a sync during which one came does not lend

	// inUse is what the live holds take (expired ones too, until closed:
	// a sync leaves those out, expiredInUse) and what the settles not
	// synced yet take (the larger of hold and charge, settleLent).
	inUse int64
	live  map[string]*leaseHold
	// nextExpiry is at most the earliest expiry of the live holds (0:
	// none), so that expireHolds walks them only when one may be due.
	nextExpiry int64
	pending    []*leaseOp          // closes not sent yet
	open       map[string]*leaseOp // closes not synced yet, by hold id
	recent     map[string]int64    // hold ids closed by a sync: until when (store clock), kept leaseRecentKeep at most
	recentQ    []recentID          // recent, oldest first
	claimed    map[string]struct{} // hold ids a Reserve under way holds, lent or not
	syncing    bool                // a sync is under way: lending stays within syncCap until it is back
	syncCap    int64               // what the sync under way keeps of the lease, however it sizes it
	gone       bool                // dropped from the store's map: a caller must look it up again

	// Demand: the reservations since window began, the largest of
	// them, and the most the holds took since the last sync; window and
	// lastUse are wall-clock ms (demand).
	window   int64
	requests int
	largest  int64
	peak     int64
	lastUse  int64
	giveBack bool // the next sync gives the unused lease back
}

type recentID struct {
	id    string
	until int64 // wall-clock ms
}

type leaseHold struct {
	amount, expiry, ttl int64 // expiry in unix ms; ttl in ms
}

// leaseOp is a lent hold's close, waiting for a sync.
type leaseOp struct {
	kind   byte // 's' settle, 'r' release, 'e' expire
	id     string
	at     int64      // when it closed, unix ms: its retention starts then
	amount int64      // what it takes of inUse until synced: the hold's amount, or a settle's charge if larger
	hold   *leaseHold // a settle's hold, live again if the charge is refused
	actual int64
	body   entryBody
	sent   bool // part of a sync under way

	done  chan struct{} // closed when a sync applied it (settles only)
	entry Entry
	err   error
	// notify is QueueSettle's done: run once, outside c.mu, when a sync
	// applied the op or failed to send it (then cleared: the op stays
	// queued, and Settle waits on done as for any other).
	notify func(Entry, error)
}

// lockSync takes c's sync lock, or fails when ctx ends first.
func (c *leaseCustomer) lockSync(ctx context.Context) error {
	select {
	case c.syncMu <- struct{}{}:
		return nil
	default:
	}
	select {
	case c.syncMu <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (c *leaseCustomer) unlockSync() { <-c.syncMu }

// customer returns customer's lease state, creating it.
func (s *LeaseStore) customer(id string) *leaseCustomer {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.customers[id]
	if c == nil {
		c = &leaseCustomer{id: id, live: map[string]*leaseHold{}, open: map[string]*leaseOp{}, recent: map[string]int64{},
			fresh: leaseFresh * s.opts.FlushInterval.Milliseconds(), syncMu: make(chan struct{}, 1), claimed: map[string]struct{}{}}
		s.customers[id] = c
	}
	return c
}

// lockCustomer returns customer's lease state, made if need be, with its
// mu held: one still in the map, since a state dropped from it after
// customer returned it is no one's (a hold lent from it would be lost to
// Settle).
func (s *LeaseStore) lockCustomer(id string) *leaseCustomer {
	c := s.customer(id)
	c.mu.Lock()
	for c.gone {
		c.mu.Unlock()
		c = s.customer(id)
		c.mu.Lock()
	}
	return c
}

// lookup returns customer's lease state, or nil.
func (s *LeaseStore) lookup(id string) *leaseCustomer {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.customers[id]
}

// Reserve implements Store.
func (s *LeaseStore) Reserve(ctx context.Context, customer, holdID string, amount money.Micros, ttl time.Duration) error {
	_, err := s.reserve(ctx, customer, holdID, amount, ttl, false, 0)
	return err
}

// ReserveAvailable implements Store.
func (s *LeaseStore) ReserveAvailable(ctx context.Context, customer, holdID string, amount money.Micros, ttl time.Duration) (money.Micros, error) {
	return s.reserve(ctx, customer, holdID, amount, ttl, false, 0)
}

// ReservePlan implements Store.
func (s *LeaseStore) ReservePlan(ctx context.Context, customer, holdID string, amount money.Micros, ttl time.Duration, planVersion int64) (money.Micros, error) {
	if err := checkPlanVersion(planVersion); err != nil {
		return 0, err
	}
	return s.reserve(ctx, customer, holdID, amount, ttl, true, planVersion)
}

func (s *LeaseStore) reserve(ctx context.Context, customer, holdID string, amount money.Micros, ttl time.Duration, checkPlan bool, planVersion int64) (money.Micros, error) {
	if err := checkReserve(customer, holdID, amount, ttl); err != nil {
		return 0, err
	}
	if err := s.guard(); err != nil {
		return 0, fmt.Errorf("reserve %s: %w", holdID, err)
	}
	c := s.lockCustomer(customer)
	now := unixMilli(s.now())
	c.expireHolds(now)
	c.demand(time.Now().UnixMilli(), int64(amount))
	if c.used(holdID, now) {
		c.mu.Unlock()
		return 0, fmt.Errorf("reserve %s for %s: %w", holdID, customer, ErrDuplicateHold)
	}
	if avail, ok := c.lend(holdID, int64(amount), ttl, now, checkPlan, planVersion); ok {
		c.mu.Unlock()
		s.lent.Add(1)
		return money.Micros(avail), nil
	}
	// The id is this call's until it returns: a concurrent Reserve of
	// the same id is a duplicate, wherever this one ends up.
	c.claimed[holdID] = struct{}{}
	want, shrink, syncing, stale := s.wantLease(c, int64(amount)), c.lease > c.inUse, c.syncing, c.stale(now)
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.claimed, holdID)
		c.mu.Unlock()
	}()

	if want || shrink || syncing || stale {
		if avail, ok, err := s.reserveSynced(ctx, c, holdID, amount, ttl, checkPlan, planVersion); ok || err != nil {
			return avail, err
		}
	}
	return s.reserveRedis(ctx, c, holdID, amount, ttl, checkPlan, planVersion)
}

// reserveSynced is reserve for a request the lease could not serve as it
// was: once the sync under way is back (or after one of its own, to take,
// grow or give back the lease) it lends if it then may. ok false with a
// nil error leaves the request to Redis.
func (s *LeaseStore) reserveSynced(ctx context.Context, c *leaseCustomer, holdID string, amount money.Micros, ttl time.Duration, checkPlan bool, planVersion int64) (money.Micros, bool, error) {
	// One sync at a time: a reservation that waited for another's may
	// find the lease grown, or lending again.
	if err := c.lockSync(ctx); err != nil {
		return 0, false, fmt.Errorf("reserve %s: %w: %w", holdID, ErrStoreUnavailable, err)
	}
	defer c.unlockSync()
	c.mu.Lock()
	if c.gone {
		c.mu.Unlock()
		return 0, false, nil // dropped meanwhile: nothing to lend from, and Redis is right
	}
	now := unixMilli(s.now()) // the wait may have been long: lot and lease expiry are judged now
	avail, ok := c.lend(holdID, int64(amount), ttl, now, checkPlan, planVersion)
	want, shrink, stale := s.wantLease(c, int64(amount)), c.lease > c.inUse, c.stale(now)
	if !ok && !want {
		// Too small for this request, or not to be lent from: what the
		// lease does not use goes back before the request reserves in
		// Redis, where it would count against the request itself.
		c.giveBack = true
	}
	c.mu.Unlock()
	if ok {
		s.lent.Add(1)
		return money.Micros(avail), true, nil
	}
	if !want && !shrink && !stale {
		return 0, false, nil
	}
	least := int64(0)
	if want {
		least = int64(max(amount, 1))
	}
	if err := s.syncLocked(ctx, c, now, least); err != nil || !want {
		return 0, false, nil // Redis answers for the request, and for Redis
	}
	c.mu.Lock()
	// Judged after the sync, which takes its time: a lot it reported
	// may have expired meanwhile.
	avail, ok = c.lend(holdID, int64(amount), ttl, unixMilli(s.now()), checkPlan, planVersion)
	c.mu.Unlock()
	if ok {
		s.lent.Add(1)
	}
	return money.Micros(avail), ok, nil
}

// reserveRedis reserves a per-request hold in Redis, retrying a refusal
// that leases caused while they are given back (see LeaseStore).
func (s *LeaseStore) reserveRedis(ctx context.Context, c *leaseCustomer, holdID string, amount money.Micros, ttl time.Duration, checkPlan bool, planVersion int64) (money.Micros, error) {
	until := time.Now().Add(s.opts.RecallWait) // the replicas' pace: wall clock, as their ticks
	for {
		s.flushPending(ctx, c)
		avail, err := s.RedisStore.reserve(ctx, c.id, holdID, amount, ttl, checkPlan, planVersion)
		var ice *InsufficientCreditsError
		if err == nil {
			c.mu.Lock()
			c.avail = int64(avail)
			c.mu.Unlock()
			s.reserved.Add(1)
			return avail, nil
		}
		if !errors.As(err, &ice) || ice.Lent <= 0 || ice.Available+ice.Lent < amount {
			return avail, err
		}
		// The leases come back with their replicas' next syncs.
		wait := s.opts.FlushInterval
		if !time.Now().Add(wait).Before(until) {
			return avail, err
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return avail, err
		case <-s.stop:
			t.Stop()
			return avail, err
		case <-t.C:
		}
	}
}

// demand counts a reservation of amount at now, in wall-clock ms: demand
// and idleness are this replica's own pace, measured by the same clock as
// its ticker, never compared with the store clock's times.
func (c *leaseCustomer) demand(now, amount int64) {
	if now-c.window >= 1000 {
		c.window, c.requests, c.largest = now, 0, 0
	}
	c.requests++
	c.largest = max(c.largest, amount)
	c.lastUse = now
}

// used reports whether hold id is live, closing or recently closed here.
func (c *leaseCustomer) used(id string, now int64) bool {
	if _, ok := c.live[id]; ok {
		return true
	}
	if _, ok := c.open[id]; ok {
		return true
	}
	if _, ok := c.claimed[id]; ok {
		return true
	}
	if until, ok := c.recent[id]; ok {
		if until > now {
			return true
		}
		delete(c.recent, id) // its retention ended: the id may be used again
	}
	return false
}

// remember records hold id as closed by a sync until forget (store-clock
// ms: the retention's end) or for leaseRecentKeep (wall-clock ms wall),
// whichever ends first, and forgets the oldest beyond maxLeaseRecent.
func (c *leaseCustomer) remember(id string, forget, wall int64) {
	c.recent[id] = forget
	c.recentQ = append(c.recentQ, recentID{id: id, until: wall + leaseRecentKeep.Milliseconds()})
	c.forgetRecent(wall)
}

// forgetRecent forgets the recent ids past their keep at wall, and the
// oldest beyond maxLeaseRecent.
func (c *leaseCustomer) forgetRecent(wall int64) {
	n := 0
	for n < len(c.recentQ) && (c.recentQ[n].until <= wall || len(c.recentQ)-n > maxLeaseRecent) {
		delete(c.recent, c.recentQ[n].id)
		n++
	}
	if n > 0 {
		// Dropped from the front without moving the rest (a full queue
		// forgets one id per id remembered): append moves what is left
		// to a new array once the old one is used up.
		clear(c.recentQ[:n])
		c.recentQ = c.recentQ[n:]
	}
}

// lend takes hold id of amount from the lease if it may, and returns the
// credits available after it. While a sync is under way it lends only
// within syncCap: the sync may cut the lease to what it said was in use
// (a recall, a give-back), which is what was in use when it was sent
// (less the holds past their expiry, which reserve closes before it
// lends) plus an allowance for the requests that come meanwhile.
func (c *leaseCustomer) lend(id string, amount int64, ttl time.Duration, now int64, checkPlan bool, planVersion int64) (int64, bool) {
	if c.lease == 0 || (c.syncing && c.inUse+amount > c.syncCap) || c.stopped || c.giveBack || now-c.synced >= c.fresh ||
		c.expiry <= now || (c.lotExpiry > 0 && c.lotExpiry <= now) || c.lease-c.inUse < amount ||
		c.avail+c.lease-c.inUse < amount || (checkPlan && planVersion != c.planV) {
		return 0, false
	}
	h := &leaseHold{amount: amount, expiry: now + ttl.Milliseconds(), ttl: ttl.Milliseconds()}
	c.live[id] = h
	if c.nextExpiry == 0 || h.expiry < c.nextExpiry {
		c.nextExpiry = h.expiry
	}
	c.inUse += amount
	c.peak = max(c.peak, c.inUse)
	return c.avail + c.lease - c.inUse, true
}

// stale reports whether c lends holds whose lease Redis may no longer
// hold (no sync for its ttl, or for leaseFresh flush intervals): a
// request that goes to Redis first has a sync back them again, or Redis
// would count their credits as free.
func (c *leaseCustomer) stale(now int64) bool {
	return c.inUse > 0 && (c.expiry <= now || now-c.synced >= c.fresh)
}

// wantLease reports whether a reservation of amount that the lease could
// not serve should take (or grow) one: the customer is busy enough here,
// nothing said not to lend, and Share percent of what was last seen
// available (counting the lease) would hold leaseHeadroom such requests
// and leave this one room beside those in use.
func (s *LeaseStore) wantLease(c *leaseCustomer, amount int64) bool {
	if c.requests < s.opts.MinRequests || c.stopped {
		return false
	}
	if c.synced == 0 && c.avail == 0 {
		return true // nothing known yet: the sync tells
	}
	limit := (c.avail + c.lease) * int64(s.opts.Share) / 100
	return limit >= leaseHeadroom*amount && limit-c.inUse >= amount
}

// expireHolds closes the lent holds whose expiry has come by now, and
// returns how many.
func (c *leaseCustomer) expireHolds(now int64) int {
	if c.nextExpiry == 0 || c.nextExpiry > now {
		return 0 // none due: no walk over the live holds
	}
	n := 0
	c.nextExpiry = 0
	for id, h := range c.live {
		if h.expiry <= now {
			delete(c.live, id)
			c.inUse -= h.amount
			c.queue(&leaseOp{kind: 'e', id: id, amount: h.amount, at: now})
			n++
		} else if c.nextExpiry == 0 || h.expiry < c.nextExpiry {
			c.nextExpiry = h.expiry
		}
	}
	return n
}

// expiredInUse returns what the lent holds past their expiry at now
// take of inUse.
func (c *leaseCustomer) expiredInUse(now int64) int64 {
	if c.nextExpiry == 0 || c.nextExpiry > now {
		return 0 // none due: no walk over the live holds
	}
	var sum int64
	for _, h := range c.live {
		if h.expiry <= now {
			sum += h.amount
		}
	}
	return sum
}

func (c *leaseCustomer) queue(op *leaseOp) {
	c.open[op.id] = op
	c.pending = append(c.pending, op)
}

// Settle implements Store.
func (s *LeaseStore) Settle(ctx context.Context, customer, holdID string, actual money.Micros, ch Charge) (Entry, error) {
	ch, err := checkSettle(customer, holdID, actual, ch)
	if err != nil {
		return Entry{}, err
	}
	c := s.lookup(customer)
	if c == nil {
		return s.RedisStore.Settle(ctx, customer, holdID, actual, ch)
	}
	c.mu.Lock()
	// The clock is read under the lock, so that the closes queue in the
	// order of their times (lease.lua applies each charge at its time).
	now := s.now()
	c.expireHolds(unixMilli(now))
	var op *leaseOp
	if h, ok := c.live[holdID]; ok {
		op = c.settleLent(holdID, h, actual, ch, now)
	} else if o, ok := c.open[holdID]; ok && o.kind == 's' {
		op = o // a second Settle of the same hold: the same outcome
	}
	c.mu.Unlock()
	if op == nil {
		// Not lent here, or released or expired here: once that is in
		// Redis (sent now, with whatever else is queued, see
		// flushPending), Redis answers for it (an expired hold is still
		// charged, a released one is refused).
		s.flushPending(ctx, c)
		if err := s.waitSynced(ctx, c, holdID); err != nil {
			return Entry{}, err
		}
		return s.RedisStore.Settle(ctx, customer, holdID, actual, ch)
	}
	select {
	case <-op.done: // first, whatever else has ended too
		return op.entry, op.err
	default:
	}
	select {
	case <-op.done:
		return op.entry, op.err
	case <-ctx.Done():
		c.mu.Lock()
		refused := c.refused
		c.mu.Unlock()
		if refused != nil {
			return Entry{}, fmt.Errorf("settle %s: %w: the charge is queued, and the lease's syncs of %s fail: %w", holdID, ctx.Err(), c.id, refused)
		}
		return Entry{}, fmt.Errorf("settle %s: %w: it reaches Redis with the lease's next sync (%w)", holdID, ErrSettleQueued, ctx.Err())
	case <-s.done:
		return Entry{}, fmt.Errorf("settle %s: %w: the store closed before the charge reached Redis", holdID, ErrStoreUnavailable)
	}
}

// settleLent queues the settlement of lent hold h; c.mu is held. Until
// it is synced it takes the larger of the hold and the charge of the
// lease: a charge on its way is spent already, and a hold lent meanwhile
// must not take what it takes beyond the hold.
func (c *leaseCustomer) settleLent(holdID string, h *leaseHold, actual money.Micros, ch Charge, now time.Time) *leaseOp {
	delete(c.live, holdID)
	op := &leaseOp{kind: 's', id: holdID, amount: max(h.amount, int64(actual)), hold: h, at: unixMilli(now), actual: int64(actual), body: chargeBody(ch, now), done: make(chan struct{})}
	c.inUse += op.amount - h.amount
	c.queue(op)
	return op
}

// QueueSettle implements SettleQueuer: it queues the settlement of a
// hold this replica lent, as Settle does, and returns without waiting
// for the sync that records it. For any other hold it returns false.
func (s *LeaseStore) QueueSettle(customer, holdID string, actual money.Micros, ch Charge, done func(Entry, error)) bool {
	ch, err := checkSettle(customer, holdID, actual, ch)
	if err != nil {
		return false // Settle reports it
	}
	c := s.lookup(customer)
	if c == nil {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	now := s.now() // under the lock, as in Settle
	if s.closed.Load() {
		// The store is closing: Settle says so.
		return false
	}
	c.expireHolds(unixMilli(now))
	h, ok := c.live[holdID]
	if !ok {
		return false
	}
	c.settleLent(holdID, h, actual, ch, now).notify = done
	return true
}

// leaseNotice is a QueueSettle callback taken out of its op (takeNotify),
// to run once no lock of the customer's is held.
type leaseNotice struct {
	op *leaseOp
	fn func(Entry, error)
}

// takeNotify returns the QueueSettle callbacks of ops and clears them, so
// that each runs once; c.mu is held.
func takeNotify(ops []*leaseOp) []leaseNotice {
	var ns []leaseNotice
	for _, op := range ops {
		if op.notify != nil {
			ns = append(ns, leaseNotice{op, op.notify})
			op.notify = nil
		}
	}
	return ns
}

// notifyQueued runs callbacks ns, each with its op's outcome, or with err
// when err is not nil; the caller holds no lock of the customer's.
func notifyQueued(ns []leaseNotice, err error) {
	for _, n := range ns {
		if err != nil {
			n.fn(Entry{}, err)
		} else {
			n.fn(n.op.entry, n.op.err)
		}
	}
}

// waitSynced waits until hold id has no close on its way to Redis.
func (s *LeaseStore) waitSynced(ctx context.Context, c *leaseCustomer, id string) error {
	for {
		c.mu.Lock()
		_, open := c.open[id]
		c.mu.Unlock()
		if !open {
			return nil
		}
		t := time.NewTimer(s.opts.FlushInterval / 4)
		select {
		case <-s.done:
			t.Stop()
			return fmt.Errorf("hold %s of %s: %w: the store closed", id, c.id, ErrStoreUnavailable)
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("hold %s of %s: %w: its close reaches Redis with the lease's next sync", id, c.id, ctx.Err())
		case <-t.C:
		}
	}
}

// Release implements Store.
func (s *LeaseStore) Release(ctx context.Context, customer, holdID string) error {
	if err := checkRelease(customer, holdID); err != nil {
		return err
	}
	if c := s.lookup(customer); c != nil {
		c.mu.Lock()
		c.expireHolds(unixMilli(s.now()))
		if h, ok := c.live[holdID]; ok {
			delete(c.live, holdID)
			c.inUse -= h.amount
			c.queue(&leaseOp{kind: 'r', id: holdID, amount: h.amount, at: unixMilli(s.now())})
			c.mu.Unlock()
			return nil
		}
		o, open := c.open[holdID]
		c.mu.Unlock()
		if open && o.kind != 'e' {
			return nil // already released or settled here
		}
		// What is queued goes first (see flushPending); if it expired
		// here, once that is in Redis, release.lua records the release
		// (so that a late Settle is refused).
		s.flushPending(ctx, c)
		if open {
			if err := s.waitSynced(ctx, c, holdID); err != nil {
				return err
			}
		}
	}
	recorded, err := s.RedisStore.release(ctx, customer, holdID)
	if recorded {
		// Redis closed an id it did not know (release.lua), which refuses
		// a Reserve of it still on its way there. A hold lent here is not
		// checked against Redis: this replica remembers the id too, as it
		// remembers the ids its syncs closed, and for as long (while the
		// customer is not dropped as idle, Options.Idle after its last
		// use, which this counts as).
		c := s.lockCustomer(customer)
		wall := time.Now().UnixMilli()
		c.lastUse = max(c.lastUse, wall)
		c.remember(holdID, unixMilli(s.now())+s.retention.Milliseconds(), wall)
		c.mu.Unlock()
	}
	return err
}

// Extend implements Store.
func (s *LeaseStore) Extend(ctx context.Context, customer, holdID string, ttl time.Duration) error {
	if err := checkExtend(customer, holdID, ttl); err != nil {
		return err
	}
	if c := s.lookup(customer); c != nil {
		now := unixMilli(s.now())
		c.mu.Lock()
		c.expireHolds(now)
		if h, ok := c.live[holdID]; ok {
			h.expiry, h.ttl = max(h.expiry, now+ttl.Milliseconds()), max(h.ttl, ttl.Milliseconds())
			c.mu.Unlock()
			return nil
		}
		c.mu.Unlock()
		// Closed here: once that is in Redis, Redis says how.
		s.flushPending(ctx, c)
		if err := s.waitSynced(ctx, c, holdID); err != nil {
			return err
		}
	}
	return s.RedisStore.Extend(ctx, customer, holdID, ttl)
}

// Account implements Store: the lease reads as the holds it lends.
func (s *LeaseStore) Account(ctx context.Context, customer string) (Account, error) {
	c := s.lookup(customer)
	if c == nil {
		return s.RedisStore.Account(ctx, customer)
	}
	if err := c.lockSync(ctx); err != nil {
		return Account{}, fmt.Errorf("account %s: %w: %w", customer, ErrStoreUnavailable, err)
	}
	defer c.unlockSync()
	s.sendPending(ctx, c)
	a, err := s.RedisStore.Account(ctx, customer)
	if err != nil {
		return a, err
	}
	now := unixMilli(s.now())
	c.mu.Lock()
	c.expireHolds(now)
	if c.lease > 0 && c.expiry > now {
		a.Reserved += money.Micros(c.inUse - c.lease)
	} else {
		// The lease expired in Redis (no sync for its ttl): the lent
		// holds still count, until a sync backs them again.
		a.Reserved += money.Micros(c.inUse)
	}
	c.mu.Unlock()
	a.Available = a.Balance - a.Reserved
	return a, nil
}

// stopLending makes customer's lease lend nothing until a sync that
// starts after this call: this store just changed what it may lend (a
// debit, a suspension, a plan change). It is called once the change is
// acknowledged, so that no sync that read Redis before it lends again.
func (s *LeaseStore) stopLending(customer string) {
	if c := s.lookup(customer); c != nil {
		c.mu.Lock()
		c.stopped = true
		c.changes++
		c.mu.Unlock()
	}
}

// sendPending sends c's queued closes to Redis ahead of a call of this
// replica that reaches the customer's account there: that call expires
// the lots due by its time, and a lot it expired no longer pays a charge
// made before its expiry (lease.lua applies each charge at the time it
// was made, to the lots it finds). c's sync lock is held. A sync that
// fails keeps them queued for the next tick, which logs it; the call
// goes on.
func (s *LeaseStore) sendPending(ctx context.Context, c *leaseCustomer) {
	if c.queued() {
		_ = s.syncLocked(ctx, c, unixMilli(s.now()), 0)
	}
}

// flushPending is sendPending for a caller without c's sync lock; c may
// be nil (the customer has no lease state here).
func (s *LeaseStore) flushPending(ctx context.Context, c *leaseCustomer) {
	if c == nil || !c.queued() || c.lockSync(ctx) != nil {
		return
	}
	defer c.unlockSync()
	s.sendPending(ctx, c)
}

// queued reports whether c has closes waiting for a sync.
func (c *leaseCustomer) queued() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.pending) > 0
}

// Credit implements Store.
func (s *LeaseStore) Credit(ctx context.Context, cr Credit) (CreditResult, error) {
	s.flushPending(ctx, s.lookup(cr.Customer))
	r, err := s.RedisStore.Credit(ctx, cr)
	if cr.Amount < 0 {
		s.stopLending(cr.Customer)
	}
	return r, err
}

// Suspend implements Store.
func (s *LeaseStore) Suspend(ctx context.Context, customer, reason string) error {
	s.flushPending(ctx, s.lookup(customer))
	err := s.RedisStore.Suspend(ctx, customer, reason)
	s.stopLending(customer)
	return err
}

// Lift implements Store.
func (s *LeaseStore) Lift(ctx context.Context, customer, reason string) error {
	s.flushPending(ctx, s.lookup(customer))
	return s.RedisStore.Lift(ctx, customer, reason)
}

// Lots implements Store.
func (s *LeaseStore) Lots(ctx context.Context, customer string) ([]Lot, error) {
	s.flushPending(ctx, s.lookup(customer))
	return s.RedisStore.Lots(ctx, customer)
}

// Entries implements Store.
func (s *LeaseStore) Entries(ctx context.Context, customer, before string, limit int) (Page, error) {
	s.flushPending(ctx, s.lookup(customer))
	return s.RedisStore.Entries(ctx, customer, before, limit)
}

// PutSubscription implements Store.
func (s *LeaseStore) PutSubscription(ctx context.Context, customer, value string, order int64) (PlanWrite, error) {
	w, err := s.RedisStore.PutSubscription(ctx, customer, value, order)
	s.stopLending(customer)
	return w, err
}

// PutOverride implements Store.
func (s *LeaseStore) PutOverride(ctx context.Context, customer, value string) (PlanWrite, error) {
	w, err := s.RedisStore.PutOverride(ctx, customer, value)
	s.stopLending(customer)
	return w, err
}

// Sweep implements Store: the lent holds due expire here (their expiry
// reaches Redis with the next sync), the rest in Redis.
func (s *LeaseStore) Sweep(ctx context.Context) (int, error) {
	now := unixMilli(s.now())
	s.mu.Lock()
	cs := make([]*leaseCustomer, 0, len(s.customers))
	for _, c := range s.customers {
		cs = append(cs, c)
	}
	s.mu.Unlock()
	n := 0
	for _, c := range cs {
		c.mu.Lock()
		n += c.expireHolds(now)
		c.mu.Unlock()
		s.flushPending(ctx, c)
	}
	m, err := s.RedisStore.Sweep(ctx)
	return n + m, err
}

// loop syncs every lease each FlushInterval until Close.
func (s *LeaseStore) loop() {
	defer close(s.done)
	defer s.failQueued()
	t := time.NewTicker(s.opts.FlushInterval)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			if !s.crashed.Load() {
				s.finish()
			}
			return
		case <-t.C:
			s.syncAll(context.Background(), false)
		}
	}
}

// all lists the customers the store serves, holding its map only to
// list them.
func (s *LeaseStore) all() []*leaseCustomer {
	s.mu.Lock()
	defer s.mu.Unlock()
	all := make([]*leaseCustomer, 0, len(s.customers))
	for _, c := range s.customers {
		all = append(all, c)
	}
	return all
}

// failQueued runs, with ErrStoreUnavailable, the QueueSettle callbacks
// of the settlements the store could not send before it closed (finish
// logged them), and makes QueueSettle refuse from now on.
func (s *LeaseStore) failQueued() {
	s.closed.Store(true)
	all := s.all()
	for _, c := range all {
		c.mu.Lock()
		var left []*leaseOp
		for _, op := range c.open {
			if !op.sent { // a sync under way tells its own
				left = append(left, op)
			}
		}
		ns := takeNotify(left)
		c.mu.Unlock()
		for _, n := range ns {
			n.fn(Entry{}, fmt.Errorf("settle %s: %w: the store closed before the charge reached Redis", n.op.id, ErrStoreUnavailable))
		}
	}
}

// leaseFinish bounds how long Close keeps trying to send what is left.
const leaseFinish = 5 * time.Second

// finish syncs until nothing is left to send and every lease is given
// back (no customer's last sync failed), for up to leaseFinish, and logs
// as errors the charges it could not send (they are lost, as a settlement
// that fails for good is).
func (s *LeaseStore) finish() {
	ctx, cancel := context.WithTimeout(context.Background(), leaseFinish)
	defer cancel()
	for {
		s.syncAll(ctx, true)
		left, unsure := s.unsent()
		if len(left) == 0 && unsure == 0 {
			return
		}
		if ctx.Err() != nil {
			if unsure > 0 {
				s.log.Warn("leases may stay in Redis until their ttl: the store closed before a sync gave them back", zap.Int("customers", unsure), zap.Duration("ttl", s.opts.TTL))
			}
			for _, op := range left {
				s.log.Error("a settlement did not reach Redis before the store closed; the charge is NOT recorded. Check the customer's ledger for an entry with this reference, and if there is none apply it by hand",
					zap.String("customer", op.customer), zap.String("hold", op.id), zap.String("amount", money.Micros(op.actual).String()),
					zap.String("apply", fmt.Sprintf("tollgate credit %s -%s --key settle-%s --reason 'unsettled request %s'", op.customer, money.Micros(op.actual), op.id, op.id)))
			}
			return
		}
		time.Sleep(s.opts.FlushInterval)
	}
}

// unsentSettle is a settlement finish could not send.
type unsentSettle struct {
	customer, id string
	actual       int64
}

// unsent returns the settlements not sent yet, and how many customers'
// last sync failed (what lease Redis holds for them is not known).
func (s *LeaseStore) unsent() (left []unsentSettle, unsure int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.customers {
		c.mu.Lock()
		if c.unsure {
			unsure++
		}
		for _, op := range c.pending {
			if op.kind == 's' {
				left = append(left, unsentSettle{customer: c.id, id: op.id, actual: op.actual})
			}
		}
		c.mu.Unlock()
	}
	return left, unsure
}

// syncAll syncs every customer with a lease, closes to send or a state
// to learn; final gives every lease back. A customer with nothing left
// here is dropped. The store's map is held only to list and to drop, not
// while a customer is looked at.
func (s *LeaseStore) syncAll(parent context.Context, final bool) {
	now, wall := unixMilli(s.now()), time.Now().UnixMilli()
	all := s.all()
	var due, idle []*leaseCustomer
	for _, c := range all {
		c.mu.Lock()
		c.forgetRecent(wall)
		// Lent holds that expired are closed by the next call that
		// touches them or by Sweep, as on Redis, not here; but they stop
		// counting at once: a sync leaves them out of what it keeps
		// (expiredInUse).
		quiet := wall-c.lastUse >= s.opts.Idle.Milliseconds()
		if final || quiet {
			c.giveBack = true
		}
		switch {
		case quiet && c.droppable(now):
			// Nothing here to keep, suspended or not: a customer seen
			// again starts over, and syncs before it lends.
			idle = append(idle, c)
		case c.lease > 0 || len(c.pending) > 0 || c.stopped || c.unsure:
			due = append(due, c)
		}
		c.mu.Unlock()
	}
	if len(idle) > 0 {
		s.mu.Lock()
		for _, c := range idle {
			c.mu.Lock()
			// Judged again: a reservation may have come since.
			if wall-c.lastUse >= s.opts.Idle.Milliseconds() && c.droppable(now) && len(c.syncMu) == 0 {
				c.gone = true
				delete(s.customers, c.id)
			}
			c.mu.Unlock()
		}
		s.mu.Unlock()
	}
	sem := make(chan struct{}, leaseParallel)
	var wg sync.WaitGroup
	for _, c := range due {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			ctx, cancel := context.WithTimeout(parent, max(4*s.opts.FlushInterval, time.Second))
			defer cancel()
			if err := s.sync(ctx, c, now); err != nil {
				s.log.Warn("lease sync failed; its charges go with the next one", zap.String("customer", c.id), zap.Error(err))
			}
		})
	}
	wg.Wait()
}

// droppable reports whether c holds nothing the store must keep at now:
// no lease, no hold, no close to send, no Reserve or sync under way, no
// failed sync since the last that succeeded (unsure), and no fence still
// to keep (fenceUntil).
func (c *leaseCustomer) droppable(now int64) bool {
	return c.lease == 0 && len(c.pending) == 0 && len(c.live) == 0 && len(c.open) == 0 && len(c.claimed) == 0 &&
		!c.syncing && !c.unsure && now >= c.fenceUntil
}

// sync sends c's closes to Redis and sizes its lease (lease.lua).
func (s *LeaseStore) sync(ctx context.Context, c *leaseCustomer, now int64) error {
	if err := c.lockSync(ctx); err != nil {
		return err
	}
	defer c.unlockSync()
	return s.syncLocked(ctx, c, now, 0)
}

// syncLocked is sync for a caller holding c's sync lock. With least > 0
// the lease grows only if it then leaves least free (lease.lua's
// ARGV[9]).
func (s *LeaseStore) syncLocked(ctx context.Context, c *leaseCustomer, now, least int64) error {
	c.mu.Lock()
	ops := c.pending
	c.pending = nil
	var settling int64
	for _, op := range ops {
		op.sent = true
		if op.kind == 's' {
			settling += op.amount
		}
	}
	// A lent hold past its expiry no longer counts, as on Redis (where
	// every read closes it), though it stays open here until a call
	// touches it or Sweep closes it: the lease keeps nothing for it, so
	// that the other replicas may spend its credits at once.
	expired := c.expiredInUse(now)
	inUse := c.inUse - settling - expired
	target, allowance := inUse, int64(0)
	if !c.giveBack && !c.stopped {
		target = max(inUse+leaseHeadroom*c.largest, 2*c.peak)
		if least == 0 && len(c.claimed) > 0 {
			// A Reserve the lease could not serve is on its way to
			// Redis, after giving back what the lease did not use if it
			// was too small for it: growing the lease now would take
			// those credits from under it (a tick between the give-back
			// and the Reserve refused requests that fit). A tick's sync
			// does not grow the lease meanwhile; a later tick sizes it.
			// (The give-back sync itself has giveBack set. A Reserve
			// that wants a lease, least > 0, may still grow it: two
			// requests of one customer racing near its last credits.)
			target = max(inUse, min(target, c.lease))
		}
		// Half of what is free stays lendable while the sync is out:
		// the sync keeps it, whatever else it decides.
		allowance = max(0, c.lease-c.inUse) / 2
	}
	c.syncCap = c.inUse - expired + allowance
	giveBack, changes, fence := c.giveBack, c.changes, 0
	expiry := now + s.opts.TTL.Milliseconds()
	if now < c.fenceUntil {
		// A marker must outlive the lease the failed sync may still
		// take, whose expiry was fenceUntil: this sync's now may be
		// older than the failed one's (a tick's now is read before it
		// waits for the customer's sync lock).
		fence, expiry = 1, max(expiry, c.fenceUntil)
	}
	c.giveBack = false
	c.peak = inUse
	c.syncing = true
	c.mu.Unlock()

	args := make([]any, 0, 12+5*len(ops))
	args = append(args, s.leaseID, now, s.retention.Milliseconds(), expiry,
		target, inUse, allowance, s.opts.Share, least, s.syncSeq.Add(1), fence, len(ops))
	for _, op := range ops {
		switch op.kind {
		case 's':
			args = append(args, "s", op.id, op.at, op.actual, op.body.json())
		default:
			args = append(args, string(op.kind), op.id, op.at, 0, "")
		}
	}
	r, err := s.run(ctx, leaseScript, customerKeys(c.id), args...)
	if err == nil && r.err == nil && len(r.vals) != leaseHead+3*len(ops) {
		err = fmt.Errorf("%w: lease reply has %d fields for %d closes", errCorrupt, len(r.vals), len(ops))
	}
	if err != nil || r.err != nil {
		if err == nil {
			err = r.err
		} else {
			err = s.failWrite("lease of "+c.id, err)
		}
		c.mu.Lock()
		for _, op := range ops {
			op.sent = false
		}
		c.pending = append(ops, c.pending...)
		c.giveBack = c.giveBack || giveBack
		// The script may have run, its reply lost: the lease may be cut
		// to what was in use, or be larger than known. Lend nothing until
		// a sync says (the next tick: an unsure customer is synced, and
		// not dropped however quiet).
		c.lease = min(c.lease, inUse+allowance)
		c.stopped, c.unsure = true, true
		c.refused = nil
		if !unavailable(err) {
			c.refused = err
		}
		c.fenceUntil = max(c.fenceUntil, expiry) // the lease it may still take expires then
		c.syncing = false
		ns := takeNotify(ops)
		c.mu.Unlock()
		s.syncFailures.Add(1)
		notifyQueued(ns, err)
		return err
	}
	s.syncs.Add(1)
	lease, balance, reserved, planV, stop, lotExpiry := r.int(0), r.int(1), r.int(2), r.int(3), r.int(4), r.int(5)

	var ns []leaseNotice
	defer func() { notifyQueued(ns, nil) }() // after the unlock below
	c.mu.Lock()
	defer c.mu.Unlock()
	c.syncing, c.unsure, c.refused = false, false, nil
	c.lease, c.avail, c.planV, c.synced, c.lotExpiry = lease, balance-reserved, planV, now, lotExpiry
	c.expiry = now + s.opts.TTL.Milliseconds()
	c.stopped = stop != 0 || c.changes != changes
	wall := time.Now().UnixMilli()
	for i, op := range ops {
		code, seq := r.int(leaseHead+3*i), r.int(leaseHead+1+3*i)
		delete(c.open, op.id)
		if op.kind == 's' {
			c.inUse -= op.amount
		}
		switch {
		case op.kind != 's':
		case code == 0:
			op.entry = op.body.entry(c.id, seq, -money.Micros(op.actual), money.Micros(r.int(leaseHead+2+3*i)))
		case code == 1:
			op.entry, op.err = decodeEntry(c.id, seq, r.str(leaseHead+2+3*i))
		case code == 2:
			op.err = fmt.Errorf("settle %s of %s: %w", op.id, c.id, ErrHoldReleased)
		case code == 4:
			// Refused, nothing written: the hold is live again, as it
			// was, so that a Settle of less can follow.
			c.live[op.id] = op.hold
			c.inUse += op.hold.amount
			if c.nextExpiry == 0 || op.hold.expiry < c.nextExpiry {
				c.nextExpiry = op.hold.expiry
			}
			op.err = fmt.Errorf("settle %s: %w: charging %s would take %s's balance below -%s", op.id, ErrInvalidAmount, money.Micros(op.actual), c.id, MaxAmount)
		default:
			op.err = fmt.Errorf("settle %s: %w: lease close status %d", op.id, errCorrupt, code)
		}
		if r.err != nil && op.err == nil {
			op.err = fmt.Errorf("settle %s: %w", op.id, r.err)
		}
		if code != 4 {
			c.remember(op.id, op.at+s.retention.Milliseconds(), wall)
		}
		if op.done != nil {
			close(op.done)
		}
	}
	ns = takeNotify(ops)
	// What the charges queued meanwhile take beyond their holds is no
	// lease's to back (settleLent).
	var excess int64
	for _, op := range c.pending {
		if op.kind == 's' {
			excess += op.amount - op.hold.amount
		}
	}
	if lease < c.inUse-c.expiredInUse(now)-excess {
		// The lease expired in Redis while its replica could not sync
		// (longer than its ttl), and the credits of the open requests it
		// lent were then spendable elsewhere: not all are there now.
		s.log.Warn("a lease came back smaller than what its open requests hold: Redis did not back them while this replica could not sync, and the customer may overspend by the difference",
			zap.String("customer", c.id), zap.String("lease", money.Micros(lease).String()), zap.String("in_use", money.Micros(c.inUse).String()))
	}
	return r.err
}

// leaseHead is the number of fields of lease.lua's reply before the
// closes' results.
const leaseHead = 6

// leaseRecentKeep and maxLeaseRecent bound the closed hold ids a
// customer's lease remembers, to refuse their reuse here: Redis keeps
// the closed records for the retention, but a lent hold is not checked
// against Redis, which is why LeaseStore needs unique hold ids.
const (
	leaseRecentKeep = 10 * time.Minute
	maxLeaseRecent  = 4096
)

// Close syncs what is left, gives every lease back and closes the client.
func (s *LeaseStore) Close() error {
	s.closing.Do(func() { close(s.stop) })
	<-s.done
	return s.RedisStore.Close()
}
