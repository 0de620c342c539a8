package ledger

import (
	"os"

	"github.com/redis/go-redis/v9"
	"go.etcd.io/bbolt"
)

// Test-only access to the stores' layouts: the Redis keys, so that tests
// sharing a Redis server can delete exactly the keys they created, and
// the bolt buckets, so that tests can count what a call left behind.

// CustomerKeys returns every Redis key of customer.
func CustomerKeys(customer string) []string { return customerKeys(customer) }

// MetaKey returns the Redis key of meta key k.
func MetaKey(k string) string { return metaPrefix + k }

// LockKey returns the Redis key of lock name.
func LockKey(name string) string { return lockPrefix + name }

// WithOpenFile returns o with BoltStore's file opened by open.
func WithOpenFile(o Options, open func(name string, flag int, perm os.FileMode) (*os.File, error)) Options {
	o.openFile = open
	return o
}

// WithMaxClosedHolds returns o with BoltStore remembering at most n
// closed holds in memory.
func WithMaxClosedHolds(o Options, n int) Options {
	o.maxClosedHolds = n
	return o
}

// ClosedHolds returns how many closed holds BoltStore remembers in
// memory, and how many it did not remember for the cap.
func (s *BoltStore) ClosedHolds() (kept, dropped int64) {
	return s.holds.nClosed.Load(), s.holds.dropped.Load()
}

// MarkerKeys returns the marker keys s checks, in slot-range order.
func MarkerKeys(s *RedisStore) []string { return s.health.markers }

// HasCustomer reports whether the bolt file holds a bucket for customer.
func (s *BoltStore) HasCustomer(customer string) (bool, error) {
	var ok bool
	err := s.db.View(func(tx *bbolt.Tx) error {
		ok = tx.Bucket([]byte(bCustomers)).Bucket([]byte(customer)) != nil
		return nil
	})
	return ok, err
}

// OutboxKey returns the Redis outbox key of customer.
func OutboxKey(customer string) string { return outboxKey(customer) }

// PendingEventsKey returns the Redis set of customers with pending events.
const PendingEventsKey = keyEventPending

// RawClient returns the store's Redis client.
func (s *RedisStore) RawClient() redis.UniversalClient { return s.client }

// JournalKeys returns the Redis keys of the journal and of customer's
// journal index.
func JournalKeys(customer string) []string {
	return []string{journalLogKey, journalOnceKey, journalIndexKey(customer)}
}

// TxID returns the id of the last write transaction committed to the
// bolt file: it grows by one with every commit, and each commit fsyncs
// twice (the pages, then the meta page).
func (s *BoltStore) TxID() (int, error) {
	var id int
	err := s.db.View(func(tx *bbolt.Tx) error {
		id = tx.ID()
		return nil
	})
	return id, err
}

// UsedBytes returns how much of the bolt file is in use: its pages up
// to the high-water mark, less those on the free list.
func (s *BoltStore) UsedBytes() (int64, error) {
	var size int64
	err := s.db.View(func(tx *bbolt.Tx) error {
		size = tx.Size()
		return nil
	})
	st := s.db.Stats()
	return size - int64(st.FreePageN+st.PendingPageN)*int64(s.db.Info().PageSize), err
}

// Crash stops s's syncs without syncing or giving anything back, and
// closes its client, as a replica killed with kill -9 would.
func (s *LeaseStore) Crash() {
	s.crashed.Store(true)
	s.closing.Do(func() { close(s.stop) })
	<-s.done
	s.RedisStore.Close()
}

// ForgetKeys returns the hold ids the forget index lists for customer,
// each with its forget time in unix ms.
func (s *BoltStore) ForgetKeys(customer string) (map[string][]int64, error) {
	keys := map[string][]int64{}
	err := s.db.View(func(tx *bbolt.Tx) error {
		return tx.Bucket([]byte(bForget)).ForEach(func(k, _ []byte) error {
			at, c, id, err := parseIndexKey(k)
			if err == nil && c == customer {
				keys[id] = append(keys[id], at)
			}
			return err
		})
	})
	return keys, err
}
