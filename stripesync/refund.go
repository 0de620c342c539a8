package stripesync

import (
	"context"
	"fmt"
	"math/bits"
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
// the top-up, and a replay or a late, smaller amount_refunded changes
// nothing.
func (s *Syncer) claw(ctx context.Context, log *zap.Logger, pi string, rec paymentRecord, total money.Micros, ref, reason string) (outcome, error) {
	if err := keyOK(keyClaw + pi); err != nil {
		return "", err
	}
	if total <= 0 {
		return outcomeIgnored, nil
	}
	res, err := s.store.Credit(ctx, ledger.Credit{
		Customer:   rec.Customer,
		Amount:     -total,
		Kind:       ledger.KindRefund,
		Key:        keyClaw + pi,
		Reference:  ref,
		Reason:     reason,
		Cumulative: true,
	})
	if err != nil {
		return "", storeErr("claw back", err)
	}
	log.Info("stripe: claw-back", zap.String("customer", rec.Customer), zap.String("payment_intent", pi), zap.Stringer("total", total), zap.Bool("new", res.Applied))
	if !res.Applied {
		return outcomeDuplicate, nil
	}
	return outcomeApplied, nil
}

// applyRefund claws back the refunded share of the top-up a charge paid
// for. amount_refunded is cumulative, so the claw-back is too.
func (s *Syncer) applyRefund(ctx context.Context, log *zap.Logger, ch gjson.Result) (outcome, error) {
	chargeID := str(ch, "id")
	pi := idOf(ch.Get("payment_intent"))
	log = log.With(zap.String("charge", chargeID), zap.String("payment_intent", pi))
	amount, refunded := ch.Get("amount").Int(), ch.Get("amount_refunded").Int()
	if pi == "" || amount <= 0 || refunded <= 0 {
		log.Debug("stripe: refund without payment intent or amount; not a Checkout top-up")
		return outcomeIgnored, nil
	}
	rec, ok, err := s.findPayment(ctx, log, pi)
	if err != nil {
		return "", err
	}
	if !ok {
		if s.apiKey == "" && idOf(ch.Get("invoice")) == "" {
			// Without an API key tollgate cannot tell a top-up whose
			// event is still on its way from a payment that is none of
			// its business. Retry when the charge points at a tollgate
			// customer; otherwise let it go.
			cust, err := customerField("charge metadata.tollgate_customer", str(ch, "metadata.tollgate_customer"))
			if err != nil {
				return "", err
			}
			if cust == "" {
				if cust, err = s.mappedCustomer(ctx, idOf(ch.Get("customer"))); err != nil {
					return "", err
				}
			}
			if cust != "" {
				return "", retryLater("refund of payment %s: its top-up is not recorded yet; retry after the checkout event is applied, or set stripe.api_key so tollgate can look it up", pi)
			}
		}
		log.Info("stripe: refunded payment is not a tollgate top-up; nothing to claw back")
		return outcomeIgnored, nil
	}
	if rec.Session == "" {
		log.Info("stripe: refund of a subscription payment; subscription grants are not clawed back automatically", zap.String("customer", rec.Customer), zap.String("invoice", rec.Invoice))
		return outcomeIgnored, nil
	}
	if refunded > amount {
		refunded = amount
	}
	total := clawback(rec.Credits, refunded, amount)
	reason := fmt.Sprintf("Stripe refund of %s: %d of %d %s refunded (top-up %s)", chargeID, refunded, amount, str(ch, "currency"), rec.Session)
	return s.claw(ctx, log, pi, rec, total, chargeID, reason)
}
