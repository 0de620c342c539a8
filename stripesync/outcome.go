package stripesync

import (
	"fmt"
	"strings"
)

// Result is what applying a Stripe event did: the outcome of its journal
// record and of tollgate_stripe_events_total.
type Result string

// The results of an event.
const (
	// Applied: the event changed a balance or a suspension.
	Applied Result = "applied"
	// Duplicate: what the event carries was applied before (by this
	// event, another event of the same business object, or a
	// reconciliation): nothing changed.
	Duplicate Result = "duplicate"
	// Ignored: the event is not something tollgate acts on (another
	// type, the other mode, an unpaid session, a price not in
	// stripe.prices, …): answered 200, nothing changed.
	Ignored Result = "ignored"
	// Failed: the event could not be applied; nothing changed. The
	// webhook answered an error, so Stripe retries it, and so does the
	// next reconciliation.
	Failed Result = "failed"
)

// outcome is the Result alone, where only the result matters (the
// metric's labels).
type outcome = Result

const (
	outcomeApplied   = Applied
	outcomeDuplicate = Duplicate
	outcomeIgnored   = Ignored
)

// Outcome is what applying one event did, in words a support engineer
// reads in the journal (GET /v1/stripe/events). Every handler returns
// one; apply records it.
type Outcome struct {
	Result Result
	// Detail says why, e.g. "payment_status unpaid: waiting for
	// checkout.session.async_payment_succeeded". Empty means the
	// Result's default (see detail).
	Detail string
	// Customer is the tollgate customer, when the event resolved one.
	Customer string
	// StripeCustomer is the Stripe customer (cus_…), when the handler
	// knows it better than the event's data.object.customer.
	StripeCustomer string
	// LedgerEntry is the id of the ledger entry the event wrote, when it
	// changed a balance (the first one, when it wrote several).
	LedgerEntry string
}

// ignored is an Ignored outcome saying why.
func ignored(format string, args ...any) Outcome {
	return Outcome{Result: Ignored, Detail: fmt.Sprintf(format, args...)}
}

// withCustomer returns o about customer.
func (o Outcome) withCustomer(customer string) Outcome {
	o.Customer = customer
	return o
}

// detail is o's Detail, or the Result's default.
func (o Outcome) detail() string {
	if o.Detail != "" {
		return o.Detail
	}
	switch o.Result {
	case Applied:
		return "applied"
	case Duplicate:
		return "applied before; nothing changed"
	case Ignored:
		return "not something tollgate acts on; nothing changed"
	}
	return string(o.Result)
}

// failed is the outcome of an event that could not be applied: the
// message the webhook answered Stripe with, which says what to do.
func failed(err error) Outcome {
	return Outcome{Result: Failed, Detail: answer(err).Message}
}

// object names what a payment record paid for, for a detail.
func (rec paymentRecord) object() string {
	if rec.Session != "" {
		return "checkout session " + rec.Session
	}
	return "invoice " + rec.Invoice
}

// nothing says why p credits nothing, for lines of what.
func (p priced) nothing(what string) string {
	switch {
	case p.none != "":
		return p.none
	case len(p.unpriced) == 1:
		return "price " + p.unpriced[0] + " is not in stripe.prices; nothing credited (add it, then reconcile)"
	case len(p.unpriced) > 1:
		return "prices " + strings.Join(p.unpriced, ", ") + " are not in stripe.prices; nothing credited (add them, then reconcile)"
	}
	return "no line of " + what + " buys credits; nothing credited"
}
