package ledger

import (
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/tollgate-dev/tollgate/money"
)

// Both stores run these checks before any I/O, so that bad input fails the
// same way, with the same sentinel, whatever the backend and whether or
// not it is reachable.

// MaxTextLength bounds Credit.Reason and Credit.Reference (longer is
// ErrInvalidArgument) and the text fields of Charge (longer is truncated:
// a client-chosen model name must never make a charge fail; see Charge).
const MaxTextLength = 1024

// MaxHoldTTL bounds the ttl of Reserve and Extend. Holds are meant to
// live for one request; a longer ttl is ErrInvalidArgument.
const MaxHoldTTL = 7 * 24 * time.Hour

// maxLockTTL bounds TryLock's ttl, so that a lock whose holder crashed
// blocks its job for a day at most.
const maxLockTTL = 24 * time.Hour

// MaxMetaValueLength bounds the values of PutMeta.
const MaxMetaValueLength = 1 << 20

func checkCustomer(customer string) error { return ValidateCustomer(customer) }

// checkID validates a hold id, idempotency key, suspension reason, meta
// key or lock name, naming it in the error.
func checkID(what, id string) error {
	if err := validateID(id); err != nil {
		return fmt.Errorf("%w: %s %q %s", ErrInvalidArgument, what, truncate(id), err.Error())
	}
	return nil
}

// checkAmount checks that m is within ±MaxAmount, and at least min.
func checkAmount(what string, m, min money.Micros) error {
	if m < min || m > MaxAmount {
		return fmt.Errorf("%w: %s %s is out of range; want %s to %s", ErrInvalidAmount, what, m, min, MaxAmount)
	}
	return nil
}

func checkReserve(customer, holdID string, amount money.Micros, ttl time.Duration) error {
	if err := checkCustomer(customer); err != nil {
		return err
	}
	if err := checkID("hold id", holdID); err != nil {
		return err
	}
	if err := checkAmount("reserve amount", amount, 0); err != nil {
		return err
	}
	return checkHoldTTL(ttl)
}

func checkExtend(customer, holdID string, ttl time.Duration) error {
	if err := checkRelease(customer, holdID); err != nil {
		return err
	}
	return checkHoldTTL(ttl)
}

func checkHoldTTL(ttl time.Duration) error {
	if ttl < time.Millisecond || ttl > MaxHoldTTL {
		return fmt.Errorf("%w: hold ttl %s is out of range; want 1ms to %s", ErrInvalidArgument, ttl, MaxHoldTTL)
	}
	return nil
}

// checkSettle validates a Settle and returns c with its text fields as
// they are stored (see chargeText).
func checkSettle(customer, holdID string, actual money.Micros, c Charge) (Charge, error) {
	if err := checkCustomer(customer); err != nil {
		return c, err
	}
	if err := checkID("hold id", holdID); err != nil {
		return c, err
	}
	if err := checkAmount("settle amount", actual, 0); err != nil {
		return c, err
	}
	for name, n := range c.TokenCounts() {
		if n < 0 {
			return c, fmt.Errorf("%w: charge %s is %d; token counts cannot be negative", ErrInvalidArgument, name, n)
		}
	}
	c.Reference = chargeText(c.Reference)
	c.Route = chargeText(c.Route)
	c.Model = chargeText(c.Model)
	return c, nil
}

func checkRelease(customer, holdID string) error {
	if err := checkCustomer(customer); err != nil {
		return err
	}
	return checkID("hold id", holdID)
}

func checkCredit(c Credit) error {
	if err := checkCustomer(c.Customer); err != nil {
		return err
	}
	if c.Amount == 0 {
		return fmt.Errorf("%w: credit amount is zero; want a positive amount to add or a negative one to debit", ErrInvalidAmount)
	}
	if err := checkAmount("credit amount", c.Amount, -MaxAmount); err != nil {
		return err
	}
	if !c.Kind.Valid() || c.Kind == KindCharge || c.Kind == KindExpire {
		return fmt.Errorf("%w: credit kind %q; want one of %q, %q, %q, %q (charges come from Settle, expiries from the store)", ErrInvalidArgument, c.Kind, KindTopup, KindGrant, KindAdjust, KindRefund)
	}
	if err := checkLot(c); err != nil {
		return err
	}
	if err := checkID("idempotency key", c.Key); err != nil {
		return err
	}
	if err := checkText("credit reference", c.Reference); err != nil {
		return err
	}
	return checkText("credit reason", c.Reason)
}

func checkText(what, s string) error {
	if len(s) > MaxTextLength {
		return fmt.Errorf("%w: %s is %d bytes long; the limit is %d", ErrInvalidArgument, what, len(s), MaxTextLength)
	}
	if !utf8.ValidString(s) {
		return fmt.Errorf("%w: %s is not valid UTF-8", ErrInvalidArgument, what)
	}
	return nil
}

// chargeText returns s as a charge stores it. A charge's text comes from
// the request (a model name can come from the URL path) and must never
// make it fail, so each byte that is not UTF-8 becomes U+FFFD, as the
// entry's JSON encoding would write it (one per byte, like
// appendJSONString, not one per run like strings.ToValidUTF8), and the
// result is cut to MaxTextLength. Settle thus returns the entry that
// Entries will list. Only the first MaxTextLength bytes of s can reach
// the result (each byte becomes one or more), and UTFMax more are enough
// to decode the rune at the cut as the whole text would, so a long s
// costs no more than a short one.
func chargeText(s string) string {
	if len(s) > MaxTextLength+utf8.UTFMax {
		s = s[:MaxTextLength+utf8.UTFMax]
	}
	if !utf8.ValidString(s) {
		b := make([]byte, 0, len(s)+8)
		for i := 0; i < len(s); {
			r, size := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && size == 1 {
				b = utf8.AppendRune(b, utf8.RuneError)
			} else {
				b = append(b, s[i:i+size]...)
			}
			i += size
		}
		s = string(b)
	}
	return truncateText(s)
}

// truncateText cuts s to at most MaxTextLength bytes without splitting a
// UTF-8 sequence.
func truncateText(s string) string {
	if len(s) <= MaxTextLength {
		return s
	}
	s = s[:MaxTextLength]
	for len(s) > 0 && !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s
}

func checkLimit(limit int) (int, error) {
	switch {
	case limit == 0:
		return DefaultPageSize, nil
	case limit < 0 || limit > MaxPageSize:
		return 0, fmt.Errorf("%w: page size %d; want 1 to %d, or 0 for %d", ErrInvalidArgument, limit, MaxPageSize, DefaultPageSize)
	}
	return limit, nil
}

func checkSuspension(customer, reason string) error {
	if err := checkCustomer(customer); err != nil {
		return err
	}
	return checkID("suspension reason", reason)
}

func checkMeta(key, value string) error {
	if err := checkID("meta key", key); err != nil {
		return err
	}
	if len(value) > MaxMetaValueLength {
		return fmt.Errorf("%w: meta value for %q is %d bytes long; the limit is %d", ErrInvalidArgument, key, len(value), MaxMetaValueLength)
	}
	return nil
}

func checkLock(name string, ttl time.Duration) error {
	if err := checkID("lock name", name); err != nil {
		return err
	}
	if ttl < time.Millisecond || ttl > maxLockTTL {
		return fmt.Errorf("%w: lock ttl %s is out of range; want 1ms to %s", ErrInvalidArgument, ttl, maxLockTTL)
	}
	return nil
}
