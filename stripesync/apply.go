package stripesync

import (
	"context"
	"errors"
	"fmt"
	"math/bits"
	"net/url"
	"strings"

	"github.com/tidwall/gjson"
	"go.uber.org/zap"

	"github.com/tollgate-dev/tollgate/ledger"
	"github.com/tollgate-dev/tollgate/money"
)

// The event types a Syncer acts on. Enable exactly these on the Stripe
// webhook endpoint; any other type is acknowledged with 200 and ignored.
const (
	EventCheckoutCompleted      = "checkout.session.completed"
	EventCheckoutAsyncSucceeded = "checkout.session.async_payment_succeeded"
	EventInvoicePaid            = "invoice.paid"
	EventChargeRefunded         = "charge.refunded"
	EventDisputeCreated         = "charge.dispute.created"
	EventDisputeClosed          = "charge.dispute.closed"
)

// EventTypes returns the event types a Syncer acts on, in the order a
// purchase usually produces them.
func EventTypes() []string {
	return []string{
		EventCheckoutCompleted,
		EventCheckoutAsyncSucceeded,
		EventInvoicePaid,
		EventChargeRefunded,
		EventDisputeCreated,
		EventDisputeClosed,
	}
}

// outcome says what applying an event did.
type outcome string

const (
	outcomeApplied   outcome = "applied"   // changed a balance or a suspension
	outcomeDuplicate outcome = "duplicate" // already applied earlier: nothing changed
	outcomeIgnored   outcome = "ignored"   // not something tollgate acts on
)

// apply applies one event, whether delivered by a webhook (after its
// signature was verified) or listed by the Events API. It is the only way
// events change the store, so both routes behave identically: the same
// livemode rule (Options.Livemode), the same effects.
func (s *Syncer) apply(ctx context.Context, ev gjson.Result, source string) (outcome, error) {
	typ := ev.Get("type").String()
	log := s.log.With(
		zap.String("event", ev.Get("id").String()),
		zap.String("type", typ),
		zap.String("source", source),
		zap.String("api_version", ev.Get("api_version").String()),
	)
	var (
		out outcome
		err error
	)
	switch lm := ev.Get("livemode"); {
	case lm.Type != gjson.True && lm.Type != gjson.False:
		err = invalid("event %s has no boolean livemode, so tollgate cannot tell a test event from a live one; Stripe sets it on every event", ev.Get("id").String())
	case lm.Bool() != s.livemode:
		// Acknowledged, so that Stripe stops sending it: no retry could
		// ever apply it here.
		out = outcomeIgnored
		log.Warn("stripe: event of the other mode ignored; stripe.livemode names the mode this server applies: point only that mode's webhook endpoint here, and use that mode's API key",
			zap.Bool("event_livemode", lm.Bool()), zap.Bool("livemode", s.livemode))
	default:
		out, err = s.applyType(ctx, log, ev, typ)
	}
	label := typ
	if out == outcomeIgnored && err == nil && !isHandled(typ) {
		label = "other"
	}
	if err != nil {
		status, code, _ := statusOf(err)
		s.events.WithLabelValues(label, code).Inc()
		if status >= 500 {
			log.Error("stripe: event not applied; Stripe will retry", zap.String("code", code), zap.Error(err))
		} else {
			log.Warn("stripe: event refused; fix the data or credit by hand", zap.String("code", code), zap.Error(err))
		}
		return "", err
	}
	s.events.WithLabelValues(label, string(out)).Inc()
	if label == "other" {
		log.Debug("stripe: event type not handled", zap.String("outcome", string(out)))
	} else {
		log.Info("stripe: event processed", zap.String("outcome", string(out)))
	}
	return out, nil
}

// applyType applies an event of the configured mode by its type.
func (s *Syncer) applyType(ctx context.Context, log *zap.Logger, ev gjson.Result, typ string) (outcome, error) {
	if !isHandled(typ) {
		return outcomeIgnored, nil
	}
	obj := ev.Get("data.object")
	if !obj.IsObject() {
		return "", invalid("event %s has no data.object", ev.Get("id").String())
	}
	switch typ {
	case EventCheckoutCompleted, EventCheckoutAsyncSucceeded:
		return s.applySession(ctx, log, obj, typ)
	case EventInvoicePaid:
		return s.applyInvoice(ctx, log, obj)
	case EventChargeRefunded:
		return s.applyRefund(ctx, log, obj)
	case EventDisputeCreated:
		return s.applyDisputeCreated(ctx, log, obj)
	case EventDisputeClosed:
		return s.applyDisputeClosed(ctx, log, obj)
	}
	return outcomeIgnored, nil
}

func isHandled(typ string) bool {
	for _, t := range EventTypes() {
		if t == typ {
			return true
		}
	}
	return false
}

// idOf reads an expandable reference: a bare id string, or the id of an
// expanded object.
func idOf(r gjson.Result) string {
	if r.IsObject() {
		return r.Get("id").String()
	}
	if r.Type == gjson.String {
		return r.String()
	}
	return ""
}

// str reads a string field, "" when absent or null.
func str(r gjson.Result, path string) string {
	v := r.Get(path)
	if v.Type != gjson.String {
		return ""
	}
	return v.String()
}

// customerField validates a tollgate customer id found in an event. A
// value that is set but invalid is an error, never a reason to fall through
// to a weaker source: falling through could credit someone else.
func customerField(where, v string) (string, error) {
	if v == "" {
		return "", nil
	}
	if err := ledger.ValidateCustomer(v); err != nil {
		return "", invalid("%s is not a valid tollgate customer id: %v", where, err)
	}
	return v, nil
}

// ---- Checkout top-ups ------------------------------------------------------

// applySession credits a paid one-off Checkout purchase once per session,
// however many of completed and async_payment_succeeded arrive, in any
// order. A subscription-mode session only teaches the customer mapping: its
// credits come from invoice.paid, never from the session.
func (s *Syncer) applySession(ctx context.Context, log *zap.Logger, sess gjson.Result, typ string) (outcome, error) {
	id := str(sess, "id")
	if id == "" {
		return "", invalid("checkout session has no id")
	}
	log = log.With(zap.String("session", id))
	stripeCustomer := idOf(sess.Get("customer"))
	switch mode := str(sess, "mode"); mode {
	case "payment":
	case "subscription":
		cust, err := s.sessionCustomer(ctx, sess, false)
		if err != nil {
			return "", err
		}
		if err := s.learnCustomer(ctx, stripeCustomer, cust); err != nil {
			return "", err
		}
		log.Debug("stripe: subscription checkout; credits come with invoice.paid", zap.String("customer", cust))
		return outcomeIgnored, nil
	default:
		log.Debug("stripe: checkout session mode not handled", zap.String("mode", mode))
		return outcomeIgnored, nil
	}
	// Asynchronous methods (bank debits, vouchers) complete the session
	// unpaid; async_payment_succeeded follows once the money arrives
	// (https://docs.stripe.com/checkout/fulfillment).
	if status := str(sess, "payment_status"); typ != EventCheckoutAsyncSucceeded && status != "paid" {
		if status == "unpaid" {
			log.Info("stripe: checkout session not paid yet; waiting for async_payment_succeeded")
		} else {
			log.Info("stripe: checkout session needs no payment; nothing to credit", zap.String("payment_status", status))
		}
		return outcomeIgnored, nil
	}
	if err := keyOK(keySession + id); err != nil {
		return "", err
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
		return "", err
	}
	if !ok || rec.Session != id {
		// First time (or the record was lost): work the top-up out from
		// the session. A later delivery reuses the record, so a price
		// change in between cannot make the amounts disagree.
		credits, err := s.sessionCredits(ctx, log, sess)
		if err != nil || credits == 0 {
			return outcomeIgnored, err
		}
		cust, err := s.sessionCustomer(ctx, sess, true)
		if err != nil {
			return "", err
		}
		if cust == "" {
			return "", retryLater("cannot tell which tollgate customer paid checkout session %s: create sessions with metadata.tollgate_customer or client_reference_id", id)
		}
		if err := s.learnCustomer(ctx, stripeCustomer, cust); err != nil {
			return "", err
		}
		// Bind, then record before crediting: once the top-up can be
		// seen, a refund of it can find what to claw back.
		if rec, err = s.bindRecord(ctx, metaSession+id, paymentRecord{Customer: cust, Credits: credits, Session: id}); err != nil {
			return "", err
		}
		if pi != "" {
			if err := s.putRecord(ctx, recKey, rec); err != nil {
				return "", err
			}
		}
	}
	res, err := s.store.Credit(ctx, ledger.Credit{
		Customer:  rec.Customer,
		Amount:    rec.Credits,
		Kind:      ledger.KindTopup,
		Key:       keySession + id,
		Reference: id,
		Reason:    "Stripe Checkout top-up",
	})
	if errors.Is(err, ledger.ErrIdempotencyConflict) {
		// The session was credited before with another amount (prices
		// changed and the payment record was lost). A session credits
		// at most once: keep the first.
		log.Warn("stripe: checkout session already credited with a different amount; keeping the first", zap.String("customer", rec.Customer))
		return outcomeDuplicate, nil
	}
	if err != nil {
		return "", storeErr("credit top-up", err)
	}
	log.Info("stripe: top-up", zap.String("customer", rec.Customer), zap.Stringer("credits", rec.Credits), zap.Bool("new", res.Applied))
	if !res.Applied {
		return outcomeDuplicate, nil
	}
	return outcomeApplied, nil
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

// sessionCredits is what a one-off purchase buys: metadata.tollgate_credits
// if the app set it, else the session's line items priced by Options.Prices.
// Zero means the session is not a tollgate purchase.
func (s *Syncer) sessionCredits(ctx context.Context, log *zap.Logger, sess gjson.Result) (money.Micros, error) {
	id := str(sess, "id")
	if meta := sess.Get("metadata.tollgate_credits"); meta.Exists() && meta.Type != gjson.Null {
		credits, err := money.Parse(meta.String())
		if err != nil {
			return 0, invalid("checkout session %s metadata.tollgate_credits: %v", id, err)
		}
		if credits <= 0 || credits > ledger.MaxAmount {
			return 0, invalid("checkout session %s metadata.tollgate_credits %s must be positive and at most %s", id, credits, ledger.MaxAmount)
		}
		return credits, nil
	}
	var lines []line
	if items := sess.Get("line_items"); items.Get("data").IsArray() && !items.Get("has_more").Bool() {
		for _, it := range items.Get("data").Array() {
			lines = append(lines, parseLine(it))
		}
	} else if s.apiKey == "" {
		if str(sess, "metadata.tollgate_customer") != "" {
			return 0, retryLater("checkout session %s has no metadata.tollgate_credits, and reading its line items needs stripe.api_key", id)
		}
		log.Warn("stripe: checkout session has no metadata.tollgate_credits and no API key to read its line items; not a tollgate purchase?")
		return 0, nil
	} else {
		err := s.list(ctx, "/v1/checkout/sessions/"+url.PathEscape(id)+"/line_items", nil, func(it gjson.Result) error {
			lines = append(lines, parseLine(it))
			return nil
		})
		if err != nil {
			return 0, apiErr("reading the line items of checkout session "+id, err)
		}
	}
	total, unpriced, err := s.priceLines(lines)
	if err != nil {
		return 0, invalid("checkout session %s: %v", id, err)
	}
	if len(unpriced) > 0 {
		log.Warn("stripe: line items with prices not in stripe.prices were skipped", zap.Strings("prices", unpriced))
	}
	if total == 0 {
		log.Warn("stripe: no line item of this checkout session is priced in stripe.prices; nothing credited")
	}
	return total, nil
}

// ---- lines and prices ------------------------------------------------------

// line is one Checkout line item or invoice line, reduced to what pricing
// needs, from either API-version shape.
type line struct {
	price     string // price id
	lookupKey string // the price's lookup key, when the object carries it
	// priceOnlyID is true for the 2025-03-31 shape, which names the
	// price by id only, so a lookup key cannot be matched without the API.
	priceOnlyID bool
	quantity    int64
	// Invoice lines only.
	subscription bool // generated by a subscription item
	proration    bool
	customer     string // metadata.tollgate_customer (a subscription line reflects the subscription's metadata)
}

// parseLine reads a Checkout line item ("item") or an invoice line
// ("line_item") in the 2024-06-20 shape (price object, type, proration) or
// the 2025-03-31 shape (pricing.price_details.price, parent.type,
// parent.subscription_item_details.proration).
func parseLine(it gjson.Result) line {
	l := line{quantity: it.Get("quantity").Int(), customer: str(it, "metadata.tollgate_customer")}
	if p := it.Get("price"); p.Exists() && p.Type != gjson.Null {
		l.price = idOf(p)
		l.lookupKey = str(p, "lookup_key")
	}
	if p := it.Get("pricing.price_details.price"); l.price == "" && p.Exists() {
		l.price = idOf(p)
		l.lookupKey = str(p, "lookup_key")
		l.priceOnlyID = !p.IsObject()
	}
	if !it.Get("quantity").Exists() || it.Get("quantity").Type == gjson.Null {
		l.quantity = 1 // a line without a quantity bills one unit
	}
	switch {
	case str(it, "parent.type") == "subscription_item_details":
		l.subscription = true
		l.proration = it.Get("parent.subscription_item_details.proration").Bool()
	case str(it, "type") == "subscription":
		l.subscription = true
		l.proration = it.Get("proration").Bool()
	}
	return l
}

// credits returns what one unit of l's price buys, by price id first, then
// by lookup key.
func (s *Syncer) credits(l line) (money.Micros, bool) {
	if v, ok := s.prices[l.price]; ok && l.price != "" {
		return v, true
	}
	if v, ok := s.prices[l.lookupKey]; ok && l.lookupKey != "" {
		return v, true
	}
	return 0, false
}

// priceLines sums credits × quantity over lines, returning the prices it
// could not find.
func (s *Syncer) priceLines(lines []line) (money.Micros, []string, error) {
	var total money.Micros
	var unpriced []string
	for _, l := range lines {
		per, ok := s.credits(l)
		if !ok {
			name := l.price
			if l.lookupKey != "" {
				name += " (lookup key " + l.lookupKey + ")"
			}
			unpriced = append(unpriced, name)
			continue
		}
		if l.quantity <= 0 {
			continue
		}
		hi, lo := bits.Mul64(uint64(per), uint64(l.quantity))
		if hi != 0 || lo > uint64(ledger.MaxAmount-total) {
			return 0, nil, fmt.Errorf("credits exceed the ledger's maximum of %s", ledger.MaxAmount)
		}
		total += money.Micros(lo)
	}
	return total, unpriced, nil
}

// ---- subscriptions ---------------------------------------------------------

// applyInvoice grants the credits of a paid invoice's subscription lines,
// once per invoice.
func (s *Syncer) applyInvoice(ctx context.Context, log *zap.Logger, inv gjson.Result) (outcome, error) {
	id := str(inv, "id")
	if id == "" {
		return "", invalid("invoice has no id")
	}
	log = log.With(zap.String("invoice", id))
	if err := keyOK(keyInvoice + id); err != nil {
		return "", err
	}
	// A replay reuses what the first delivery worked out, so neither a
	// changed customer mapping (which could grant the invoice to a second
	// customer) nor changed prices can make it disagree.
	rec, ok, err := s.record(ctx, metaInvoice+id)
	if err != nil {
		return "", err
	}
	if !ok {
		var out outcome
		rec, out, err = s.invoiceGrant(ctx, log, inv)
		if err != nil || out != "" {
			return out, err
		}
		if rec, err = s.bindRecord(ctx, metaInvoice+id, rec); err != nil {
			return "", err
		}
		// Before 2025-03-31 the invoice names its payment intent;
		// remember it so a dispute on that payment finds the customer.
		if pi := idOf(inv.Get("payment_intent")); pi != "" {
			if err := s.putRecord(ctx, metaPayment+pi, rec); err != nil {
				return "", err
			}
		}
	}
	res, err := s.store.Credit(ctx, ledger.Credit{
		Customer:  rec.Customer,
		Amount:    rec.Credits,
		Kind:      ledger.KindGrant,
		Key:       keyInvoice + id,
		Reference: id,
		Reason:    "Stripe subscription invoice",
	})
	if errors.Is(err, ledger.ErrIdempotencyConflict) {
		log.Warn("stripe: invoice already granted with a different amount; keeping the first", zap.String("customer", rec.Customer))
		return outcomeDuplicate, nil
	}
	if err != nil {
		return "", storeErr("credit subscription grant", err)
	}
	log.Info("stripe: subscription grant", zap.String("customer", rec.Customer), zap.Stringer("credits", rec.Credits), zap.Bool("new", res.Applied))
	if !res.Applied {
		return outcomeDuplicate, nil
	}
	return outcomeApplied, nil
}

// invoiceGrant works out whom an invoice credits and how much. A non-empty
// outcome means there is nothing to grant.
func (s *Syncer) invoiceGrant(ctx context.Context, log *zap.Logger, inv gjson.Result) (paymentRecord, outcome, error) {
	id := str(inv, "id")
	var lines []line
	needLookup := false
	for _, it := range inv.Get("lines.data").Array() {
		l := parseLine(it)
		lines = append(lines, l)
		if _, ok := s.credits(l); !ok && l.subscription && l.priceOnlyID {
			needLookup = true // 2025-03-31 lines name the price id only
		}
	}
	// A webhook's invoice carries its first lines only
	// (lines.has_more); the API has them all, with each price's lookup key
	// in the version we pin.
	if more := inv.Get("lines.has_more").Bool(); more || needLookup {
		switch {
		case s.apiKey != "":
			lines = lines[:0]
			err := s.list(ctx, "/v1/invoices/"+url.PathEscape(id)+"/lines", nil, func(it gjson.Result) error {
				lines = append(lines, parseLine(it))
				return nil
			})
			if err != nil {
				return paymentRecord{}, "", apiErr("reading the lines of invoice "+id, err)
			}
		case more:
			return paymentRecord{}, "", retryLater("invoice %s has more lines than the event carries; reading them needs stripe.api_key", id)
		}
	}
	var subs []line
	for _, l := range lines {
		if l.subscription && !l.proration {
			subs = append(subs, l)
		}
	}
	if len(subs) == 0 {
		log.Debug("stripe: invoice has no subscription lines; nothing to grant")
		return paymentRecord{}, outcomeIgnored, nil
	}
	total, unpriced, err := s.priceLines(subs)
	if err != nil {
		return paymentRecord{}, "", invalid("invoice %s: %v", id, err)
	}
	if len(unpriced) > 0 {
		log.Warn("stripe: subscription lines with prices not in stripe.prices were skipped", zap.Strings("prices", unpriced))
	}
	if total == 0 {
		log.Warn("stripe: no subscription line of this invoice is priced in stripe.prices; nothing granted")
		return paymentRecord{}, outcomeIgnored, nil
	}
	stripeCustomer := idOf(inv.Get("customer"))
	cust, fromMetadata, err := s.invoiceCustomer(ctx, inv, subs)
	if err != nil {
		return paymentRecord{}, "", err
	}
	if cust == "" {
		return paymentRecord{}, "", retryLater("cannot tell which tollgate customer invoice %s belongs to: set metadata.tollgate_customer on the subscription (subscription_data.metadata in Checkout), or let a checkout session with metadata.tollgate_customer or client_reference_id introduce Stripe customer %s first", id, stripeCustomer)
	}
	if fromMetadata {
		if err := s.learnCustomer(ctx, stripeCustomer, cust); err != nil {
			return paymentRecord{}, "", err
		}
	}
	return paymentRecord{Customer: cust, Credits: total, Invoice: id}, "", nil
}

// invoiceCustomer resolves the tollgate customer of an invoice from the
// subscription's metadata (2025-03-31: parent.subscription_details.metadata;
// before: subscription_details.metadata), then its subscription lines'
// metadata, then the customer mapping. fromMetadata says the answer came
// from the event itself, so the mapping may learn it.
func (s *Syncer) invoiceCustomer(ctx context.Context, inv gjson.Result, subs []line) (cust string, fromMetadata bool, err error) {
	for _, p := range []string{"parent.subscription_details.metadata.tollgate_customer", "subscription_details.metadata.tollgate_customer"} {
		if c, err := customerField("invoice "+strings.TrimSuffix(p, ".tollgate_customer")+".tollgate_customer", str(inv, p)); c != "" || err != nil {
			return c, true, err
		}
	}
	for _, l := range subs {
		if c, err := customerField("invoice line metadata.tollgate_customer", l.customer); c != "" || err != nil {
			return c, true, err
		}
	}
	c, err := s.mappedCustomer(ctx, idOf(inv.Get("customer")))
	return c, false, err
}

// ---- refunds and disputes --------------------------------------------------

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

// disputeCustomer finds whose payment a dispute is about, and the payment
// record when the payment is one tollgate recorded. An empty customer with
// a nil error means the payment is not a tollgate customer's.
func (s *Syncer) disputeCustomer(ctx context.Context, log *zap.Logger, d gjson.Result) (cust string, rec paymentRecord, hasRec bool, err error) {
	pi, chargeID, id := idOf(d.Get("payment_intent")), idOf(d.Get("charge")), str(d, "id")
	rec, hasRec, err = s.findPayment(ctx, log, pi)
	if err != nil || hasRec {
		return rec.Customer, rec, hasRec, err
	}
	if s.apiKey == "" {
		return "", rec, false, retryLater("dispute %s: the disputed payment is not a top-up tollgate has recorded; retry after its checkout event is applied, or set stripe.api_key so tollgate can look it up", id)
	}
	// Not a Checkout top-up (a subscription payment, for instance): the
	// payment itself names the Stripe customer.
	var obj gjson.Result
	switch {
	case pi != "":
		obj, err = s.get(ctx, "/v1/payment_intents/"+url.PathEscape(pi), nil)
	case chargeID != "":
		obj, err = s.get(ctx, "/v1/charges/"+url.PathEscape(chargeID), nil)
	default:
		return "", rec, false, nil
	}
	if err != nil {
		return "", rec, false, apiErr("looking up the disputed payment", err)
	}
	if cust, err = customerField("disputed payment metadata.tollgate_customer", str(obj, "metadata.tollgate_customer")); cust != "" || err != nil {
		return cust, rec, false, err
	}
	cust, err = s.mappedCustomer(ctx, idOf(obj.Get("customer")))
	return cust, rec, false, err
}

// applyDisputeCreated suspends the customer while the dispute is open: the
// payment may be reversed, so the credits it bought must not be spent.
func (s *Syncer) applyDisputeCreated(ctx context.Context, log *zap.Logger, d gjson.Result) (outcome, error) {
	id := str(d, "id")
	if id == "" {
		return "", invalid("dispute has no id")
	}
	log = log.With(zap.String("dispute", id))
	if err := keyOK(metaDispute + id + ":suspended"); err != nil {
		return "", err
	}
	if _, lifted, err := s.disputeMark(ctx, id, "lifted"); err != nil || lifted {
		// Closed already (events overtook each other): the ledger keeps
		// the reason lifted anyway.
		return outcomeDuplicate, err
	}
	cust, pinned, err := s.disputeMark(ctx, id, "suspended")
	if err != nil {
		return "", err
	}
	if !pinned {
		if cust, _, _, err = s.disputeCustomer(ctx, log, d); err != nil {
			return "", err
		}
		if cust == "" {
			log.Warn("stripe: disputed payment does not belong to a known tollgate customer; nobody suspended")
			return outcomeIgnored, nil
		}
	}
	if err := s.store.Suspend(ctx, cust, id); err != nil {
		return "", storeErr("suspend", err)
	}
	isNew, err := s.setDisputeMark(ctx, id, "suspended", cust)
	if err != nil {
		return "", err
	}
	log.Info("stripe: customer suspended during dispute", zap.String("customer", cust), zap.String("reason", str(d, "reason")))
	if !isNew {
		return outcomeDuplicate, nil
	}
	return outcomeApplied, nil
}

// applyDisputeClosed lifts the dispute's suspension whatever the result,
// and on "lost" claws back the whole top-up first (the money went back to
// the cardholder), under the refund key so a refund and a lost dispute of
// one payment never take back more than it bought.
func (s *Syncer) applyDisputeClosed(ctx context.Context, log *zap.Logger, d gjson.Result) (outcome, error) {
	id := str(d, "id")
	if id == "" {
		return "", invalid("dispute has no id")
	}
	status := str(d, "status")
	log = log.With(zap.String("dispute", id), zap.String("status", status))
	if err := keyOK(metaDispute + id + ":suspended"); err != nil {
		return "", err
	}
	suspended, pinned, err := s.disputeMark(ctx, id, "suspended")
	if err != nil {
		return "", err
	}
	cust, rec, hasRec, err := s.disputeCustomer(ctx, log, d)
	if err != nil {
		// Whom the dispute suspended is known, and a won dispute needs
		// nothing more; a lost one must find the top-up, so it retries.
		if !pinned || status == "lost" {
			return "", err
		}
		log.Warn("stripe: lifting the suspension without resolving the disputed payment", zap.Error(err))
		cust = ""
	}
	if !pinned && cust == "" {
		log.Warn("stripe: disputed payment does not belong to a known tollgate customer; nothing to lift")
		return outcomeIgnored, nil
	}
	out := outcomeDuplicate
	if status == "lost" {
		if hasRec && rec.Session != "" {
			pi := idOf(d.Get("payment_intent"))
			o, err := s.claw(ctx, log, pi, rec, rec.Credits, id, fmt.Sprintf("Stripe dispute %s lost (top-up %s)", id, rec.Session))
			if err != nil {
				return "", err
			}
			if o == outcomeApplied {
				out = outcomeApplied
			}
		} else {
			log.Info("stripe: lost dispute on a payment that is not a Checkout top-up (a subscription payment); grants are not clawed back automatically", zap.String("customer", cust))
		}
	}
	// Lift whom the dispute suspended and whom it resolves to now (they
	// differ only if the customer mapping changed in between); lifting a
	// customer never suspended only records the reason as lifted.
	lift := []string{suspended}
	if !pinned {
		lift[0] = cust
	} else if cust != "" && cust != suspended {
		lift = append(lift, cust)
	}
	for _, c := range lift {
		if err := s.store.Lift(ctx, c, id); err != nil {
			return "", storeErr("lift suspension", err)
		}
	}
	isNew, err := s.setDisputeMark(ctx, id, "lifted", lift[0])
	if err != nil {
		return "", err
	}
	log.Info("stripe: dispute closed; suspension lifted", zap.Strings("customers", lift))
	if isNew {
		out = outcomeApplied
	}
	return out, nil
}
