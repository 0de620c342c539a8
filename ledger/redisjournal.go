package ledger

import (
	"context"
	_ "embed"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"
)

// The journal on Redis is one stream of every record
// (journalappend.lua), and beside each customer's other keys, under the
// customer's hash tag, a sorted set of the ids of the customer's records
// (journalindex.lua). The two live in different slots, so a record is
// filed in two calls: should the second fail, the record is in the
// journal but not found by its customer, and AppendJournal says so.
// Neither key is money: both expire after JournalRetention without
// writes, unlike every ledger key.
var (
	//go:embed lua/journalappend.lua
	journalAppendLua string
	//go:embed lua/journalindex.lua
	journalIndexLua string

	journalAppendScript = redis.NewScript(journalAppendLua)
	journalIndexScript  = redis.NewScript(journalIndexLua)
)

// Journal keys. {journal} is their hash tag: no customer key starts with
// "tollgate:journal:", so no customer's slot logic ever reads them.
const (
	journalLogKey  = "tollgate:journal:{journal}:log"
	journalOnceKey = "tollgate:journal:{journal}:once"
	// journalScanBatch is how many records a read fetches per round trip.
	journalScanBatch = 200
)

// journalIndexKey is the key of a customer's journal index.
func journalIndexKey(customer string) string { return keyPrefix + "{" + customer + "}:journal" }

// AppendJournal implements Journal.
func (s *RedisStore) AppendJournal(ctx context.Context, r JournalRecord, once string) (bool, error) {
	if err := checkJournalRecord(r, once); err != nil {
		return false, err
	}
	now := s.now()
	cutoff := journalCutoff(now)
	retention := JournalRetention.Milliseconds()
	rep, err := s.run(ctx, journalAppendScript, []string{journalLogKey, journalOnceKey},
		unixMilli(r.At), cutoff, s.journalMax, retention, r.Customer, r.Type, once, string(r.Data))
	if err != nil {
		return false, s.failWrite("append journal", err)
	}
	added, raw := rep.int(0), rep.str(1)
	if rep.err != nil {
		return false, fmt.Errorf("append journal: %w", rep.err)
	}
	if added != 1 {
		return false, nil
	}
	id, ok := parseJournalID(raw)
	if !ok {
		return false, fmt.Errorf("append journal: %w: record id %q", errCorrupt, raw)
	}
	if r.Customer == "" {
		return true, nil
	}
	if _, err := s.run(ctx, journalIndexScript, []string{journalIndexKey(r.Customer)},
		id.String(), journalID{ms: cutoff}.String(), s.journalMax, retention); err != nil {
		return true, s.failWrite("index journal record "+id.String()+" under "+r.Customer, err)
	}
	return true, nil
}

// ReadJournal implements Journal.
func (s *RedisStore) ReadJournal(ctx context.Context, q JournalQuery) (JournalPage, error) {
	limit, before, err := checkJournalQuery(q)
	if err != nil {
		return JournalPage{}, err
	}
	if err := s.guard(); err != nil {
		return JournalPage{}, fmt.Errorf("read journal: %w", err)
	}
	r := &journalReader{s: s, q: q, limit: limit, cutoff: journalCutoff(s.now())}
	if q.Customer == "" {
		err = r.all(ctx, before)
	} else {
		err = r.customer(ctx, before)
	}
	if err != nil {
		return JournalPage{}, err
	}
	return r.page, nil
}

// journalReader collects one page, newest first.
type journalReader struct {
	s      *RedisStore
	q      JournalQuery
	limit  int
	cutoff int64
	page   JournalPage
}

// take adds m, a stream entry, to the page unless the filters drop it,
// and reports whether the page is complete (or the retention reached).
func (r *journalReader) take(m redis.XMessage) (done bool, err error) {
	id, ok := parseJournalID(m.ID)
	if !ok {
		return false, fmt.Errorf("read journal: %w: record id %q", errCorrupt, m.ID)
	}
	if id.ms < r.cutoff {
		return true, nil
	}
	customer, _ := m.Values["c"].(string)
	typ, ok1 := m.Values["t"].(string)
	data, ok2 := m.Values["d"].(string)
	if !ok1 || !ok2 {
		return false, fmt.Errorf("read journal: %w: record %s lacks its type or data", errCorrupt, m.ID)
	}
	if r.q.Type != "" && typ != r.q.Type {
		return false, nil
	}
	if len(r.page.Records) == r.limit {
		r.page.Next = r.page.Records[r.limit-1].ID
		return true, nil
	}
	r.page.Records = append(r.page.Records, journalRecord(id, customer, typ, []byte(data)))
	return false, nil
}

// all reads the stream backwards from before.
func (r *journalReader) all(ctx context.Context, before *journalID) error {
	end := "+"
	if before != nil {
		end = before.prev()
	}
	for {
		msgs, err := r.s.client.XRevRangeN(ctx, journalLogKey, end, "-", journalScanBatch).Result()
		if err != nil {
			return r.s.fail("read journal", err)
		}
		for _, m := range msgs {
			done, err := r.take(m)
			if err != nil || done {
				return err
			}
		}
		if len(msgs) < journalScanBatch {
			return nil
		}
		last, ok := parseJournalID(msgs[len(msgs)-1].ID)
		if !ok {
			return fmt.Errorf("read journal: %w: record id %q", errCorrupt, msgs[len(msgs)-1].ID)
		}
		end = last.prev()
	}
}

// customer reads the customer's index backwards from before, and each
// record it names from the stream; records the journal forgot are
// skipped.
func (r *journalReader) customer(ctx context.Context, before *journalID) error {
	key := journalIndexKey(r.q.Customer)
	max := "+"
	if before != nil {
		max = "(" + before.String()
	}
	for {
		ids, err := r.s.client.ZRevRangeByLex(ctx, key, &redis.ZRangeBy{Max: max, Min: "-", Count: journalScanBatch}).Result()
		if err != nil {
			return r.s.fail("read journal of "+r.q.Customer, err)
		}
		if len(ids) == 0 {
			return nil
		}
		cmds := make([]*redis.XMessageSliceCmd, len(ids))
		_, err = r.s.client.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, raw := range ids {
				id, ok := parseJournalID(raw)
				if !ok {
					return fmt.Errorf("%w: journal index of %s holds %q", errCorrupt, r.q.Customer, raw)
				}
				cmds[i] = p.XRangeN(ctx, journalLogKey, id.stream(), id.stream(), 1)
			}
			return nil
		})
		if err != nil && !errors.Is(err, redis.Nil) {
			if errors.Is(err, errCorrupt) {
				return fmt.Errorf("read journal: %w", err)
			}
			return r.s.fail("read journal of "+r.q.Customer, err)
		}
		for _, c := range cmds {
			msgs, err := c.Result()
			if err != nil {
				return r.s.fail("read journal of "+r.q.Customer, err)
			}
			if len(msgs) == 0 {
				continue // forgotten by the journal; its index entry will be trimmed
			}
			done, err := r.take(msgs[0])
			if err != nil || done {
				return err
			}
		}
		if len(ids) < journalScanBatch {
			return nil
		}
		max = "(" + ids[len(ids)-1]
	}
}
