package ledger

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/tollgate-dev/tollgate/money"
	"github.com/tollgate-dev/tollgate/usage"
)

// Both stores keep an entry as the same text, so that one decoder serves
// both and the Lua scripts can write an entry without a JSON library that
// would round large numbers (Redis's cjson prints numbers with 14 digits):
//
//	<amount> <balance_after> <body>
//
// amount and balance_after are decimal micro-credits computed by the store
// inside its transaction; body is the JSON of entryBody, built in Go before
// the transaction. The entry's id (its per-customer sequence number) and
// customer are the key it is stored under.

// entryBody is the part of an Entry known before the store applies it.
type entryBody struct {
	Kind      Kind      `json:"kind"`
	Reference string    `json:"reference,omitempty"`
	Reason    string    `json:"reason,omitempty"`
	Lot       string    `json:"lot,omitempty"`
	At        time.Time `json:"at"`
	Route     string    `json:"route,omitempty"`
	Model     string    `json:"model,omitempty"`
	usage.Tokens
}

// chargeBody is the body of the charge entry a Settle at now appends.
func chargeBody(c Charge, now time.Time) entryBody {
	return entryBody{
		Kind:      KindCharge,
		Reference: c.Reference,
		At:        entryTime(now),
		Route:     c.Route,
		Model:     c.Model,
		Tokens:    c.Tokens,
	}
}

// creditBody is the body of the entry a Credit at now appends.
func creditBody(c Credit, now time.Time) entryBody {
	return entryBody{Kind: c.Kind, Reference: c.Reference, Reason: c.Reason, At: entryTime(now)}
}

// entryTime is the timestamp an entry records: UTC, without the monotonic
// reading, to the microsecond.
func entryTime(now time.Time) time.Time { return now.UTC().Round(0).Truncate(time.Microsecond) }

// json returns the stored form of b: its JSON, with the fields and
// omissions of the struct tags above. It is written by hand because
// encoding/json's reflection was a tenth of the client CPU of a Settle;
// FuzzEntryBodyJSON checks that both decode to the same body.
func (b entryBody) json() string {
	buf := make([]byte, 0, 160+len(b.Reference)+len(b.Reason)+len(b.Route)+len(b.Model))
	buf = append(buf, `{"kind":`...)
	buf = appendJSONString(buf, string(b.Kind))
	field := func(name, v string) {
		if v != "" {
			buf = append(buf, `,"`...)
			buf = append(buf, name...)
			buf = append(buf, `":`...)
			buf = appendJSONString(buf, v)
		}
	}
	count := func(name string, v int64) {
		if v != 0 {
			buf = append(buf, `,"`...)
			buf = append(buf, name...)
			buf = append(buf, `":`...)
			buf = strconv.AppendInt(buf, v, 10)
		}
	}
	field("reference", b.Reference)
	field("reason", b.Reason)
	field("lot", b.Lot)
	buf = append(buf, `,"at":"`...)
	buf = b.At.AppendFormat(buf, time.RFC3339Nano)
	buf = append(buf, '"')
	field("route", b.Route)
	field("model", b.Model)
	for name, n := range b.TokenCounts() {
		count(name, n)
	}
	buf = append(buf, '}')
	return string(buf)
}

// appendJSONString appends s as a JSON string, escaping what JSON
// requires and replacing invalid UTF-8 with U+FFFD, as encoding/json does.
func appendJSONString(buf []byte, s string) []byte {
	const hex = "0123456789abcdef"
	buf = append(buf, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			buf = append(buf, s[start:i]...)
			switch c {
			case '"', '\\':
				buf = append(buf, '\\', c)
			case '\n':
				buf = append(buf, '\\', 'n')
			case '\r':
				buf = append(buf, '\\', 'r')
			case '\t':
				buf = append(buf, '\\', 't')
			default:
				buf = append(buf, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			buf = append(buf, s[start:i]...)
			buf = append(buf, `\ufffd`...)
			i += size
			start = i
			continue
		}
		i += size
	}
	buf = append(buf, s[start:]...)
	return append(buf, '"')
}

// entry returns the Entry that b, stored as customer's entry seq with
// amount and balanceAfter, decodes to. A store that has just written an
// entry builds it this way instead of decoding the text it wrote.
func (b entryBody) entry(customer string, seq int64, amount, balanceAfter money.Micros) Entry {
	return Entry{
		ID:           strconv.FormatInt(seq, 10),
		Customer:     customer,
		Kind:         b.Kind,
		Amount:       amount,
		BalanceAfter: balanceAfter,
		Reference:    b.Reference,
		Reason:       b.Reason,
		Lot:          b.Lot,
		At:           b.At,
		Route:        b.Route,
		Model:        b.Model,
		Tokens:       b.Tokens,
	}
}

// unrecorded is the Entry a Settle returns for a free hold it had nothing
// to record for (see Store.Settle): the charge body with no ID, amount
// zero, and the balance as it stands.
func unrecorded(b entryBody, customer string, balance money.Micros) Entry {
	e := b.entry(customer, 0, 0, balance)
	e.ID = ""
	return e
}

// formatEntry returns the stored text of an entry.
func formatEntry(amount, balanceAfter money.Micros, body string) string {
	return strconv.FormatInt(int64(amount), 10) + " " + strconv.FormatInt(int64(balanceAfter), 10) + " " + body
}

// errCorrupt reports stored data or a script reply the decoder does not
// understand. It is never expected; it means a bug or a foreign writer.
var errCorrupt = errors.New("ledger: unexpected stored data")

// decodeEntry turns the stored text of customer's entry seq into an Entry.
func decodeEntry(customer string, seq int64, raw string) (Entry, error) {
	bad := func(why string) (Entry, error) {
		return Entry{}, fmt.Errorf("%w: entry %d of %s: %s", errCorrupt, seq, customer, why)
	}
	amountText, rest, ok := strings.Cut(raw, " ")
	if !ok {
		return bad("no amount")
	}
	balanceText, body, ok := strings.Cut(rest, " ")
	if !ok {
		return bad("no balance")
	}
	amount, err := strconv.ParseInt(amountText, 10, 64)
	if err != nil {
		return bad("amount " + strconv.Quote(amountText))
	}
	balance, err := strconv.ParseInt(balanceText, 10, 64)
	if err != nil {
		return bad("balance " + strconv.Quote(balanceText))
	}
	var b entryBody
	if err := json.Unmarshal([]byte(body), &b); err != nil {
		return bad(err.Error())
	}
	return b.entry(customer, seq, money.Micros(amount), money.Micros(balance)), nil
}

// A cursor names the entry a page ended with: entries strictly older
// (smaller sequence numbers) come next. It carries the customer so that a
// cursor cannot be replayed against another customer's ledger, and is
// base64url so that it travels in a query string unescaped. Clients must
// treat it as opaque.

func encodeCursor(customer string, seq int64) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(seq, 10) + ":" + customer))
}

// decodeCursor returns the sequence number in cursor, which must belong
// to customer. The empty cursor is 0, meaning "from the newest".
func decodeCursor(customer, cursor string) (int64, error) {
	if cursor == "" {
		return 0, nil
	}
	bad := fmt.Errorf("%w: %q is not a cursor of %s's ledger; pass the \"next\" value of the previous page, or nothing for the first page", ErrInvalidCursor, truncate(cursor), customer)
	raw, err := base64.RawURLEncoding.DecodeString(cursor)
	if err != nil {
		return 0, bad
	}
	seqText, owner, ok := strings.Cut(string(raw), ":")
	if !ok || owner != customer {
		return 0, bad
	}
	seq, err := strconv.ParseInt(seqText, 10, 64)
	if err != nil || seq < 1 {
		return 0, bad
	}
	// Only the spelling encodeCursor writes is a cursor: base64 decoding
	// also accepts the same bytes with padding bits set or line breaks
	// inserted, and a leading zero or sign would parse to the same seq.
	if encodeCursor(customer, seq) != cursor {
		return 0, bad
	}
	return seq, nil
}

// pageSeqs returns the sequence numbers of the page that starts before
// cursor seq before (0: after the newest, last) and holds at most limit
// entries, newest first, and the cursor of the following page ("" when the
// page reaches entry 1). Entry sequence numbers are dense, 1 to last.
func pageSeqs(customer string, last, before int64, limit int) ([]int64, string) {
	top := last
	if before > 0 && before-1 < top {
		top = before - 1
	}
	var seqs []int64
	for seq := top; seq >= 1 && len(seqs) < limit; seq-- {
		seqs = append(seqs, seq)
	}
	next := ""
	if n := len(seqs); n > 0 && seqs[n-1] > 1 {
		next = encodeCursor(customer, seqs[n-1])
	}
	return seqs, next
}

// Credit idempotency records, kept per customer and key, have the same
// text in both stores:
//
//	<mode> <total> <seq> <kind>
//
// mode is "o" (one-off) or "c" (cumulative), total the signed amount the
// key has applied so far, seq the entry it last wrote, kind its kind.

type creditRecord struct {
	cumulative bool
	total      money.Micros
	seq        int64
	kind       Kind
}

func (r creditRecord) String() string {
	mode := "o"
	if r.cumulative {
		mode = "c"
	}
	return fmt.Sprintf("%s %d %d %s", mode, r.total, r.seq, r.kind)
}

func parseCreditRecord(s string) (creditRecord, error) {
	f := strings.Split(s, " ")
	if len(f) != 4 || (f[0] != "o" && f[0] != "c") {
		return creditRecord{}, fmt.Errorf("%w: credit record %q", errCorrupt, s)
	}
	total, err1 := strconv.ParseInt(f[1], 10, 64)
	seq, err2 := strconv.ParseInt(f[2], 10, 64)
	if err1 != nil || err2 != nil {
		return creditRecord{}, fmt.Errorf("%w: credit record %q", errCorrupt, s)
	}
	return creditRecord{cumulative: f[0] == "c", total: money.Micros(total), seq: seq, kind: Kind(f[3])}, nil
}

// creditDecision is what a Credit does given the key's record.
type creditDecision int

const (
	creditApply    creditDecision = iota // apply delta and write the record
	creditReplay                         // nothing to do; return the record's entry
	creditConflict                       // ErrIdempotencyConflict
)

// decideCredit is the idempotency rule of Credit, which credit.lua
// implements too: a new key applies c.Amount; a one-off key replays when
// the amount and kind match and conflicts otherwise; a cumulative key
// applies the part of c.Amount beyond what it applied so far, replays when
// it applied as much or more, and conflicts on a change of sign, kind or
// mode.
func decideCredit(rec *creditRecord, c Credit) (creditDecision, money.Micros) {
	if rec == nil {
		return creditApply, c.Amount
	}
	if rec.cumulative != c.Cumulative || rec.kind != c.Kind {
		return creditConflict, 0
	}
	if !c.Cumulative {
		if rec.total != c.Amount {
			return creditConflict, 0
		}
		return creditReplay, 0
	}
	if (rec.total < 0) != (c.Amount < 0) {
		return creditConflict, 0
	}
	if abs(c.Amount) <= abs(rec.total) {
		return creditReplay, 0
	}
	return creditApply, c.Amount - rec.total
}

func abs(m money.Micros) money.Micros {
	if m < 0 {
		return -m
	}
	return m
}

func conflictError(c Credit) error {
	return fmt.Errorf("%w: key %q of %s was applied with another amount, kind or mode than %s %s", ErrIdempotencyConflict, c.Key, c.Customer, c.Amount, c.Kind)
}

// holdState is how a closed hold ended. Both stores remember it, as the
// same letter, until the hold's retention ends: lua/lib.lua in the holds
// hash ("<state> <forget_at_ms>[ <seq>]"), BoltStore as the first byte of
// the hold's record in the closed bucket.
type holdState byte

const (
	// holdExpired: its ttl passed while it was live. A late Settle still
	// charges it (the usage happened); Release closes it as released.
	holdExpired holdState = 'e'
	// holdReleased: Release closed it without charging.
	holdReleased holdState = 'r'
	// holdSettled: Settle charged it, by the entry recorded with it.
	holdSettled holdState = 's'
)

// extendError is Extend's answer for a hold that is not live: closed in
// state, or unknown when !ok.
func extendError(holdID, customer string, state holdState, ok bool) error {
	why := ErrHoldNotFound
	switch {
	case !ok:
	case state == holdExpired:
		why = ErrHoldExpired
	case state == holdReleased:
		why = ErrHoldReleased
	case state == holdSettled:
		why = ErrHoldSettled
	default:
		return fmt.Errorf("extend %s of %s: %w: hold state %q", holdID, customer, errCorrupt, state)
	}
	return fmt.Errorf("extend %s of %s: %w", holdID, customer, why)
}
