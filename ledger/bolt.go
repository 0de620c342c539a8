package ledger

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
	"go.uber.org/zap"

	"github.com/tollgate-dev/tollgate/money"
)

// BoltStore is a Store and Meta in one local file (bbolt), for a single
// tollgate process: the default, so that tollgate runs with nothing else
// installed. Every commit is fsynced before a method returns, so what a
// method reported survives kill -9 and power loss. Only one process may
// open the file; replicas that share balances need RedisStore.
//
// Layout (bbolt buckets; integers are 8-byte big-endian, times unix ms with
// the sign bit flipped so that they sort):
//
//	customers/<customer>/state            balance, entry seq, suspension count, debt, lot expiry bound
//	customers/<customer>/holds/<hold>     amount, expiry
//	customers/<customer>/closed/<hold>    state (e|r|s), forget-at, entry seq
//	customers/<customer>/entries/<seq>    "<amount> <balance_after> <json>" (see codec.go)
//	customers/<customer>/credits/<key>    "<o|c> <total> <seq> <kind>"
//	customers/<customer>/suspension/<r>   "suspended" | "lifted"
//	customers/<customer>/lots/<lot>       active lot, the text of lots.go
//	customers/<customer>/lotburn/<priority byte><expiry|never><lot>   burn order
//	customers/<customer>/lotexp/<expiry><lot>                         expiring lots
//	customers/<customer>/plan             plan inputs (boltplan.go)
//	expiry/<expiry><customer>\x00<hold>   index of live holds for Sweep
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

	// Group commit: writes queue here and one goroutine commits whatever
	// has queued since its last commit in one transaction, so concurrent
	// requests share an fsync without waiting for a timer (bbolt's Batch
	// waits up to MaxBatchDelay even when alone).
	mu      sync.Mutex
	queue   []*boltCall
	writing bool

	// writes is the outcome of recent commits, for Ready.
	writes writeHealth
}

var (
	_ Store = (*BoltStore)(nil)
	_ Meta  = (*BoltStore)(nil)
)

// Bucket and key names.
const (
	bCustomers  = "customers"
	bExpiry     = "expiry"
	bForget     = "forget"
	bMeta       = "meta"
	bLocks      = "locks"
	bProbe      = "probe" // Ready's probe write, after a failed commit
	bHolds      = "holds"
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
		for _, name := range []string{bCustomers, bExpiry, bForget, bMeta, bLocks, bLotExpiry, bSchema} {
			if _, err := tx.CreateBucketIfNotExists([]byte(name)); err != nil {
				return err
			}
		}
		if err := eventsBucket(tx, opts.Events != nil); err != nil {
			return err
		}
		return migrateLots(tx, unixMilli(opts.Now()))
	})
	if err != nil {
		if cerr := db.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("close: %w", cerr))
		}
		return nil, fmt.Errorf("ledger: initialise %s: %w", path, err)
	}
	return &BoltStore{db: db, path: path, now: opts.Now, log: opts.Logger, retention: opts.Retention, events: newEventConfig(opts.Events), journalMax: opts.JournalMaxRecords}, nil
}

// Reserve implements Store.
func (s *BoltStore) Reserve(ctx context.Context, customer, holdID string, amount money.Micros, ttl time.Duration) error {
	_, err := s.reserve(ctx, customer, holdID, amount, ttl, false, 0)
	return err
}

// ReserveAvailable implements Store.
func (s *BoltStore) ReserveAvailable(ctx context.Context, customer, holdID string, amount money.Micros, ttl time.Duration) (money.Micros, error) {
	return s.reserve(ctx, customer, holdID, amount, ttl, false, 0)
}

// reserve is ReserveAvailable, and ReservePlan when checkPlan is set.
func (s *BoltStore) reserve(ctx context.Context, customer, holdID string, amount money.Micros, ttl time.Duration, checkPlan bool, planVersion int64) (money.Micros, error) {
	if err := checkReserve(customer, holdID, amount, ttl); err != nil {
		return 0, err
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	now := s.now()
	nowMs, expiry := unixMilli(now), expiryMilli(now, ttl)
	if known, err := s.known(customer); err != nil {
		return 0, s.fail("reserve "+holdID, err)
	} else if !known {
		if checkPlan && planVersion != 0 {
			return 0, &PlanChangedError{Customer: customer}
		}
		// A customer never seen has nothing available, is not suspended
		// and has no entries: refuse a hold or allow a free one (which
		// stores nothing, see the c.seq == 0 case below) without a write,
		// so that requests naming arbitrary customers cannot grow the file.
		if amount > 0 {
			return 0, &InsufficientCreditsError{Customer: customer, Available: 0, Required: amount}
		}
		return 0, nil
	}
	var result error
	var after money.Micros
	err := s.update(func(tx *bbolt.Tx) error {
		result, after = nil, 0
		c, err := openCustomer(tx, customer, false)
		if err == nil {
			c, err = s.withEvents(c, nowMs)
		}
		if err != nil {
			return err
		}
		if c == nil {
			return fmt.Errorf("%w: the bucket of %s vanished", errCorrupt, customer) // never deleted
		}
		reserved, err := c.current(nowMs, s.retention)
		if err != nil {
			return err
		}
		if c.holds.Get([]byte(holdID)) != nil {
			result = fmt.Errorf("reserve %s for %s: %w", holdID, customer, ErrDuplicateHold)
			return nil
		}
		if _, _, ok, err := c.closedState(holdID, nowMs); err != nil {
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
		available := st.balance - reserved
		if available < int64(amount) {
			result = &InsufficientCreditsError{Customer: customer, Available: money.Micros(available), Required: amount, Reserved: money.Micros(reserved)}
			return c.depleted(st.seq, int64(amount))
		}
		if amount == 0 && st.seq == 0 {
			// A free hold of a customer without entries holds nothing and
			// is not stored, as in lua/reserve.lua; Settle settles it at
			// zero by writing nothing.
			after = money.Micros(available)
			return nil
		}
		after = money.Micros(available) - amount
		return c.putHold(holdID, int64(amount), expiry)
	})
	if err != nil {
		return 0, s.fail("reserve "+holdID, err)
	}
	if result != nil {
		return 0, result
	}
	return after, nil
}

// Settle implements Store.
func (s *BoltStore) Settle(ctx context.Context, customer, holdID string, actual money.Micros, ch Charge) (Entry, error) {
	ch, err := checkSettle(customer, holdID, actual, ch)
	if err != nil {
		return Entry{}, err
	}
	if err := ctx.Err(); err != nil {
		return Entry{}, err
	}
	now := s.now()
	eb := chargeBody(ch, now)
	nowMs, body := unixMilli(now), eb.json()
	// unknown answers for a hold the customer does not have: a free hold
	// Reserve did not store is settled at zero by writing nothing.
	unknown := func(balance int64) (Entry, error) {
		if actual == 0 {
			return unrecorded(eb, customer, money.Micros(balance)), nil
		}
		return Entry{}, fmt.Errorf("settle %s of %s: %w", holdID, customer, ErrHoldNotFound)
	}
	if actual == 0 {
		if known, err := s.known(customer); err != nil {
			return Entry{}, s.fail("settle "+holdID, err)
		} else if !known {
			return unknown(0)
		}
	}
	var (
		entry  Entry
		result error
	)
	err = s.update(func(tx *bbolt.Tx) error {
		entry, result = Entry{}, nil
		c, err := openCustomer(tx, customer, false)
		if err == nil {
			c, err = s.withEvents(c, nowMs)
		}
		if err != nil {
			return err
		}
		if c == nil {
			entry, result = unknown(0)
			return nil
		}
		if _, err := c.current(nowMs, s.retention); err != nil {
			return err
		}
		live := c.holds.Get([]byte(holdID)) != nil
		if !live {
			state, seq, ok, err := c.closedState(holdID, nowMs)
			switch {
			case err != nil:
				return err
			case !ok:
				st, err := c.state()
				if err != nil {
					return err
				}
				entry, result = unknown(st.balance)
				return nil
			case state == holdReleased:
				result = fmt.Errorf("settle %s of %s: %w", holdID, customer, ErrHoldReleased)
				return nil
			case state == holdSettled:
				entry, err = c.entry(seq)
				return err
			}
			// holdExpired: the hold expired before it was settled; the usage
			// happened all the same, so it is charged.
		}
		st, err := c.state()
		if err != nil {
			return err
		}
		if st.balance-int64(actual) < -int64(MaxAmount) {
			result = fmt.Errorf("settle %s: %w: charging %s would take %s's balance below -%s", holdID, ErrInvalidAmount, actual, customer, MaxAmount)
			return nil
		}
		if live {
			if err := c.dropHold(holdID); err != nil {
				return err
			}
		}
		var seq int64
		entry, seq, err = c.appendEntry(-int64(actual), body)
		if err != nil {
			return err
		}
		if actual > 0 {
			if err := c.spend(int64(actual), -1); err != nil {
				return err
			}
		}
		if err := c.closeHold(holdID, holdSettled, nowMs, s.retention, seq); err != nil {
			return err
		}
		return c.checkLow(seq)
	})
	if err != nil {
		return Entry{}, s.fail("settle "+holdID, err)
	}
	return entry, result
}

// Extend implements Store.
func (s *BoltStore) Extend(ctx context.Context, customer, holdID string, ttl time.Duration) error {
	if err := checkExtend(customer, holdID, ttl); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	now := s.now()
	nowMs, expiry := unixMilli(now), expiryMilli(now, ttl)
	var result error
	err := s.update(func(tx *bbolt.Tx) error {
		result = nil
		c, err := openCustomer(tx, customer, false)
		if err == nil {
			c, err = s.withEvents(c, nowMs)
		}
		if err != nil {
			return err
		}
		if c == nil {
			result = fmt.Errorf("extend %s of %s: %w", holdID, customer, ErrHoldNotFound)
			return nil
		}
		if _, err := c.current(nowMs, s.retention); err != nil {
			return err
		}
		if v := c.holds.Get([]byte(holdID)); v != nil {
			amount, old, err := decodeHold(v)
			if err != nil || expiry <= old {
				return err
			}
			if err := c.dropHold(holdID); err != nil {
				return err
			}
			return c.putHold(holdID, amount, expiry)
		}
		state, _, ok, err := c.closedState(holdID, nowMs)
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

// known reports whether the file has a bucket for customer, in a read
// transaction: calls that would write nothing for a customer never seen
// answer without waiting for a write and its fsync.
func (s *BoltStore) known(customer string) (bool, error) {
	var ok bool
	err := s.db.View(func(tx *bbolt.Tx) error {
		root := tx.Bucket([]byte(bCustomers))
		if root == nil {
			return fmt.Errorf("%w: no %s bucket", errCorrupt, bCustomers)
		}
		ok = root.Bucket([]byte(customer)) != nil
		return nil
	})
	return ok, err
}

// Release implements Store.
func (s *BoltStore) Release(ctx context.Context, customer, holdID string) error {
	if err := checkRelease(customer, holdID); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	nowMs := unixMilli(s.now())
	err := s.update(func(tx *bbolt.Tx) error {
		c, err := openCustomer(tx, customer, false)
		if err == nil {
			c, err = s.withEvents(c, nowMs)
		}
		if err != nil || c == nil {
			return err
		}
		if _, err := c.current(nowMs, s.retention); err != nil {
			return err
		}
		if c.holds.Get([]byte(holdID)) != nil {
			if err := c.dropHold(holdID); err != nil {
				return err
			}
			return c.closeHold(holdID, holdReleased, nowMs, s.retention, 0)
		}
		state, _, ok, err := c.closedState(holdID, nowMs)
		if err != nil {
			return err
		}
		if ok && state == holdExpired {
			return c.closeHold(holdID, holdReleased, nowMs, s.retention, 0)
		}
		return nil
	})
	if err != nil {
		return s.fail("release "+holdID, err)
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
	body := eb.json()
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
		var rec *creditRecord
		if v := c.credits.Get([]byte(cr.Key)); v != nil {
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
		e, seq, err := c.appendEntry(int64(delta), body)
		if err != nil {
			return err
		}
		res = creditResult(e, true)
		r := creditRecord{cumulative: cr.Cumulative, total: cr.Amount, seq: seq, kind: cr.Kind}
		if err := c.credits.Put([]byte(cr.Key), []byte(r.String())); err != nil {
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
// first.
func (s *BoltStore) Account(ctx context.Context, customer string) (Account, error) {
	if err := checkCustomer(customer); err != nil {
		return Account{}, err
	}
	if err := ctx.Err(); err != nil {
		return Account{}, err
	}
	nowMs := unixMilli(s.now())
	acct := Account{Customer: customer}
	err := s.readCurrent(customer, nowMs, func(c *boltCustomer) error {
		if c == nil {
			return nil
		}
		st, err := c.state()
		if err != nil {
			return err
		}
		var reserved int64
		err = c.holds.ForEach(func(_, v []byte) error {
			amount, expiry, err := decodeHold(v)
			if err != nil {
				return err
			}
			if expiry > nowMs {
				reserved += amount
			}
			return nil
		})
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
		if err != nil {
			return err
		}
		if c.suspension.Get([]byte(reason)) != nil {
			return nil
		}
		if err := c.suspension.Put([]byte(reason), []byte(reasonSuspended)); err != nil {
			return err
		}
		if err := c.addSuspended(1); err != nil {
			return err
		}
		return c.suspensionEvent(EventCustomerSuspended, 1, reason, s.retention)
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
		if err != nil {
			return err
		}
		prev := string(c.suspension.Get([]byte(reason)))
		if prev == reasonLifted {
			return nil
		}
		if err := c.suspension.Put([]byte(reason), []byte(reasonLifted)); err != nil {
			return err
		}
		if prev == reasonSuspended {
			if err := c.addSuspended(-1); err != nil {
				return err
			}
			return c.suspensionEvent(EventCustomerReinstate, 0, reason, s.retention)
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

// Close closes the file after the write in progress, if any. Writes
// still queued fail with ErrStoreUnavailable.
func (s *BoltStore) Close() error { return s.db.Close() }

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
