package ledger

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tollgate-dev/tollgate/money"
)

// Lot is the balance of one positive credit: what is left of it, until
// when, and where it stands in burn order. Every positive credit creates
// one; charges and debits take from the active lots in burn order:
// Priority ascending, then ExpiresAt ascending (lots that never expire
// last), then oldest (lowest ID) first. A lot stops counting the moment
// it expires, on every read and write, and an expire entry records what
// it still held, so the entries still sum to the balance. A lot whose
// remaining credits reach zero is no longer active.
type Lot struct {
	// ID is the id of the entry of the credit that created the lot, so
	// ids grow with age. A balance kept before lots existed became lot
	// "0" when the store first met it (see MigratedLot).
	ID        string       `json:"id"`
	Kind      Kind         `json:"kind"`
	Amount    money.Micros `json:"amount"`    // what the credit added
	Remaining money.Micros `json:"remaining"` // what is left to spend
	Priority  int          `json:"priority"`
	// ExpiresAt is when the lot stops counting (to the millisecond); nil
	// means never.
	ExpiresAt *time.Time `json:"expires_at"`
	Reference string     `json:"reference,omitempty"`
	CreatedAt time.Time  `json:"created_at"`
}

// Lot priorities and limits.
const (
	// DefaultPriority is the priority of a lot whose credit set none.
	DefaultPriority = 50
	// MaxPriority is the largest priority; 0 is the smallest.
	MaxPriority = 100
	// MaxLots bounds what Lots returns, and the lots Account adds up
	// for NextExpiry.
	MaxLots = 1000
	// MaxExpiryMilli bounds Credit.ExpiresAt: it must be before this
	// many milliseconds after the Unix epoch (2^43-1, in the year 2248),
	// so that a lot's place in burn order fits one exact Redis score.
	MaxExpiryMilli = 1<<43 - 1
)

// MigratedLot is the id of the lot that holds a balance kept before the
// store knew lots: a store that meets such a balance (BoltStore when it
// opens the file, RedisStore when a script first loads the customer)
// turns a positive balance into this one never-expiring lot of kind
// KindAdjust, priority DefaultPriority and reference "migration", and a
// negative one into debt, once. No entry is written: the balance does not
// change.
//
// RedisStore also adopts what an older tollgate sharing the Redis (during
// a rolling upgrade) did to a balance since a script of this version last
// saw it: a drop is taken from the lots in burn order, as its charge or
// debit would have been; a rise repays debt and the rest becomes a lot
// like the migrated one, named after the latest entry. Older replicas
// neither spend lots nor expire them, so until the last of them is gone
// they may admit requests against credits that have expired.
const MigratedLot = "0"

// migrationReference is the reference of the MigratedLot.
const migrationReference = "migration"

// Both stores keep a lot as the same text, so that one decoder serves
// both (lua/lib.lua reads and writes it too):
//
//	<remaining> <amount> <priority> <expires_ms|0> <created_ms> <kind> <reference>
//
// reference comes last because it may contain spaces. The lot's id and
// customer are the key it is stored under.

// lotRecord is a lot as stored.
type lotRecord struct {
	remaining, amount int64
	priority          int
	expires           int64 // unix ms; 0 means never
	created           int64 // unix ms
	kind              Kind
	reference         string
}

// appendText appends the stored form of l to b: its numbers, kind and
// reference, separated by spaces.
func (l lotRecord) appendText(b []byte) []byte {
	b = slices.Grow(b, 5*20+len(l.kind)+len(l.reference)+6)
	for _, n := range [...]int64{l.remaining, l.amount, int64(l.priority), l.expires, l.created} {
		b = append(strconv.AppendInt(b, n, 10), ' ')
	}
	b = append(append(b, l.kind...), ' ')
	return append(b, l.reference...)
}

func parseLotRecord(s string) (lotRecord, error) {
	f := strings.SplitN(s, " ", 7)
	if len(f) != 7 {
		return lotRecord{}, fmt.Errorf("%w: lot %q", errCorrupt, truncate(s))
	}
	var n [5]int64
	for i := range n {
		v, err := strconv.ParseInt(f[i], 10, 64)
		if err != nil {
			return lotRecord{}, fmt.Errorf("%w: lot %q", errCorrupt, truncate(s))
		}
		n[i] = v
	}
	l := lotRecord{remaining: n[0], amount: n[1], priority: int(n[2]), expires: n[3], created: n[4], kind: Kind(f[5]), reference: f[6]}
	if l.remaining <= 0 || l.priority < 0 || l.priority > MaxPriority || l.expires < 0 || !l.kind.Valid() {
		return lotRecord{}, fmt.Errorf("%w: lot %q", errCorrupt, truncate(s))
	}
	return l, nil
}

// lot returns the Lot that l, stored under id, is.
func (l lotRecord) lot(id int64) Lot {
	lot := Lot{
		ID:        strconv.FormatInt(id, 10),
		Kind:      l.kind,
		Amount:    money.Micros(l.amount),
		Remaining: money.Micros(l.remaining),
		Priority:  l.priority,
		Reference: l.reference,
		CreatedAt: time.UnixMilli(l.created).UTC(),
	}
	if l.expires > 0 {
		at := time.UnixMilli(l.expires).UTC()
		lot.ExpiresAt = &at
	}
	return lot
}

// expireBody is the body of the entry that records the expiry of lot id,
// stored as l, at the given time. lua/lib.lua (expire_body) writes the
// same text.
func expireBody(id int64, l lotRecord, at time.Time) entryBody {
	return entryBody{Kind: KindExpire, Reference: l.reference, Lot: strconv.FormatInt(id, 10), At: at}
}

// creditResult is the CreditResult of entry e, applied now or before.
func creditResult(e Entry, applied bool) CreditResult {
	r := CreditResult{Entry: e, Applied: applied}
	if e.Amount > 0 {
		r.Lot = e.ID
	}
	return r
}

// lotParams are the lot settings of a Credit, as the stores take them.
type lotParams struct {
	expires  int64 // unix ms, 0 for never
	priority int
	from     int64 // the lot to take from first, or -1
}

// creditLot returns c's lot settings. c has passed checkCredit.
func creditLot(c Credit) lotParams {
	p := lotParams{priority: DefaultPriority, from: -1}
	if !c.ExpiresAt.IsZero() {
		p.expires = c.ExpiresAt.UnixMilli()
	}
	if c.Priority != nil {
		p.priority = *c.Priority
	}
	if c.FromLot != "" {
		p.from, _ = strconv.ParseInt(c.FromLot, 10, 64)
	}
	return p
}

// checkLot validates the lot fields of a Credit whose amount has been
// checked.
func checkLot(c Credit) error {
	if c.Amount < 0 && (!c.ExpiresAt.IsZero() || c.Priority != nil) {
		return fmt.Errorf("%w: a debit of %s creates no lot; expires_at and priority apply to positive credits only", ErrInvalidArgument, c.Amount)
	}
	if c.Amount > 0 && c.FromLot != "" {
		return fmt.Errorf("%w: from lot %q applies to debits only; a credit of %s creates a lot", ErrInvalidArgument, truncate(c.FromLot), c.Amount)
	}
	if !c.ExpiresAt.IsZero() {
		if ms := c.ExpiresAt.UnixMilli(); ms <= 0 || ms >= MaxExpiryMilli {
			return fmt.Errorf("%w: expiry %s is out of range; want a time after 1970-01-01 and before %s, or none", ErrInvalidArgument,
				c.ExpiresAt.UTC().Format(time.RFC3339), time.UnixMilli(MaxExpiryMilli).UTC().Format(time.RFC3339))
		}
	}
	if c.Priority != nil && (*c.Priority < 0 || *c.Priority > MaxPriority) {
		return fmt.Errorf("%w: priority %d is out of range; want 0 (spent first) to %d, or none for %d", ErrInvalidArgument, *c.Priority, MaxPriority, DefaultPriority)
	}
	if c.FromLot != "" {
		if _, err := ParseLotID(c.FromLot); err != nil {
			return err
		}
	}
	return nil
}

// ParseLotID checks a lot id (a Lot's ID, or the Lot of a CreditResult):
// the decimal id of an entry, or MigratedLot. Errors match
// ErrInvalidArgument.
func ParseLotID(id string) (int64, error) {
	n, err := strconv.ParseInt(id, 10, 64)
	if err != nil || n < 0 || n > int64(MaxAmount) || strconv.FormatInt(n, 10) != id {
		return 0, fmt.Errorf("%w: lot id %q; want the decimal id of the entry that created the lot", ErrInvalidArgument, truncate(id))
	}
	return n, nil
}
