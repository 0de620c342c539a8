package ledger

import "os"

// Test-only access to the Redis key layout, so that tests sharing a Redis
// server can delete exactly the keys they created.

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
