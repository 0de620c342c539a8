// Package ledger holds customers' credit balances, the holds reserved against
// them, and the append-only list of entries that explains every change.
//
// Store is the contract; RedisStore (several replicas share one Redis or Redis
// Cluster) and BoltStore (one process, one file) implement it with identical
// behaviour, proven by one conformance suite. The package knows nothing about
// HTTP, prices or Stripe: callers say how much to reserve, charge or credit.
package ledger

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/tollgate-dev/tollgate/money"
	"github.com/tollgate-dev/tollgate/usage"
)

// Kind says why an entry changed a balance.
type Kind string

// The kinds of entry. Charge entries are written by Settle, expire entries
// by the store itself when a lot expires; every other kind by Credit.
const (
	KindTopup  Kind = "topup"  // credits bought (a Stripe one-off purchase)
	KindGrant  Kind = "grant"  // credits given (subscription allowance, admin grant)
	KindAdjust Kind = "adjust" // manual correction, either sign
	KindCharge Kind = "charge" // metered usage
	KindRefund Kind = "refund" // credits clawed back after a refund or lost dispute
	KindExpire Kind = "expire" // what was left of a lot when it expired
)

// Valid reports whether k is one of the kinds above.
func (k Kind) Valid() bool {
	switch k {
	case KindTopup, KindGrant, KindAdjust, KindCharge, KindRefund, KindExpire:
		return true
	}
	return false
}

// Account is a customer's position. Available is Balance minus Reserved, where
// Reserved counts only holds that have not expired at the time of the read,
// and Balance only lots that have not expired (see Lot).
// A customer the store has never seen reads as all zeros.
type Account struct {
	Customer string `json:"customer"`
	// Balance is the sum of the remaining credits of the customer's
	// active lots, less Debt.
	Balance   money.Micros `json:"balance"`
	Reserved  money.Micros `json:"reserved"`
	Available money.Micros `json:"available"`
	// Debt is what charges and debits took beyond every lot: the next
	// credit repays it first. A customer has debt or active lots, never
	// both, so Debt is -Balance when Balance is negative and 0 otherwise.
	Debt money.Micros `json:"debt"`
	// NextExpiry is what expires next: the remaining credits of the
	// active lots with the earliest expiry (at most MaxLots of them), and
	// that time; nil when no active lot expires.
	NextExpiry *Expiry `json:"next_expiry"`
	// Suspended is true while at least one suspension reason (an open
	// Stripe dispute) is in force; Reserve refuses the customer meanwhile.
	Suspended bool `json:"suspended"`
}

// Expiry is an amount of credits that stops counting at a time.
type Expiry struct {
	Amount money.Micros `json:"amount"`
	At     time.Time    `json:"at"`
}

// Entry is one change of one customer's balance. Entries are never edited;
// the sum of a customer's entry amounts equals its balance.
type Entry struct {
	// ID identifies the entry within its customer's ledger. IDs grow with
	// every entry, so newer entries have larger IDs: both stores number a
	// customer's entries 1, 2, 3, … in decimal, with no gaps.
	ID           string       `json:"id"`
	Customer     string       `json:"customer"`
	Kind         Kind         `json:"kind"`
	Amount       money.Micros `json:"amount"` // signed: charges are negative
	BalanceAfter money.Micros `json:"balance_after"`
	// Reference names the business object behind the change: the request
	// id of a charge, the Stripe object of a top-up, the idempotency key of
	// an admin credit.
	Reference string `json:"reference,omitempty"`
	Reason    string `json:"reason,omitempty"`
	// Lot is, on an expire entry, the id of the lot that expired.
	Lot string    `json:"lot,omitempty"`
	At  time.Time `json:"at"`

	// Charge entries only.
	Route string `json:"route,omitempty"`
	Model string `json:"model,omitempty"`
	// Tokens are the charge's token counts, in their own JSON fields
	// (input_tokens, …), zeros left out.
	usage.Tokens
}

// Charge describes the usage a Settle pays for; it is copied into the
// charge entry. Its text fields come from the request, so they never make
// a Settle fail: each byte that is not UTF-8 is stored as U+FFFD, and text
// longer than MaxTextLength is cut. The Entry a Settle returns holds the
// text as stored.
type Charge struct {
	Reference string // the request id
	Route     string
	Model     string
	usage.Tokens
}

// Credit is a signed change of a balance that is not usage: a top-up, a
// grant, an adjustment or a refund. A positive credit first repays debt
// and puts the rest in a new lot (see Lot); a negative one takes from the
// lots in burn order (FromLot first) and turns what they lack into debt.
type Credit struct {
	Customer string
	// Amount is added to the balance; negative debits. Zero is invalid.
	Amount money.Micros
	// Kind is any kind but KindCharge.
	Kind Kind
	// Key makes the credit idempotent: a key already applied for this
	// customer changes nothing, however often and however concurrently it
	// is retried. Keys are scoped to the customer and never forgotten.
	// Required: 1 to MaxIDLength bytes of printable ASCII without spaces or
	// braces (the checkout session, invoice or payment intent id, or the
	// admin API's idempotency_key). A replay must also repeat Kind and
	// Cumulative; changing them is ErrIdempotencyConflict.
	Key string
	// Reference and Reason are copied into the entry; each is at most
	// MaxTextLength bytes of UTF-8.
	Reference string
	Reason    string
	// Cumulative makes Amount the running total for Key instead of a
	// one-off change: the store applies only the part of Amount that Key
	// has not applied yet, and nothing when Key has already applied as
	// much (same sign) or more. This is how a cumulative figure such as
	// Stripe's amount_refunded stays correct under replays and late or
	// reordered events. Without Cumulative, reusing Key with a different
	// Amount is ErrIdempotencyConflict.
	Cumulative bool

	// ExpiresAt is when the lot of a positive credit expires, kept to the
	// millisecond (rounded down); zero means never. A time at or before
	// the store's now records the credit and expires it at once (an
	// expire entry follows the credit's entry): nothing becomes
	// spendable, and debt is not repaid with it. Otherwise it must be
	// before MaxExpiryMilli (in the year 2248). Only for positive amounts.
	ExpiresAt time.Time
	// Priority places the lot of a positive credit in burn order, 0
	// (spent first) to MaxPriority; nil means DefaultPriority. Only for
	// positive amounts.
	Priority *int
	// FromLot names the lot a negative credit takes from first (a refund
	// claws back from the lot its payment created: that credit's
	// CreditResult.Lot); the rest comes from the other lots in burn order.
	// A lot no longer active is skipped. Empty for burn order alone; only
	// for negative amounts.
	FromLot string
}

// CreditResult is what a Credit did.
type CreditResult struct {
	// Entry is the entry the key produced: the new one, or on a replay the
	// one the first application wrote (for Cumulative, the latest one).
	Entry Entry
	// Applied is false when the key had already been applied and nothing
	// changed.
	Applied bool
	// Lot is the id of the lot a positive Entry created (its entry id),
	// for a later Credit.FromLot; "" for a debit. The lot may be spent,
	// expired or (when the credit only repaid debt, or came expired)
	// never have been active.
	Lot string
}

// Page is one page of a customer's entries, newest first.
type Page struct {
	Entries []Entry
	// Next is the opaque cursor for the following (older) page, or "" on
	// the last page.
	Next string
}

// Store is a credit ledger. All methods are safe for concurrent use, from
// one process or from many sharing the same backend, and every method that
// changes state is atomic: it happens entirely or not at all.
//
// Any method may fail with an error matching ErrStoreUnavailable when the
// backend cannot be reached; callers must then assume nothing happened
// (fail closed) and may retry, since every mutation is idempotent.
type Store interface {
	// Reserve puts a hold of amount on customer's credits, identified by
	// holdID, for at most ttl. It succeeds only if the customer's available
	// credits are at least amount; otherwise it returns an
	// *InsufficientCreditsError (matching ErrInsufficientCredits). Two
	// concurrent reservations never spend the same credit. It returns
	// ErrCustomerSuspended while the customer is suspended and
	// ErrDuplicateHold if holdID was used before (and is still
	// remembered; see Options.Retention). amount may be zero: a free
	// request still needs a customer that is not suspended and not below
	// zero. A zero hold for a customer without entries (one the store
	// has never credited or charged) is allowed but not stored, so that
	// free requests naming arbitrary customer ids create nothing; Settle
	// of it at zero then writes nothing either. ttl is 1ms to MaxHoldTTL,
	// kept to the millisecond.
	Reserve(ctx context.Context, customer, holdID string, amount money.Micros, ttl time.Duration) error

	// ReserveAvailable is Reserve, which also returns the customer's
	// available credits right after the hold was taken (this hold
	// deducted), read in the same atomic operation: what the proxy tells
	// the client without another store call. On a free hold Reserve does
	// not store it is the available credits as they stand; on a Redis
	// attempt resent after a lost reply, those of the moment of the
	// resend.
	ReserveAvailable(ctx context.Context, customer, holdID string, amount money.Micros, ttl time.Duration) (money.Micros, error)
	// ReservePlan is ReserveAvailable for a caller that priced and allowed the
	// request by the customer's plan inputs at version planVersion
	// (PlanState.Version, or PlanUnknown): in the same atomic step it
	// checks that the stored version is still that one, and otherwise
	// reserves nothing and returns a *PlanChangedError (matching
	// ErrPlanChanged) carrying the stored state. So no hold is taken
	// under plan inputs older than a write that has returned. The check
	// comes after the hold id's own checks (a resent call finds its
	// hold) and before suspension and credits.
	ReservePlan(ctx context.Context, customer, holdID string, amount money.Micros, ttl time.Duration, planVersion int64) (money.Micros, error)

	// Plan reads the customer's plan inputs; a customer never written
	// reads as the zero PlanState.
	Plan(ctx context.Context, customer string) (PlanState, error)

	// PutSubscription stores value as the customer's subscription state
	// unless the stored one was written with a larger order ("never an
	// older state over a newer one"): then nothing changes and Stale is
	// set. An equal order applies (the later call wins). It bumps Version
	// only when value differs from the stored value; a replay changes
	// nothing. value is 1 to MaxPlanValue bytes of UTF-8, order 0 to
	// MaxAmount.
	PutSubscription(ctx context.Context, customer, value string, order int64) (PlanWrite, error)

	// PutOverride stores value as the customer's override, or removes it
	// when value is "". It bumps Version only when that changes the
	// stored value.
	PutOverride(ctx context.Context, customer, value string) (PlanWrite, error)

	// Settle closes a hold by charging actual: the hold stops counting,
	// actual is debited (taken from the customer's lots in burn order;
	// what they lack becomes debt), and a charge entry is appended, all
	// at once.
	// actual may exceed the hold (the usage already happened); the balance
	// may then go below zero and the next Reserve is refused. Settling a
	// hold that expired still charges. Settle is idempotent per hold: a
	// repeat returns the entry of the first settlement and changes nothing.
	// It returns ErrHoldReleased if the hold was released (or its id was,
	// see Release) and ErrHoldNotFound if holdID was never reserved for
	// customer (or was closed longer ago than the store's retention). A
	// charge that would take the balance below -MaxAmount is
	// ErrInvalidAmount and leaves the hold open. Settling a stored hold
	// always appends an entry, even for actual zero, so that the
	// request's tokens are on record. Settling at
	// zero a hold the store does not have (the free hold Reserve does not
	// store for a customer without entries, or one closed longer ago than
	// the retention) writes nothing and returns the charge unrecorded: an
	// Entry with an empty ID, amount zero and the balance as it stands.
	// The balance still equals the sum of the entries.
	Settle(ctx context.Context, customer, holdID string, actual money.Micros, c Charge) (Entry, error)

	// Extend renews a live hold while its request is still open: the hold
	// then expires no earlier than ttl from now (a renewal never shortens
	// it, so a late or repeated call is harmless, and Extend is
	// idempotent). A hold that is no longer live is an error saying why:
	// ErrHoldExpired (it expired before the renewal; it stopped counting
	// and a Settle still charges it), ErrHoldReleased, ErrHoldSettled, or
	// ErrHoldNotFound for a hold never reserved for customer (a free hold
	// Reserve did not store included) or forgotten. Such a failure changes
	// nothing. ttl is 1ms to MaxHoldTTL.
	Extend(ctx context.Context, customer, holdID string, ttl time.Duration) error

	// Release closes a hold without charging. It is idempotent and returns
	// nil for a hold that is already released, settled (the charge stands),
	// expired or unknown. Releasing an expired hold marks it released, so
	// that a later Settle of it returns ErrHoldReleased. An unknown id of
	// a customer with entries is marked released all the same, so that a
	// Reserve of it that arrives afterwards (one whose answer the caller
	// never got, still on its way) is refused with ErrDuplicateHold
	// instead of holding credits nobody releases until the hold expires.
	Release(ctx context.Context, customer, holdID string) error

	// Credit applies c atomically with its idempotency check; see Credit.
	// It returns ErrIdempotencyConflict when c.Key was applied with a
	// different amount (or sign, for Cumulative), and ErrInvalidAmount
	// when the balance would leave ±MaxAmount. Suspension does not stop
	// credits.
	Credit(ctx context.Context, c Credit) (CreditResult, error)

	// Account reads a customer's balance, live holds, next expiry and
	// suspension.
	Account(ctx context.Context, customer string) (Account, error)

	// Lots lists a customer's active lots in burn order, at most
	// MaxLots of them (the first MaxLots to be spent).
	Lots(ctx context.Context, customer string) ([]Lot, error)

	// Entries lists a customer's entries newest first, at most limit
	// (1 to MaxPageSize; 0 means DefaultPageSize), starting after the
	// cursor before ("" for the newest). A cursor from another customer or
	// a malformed one is ErrInvalidCursor. Like every read it first
	// records the expiry of lots that are due, so the entries always sum
	// to the balance Account reports.
	Entries(ctx context.Context, customer, before string, limit int) (Page, error)

	// Suspend suspends customer for reason (for example a Stripe dispute
	// id) until Lift is called with the same reason. It is idempotent, and
	// a reason that was lifted stays lifted: a late or reordered Suspend
	// cannot re-suspend.
	Suspend(ctx context.Context, customer, reason string) error

	// Lift ends the suspension reason; the customer is served again once
	// no reason remains. Lifting an unknown reason records it as lifted.
	Lift(ctx context.Context, customer, reason string) error

	// Sweep removes expired holds of every customer, expires their due
	// lots (writing the expire entries) and forgets closed holds older
	// than the retention, returning how many holds it expired (holds that
	// another call had already found expired are not counted). Every
	// other call already ignores expired holds and expires due lots
	// first; Sweep keeps the stored state small, "reserved" true and the
	// expire entries on time for customers without traffic. Run it
	// periodically.
	Sweep(ctx context.Context) (int, error)

	// Ping checks that the backend answers.
	Ping(ctx context.Context) error

	// Ready reports whether the store can be trusted with the next
	// request's money, for readiness probes: nil, or an error that says
	// what is wrong and what to do. It fails, matching
	// ErrStoreUnavailable, while the backend does not answer and while
	// writes fail (a full disk, Redis out of memory): after a write that
	// the store could not take, Ready writes a small probe and passes
	// again once one succeeds. On Redis it also fails when a node's
	// maxmemory-policy may evict keys (*EvictionPolicyError, matching
	// ErrUnsafeStore) and when Redis lost its data (*DataLostError,
	// matching ErrDataLost); see RedisStore.Ready. It honours ctx's
	// deadline and does no work on behalf of other calls.
	Ready(ctx context.Context) error

	// Close releases the backend. The store must not be used afterwards.
	Close() error
}

// SettleQueuer is implemented by a store that can take a settlement
// without its caller waiting for it: LeaseStore, for a hold its replica
// lent, whose charge reaches Redis with the lease's next sync, and
// BoltStore, for a live hold, whose charge joins the next commit. A
// caller that settles many requests saves a goroutine, a context and a
// timer per request by using it.
type SettleQueuer interface {
	// QueueSettle is Settle without the wait. It returns false, having
	// done nothing, when the store cannot queue this settlement; the
	// caller then calls Settle. Otherwise it queues the charge and done
	// runs exactly once with what Settle would return: when the charge is
	// recorded, or when the store could not record it (a failed sync or
	// commit, the store closing). After such an error a Settle of the
	// same hold returns its outcome, recording the charge at most once,
	// so that a caller retries as it would retry Settle; while the store
	// still holds the charge queued (a lease's, until a sync succeeds),
	// a Settle its context cuts short returns ErrSettleQueued. done runs
	// on a goroutine of the store's or of another of its callers,
	// possibly holding a lock of the customer's: it must return promptly
	// and must not call the store.
	QueueSettle(customer, holdID string, actual money.Micros, c Charge, done func(Entry, error)) bool
}

// Meta is a small durable key-value map and a lock service beside the
// ledger, for facts that are not money but must survive restarts and be
// shared by replicas (which tollgate customer a Stripe customer belongs to,
// which top-up a payment intent paid for) and for jobs only one replica may
// run at a time (reconciliation). RedisStore and BoltStore implement it.
type Meta interface {
	// PutMeta stores value under key, replacing any previous value.
	PutMeta(ctx context.Context, key, value string) error
	// PutMetaIfAbsent stores value under key only if key has no value
	// yet, atomically: of concurrent writers exactly one stores, and each
	// gets back the value that stands (its own when stored is true). It
	// binds a business object to one answer, such as the customer a
	// Stripe invoice credits, however many replicas apply it at once.
	PutMetaIfAbsent(ctx context.Context, key, value string) (current string, stored bool, err error)
	// GetMeta returns the value under key, and false if there is none.
	GetMeta(ctx context.Context, key string) (string, bool, error)
	// TryLock takes the lock name for ttl if no one holds it, returning a
	// token for Unlock, or ok false if it is held.
	TryLock(ctx context.Context, name string, ttl time.Duration) (token string, ok bool, err error)
	// Unlock releases the lock if token still holds it.
	Unlock(ctx context.Context, name, token string) error
}

// Page sizes for Entries.
const (
	DefaultPageSize = 50
	MaxPageSize     = 1000
)

// MaxAmount bounds every amount a store accepts and every balance it holds:
// 2^53-1 micro-credits (about 9 billion credits), the largest integer that
// Redis's Lua numbers carry exactly. Larger amounts are ErrInvalidAmount.
const MaxAmount money.Micros = 1<<53 - 1

// Sentinel errors. Match them with errors.Is.
var (
	ErrInsufficientCredits = errors.New("ledger: insufficient credits")
	ErrCustomerSuspended   = errors.New("ledger: customer suspended")
	ErrDuplicateHold       = errors.New("ledger: hold id already used")
	ErrHoldNotFound        = errors.New("ledger: hold not found")
	ErrHoldReleased        = errors.New("ledger: hold was released")
	ErrHoldSettled         = errors.New("ledger: hold was settled")
	ErrHoldExpired         = errors.New("ledger: hold expired")
	ErrIdempotencyConflict = errors.New("ledger: idempotency key already used with a different amount")
	ErrInvalidCustomer     = errors.New("ledger: invalid customer id")
	ErrInvalidAmount       = errors.New("ledger: invalid amount")
	ErrInvalidArgument     = errors.New("ledger: invalid argument")
	ErrInvalidCursor       = errors.New("ledger: invalid cursor")
	ErrStoreUnavailable    = errors.New("ledger: store unavailable")
	ErrStoreLocked         = errors.New("ledger: store file in use by another process")
	// ErrSettleQueued: Settle returned before the charge was recorded,
	// and the store still holds it queued, to be sent once the store can
	// reach its backend (LeaseStore: with the lease's next sync that
	// succeeds, while syncs fail for want of Redis). The store records
	// it, or logs it with the command to apply it by hand should it
	// close first; only a crash of the process loses it unannounced.
	// Retrying Settle returns its outcome.
	ErrSettleQueued = errors.New("ledger: charge queued in the store, not recorded yet")
)

// InsufficientCreditsError is returned by Reserve when the customer's
// available credits are below the amount asked for. It matches
// ErrInsufficientCredits.
type InsufficientCreditsError struct {
	Customer string
	// Available is the customer's available credits: Balance minus
	// Reserved.
	Available money.Micros
	// Required is the amount Reserve asked for.
	Required money.Micros
	// Reserved is the sum of the customer's other live holds at the time
	// of the refusal, so that Available+Reserved is the balance.
	Reserved money.Micros
	// Lent is the part of Reserved that replicas' leases hold and no
	// request uses (LeaseStore); 0 on the embedded store.
	Lent money.Micros
}

func (e *InsufficientCreditsError) Error() string {
	return fmt.Sprintf("ledger: insufficient credits for %s: %s available, %s required", e.Customer, e.Available, e.Required)
}

// Unwrap returns ErrInsufficientCredits.
func (e *InsufficientCreditsError) Unwrap() error { return ErrInsufficientCredits }

// HeldBack reports whether the balance alone would cover Required, so that
// only the customer's other live holds stand in the way: once the
// requests behind them settle for less than they hold, or are released,
// the same Reserve may succeed.
func (e *InsufficientCreditsError) HeldBack() bool {
	return e.Reserved > 0 && e.Available+e.Reserved >= e.Required
}

// MaxIDLength bounds customer ids, hold ids, idempotency keys, suspension
// reasons and meta keys.
const MaxIDLength = 200

// InvalidCustomerError is returned for a customer id that breaks
// ValidateCustomer's rule. It matches ErrInvalidCustomer.
type InvalidCustomerError struct {
	// ID is the id as given.
	ID string
	// Problem says what is wrong with ID and what is allowed, e.g. "is
	// empty".
	Problem string
}

func (e *InvalidCustomerError) Error() string {
	return ErrInvalidCustomer.Error() + ": " + e.Detail()
}

// Detail is the message without the sentinel's text, for callers that
// say in their own words where the id came from: the id, quoted and cut
// to 40 bytes, and the problem.
func (e *InvalidCustomerError) Detail() string {
	return fmt.Sprintf("%q %s", truncate(e.ID), e.Problem)
}

// Unwrap returns ErrInvalidCustomer.
func (e *InvalidCustomerError) Unwrap() error { return ErrInvalidCustomer }

// ValidateCustomer checks a customer id: 1 to MaxIDLength bytes of printable
// ASCII without spaces or braces (braces would break the Redis hash tag that
// keeps a customer's keys on one cluster slot). Errors are
// *InvalidCustomerError.
func ValidateCustomer(id string) error {
	if err := validateID(id); err != nil {
		return &InvalidCustomerError{ID: id, Problem: err.Error()}
	}
	return nil
}

// validateID applies the rule of ValidateCustomer to any identifier.
func validateID(id string) error {
	if id == "" {
		return errors.New("is empty")
	}
	if len(id) > MaxIDLength {
		return fmt.Errorf("is %d bytes long; the limit is %d", len(id), MaxIDLength)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if c <= ' ' || c > '~' || c == '{' || c == '}' {
			return fmt.Errorf("contains %q at byte %d; use printable ASCII without spaces or braces", c, i)
		}
	}
	return nil
}

func truncate(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}
