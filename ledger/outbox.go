package ledger

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tollgate-dev/tollgate/money"
)

// Outbound events (DESIGN "Events (outbound)").
//
// A store with Options.Events set writes an event in the same atomic
// operation as the ledger change that causes it (the outbox pattern): on
// Redis in the same Lua script, into the customer's outbox key under its
// {customer} hash tag, so that Redis Cluster runs it on one slot; on bolt
// in the same transaction, straight into the global event log. MoveEvents
// then moves Redis outboxes into the global, ordered, bounded log (bolt
// has nothing to move) and Events reads that log, oldest first. An event
// gets its id (evt_<n>, n its position in the log) when it enters the log,
// and keeps it: the move is idempotent per outbox entry, so a crash
// between copying and deleting an entry adds it to the log once.
//
// Stored events are compact text, the same on both stores:
//
//	<type> <created_ms> <balance> <available> <entry> <amount> <lot> <text>
//
// and in the log "<customer> <n> " before that, n the event's number in
// the customer's own outbox. The JSON envelope is built in Go, when the
// log is read.
//
// Where each type is written:
//   - balance.low: after every change of the balance (a charge, a credit,
//     the expiry of lots), with the available credits after it, once per
//     threshold crossed downwards; a threshold is re-armed when available
//     is at or above it again. Not on reservations: a hold that comes and
//     goes with a request would announce a crossing that the charge may
//     not make. Several thresholds crossed by one change give one event
//     each, highest first.
//   - balance.depleted: on a Reserve refused for insufficient credits of
//     a customer with entries, once; a positive credit re-arms it.
//   - credits.granted: every positive credit (amount, lot, kind).
//   - credits.expired: every expire entry (amount, lot).
//   - credits.clawed_back: every negative credit of kind refund (amount,
//     the lot it took from first).
//   - customer.suspended / customer.reinstated: when the first suspension
//     reason comes into force / the last one is lifted (reason).
//   - plan.changed: written by the plan operations (their detail).

// EventType names an outbound event.
type EventType string

// The event types.
const (
	EventBalanceLow        EventType = "balance.low"
	EventBalanceDepleted   EventType = "balance.depleted"
	EventCreditsGranted    EventType = "credits.granted"
	EventCreditsExpired    EventType = "credits.expired"
	EventCreditsClawedBack EventType = "credits.clawed_back"
	EventCustomerSuspended EventType = "customer.suspended"
	EventCustomerReinstate EventType = "customer.reinstated"
	EventPlanChanged       EventType = "plan.changed"
)

// EventOptions turn outbound events on (Options.Events).
type EventOptions struct {
	// LowBalance are the thresholds of balance.low, each positive; the
	// order does not matter. None means no balance.low events.
	LowBalance []money.Micros
}

// Retention of the global event log: an event stays listed for
// EventRetention after it entered the log, and the log keeps at most
// MaxEvents events (the oldest go first). Delivery gives up on an event
// after 72 hours, so both bound only how far back GET /v1/events replays.
const (
	EventRetention = 7 * 24 * time.Hour
	MaxEvents      = 500_000
)

// Event is one outbound event as the log holds it.
type Event struct {
	// Seq is the event's position in the global log, from 1; its id is
	// EventID(Seq).
	Seq      int64
	Type     EventType
	Created  time.Time
	Customer string
	// Balance and Available are the customer's after the change.
	Balance   money.Micros
	Available money.Micros
	// Entry is the id of the ledger entry that caused the event, "" when
	// none did (suspension, plan, depletion).
	Entry string
	// Amount is the entry's signed amount (credits.*), the threshold
	// (balance.low) or the amount the refused reservation asked for
	// (balance.depleted).
	Amount money.Micros
	// Lot is the lot a credit created, expired or took from first.
	Lot string
	// Text is the credit's kind (credits.granted, credits.clawed_back),
	// the suspension reason (customer.*), or a JSON object of further
	// data fields (plan.changed).
	Text string
}

// ID returns the event's id.
func (e Event) ID() string { return EventID(e.Seq) }

// EventID returns the id of the event at position seq of the log.
func EventID(seq int64) string { return "evt_" + strconv.FormatInt(seq, 10) }

// ParseEventID returns the log position an event id names; "" is 0 (before
// the first event). A bare number is accepted too.
func ParseEventID(id string) (int64, error) {
	if id == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(strings.TrimPrefix(id, "evt_"), 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%w: event id %q is not an id like evt_42", ErrInvalidCursor, truncate(id))
	}
	return n, nil
}

// MarshalJSON renders the envelope {id, type, created, customer, data}:
// created in Unix seconds as Stripe's events have it, money as decimal
// strings.
func (e Event) MarshalJSON() ([]byte, error) {
	b := make([]byte, 0, 256)
	b = append(b, `{"id":"`...)
	b = strconv.AppendInt(append(b, "evt_"...), e.Seq, 10)
	b = append(b, `","object":"event","type":`...)
	b = appendJSONString(b, string(e.Type))
	b = append(b, `,"created":`...)
	b = strconv.AppendInt(b, e.Created.Unix(), 10)
	b = append(b, `,"customer":`...)
	b = appendJSONString(b, e.Customer)
	b = append(b, `,"data":{"balance":"`...)
	b = e.Balance.AppendText(b)
	b = append(b, `","available":"`...)
	b = e.Available.AppendText(b)
	b = append(b, '"')
	if e.Entry != "" {
		b = appendJSONString(append(b, `,"entry_id":`...), e.Entry)
	}
	amount := func(name string) {
		b = append(b, `,"`...)
		b = append(b, name...)
		b = append(b, `":"`...)
		b = e.Amount.AppendText(b)
		b = append(b, '"')
	}
	switch e.Type {
	case EventBalanceLow:
		amount("threshold")
	case EventBalanceDepleted:
		amount("required")
	case EventCreditsGranted, EventCreditsExpired, EventCreditsClawedBack:
		amount("amount")
		if e.Lot != "" {
			b = appendJSONString(append(b, `,"lot":`...), e.Lot)
		}
		if e.Text != "" {
			b = appendJSONString(append(b, `,"kind":`...), e.Text)
		}
	case EventCustomerSuspended, EventCustomerReinstate:
		b = appendJSONString(append(b, `,"reason":`...), e.Text)
	default:
		// plan.changed and types this version does not know: the detail
		// object's members join data.
		if t := strings.TrimSpace(e.Text); len(t) > 2 && t[0] == '{' && json.Valid([]byte(t)) {
			b = append(b, ',')
			b = append(b, strings.TrimSpace(t[1:len(t)-1])...)
		}
	}
	return append(b, "}}"...), nil
}

// EventPage is what Events returns.
type EventPage struct {
	// Events are the events after the position asked for, oldest first.
	Events []Event
	// Last is the position of the newest event in the log (0: none yet).
	Last int64
	// First is the position of the oldest event the log still holds.
	First int64
}

// Outbox is the event log of a store with events on. RedisStore and
// BoltStore implement it.
type Outbox interface {
	// Events returns up to limit (1 to MaxPageSize; 0 means
	// DefaultPageSize) events of the log after position after, oldest
	// first. Events older than the log's retention are gone: the page then
	// starts at the oldest one left.
	Events(ctx context.Context, after int64, limit int) (EventPage, error)
	// MoveEvents moves pending outbox entries into the log (Redis) and
	// trims the log to its retention; it returns how many it moved. Only
	// one replica needs to run it (it is safe, and idempotent, when more
	// do). With scan, it also looks for outboxes that no pending mark
	// names (a crash between a script and its mark), which costs a SCAN
	// of every key: do it every few minutes, not every second.
	MoveEvents(ctx context.Context, scan bool) (int, error)
}

// ErrEventsOff is returned by Outbox methods of a store opened without
// Options.Events.
var ErrEventsOff = errors.New("ledger: outbound events are off (set events: in the config)")

// eventConfig is the store's copy of EventOptions: thresholds highest
// first.
type eventConfig struct {
	low []int64
}

func newEventConfig(o *EventOptions) *eventConfig {
	if o == nil {
		return nil
	}
	c := &eventConfig{}
	for _, t := range o.LowBalance {
		if t > 0 && !slices.Contains(c.low, int64(t)) {
			c.low = append(c.low, int64(t))
		}
	}
	slices.Sort(c.low)
	slices.Reverse(c.low)
	return c
}

// level is the smallest threshold that available is below, 0 when none:
// every threshold at or above it counts as crossed.
func (c *eventConfig) level(available int64) int64 {
	var s int64
	for _, t := range c.low {
		if available < t {
			s = t
		}
	}
	return s
}

// crossed returns the thresholds that available is below and that were
// not crossed at level prev (0: none), highest first.
func (c *eventConfig) crossed(available, prev int64) []int64 {
	var out []int64
	for _, t := range c.low {
		if available < t && (prev == 0 || t < prev) {
			out = append(out, t)
		}
	}
	return out
}

// eventRecord is one event as the outbox keeps it.
type eventRecord struct {
	typ                EventType
	created            int64
	balance, available int64
	entry, amount, lot int64
	text               string
}

func (r eventRecord) String() string {
	b := make([]byte, 0, 64+len(r.text))
	b = append(b, r.typ...)
	for _, n := range []int64{r.created, r.balance, r.available, r.entry, r.amount, r.lot} {
		b = strconv.AppendInt(append(b, ' '), n, 10)
	}
	b = append(b, ' ')
	return string(append(b, r.text...))
}

// parseLogEvent decodes "<customer> <n> <record>" at log position seq.
func parseLogEvent(seq int64, raw string) (Event, error) {
	f := strings.SplitN(raw, " ", 10)
	if len(f) != 10 {
		return Event{}, fmt.Errorf("%w: event %d has %d fields", errCorrupt, seq, len(f))
	}
	var n [6]int64
	for i := range n {
		v, err := strconv.ParseInt(f[3+i], 10, 64)
		if err != nil {
			return Event{}, fmt.Errorf("%w: event %d field %d %q", errCorrupt, seq, 3+i, f[3+i])
		}
		n[i] = v
	}
	e := Event{
		Seq:       seq,
		Customer:  f[0],
		Type:      EventType(f[2]),
		Created:   time.UnixMilli(n[0]).UTC(),
		Balance:   money.Micros(n[1]),
		Available: money.Micros(n[2]),
		Amount:    money.Micros(n[4]),
		Text:      f[9],
	}
	if n[3] > 0 {
		e.Entry = strconv.FormatInt(n[3], 10)
	}
	if n[5] > 0 {
		e.Lot = strconv.FormatInt(n[5], 10)
	}
	return e, nil
}

// eventWindow returns the positions to read for Events: after+1 up to
// limit of them, within first..last.
func eventWindow(after int64, limit int, first, last int64) (from, to int64) {
	from = max(after+1, first, 1)
	to = min(last, after+int64(limit))
	if to < from {
		to = from - 1
	}
	return from, to
}

// checkEventsArgs validates Events' arguments and returns the limit.
func checkEventsArgs(after int64, limit int) (int, error) {
	if after < 0 {
		return 0, fmt.Errorf("%w: after %d is negative", ErrInvalidCursor, after)
	}
	return checkLimit(limit)
}
