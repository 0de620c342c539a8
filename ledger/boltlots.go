package ledger

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"time"

	"go.etcd.io/bbolt"

	"github.com/tollgate-dev/tollgate/money"
)

// BoltStore's lots: the same rules as lua/lib.lua, on the buckets bolt.go
// lists. Every function here runs inside the caller's transaction.

// lotBuckets opens the customer's lot buckets, once per transaction.
func (c *boltCustomer) lotBuckets() error {
	if c.lots != nil {
		return nil
	}
	var bs [3]*bbolt.Bucket
	for i, name := range [...]string{bLots, bLotBurn, bLotExp} {
		b, err := c.child(name)
		if err != nil {
			return err
		}
		bs[i] = b
	}
	c.lots, c.lotBurn, c.lotExp = bs[0], bs[1], bs[2]
	return nil
}

// burnKey is a lot's key in the lotburn bucket: byte order is burn order.
func burnKey(priority int, expires, id int64) []byte {
	k := make([]byte, 17)
	k[0] = byte(priority)
	if expires == 0 {
		expires = math.MaxInt64 // never: after every expiry
	}
	putTime(k[1:], expires)
	binary.BigEndian.PutUint64(k[9:], uint64(id))
	return k
}

// lotExpKey is a lot's key in the lotexp bucket: byte order is expiry,
// then age.
func lotExpKey(expires, id int64) []byte {
	k := make([]byte, 16)
	putTime(k, expires)
	binary.BigEndian.PutUint64(k[8:], uint64(id))
	return k
}

// lotIndexKey is a lot's key in the global lotexpiry index.
func lotIndexKey(expires int64, customer string, id int64) []byte {
	return indexKey(expires, customer, string(seqKey(id)))
}

// getLot returns lot id, and false if it is not active.
func (c *boltCustomer) getLot(id int64) (lotRecord, bool, error) {
	if err := c.lotBuckets(); err != nil {
		return lotRecord{}, false, err
	}
	v := c.lots.Get(seqKey(id))
	if v == nil {
		return lotRecord{}, false, nil
	}
	l, err := parseLotRecord(string(v))
	if err != nil {
		return lotRecord{}, false, fmt.Errorf("lot %d of %s: %w", id, c.id, err)
	}
	return l, true, nil
}

// putLot stores lot id as l, in the lots bucket only: its place in the
// indexes is unchanged.
func (c *boltCustomer) putLot(id int64, l lotRecord) error {
	return c.lots.Put(seqKey(id), l.appendText(nil))
}

// addLot stores a new lot and its index entries, lowering the state's
// lot bound to its expiry.
func (c *boltCustomer) addLot(id int64, l lotRecord) error {
	if err := c.lotBuckets(); err != nil {
		return err
	}
	if err := c.putLot(id, l); err != nil {
		return err
	}
	if err := c.lotBurn.Put(burnKey(l.priority, l.expires, id), nil); err != nil {
		return err
	}
	if l.expires == 0 {
		return nil
	}
	if err := c.lotExp.Put(lotExpKey(l.expires, id), nil); err != nil {
		return err
	}
	if err := c.tx.Bucket([]byte(bLotExpiry)).Put(lotIndexKey(l.expires, c.id, id), nil); err != nil {
		return err
	}
	st, err := c.state()
	if err != nil {
		return err
	}
	if st.lotBound == 0 || st.lotBound > l.expires {
		st.lotBound = l.expires
		return c.putState(st)
	}
	return nil
}

// dropLot removes lot id, stored as l, and its index entries. The state's
// lot bound stays: one below the earliest expiry only costs a look at
// lotexp.
func (c *boltCustomer) dropLot(id int64, l lotRecord) error {
	if err := c.lots.Delete(seqKey(id)); err != nil {
		return err
	}
	if err := c.lotBurn.Delete(burnKey(l.priority, l.expires, id)); err != nil {
		return err
	}
	if l.expires == 0 {
		return nil
	}
	if err := c.lotExp.Delete(lotExpKey(l.expires, id)); err != nil {
		return err
	}
	return c.tx.Bucket([]byte(bLotExpiry)).Delete(lotIndexKey(l.expires, c.id, id))
}

// expireLot removes lot id, stored as l, and records what it held with an
// expire entry dated at its expiry.
func (c *boltCustomer) expireLot(id int64, l lotRecord) error {
	if err := c.dropLot(id, l); err != nil {
		return err
	}
	_, seq, err := c.appendEntry(-l.remaining, expireBody(id, l, time.UnixMilli(l.expires).UTC()))
	if err != nil {
		return err
	}
	return c.emit(EventCreditsExpired, seq, -l.remaining, id, "")
}

// resetLotBound sets the state's lot bound to the earliest expiry of an
// active lot, or 0 when none expires.
func (c *boltCustomer) resetLotBound() error {
	st, err := c.state()
	if err != nil {
		return err
	}
	bound := int64(0)
	if k, _ := c.lotExp.Cursor().First(); k != nil {
		if len(k) != 16 {
			return fmt.Errorf("%w: lot expiry key %x of %s", errCorrupt, k, c.id)
		}
		bound = getTime(k)
	}
	if bound == st.lotBound {
		return nil
	}
	st.lotBound = bound
	return c.putState(st)
}

// expireLots expires the customer's lots whose expiry is at or before
// nowMs, earliest expiry (then oldest) first, as expire_lots in
// lua/lib.lua does, and returns how many it expired. It looks at the lot
// buckets only when the state's lot bound says a lot may be due.
func (c *boltCustomer) expireLots(nowMs int64) (int, error) {
	st, err := c.state()
	if err != nil {
		return 0, err
	}
	if st.lotBound == 0 || st.lotBound > nowMs {
		return 0, nil
	}
	if err := c.lotBuckets(); err != nil {
		return 0, err
	}
	// Keys are copied and deleted afterwards because deleting under a
	// bbolt cursor skips keys.
	var due [][]byte
	cur := c.lotExp.Cursor()
	for k, _ := cur.First(); k != nil; k, _ = cur.Next() {
		if len(k) != 16 {
			return 0, fmt.Errorf("%w: lot expiry key %x of %s", errCorrupt, k, c.id)
		}
		if getTime(k) > nowMs {
			break
		}
		due = append(due, bytes.Clone(k))
	}
	for _, k := range due {
		id := int64(binary.BigEndian.Uint64(k[8:]))
		l, ok, err := c.getLot(id)
		if err != nil {
			return 0, err
		}
		if !ok {
			return 0, fmt.Errorf("%w: lot %d of %s is indexed by expiry but missing", errCorrupt, id, c.id)
		}
		if err := c.expireLot(id, l); err != nil {
			return 0, err
		}
	}
	if len(due) > 0 {
		if err := c.checkLow(-1); err != nil {
			return 0, err
		}
	}
	return len(due), c.resetLotBound()
}

// current brings the customer's lots to nowMs as every operation must
// see them: lots due by then expired with their expire entries. (Holds
// live in memory, see boltholds.go.)
func (c *boltCustomer) current(nowMs int64) error {
	_, err := c.expireLots(nowMs)
	return err
}

// take takes up to want credits from lot id (stored as l), removing the
// lot when it runs out, and returns how much is still wanted.
func (c *boltCustomer) take(id int64, l lotRecord, want int64) (int64, error) {
	if l.remaining > want {
		l.remaining -= want
		return 0, c.putLot(id, l)
	}
	return want - l.remaining, c.dropLot(id, l)
}

// spend takes amount (> 0) from the lots: from lot from first if it is
// active (from < 0: none), then in burn order; what no lot covers becomes
// debt. Each step removes a lot or finishes.
func (c *boltCustomer) spend(amount, from int64) error {
	if err := c.lotBuckets(); err != nil {
		return err
	}
	if from >= 0 {
		l, ok, err := c.getLot(from)
		if err != nil {
			return err
		}
		if ok {
			if amount, err = c.take(from, l, amount); err != nil {
				return err
			}
		}
	}
	for amount > 0 {
		k, _ := c.lotBurn.Cursor().First()
		if k == nil {
			st, err := c.state()
			if err != nil {
				return err
			}
			st.debt += amount
			return c.putState(st)
		}
		if len(k) != 17 {
			return fmt.Errorf("%w: lot burn key %x of %s", errCorrupt, k, c.id)
		}
		id := int64(binary.BigEndian.Uint64(k[9:]))
		l, ok, err := c.getLot(id)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("%w: lot %d of %s is in burn order but missing", errCorrupt, id, c.id)
		}
		if amount, err = c.take(id, l, amount); err != nil {
			return err
		}
	}
	return nil
}

// creditLot applies the lot side of a credit of delta whose entry is seq,
// as credit.lua does: a debit spends (lp.from first); a credit that comes
// expired (lp.expires at or before nowMs) is followed by its expire entry
// at the credit's time at; any other credit repays debt and keeps the
// rest as lot seq.
func (c *boltCustomer) creditLot(seq, delta int64, lp lotParams, kind Kind, reference string, nowMs int64, at time.Time) error {
	if delta < 0 {
		return c.spend(-delta, lp.from)
	}
	l := lotRecord{remaining: delta, amount: delta, priority: lp.priority, expires: lp.expires, created: nowMs, kind: kind, reference: reference}
	if lp.expires > 0 && lp.expires <= nowMs {
		_, eseq, err := c.appendEntry(-delta, expireBody(seq, l, at))
		if err != nil {
			return err
		}
		return c.emit(EventCreditsExpired, eseq, -delta, seq, "")
	}
	st, err := c.state()
	if err != nil {
		return err
	}
	if repaid := min(st.debt, delta); repaid > 0 {
		st.debt -= repaid
		l.remaining -= repaid
		if err := c.putState(st); err != nil {
			return err
		}
	}
	if l.remaining == 0 {
		return nil
	}
	return c.addLot(seq, l)
}

// migrateLots turns every balance kept before lots into lot 0 (positive)
// or debt (negative), as MigratedLot says, once: the schema bucket then
// marks the file as migrated. A file created now is marked at once.
func migrateLots(tx *bbolt.Tx, nowMs int64) error {
	schema := tx.Bucket([]byte(bSchema))
	if schema.Get([]byte(kLotsSchema)) != nil {
		return nil
	}
	root := tx.Bucket([]byte(bCustomers))
	var customers []string
	err := root.ForEach(func(k, v []byte) error {
		if v == nil { // a nested bucket: a customer
			customers = append(customers, string(k))
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, id := range customers {
		b := root.Bucket([]byte(id))
		for _, name := range []string{bLots, bLotBurn, bLotExp} {
			if _, err := b.CreateBucketIfNotExists([]byte(name)); err != nil {
				return err
			}
		}
		v := b.Get([]byte(kState))
		if v == nil {
			continue
		}
		if len(v) != preLotsStateSize {
			return fmt.Errorf("%w: state of %s is %d bytes in a file without lots", errCorrupt, id, len(v))
		}
		c := &boltCustomer{tx: tx, id: id, b: b}
		st := customerState{
			balance:   int64(binary.BigEndian.Uint64(v[0:])),
			seq:       int64(binary.BigEndian.Uint64(v[8:])),
			suspended: int64(binary.BigEndian.Uint64(v[16:])),
		}
		if st.balance < 0 {
			st.debt = -st.balance
		}
		if err := c.putState(st); err != nil {
			return err
		}
		if st.balance > 0 {
			l := lotRecord{remaining: st.balance, amount: st.balance, priority: DefaultPriority, created: nowMs, kind: KindAdjust, reference: migrationReference}
			if err := c.addLot(0, l); err != nil {
				return err
			}
		}
	}
	return schema.Put([]byte(kLotsSchema), []byte("1"))
}

// readCurrent runs fn in a read transaction on customer's buckets (nil for
// a customer never seen) as they stand at nowMs. Reads write nothing,
// except when a lot of the customer is due: its expiry is then recorded
// first, in a write transaction, so that the read sees the balance and
// the entries agree.
func (s *BoltStore) readCurrent(customer string, nowMs int64, fn func(c *boltCustomer) error) error {
	for attempt := 0; ; attempt++ {
		due := false
		err := s.db.View(func(tx *bbolt.Tx) error {
			c, err := openCustomer(tx, customer, false)
			if err != nil || c == nil {
				if err != nil {
					return err
				}
				return fn(nil)
			}
			st, err := c.state()
			if err != nil {
				return err
			}
			// A second look reads whatever it finds: the write just
			// expired every lot due by nowMs, and the bound may only
			// still be low because a spent lot left it so.
			if attempt == 0 && st.lotBound != 0 && st.lotBound <= nowMs {
				due = true
				return nil
			}
			return fn(c)
		})
		if err != nil || !due {
			return err
		}
		err = s.update(func(tx *bbolt.Tx) error {
			c, err := openCustomer(tx, customer, false)
			if err == nil {
				c, err = s.withEvents(c, nowMs)
			}
			if err != nil || c == nil {
				return err
			}
			_, err = c.expireLots(nowMs)
			return err
		})
		if err != nil {
			return err
		}
	}
}

// nextExpiry returns the customer's Account.NextExpiry.
func (c *boltCustomer) nextExpiry() (*Expiry, error) {
	if err := c.lotBuckets(); err != nil {
		return nil, err
	}
	var next *Expiry
	cur := c.lotExp.Cursor()
	n := 0
	for k, _ := cur.First(); k != nil && n < MaxLots; k, _ = cur.Next() {
		if len(k) != 16 {
			return nil, fmt.Errorf("%w: lot expiry key %x of %s", errCorrupt, k, c.id)
		}
		at := getTime(k)
		if next != nil && at != next.At.UnixMilli() {
			break
		}
		id := int64(binary.BigEndian.Uint64(k[8:]))
		l, ok, err := c.getLot(id)
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, fmt.Errorf("%w: lot %d of %s is indexed by expiry but missing", errCorrupt, id, c.id)
		}
		if next == nil {
			next = &Expiry{At: time.UnixMilli(at).UTC()}
		}
		next.Amount += money.Micros(l.remaining)
		n++
	}
	return next, nil
}

// Lots implements Store.
func (s *BoltStore) Lots(ctx context.Context, customer string) ([]Lot, error) {
	if err := checkCustomer(customer); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var lots []Lot
	err := s.readCurrent(customer, unixMilli(s.now()), func(c *boltCustomer) error {
		lots = nil
		if c == nil {
			return nil
		}
		if err := c.lotBuckets(); err != nil {
			return err
		}
		cur := c.lotBurn.Cursor()
		for k, _ := cur.First(); k != nil && len(lots) < MaxLots; k, _ = cur.Next() {
			if len(k) != 17 {
				return fmt.Errorf("%w: lot burn key %x of %s", errCorrupt, k, c.id)
			}
			id := int64(binary.BigEndian.Uint64(k[9:]))
			l, ok, err := c.getLot(id)
			if err != nil {
				return err
			}
			if !ok {
				return fmt.Errorf("%w: lot %d of %s is in burn order but missing", errCorrupt, id, c.id)
			}
			lots = append(lots, l.lot(id))
		}
		return nil
	})
	if err != nil {
		return nil, s.fail("lots of "+customer, err)
	}
	return lots, nil
}
