package ledger

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"time"

	"go.etcd.io/bbolt"

	"github.com/tollgate-dev/tollgate/money"
)

// boltCustomer is one customer's buckets within a transaction.
type boltCustomer struct {
	tx     *bbolt.Tx
	id     string
	b      *bbolt.Bucket
	closed *bbolt.Bucket

	// The entries, credits and suspension buckets, opened by
	// entriesBucket, creditsBucket and suspensionBucket when an
	// operation first needs them: a Reserve, the most frequent call,
	// needs none of them, and each costs a lookup and an allocation.
	entries, credits, suspension *bbolt.Bucket

	// The lot buckets, opened by lotBuckets when an operation first
	// needs them: most operations never do.
	lots, lotBurn, lotExp *bbolt.Bucket

	// ev is set (BoltStore.withEvents) when events are on.
	ev *boltEvents

	// st is the state row as this transaction last read or wrote it
	// (when haveSt): a settlement reads it four times and writes it
	// twice, and each Get costs a B-tree search and an allocation. Every
	// write of the row goes through putState, and no two boltCustomers
	// of one customer are used side by side in a transaction.
	st     customerState
	haveSt bool
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
		for _, name := range []string{bClosed, bEntries, bCredits, bSuspension, bLots, bLotBurn, bLotExp} {
			if _, err := b.CreateBucket([]byte(name)); err != nil {
				return nil, err
			}
		}
	}
	c := &boltCustomer{tx: tx, id: customer, b: b}
	var err error
	if c.closed, err = c.child(bClosed); err != nil {
		return nil, err
	}
	// Hold ids are the proxy's request ids, whose time prefix makes one
	// customer's arrive nearly in order: settled markers are appended.
	c.closed.FillPercent = appendFill
	return c, nil
}

// child returns the customer's sub-bucket name.
func (c *boltCustomer) child(name string) (*bbolt.Bucket, error) {
	if b := c.b.Bucket([]byte(name)); b != nil {
		return b, nil
	}
	return nil, missingBucket(c.id, name)
}

// missingBucket is the error for a customer whose sub-bucket name is
// missing from the file.
func missingBucket(customer, name string) error {
	return fmt.Errorf("%w: customer %s lacks the %s bucket", errCorrupt, customer, name)
}

// opened returns the customer's sub-bucket name, kept in *p, opening it
// on first use.
func (c *boltCustomer) opened(p **bbolt.Bucket, name string) (*bbolt.Bucket, error) {
	if *p == nil {
		b, err := c.child(name)
		if err != nil {
			return nil, err
		}
		*p = b
	}
	return *p, nil
}

// entriesBucket returns the customer's entries bucket.
func (c *boltCustomer) entriesBucket() (*bbolt.Bucket, error) {
	b, err := c.opened(&c.entries, bEntries)
	if err != nil {
		return nil, err
	}
	// Entries are only ever appended, in key order: pages split full
	// rather than half full (bbolt's default, for random inserts), which
	// halves what the file grows by per entry.
	b.FillPercent = appendFill
	return b, nil
}

// creditsBucket returns the customer's credits bucket (applied credit
// keys).
func (c *boltCustomer) creditsBucket() (*bbolt.Bucket, error) {
	return c.opened(&c.credits, bCredits)
}

// suspensionBucket returns the customer's suspension reasons bucket.
func (c *boltCustomer) suspensionBucket() (*bbolt.Bucket, error) {
	return c.opened(&c.suspension, bSuspension)
}

// customerState is a customer's balance, last entry sequence number,
// number of suspension reasons in force, debt, and a bound on the expiry
// of its lots: lotBound is at most the earliest expiry in the lotexp
// bucket (unix ms), and 0 only when no lot expires, so that an operation
// sees from the state alone, which it reads anyway, that no lot is due.
type customerState struct {
	balance, seq, suspended, debt, lotBound int64
}

// stateSize is the length of a stored customerState; preLotsStateSize
// that of a file written before lots (balance, seq, suspended), which
// OpenBolt migrates.
const (
	stateSize        = 40
	preLotsStateSize = 24
)

func (c *boltCustomer) state() (customerState, error) {
	if c.haveSt {
		return c.st, nil
	}
	v := c.b.Get([]byte(kState))
	if v == nil {
		c.st, c.haveSt = customerState{}, true
		return c.st, nil
	}
	if len(v) != stateSize {
		return customerState{}, fmt.Errorf("%w: state of %s is %d bytes", errCorrupt, c.id, len(v))
	}
	c.st = customerState{
		balance:   int64(binary.BigEndian.Uint64(v[0:])),
		seq:       int64(binary.BigEndian.Uint64(v[8:])),
		suspended: int64(binary.BigEndian.Uint64(v[16:])),
		debt:      int64(binary.BigEndian.Uint64(v[24:])),
		lotBound:  int64(binary.BigEndian.Uint64(v[32:])),
	}
	c.haveSt = true
	return c.st, nil
}

func (c *boltCustomer) putState(st customerState) error {
	v := make([]byte, stateSize)
	binary.BigEndian.PutUint64(v[0:], uint64(st.balance))
	binary.BigEndian.PutUint64(v[8:], uint64(st.seq))
	binary.BigEndian.PutUint64(v[16:], uint64(st.suspended))
	binary.BigEndian.PutUint64(v[24:], uint64(st.debt))
	binary.BigEndian.PutUint64(v[32:], uint64(st.lotBound))
	if err := c.b.Put([]byte(kState), v); err != nil {
		c.haveSt = false
		return err
	}
	c.st, c.haveSt = st, true
	return nil
}

func (c *boltCustomer) addSuspended(n int64) error {
	st, err := c.state()
	if err != nil {
		return err
	}
	st.suspended += n
	return c.putState(st)
}

// appendEntry adds amount to the balance and stores the entry of body,
// returning it and its sequence number.
func (c *boltCustomer) appendEntry(amount int64, body entryBody) (Entry, int64, error) {
	st, err := c.state()
	if err != nil {
		return Entry{}, 0, err
	}
	st.seq++
	st.balance += amount
	raw := formatEntry(money.Micros(amount), money.Micros(st.balance), body.json())
	entries, err := c.entriesBucket()
	if err != nil {
		return Entry{}, 0, err
	}
	if err := entries.Put(seqKey(st.seq), []byte(raw)); err != nil {
		return Entry{}, 0, err
	}
	if err := c.putState(st); err != nil {
		return Entry{}, 0, err
	}
	return body.entry(c.id, st.seq, money.Micros(amount), money.Micros(st.balance)), st.seq, nil
}

func (c *boltCustomer) entry(seq int64) (Entry, error) {
	entries, err := c.entriesBucket()
	if err != nil {
		return Entry{}, err
	}
	v := entries.Get(seqKey(seq))
	if v == nil {
		return Entry{}, fmt.Errorf("%w: entry %d of %s missing", errCorrupt, seq, c.id)
	}
	return decodeEntry(c.id, seq, string(v))
}

// appendFill is the FillPercent of buckets whose keys are written in
// ascending order (entries by sequence number, the forget index by time,
// settled markers by request id, which starts with the time): bbolt then
// splits a page when it is full instead of half full. The forget index
// and the markers are only nearly in order (holds settled in the same
// millisecond sort by customer and id, or by id), hence not 1.
const appendFill = 0.95

// closeHold records hold id as closed in state until nowMs + retention.
// prev is the forget time of the record it replaces, as peekClosed
// returned it (0 when there is none): the caller has just looked, so
// closeHold does not look again.
func (c *boltCustomer) closeHold(id string, state holdState, nowMs int64, retention time.Duration, seq, prev int64) error {
	forget := c.tx.Bucket([]byte(bForget))
	forget.FillPercent = appendFill
	if prev != 0 {
		if err := forget.Delete(indexKey(prev, c.id, id)); err != nil {
			return err
		}
	}
	forgetAt := nowMs + retention.Milliseconds()
	v := make([]byte, 17)
	v[0] = byte(state)
	binary.BigEndian.PutUint64(v[1:], uint64(forgetAt))
	binary.BigEndian.PutUint64(v[9:], uint64(seq))
	if err := c.closed.Put([]byte(id), v); err != nil {
		return err
	}
	return forget.Put(indexKey(forgetAt, c.id, id), nil)
}

// peekClosed returns the state and settling entry of closed hold id, and
// ok false when the hold is unknown or its retention ended. The file
// keeps settled holds only (and, in a file written before holds moved to
// memory, expired and released ones until their retention ends). A
// record past its retention reads as unknown and is left for Sweep, or
// for closeHold to replace; its forget time is returned in forgetAt (0
// when there is no record).
func (c *boltCustomer) peekClosed(id string, nowMs int64) (state holdState, seq, forgetAt int64, ok bool, err error) {
	v := c.closed.Get([]byte(id))
	if v == nil {
		return 0, 0, 0, false, nil
	}
	state, forgetAt, seq, err = decodeClosed(v)
	if err != nil {
		return 0, 0, 0, false, err
	}
	if forgetAt <= nowMs {
		return 0, 0, forgetAt, false, nil
	}
	return state, seq, forgetAt, true, nil
}

// settled reports whether the file records hold id as settled at nowMs.
func (c *boltCustomer) settled(id string, nowMs int64) (bool, error) {
	state, _, _, ok, err := c.peekClosed(id, nowMs)
	return ok && state == holdSettled, err
}

func decodeClosed(v []byte) (state holdState, forgetAt, seq int64, err error) {
	if len(v) != 17 {
		return 0, 0, 0, fmt.Errorf("%w: closed hold of %d bytes", errCorrupt, len(v))
	}
	return holdState(v[0]), int64(binary.BigEndian.Uint64(v[1:])), int64(binary.BigEndian.Uint64(v[9:])), nil
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
