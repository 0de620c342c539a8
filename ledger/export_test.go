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
