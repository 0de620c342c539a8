package ledger

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/tollgate-dev/tollgate/money"
)

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
// charges and credits on a crash. Keys never expire by TTL except locks,
// Ready's probes and the journal's (redisjournal.go, not money), so an
// eviction policy other than noeviction loses money. Ready checks both, and whether Redis lost its data (see
// redischeck.go); call it at start-up and periodically.
type RedisStore struct {
	client    redis.UniversalClient
	batch     *batcher
	now       func() time.Time
	log       *zap.Logger
	retention time.Duration
	events    *eventConfig // nil: outbound events off (outbox.go)

	journalMax int // Options.JournalMaxRecords (redisjournal.go)

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
		events:    newEventConfig(opts.Events),
		health:    newRedisHealth(cluster),
	}
	s.journalMax = opts.JournalMaxRecords
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
	_, err := s.reserve(ctx, customer, holdID, amount, ttl, false, 0)
	return err
}

// ReserveAvailable implements Store.
func (s *RedisStore) ReserveAvailable(ctx context.Context, customer, holdID string, amount money.Micros, ttl time.Duration) (money.Micros, error) {
	return s.reserve(ctx, customer, holdID, amount, ttl, false, 0)
}

// reserve is ReserveAvailable, and ReservePlan when checkPlan is set.
func (s *RedisStore) reserve(ctx context.Context, customer, holdID string, amount money.Micros, ttl time.Duration, checkPlan bool, planVersion int64) (money.Micros, error) {
	if err := checkReserve(customer, holdID, amount, ttl); err != nil {
		return 0, err
	}
	now := s.now()
	var tok [attemptSize]byte
	rand.Read(tok[:])
	var plan any = "" // Reserve: no version to check
	if checkPlan {
		plan = planVersion
	}
	args := []any{holdID, int64(amount), expiryMilli(now, ttl), unixMilli(now), s.retention.Milliseconds(), hex.EncodeToString(tok[:]), plan}
	r, err := s.run(ctx, reserveScript, customerKeys(customer), args...)
	if err != nil {
		return 0, s.failWrite("reserve "+holdID, err)
	}
	status, available, err := reserveStatus(r.int(0)), money.Micros(r.int(1)), r.err
	if err != nil {
		return 0, fmt.Errorf("reserve %s: %w", holdID, err)
	}
	switch status {
	case reserveOK:
		return available, nil
	case reserveInsufficient:
		reserved, lent := money.Micros(r.int(2)), money.Micros(r.int(3))
		if r.err != nil {
			return 0, fmt.Errorf("reserve %s: %w", holdID, r.err)
		}
		return 0, &InsufficientCreditsError{Customer: customer, Available: available, Required: amount, Reserved: reserved, Lent: lent}
	case reserveSuspended:
		return 0, fmt.Errorf("reserve %s: %w: %s", holdID, ErrCustomerSuspended, customer)
	case reserveDuplicate:
		return 0, fmt.Errorf("reserve %s for %s: %w", holdID, customer, ErrDuplicateHold)
	case reservePlanChanged:
		return 0, planChanged(customer, r)
	}
	return 0, fmt.Errorf("reserve %s: %w: status %d", holdID, errCorrupt, status)
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
	status, seq := settleStatus(r.int(0)), r.int(1)
	switch status {
	case settleCharged:
		// Charged now: the entry is the body sent, so there is nothing
		// to decode.
		balance := r.int(2)
		if r.err != nil {
			return Entry{}, fmt.Errorf("settle %s: %w", holdID, r.err)
		}
		return body.entry(customer, seq, -actual, money.Micros(balance)), nil
	case settleReplayed:
		raw := r.str(2)
		if r.err != nil {
			return Entry{}, fmt.Errorf("settle %s: %w", holdID, r.err)
		}
		e, err := decodeEntry(customer, seq, raw)
		if err != nil {
			return Entry{}, fmt.Errorf("settle %s: %w", holdID, err)
		}
		return e, nil
	case settleReleased:
		return Entry{}, fmt.Errorf("settle %s of %s: %w", holdID, customer, ErrHoldReleased)
	case settleUnknown:
		return Entry{}, fmt.Errorf("settle %s of %s: %w", holdID, customer, ErrHoldNotFound)
	case settleBelowFloor:
		return Entry{}, fmt.Errorf("settle %s: %w: charging %s would take %s's balance below -%s", holdID, ErrInvalidAmount, actual, customer, MaxAmount)
	case settleUnrecorded:
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
	_, err := s.release(ctx, customer, holdID)
	return err
}

// release is Release, and reports whether release.lua found no hold by
// the id and recorded it as released (status 3), for LeaseStore.
func (s *RedisStore) release(ctx context.Context, customer, holdID string) (recorded bool, err error) {
	if err := checkRelease(customer, holdID); err != nil {
		return false, err
	}
	now := s.now()
	r, err := s.run(ctx, releaseScript, customerKeys(customer), holdID, unixMilli(now), s.retention.Milliseconds())
	if err != nil {
		return false, s.failWrite("release "+holdID, err)
	}
	status := r.int(0)
	if r.err != nil {
		return false, fmt.Errorf("release %s: %w", holdID, r.err)
	}
	return status == releaseRecorded, nil
}

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
	status := extendStatus(r.int(0))
	if r.err != nil {
		return fmt.Errorf("extend %s: %w", holdID, r.err)
	}
	switch status {
	case extendRenewed:
		return nil
	case extendExpired:
		return extendError(holdID, customer, holdExpired, true)
	case extendReleased:
		return extendError(holdID, customer, holdReleased, true)
	case extendSettled:
		return extendError(holdID, customer, holdSettled, true)
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
	now := s.now()
	body := creditBody(c, now)
	lp := creditLot(c)
	from := ""
	if lp.from >= 0 {
		from = padLot(lp.from)
	}
	r, err := s.run(ctx, creditScript, customerKeys(c.Customer),
		c.Key, int64(c.Amount), mode, string(c.Kind), body.json(), unixMilli(now),
		lp.expires, lp.priority, from, c.Reference, body.At.Format(time.RFC3339Nano))
	if err != nil {
		return CreditResult{}, s.failWrite("credit "+c.Key, err)
	}
	status, seq := creditStatus(r.int(0)), r.int(1)
	switch status {
	case creditApplied:
		// Applied now; the entry's amount is what the key had not
		// applied yet, which the script reports.
		balance, delta := r.int(2), r.int(3)
		if r.err != nil {
			return CreditResult{}, fmt.Errorf("credit %s: %w", c.Key, r.err)
		}
		return creditResult(body.entry(c.Customer, seq, money.Micros(delta), money.Micros(balance)), true), nil
	case creditReplayed:
		raw := r.str(2)
		if r.err != nil {
			return CreditResult{}, fmt.Errorf("credit %s: %w", c.Key, r.err)
		}
		e, err := decodeEntry(c.Customer, seq, raw)
		if err != nil {
			return CreditResult{}, fmt.Errorf("credit %s: %w", c.Key, err)
		}
		return creditResult(e, false), nil
	case creditConflicted:
		return CreditResult{}, conflictError(c)
	case creditOutOfRange:
		return CreditResult{}, fmt.Errorf("credit %s: %w: %s would take %s's balance beyond ±%s", c.Key, ErrInvalidAmount, c.Amount, c.Customer, MaxAmount)
	}
	return CreditResult{}, fmt.Errorf("credit %s: %w: status %d", c.Key, errCorrupt, status)
}

// Account implements Store.
func (s *RedisStore) Account(ctx context.Context, customer string) (Account, error) {
	if err := checkCustomer(customer); err != nil {
		return Account{}, err
	}
	r, err := s.run(ctx, accountScript, customerKeys(customer), unixMilli(s.now()), s.retention.Milliseconds(), MaxLots)
	if err != nil {
		return Account{}, s.fail("account "+customer, err)
	}
	balance, reserved, suspended, debt, nextAt, nextAmount := r.int(0), r.int(1), r.int(2), r.int(3), r.int(4), r.int(5)
	if r.err != nil {
		return Account{}, fmt.Errorf("account %s: %w", customer, r.err)
	}
	a := Account{
		Customer:  customer,
		Balance:   money.Micros(balance),
		Reserved:  money.Micros(reserved),
		Available: money.Micros(balance - reserved),
		Debt:      money.Micros(debt),
		Suspended: suspended > 0,
	}
	if nextAt > 0 {
		a.NextExpiry = &Expiry{Amount: money.Micros(nextAmount), At: time.UnixMilli(nextAt).UTC()}
	}
	return a, nil
}

// Lots implements Store.
func (s *RedisStore) Lots(ctx context.Context, customer string) ([]Lot, error) {
	if err := checkCustomer(customer); err != nil {
		return nil, err
	}
	r, err := s.run(ctx, lotsScript, customerKeys(customer), unixMilli(s.now()), s.retention.Milliseconds(), MaxLots)
	if err != nil {
		return nil, s.fail("lots of "+customer, err)
	}
	if len(r.vals)%2 != 0 {
		return nil, fmt.Errorf("lots of %s: %w: %d fields in the reply", customer, errCorrupt, len(r.vals))
	}
	var lots []Lot
	for i := 0; i < len(r.vals); i += 2 {
		pid, raw := r.str(i), r.str(i+1)
		if r.err != nil {
			return nil, fmt.Errorf("lots of %s: %w", customer, r.err)
		}
		id, err := strconv.ParseInt(pid, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("lots of %s: %w: lot id %q", customer, errCorrupt, pid)
		}
		l, err := parseLotRecord(raw)
		if err != nil {
			return nil, fmt.Errorf("lots of %s: lot %d: %w", customer, id, err)
		}
		lots = append(lots, l.lot(id))
	}
	return lots, nil
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
	// The account script records the expiry of the lots that are due, so
	// that the page agrees with the balance read next.
	if _, err := s.run(ctx, accountScript, keys, unixMilli(s.now()), s.retention.Milliseconds(), 0); err != nil {
		return Page{}, s.fail("entries of "+customer, err)
	}
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
	keys, args := s.withEvents(customerKeys(customer), []any{reason})
	n, err := suspendScript.Run(ctx, s.client, keys, args...).Int64()
	if err != nil {
		return s.failWrite("suspend "+customer, err)
	}
	if n == 1 && s.events != nil {
		s.markPending(ctx, customer)
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
	keys, args := s.withEvents(customerKeys(customer), []any{reason})
	n, err := liftScript.Run(ctx, s.client, keys, args...).Int64()
	if err != nil {
		return s.failWrite("lift "+customer, err)
	}
	if n == 1 && s.events != nil {
		s.markPending(ctx, customer)
	}
	return nil
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

func newToken() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
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
