package stripesync

import (
	"context"
	"fmt"
	"net/url"

	"github.com/tidwall/gjson"
	"go.uber.org/zap"
)

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
// and on "lost" claws back everything the payment bought first, a top-up
// or an invoice's grant (the money went back to the cardholder), under the
// refund key so a refund and a lost dispute of one payment never take
// back more than it bought.
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
		pi := idOf(d.Get("payment_intent"))
		if !hasRec {
			// A subscription payment: the invoice it paid, if any.
			if rec, hasRec, err = s.invoicePayment(ctx, log, pi, ""); err != nil {
				return "", err
			}
		}
		if hasRec {
			o, err := s.claw(ctx, log, pi, rec, rec.Credits, id, fmt.Sprintf("Stripe dispute %s lost (%s)", id, rec.paidFor()))
			if err != nil {
				return "", err
			}
			if o == outcomeApplied {
				out = outcomeApplied
			}
		} else {
			log.Info("stripe: lost dispute on a payment that bought no tollgate credits; nothing to claw back", zap.String("customer", cust))
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
