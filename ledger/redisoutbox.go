package ledger

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// The Redis side of outbound events (outbox.go). A ledger script writes
// its events into the customer's outbox (KEYS[11], lua/lib.lua) and says
// so in its reply; the store then adds the customer to the pending set, a
// separate command, since a script touches one slot only. MoveEvents
// takes customers from the pending set and moves their outbox entries to
// the global log with eventsmove.lua, which skips entries the log already
// has, and deletes them from the outbox afterwards. A crash between a
// script and its pending mark leaves an outbox that only MoveEvents with
// scan finds.

var (
	//go:embed lua/eventsmove.lua
	eventsMoveLua    string
	eventsMoveScript = redis.NewScript(eventsMoveLua)
)

// The global event keys share the {events} hash tag: one slot, apart
// from every customer's (customer keys start "tollgate:{").
const (
	keyEventLog     = "tollgate:events:{events}:log"
	keyEventIDs     = "tollgate:events:{events}:ids"
	keyEventState   = "tollgate:events:{events}:state"
	keyEventPending = "tollgate:events:{events}:pending"
	outboxMatch     = "tollgate:{*}:outbox"
	// eventsMark is the last field of a script reply that wrote events
	// (EVENTS_MARK in lua/lib.lua).
	eventsMark = "tollgate:events"
	// moveBatch is how many events one eventsmove.lua call takes, and
	// how many pending customers one SPOP does.
	moveBatch = 100
)

// outboxKey is the customer's outbox, KEYS[11] of the ledger scripts.
func outboxKey(customer string) string { return keyPrefix + "{" + customer + "}:outbox" }

// spec is the events spec the ledger scripts take as their last ARGV.
func (c *eventConfig) spec(now time.Time, retention time.Duration) string {
	b := make([]byte, 0, 32+8*len(c.low))
	b = strconv.AppendInt(b, unixMilli(now), 10)
	b = strconv.AppendInt(append(b, ' '), retention.Milliseconds(), 10)
	for _, t := range c.low {
		b = strconv.AppendInt(append(b, ' '), t, 10)
	}
	return string(b)
}

// withEvents adds the outbox key and the events spec to the keys and
// arguments of a ledger script when events are on.
func (s *RedisStore) withEvents(keys []string, args []any) ([]string, []any) {
	if s.events == nil || len(keys) != len(keySuffixes) {
		return keys, args
	}
	customer, _ := customerOfKey(keys[0])
	keys = append(keys[:len(keys):len(keys)], outboxKey(customer))
	args = append(args[:len(args):len(args)], s.events.spec(s.now(), s.retention))
	return keys, args
}

// eventsWritten strips the events mark from a script's reply, and marks
// the customer of keys pending when it was there.
func (s *RedisStore) eventsWritten(ctx context.Context, keys []string, vals []any) []any {
	if s.events == nil || len(vals) == 0 {
		return vals
	}
	if m, ok := vals[len(vals)-1].(string); !ok || m != eventsMark {
		return vals
	}
	if customer, ok := customerOfKey(keys[0]); ok {
		s.markPending(ctx, customer)
	}
	return vals[:len(vals)-1]
}

// markPending adds customer to the pending set. A failure is logged, not
// returned: the change and its events are committed, and MoveEvents with
// scan finds the outbox.
func (s *RedisStore) markPending(ctx context.Context, customer string) {
	if err := s.client.SAdd(context.WithoutCancel(ctx), keyEventPending, customer).Err(); err != nil {
		s.log.Warn("events written but not marked pending; the next outbox scan moves them", zap.String("customer", customer), zap.Error(err))
	}
}

// MoveEvents implements Outbox.
func (s *RedisStore) MoveEvents(ctx context.Context, scan bool) (int, error) {
	if s.events == nil {
		return 0, ErrEventsOff
	}
	if err := s.guard(); err != nil {
		return 0, fmt.Errorf("move events: %w", err)
	}
	if scan {
		if err := s.scanOutboxes(ctx); err != nil {
			return 0, s.fail("scan outboxes", err)
		}
	}
	moved := 0
	for {
		customers, err := s.client.SPopN(ctx, keyEventPending, moveBatch).Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			return moved, s.fail("move events", err)
		}
		for i, c := range customers {
			n, err := s.moveOutbox(ctx, c)
			moved += n
			if err != nil {
				// Put back what this pass did not finish.
				rest := make([]any, 0, len(customers)-i)
				for _, c := range customers[i:] {
					rest = append(rest, c)
				}
				s.client.SAdd(context.WithoutCancel(ctx), keyEventPending, rest...)
				return moved, s.fail("move events of "+c, err)
			}
		}
		if len(customers) < moveBatch {
			break
		}
	}
	if moved == 0 {
		// Trim by time even while nothing new comes in.
		if _, err := s.appendEvents(ctx, nil); err != nil {
			return 0, s.fail("trim events", err)
		}
	}
	return moved, nil
}

// moveOutbox moves customer's outbox entries to the log, in their order.
func (s *RedisStore) moveOutbox(ctx context.Context, customer string) (int, error) {
	if ValidateCustomer(customer) != nil {
		return 0, nil
	}
	key := outboxKey(customer)
	all, err := s.client.HGetAll(ctx, key).Result()
	if err != nil {
		return 0, err
	}
	type pending struct {
		n   int64
		rec string
	}
	var evs []pending
	for f, v := range all {
		if n, err := strconv.ParseInt(f, 10, 64); err == nil {
			evs = append(evs, pending{n, v})
		}
	}
	slices.SortFunc(evs, func(a, b pending) int { return int(a.n - b.n) })
	moved := 0
	for chunk := range slices.Chunk(evs, moveBatch) {
		args := make([]any, 0, 2*len(chunk))
		fields := make([]string, 0, len(chunk))
		for _, e := range chunk {
			f := strconv.FormatInt(e.n, 10)
			args = append(args, customer+" "+f, e.rec)
			fields = append(fields, f)
		}
		added, err := s.appendEvents(ctx, args)
		if err != nil {
			return moved, err
		}
		moved += added
		if err := s.client.HDel(ctx, key, fields...).Err(); err != nil {
			return moved, err
		}
	}
	return moved, nil
}

// appendEvents runs eventsmove.lua with pairs (outbox id, record).
func (s *RedisStore) appendEvents(ctx context.Context, pairs []any) (int, error) {
	args := append([]any{unixMilli(s.now()), EventRetention.Milliseconds(), MaxEvents}, pairs...)
	v, err := eventsMoveScript.Run(ctx, s.client, []string{keyEventLog, keyEventIDs, keyEventState}, args...).Int64Slice()
	if err != nil {
		return 0, err
	}
	if len(v) != 2 {
		return 0, fmt.Errorf("%w: eventsmove reply has %d fields", errCorrupt, len(v))
	}
	return int(v[0]), nil
}

// scanOutboxes marks every customer with an outbox pending: on Redis
// Cluster on every master.
func (s *RedisStore) scanOutboxes(ctx context.Context) error {
	scanNode := func(ctx context.Context, node redis.UniversalClient) error {
		iter := node.ScanType(ctx, 0, outboxMatch, scanBatch, "hash").Iterator()
		var batch []any
		for iter.Next(ctx) {
			if c, ok := customerOfKey(iter.Val()); ok {
				batch = append(batch, c)
			}
			if len(batch) >= scanBatch {
				if err := s.client.SAdd(ctx, keyEventPending, batch...).Err(); err != nil {
					return err
				}
				batch = batch[:0]
			}
		}
		if err := iter.Err(); err != nil {
			return err
		}
		if len(batch) > 0 {
			return s.client.SAdd(ctx, keyEventPending, batch...).Err()
		}
		return nil
	}
	if cc, ok := s.client.(*redis.ClusterClient); ok {
		return cc.ForEachMaster(ctx, func(ctx context.Context, node *redis.Client) error {
			return scanNode(ctx, node)
		})
	}
	return scanNode(ctx, s.client)
}

// Events implements Outbox.
func (s *RedisStore) Events(ctx context.Context, after int64, limit int) (EventPage, error) {
	if s.events == nil {
		return EventPage{}, ErrEventsOff
	}
	limit, err := checkEventsArgs(after, limit)
	if err != nil {
		return EventPage{}, err
	}
	if err := s.guard(); err != nil {
		return EventPage{}, fmt.Errorf("events: %w", err)
	}
	st, err := s.client.HMGet(ctx, keyEventState, "last", "first").Result()
	if err != nil {
		return EventPage{}, s.fail("events", err)
	}
	num := func(v any, def int64) int64 {
		if t, ok := v.(string); ok {
			if n, err := strconv.ParseInt(t, 10, 64); err == nil {
				return n
			}
		}
		return def
	}
	page := EventPage{Last: num(st[0], 0), First: num(st[1], 1)}
	from, to := eventWindow(after, limit, page.First, page.Last)
	if to < from {
		return page, nil
	}
	fields := make([]string, 0, to-from+1)
	for n := from; n <= to; n++ {
		fields = append(fields, strconv.FormatInt(n, 10))
	}
	vals, err := s.client.HMGet(ctx, keyEventLog, fields...).Result()
	if err != nil {
		return EventPage{}, s.fail("events", err)
	}
	for i, v := range vals {
		raw, ok := v.(string)
		if !ok {
			continue // trimmed meanwhile
		}
		e, err := parseLogEvent(from+int64(i), raw)
		if err != nil {
			return EventPage{}, fmt.Errorf("events: %w", err)
		}
		page.Events = append(page.Events, e)
	}
	return page, nil
}
