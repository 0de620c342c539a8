package stripesync

import (
	"context"
	"net/url"
	"strings"

	"github.com/tidwall/gjson"
	"go.uber.org/zap"
)

// applyInvoice grants the credits of a paid invoice's subscription lines,
// once per invoice.
func (s *Syncer) applyInvoice(ctx context.Context, log *zap.Logger, inv gjson.Result) (Outcome, error) {
	id := str(inv, "id")
	if id == "" {
		return Outcome{}, invalid("invoice has no id")
	}
	log = log.With(zap.String("invoice", id))
	if err := keyOK(keyInvoice + id); err != nil {
		return Outcome{}, err
	}
	// A replay reuses what the first delivery worked out, so neither a
	// changed customer mapping (which could grant the invoice to a second
	// customer) nor changed prices can make it disagree.
	rec, ok, err := s.record(ctx, metaInvoice+id)
	if err != nil {
		return Outcome{}, err
	}
	if !ok {
		var out Outcome
		rec, out, err = s.invoiceGrant(ctx, log, inv)
		if err != nil || out.Result != "" {
			return out, err
		}
		if rec, err = s.bindRecord(ctx, metaInvoice+id, rec); err != nil {
			return Outcome{}, err
		}
		// Before 2025-03-31 the invoice names its payment intent;
		// remember it so a dispute on that payment finds the customer.
		if pi := idOf(inv.Get("payment_intent")); pi != "" {
			if err := s.putRecord(ctx, metaPayment+pi, rec); err != nil {
				return Outcome{}, err
			}
		}
	}
	return s.creditGrants(ctx, log, rec, "subscription grant", "stripe: invoice already granted with a different amount; keeping the first")
}

// invoiceGrant works out whom an invoice credits and how much. An outcome
// with a Result means there is nothing to grant.
func (s *Syncer) invoiceGrant(ctx context.Context, log *zap.Logger, inv gjson.Result) (paymentRecord, Outcome, error) {
	id := str(inv, "id")
	var lines []line
	needLookup := false
	for _, it := range inv.Get("lines.data").Array() {
		l := parseLine(it)
		lines = append(lines, l)
		if _, ok := s.price(l); !ok && l.subscription && l.priceOnlyID {
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
				return paymentRecord{}, Outcome{}, apiErr("reading the lines of invoice "+id, err)
			}
		case more:
			return paymentRecord{}, Outcome{}, retryLater("invoice %s has more lines than the event carries; reading them needs stripe.api_key", id)
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
		return paymentRecord{}, ignored("invoice %s has no subscription lines (one-off invoices buy no credits); nothing to grant", id), nil
	}
	grants, err := s.priceLines(log, subs, true, s.now())
	if err != nil {
		return paymentRecord{}, Outcome{}, invalid("invoice %s: %v", id, err)
	}
	if len(grants.unpriced) > 0 {
		log.Warn("stripe: subscription lines with prices not in stripe.prices were skipped", zap.Strings("prices", grants.unpriced))
	}
	if grants.total == 0 && len(grants.unpriced) == 0 {
		log.Debug("stripe: the invoice's prices grant plans and no credits")
		return paymentRecord{}, ignored("invoice %s: its prices set a plan and grant no credits", id), nil
	}
	if grants.total == 0 {
		log.Warn("stripe: no subscription line of this invoice is priced in stripe.prices; nothing granted")
		return paymentRecord{}, ignored("%s", grants.nothing("invoice "+id)), nil
	}
	stripeCustomer := idOf(inv.Get("customer"))
	cust, fromMetadata, err := s.invoiceCustomer(ctx, inv, subs)
	if err != nil {
		return paymentRecord{}, Outcome{}, err
	}
	if cust == "" {
		return paymentRecord{}, Outcome{}, retryLater("cannot tell which tollgate customer invoice %s belongs to: set metadata.tollgate_customer on the subscription (subscription_data.metadata in Checkout), or let a checkout session with metadata.tollgate_customer or client_reference_id introduce Stripe customer %s first", id, stripeCustomer)
	}
	if fromMetadata {
		if err := s.learnCustomer(ctx, stripeCustomer, cust); err != nil {
			return paymentRecord{}, Outcome{}, err
		}
	}
	return paymentRecord{Customer: cust, Credits: grants.total, Invoice: id, Grants: grants.grants}, Outcome{}, nil
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
