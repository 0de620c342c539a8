package ledger

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"
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
//	customers/<customer>/state            balance, entry seq, suspension count
//	customers/<customer>/holds/<hold>     amount, expiry
//	customers/<customer>/closed/<hold>    state (e|r|s), forget-at, entry seq
//	customers/<customer>/entries/<seq>    "<amount> <balance_after> <json>" (see codec.go)
//	customers/<customer>/credits/<key>    "<o|c> <total> <seq> <kind>"
//	customers/<customer>/suspension/<r>   "suspended" | "lifted"
//	expiry/<expiry><customer>\x00<hold>   index of live holds for Sweep
//	forget/<forget-at><customer>\x00<hold> index of closed holds for Sweep
//	meta/<key>                            PutMeta values
//	locks/<name>                          "<expires_at_ms> <token>"
type BoltStore struct {
	db        *bbolt.DB
	path      string
	now       func() time.Time
	log       *zap.Logger
	retention time.Duration

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
	kState      = "state"

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
		for _, name := range []string{bCustomers, bExpiry, bForget, bMeta, bLocks} {
			if _, err := tx.CreateBucketIfNotExists([]byte(name)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("ledger: initialise %s: %w", path, err)
	}
	return &BoltStore{db: db, path: path, now: opts.Now, log: opts.Logger, retention: opts.Retention}, nil
}

// Reserve implements Store.
func (s *BoltStore) Reserve(ctx context.Context, customer, holdID string, amount money.Micros, ttl time.Duration) error {
	if err := checkReserve(customer, holdID, amount, ttl); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	now := s.now()
	nowMs, expiry := unixMilli(now), expiryMilli(now, ttl)
	if known, err := s.known(customer); err != nil {
		return s.fail("reserve "+holdID, err)
	} else if !known {
		// A customer never seen has nothing available, is not suspended
		// and has no entries: refuse a hold or allow a free one (which
		// stores nothing, see the c.seq == 0 case below) without a write,
		// so that requests naming arbitrary customers cannot grow the file.
		if amount > 0 {
			return &InsufficientCreditsError{Customer: customer, Available: 0, Required: amount}
		}
		return nil
	}
	var result error
	err := s.update(func(tx *bbolt.Tx) error {
		result = nil
		c, err := openCustomer(tx, customer, false)
		if err != nil {
			return err
		}
		if c == nil {
			return fmt.Errorf("%w: the bucket of %s vanished", errCorrupt, customer) // never deleted
		}
		reserved, err := c.expireHolds(nowMs, s.retention)
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
		st, err := c.state()
		if err != nil {
			return err
		}
		if st.suspended > 0 {
			result = fmt.Errorf("reserve %s: %w: %s", holdID, ErrCustomerSuspended, customer)
			return nil
		}
		if available := st.balance - reserved; available < int64(amount) {
			result = &InsufficientCreditsError{Customer: customer, Available: money.Micros(available), Required: amount}
			return nil
		}
		if amount == 0 && st.seq == 0 {
			// A free hold of a customer without entries holds nothing and
			// is not stored, as in lua/reserve.lua; Settle settles it at
			// zero by writing nothing.
			return nil
		}
		return c.putHold(holdID, int64(amount), expiry)
	})
	if err != nil {
		return s.fail("reserve "+holdID, err)
	}
	return result
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
		if err != nil {
			return err
		}
		if c == nil {
			entry, result = unknown(0)
			return nil
		}
		if _, err := c.expireHolds(nowMs, s.retention); err != nil {
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
			case state == 'r':
				result = fmt.Errorf("settle %s of %s: %w", holdID, customer, ErrHoldReleased)
				return nil
			case state == 's':
				entry, err = c.entry(seq)
				return err
			}
			// 'e': the hold expired before it was settled; the usage
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
		entry, err = c.appendEntry(-int64(actual), body)
		if err != nil {
			return err
		}
		seq, _ := entrySeq(entry)
		return c.closeHold(holdID, 's', nowMs, s.retention, seq)
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
		if err != nil {
			return err
		}
		if c == nil {
			result = fmt.Errorf("extend %s of %s: %w", holdID, customer, ErrHoldNotFound)
			return nil
		}
		if _, err := c.expireHolds(nowMs, s.retention); err != nil {
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

// extendError is Extend's answer for a hold that is not live: closed in
// state, or unknown when !ok.
func extendError(holdID, customer string, state byte, ok bool) error {
	why := ErrHoldNotFound
	switch {
	case !ok:
	case state == 'e':
		why = ErrHoldExpired
	case state == 'r':
		why = ErrHoldReleased
	case state == 's':
		why = ErrHoldSettled
	default:
		return fmt.Errorf("extend %s of %s: %w: hold state %q", holdID, customer, errCorrupt, state)
	}
	return fmt.Errorf("extend %s of %s: %w", holdID, customer, why)
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
		if err != nil || c == nil {
			return err
		}
		if _, err := c.expireHolds(nowMs, s.retention); err != nil {
			return err
		}
		if c.holds.Get([]byte(holdID)) != nil {
			if err := c.dropHold(holdID); err != nil {
				return err
			}
			return c.closeHold(holdID, 'r', nowMs, s.retention, 0)
		}
		state, _, ok, err := c.closedState(holdID, nowMs)
		if err != nil {
			return err
		}
		if ok && state == 'e' {
			return c.closeHold(holdID, 'r', nowMs, s.retention, 0)
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
	body := creditBody(cr, s.now()).json()
	var (
		res    CreditResult
		result error
	)
	err := s.update(func(tx *bbolt.Tx) error {
		res, result = CreditResult{}, nil
		c, err := openCustomer(tx, cr.Customer, true)
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
			res.Entry, err = c.entry(rec.seq)
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
		res.Entry, err = c.appendEntry(int64(delta), body)
		if err != nil {
			return err
		}
		res.Applied = true
		seq, _ := entrySeq(res.Entry)
		r := creditRecord{cumulative: cr.Cumulative, total: cr.Amount, seq: seq, kind: cr.Kind}
		return c.credits.Put([]byte(cr.Key), []byte(r.String()))
	})
	if err != nil {
		return CreditResult{}, s.fail("credit "+cr.Key, err)
	}
	return res, result
}

// Account implements Store. It reads without writing: holds past their
// expiry simply do not count.
func (s *BoltStore) Account(ctx context.Context, customer string) (Account, error) {
	if err := checkCustomer(customer); err != nil {
		return Account{}, err
	}
	if err := ctx.Err(); err != nil {
		return Account{}, err
	}
	nowMs := unixMilli(s.now())
	acct := Account{Customer: customer}
	err := s.db.View(func(tx *bbolt.Tx) error {
		c, err := openCustomer(tx, customer, false)
		if err != nil || c == nil {
			return err
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
		acct.Suspended = st.suspended > 0
		return nil
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
	err = s.db.View(func(tx *bbolt.Tx) error {
		c, err := openCustomer(tx, customer, false)
		if err != nil || c == nil {
			return err
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
	err := s.update(func(tx *bbolt.Tx) error {
		c, err := openCustomer(tx, customer, true)
		if err != nil {
			return err
		}
		if c.suspension.Get([]byte(reason)) != nil {
			return nil
		}
		if err := c.suspension.Put([]byte(reason), []byte(reasonSuspended)); err != nil {
			return err
		}
		return c.addSuspended(1)
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
	err := s.update(func(tx *bbolt.Tx) error {
		c, err := openCustomer(tx, customer, true)
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
			return c.addSuspended(-1)
		}
		return nil
	})
	if err != nil {
		return s.fail("lift "+customer, err)
	}
	return nil
}

// Sweep implements Store. It works through the expiry and forget indexes
// in transactions of at most sweepBatch holds each.
func (s *BoltStore) Sweep(ctx context.Context) (int, error) {
	nowMs := unixMilli(s.now())
	total := 0
	for {
		if err := ctx.Err(); err != nil {
			return total, err
		}
		var expired int
		var more bool
		err := s.update(func(tx *bbolt.Tx) error {
			expired, more = 0, false
			n, full, err := sweepExpiry(tx, nowMs, s.retention)
			if err != nil {
				return err
			}
			pruned, err := sweepForget(tx, nowMs)
			if err != nil {
				return err
			}
			expired, more = n, full || pruned >= sweepBatch
			return nil
		})
		if err != nil {
			return total, s.fail("sweep", err)
		}
		total += expired
		if !more {
			break
		}
	}
	if total > 0 {
		s.log.Info("swept expired holds", zap.Int("holds", total))
	}
	return total, nil
}

// sweepExpiry expires up to sweepBatch holds whose expiry is at or before
// nowMs, returning how many it expired and whether the batch was full.
func sweepExpiry(tx *bbolt.Tx, nowMs int64, retention time.Duration) (int, bool, error) {
	idx := tx.Bucket([]byte(bExpiry))
	keys := dueKeys(idx, nowMs)
	expired := 0
	for _, k := range keys {
		at, customer, holdID, err := parseIndexKey(k)
		if err != nil {
			return 0, false, err
		}
		if err := idx.Delete(k); err != nil {
			return 0, false, err
		}
		c, err := openCustomer(tx, customer, false)
		if err != nil {
			return 0, false, err
		}
		if c == nil {
			continue
		}
		v := c.holds.Get([]byte(holdID))
		if v == nil {
			continue
		}
		if _, expiry, err := decodeHold(v); err != nil {
			return 0, false, err
		} else if expiry != at {
			continue
		}
		if err := c.dropHold(holdID); err != nil {
			return 0, false, err
		}
		if err := c.closeHold(holdID, 'e', nowMs, retention, 0); err != nil {
			return 0, false, err
		}
		expired++
	}
	return expired, len(keys) >= sweepBatch, nil
}

// sweepForget forgets up to sweepBatch closed holds whose retention ended.
func sweepForget(tx *bbolt.Tx, nowMs int64) (int, error) {
	idx := tx.Bucket([]byte(bForget))
	keys := dueKeys(idx, nowMs)
	for _, k := range keys {
		at, customer, holdID, err := parseIndexKey(k)
		if err != nil {
			return 0, err
		}
		if err := idx.Delete(k); err != nil {
			return 0, err
		}
		c, err := openCustomer(tx, customer, false)
		if err != nil {
			return 0, err
		}
		if c == nil {
			continue
		}
		if v := c.closed.Get([]byte(holdID)); v != nil {
			_, forgetAt, _, err := decodeClosed(v)
			if err != nil {
				return 0, err
			}
			if forgetAt == at {
				if err := c.closed.Delete([]byte(holdID)); err != nil {
					return 0, err
				}
			}
		}
	}
	return len(keys), nil
}

// dueKeys returns copies of up to sweepBatch keys of an index bucket whose
// time is at or before nowMs. Keys are copied and deleted afterwards
// because deleting under a bbolt cursor skips keys.
func dueKeys(idx *bbolt.Bucket, nowMs int64) [][]byte {
	var keys [][]byte
	cur := idx.Cursor()
	for k, _ := cur.First(); k != nil && len(keys) < sweepBatch; k, _ = cur.Next() {
		if len(k) < 8 || getTime(k[:8]) > nowMs {
			break
		}
		keys = append(keys, bytes.Clone(k))
	}
	return keys
}

// Ping implements Store.
func (s *BoltStore) Ping(ctx context.Context) error {
	if err := s.db.View(func(*bbolt.Tx) error { return nil }); err != nil {
		return s.fail("ping", err)
	}
	return nil
}

// Ready implements Store. After a commit failed (a full disk, an I/O
// error, a file that became read-only), it commits a small probe write of
// its own: not ready until one succeeds. Otherwise it reads and writes
// nothing beyond Ping.
func (s *BoltStore) Ready(ctx context.Context) error {
	if err := s.Ping(ctx); err != nil {
		return err
	}
	f := s.writes.last()
	if f == nil {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	at := s.now()
	err := s.update(func(tx *bbolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists([]byte(bProbe))
		if err != nil {
			return err
		}
		var v [8]byte
		putTime(v[:], unixMilli(at))
		return b.Put([]byte("at"), v[:])
	})
	if err != nil {
		return fmt.Errorf("%w: writes to %s fail since %s (%v); free disk space, or check the disk and the file's permissions",
			ErrStoreUnavailable, s.path, f.at.UTC().Format(time.RFC3339), err)
	}
	s.writes.clear(f)
	return nil
}

// Close closes the file after the write in progress, if any. Writes
// still queued fail with ErrStoreUnavailable.
func (s *BoltStore) Close() error { return s.db.Close() }

// PutMeta implements Meta.
func (s *BoltStore) PutMeta(ctx context.Context, key, value string) error {
	if err := checkMeta(key, value); err != nil {
		return err
	}
	err := s.update(func(tx *bbolt.Tx) error {
		return tx.Bucket([]byte(bMeta)).Put([]byte(key), []byte(value))
	})
	if err != nil {
		return s.fail("put meta "+key, err)
	}
	return nil
}

// PutMetaIfAbsent implements Meta.
func (s *BoltStore) PutMetaIfAbsent(ctx context.Context, key, value string) (string, bool, error) {
	if err := checkMeta(key, value); err != nil {
		return "", false, err
	}
	var (
		current string
		stored  bool
	)
	err := s.update(func(tx *bbolt.Tx) error {
		b := tx.Bucket([]byte(bMeta))
		if v := b.Get([]byte(key)); v != nil {
			current, stored = string(v), false
			return nil
		}
		current, stored = value, true
		return b.Put([]byte(key), []byte(value))
	})
	if err != nil {
		return "", false, s.fail("put meta "+key, err)
	}
	return current, stored, nil
}

// GetMeta implements Meta.
func (s *BoltStore) GetMeta(ctx context.Context, key string) (string, bool, error) {
	if err := checkID("meta key", key); err != nil {
		return "", false, err
	}
	var (
		value string
		found bool
	)
	err := s.db.View(func(tx *bbolt.Tx) error {
		if v := tx.Bucket([]byte(bMeta)).Get([]byte(key)); v != nil {
			value, found = string(v), true
		}
		return nil
	})
	if err != nil {
		return "", false, s.fail("get meta "+key, err)
	}
	return value, found, nil
}

// TryLock implements Meta. Expiry follows the store's clock.
func (s *BoltStore) TryLock(ctx context.Context, name string, ttl time.Duration) (string, bool, error) {
	if err := checkLock(name, ttl); err != nil {
		return "", false, err
	}
	token := newToken()
	now := s.now()
	nowMs, expires := unixMilli(now), expiryMilli(now, ttl)
	var ok bool
	err := s.update(func(tx *bbolt.Tx) error {
		ok = false
		b := tx.Bucket([]byte(bLocks))
		if v := b.Get([]byte(name)); v != nil {
			at, _, err := parseLock(v)
			if err != nil {
				return err
			}
			if at > nowMs {
				return nil
			}
		}
		ok = true
		return b.Put([]byte(name), []byte(fmt.Sprintf("%d %s", expires, token)))
	})
	if err != nil {
		return "", false, s.fail("lock "+name, err)
	}
	if !ok {
		return "", false, nil
	}
	return token, true, nil
}

// Unlock implements Meta.
func (s *BoltStore) Unlock(ctx context.Context, name, token string) error {
	if err := checkID("lock name", name); err != nil {
		return err
	}
	err := s.update(func(tx *bbolt.Tx) error {
		b := tx.Bucket([]byte(bLocks))
		v := b.Get([]byte(name))
		if v == nil {
			return nil
		}
		_, holder, err := parseLock(v)
		if err != nil {
			return err
		}
		if holder != token {
			return nil
		}
		return b.Delete([]byte(name))
	})
	if err != nil {
		return s.fail("unlock "+name, err)
	}
	return nil
}

func parseLock(v []byte) (int64, string, error) {
	var at int64
	var token string
	if _, err := fmt.Sscanf(string(v), "%d %s", &at, &token); err != nil {
		return 0, "", fmt.Errorf("%w: lock %q", errCorrupt, v)
	}
	return at, token, nil
}

// boltCall is one queued write.
type boltCall struct {
	fn   func(*bbolt.Tx) error
	done chan error
}

// errCommit marks an error of bbolt itself (a closed file, a failed write
// or fsync) rather than of a write function.
type errCommit struct{ err error }

func (e errCommit) Error() string { return e.err.Error() }
func (e errCommit) Unwrap() error { return e.err }

// update runs fn in a write transaction, possibly together with other
// writes queued meanwhile, and returns once the transaction is fsynced.
// fn may run more than once (if a neighbour in its batch fails, the batch
// is retried without it), so it must reset whatever it reports at start.
func (s *BoltStore) update(fn func(*bbolt.Tx) error) error {
	c := &boltCall{fn: fn, done: make(chan error, 1)}
	s.mu.Lock()
	s.queue = append(s.queue, c)
	if !s.writing {
		s.writing = true
		go s.writeLoop()
	}
	s.mu.Unlock()
	err := <-c.done
	var ce errCommit
	if errors.As(err, &ce) {
		s.writes.fail(err, s.now())
	}
	return err
}

func (s *BoltStore) writeLoop() {
	for {
		s.mu.Lock()
		batch := s.queue
		s.queue = nil
		if len(batch) == 0 {
			s.writing = false
			s.mu.Unlock()
			return
		}
		s.mu.Unlock()
		s.commit(batch)
	}
}

// commit runs batch in one transaction. A function that fails is taken
// out and run alone (so its error is its own), and the rest is retried.
func (s *BoltStore) commit(batch []*boltCall) {
	for len(batch) > 0 {
		failed := -1
		err := s.db.Update(func(tx *bbolt.Tx) error {
			for i, c := range batch {
				if err := c.fn(tx); err != nil {
					failed = i
					return err
				}
			}
			return nil
		})
		if failed >= 0 {
			c := batch[failed]
			batch = append(batch[:failed:failed], batch[failed+1:]...)
			c.done <- s.solo(c.fn)
			continue
		}
		if err != nil {
			err = errCommit{err}
		}
		for _, c := range batch {
			c.done <- err
		}
		return
	}
}

func (s *BoltStore) solo(fn func(*bbolt.Tx) error) error {
	var fnErr error
	err := s.db.Update(func(tx *bbolt.Tx) error {
		fnErr = fn(tx)
		return fnErr
	})
	if fnErr != nil {
		return fnErr
	}
	if err != nil {
		return errCommit{err}
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

// boltCustomer is one customer's buckets within a transaction.
type boltCustomer struct {
	tx         *bbolt.Tx
	id         string
	b          *bbolt.Bucket
	holds      *bbolt.Bucket
	closed     *bbolt.Bucket
	entries    *bbolt.Bucket
	credits    *bbolt.Bucket
	suspension *bbolt.Bucket
}

// openCustomer returns customer's buckets, creating them if create is
// true; without create, it returns nil for a customer never seen.
func openCustomer(tx *bbolt.Tx, customer string, create bool) (*boltCustomer, error) {
	root := tx.Bucket([]byte(bCustomers))
	if root == nil {
		return nil, fmt.Errorf("%w: no %s bucket", errCorrupt, bCustomers)
	}
	b := root.Bucket([]byte(customer))
	if b == nil {
		if !create {
			return nil, nil
		}
		var err error
		if b, err = root.CreateBucket([]byte(customer)); err != nil {
			return nil, err
		}
		for _, name := range []string{bHolds, bClosed, bEntries, bCredits, bSuspension} {
			if _, err := b.CreateBucket([]byte(name)); err != nil {
				return nil, err
			}
		}
	}
	c := &boltCustomer{
		tx:         tx,
		id:         customer,
		b:          b,
		holds:      b.Bucket([]byte(bHolds)),
		closed:     b.Bucket([]byte(bClosed)),
		entries:    b.Bucket([]byte(bEntries)),
		credits:    b.Bucket([]byte(bCredits)),
		suspension: b.Bucket([]byte(bSuspension)),
	}
	if c.holds == nil || c.closed == nil || c.entries == nil || c.credits == nil || c.suspension == nil {
		return nil, fmt.Errorf("%w: customer %s lacks a bucket", errCorrupt, customer)
	}
	return c, nil
}

// customerState is a customer's balance, last entry sequence number and
// number of suspension reasons in force.
type customerState struct {
	balance, seq, suspended int64
}

func (c *boltCustomer) state() (customerState, error) {
	v := c.b.Get([]byte(kState))
	if v == nil {
		return customerState{}, nil
	}
	if len(v) != 24 {
		return customerState{}, fmt.Errorf("%w: state of %s is %d bytes", errCorrupt, c.id, len(v))
	}
	return customerState{
		balance:   int64(binary.BigEndian.Uint64(v[0:])),
		seq:       int64(binary.BigEndian.Uint64(v[8:])),
		suspended: int64(binary.BigEndian.Uint64(v[16:])),
	}, nil
}

func (c *boltCustomer) putState(st customerState) error {
	v := make([]byte, 24)
	binary.BigEndian.PutUint64(v[0:], uint64(st.balance))
	binary.BigEndian.PutUint64(v[8:], uint64(st.seq))
	binary.BigEndian.PutUint64(v[16:], uint64(st.suspended))
	return c.b.Put([]byte(kState), v)
}

func (c *boltCustomer) addSuspended(n int64) error {
	st, err := c.state()
	if err != nil {
		return err
	}
	st.suspended += n
	return c.putState(st)
}

// appendEntry adds amount to the balance and stores the entry.
func (c *boltCustomer) appendEntry(amount int64, body string) (Entry, error) {
	st, err := c.state()
	if err != nil {
		return Entry{}, err
	}
	st.seq++
	st.balance += amount
	raw := formatEntry(money.Micros(amount), money.Micros(st.balance), body)
	if err := c.entries.Put(seqKey(st.seq), []byte(raw)); err != nil {
		return Entry{}, err
	}
	if err := c.putState(st); err != nil {
		return Entry{}, err
	}
	return decodeEntry(c.id, st.seq, raw)
}

func (c *boltCustomer) entry(seq int64) (Entry, error) {
	v := c.entries.Get(seqKey(seq))
	if v == nil {
		return Entry{}, fmt.Errorf("%w: entry %d of %s missing", errCorrupt, seq, c.id)
	}
	return decodeEntry(c.id, seq, string(v))
}

// entrySeq returns the sequence number an entry's ID spells.
func entrySeq(e Entry) (int64, error) { return strconv.ParseInt(e.ID, 10, 64) }

// expireHolds closes the customer's holds whose expiry is at or before
// nowMs and returns the sum of the live ones.
func (c *boltCustomer) expireHolds(nowMs int64, retention time.Duration) (int64, error) {
	var reserved int64
	var expired []string
	err := c.holds.ForEach(func(k, v []byte) error {
		amount, expiry, err := decodeHold(v)
		if err != nil {
			return err
		}
		if expiry <= nowMs {
			expired = append(expired, string(k))
		} else {
			reserved += amount
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	for _, id := range expired {
		if err := c.dropHold(id); err != nil {
			return 0, err
		}
		if err := c.closeHold(id, 'e', nowMs, retention, 0); err != nil {
			return 0, err
		}
	}
	return reserved, nil
}

func (c *boltCustomer) putHold(id string, amount, expiry int64) error {
	v := make([]byte, 16)
	binary.BigEndian.PutUint64(v[0:], uint64(amount))
	binary.BigEndian.PutUint64(v[8:], uint64(expiry))
	if err := c.holds.Put([]byte(id), v); err != nil {
		return err
	}
	return c.tx.Bucket([]byte(bExpiry)).Put(indexKey(expiry, c.id, id), nil)
}

// dropHold removes a live hold and its expiry index entry.
func (c *boltCustomer) dropHold(id string) error {
	v := c.holds.Get([]byte(id))
	if v == nil {
		return nil
	}
	_, expiry, err := decodeHold(v)
	if err != nil {
		return err
	}
	if err := c.tx.Bucket([]byte(bExpiry)).Delete(indexKey(expiry, c.id, id)); err != nil {
		return err
	}
	return c.holds.Delete([]byte(id))
}

// closeHold records hold id as closed in state until nowMs + retention.
func (c *boltCustomer) closeHold(id string, state byte, nowMs int64, retention time.Duration, seq int64) error {
	forget := c.tx.Bucket([]byte(bForget))
	if old := c.closed.Get([]byte(id)); old != nil {
		_, oldAt, _, err := decodeClosed(old)
		if err != nil {
			return err
		}
		if err := forget.Delete(indexKey(oldAt, c.id, id)); err != nil {
			return err
		}
	}
	forgetAt := nowMs + retention.Milliseconds()
	v := make([]byte, 17)
	v[0] = state
	binary.BigEndian.PutUint64(v[1:], uint64(forgetAt))
	binary.BigEndian.PutUint64(v[9:], uint64(seq))
	if err := c.closed.Put([]byte(id), v); err != nil {
		return err
	}
	return forget.Put(indexKey(forgetAt, c.id, id), nil)
}

// closedState returns the state and settling entry of closed hold id, and
// ok false when the hold is unknown or its retention ended (it is then
// forgotten at once, as in lua/lib.lua).
func (c *boltCustomer) closedState(id string, nowMs int64) (state byte, seq int64, ok bool, err error) {
	v := c.closed.Get([]byte(id))
	if v == nil {
		return 0, 0, false, nil
	}
	state, forgetAt, seq, err := decodeClosed(v)
	if err != nil {
		return 0, 0, false, err
	}
	if forgetAt <= nowMs {
		if err := c.tx.Bucket([]byte(bForget)).Delete(indexKey(forgetAt, c.id, id)); err != nil {
			return 0, 0, false, err
		}
		return 0, 0, false, c.closed.Delete([]byte(id))
	}
	return state, seq, true, nil
}

func decodeHold(v []byte) (amount, expiry int64, err error) {
	if len(v) != 16 {
		return 0, 0, fmt.Errorf("%w: hold of %d bytes", errCorrupt, len(v))
	}
	return int64(binary.BigEndian.Uint64(v)), int64(binary.BigEndian.Uint64(v[8:])), nil
}

func decodeClosed(v []byte) (state byte, forgetAt, seq int64, err error) {
	if len(v) != 17 {
		return 0, 0, 0, fmt.Errorf("%w: closed hold of %d bytes", errCorrupt, len(v))
	}
	return v[0], int64(binary.BigEndian.Uint64(v[1:])), int64(binary.BigEndian.Uint64(v[9:])), nil
}

func seqKey(seq int64) []byte {
	k := make([]byte, 8)
	binary.BigEndian.PutUint64(k, uint64(seq))
	return k
}

// putTime and getTime encode a unix-ms time so that byte order is time
// order, negative times included.
func putTime(b []byte, ms int64) { binary.BigEndian.PutUint64(b, uint64(ms)^(1<<63)) }
func getTime(b []byte) int64     { return int64(binary.BigEndian.Uint64(b) ^ (1 << 63)) }

// indexKey is the key of a hold in the expiry or forget index.
func indexKey(ms int64, customer, holdID string) []byte {
	k := make([]byte, 8, 8+len(customer)+1+len(holdID))
	putTime(k, ms)
	k = append(k, customer...)
	k = append(k, 0)
	return append(k, holdID...)
}

func parseIndexKey(k []byte) (ms int64, customer, holdID string, err error) {
	if len(k) < 10 {
		return 0, "", "", fmt.Errorf("%w: index key %q", errCorrupt, k)
	}
	c, h, ok := bytes.Cut(k[8:], []byte{0})
	if !ok {
		return 0, "", "", fmt.Errorf("%w: index key %q", errCorrupt, k)
	}
	return getTime(k[:8]), string(c), string(h), nil
}
