package ledger

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Journal is a bounded log of records beside the ledger, newest first: what
// happened to every Stripe event tollgate received, for support ("I paid
// but I have no access"). It is not money: a record changes no balance,
// and the journal forgets records by age and by count (JournalRetention,
// Options.JournalMaxRecords), so it never grows without bound.
// RedisStore and BoltStore implement it with the same behaviour.
//
// The store does not read Data: the caller owns its shape (a JSON object);
// the store only files it by time, customer and type.
type Journal interface {
	// AppendJournal adds r at the newest end, and forgets records older
	// than JournalRetention and the oldest beyond the store's maximum.
	// When once is set, r is added only if no record the journal still
	// holds was added with the same once (appended false otherwise): a
	// periodic job that sees the same thing again adds it once. It returns
	// ErrInvalidArgument for a record that breaks JournalRecord's rules.
	AppendJournal(ctx context.Context, r JournalRecord, once string) (appended bool, err error)

	// ReadJournal lists records newest first, filtered by q, at most
	// q.Limit (1 to MaxPageSize; 0 means DefaultPageSize). A malformed
	// cursor is ErrInvalidCursor; a record older than JournalRetention is
	// never returned, even before it is forgotten.
	ReadJournal(ctx context.Context, q JournalQuery) (JournalPage, error)
}

// JournalRecord is one record of the journal.
type JournalRecord struct {
	// ID is set by the store when it appends the record: an opaque
	// string, larger for newer records, that is also the cursor of the
	// page that follows it. Ignored by AppendJournal.
	ID string
	// At is when the thing recorded happened, kept to the millisecond;
	// records are ordered by it (a record appended with an At before the
	// newest record's is placed just after that one). Required.
	At time.Time
	// Customer is the customer the record is about, or "" for none. A set
	// one follows ValidateCustomer's rule.
	Customer string
	// Type is what kind of record it is (a Stripe event type), 1 to
	// MaxIDLength bytes of printable ASCII without spaces or braces.
	Type string
	// Data is the record itself, at most MaxJournalData bytes; never
	// empty.
	Data []byte
}

// JournalQuery filters ReadJournal.
type JournalQuery struct {
	// Customer keeps only the records of this customer; "" keeps all.
	Customer string
	// Type keeps only the records of this type; "" keeps all.
	Type string
	// Before is the cursor: the Next of the previous page, "" for the
	// newest.
	Before string
	// Limit is the page size: 1 to MaxPageSize, 0 for DefaultPageSize.
	Limit int
}

// JournalPage is one page of the journal, newest first.
type JournalPage struct {
	Records []JournalRecord
	// Next is the cursor of the following (older) page, or "" on the last
	// page.
	Next string
}

// Journal bounds. Stripe keeps events for 30 days and reconciliation
// reaches that far back (https://docs.stripe.com/api/events/list), so the
// journal keeps a little longer: a support engineer can always see what
// tollgate did with an event Stripe still shows.
const (
	// JournalRetention is how long a record is kept.
	JournalRetention = 35 * 24 * time.Hour
	// DefaultJournalMaxRecords is how many records the journal keeps
	// when Options.JournalMaxRecords is zero: a month of about 3,000
	// Stripe events a day, at a few hundred bytes each (tens of MB at
	// most). Beyond it the oldest records go first.
	DefaultJournalMaxRecords = 100_000
	// MaxJournalData bounds a record's Data.
	MaxJournalData = 16 << 10
)

// journalID is a record's place: the millisecond of its At (or of the
// newest record's, when At was earlier) and a sequence number within it.
type journalID struct {
	ms  int64
	seq int64
}

// maxJournalSeq bounds the sequence number within one millisecond, so
// that every id has the same width and ids sort as strings.
const maxJournalSeq = 1e10 - 1

// String is the id as records carry it and cursors name it: fixed width,
// so that ids order as strings the way records do (Redis sorts the
// per-customer index by it).
func (id journalID) String() string { return fmt.Sprintf("%015d-%010d", id.ms, id.seq) }

// stream is the id in Redis stream form.
func (id journalID) stream() string {
	return strconv.FormatInt(id.ms, 10) + "-" + strconv.FormatInt(id.seq, 10)
}

// prev is the largest id below id, in Redis stream form, for an inclusive
// XREVRANGE end that excludes id itself (exclusive ranges need Redis 6.2).
func (id journalID) prev() string {
	if id.seq > 0 {
		return journalID{id.ms, id.seq - 1}.stream()
	}
	return strconv.FormatInt(id.ms-1, 10) + "-18446744073709551615"
}

// parseJournalID reads the id of a record or a cursor: String's form, or
// (from Redis) the stream form.
func parseJournalID(s string) (journalID, bool) {
	a, b, ok := strings.Cut(s, "-")
	if !ok || a == "" || b == "" || len(s) > 40 {
		return journalID{}, false
	}
	ms, err1 := strconv.ParseInt(a, 10, 64)
	seq, err2 := strconv.ParseInt(b, 10, 64)
	if err1 != nil || err2 != nil || ms < 0 || seq < 0 || seq > maxJournalSeq {
		return journalID{}, false
	}
	return journalID{ms, seq}, true
}

// nextJournalID is the id of a record at atMs appended after last (nil
// for an empty journal): at its own millisecond, unless the newest record
// is at that millisecond or later.
func nextJournalID(atMs int64, last *journalID) journalID {
	if last == nil || last.ms < atMs {
		return journalID{ms: atMs}
	}
	return journalID{ms: last.ms, seq: last.seq + 1}
}

// checkJournalRecord validates r for AppendJournal.
func checkJournalRecord(r JournalRecord, once string) error {
	if r.At.IsZero() || r.At.UnixMilli() < 0 {
		return fmt.Errorf("%w: journal record has no time", ErrInvalidArgument)
	}
	if r.Customer != "" {
		if err := checkCustomer(r.Customer); err != nil {
			return err
		}
	}
	if err := checkID("journal record type", r.Type); err != nil {
		return err
	}
	if once != "" {
		if err := checkID("journal once key", once); err != nil {
			return err
		}
	}
	if len(r.Data) == 0 || len(r.Data) > MaxJournalData {
		return fmt.Errorf("%w: journal record data is %d bytes; want 1 to %d", ErrInvalidArgument, len(r.Data), MaxJournalData)
	}
	return nil
}

// checkJournalQuery validates q and returns its page size and cursor (nil
// for the newest page).
func checkJournalQuery(q JournalQuery) (int, *journalID, error) {
	if q.Customer != "" {
		if err := checkCustomer(q.Customer); err != nil {
			return 0, nil, err
		}
	}
	if q.Type != "" {
		if err := checkID("journal record type", q.Type); err != nil {
			return 0, nil, err
		}
	}
	limit, err := checkLimit(q.Limit)
	if err != nil {
		return 0, nil, err
	}
	if q.Before == "" {
		return limit, nil, nil
	}
	id, ok := parseJournalID(q.Before)
	if !ok {
		return 0, nil, fmt.Errorf("%w: %q is not a journal cursor", ErrInvalidCursor, truncate(q.Before))
	}
	return limit, &id, nil
}

// journalCutoff is the millisecond before which records are forgotten.
func journalCutoff(now time.Time) int64 { return unixMilli(now.Add(-JournalRetention)) }
