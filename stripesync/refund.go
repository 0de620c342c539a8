package stripesync

import (
	"context"
	"errors"
	"fmt"
	"math/bits"
	"net/http"
	"net/url"

	"github.com/tidwall/gjson"
	"go.uber.org/zap"

	"github.com/tollgate-dev/tollgate/ledger"
	"github.com/tollgate-dev/tollgate/money"
)

// findPayment returns what payment intent pi paid for. If tollgate has no
// record and an API key is set, it asks Stripe for the Checkout Session of
// that payment and applies it first, through the same path as its webhook,
// so a refund or dispute that overtakes its top-up still finds it.
func (s *Syncer) findPayment(ctx context.Context, log *zap.Logger, pi string) (paymentRecord, bool, error) {
	rec, ok, err := s.paymentRecord(ctx, pi)
	if err != nil || ok || pi == "" || s.apiKey == "" {
		return rec, ok, err
	}
	page, err := s.get(ctx, "/v1/checkout/sessions", url.Values{"payment_intent": {pi}, "limit": {"1"}})
	if err != nil {
		return rec, false, apiErr("looking up the checkout session of payment "+pi, err)
	}
	sess := page.Get("data.0")
	if !sess.IsObject() || str(sess, "mode") != "payment" || str(sess, "payment_status") != "paid" {
		return rec, false, nil
	}
	log.Info("stripe: applying the top-up this event refers to first", zap.String("session", str(sess, "id")))
	if _, err := s.applySession(ctx, log, sess, EventCheckoutCompleted); err != nil {
		return rec, false, err
	}
	return s.paymentRecord(ctx, pi)
}

// invoicePayment returns the record of the subscription invoice that
// payment intent pi paid, for a refund or dispute of it: hint names the
// invoice when the event does (a charge's invoice, before 2025-03-31);
// otherwise, with an API key, the payment intent names it (requests pin a
// version whose payment intents have an invoice field). An invoice whose
// grant tollgate has not applied yet (its event is still on its way) is
// read through the API and applied first, as findPayment does for a
// top-up. ok is false when pi paid no invoice tollgate granted credits
// for.
func (s *Syncer) invoicePayment(ctx context.Context, log *zap.Logger, pi, hint string) (paymentRecord, bool, error) {
	inv := hint
	if inv == "" && pi != "" && s.apiKey != "" {
		obj, err := s.get(ctx, "/v1/payment_intents/"+url.PathEscape(pi), nil)
		if err != nil {
			return paymentRecord{}, false, apiErr("looking up the invoice of payment "+pi, err)
		}
		inv = idOf(obj.Get("invoice"))
	}
	if inv == "" {
		return paymentRecord{}, false, nil
	}
	rec, ok, err := s.record(ctx, metaInvoice+inv)
	if err != nil || ok || s.apiKey == "" {
		return rec, ok, err
	}
	obj, err := s.get(ctx, "/v1/invoices/"+url.PathEscape(inv), nil)
	var ae *APIError
	if errors.As(err, &ae) && ae.Status == http.StatusNotFound {
		return paymentRecord{}, false, nil
	}
	if err != nil {
		return paymentRecord{}, false, apiErr("looking up invoice "+inv, err)
	}
	if str(obj, "status") != "paid" {
		return paymentRecord{}, false, nil
	}
	log.Info("stripe: applying the invoice this event refers to first", zap.String("invoice", inv))
	if _, err := s.applyInvoice(ctx, log, obj); err != nil {
		return paymentRecord{}, false, err
	}
	return s.record(ctx, metaInvoice+inv)
}

// paidFor says what a payment record paid for, for the reason of a
// claw-back.
func (rec paymentRecord) paidFor() string {
	if rec.Session != "" {
		return "top-up " + rec.Session
	}
	return "invoice " + rec.Invoice
}

// lotOf returns the ledger lot the first grant of rec created, for a
// claw-back to take from first: it applies that grant's credit again,
// which is a replay that changes nothing and answers the lot (or, if a
// crash came between the payment record and its credit, applies it now,
// as findPayment applies a top-up a refund overtook). "" when the credit
// cannot be replayed (its key was credited with another amount).
func (s *Syncer) lotOf(ctx context.Context, log *zap.Logger, rec paymentRecord) (string, error) {
	c := rec.credits()[0]
	res, err := s.store.Credit(ctx, c)
	if errors.Is(err, ledger.ErrIdempotencyConflict) {
		log.Warn("stripe: the payment's credit was applied with another amount; clawing back in burn order", zap.String("key", c.Key))
		return "", nil
	}
	if err != nil {
		return "", storeErr("find the payment's lot", err)
	}
	if res.Applied {
		log.Info("stripe: applied the payment's credit before clawing it back", zap.String("customer", c.Customer), zap.String("key", c.Key))
	}
	return res.Lot, nil
}

// clawback is credits × refunded / amount, rounded down (in the customer's
// favour, by at most one micro-credit); a full refund claws back exactly
// credits.
func clawback(credits money.Micros, refunded, amount int64) money.Micros {
	if credits <= 0 || refunded <= 0 || amount <= 0 {
		return 0
	}
	if refunded >= amount {
		return credits
	}
	// credits ≤ 2^53 and refunded < amount, so the 128-bit product's high
	// word is below amount and Div64 cannot overflow.
	hi, lo := bits.Mul64(uint64(credits), uint64(refunded))
	q, _ := bits.Div64(hi, lo, uint64(amount))
	return money.Micros(q)
}

// claw applies the cumulative claw-back for payment intent pi. Refunds and
// a lost dispute share the key, so together they never take back more than
// the payment bought, and a replay or a late, smaller amount_refunded
// changes nothing. The credits come from the lot the payment created
// first, then from the customer's other lots in burn order; what they
// lack becomes debt.
func (s *Syncer) claw(ctx context.Context, log *zap.Logger, pi string, rec paymentRecord, total money.Micros, ref, reason string) (Outcome, error) {
	if err := keyOK(keyClaw + pi); err != nil {
		return Outcome{}, err
	}
	if total <= 0 {
		return ignored("%s: less than a micro-credit to claw back", reason).withCustomer(rec.Customer), nil
	}
	lot, err := s.lotOf(ctx, log, rec)
	if err != nil {
		return Outcome{}, err
	}
	res, err := s.store.Credit(ctx, ledger.Credit{
		Customer:   rec.Customer,
		Amount:     -total,
		Kind:       ledger.KindRefund,
		Key:        keyClaw + pi,
		Reference:  ref,
		Reason:     reason,
		Cumulative: true,
		FromLot:    lot,
	})
	if err != nil {
		return Outcome{}, storeErr("claw back", err)
	}
	log.Info("stripe: claw-back", zap.String("customer", rec.Customer), zap.String("payment_intent", pi), zap.Stringer("total", total), zap.Bool("new", res.Applied))
	if !res.Applied {
		return Outcome{Result: Duplicate, Customer: rec.Customer,
			Detail: fmt.Sprintf("%s: payment %s had %s credits clawed back already (up to ledger entry %s); nothing changed", reason, pi, total, res.Entry.ID)}, nil
	}
	return Outcome{Result: Applied, Customer: rec.Customer, LedgerEntry: res.Entry.ID,
		Detail: fmt.Sprintf("%s: clawed back %s credits (%s in all for payment %s)", reason, -res.Entry.Amount, total, pi)}, nil
}

// applyRefund claws back the refunded share of the credits a charge paid
// for: a top-up, or a subscription invoice's grant. amount_refunded is
// cumulative, so the claw-back is too.
func (s *Syncer) applyRefund(ctx context.Context, log *zap.Logger, ch gjson.Result) (Outcome, error) {
	chargeID := str(ch, "id")
	pi := idOf(ch.Get("payment_intent"))
	log = log.With(zap.String("charge", chargeID), zap.String("payment_intent", pi))
	amount, refunded := ch.Get("amount").Int(), ch.Get("amount_refunded").Int()
	if pi == "" || amount <= 0 || refunded <= 0 {
		log.Debug("stripe: refund without payment intent or amount; not a Checkout top-up")
		return ignored("charge %s has no payment intent or no refunded amount; not a tollgate purchase", chargeID), nil
	}
	rec, ok, err := s.findPayment(ctx, log, pi)
	if err != nil {
		return Outcome{}, err
	}
	if !ok {
		if rec, ok, err = s.invoicePayment(ctx, log, pi, idOf(ch.Get("invoice"))); err != nil {
			return Outcome{}, err
		}
	}
	if !ok {
		if s.apiKey == "" && idOf(ch.Get("invoice")) == "" {
			// Without an API key tollgate cannot tell a top-up whose
			// event is still on its way from a payment that is none of
			// its business. Retry when the charge points at a tollgate
			// customer; otherwise let it go.
			cust, err := customerField("charge metadata.tollgate_customer", str(ch, "metadata.tollgate_customer"))
			if err != nil {
				return Outcome{}, err
			}
			if cust == "" {
				if cust, err = s.mappedCustomer(ctx, idOf(ch.Get("customer"))); err != nil {
					return Outcome{}, err
				}
			}
			if cust != "" {
				return Outcome{}, retryLater("refund of payment %s: its top-up is not recorded yet; retry after the checkout event is applied, or set stripe.api_key so tollgate can look it up", pi)
			}
		}
		log.Info("stripe: refunded payment bought no tollgate credits; nothing to claw back")
		return ignored("refunded payment %s bought no tollgate credits; nothing to claw back", pi), nil
	}
	if refunded > amount {
		refunded = amount
	}
	total := clawback(rec.Credits, refunded, amount)
	reason := fmt.Sprintf("Stripe refund of %s: %d of %d %s refunded (%s)", chargeID, refunded, amount, str(ch, "currency"), rec.paidFor())
	return s.claw(ctx, log, pi, rec, total, chargeID, reason)
}
