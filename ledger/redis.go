package ledger

import (
	"context"
	"crypto/rand"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/tollgate-dev/tollgate/money"
)

// Each operation is one Lua script in lua/<op>.lua. The ledger scripts
// share lua/lib.lua (key layout and helpers), prepended when the script is
// built; the scripts are immutable and safe to share between stores.
var (
	//go:embed lua/lib.lua
	libLua string
	//go:embed lua/reserve.lua
	reserveLua string
	//go:embed lua/settle.lua
	settleLua string
	//go:embed lua/release.lua
	releaseLua string
	//go:embed lua/extend.lua
	extendLua string
	//go:embed lua/credit.lua
	creditLua string
	//go:embed lua/account.lua
	accountLua string
	//go:embed lua/suspend.lua
	suspendLua string
	//go:embed lua/lift.lua
	liftLua string
	//go:embed lua/sweep.lua
	sweepLua string
	//go:embed lua/trylock.lua
	trylockLua string
	//go:embed lua/unlock.lua
	unlockLua string
	//go:embed lua/putmetaifabsent.lua
	putMetaIfAbsentLua string

	reserveScript = redis.NewScript(libLua + reserveLua)
	settleScript  = redis.NewScript(libLua + settleLua)
	releaseScript = redis.NewScript(libLua + releaseLua)
	extendScript  = redis.NewScript(libLua + extendLua)
	creditScript  = redis.NewScript(libLua + creditLua)
	accountScript = redis.NewScript(libLua + accountLua)
	suspendScript = redis.NewScript(libLua + suspendLua)
	liftScript    = redis.NewScript(libLua + liftLua)
	sweepScript   = redis.NewScript(libLua + sweepLua)
	trylockScript = redis.NewScript(trylockLua)
	unlockScript  = redis.NewScript(unlockLua)

	putMetaIfAbsentScript = redis.NewScript(putMetaIfAbsentLua)
)

// Key names. Everything of one customer shares the hash tag {customer},
// so that each script touches a single Redis Cluster slot; lua/lib.lua
// documents what each key holds.
const (
	keyPrefix   = "tollgate:"
	metaPrefix  = "tollgate:meta:"
	lockPrefix  = "tollgate:lock:"
	sweepMatch  = "tollgate:{*}:hold:*" // finds hold:expiry and hold:forget
	sweepBatch  = 500                   // holds per sweep.lua call
	scanBatch   = 1000                  // keys per SCAN call
	attemptSize = 8                     // random bytes in a Reserve attempt token
)

// Positions in customerKeys of the keys Go reads directly.
const (
	keyAccount = 0
	keyEntries = 4
)

// keySuffixes are the names of a customer's keys after the common
// "tollgate:{<customer>}:", in the order lua/lib.lua documents.
var keySuffixes = [...]string{"account", "holds", "hold:expiry", "hold:forget", "entries", "credits", "suspension"}

// customerKeys returns the KEYS of every ledger script, in the order
// lua/lib.lua documents. The names share one backing string: every script
// call builds them, and so they cost two allocations instead of eight.
func customerKeys(customer string) []string {
	prefix := len(keyPrefix) + len(customer) + 3 // tollgate:{customer}:
	size := 0
	for _, sfx := range keySuffixes {
		size += prefix + len(sfx)
	}
	var b strings.Builder
	b.Grow(size)
	for _, sfx := range keySuffixes {
		b.WriteString(keyPrefix)
		b.WriteByte('{')
		b.WriteString(customer)
		b.WriteString("}:")
		b.WriteString(sfx)
	}
	all := b.String()
	keys := make([]string, len(keySuffixes))
	off := 0
	for i, sfx := range keySuffixes {
		n := prefix + len(sfx)
		keys[i] = all[off : off+n]
		off += n
	}
	return keys
}

// customerOfKey returns the customer whose hash tag a key carries.
func customerOfKey(key string) (string, bool) {
	rest, ok := strings.CutPrefix(key, keyPrefix+"{")
	if !ok {
		return "", false
	}
	customer, _, ok := strings.Cut(rest, "}")
	if !ok || ValidateCustomer(customer) != nil {
		return "", false
	}
	return customer, true
}

// RedisStore is a Store and Meta on Redis or Redis Cluster, for several
// tollgate replicas sharing balances. Every operation is one Lua script on
// one customer's keys, so it is atomic and cluster safe. Scripts called
// concurrently are sent together in pipelines when a couple are already
// under way (see batcher): under load that saves most of the system calls
// per operation on both sides, and a call never waits for company.
//
// It needs Redis 6.0 or later (Sweep uses SCAN with TYPE); it is tested
// on Redis 7, single node and cluster.
//
// Redis must keep what it acknowledged: run it with AOF (appendonly yes,
// appendfsync everysec or always) or accept losing the last moments of
// charges and credits on a crash. Keys never expire by TTL except locks
// and Ready's probes, so an eviction policy other than noeviction loses
// money. Ready checks both, and whether Redis lost its data (see
// redischeck.go); call it at start-up and periodically.
type RedisStore struct {
	client    redis.UniversalClient
	batch     *batcher
	now       func() time.Time
	log       *zap.Logger
	retention time.Duration

	health redisHealth
	gate   atomic.Pointer[gate] // set while every call must fail closed
	writes writeHealth
}

var (
	_ Store = (*RedisStore)(nil)
	_ Meta  = (*RedisStore)(nil)
)

// NewRedisStore returns a store on client, which may be a *redis.Client, a
// *redis.ClusterClient or a failover client. The store takes ownership of
// client: Close closes it.
//
// The client's retry settings apply to scripts too. Every script is safe to
// resend after a lost reply (Reserve recognises its own attempt; the other
// operations are idempotent), but a replayed Credit then reports
// Applied=false for a credit that this very call applied.
//
// They also decide how fast a call fails while Redis is down: with go-redis
// defaults (MaxRetries 3, DialerRetries 5 at 100ms) about two seconds pass
// before ErrStoreUnavailable. A proxy that must answer 503 quickly should
// lower them (for example MaxRetries 1, DialerRetries 1).
//
// Set ContextTimeoutEnabled on the client: without it go-redis ignores a
// context's deadline while it waits for Redis, so a call to a Redis that
// hangs (rather than refuses connections) takes ReadTimeout for every
// retry, whatever deadline its caller set. NewRedisStore logs a warning
// when it can see that the option is off.
func NewRedisStore(client redis.UniversalClient, opts Options) *RedisStore {
	opts = opts.withDefaults()
	_, cluster := client.(*redis.ClusterClient)
	s := &RedisStore{
		client:    client,
		batch:     newBatcher(client, defaultMaxInFlight),
		now:       opts.Now,
		log:       opts.Logger,
		retention: opts.Retention,
		health:    newRedisHealth(cluster),
	}
	if !contextTimeouts(client) {
		s.log.Warn("the Redis client ignores context deadlines (ContextTimeoutEnabled is off): a hung Redis holds each call for its read timeout and retries")
	}
	return s
}

// contextTimeouts reports whether client honours context deadlines, or
// true when that cannot be told.
func contextTimeouts(client redis.UniversalClient) bool {
	switch c := client.(type) {
	case *redis.Client:
		return c.Options().ContextTimeoutEnabled
	case *redis.ClusterClient:
		return c.Options().ContextTimeoutEnabled
	}
	return true
}

// Reserve implements Store.
func (s *RedisStore) Reserve(ctx context.Context, customer, holdID string, amount money.Micros, ttl time.Duration) error {
	if err := checkReserve(customer, holdID, amount, ttl); err != nil {
		return err
	}
	now := s.now()
	var tok [attemptSize]byte
	rand.Read(tok[:])
	r, err := s.run(ctx, reserveScript, customerKeys(customer),
		holdID, int64(amount), expiryMilli(now, ttl), unixMilli(now), s.retention.Milliseconds(), hex.EncodeToString(tok[:]))
	if err != nil {
		return s.failWrite("reserve "+holdID, err)
	}
	status, available, err := r.int(0), r.int(1), r.err
	if err != nil {
		return fmt.Errorf("reserve %s: %w", holdID, err)
	}
	switch status {
	case 0:
		return nil
	case 1:
		return &InsufficientCreditsError{Customer: customer, Available: money.Micros(available), Required: amount}
	case 2:
		return fmt.Errorf("reserve %s: %w: %s", holdID, ErrCustomerSuspended, customer)
	case 3:
		return fmt.Errorf("reserve %s for %s: %w", holdID, customer, ErrDuplicateHold)
	}
	return fmt.Errorf("reserve %s: %w: status %d", holdID, errCorrupt, status)
}

// Settle implements Store.
func (s *RedisStore) Settle(ctx context.Context, customer, holdID string, actual money.Micros, c Charge) (Entry, error) {
	c, err := checkSettle(customer, holdID, actual, c)
	if err != nil {
		return Entry{}, err
	}
	now := s.now()
	body := chargeBody(c, now)
	r, err := s.run(ctx, settleScript, customerKeys(customer),
		holdID, int64(actual), unixMilli(now), s.retention.Milliseconds(), body.json())
	if err != nil {
		return Entry{}, s.failWrite("settle "+holdID, err)
	}
	status, seq := r.int(0), r.int(1)
	switch status {
	case 0:
		// Charged now: the entry is the body sent, so there is nothing
		// to decode.
		balance := r.int(2)
		if r.err != nil {
			return Entry{}, fmt.Errorf("settle %s: %w", holdID, r.err)
		}
		return body.entry(customer, seq, -actual, money.Micros(balance)), nil
	case 1:
		raw := r.str(2)
		if r.err != nil {
			return Entry{}, fmt.Errorf("settle %s: %w", holdID, r.err)
		}
		e, err := decodeEntry(customer, seq, raw)
		if err != nil {
			return Entry{}, fmt.Errorf("settle %s: %w", holdID, err)
		}
		return e, nil
	case 2:
		return Entry{}, fmt.Errorf("settle %s of %s: %w", holdID, customer, ErrHoldReleased)
	case 3:
		return Entry{}, fmt.Errorf("settle %s of %s: %w", holdID, customer, ErrHoldNotFound)
	case 4:
		return Entry{}, fmt.Errorf("settle %s: %w: charging %s would take %s's balance below -%s", holdID, ErrInvalidAmount, actual, customer, MaxAmount)
	case 5:
		balance := r.int(2)
		if r.err != nil {
			return Entry{}, fmt.Errorf("settle %s: %w", holdID, r.err)
		}
		return unrecorded(body, customer, money.Micros(balance)), nil
	}
	return Entry{}, fmt.Errorf("settle %s: %w: status %d", holdID, errCorrupt, status)
}

// Release implements Store.
func (s *RedisStore) Release(ctx context.Context, customer, holdID string) error {
	if err := checkRelease(customer, holdID); err != nil {
		return err
	}
	now := s.now()
	r, err := s.run(ctx, releaseScript, customerKeys(customer), holdID, unixMilli(now), s.retention.Milliseconds())
	if err != nil {
		return s.failWrite("release "+holdID, err)
	}
	r.int(0)
	if r.err != nil {
		return fmt.Errorf("release %s: %w", holdID, r.err)
	}
	return nil
}

// extend.lua's statuses, as its header lists them.
const (
	extendRenewed  = 0
	extendExpired  = 1
	extendReleased = 2
	extendSettled  = 3
	extendUnknown  = 4
)

// Extend implements Store.
func (s *RedisStore) Extend(ctx context.Context, customer, holdID string, ttl time.Duration) error {
	if err := checkExtend(customer, holdID, ttl); err != nil {
		return err
	}
	now := s.now()
	r, err := s.run(ctx, extendScript, customerKeys(customer), holdID, expiryMilli(now, ttl), unixMilli(now), s.retention.Milliseconds())
	if err != nil {
		return s.fail("extend "+holdID, err)
	}
	status := r.int(0)
	if r.err != nil {
		return fmt.Errorf("extend %s: %w", holdID, r.err)
	}
	switch status {
	case extendRenewed:
		return nil
	case extendExpired:
		return extendError(holdID, customer, 'e', true)
	case extendReleased:
		return extendError(holdID, customer, 'r', true)
	case extendSettled:
		return extendError(holdID, customer, 's', true)
	case extendUnknown:
		return extendError(holdID, customer, 0, false)
	}
	return fmt.Errorf("extend %s: %w: status %d", holdID, errCorrupt, status)
}

// Credit implements Store.
func (s *RedisStore) Credit(ctx context.Context, c Credit) (CreditResult, error) {
	if err := checkCredit(c); err != nil {
		return CreditResult{}, err
	}
	mode := "o"
	if c.Cumulative {
		mode = "c"
	}
	body := creditBody(c, s.now())
	r, err := s.run(ctx, creditScript, customerKeys(c.Customer),
		c.Key, int64(c.Amount), mode, string(c.Kind), body.json())
	if err != nil {
		return CreditResult{}, s.failWrite("credit "+c.Key, err)
	}
	status, seq := r.int(0), r.int(1)
	switch status {
	case 0:
		// Applied now; the entry's amount is what the key had not
		// applied yet, which the script reports.
		balance, delta := r.int(2), r.int(3)
		if r.err != nil {
			return CreditResult{}, fmt.Errorf("credit %s: %w", c.Key, r.err)
		}
		return CreditResult{Entry: body.entry(c.Customer, seq, money.Micros(delta), money.Micros(balance)), Applied: true}, nil
	case 1:
		raw := r.str(2)
		if r.err != nil {
			return CreditResult{}, fmt.Errorf("credit %s: %w", c.Key, r.err)
		}
		e, err := decodeEntry(c.Customer, seq, raw)
		if err != nil {
			return CreditResult{}, fmt.Errorf("credit %s: %w", c.Key, err)
		}
		return CreditResult{Entry: e}, nil
	case 2:
		return CreditResult{}, conflictError(c)
	case 3:
		return CreditResult{}, fmt.Errorf("credit %s: %w: %s would take %s's balance beyond ±%s", c.Key, ErrInvalidAmount, c.Amount, c.Customer, MaxAmount)
	}
	return CreditResult{}, fmt.Errorf("credit %s: %w: status %d", c.Key, errCorrupt, status)
}

// Account implements Store.
func (s *RedisStore) Account(ctx context.Context, customer string) (Account, error) {
	if err := checkCustomer(customer); err != nil {
		return Account{}, err
	}
	r, err := s.run(ctx, accountScript, customerKeys(customer), unixMilli(s.now()), s.retention.Milliseconds())
	if err != nil {
		return Account{}, s.fail("account "+customer, err)
	}
	balance, reserved, suspended := r.int(0), r.int(1), r.int(2)
	if r.err != nil {
		return Account{}, fmt.Errorf("account %s: %w", customer, r.err)
	}
	return Account{
		Customer:  customer,
		Balance:   money.Micros(balance),
		Reserved:  money.Micros(reserved),
		Available: money.Micros(balance - reserved),
		Suspended: suspended > 0,
	}, nil
}

// Entries implements Store. Entries are append-only, so reading the
// sequence and then the page needs no script: a concurrent append only
// makes the page start one entry earlier than the newest.
func (s *RedisStore) Entries(ctx context.Context, customer, before string, limit int) (Page, error) {
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
	if err := s.guard(); err != nil {
		return Page{}, fmt.Errorf("entries of %s: %w", customer, err)
	}
	keys := customerKeys(customer)
	lastText, err := s.client.HGet(ctx, keys[keyAccount], "seq").Result()
	if errors.Is(err, redis.Nil) {
		return Page{}, nil
	}
	if err != nil {
		return Page{}, s.fail("entries of "+customer, err)
	}
	last, err := strconv.ParseInt(lastText, 10, 64)
	if err != nil {
		return Page{}, fmt.Errorf("entries of %s: %w: seq %q", customer, errCorrupt, lastText)
	}
	seqs, next := pageSeqs(customer, last, cursor, limit)
	if len(seqs) == 0 {
		return Page{}, nil
	}
	fields := make([]string, len(seqs))
	for i, seq := range seqs {
		fields[i] = strconv.FormatInt(seq, 10)
	}
	vals, err := s.client.HMGet(ctx, keys[keyEntries], fields...).Result()
	if err != nil {
		return Page{}, s.fail("entries of "+customer, err)
	}
	if len(vals) != len(seqs) {
		return Page{}, fmt.Errorf("entries of %s: %w: %d values for %d fields", customer, errCorrupt, len(vals), len(seqs))
	}
	page := Page{Entries: make([]Entry, 0, len(seqs)), Next: next}
	for i, v := range vals {
		raw, ok := v.(string)
		if !ok {
			return Page{}, fmt.Errorf("entries of %s: %w: entry %d missing", customer, errCorrupt, seqs[i])
		}
		e, err := decodeEntry(customer, seqs[i], raw)
		if err != nil {
			return Page{}, err
		}
		page.Entries = append(page.Entries, e)
	}
	return page, nil
}

// Suspend implements Store.
func (s *RedisStore) Suspend(ctx context.Context, customer, reason string) error {
	if err := checkSuspension(customer, reason); err != nil {
		return err
	}
	if err := s.guard(); err != nil {
		return fmt.Errorf("suspend %s: %w", customer, err)
	}
	if _, err := suspendScript.Run(ctx, s.client, customerKeys(customer), reason).Int64(); err != nil {
		return s.failWrite("suspend "+customer, err)
	}
	return nil
}

// Lift implements Store.
func (s *RedisStore) Lift(ctx context.Context, customer, reason string) error {
	if err := checkSuspension(customer, reason); err != nil {
		return err
	}
	if err := s.guard(); err != nil {
		return fmt.Errorf("lift %s: %w", customer, err)
	}
	if _, err := liftScript.Run(ctx, s.client, customerKeys(customer), reason).Int64(); err != nil {
		return s.failWrite("lift "+customer, err)
	}
	return nil
}

// Sweep implements Store. It finds customers with holds by scanning for
// their hold keys: on Redis Cluster on every master, since each master
// holds only its own slots.
func (s *RedisStore) Sweep(ctx context.Context) (int, error) {
	if err := s.guard(); err != nil {
		return 0, fmt.Errorf("sweep: %w", err)
	}
	now := s.now()
	var expired atomic.Int64
	sweepNode := func(ctx context.Context, node redis.UniversalClient) error {
		seen := map[string]bool{}
		iter := node.ScanType(ctx, 0, sweepMatch, scanBatch, "zset").Iterator()
		for iter.Next(ctx) {
			customer, ok := customerOfKey(iter.Val())
			if !ok || seen[customer] {
				continue
			}
			seen[customer] = true
			n, err := s.sweepCustomer(ctx, customer, now)
			if err != nil {
				return err
			}
			expired.Add(int64(n))
		}
		return iter.Err()
	}
	var err error
	if cc, ok := s.client.(*redis.ClusterClient); ok {
		err = cc.ForEachMaster(ctx, func(ctx context.Context, node *redis.Client) error {
			return sweepNode(ctx, node)
		})
	} else {
		err = sweepNode(ctx, s.client)
	}
	n := int(expired.Load())
	if n > 0 {
		s.log.Info("swept expired holds", zap.Int("holds", n))
	}
	if err != nil {
		return n, s.failWrite("sweep", err)
	}
	return n, nil
}

// sweepCustomer runs sweep.lua on customer until it reports nothing left.
// The script runs through the store's client, which routes it to the
// customer's slot wherever the scan found the key.
func (s *RedisStore) sweepCustomer(ctx context.Context, customer string, now time.Time) (int, error) {
	total := 0
	keys := customerKeys(customer)
	for {
		r, err := s.run(ctx, sweepScript, keys, unixMilli(now), s.retention.Milliseconds(), sweepBatch)
		if err != nil {
			return total, err
		}
		n, more := r.int(0), r.int(1)
		if r.err != nil {
			return total, r.err
		}
		total += int(n)
		if more == 0 {
			return total, nil
		}
	}
}

// Ping implements Store.
func (s *RedisStore) Ping(ctx context.Context) error {
	if cc, ok := s.client.(*redis.ClusterClient); ok {
		// A cluster is usable only if every master answers: a customer's
		// slot may live on any of them.
		if err := cc.ForEachMaster(ctx, func(ctx context.Context, node *redis.Client) error {
			return node.Ping(ctx).Err()
		}); err != nil {
			return s.fail("ping", err)
		}
		return nil
	}
	if err := s.client.Ping(ctx).Err(); err != nil {
		return s.fail("ping", err)
	}
	return nil
}

// Close closes the client.
func (s *RedisStore) Close() error { return s.client.Close() }

// PutMeta implements Meta.
func (s *RedisStore) PutMeta(ctx context.Context, key, value string) error {
	if err := checkMeta(key, value); err != nil {
		return err
	}
	if err := s.guard(); err != nil {
		return fmt.Errorf("put meta %s: %w", key, err)
	}
	if err := s.client.Set(ctx, metaPrefix+key, value, 0).Err(); err != nil {
		return s.failWrite("put meta "+key, err)
	}
	return nil
}

// PutMetaIfAbsent implements Meta.
func (s *RedisStore) PutMetaIfAbsent(ctx context.Context, key, value string) (string, bool, error) {
	if err := checkMeta(key, value); err != nil {
		return "", false, err
	}
	v, err := putMetaIfAbsentScript.Run(ctx, s.client, []string{metaPrefix + key}, value).Result()
	if err != nil {
		return "", false, s.fail("put meta "+key, err)
	}
	vals, ok := v.([]any)
	if !ok {
		return "", false, fmt.Errorf("put meta %s: %w: script reply %T, want an array", key, errCorrupt, v)
	}
	r := &reply{vals: vals}
	stored, current := r.int(0), r.str(1)
	if r.err != nil {
		return "", false, fmt.Errorf("put meta %s: %w", key, r.err)
	}
	return current, stored == 1, nil
}

// GetMeta implements Meta.
func (s *RedisStore) GetMeta(ctx context.Context, key string) (string, bool, error) {
	if err := checkID("meta key", key); err != nil {
		return "", false, err
	}
	if err := s.guard(); err != nil {
		return "", false, fmt.Errorf("get meta %s: %w", key, err)
	}
	v, err := s.client.Get(ctx, metaPrefix+key).Result()
	if errors.Is(err, redis.Nil) {
		return "", false, nil
	}
	if err != nil {
		return "", false, s.fail("get meta "+key, err)
	}
	return v, true, nil
}

// TryLock implements Meta. Expiry follows the store's clock; the key also
// carries a Redis PX of ttl so that a lock whose holder vanished is
// dropped by Redis itself.
func (s *RedisStore) TryLock(ctx context.Context, name string, ttl time.Duration) (string, bool, error) {
	if err := checkLock(name, ttl); err != nil {
		return "", false, err
	}
	if err := s.guard(); err != nil {
		return "", false, fmt.Errorf("lock %s: %w", name, err)
	}
	token := newToken()
	now := s.now()
	ok, err := trylockScript.Run(ctx, s.client, []string{lockPrefix + name},
		token, unixMilli(now), expiryMilli(now, ttl), ttl.Milliseconds()).Int64()
	if err != nil {
		return "", false, s.failWrite("lock "+name, err)
	}
	if ok != 1 {
		return "", false, nil
	}
	return token, true, nil
}

// Unlock implements Meta.
func (s *RedisStore) Unlock(ctx context.Context, name, token string) error {
	if err := checkID("lock name", name); err != nil {
		return err
	}
	if _, err := unlockScript.Run(ctx, s.client, []string{lockPrefix + name}, token).Int64(); err != nil {
		return s.failWrite("unlock "+name, err)
	}
	return nil
}

func newToken() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// run runs script on keys, batched with the calls of other goroutines
// (see batcher), and returns its array reply.
func (s *RedisStore) run(ctx context.Context, script *redis.Script, keys []string, args ...any) (*reply, error) {
	if err := s.guard(); err != nil {
		return nil, err
	}
	v, err := s.batch.run(ctx, script, keys, args...)
	if err != nil {
		return nil, err
	}
	vals, ok := v.([]any)
	if !ok {
		return nil, fmt.Errorf("%w: script reply %T, want an array", errCorrupt, v)
	}
	return &reply{vals: vals}, nil
}

// reply decodes a script's array reply field by field. The first problem
// (a missing field, a wrong type) is kept in err and later reads return
// zero values, so callers check err once after reading every field.
type reply struct {
	vals []any
	err  error
}

func (r *reply) at(i int) any {
	if r.err != nil {
		return nil
	}
	if i >= len(r.vals) {
		r.err = fmt.Errorf("%w: script reply has %d fields, want more than %d", errCorrupt, len(r.vals), i)
		return nil
	}
	return r.vals[i]
}

func (r *reply) int(i int) int64 {
	switch v := r.at(i).(type) {
	case int64:
		return v
	case nil:
	default:
		r.err = fmt.Errorf("%w: script reply field %d is %T, want an integer", errCorrupt, i, v)
	}
	return 0
}

func (r *reply) str(i int) string {
	switch v := r.at(i).(type) {
	case string:
		return v
	case nil:
	default:
		r.err = fmt.Errorf("%w: script reply field %d is %T, want a string", errCorrupt, i, v)
	}
	return ""
}

// fail wraps err from Redis with op, matching ErrStoreUnavailable when
// Redis could not be reached or cannot serve right now.
func (s *RedisStore) fail(op string, err error) error {
	if errors.Is(err, ErrStoreUnavailable) {
		return fmt.Errorf("%s: %w", op, err)
	}
	if unavailable(err) {
		return fmt.Errorf("%s: %w: %w", op, ErrStoreUnavailable, err)
	}
	return fmt.Errorf("%s: %w", op, err)
}

// failWrite is fail for a write, which it also records for Ready.
func (s *RedisStore) failWrite(op string, err error) error {
	s.wrote(err)
	return s.fail(op, err)
}

// wrote records a write that failed because Redis could not take it (out
// of memory, unreachable, too slow), for Ready; a caller that went away
// says nothing about Redis.
func (s *RedisStore) wrote(err error) {
	if err != nil && unavailable(err) && !errors.Is(err, context.Canceled) {
		s.writes.fail(err, s.now())
	}
}

// unavailableReplies are the Redis error prefixes that mean "not now"
// rather than "wrong request": the server is loading its dataset, the
// cluster has lost slots or is moving them, a failover is under way, a
// script or the memory limit blocks writes, a failed snapshot does
// (MISCONF: Redis's disk is full or broken), or there are too many
// clients.
var unavailableReplies = []string{"LOADING", "CLUSTERDOWN", "TRYAGAIN", "MASTERDOWN", "READONLY", "BUSY", "NOREPLICAS", "OOM", "MISCONF", "max number of clients"}

// unavailable reports whether err means Redis could not be reached or
// cannot serve now: the caller should fail closed and may retry later.
func unavailable(err error) bool {
	switch {
	case errors.Is(err, redis.ErrClosed),
		errors.Is(err, redis.ErrPoolTimeout),
		errors.Is(err, redis.ErrPoolExhausted),
		errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, io.EOF),
		errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, net.ErrClosed),
		errors.Is(err, syscall.ECONNREFUSED),
		errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, syscall.EPIPE):
		return true
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return true
	}
	var re redis.Error
	if errors.As(err, &re) {
		for _, p := range unavailableReplies {
			if redis.HasErrorPrefix(err, p) {
				return true
			}
		}
		return false
	}
	return false
}
