package stripesync

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/tidwall/gjson"
	"go.uber.org/zap"

	"github.com/tollgate-dev/tollgate/ledger"
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
		EventSubscriptionCreated,
		EventSubscriptionUpdated,
		EventSubscriptionDeleted,
		EventInvoicePaymentFailed,
	}
}

// apply applies one event, whether delivered by a webhook (after its
// signature was verified) or listed by the Events API. It is the only way
// events change the store, so both routes behave identically: the same
// livemode rule (Options.Livemode), the same effects.
func (s *Syncer) apply(ctx context.Context, ev gjson.Result, source string) (Outcome, error) {
	received := s.now()
	typ := ev.Get("type").String()
	log := s.log.With(
		zap.String("event", ev.Get("id").String()),
		zap.String("type", typ),
		zap.String("source", source),
		zap.String("api_version", ev.Get("api_version").String()),
	)
	var (
		out Outcome
		err error
	)
	switch lm := ev.Get("livemode"); {
	case lm.Type != gjson.True && lm.Type != gjson.False:
		err = invalid("event %s has no boolean livemode, so tollgate cannot tell a test event from a live one; Stripe sets it on every event", ev.Get("id").String())
	case lm.Bool() != s.livemode:
		// Acknowledged, so that Stripe stops sending it: no retry could
		// ever apply it here.
		out = ignored("%s event on a %s endpoint: stripe.livemode is %t, so only %s events are applied here",
			modeName(lm.Bool()), strings.TrimSuffix(modeName(s.livemode), "-mode"), s.livemode, modeName(s.livemode))
		log.Warn("stripe: event of the other mode ignored; stripe.livemode names the mode this server applies: point only that mode's webhook endpoint here, and use that mode's API key",
			zap.Bool("event_livemode", lm.Bool()), zap.Bool("livemode", s.livemode))
	default:
		out, err = s.applyType(ctx, log, ev, typ)
	}
	if err != nil {
		out = failed(err)
	}
	s.journal.add(ev, source, received, out)
	label := typ
	if out.Result == Ignored && err == nil && !isHandled(typ) {
		label = "other"
	}
	if err != nil {
		ans := answer(err)
		s.events.WithLabelValues(label, ans.Code).Inc()
		if ans.Status >= 500 {
			log.Error("stripe: event not applied; Stripe will retry", zap.String("code", ans.Code), zap.Error(err))
		} else {
			log.Warn("stripe: event refused; fix the data or credit by hand", zap.String("code", ans.Code), zap.Error(err))
		}
		return out, err
	}
	s.events.WithLabelValues(label, string(out.Result)).Inc()
	if label == "other" {
		log.Debug("stripe: event type not handled", zap.String("outcome", string(out.Result)))
	} else {
		log.Info("stripe: event processed", zap.String("outcome", string(out.Result)), zap.String("detail", out.detail()))
	}
	return out, nil
}

// modeName names a livemode for people.
func modeName(live bool) string {
	if live {
		return "live-mode"
	}
	return "test-mode"
}

// applyType applies an event of the configured mode by its type.
func (s *Syncer) applyType(ctx context.Context, log *zap.Logger, ev gjson.Result, typ string) (Outcome, error) {
	if !isHandled(typ) {
		return ignored("tollgate does not act on %s events", typ), nil
	}
	obj := ev.Get("data.object")
	if !obj.IsObject() {
		return Outcome{}, invalid("event %s has no data.object", ev.Get("id").String())
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
	case EventSubscriptionCreated, EventSubscriptionUpdated, EventSubscriptionDeleted:
		return s.applySubscription(ctx, log, ev, obj)
	case EventInvoicePaymentFailed:
		return s.applyPaymentFailed(ctx, log, ev, obj)
	}
	return ignored("tollgate does not act on %s events", typ), nil
}

func isHandled(typ string) bool {
	for _, t := range EventTypes() {
		if t == typ {
			return true
		}
	}
	return false
}

// creditGrants credits the lots of the payment rec records, each once
// (creditOnce): applied when any of them changed a balance, with the
// first entry written.
func (s *Syncer) creditGrants(ctx context.Context, log *zap.Logger, rec paymentRecord, what, conflict string) (Outcome, error) {
	out := Outcome{Result: Duplicate, Customer: rec.Customer}
	var first, applied string
	for _, c := range rec.credits() {
		res, ok, err := s.creditOnce(ctx, log, c, what, conflict)
		if err != nil {
			return Outcome{}, err
		}
		if !ok {
			out.Detail = fmt.Sprintf("%s was credited before with a different amount (prices changed and its payment record was lost?); the first amount stands", rec.object())
			continue
		}
		if first == "" {
			first = res.Entry.ID
		}
		if res.Applied {
			out.Result = Applied
			if applied == "" {
				applied = res.Entry.ID
			}
		}
	}
	switch {
	case out.Result == Applied:
		out.LedgerEntry = applied
		out.Detail = fmt.Sprintf("%s credits for %s", rec.Credits, rec.object())
		if n := len(rec.credits()); n > 1 {
			out.Detail += fmt.Sprintf(", in %d lots", n)
		}
	case out.Detail == "":
		out.Detail = fmt.Sprintf("%s was credited before (ledger entry %s); nothing changed", rec.object(), first)
	}
	return out, nil
}

// creditOnce applies c, which its business object (c.Key: a checkout
// session, an invoice) grants at most once, and logs it as what. A replay
// is not Applied. ok is false for a key credited before with another
// amount (prices changed and the payment record was lost): the first
// amount stands, and conflict is logged.
func (s *Syncer) creditOnce(ctx context.Context, log *zap.Logger, c ledger.Credit, what, conflict string) (res ledger.CreditResult, ok bool, err error) {
	res, err = s.store.Credit(ctx, c)
	if errors.Is(err, ledger.ErrIdempotencyConflict) {
		log.Warn(conflict, zap.String("customer", c.Customer))
		return ledger.CreditResult{}, false, nil
	}
	if err != nil {
		return ledger.CreditResult{}, false, storeErr("credit "+what, err)
	}
	log.Info("stripe: "+what, zap.String("customer", c.Customer), zap.Stringer("credits", c.Amount), zap.Bool("new", res.Applied))
	return res, true, nil
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
