package stripesync

import (
	"errors"
	"fmt"
	"math/bits"
	"strconv"
	"time"

	"go.uber.org/zap"

	"github.com/tollgate-dev/tollgate/ledger"
	"github.com/tollgate-dev/tollgate/money"
)

// Price is what one unit of a Stripe price buys, and how the credits it
// buys expire and burn (stripe.prices.<id>): each purchase becomes a lot
// in the ledger (see ledger.Lot).
type Price struct {
	// Credits is what one unit buys; a line credits Credits × quantity.
	// Must be positive.
	Credits money.Micros
	// Expires is when the credits expire; the zero value, ExpiresDefault,
	// means at the end of the line's period on a subscription invoice and
	// never on a one-off purchase.
	Expires ExpiryRule
	// ExpiresAfter is the lifetime of the credits for ExpiresAfter,
	// counted from the grant: when tollgate first applies the payment.
	// Must be positive then, zero otherwise.
	ExpiresAfter time.Duration
	// Grace is added to the end of the period where the credits expire
	// at it (ExpiresPeriodEnd, or ExpiresDefault on a subscription line):
	// time to spend an allowance after a renewal, for example. Not
	// negative; not allowed with ExpiresNever or ExpiresAfter.
	Grace time.Duration
	// Priority places the lot in burn order, 0 (spent first) to
	// ledger.MaxPriority; nil means ledger.DefaultPriority.
	Priority *int
	// Plan names the plan a subscription to this price puts the customer
	// on (see subscription.go); "" for none. A price with a Plan may
	// have no Credits: it grants a plan and nothing else.
	Plan string
}

// ExpiryRule says when the credits of a Price expire.
type ExpiryRule int

// The expiry rules of stripe.prices.<id>.expires.
const (
	// ExpiresDefault: ExpiresPeriodEnd on subscription invoice lines,
	// ExpiresNever on one-off purchases (expires unset).
	ExpiresDefault ExpiryRule = iota
	// ExpiresNever: the credits never expire ("never").
	ExpiresNever
	// ExpiresPeriodEnd: at the end of the invoice line's period, plus
	// Grace ("period_end"). A line without a period (a Checkout line
	// item) never expires.
	ExpiresPeriodEnd
	// ExpiresAfter: Price.ExpiresAfter after the grant (a duration such
	// as "720h").
	ExpiresAfter
)

// check returns what is wrong with p, the price under key.
func (p Price) check(key string) error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("stripesync: price %q "+format, append([]any{key}, args...)...))
	}
	if p.Credits < 0 || p.Credits > ledger.MaxAmount || (p.Credits == 0 && p.Plan == "") {
		bad("credits %s must be positive and at most %s (or zero with a plan)", p.Credits, ledger.MaxAmount)
	}
	switch p.Expires {
	case ExpiresDefault, ExpiresNever, ExpiresPeriodEnd:
		if p.ExpiresAfter != 0 {
			bad("has a lifetime of %s but does not expire after one", p.ExpiresAfter)
		}
	case ExpiresAfter:
		if p.ExpiresAfter <= 0 {
			bad("expires after %s; want a positive duration", p.ExpiresAfter)
		}
	default:
		bad("has the unknown expiry rule %d", p.Expires)
	}
	switch {
	case p.Grace < 0:
		bad("grace %s is negative", p.Grace)
	case p.Grace > 0 && (p.Expires == ExpiresNever || p.Expires == ExpiresAfter):
		bad("grace %s is added to the end of a period, so it needs expires period_end (or unset)", p.Grace)
	}
	if p.Priority != nil && (*p.Priority < 0 || *p.Priority > ledger.MaxPriority) {
		bad("priority %d is out of range; want 0 (spent first) to %d", *p.Priority, ledger.MaxPriority)
	}
	return errors.Join(errs...)
}

// grant is one lot a payment credits: the lines of one expiry and
// priority, added up. Payment records keep them, so that every replay of
// the payment credits the same lots with the same keys.
type grant struct {
	Credits   money.Micros `json:"credits"`
	ExpiresAt *time.Time   `json:"expires_at,omitempty"`
	Priority  *int         `json:"priority,omitempty"`
}

// same reports whether g is the lot of a line that expires at exp with
// priority p.
func (g grant) same(exp *time.Time, p *int) bool {
	sameExp := (g.ExpiresAt == nil) == (exp == nil) && (exp == nil || g.ExpiresAt.Equal(*exp))
	samePrio := (g.Priority == nil) == (p == nil) && (p == nil || *g.Priority == *p)
	return sameExp && samePrio
}

// priced is the lots some lines credit, and the prices it could not find.
type priced struct {
	grants   []grant
	total    money.Micros
	unpriced []string
	// none says why there are no grants, when that is not unpriced
	// lines (see nothing).
	none string
}

// priceLines prices lines into the lots they credit: one per distinct
// expiry and priority, in the order of the lines. subscription says the
// lines are a subscription invoice's (for ExpiresDefault); now is the
// grant, for lifetimes.
func (s *Syncer) priceLines(log *zap.Logger, lines []line, subscription bool, now time.Time) (priced, error) {
	var out priced
	for _, l := range lines {
		p, ok := s.price(l)
		if !ok {
			name := l.price
			if l.lookupKey != "" {
				name += " (lookup key " + l.lookupKey + ")"
			}
			out.unpriced = append(out.unpriced, name)
			continue
		}
		if l.quantity <= 0 || p.Credits == 0 {
			continue // a price that grants a plan and no credits
		}
		hi, lo := bits.Mul64(uint64(p.Credits), uint64(l.quantity))
		if hi != 0 || lo > uint64(ledger.MaxAmount-out.total) {
			return priced{}, fmt.Errorf("credits exceed the ledger's maximum of %s", ledger.MaxAmount)
		}
		credits := money.Micros(lo)
		out.total += credits
		exp := expiry(log, p, l, subscription, now)
		i := 0
		for i < len(out.grants) && !out.grants[i].same(exp, p.Priority) {
			i++
		}
		if i == len(out.grants) {
			out.grants = append(out.grants, grant{ExpiresAt: exp, Priority: p.Priority})
		}
		out.grants[i].Credits += credits
	}
	return out, nil
}

// expiry is when the credits of line l, priced by p, expire; nil for
// never.
func expiry(log *zap.Logger, p Price, l line, subscription bool, now time.Time) *time.Time {
	rule := p.Expires
	if rule == ExpiresDefault {
		rule = ExpiresNever
		if subscription {
			rule = ExpiresPeriodEnd
		}
	}
	switch rule {
	case ExpiresAfter:
		at := now.Add(p.ExpiresAfter)
		return &at
	case ExpiresPeriodEnd:
		if l.periodEnd <= 0 {
			if subscription {
				// Every invoice line has a period; one without is
				// not Stripe's. Keep the credits rather than lose
				// them.
				log.Warn("stripe: invoice line without period.end; its credits do not expire", zap.String("price", l.price))
			}
			return nil
		}
		at := time.Unix(l.periodEnd, 0).UTC().Add(p.Grace)
		return &at
	}
	return nil
}

// credits returns the ledger credits of the payment rec records: one per
// grant, the first under the payment's own key (the key a payment
// recorded before lots credited its whole amount under), the others under
// that key and "#2", "#3", …. A record written before lots has no grants:
// it credits its whole amount as one lot that never expires.
func (rec paymentRecord) credits() []ledger.Credit {
	kind, key, ref, reason := ledger.KindGrant, keyInvoice+rec.Invoice, rec.Invoice, "Stripe subscription invoice"
	if rec.Session != "" {
		kind, key, ref, reason = ledger.KindTopup, keySession+rec.Session, rec.Session, "Stripe Checkout top-up"
	}
	grants := rec.Grants
	if len(grants) == 0 {
		grants = []grant{{Credits: rec.Credits}}
	}
	out := make([]ledger.Credit, len(grants))
	for i, g := range grants {
		c := ledger.Credit{Customer: rec.Customer, Amount: g.Credits, Kind: kind, Key: key, Reference: ref, Reason: reason, Priority: g.Priority}
		if i > 0 {
			c.Key += "#" + strconv.Itoa(i+1)
		}
		if g.ExpiresAt != nil {
			c.ExpiresAt = *g.ExpiresAt
		}
		out[i] = c
	}
	return out
}

// checkGrants reports whether rec's grants add up to its credits.
func (rec paymentRecord) checkGrants() bool {
	if len(rec.Grants) == 0 {
		return true
	}
	var sum money.Micros
	for _, g := range rec.Grants {
		if g.Credits <= 0 || g.Credits > ledger.MaxAmount-sum {
			return false
		}
		sum += g.Credits
	}
	return sum == rec.Credits
}
