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
func (s *Syncer) applyDisputeCreated(ctx context.Context, log *zap.Logger, d gjson.Result) (Outcome, error) {
	id := str(d, "id")
	if id == "" {
		return Outcome{}, invalid("dispute has no id")
	}
	log = log.With(zap.String("dispute", id))
	if err := keyOK(metaDispute + id + ":suspended"); err != nil {
		return Outcome{}, err
	}
	if cust, lifted, err := s.disputeMark(ctx, id, "lifted"); err != nil || lifted {
		// Closed already (events overtook each other): the ledger keeps
		// the reason lifted anyway.
		return Outcome{Result: Duplicate, Customer: cust, Detail: "dispute " + id + " was closed before this event arrived; nobody suspended"}, err
	}
	cust, pinned, err := s.disputeMark(ctx, id, "suspended")
	if err != nil {
		return Outcome{}, err
	}
	if !pinned {
		if cust, _, _, err = s.disputeCustomer(ctx, log, d); err != nil {
			return Outcome{}, err
		}
		if cust == "" {
			log.Warn("stripe: disputed payment does not belong to a known tollgate customer; nobody suspended")
			return ignored("the payment disputed in %s does not belong to a known tollgate customer; nobody suspended", id), nil
		}
	}
	if err := s.store.Suspend(ctx, cust, id); err != nil {
		return Outcome{}, storeErr("suspend", err)
	}
	isNew, err := s.setDisputeMark(ctx, id, "suspended", cust)
	if err != nil {
		return Outcome{}, err
	}
	log.Info("stripe: customer suspended during dispute", zap.String("customer", cust), zap.String("reason", str(d, "reason")))
	if !isNew {
		return Outcome{Result: Duplicate, Customer: cust, Detail: "already suspended while dispute " + id + " is open; nothing changed"}, nil
	}
	return Outcome{Result: Applied, Customer: cust, Detail: fmt.Sprintf("suspended while dispute %s (reason %s) is open: requests get 403 customer_suspended until it closes", id, str(d, "reason"))}, nil
}

// applyDisputeClosed lifts the dispute's suspension whatever the result,
// and on "lost" claws back everything the payment bought first, a top-up
// or an invoice's grant (the money went back to the cardholder), under the
// refund key so a refund and a lost dispute of one payment never take
// back more than it bought.
func (s *Syncer) applyDisputeClosed(ctx context.Context, log *zap.Logger, d gjson.Result) (Outcome, error) {
	id := str(d, "id")
	if id == "" {
		return Outcome{}, invalid("dispute has no id")
	}
	status := str(d, "status")
	log = log.With(zap.String("dispute", id), zap.String("status", status))
	if err := keyOK(metaDispute + id + ":suspended"); err != nil {
		return Outcome{}, err
	}
	suspended, pinned, err := s.disputeMark(ctx, id, "suspended")
	if err != nil {
		return Outcome{}, err
	}
	cust, rec, hasRec, err := s.disputeCustomer(ctx, log, d)
	if err != nil {
		// Whom the dispute suspended is known, and a won dispute needs
		// nothing more; a lost one must find the top-up, so it retries.
		if !pinned || status == "lost" {
			return Outcome{}, err
		}
		log.Warn("stripe: lifting the suspension without resolving the disputed payment", zap.Error(err))
		cust = ""
	}
	if !pinned && cust == "" {
		log.Warn("stripe: disputed payment does not belong to a known tollgate customer; nothing to lift")
		return ignored("the payment disputed in %s does not belong to a known tollgate customer; nothing to lift", id), nil
	}
	out := Outcome{Result: Duplicate}
	claw := ""
	if status == "lost" {
		pi := idOf(d.Get("payment_intent"))
		if !hasRec {
			// A subscription payment: the invoice it paid, if any.
			if rec, hasRec, err = s.invoicePayment(ctx, log, pi, ""); err != nil {
				return Outcome{}, err
			}
		}
		if hasRec {
			o, err := s.claw(ctx, log, pi, rec, rec.Credits, id, fmt.Sprintf("Stripe dispute %s lost (%s)", id, rec.paidFor()))
			if err != nil {
				return Outcome{}, err
			}
			if o.Result == Applied {
				out, claw = o, "; "+o.Detail
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
			return Outcome{}, storeErr("lift suspension", err)
		}
	}
	isNew, err := s.setDisputeMark(ctx, id, "lifted", lift[0])
	if err != nil {
		return Outcome{}, err
	}
	log.Info("stripe: dispute closed; suspension lifted", zap.Strings("customers", lift))
	out.Customer = lift[0]
	switch {
	case isNew || out.Result == Applied:
		out.Result = Applied
		out.Detail = fmt.Sprintf("dispute %s closed (%s): suspension lifted%s", id, status, claw)
	default:
		out.Detail = "dispute " + id + " was closed before; nothing changed"
	}
	return out, nil
}
