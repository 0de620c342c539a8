package ledger

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"

	"go.etcd.io/bbolt"
)

// The bolt side of outbound events (outbox.go). One process owns the
// file, so there is no outbox to move: an operation that causes an event
// appends it to the events bucket, the global log, in its own
// transaction. A customer's event state (its event count, the balance.low
// level announced, whether balance.depleted was) is the customer bucket's
// key "events".

const (
	bEvents     = "events" // events/<8-byte n> -> "<customer> <cn> <record>"
	kEventState = "events" // customers/<customer>/events -> "<cn> <low|-> <dep>"
)

// boltEvents is what a boltCustomer needs to write events: the store's
// configuration and holds, the operation's time, and the account as it
// was when the operation began (for a balance.low level not stored yet).
type boltEvents struct {
	cfg                 *eventConfig
	holds               *memHolds
	nowMs               int64
	balance0, reserved0 int64
}

// withEvents prepares c to write events at nowMs when events are on, and
// returns c.
func (s *BoltStore) withEvents(c *boltCustomer, nowMs int64) (*boltCustomer, error) {
	if c == nil || s.events == nil {
		return c, nil
	}
	st, err := c.state()
	if err != nil {
		return nil, err
	}
	reserved, err := s.holds.txReserved(c, nowMs)
	if err != nil {
		return nil, err
	}
	c.ev = &boltEvents{cfg: s.events, holds: s.holds, nowMs: nowMs, balance0: st.balance, reserved0: reserved}
	return c, nil
}

// eventState is a customer's "events" key.
type eventState struct {
	n       int64
	low     int64
	haveLow bool
	dep     bool
}

func (c *boltCustomer) eventState() (eventState, error) {
	v := c.b.Get([]byte(kEventState))
	if v == nil {
		return eventState{}, nil
	}
	f := strings.Fields(string(v))
	if len(f) != 3 {
		return eventState{}, fmt.Errorf("%w: event state %q of %s", errCorrupt, v, c.id)
	}
	var es eventState
	var err error
	if es.n, err = strconv.ParseInt(f[0], 10, 64); err != nil {
		return eventState{}, fmt.Errorf("%w: event state %q of %s", errCorrupt, v, c.id)
	}
	if f[1] != "-" {
		es.haveLow = true
		if es.low, err = strconv.ParseInt(f[1], 10, 64); err != nil {
			return eventState{}, fmt.Errorf("%w: event state %q of %s", errCorrupt, v, c.id)
		}
	}
	es.dep = f[2] == "1"
	return es, nil
}

func (c *boltCustomer) putEventState(es eventState) error {
	low, dep := "-", "0"
	if es.haveLow {
		low = strconv.FormatInt(es.low, 10)
	}
	if es.dep {
		dep = "1"
	}
	return c.b.Put([]byte(kEventState), []byte(strconv.FormatInt(es.n, 10)+" "+low+" "+dep))
}

// liveReserved is the sum of c's holds that have not expired by the
// operation's time, as this transaction sees them: the holds live in
// memory (boltholds.go), and one whose charge this transaction wrote no
// longer counts.
func (c *boltCustomer) liveReserved() (int64, error) {
	return c.ev.holds.txReserved(c, c.ev.nowMs)
}

// emit appends event typ of c to the log, as emit in lua/lib.lua writes
// it to the outbox. It does nothing when events are off.
func (c *boltCustomer) emit(typ EventType, entry, amount, lot int64, text string) error {
	if c.ev == nil {
		return nil
	}
	st, err := c.state()
	if err != nil {
		return err
	}
	reserved, err := c.liveReserved()
	if err != nil {
		return err
	}
	es, err := c.eventState()
	if err != nil {
		return err
	}
	es.n++
	if err := c.putEventState(es); err != nil {
		return err
	}
	log := c.tx.Bucket([]byte(bEvents))
	if log == nil {
		return fmt.Errorf("%w: no %s bucket", errCorrupt, bEvents)
	}
	seq, err := log.NextSequence()
	if err != nil {
		return err
	}
	r := eventRecord{typ: typ, created: c.ev.nowMs, balance: st.balance, available: st.balance - reserved, entry: entry, amount: amount, lot: lot, text: text}
	return log.Put(seqKey(int64(seq)), []byte(c.id+" "+strconv.FormatInt(es.n, 10)+" "+r.String()))
}

// checkLow is check_low of lua/lib.lua: balance.low for each threshold
// crossed downwards since the last announcement, caused by entry (-1:
// the customer's latest entry).
func (c *boltCustomer) checkLow(entry int64) error {
	if c.ev == nil || len(c.ev.cfg.low) == 0 {
		return nil
	}
	st, err := c.state()
	if err != nil {
		return err
	}
	if entry < 0 {
		entry = st.seq
	}
	reserved, err := c.liveReserved()
	if err != nil {
		return err
	}
	available := st.balance - reserved
	es, err := c.eventState()
	if err != nil {
		return err
	}
	prev := es.low
	if !es.haveLow {
		prev = c.ev.cfg.level(c.ev.balance0 - c.ev.reserved0)
	}
	for _, t := range c.ev.cfg.crossed(available, prev) {
		if err := c.emit(EventBalanceLow, entry, t, 0, ""); err != nil {
			return err
		}
	}
	if level := c.ev.cfg.level(available); level != prev || !es.haveLow {
		if es, err = c.eventState(); err != nil {
			return err
		}
		es.low, es.haveLow = level, true
		return c.putEventState(es)
	}
	return nil
}

// depleted writes balance.depleted unless it was written since the last
// positive credit; a customer without entries never had credits to run
// out of.
func (c *boltCustomer) depleted(seq, required int64) error {
	if c.ev == nil || seq == 0 {
		return nil
	}
	es, err := c.eventState()
	if err != nil || es.dep {
		return err
	}
	es.dep = true
	if err := c.putEventState(es); err != nil {
		return err
	}
	return c.emit(EventBalanceDepleted, 0, required, 0, "")
}

// rearmDepleted re-arms balance.depleted (a positive credit).
func (c *boltCustomer) rearmDepleted() error {
	if c.ev == nil {
		return nil
	}
	es, err := c.eventState()
	if err != nil || !es.dep {
		return err
	}
	es.dep = false
	return c.putEventState(es)
}

// creditEvent writes the event of a credit whose entry seq added delta,
// as credit.lua does: credits.granted (re-arming balance.depleted) or,
// for a refund, credits.clawed_back.
func (c *boltCustomer) creditEvent(seq, delta, from int64, kind Kind) error {
	if c.ev == nil {
		return nil
	}
	if delta > 0 {
		if err := c.rearmDepleted(); err != nil {
			return err
		}
		return c.emit(EventCreditsGranted, seq, delta, seq, string(kind))
	}
	if kind == KindRefund {
		return c.emit(EventCreditsClawedBack, seq, delta, max(from, 0), string(kind))
	}
	return nil
}

// suspensionEvent writes typ (customer.suspended or .reinstated) when the
// number of suspension reasons in force is now count, as suspend.lua and
// lift.lua do: the account is first brought to now.
func (c *boltCustomer) suspensionEvent(typ EventType, count int64, reason string) error {
	if c.ev == nil {
		return nil
	}
	st, err := c.state()
	if err != nil || st.suspended != count {
		return err
	}
	if err := c.current(c.ev.nowMs); err != nil {
		return err
	}
	return c.emit(typ, 0, 0, 0, reason)
}

// Events implements Outbox.
func (s *BoltStore) Events(ctx context.Context, after int64, limit int) (EventPage, error) {
	if s.events == nil {
		return EventPage{}, ErrEventsOff
	}
	limit, err := checkEventsArgs(after, limit)
	if err != nil {
		return EventPage{}, err
	}
	if err := ctx.Err(); err != nil {
		return EventPage{}, err
	}
	var page EventPage
	err = s.db.View(func(tx *bbolt.Tx) error {
		log := tx.Bucket([]byte(bEvents))
		if log == nil {
			return fmt.Errorf("%w: no %s bucket", errCorrupt, bEvents)
		}
		page.Last = int64(log.Sequence())
		page.First = page.Last + 1
		cur := log.Cursor()
		if k, _ := cur.First(); k != nil {
			page.First = int64(binary.BigEndian.Uint64(k))
		}
		from, to := eventWindow(after, limit, page.First, page.Last)
		for k, v := cur.Seek(seqKey(from)); k != nil; k, v = cur.Next() {
			n := int64(binary.BigEndian.Uint64(k))
			if n > to {
				break
			}
			e, err := parseLogEvent(n, string(v))
			if err != nil {
				return err
			}
			page.Events = append(page.Events, e)
		}
		return nil
	})
	if err != nil {
		return EventPage{}, s.fail("events", err)
	}
	return page, nil
}

// MoveEvents implements Outbox: bolt writes events straight into the
// log, so it only trims the log to its retention.
func (s *BoltStore) MoveEvents(ctx context.Context, _ bool) (int, error) {
	if s.events == nil {
		return 0, ErrEventsOff
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	cutoff := unixMilli(s.now().Add(-EventRetention))
	err := s.update(func(tx *bbolt.Tx) error {
		log := tx.Bucket([]byte(bEvents))
		if log == nil {
			return fmt.Errorf("%w: no %s bucket", errCorrupt, bEvents)
		}
		last := int64(log.Sequence())
		var drop [][]byte
		cur := log.Cursor()
		for k, v := cur.First(); k != nil && len(drop) < sweepBatch; k, v = cur.Next() {
			n := int64(binary.BigEndian.Uint64(k))
			e, err := parseLogEvent(n, string(v))
			if err == nil && last-n+1 <= MaxEvents && e.Created.UnixMilli() >= cutoff {
				break
			}
			drop = append(drop, bytes.Clone(k))
		}
		for _, k := range drop {
			if err := log.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return 0, s.fail("trim events", err)
	}
	return 0, nil
}

// eventsBucket creates the log bucket when events are on.
func eventsBucket(tx *bbolt.Tx, on bool) error {
	if !on {
		return nil
	}
	_, err := tx.CreateBucketIfNotExists([]byte(bEvents))
	return err
}
