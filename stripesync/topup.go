package stripesync

import (
	"context"
	"net/url"

	"github.com/tidwall/gjson"
	"go.uber.org/zap"

	"github.com/tollgate-dev/tollgate/ledger"
	"github.com/tollgate-dev/tollgate/money"
)

// applySession credits a paid one-off Checkout purchase once per session,
// however many of completed and async_payment_succeeded arrive, in any
// order. A subscription-mode session only teaches the customer mapping: its
// credits come from invoice.paid, never from the session.
func (s *Syncer) applySession(ctx context.Context, log *zap.Logger, sess gjson.Result, typ string) (Outcome, error) {
	id := str(sess, "id")
	if id == "" {
		return Outcome{}, invalid("checkout session has no id")
	}
	log = log.With(zap.String("session", id))
	stripeCustomer := idOf(sess.Get("customer"))
	switch mode := str(sess, "mode"); mode {
	case "payment":
	case "subscription":
		cust, err := s.sessionCustomer(ctx, sess, false)
		if err != nil {
			return Outcome{}, err
		}
		if err := s.learnCustomer(ctx, stripeCustomer, cust); err != nil {
			return Outcome{}, err
		}
		log.Debug("stripe: subscription checkout; credits come with invoice.paid", zap.String("customer", cust))
		return ignored("subscription checkout: its credits come with each invoice.paid, not with the session").withCustomer(cust), nil
	default:
		log.Debug("stripe: checkout session mode not handled", zap.String("mode", mode))
		return ignored("checkout session mode %q: tollgate credits one-off purchases (mode payment) and subscription invoices", mode), nil
	}
	// Asynchronous methods (bank debits, vouchers) complete the session
	// unpaid; async_payment_succeeded follows once the money arrives
	// (https://docs.stripe.com/checkout/fulfillment).
	if status := str(sess, "payment_status"); typ != EventCheckoutAsyncSucceeded && status != "paid" {
		if status == "unpaid" {
			log.Info("stripe: checkout session not paid yet; waiting for async_payment_succeeded")
			return ignored("payment_status unpaid: waiting for %s", EventCheckoutAsyncSucceeded), nil
		}
		log.Info("stripe: checkout session needs no payment; nothing to credit", zap.String("payment_status", status))
		return ignored("payment_status %s: nothing was paid, so nothing is credited", status), nil
	}
	if err := keyOK(keySession + id); err != nil {
		return Outcome{}, err
	}

	// The record lives under the session, which binds it once, and
	// under the payment intent, where refunds and disputes look; a paid
	// session always has one, but should it not, the session's own
	// record still pins what it credited.
	pi := idOf(sess.Get("payment_intent"))
	recKey := metaPayment + pi
	if pi == "" {
		recKey = metaSession + id
	}
	rec, ok, err := s.record(ctx, recKey)
	if err != nil {
		return Outcome{}, err
	}
	if !ok || rec.Session != id {
		// First time (or the record was lost): work the top-up out from
		// the session. A later delivery reuses the record, so a price
		// change in between cannot make the amounts disagree.
		grants, err := s.sessionGrants(ctx, log, sess)
		if err != nil {
			return Outcome{}, err
		}
		if len(grants.grants) == 0 {
			return ignored("%s", grants.nothing("checkout session "+id)), nil
		}
		cust, err := s.sessionCustomer(ctx, sess, true)
		if err != nil {
			return Outcome{}, err
		}
		if cust == "" {
			return Outcome{}, retryLater("cannot tell which tollgate customer paid checkout session %s: create sessions with metadata.tollgate_customer or client_reference_id", id)
		}
		if err := s.learnCustomer(ctx, stripeCustomer, cust); err != nil {
			return Outcome{}, err
		}
		// Bind, then record before crediting: once the top-up can be
		// seen, a refund of it can find what to claw back.
		if rec, err = s.bindRecord(ctx, metaSession+id, paymentRecord{Customer: cust, Credits: grants.total, Session: id, Grants: grants.grants}); err != nil {
			return Outcome{}, err
		}
		if pi != "" {
			if err := s.putRecord(ctx, recKey, rec); err != nil {
				return Outcome{}, err
			}
		}
	}
	return s.creditGrants(ctx, log, rec, "top-up", "stripe: checkout session already credited with a different amount; keeping the first")
}

// sessionCustomer resolves the tollgate customer of a session:
// metadata.tollgate_customer, client_reference_id, then (if useMapping) the
// customer last seen with the session's Stripe customer.
func (s *Syncer) sessionCustomer(ctx context.Context, sess gjson.Result, useMapping bool) (string, error) {
	if c, err := customerField("checkout session metadata.tollgate_customer", str(sess, "metadata.tollgate_customer")); c != "" || err != nil {
		return c, err
	}
	if c, err := customerField("checkout session client_reference_id", str(sess, "client_reference_id")); c != "" || err != nil {
		return c, err
	}
	if !useMapping {
		return "", nil
	}
	return s.mappedCustomer(ctx, idOf(sess.Get("customer")))
}

// sessionGrants is what a one-off purchase buys: metadata.tollgate_credits
// if the app set it (one lot that never expires), else the session's line
// items priced by Options.Prices. No grants means the session is not a
// tollgate purchase.
func (s *Syncer) sessionGrants(ctx context.Context, log *zap.Logger, sess gjson.Result) (priced, error) {
	id := str(sess, "id")
	if meta := sess.Get("metadata.tollgate_credits"); meta.Exists() && meta.Type != gjson.Null {
		credits, err := money.Parse(meta.String())
		if err != nil {
			return priced{}, invalid("checkout session %s metadata.tollgate_credits: %v", id, err)
		}
		if credits <= 0 || credits > ledger.MaxAmount {
			return priced{}, invalid("checkout session %s metadata.tollgate_credits %s must be positive and at most %s", id, credits, ledger.MaxAmount)
		}
		return priced{grants: []grant{{Credits: credits}}, total: credits}, nil
	}
	var lines []line
	if items := sess.Get("line_items"); items.Get("data").IsArray() && !items.Get("has_more").Bool() {
		for _, it := range items.Get("data").Array() {
			lines = append(lines, parseLine(it))
		}
	} else if s.apiKey == "" {
		if str(sess, "metadata.tollgate_customer") != "" {
			return priced{}, retryLater("checkout session %s has no metadata.tollgate_credits, and reading its line items needs stripe.api_key", id)
		}
		log.Warn("stripe: checkout session has no metadata.tollgate_credits and no API key to read its line items; not a tollgate purchase?")
		return priced{none: "checkout session " + id + " has no metadata.tollgate_credits, and reading its line items needs stripe.api_key: not a tollgate purchase?"}, nil
	} else {
		err := s.list(ctx, "/v1/checkout/sessions/"+url.PathEscape(id)+"/line_items", nil, func(it gjson.Result) error {
			lines = append(lines, parseLine(it))
			return nil
		})
		if err != nil {
			return priced{}, apiErr("reading the line items of checkout session "+id, err)
		}
	}
	out, err := s.priceLines(log, lines, false, s.now())
	if err != nil {
		return priced{}, invalid("checkout session %s: %v", id, err)
	}
	if len(out.unpriced) > 0 {
		log.Warn("stripe: line items with prices not in stripe.prices were skipped", zap.Strings("prices", out.unpriced))
	}
	if out.total == 0 {
		log.Warn("stripe: no line item of this checkout session is priced in stripe.prices; nothing credited")
	}
	return out, nil
}
