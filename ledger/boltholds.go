package ledger

import (
	"hash/maphash"
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// BoltStore keeps holds in memory, not in the file: one process owns the
// file, so a hold needs no durability. A crash or restart loses the
// process's holds, which is what their expiry would do anyway, while
// every balance change (settle, credit, lot expiry) is still committed
// and fsynced before its method returns. Reserve, Release and Extend
// therefore write nothing to disk; Settle's transaction records the
// charge and the settled hold id, so a settled hold still answers as
// settled after a restart, for the retention.
//
// The holds of one customer are guarded by that customer's mutex, found
// through a sharded map: customers never wait for each other, and one
// customer's Reserve reads the durable balance and decides under its
// mutex, so two reservations of the same customer never spend the same
// credit.

// Closed holds (released or expired) are remembered in memory so that a
// later Settle, Extend or Release of the same id answers as the store
// contract says; settled holds are remembered in the file. A memory record
// costs about 100 bytes, and a burst of upstream errors releases holds at
// the proxy's request rate, so these records are bounded rather than kept
// for the whole Options.Retention:
//
//   - A released hold is remembered for max(its ttl, releasedKeep). Nothing
//     a forgotten released id answers moves money: Settle answers
//     ErrHoldNotFound (actual > 0, nothing charged, as for the released
//     hold) or a zero charge that records nothing, Release is a no-op
//     either way, and Extend fails with ErrHoldNotFound instead of
//     ErrHoldReleased. The proxy never settles a hold it released, and
//     renews only while the request is open.
//   - An expired hold is still charged by a late Settle (the usage
//     happened), which may come as late as the request's end, so it is
//     remembered for the retention, as on Redis; the proxy's Settle or
//     Release of it replaces it (with the file's settled record, or a
//     released one), so only holds nobody settles or releases stay.
//   - At most maxClosedHolds records are kept in all. A hold closed while
//     the store is at the cap is not remembered (the store logs it): for
//     a released hold that changes nothing above; a late Settle of an
//     expired one answers ErrHoldNotFound, which the proxy logs as a
//     settlement failure with the credit command that applies it by hand.

// releasedKeep is the least time a released hold is remembered.
const releasedKeep = 5 * time.Minute

// defaultMaxClosedHolds is the default cap on remembered closed holds:
// about 25 MB.
const defaultMaxClosedHolds = 1 << 18

// holdShards is the number of shards of the customer map; a power of two.
const holdShards = 64

// memHolds is every customer's in-memory holds.
type memHolds struct {
	seed   maphash.Seed
	shards [holdShards]holdShard
	// nClosed counts the closed records of every customer, maxClosed
	// caps it, and dropped counts the closes not remembered for the cap.
	nClosed   atomic.Int64
	maxClosed int64
	dropped   atomic.Int64
	// releasedKeep is releasedKeep in ms, unless a test set another.
	releasedKeep int64
}

type holdShard struct {
	mu sync.Mutex
	m  map[string]*memCustomer
}

// memCustomer is one customer's holds. refs and the map entry are
// guarded by the shard's mutex. mu serialises the calls that change the
// customer's holds (and Reserve's decision); a writer of live, order,
// closed or a memHold's amount or expiry also holds view. A reader inside
// a write transaction (txReserved, for the figures of an event) takes
// view only: a Reserve holding mu may be waiting for that very
// transaction. A customer with no holds and no closed hold is dropped
// from the map once no call holds it, so customers named by refused
// requests leave nothing.
type memCustomer struct {
	mu   sync.Mutex
	view sync.Mutex
	refs int
	h    *memHolds

	live   map[string]*memHold
	closed map[string]memClosed
	// order holds the holds of live, for the scans every call makes
	// (expire, reserved): a slice walks several times faster than a
	// map, and a busy customer has a hundred holds or more waiting for
	// their settlement's commit. A hold's at is its index here.
	order []*memHold
	// nextExpiry is at most the expiry of every hold in live: expire
	// has nothing to do before it. It is read and written under mu
	// alone (txReserved, which holds only view, does not read it). put
	// lowers it to a new hold's expiry; extend (which only moves
	// expiries later) and drop leave it where it is, so it stays a lower
	// bound, perhaps a low one, until expire's scan sets it to the
	// earliest expiry again (or drop of the last hold to MaxInt64).
	nextExpiry int64
}

// memHold is a live hold.
type memHold struct {
	id             string
	at             int   // index in memCustomer.order
	amount, expiry int64 // expiry in unix ms
	ttl            int64 // the longest ttl it was reserved or extended by, ms
	// settling counts the Settles of this hold in flight. While it is
	// positive the hold may already be settled in the file (committed,
	// not yet dropped from memory): readers then ask the file whether it
	// is, so that it never counts twice, once as a hold and once as a
	// charge.
	settling int
	// actual is the largest cost a Settle in flight charges, 0 before
	// one starts; it is read only while settling is positive. A charge
	// on its way is spent already: while it is in flight the hold counts
	// for the larger of its amount and actual, so that a reservation
	// meanwhile cannot spend what the charge takes beyond the hold.
	actual int64
	// entry is the sequence number of the charge entry a Settle's
	// transaction wrote for this hold, set by the transaction as it runs
	// (so not under mu), 0 before. A reader whose snapshot of the file
	// ends before entry cannot see the charge and counts the hold without
	// asking the file; the transaction may still roll back, so one whose
	// snapshot reaches entry asks.
	entry atomic.Int64
	// charged is set once the transaction that wrote entry (or found the
	// hold settled at entry) is committed: a reader whose snapshot reaches
	// entry then knows the charge is in it without asking the file.
	charged atomic.Bool
	// released is set by a Release that came while a Settle was in
	// flight: if that Settle fails, the hold is then closed as released.
	released bool
}

// memClosed is a hold that expired or was released, remembered until
// forgetAt (unix ms) so that Settle and Extend can say so. Settled holds
// are remembered in the file instead (see closeHold).
type memClosed struct {
	state    holdState
	forgetAt int64
}

func newMemHolds(maxClosed int, keepReleased time.Duration) *memHolds {
	h := &memHolds{seed: maphash.MakeSeed(), maxClosed: int64(maxClosed), releasedKeep: keepReleased.Milliseconds()}
	if h.maxClosed <= 0 {
		h.maxClosed = defaultMaxClosedHolds
	}
	if h.releasedKeep <= 0 {
		h.releasedKeep = releasedKeep.Milliseconds()
	}
	for i := range h.shards {
		h.shards[i].m = map[string]*memCustomer{}
	}
	return h
}

func (h *memHolds) shard(customer string) *holdShard {
	return &h.shards[maphash.String(h.seed, customer)&(holdShards-1)]
}

// lock returns customer's holds with their mutex held; the caller must
// call unlock.
func (h *memHolds) lock(customer string) *memCustomer {
	sh := h.shard(customer)
	sh.mu.Lock()
	c := sh.m[customer]
	if c == nil {
		c = &memCustomer{h: h, live: map[string]*memHold{}, closed: map[string]memClosed{}, nextExpiry: math.MaxInt64}
		sh.m[customer] = c
	}
	c.refs++
	sh.mu.Unlock()
	c.mu.Lock()
	return c
}

// unlock lets go of c, dropping it from the map when it is empty and no
// other call holds it. The shard's mutex is taken while c's is still
// held, so that emptiness is judged on what c holds now; lock never
// waits for c's mutex while it holds the shard's, so this cannot
// deadlock.
func (h *memHolds) unlock(customer string, c *memCustomer) {
	sh := h.shard(customer)
	sh.mu.Lock()
	c.refs--
	if c.refs == 0 && len(c.live) == 0 && len(c.closed) == 0 {
		delete(sh.m, customer)
	}
	sh.mu.Unlock()
	c.mu.Unlock()
}

// customers returns the ids of the customers with holds in memory.
func (h *memHolds) customers() []string {
	var ids []string
	for i := range h.shards {
		sh := &h.shards[i]
		sh.mu.Lock()
		for id := range sh.m {
			ids = append(ids, id)
		}
		sh.mu.Unlock()
	}
	return ids
}

// txReserved is the sum of c's holds live at nowMs as the write
// transaction of c sees them: a hold whose Settle wrote its charge in
// this transaction or in a committed one does not count. It is what an
// event's available and reserved figures are made of. It takes no
// customer mutex (see memCustomer).
func (h *memHolds) txReserved(c *boltCustomer, nowMs int64) (int64, error) {
	sh := h.shard(c.id)
	sh.mu.Lock()
	mc := sh.m[c.id]
	if mc == nil {
		sh.mu.Unlock()
		return 0, nil
	}
	mc.view.Lock()
	sh.mu.Unlock()
	type settling struct {
		id     string
		amount int64
	}
	var sum int64
	var ask []settling
	for _, hd := range mc.order {
		switch {
		case hd.expiry <= nowMs:
		case hd.charged.Load():
			// In the balance this write transaction starts from.
		case hd.entry.Load() != 0:
			ask = append(ask, settling{hd.id, hd.amount})
		default:
			sum += hd.amount
		}
	}
	mc.view.Unlock()
	for _, a := range ask {
		done, err := c.settled(a.id, nowMs)
		if err != nil {
			return 0, err
		}
		if !done {
			sum += a.amount
		}
	}
	return sum, nil
}

// put adds live hold id.
func (c *memCustomer) put(id string, hd *memHold) {
	hd.id = id
	c.view.Lock()
	c.live[id] = hd
	hd.at = len(c.order)
	c.order = append(c.order, hd)
	c.nextExpiry = min(c.nextExpiry, hd.expiry)
	c.view.Unlock()
}

// drop removes live hold id. The last hold of order takes its place, so
// a scan that drops holds as it goes walks order from the end.
func (c *memCustomer) drop(id string) {
	hd := c.live[id]
	if hd == nil {
		return
	}
	c.view.Lock()
	delete(c.live, id)
	last := len(c.order) - 1
	moved := c.order[last]
	c.order[hd.at], moved.at = moved, hd.at
	c.order[last] = nil
	c.order = c.order[:last]
	if last == 0 {
		c.nextExpiry = math.MaxInt64
	}
	c.view.Unlock()
}

// extend moves live hold hd's expiry to at least expiry.
func (c *memCustomer) extend(hd *memHold, expiry, ttl int64) {
	c.view.Lock()
	hd.expiry, hd.ttl = max(hd.expiry, expiry), max(hd.ttl, ttl)
	c.view.Unlock()
}

// forget removes closed record id.
func (c *memCustomer) forget(id string) {
	if _, ok := c.closed[id]; ok {
		c.view.Lock()
		delete(c.closed, id)
		c.view.Unlock()
		c.h.nClosed.Add(-1)
	}
}

// closedState returns how hold id was closed, if it expired or was
// released and is still remembered at nowMs; a record past its keep is
// forgotten at once.
func (c *memCustomer) closedState(id string, nowMs int64) (holdState, bool) {
	cl, ok := c.closed[id]
	if !ok {
		return 0, false
	}
	if cl.forgetAt <= nowMs {
		c.forget(id)
		return 0, false
	}
	return cl.state, true
}

// close records hold id as closed in state: released holds for max(ttl,
// releasedKeep), expired ones for retentionMs, unless maxClosed records
// are kept already (see the top of this file). It reports whether it
// remembered the hold.
func (c *memCustomer) close(id string, state holdState, ttl, nowMs, retentionMs int64) bool {
	c.drop(id)
	keep := retentionMs
	if state == holdReleased {
		keep = min(max(ttl, c.h.releasedKeep), retentionMs)
	}
	if _, ok := c.closed[id]; !ok {
		if c.h.nClosed.Add(1) > c.h.maxClosed {
			c.h.nClosed.Add(-1)
			c.h.dropped.Add(1)
			return false
		}
	}
	c.view.Lock()
	c.closed[id] = memClosed{state: state, forgetAt: nowMs + keep}
	c.view.Unlock()
	return true
}

// expire closes the live holds whose expiry has come by nowMs (but for
// those being settled) and returns how many it closed as expired. Every
// call that touches a customer's holds runs it first, as every script does
// on Redis, so that an expired hold's keep starts at the same moment in
// both stores. (Closed records past their keep are forgotten when read,
// and by forgetClosed.)
func (c *memCustomer) expire(nowMs, retentionMs int64) int {
	if nowMs < c.nextExpiry {
		return 0
	}
	n := 0
	next := int64(math.MaxInt64)
	for i := len(c.order) - 1; i >= 0; i-- {
		hd := c.order[i]
		if hd.expiry <= nowMs && hd.settling == 0 {
			c.close(hd.id, holdExpired, hd.ttl, nowMs, retentionMs)
			n++
			continue
		}
		next = min(next, hd.expiry)
	}
	c.nextExpiry = next
	return n
}

// forgetClosed forgets the closed records past their keep at nowMs.
func (c *memCustomer) forgetClosed(nowMs int64) {
	for id, cl := range c.closed {
		if cl.forgetAt <= nowMs {
			c.forget(id)
		}
	}
}

// reserved returns the sum of the holds live at nowMs, for a reader whose
// snapshot of the file ends at entry seq, and the part of it held by
// holds with a Settle in flight: each counts for the larger of its
// amount and its charge until the charge is in the balance instead (a
// refusal this part may cause commits them and decides again, see
// BoltStore.reserve). settled reports whether that snapshot records hold
// id as settled; it is asked only about holds whose Settle in flight may
// be in the snapshot. A hold past its expiry is still here only while a
// Settle of it is in flight (expire keeps those): it counts until its
// charge is in, as any hold being settled does, so that it never counts
// as neither hold nor charge.
func (c *memCustomer) reserved(nowMs, retentionMs, seq int64, settled func(id string) (bool, error)) (sum, settling int64, err error) {
	c.expire(nowMs, retentionMs)
	for _, hd := range c.order {
		if e := hd.entry.Load(); hd.settling > 0 && e != 0 && e <= seq {
			if hd.charged.Load() {
				continue
			}
			done, err := settled(hd.id)
			if err != nil {
				return 0, 0, err
			}
			if done {
				continue
			}
		}
		amount := hd.amount
		if hd.settling > 0 {
			amount = max(amount, hd.actual)
			settling += amount
		}
		sum += amount
	}
	return sum, settling, nil
}
