package ledger

// Test-only access to the Redis key layout, so that tests sharing a Redis
// server can delete exactly the keys they created.

// CustomerKeys returns every Redis key of customer.
func CustomerKeys(customer string) []string { return customerKeys(customer) }

// MetaKey returns the Redis key of meta key k.
func MetaKey(k string) string { return metaPrefix + k }

// LockKey returns the Redis key of lock name.
func LockKey(name string) string { return lockPrefix + name }
