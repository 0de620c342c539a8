package ledger

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
	"go.uber.org/zap"

	"github.com/tollgate-dev/tollgate/money"
)

// BoltStore is a Store and Meta in one local file (bbolt), for a single
// tollgate process: the default, so that tollgate runs with nothing else
// installed. Every balance change is committed and fsynced before its
// method returns, so what a method reported survives kill -9 and power
// loss. Holds are kept in memory (boltholds.go): Reserve, Release and
// Extend write nothing, and a crash or restart releases the holds of the
// process before, as their expiry would. Only one process may open the
// file; replicas that share balances need RedisStore.
//
// Layout (bbolt buckets; integers are 8-byte big-endian, times unix ms with
// the sign bit flipped so that they sort):
//
//	customers/<customer>/state            balance, entry seq, suspension count, debt, lot expiry bound
//	customers/<customer>/closed/<hold>    state (s; e|r in files from before holds moved to memory), forget-at, entry seq
//	customers/<customer>/entries/<seq>    "<amount> <balance_after> <json>" (see codec.go)
//	customers/<customer>/credits/<key>    "<o|c> <total> <seq> <kind>"
//	customers/<customer>/suspension/<r>   "suspended" | "lifted"
//	customers/<customer>/lots/<lot>       active lot, the text of lots.go
//	customers/<customer>/lotburn/<priority byte><expiry|never><lot>   burn order
//	customers/<customer>/lotexp/<expiry><lot>                         expiring lots
//	customers/<customer>/plan             plan inputs (boltplan.go)
//	forget/<forget-at><customer>\x00<hold> index of closed holds for Sweep
//	lotexpiry/<expiry><customer>\x00<lot> index of expiring lots for Sweep
//	meta/<key>                            PutMeta values
//	locks/<name>                          "<expires_at_ms> <token>"
//	schema/lots                           present once balances are kept in lots
//
// Lot ids (<lot>) are 8-byte big-endian entry seqs, so that equal
// priorities and expiries burn oldest first; a never-expiring lot sorts
// last with the largest time.
type BoltStore struct {
	db        *bbolt.DB
	path      string
	now       func() time.Time
	log       *zap.Logger
	retention time.Duration
	events    *eventConfig // nil: outbound events off (boltoutbox.go)
	// journalMax is Options.JournalMaxRecords (boltjournal.go).
	journalMax int

	// holds are the live holds and the recently released or expired
	// ones; closed is set by Close, for the calls that touch only them.
	holds  *memHolds
	closed atomic.Bool

	// Group commit: writes queue here and one goroutine commits whatever
	// has queued since its last commit in one transaction, so concurrent
	// requests share an fsync. A write that comes alone commits at once
	// (bbolt's Batch waits up to MaxBatchDelay even then); settlements
	// commit at most one batch per settleGap, so that a steady stream of
	// them shares one commit (boltcommit.go). urgent is set while a write
	// that must not wait is queued; wake tells a waiting writer so.
	mu         sync.Mutex
	queue      []*boltCall
	writing    bool
	urgent     bool
	wake       chan struct{}
	lastCommit time.Time // when the last commit started, monotonic

	// writes is the outcome of recent commits, for Ready.
	writes writeHealth
}

var (
	_ Store        = (*BoltStore)(nil)
	_ Meta         = (*BoltStore)(nil)
	_ SettleQueuer = (*BoltStore)(nil)
)

// Bucket and key names.
const (
	bCustomers  = "customers"
	bExpiry     = "expiry" // live holds, in files from before holds moved to memory
	bForget     = "forget"
	bMeta       = "meta"
	bLocks      = "locks"
	bProbe      = "probe" // Ready's probe write, after a failed commit
	bHolds      = "holds" // in files from before holds moved to memory
	bClosed     = "closed"
	bEntries    = "entries"
	bCredits    = "credits"
	bSuspension = "suspension"
	bLots       = "lots"
	bLotBurn    = "lotburn"
	bLotExp     = "lotexp"
	bLotExpiry  = "lotexpiry"
	bSchema     = "schema"
	kState      = "state"
	kLotsSchema = "lots"

	reasonSuspended = "suspended"
	reasonLifted    = "lifted"
)

// OpenBolt opens (creating if needed, mode 0600) the store file at path.
// If another process has the file open it waits opts.LockTimeout and then
// fails with an error matching ErrStoreLocked that names the file.
func OpenBolt(path string, opts Options) (*BoltStore, error) {
	opts = opts.withDefaults()
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: opts.LockTimeout, OpenFile: opts.openFile})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("%w: %s (waited %s); run one tollgate process per store file, or use Redis to share balances between replicas", ErrStoreLocked, path, opts.LockTimeout)
	}
	if err != nil {
		return nil, fmt.Errorf("ledger: open %s: %w", path, err)
	}
	err = db.Update(func(tx *bbolt.Tx) error {
		for _, name := range []string{bCustomers, bForget, bMeta, bLocks, bLotExpiry, bSchema} {
			if _, err := tx.CreateBucketIfNotExists([]byte(name)); err != nil {
				return err
			}
		}
		if err := eventsBucket(tx, opts.Events != nil); err != nil {
			return err
		}
		if err := migrateLots(tx, unixMilli(opts.Now())); err != nil {
			return err
		}
		return dropFileHolds(tx)
	})
	if err != nil {
		if cerr := db.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("close: %w", cerr))
		}
		return nil, fmt.Errorf("ledger: initialise %s: %w", path, err)
	}
	return &BoltStore{db: db, path: path, wake: make(chan struct{}, 1), now: opts.Now, log: opts.Logger, retention: opts.Retention, events: newEventConfig(opts.Events), journalMax: opts.JournalMaxRecords, holds: newMemHolds(opts.maxClosedHolds, opts.releasedKeep)}, nil
}

// dropFileHolds removes the holds a file written before holds moved to
// memory keeps: the process that made them is gone, so they are released,
// as a crash releases the holds in memory.
func dropFileHolds(tx *bbolt.Tx) error {
	if tx.Bucket([]byte(bExpiry)) == nil {
		return nil
	}
	root := tx.Bucket([]byte(bCustomers))
	var customers []string
	err := root.ForEachBucket(func(k []byte) error {
		if root.Bucket(k).Bucket([]byte(bHolds)) != nil {
			customers = append(customers, string(k))
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, id := range customers {
		if err := root.Bucket([]byte(id)).DeleteBucket([]byte(bHolds)); err != nil {
			return err
		}
	}
	return tx.DeleteBucket([]byte(bExpiry))
}

// Reserve implements Store. It writes nothing: the hold lives in memory
// (boltholds.go), checked under the customer's mutex against the balance
// the file holds and the customer's other holds. (A refusal that only
// settlements in flight cause first commits them: see reserve.)
func (s *BoltStore) Reserve(ctx context.Context, customer, holdID string, amount money.Micros, ttl time.Duration) error {
	_, err := s.reserve(ctx, customer, holdID, amount, ttl, false, 0)
	return err
}

// ReserveAvailable implements Store, as Reserve.
func (s *BoltStore) ReserveAvailable(ctx context.Context, customer, holdID string, amount money.Micros, ttl time.Duration) (money.Micros, error) {
	return s.reserve(ctx, customer, holdID, amount, ttl, false, 0)
}

// reserve is ReserveAvailable, and ReservePlan when checkPlan is set. The
// plan version, the balance and the other holds are read from one
// snapshot of the file under the customer's mutex, so the decision is
// that of one moment; a plan write that returned before reserve began is
// in that snapshot. It writes nothing of its own but balance.depleted
// after a refusal, when events are on (see depletedAfterRefusal); a
// refusal that only settlements in flight cause commits the settlements
// queued so far, once, and is decided again (a refusal waits for that
// commit; a reservation that fits never waits for the disk).
func (s *BoltStore) reserve(ctx context.Context, customer, holdID string, amount money.Micros, ttl time.Duration, checkPlan bool, planVersion int64) (money.Micros, error) {
	if err := checkReserve(customer, holdID, amount, ttl); err != nil {
		return 0, err
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	now := s.now()
	nowMs, expiry, retMs := unixMilli(now), expiryMilli(now, ttl), s.retention.Milliseconds()
	mc := s.holds.lock(customer)
	defer s.holds.unlock(customer, mc)
	var (
		result         error
		after          money.Micros
		depleted       bool
		retry, flushed bool
	)
	decide := func(c *boltCustomer) error {
		result, after, depleted, retry = nil, 0, false, false
		if c == nil {
			if checkPlan && planVersion != 0 {
				result = &PlanChangedError{Customer: customer}
				return nil
			}
			// A customer never seen has nothing available, is not
			// suspended and has no entries: refuse a hold or allow a free
			// one (which is not kept, see below), so that requests naming
			// arbitrary customers leave nothing behind.
			if amount > 0 {
				result = &InsufficientCreditsError{Customer: customer, Available: 0, Required: amount}
			}
			return nil
		}
		if _, ok := mc.live[holdID]; ok {
			result = fmt.Errorf("reserve %s for %s: %w", holdID, customer, ErrDuplicateHold)
			return nil
		}
		if _, ok := mc.closedState(holdID, nowMs); ok {
			result = fmt.Errorf("reserve %s for %s: %w", holdID, customer, ErrDuplicateHold)
			return nil
		}
		if _, _, _, ok, err := c.peekClosed(holdID, nowMs); err != nil {
			return err
		} else if ok {
			result = fmt.Errorf("reserve %s for %s: %w", holdID, customer, ErrDuplicateHold)
			return nil
		}
		if checkPlan {
			if ps, err := c.plan(); err != nil {
				return err
			} else if ps.Version != planVersion {
				result = &PlanChangedError{Customer: customer, State: ps}
				return nil
			}
		}
		st, err := c.state()
		if err != nil {
			return err
		}
		if st.suspended > 0 {
			result = fmt.Errorf("reserve %s: %w: %s", holdID, ErrCustomerSuspended, customer)
			return nil
		}
		reserved, settling, err := mc.reserved(nowMs, retMs, st.seq, func(id string) (bool, error) { return c.settled(id, nowMs) })
		if err != nil {
			return err
		}
		available := st.balance - reserved
		if available < int64(amount) {
			result = &InsufficientCreditsError{Customer: customer, Available: money.Micros(available), Required: amount, Reserved: money.Micros(reserved)}
			if !flushed && available+settling >= int64(amount) {
				// Answered requests hold what they reserved until their
				// charges commit, which may wait out settleGap:
				// commit them and look again, so that a refusal does not
				// depend on when the writer last committed.
				retry = true
				return nil
			}
			if s.events != nil && st.seq != 0 {
				es, err := c.eventState()
				depleted = err == nil && !es.dep
				return err
			}
			return nil
		}
		if amount == 0 && st.seq == 0 {
			// A free hold of a customer without entries holds nothing and
			// is not kept, as in lua/reserve.lua; Settle settles it at
			// zero by writing nothing.
			after = money.Micros(available)
			return nil
		}
		after = money.Micros(available) - amount
		mc.put(holdID, &memHold{amount: int64(amount), expiry: expiry, ttl: ttl.Milliseconds()})
		return nil
	}
	err := s.readCurrent(customer, nowMs, decide)
	if err == nil && retry {
		// An urgent write commits every settlement queued before it. The
		// customer's mutex may be held meanwhile: the writer never takes
		// it (see TestBoltQueuedContinuationOffTheWriter).
		flushed = true
		if err = s.update(func(*bbolt.Tx) error { return nil }); err == nil {
			err = s.readCurrent(customer, nowMs, decide)
		}
	}
	if err == nil && depleted {
		err = s.depletedAfterRefusal(customer, nowMs, int64(amount))
	}
	if err != nil {
		return 0, s.fail("reserve "+holdID, err)
	}
	if result != nil {
		return 0, result
	}
	return after, nil
}

// depletedAfterRefusal writes balance.depleted for a Reserve of required
// that was just refused for want of credits, as reserve.lua does in the
// refusing script. Reserve decided on a snapshot and this is a write of
// its own, so it checks again in the write: the event is written only if
// the customer still lacks required (a credit committed in between
// re-armed it and may have covered it) and it was not written since the
// last positive credit. A refusal writes nothing else, and nothing at all
// once balance.depleted is written.
func (s *BoltStore) depletedAfterRefusal(customer string, nowMs, required int64) error {
	return s.update(func(tx *bbolt.Tx) error {
		c, err := openCustomer(tx, customer, false)
		if err == nil {
			c, err = s.withEvents(c, nowMs)
		}
		if err != nil || c == nil || c.ev == nil {
			return err
		}
		st, err := c.state()
		if err != nil || c.ev.balance0-c.ev.reserved0 >= required {
			return err
		}
		return c.depleted(st.seq, required)
	})
}

// Settle implements Store. Its transaction debits the balance, appends the
// charge entry and records the hold id as settled, which keeps Settle
// idempotent across restarts; the hold leaves memory once that is
// committed.
func (s *BoltStore) Settle(ctx context.Context, customer, holdID string, actual money.Micros, ch Charge) (Entry, error) {
	ch, err := checkSettle(customer, holdID, actual, ch)
	if err != nil {
		return Entry{}, err
	}
	if err := ctx.Err(); err != nil {
		return Entry{}, err
	}
	// A live hold, or one that expired (the usage happened all the same,
	// so it is charged), is marked as being settled so that readers ask
	// the file whether the charge is in yet (memHold.settling). The clock
	// is read, and the charge queued, under the customer's mutex: a call
	// that held it meanwhile (a Reserve waiting for a commit) may have
	// expired a lot at a later time, and a charge must not be dated, and
	// so applied to the lots, before what the file already holds.
	mc := s.holds.lock(customer)
	st := s.newSettlement(customer, holdID, actual, ch)
	mc.expire(st.nowMs, st.retMs)
	h := mc.live[holdID]
	if h == nil {
		if state, ok := mc.closedState(holdID, st.nowMs); ok {
			if state == holdReleased {
				s.holds.unlock(customer, mc)
				return Entry{}, fmt.Errorf("settle %s of %s: %w", holdID, customer, ErrHoldReleased)
			}
			// Expired: back among the live holds, as one that counts
			// for nothing, so that a Release or Settle meanwhile sees
			// this Settle in flight (memHold.settling, .released).
			mc.forget(holdID)
			h = &memHold{expiry: st.nowMs}
			mc.put(holdID, h)
		}
	}
	var wait func() error
	if h != nil {
		st.begin(h)
		wait = s.pushSettle(st.write, st.charged)
	}
	s.holds.unlock(customer, mc)

	if h == nil {
		// Settled before (possibly before a restart), or unknown. (A
		// charge the file alone knows to make, of a hold an older file
		// recorded as expired, is queued outside the mutex: no live
		// hold of it is here to keep in order with.)
		charge, err := st.fromFile()
		if err != nil {
			return Entry{}, err
		}
		if !charge {
			return st.entry, nil
		}
		wait = s.pushSettle(st.write, st.charged)
	}
	return st.finish(wait())
}

// QueueSettle implements SettleQueuer for a live hold in memory: its
// charge joins the next commit (see settleGap) and done runs once that is
// committed, beside the other continuations of the commit (enqueueThen).
// Holds that expired or were closed, and a closed store, are left to
// Settle.
func (s *BoltStore) QueueSettle(customer, holdID string, actual money.Micros, ch Charge, done func(Entry, error)) bool {
	ch, err := checkSettle(customer, holdID, actual, ch)
	if err != nil || s.open() != nil {
		return false
	}
	mc := s.holds.lock(customer)
	defer s.holds.unlock(customer, mc)
	st := s.newSettlement(customer, holdID, actual, ch) // under the mutex, as in Settle
	mc.expire(st.nowMs, st.retMs)
	h := mc.live[holdID]
	if h == nil {
		return false
	}
	st.begin(h)
	s.enqueueThen(&boltCall{fn: st.write, committed: st.charged}, func(err error) { done(st.finish(err)) })
	return true
}

// boltSettlement is one Settle of a hold: what its transaction writes and
// reports, and the hold in memory it settles (nil for a hold only the
// file knows).
type boltSettlement struct {
	s            *BoltStore
	customer, id string
	actual       money.Micros
	eb           entryBody
	nowMs, retMs int64
	h            *memHold
	entry        Entry
	result       error
}

func (s *BoltStore) newSettlement(customer, holdID string, actual money.Micros, ch Charge) *boltSettlement {
	now := s.now()
	eb := chargeBody(ch, now)
	return &boltSettlement{s: s, customer: customer, id: holdID, actual: actual, eb: eb,
		nowMs: unixMilli(now), retMs: s.retention.Milliseconds()}
}

// begin marks live hold h as being settled by st (memHold.settling,
// .actual); the customer's mutex is held.
func (st *boltSettlement) begin(h *memHold) {
	h.settling++
	h.actual = max(h.actual, int64(st.actual))
	st.h = h
}

// unknown answers for a hold the customer does not have: a free hold
// Reserve did not keep is settled at zero by writing nothing.
func (st *boltSettlement) unknown(balance int64) {
	if st.actual == 0 {
		st.entry, st.result = unrecorded(st.eb, st.customer, money.Micros(balance)), nil
		return
	}
	st.entry, st.result = Entry{}, fmt.Errorf("settle %s of %s: %w", st.id, st.customer, ErrHoldNotFound)
}

// fromFile answers a Settle of a hold not in memory from the file, and
// reports whether it must be charged still (an expired hold recorded by
// a file written before holds moved to memory). Otherwise st.entry and
// the error returned are Settle's answer.
func (st *boltSettlement) fromFile() (charge bool, err error) {
	err = st.s.readCurrent(st.customer, st.nowMs, func(c *boltCustomer) error {
		st.entry, st.result, charge = Entry{}, nil, false
		if c == nil {
			st.unknown(0)
			return nil
		}
		state, seq, _, ok, err := c.peekClosed(st.id, st.nowMs)
		switch {
		case err != nil:
			return err
		case !ok:
			bs, err := c.state()
			if err != nil {
				return err
			}
			st.unknown(bs.balance)
		case state == holdSettled:
			st.entry, err = c.entry(seq)
			return err
		case state == holdReleased:
			st.result = fmt.Errorf("settle %s of %s: %w", st.id, st.customer, ErrHoldReleased)
		default:
			charge = true
		}
		return nil
	})
	if err != nil {
		return false, st.s.fail("settle "+st.id, err)
	}
	if charge {
		return true, nil
	}
	return false, st.result
}

// charged runs once the settlement's transaction is committed: from then
// on the hold counts for nothing without a look at the file.
func (st *boltSettlement) charged() {
	if h := st.h; h != nil && h.entry.Load() != 0 {
		h.charged.Store(true)
	}
}

// write is the settlement's transaction; it may run more than once (see
// update).
func (st *boltSettlement) write(tx *bbolt.Tx) error {
	s, h, holdID, customer, actual, nowMs := st.s, st.h, st.id, st.customer, st.actual, st.nowMs
	st.entry, st.result = Entry{}, nil
	if h != nil && !h.charged.Load() {
		// A run of a batch that was rolled back may have set it.
		// (Once charged, a concurrent Settle of the same hold finds
		// it settled at that entry and stores the same one.)
		h.entry.Store(0)
	}
	c, err := openCustomer(tx, customer, false)
	if err == nil {
		c, err = s.withEvents(c, nowMs)
	}
	if err != nil {
		return err
	}
	if c == nil {
		st.unknown(0)
		return nil
	}
	if err := c.current(nowMs); err != nil {
		return err
	}
	// A record past its retention reads as none; closeHold replaces it
	// (prev), as it replaces an expired hold's record in a file written
	// before holds moved to memory.
	state, settledBy, prev, ok, err := c.peekClosed(holdID, nowMs)
	if err != nil {
		return err
	} else if ok && state == holdSettled {
		if h != nil {
			h.entry.Store(settledBy)
		}
		st.entry, err = c.entry(settledBy)
		return err
	} else if ok && state == holdReleased {
		st.result = fmt.Errorf("settle %s of %s: %w", holdID, customer, ErrHoldReleased)
		return nil
	}
	bs, err := c.state()
	if err != nil {
		return err
	}
	if bs.balance-int64(actual) < -int64(MaxAmount) {
		st.result = fmt.Errorf("settle %s: %w: charging %s would take %s's balance below -%s", holdID, ErrInvalidAmount, actual, customer, MaxAmount)
		return nil
	}
	var seq int64
	st.entry, seq, err = c.appendEntry(-int64(actual), st.eb)
	if err != nil {
		return err
	}
	if h != nil {
		h.entry.Store(seq)
	}
	if actual > 0 {
		if err := c.spend(int64(actual), -1); err != nil {
			return err
		}
	}
	if err := c.closeHold(holdID, holdSettled, nowMs, s.retention, seq, prev); err != nil {
		return err
	}
	// The hold no longer counts in this transaction (its closed
	// record is written and h.entry set), so the figures are those
	// after the charge.
	return c.checkLow(seq)
}

// finish takes the hold out of memory once its settlement is committed
// (err is the commit's) and returns Settle's answer.
func (st *boltSettlement) finish(err error) (Entry, error) {
	s, h := st.s, st.h
	mc := s.holds.lock(st.customer)
	if h != nil {
		h.settling--
	}
	switch {
	case err == nil && st.result == nil:
		// Settled, now or before: the file answers for the hold from
		// here on.
		if h != nil && mc.live[st.id] == h {
			mc.drop(st.id)
		}
	case h != nil && h.settling == 0 && h.released && mc.live[st.id] == h:
		// A Release came while this Settle was in flight, and the hold
		// stayed open: it is released now.
		mc.close(st.id, holdReleased, h.ttl, st.nowMs, st.retMs)
	}
	s.holds.unlock(st.customer, mc)
	if err != nil {
		return Entry{}, s.fail("settle "+st.id, err)
	}
	return st.entry, st.result
}

// Extend implements Store. It writes nothing.
func (s *BoltStore) Extend(ctx context.Context, customer, holdID string, ttl time.Duration) error {
	if err := checkExtend(customer, holdID, ttl); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := s.open(); err != nil {
		return s.fail("extend "+holdID, err)
	}
	now := s.now()
	nowMs, expiry, retMs := unixMilli(now), expiryMilli(now, ttl), s.retention.Milliseconds()
	mc := s.holds.lock(customer)
	mc.expire(nowMs, retMs)
	if h := mc.live[holdID]; h != nil {
		var err error
		if h.expiry > nowMs {
			mc.extend(h, expiry, ttl.Milliseconds())
		} else {
			if h.settling == 0 {
				mc.close(holdID, holdExpired, h.ttl, nowMs, retMs)
			}
			err = extendError(holdID, customer, holdExpired, true)
		}
		s.holds.unlock(customer, mc)
		return err
	}
	state, ok := mc.closedState(holdID, nowMs)
	s.holds.unlock(customer, mc)
	if ok {
		return extendError(holdID, customer, state, ok)
	}
	// Settled (the file remembers), or unknown.
	var result error
	err := s.db.View(func(tx *bbolt.Tx) error {
		c, err := openCustomer(tx, customer, false)
		if err != nil {
			return err
		}
		if c == nil {
			result = extendError(holdID, customer, 0, false)
			return nil
		}
		state, _, _, ok, err := c.peekClosed(holdID, nowMs)
		if err != nil {
			return err
		}
		result = extendError(holdID, customer, state, ok)
		return nil
	})
	if err != nil {
		return s.fail("extend "+holdID, err)
	}
	return result
}

// Release implements Store. It writes nothing to the file. An id it does
// not know, of a customer with entries, it remembers as released all the
// same, as release.lua records it on Redis: a Reserve of that id arriving
// later is refused (see release.lua for why one may).
func (s *BoltStore) Release(ctx context.Context, customer, holdID string) error {
	if err := checkRelease(customer, holdID); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := s.open(); err != nil {
		return s.fail("release "+holdID, err)
	}
	nowMs, retMs := unixMilli(s.now()), s.retention.Milliseconds()
	mc := s.holds.lock(customer)
	defer s.holds.unlock(customer, mc)
	mc.expire(nowMs, retMs)
	if h := mc.live[holdID]; h != nil {
		if h.settling > 0 {
			// The Settle in flight decides: its charge stands, or, if it
			// fails, it releases the hold (see Settle).
			h.released = true
			return nil
		}
		mc.close(holdID, holdReleased, h.ttl, nowMs, retMs)
		return nil
	}
	if state, ok := mc.closedState(holdID, nowMs); ok {
		if state == holdExpired {
			mc.close(holdID, holdReleased, 0, nowMs, retMs)
		}
		return nil
	}
	var unknown bool
	err := s.db.View(func(tx *bbolt.Tx) error {
		c, err := openCustomer(tx, customer, false)
		if err != nil || c == nil {
			return err
		}
		if _, _, _, ok, err := c.peekClosed(holdID, nowMs); err != nil || ok {
			return err // closed in the file (settled, or by an older version): left as it is
		}
		st, err := c.state()
		unknown = st.seq > 0
		return err
	})
	if err != nil {
		return s.fail("release "+holdID, err)
	}
	if unknown {
		mc.close(holdID, holdReleased, 0, nowMs, retMs)
	}
	return nil
}

// Credit implements Store.
func (s *BoltStore) Credit(ctx context.Context, cr Credit) (CreditResult, error) {
	if err := checkCredit(cr); err != nil {
		return CreditResult{}, err
	}
	if err := ctx.Err(); err != nil {
		return CreditResult{}, err
	}
	now := s.now()
	nowMs, eb, lp := unixMilli(now), creditBody(cr, now), creditLot(cr)
	var (
		res    CreditResult
		result error
	)
	err := s.update(func(tx *bbolt.Tx) error {
		res, result = CreditResult{}, nil
		c, err := openCustomer(tx, cr.Customer, true)
		if err == nil {
			c, err = s.withEvents(c, nowMs)
		}
		if err != nil {
			return err
		}
		credits, err := c.creditsBucket()
		if err != nil {
			return err
		}
		var rec *creditRecord
		if v := credits.Get([]byte(cr.Key)); v != nil {
			r, err := parseCreditRecord(string(v))
			if err != nil {
				return err
			}
			rec = &r
		}
		decision, delta := decideCredit(rec, cr)
		switch decision {
		case creditConflict:
			result = conflictError(cr)
			return nil
		case creditReplay:
			e, err := c.entry(rec.seq)
			res = creditResult(e, false)
			return err
		}
		if _, err := c.expireLots(nowMs); err != nil {
			return err
		}
		st, err := c.state()
		if err != nil {
			return err
		}
		if nb := st.balance + int64(delta); nb > int64(MaxAmount) || nb < -int64(MaxAmount) {
			result = fmt.Errorf("credit %s: %w: %s would take %s's balance beyond ±%s", cr.Key, ErrInvalidAmount, cr.Amount, cr.Customer, MaxAmount)
			return nil
		}
		e, seq, err := c.appendEntry(int64(delta), eb)
		if err != nil {
			return err
		}
		res = creditResult(e, true)
		r := creditRecord{cumulative: cr.Cumulative, total: cr.Amount, seq: seq, kind: cr.Kind}
		if err := credits.Put([]byte(cr.Key), []byte(r.String())); err != nil {
			return err
		}
		if err := c.creditEvent(seq, int64(delta), lp.from, cr.Kind); err != nil {
			return err
		}
		if err := c.creditLot(seq, int64(delta), lp, cr.Kind, cr.Reference, nowMs, eb.At); err != nil {
			return err
		}
		return c.checkLow(-1)
	})
	if err != nil {
		return CreditResult{}, s.fail("credit "+cr.Key, err)
	}
	return res, result
}

// Account implements Store. It reads without writing (holds past their
// expiry simply do not count) unless a lot is due: its expiry is recorded
// first. Balance and holds are read under the customer's mutex, so they
// are of one moment.
func (s *BoltStore) Account(ctx context.Context, customer string) (Account, error) {
	if err := checkCustomer(customer); err != nil {
		return Account{}, err
	}
	if err := ctx.Err(); err != nil {
		return Account{}, err
	}
	nowMs, retMs := unixMilli(s.now()), s.retention.Milliseconds()
	acct := Account{Customer: customer}
	mc := s.holds.lock(customer)
	defer s.holds.unlock(customer, mc)
	err := s.readCurrent(customer, nowMs, func(c *boltCustomer) error {
		if c == nil {
			return nil
		}
		st, err := c.state()
		if err != nil {
			return err
		}
		reserved, _, err := mc.reserved(nowMs, retMs, st.seq, func(id string) (bool, error) { return c.settled(id, nowMs) })
		if err != nil {
			return err
		}
		acct.Balance = money.Micros(st.balance)
		acct.Reserved = money.Micros(reserved)
		acct.Available = money.Micros(st.balance - reserved)
		acct.Debt = money.Micros(st.debt)
		acct.Suspended = st.suspended > 0
		acct.NextExpiry, err = c.nextExpiry()
		return err
	})
	if err != nil {
		return Account{}, s.fail("account "+customer, err)
	}
	return acct, nil
}

// Entries implements Store.
func (s *BoltStore) Entries(ctx context.Context, customer, before string, limit int) (Page, error) {
	if err := checkCustomer(customer); err != nil {
		return Page{}, err
	}
	limit, err := checkLimit(limit)
	if err != nil {
		return Page{}, err
	}
	cursor, err := decodeCursor(customer, before)
	if err != nil {
		return Page{}, err
	}
	if err := ctx.Err(); err != nil {
		return Page{}, err
	}
	var page Page
	err = s.readCurrent(customer, unixMilli(s.now()), func(c *boltCustomer) error {
		if c == nil {
			return nil
		}
		st, err := c.state()
		if err != nil {
			return err
		}
		seqs, next := pageSeqs(customer, st.seq, cursor, limit)
		if len(seqs) == 0 {
			return nil
		}
		page.Next = next
		for _, seq := range seqs {
			e, err := c.entry(seq)
			if err != nil {
				return err
			}
			page.Entries = append(page.Entries, e)
		}
		return nil
	})
	if err != nil {
		return Page{}, s.fail("entries of "+customer, err)
	}
	return page, nil
}

// Suspend implements Store.
func (s *BoltStore) Suspend(ctx context.Context, customer, reason string) error {
	if err := checkSuspension(customer, reason); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	nowMs := unixMilli(s.now())
	err := s.update(func(tx *bbolt.Tx) error {
		c, err := openCustomer(tx, customer, true)
		if err == nil {
			c, err = s.withEvents(c, nowMs)
		}
		var suspension *bbolt.Bucket
		if err == nil {
			suspension, err = c.suspensionBucket()
		}
		if err != nil {
			return err
		}
		if suspension.Get([]byte(reason)) != nil {
			return nil
		}
		if err := suspension.Put([]byte(reason), []byte(reasonSuspended)); err != nil {
			return err
		}
		if err := c.addSuspended(1); err != nil {
			return err
		}
		return c.suspensionEvent(EventCustomerSuspended, 1, reason)
	})
	if err != nil {
		return s.fail("suspend "+customer, err)
	}
	return nil
}

// Lift implements Store.
func (s *BoltStore) Lift(ctx context.Context, customer, reason string) error {
	if err := checkSuspension(customer, reason); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	nowMs := unixMilli(s.now())
	err := s.update(func(tx *bbolt.Tx) error {
		c, err := openCustomer(tx, customer, true)
		if err == nil {
			c, err = s.withEvents(c, nowMs)
		}
		var suspension *bbolt.Bucket
		if err == nil {
			suspension, err = c.suspensionBucket()
		}
		if err != nil {
			return err
		}
		prev := string(suspension.Get([]byte(reason)))
		if prev == reasonLifted {
			return nil
		}
		if err := suspension.Put([]byte(reason), []byte(reasonLifted)); err != nil {
			return err
		}
		if prev == reasonSuspended {
			if err := c.addSuspended(-1); err != nil {
				return err
			}
			return c.suspensionEvent(EventCustomerReinstate, 0, reason)
		}
		return nil
	})
	if err != nil {
		return s.fail("lift "+customer, err)
	}
	return nil
}

// Ping implements Store.
func (s *BoltStore) Ping(ctx context.Context) error {
	if err := s.db.View(func(*bbolt.Tx) error { return nil }); err != nil {
		return s.fail("ping", err)
	}
	return nil
}

// Close commits the writes queued so far (settlements waiting out their
// gap included) and closes the file. A write queued after that, and every
// call after it, fails with ErrStoreUnavailable, those that would touch
// only the holds in memory included.
func (s *BoltStore) Close() error {
	// Settlements waiting out their gap (settleGap) commit first: an
	// urgent write queued behind them takes them along.
	_ = s.update(func(*bbolt.Tx) error { return nil })
	s.closed.Store(true)
	return s.db.Close()
}

// open returns an error matching bbolt's ErrDatabaseNotOpen once Close
// was called, for the calls that do not read the file.
func (s *BoltStore) open() error {
	if s.closed.Load() {
		return bolterrors.ErrDatabaseNotOpen
	}
	return nil
}

// fail wraps err with op, matching ErrStoreUnavailable when the file
// cannot be used: it is closed, or a write or fsync failed (a full or
// failing disk).
func (s *BoltStore) fail(op string, err error) error {
	var ce errCommit
	if errors.Is(err, bolterrors.ErrDatabaseNotOpen) || errors.As(err, &ce) || errors.Is(err, os.ErrClosed) {
		return fmt.Errorf("%s: %w: %s: %w", op, ErrStoreUnavailable, s.path, err)
	}
	return fmt.Errorf("%s: %w", op, err)
}
