package ledger

import (
	"errors"
	"fmt"
	"sync/atomic"
	"time"
)

// Readiness: Store.Ready answers a readiness probe. Besides "does the
// backend answer", it must catch the ways a store fails quietly:
//
//   - Writes fail while reads and pings work (a full disk under the
//     embedded store, Redis at maxmemory with noeviction). The request path
//     pays nothing for this: a write that fails because the store cannot
//     take it stores its error in one atomic pointer (writeHealth), and
//     success stores nothing. While that pointer is set, each Ready tries
//     one small write of its own (a probe) and reports not ready unless it
//     succeeds; only a successful probe clears the failure. So a store that
//     is out of rotation (no traffic, no real writes) still becomes ready
//     again once it can write, and a healthy store does no probe writes.
//   - Redis is set up to lose data (an eviction policy) or has lost it (a
//     restart without persistence, a FLUSHALL, a failover to an empty
//     replica); see redischeck.go.

// Sentinels of Ready (and, while the condition lasts, of RedisStore's
// other methods). Match them with errors.Is.
var (
	// ErrUnsafeStore: the store is configured so that it may drop what
	// it acknowledged, such as a Redis maxmemory-policy that evicts keys.
	// *EvictionPolicyError carries the details.
	ErrUnsafeStore = errors.New("ledger: store is configured to lose data")
	// ErrDataLost: the store lost data it had acknowledged. Errors
	// matching it also match ErrStoreUnavailable, so that callers fail
	// closed. *DataLostError carries the details.
	ErrDataLost = errors.New("ledger: store lost its data")
)

// EvictionPolicyError reports a Redis node whose maxmemory-policy lets
// Redis delete keys when memory runs short: an evicted idempotency key
// lets a credit pay out twice, an evicted account or ledger key loses
// money. It matches ErrUnsafeStore.
type EvictionPolicyError struct {
	Node   string // host:port of the Redis node
	Policy string // its maxmemory-policy, e.g. "allkeys-lru"
}

func (e *EvictionPolicyError) Error() string {
	return fmt.Sprintf("Redis %s has maxmemory-policy %s: tollgate's idempotency keys and ledger must never be evicted; "+
		"set maxmemory-policy noeviction (CONFIG SET maxmemory-policy noeviction, and in redis.conf or your provider's parameter group)",
		e.Node, e.Policy)
}

// Unwrap returns ErrUnsafeStore.
func (e *EvictionPolicyError) Unwrap() error { return ErrUnsafeStore }

// DataLostError reports that Redis no longer holds the data tollgate wrote
// to it: the marker keys tollgate writes when it first uses a Redis (see
// RedisStore.Ready) are gone or were replaced. It matches ErrDataLost and
// ErrStoreUnavailable.
type DataLostError struct {
	// Detail says what tollgate found, e.g. which markers are missing.
	Detail string
}

func (e *DataLostError) Error() string {
	return "Redis lost tollgate's data (" + e.Detail + "): it restarted without persistence, was flushed, or failed over to an empty replica, " +
		"so balances, holds and idempotency keys written before may be gone. tollgate refuses to bill until an operator acts: " +
		"restore Redis from a backup if you can, then run `tollgate accept-data-loss` (POST /v1/store/accept-data-loss on the admin API) " +
		"to serve what Redis holds now, and check balances against your records"
}

// Unwrap returns ErrDataLost and ErrStoreUnavailable.
func (e *DataLostError) Unwrap() []error { return []error{ErrDataLost, ErrStoreUnavailable} }

// writeHealth is the outcome of recent writes, as Ready sees it: the last
// write that failed because the store could not take it, until a probe
// write succeeds. It costs a write nothing unless the write failed.
type writeHealth struct {
	failed atomic.Pointer[writeFailure]
}

// writeFailure is one failed write: its error and when it happened.
type writeFailure struct {
	err error
	at  time.Time
}

// fail records a write that the store could not take.
func (w *writeHealth) fail(err error, at time.Time) {
	w.failed.Store(&writeFailure{err: err, at: at})
}

// last returns the failure recorded since the last successful probe, or nil.
func (w *writeHealth) last() *writeFailure { return w.failed.Load() }

// clear records a successful probe write, if f is still the latest
// failure: one recorded while the probe ran stays.
func (w *writeHealth) clear(f *writeFailure) { w.failed.CompareAndSwap(f, nil) }
