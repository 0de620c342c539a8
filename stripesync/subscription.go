package stripesync

import (
	"context"
	"fmt"
	"net/url"
	"time"

	"github.com/tidwall/gjson"
	"go.uber.org/zap"

	"github.com/tollgate-dev/tollgate/plan"
)

// Subscription events put a customer on the plan of their subscription's
// price (stripe.prices.<id>.plan; DESIGN "Plans"). Each one records the
// subscription's state in the ledger (ledger.Store.PutSubscription),
// where the proxy reads it; package plan decides what the state means at
// each moment (a past_due grace, the end of a cancelled period).
//
// Stripe sends them late and out of order, so every state is written
// with an ordering key and the ledger keeps the newest: without an API
// key, the key is the event's created time (Stripe's seconds, times 1000;
// a terminal status — canceled, incomplete_expired — adds 999, since
// nothing follows it within its second). With an API key, tollgate does
// not trust the event's copy at all: it fetches the subscription and
// records what Stripe says now, keyed by when it asked (in ms), so that a
// late or replayed event records the current state rather than an old
// one, and two events of one second cannot be told apart wrongly.

// The subscription event types.
const (
	EventSubscriptionCreated  = "customer.subscription.created"
	EventSubscriptionUpdated  = "customer.subscription.updated"
	EventSubscriptionDeleted  = "customer.subscription.deleted"
	EventInvoicePaymentFailed = "invoice.payment_failed"
)

// orderTerminal is added to the ordering key of a terminal state.
const orderTerminal = 999

// applySubscription records the state of the subscription an event
// carries (a customer.subscription.* event's object).
func (s *Syncer) applySubscription(ctx context.Context, log *zap.Logger, ev, sub gjson.Result) (Outcome, error) {
	id := str(sub, "id")
	if id == "" {
		return Outcome{}, invalid("event %s: the subscription has no id", str(ev, "id"))
	}
	log = log.With(zap.String("subscription", id))
	order := ev.Get("created").Int() * 1000
	if s.apiKey != "" {
		var err error
		if sub, order, err = s.fetchSubscription(ctx, id); err != nil {
			return Outcome{}, err
		}
	} else if terminal(str(sub, "status")) {
		order += orderTerminal
	}
	return s.recordSubscription(ctx, log, ev, sub, order)
}

// fetchSubscription reads subscription id as Stripe has it now, and the
// ordering key of that answer: when it was asked for.
func (s *Syncer) fetchSubscription(ctx context.Context, id string) (gjson.Result, int64, error) {
	if err := keyOK(id); err != nil {
		return gjson.Result{}, 0, err
	}
	asked := s.now().UnixMilli()
	sub, err := s.get(ctx, "/v1/subscriptions/"+url.PathEscape(id), nil)
	if err != nil {
		return gjson.Result{}, 0, apiErr("reading subscription "+id, err)
	}
	return sub, asked, nil
}

// applyPaymentFailed handles invoice.payment_failed: the subscription it
// bills is about to be (or already is) past_due. With an API key the
// subscription is fetched and recorded as it stands. Without one, a
// renewal invoice's failure marks the recorded subscription past_due (a
// first invoice's leaves it incomplete, which gives no plan anyway);
// customer.subscription.updated brings the status Stripe settles on.
func (s *Syncer) applyPaymentFailed(ctx context.Context, log *zap.Logger, ev, inv gjson.Result) (Outcome, error) {
	subID := idOf(inv.Get("parent.subscription_details.subscription"))
	if subID == "" {
		subID = idOf(inv.Get("subscription"))
	}
	if subID == "" {
		log.Debug("stripe: the failed invoice bills no subscription")
		return ignored("invoice %s bills no subscription; a failed one-off payment changes no plan", str(inv, "id")), nil
	}
	log = log.With(zap.String("subscription", subID), zap.String("invoice", str(inv, "id")))
	if s.apiKey != "" {
		sub, order, err := s.fetchSubscription(ctx, subID)
		if err != nil {
			return Outcome{}, err
		}
		return s.recordSubscription(ctx, log, ev, sub, order)
	}
	if str(inv, "billing_reason") == "subscription_create" {
		log.Debug("stripe: the first invoice of a subscription failed; it stays incomplete")
		return ignored("the first invoice of subscription %s failed: it stays incomplete, which gives no plan", subID), nil
	}
	cust, err := s.subscriptionCustomer(ctx, inv, "parent.subscription_details.metadata.tollgate_customer", "subscription_details.metadata.tollgate_customer")
	if err != nil {
		return Outcome{}, err
	}
	if cust == "" {
		// Nothing recorded can be marked: the subscription's own events
		// introduce the customer (and retry until they can).
		log.Debug("stripe: the failed invoice's customer is not known; nothing to mark past_due")
		return ignored("no tollgate customer is known for subscription %s yet; its own events will set its state", subID), nil
	}
	cur, err := s.recorded(ctx, cust)
	if err != nil {
		return Outcome{}, err
	}
	if cur == nil || cur.ID != subID || (cur.Status != plan.StatusActive && cur.Status != plan.StatusTrialing) {
		log.Debug("stripe: no active record of this subscription to mark past_due")
		return ignored("no active record of subscription %s to mark past_due", subID).withCustomer(cust), nil
	}
	next := *cur
	next.Status = plan.StatusPastDue
	next.PastDueSince = time.Unix(ev.Get("created").Int(), 0).UTC()
	return s.putSubscription(ctx, log, cust, &next, ev.Get("created").Int()*1000)
}

// recordSubscription writes the state of subscription object sub for its
// customer, with ordering key order.
func (s *Syncer) recordSubscription(ctx context.Context, log *zap.Logger, ev, sub gjson.Result, order int64) (Outcome, error) {
	id := str(sub, "id")
	if !s.pricedItems(sub) {
		// Not a subscription tollgate prices: another product on the
		// same Stripe account.
		log.Debug("stripe: no item of the subscription has a price in stripe.prices; ignored")
		return ignored("no item of subscription %s has a price in stripe.prices", id), nil
	}
	stripeCustomer := idOf(sub.Get("customer"))
	cust, err := s.subscriptionCustomer(ctx, sub, "metadata.tollgate_customer")
	if err != nil || cust == "" {
		return Outcome{}, s.unknownCustomer(err, id, stripeCustomer)
	}
	if str(sub, "metadata.tollgate_customer") != "" {
		if err := s.learnCustomer(ctx, stripeCustomer, cust); err != nil {
			return Outcome{}, err
		}
	}
	next := &plan.Subscription{
		ID:                id,
		Status:            str(sub, "status"),
		Customer:          stripeCustomer,
		CancelAtPeriodEnd: sub.Get("cancel_at_period_end").Bool(),
		CancelAt:          unixTime(sub.Get("cancel_at").Int()),
		CurrentPeriodEnd:  unixTime(periodEnd(sub)),
	}
	next.Plan, next.Price = s.subscriptionPlan(log, sub)
	cur, err := s.recorded(ctx, cust)
	if err != nil {
		return Outcome{}, err
	}
	if cur != nil && cur.ID != id && givesPlan(cur.Status) && !givesPlan(next.Status) {
		// Another subscription of this customer is live: the end of an
		// old one (an upgrade by cancel and resubscribe) must not take
		// its plan away.
		log.Info("stripe: subscription state ignored: the customer's recorded subscription is another, live one",
			zap.String("customer", cust), zap.String("status", next.Status), zap.String("recorded", cur.ID))
		return ignored("subscription %s is %s, but the customer's plan comes from another, live subscription %s", id, next.Status, cur.ID).withCustomer(cust), nil
	}
	if next.Status == plan.StatusPastDue {
		next.PastDueSince = time.Unix(ev.Get("created").Int(), 0).UTC()
		if cur != nil && cur.ID == id && cur.Status == plan.StatusPastDue && !cur.PastDueSince.IsZero() && cur.PastDueSince.Before(next.PastDueSince) {
			next.PastDueSince = cur.PastDueSince // the grace runs from the first sign
		}
	}
	return s.putSubscription(ctx, log, cust, next, order)
}

func (s *Syncer) putSubscription(ctx context.Context, log *zap.Logger, cust string, next *plan.Subscription, order int64) (Outcome, error) {
	w, err := s.store.PutSubscription(ctx, cust, plan.Encode(next), order)
	if err != nil {
		return Outcome{}, storeErr("record subscription", err)
	}
	fields := []zap.Field{zap.String("customer", cust), zap.String("status", next.Status), zap.String("plan", next.Plan), zap.Int64("order", order)}
	switch {
	case w.Stale:
		log.Info("stripe: subscription state older than the recorded one; nothing changed", fields...)
		return Outcome{Result: Duplicate, Customer: cust, StripeCustomer: next.Customer,
			Detail: fmt.Sprintf("subscription %s: a newer state is already recorded; this older one changed nothing", next.ID)}, nil
	case !w.Changed:
		log.Debug("stripe: subscription state already recorded", fields...)
		return Outcome{Result: Duplicate, Customer: cust, StripeCustomer: next.Customer,
			Detail: fmt.Sprintf("subscription %s: %s already recorded", next.ID, next.Status)}, nil
	}
	log.Info("stripe: subscription state recorded", fields...)
	detail := fmt.Sprintf("subscription %s recorded as %s", next.ID, next.Status)
	if next.Plan != "" {
		detail += ", plan " + next.Plan
	}
	return Outcome{Result: Applied, Customer: cust, StripeCustomer: next.Customer, Detail: detail}, nil
}

// recorded reads the subscription state recorded for customer, nil for
// none (or one that does not decode: it is then simply replaced).
func (s *Syncer) recorded(ctx context.Context, cust string) (*plan.Subscription, error) {
	ps, err := s.store.Plan(ctx, cust)
	if err != nil {
		return nil, storeErr("read subscription state", err)
	}
	st, err := plan.Decode(ps.Version, ps.Subscription, "")
	if err != nil {
		s.log.Warn("stripe: the recorded subscription state does not decode; replacing it", zap.String("customer", cust), zap.Error(err))
		return nil, nil
	}
	return st.Subscription, nil
}

// subscriptionCustomer resolves the tollgate customer of a subscription
// (or of the invoice of one) from the metadata at paths, then the Stripe
// customer mapping.
func (s *Syncer) subscriptionCustomer(ctx context.Context, obj gjson.Result, paths ...string) (string, error) {
	for _, p := range paths {
		if c, err := customerField(p, str(obj, p)); c != "" || err != nil {
			return c, err
		}
	}
	return s.mappedCustomer(ctx, idOf(obj.Get("customer")))
}

func (s *Syncer) unknownCustomer(err error, sub, stripeCustomer string) error {
	if err != nil {
		return err
	}
	return retryLater("cannot tell which tollgate customer subscription %s belongs to: set metadata.tollgate_customer on the subscription (subscription_data.metadata in Checkout), or let a checkout session with metadata.tollgate_customer or client_reference_id introduce Stripe customer %s first", sub, stripeCustomer)
}

// subscriptionPlan is the plan the subscription's items name through
// stripe.prices, and the price it came from: the first item whose price
// (by id, then lookup key) has a plan.
func (s *Syncer) subscriptionPlan(log *zap.Logger, sub gjson.Result) (name, price string) {
	for _, it := range sub.Get("items.data").Array() {
		l := line{price: idOf(it.Get("price")), lookupKey: str(it, "price.lookup_key")}
		p, ok := s.price(l)
		if !ok || p.Plan == "" {
			continue
		}
		if name == "" {
			name, price = p.Plan, l.price
		} else if p.Plan != name {
			log.Warn("stripe: the subscription's items name several plans; the first item's stands", zap.String("plan", name), zap.String("other", p.Plan))
		}
	}
	return name, price
}

// pricedItems reports whether any item of the subscription has a price
// in stripe.prices (by id or lookup key).
func (s *Syncer) pricedItems(sub gjson.Result) bool {
	for _, it := range sub.Get("items.data").Array() {
		if _, ok := s.price(line{price: idOf(it.Get("price")), lookupKey: str(it, "price.lookup_key")}); ok {
			return true
		}
	}
	return false
}

// periodEnd is the end of the subscription's current period: its own
// current_period_end before 2025-03-31, its items' since (the latest of
// them).
func periodEnd(sub gjson.Result) int64 {
	if v := sub.Get("current_period_end").Int(); v > 0 {
		return v
	}
	var end int64
	for _, it := range sub.Get("items.data").Array() {
		end = max(end, it.Get("current_period_end").Int())
	}
	return end
}

func unixTime(sec int64) time.Time {
	if sec <= 0 {
		return time.Time{}
	}
	return time.Unix(sec, 0).UTC()
}

// terminal reports whether a subscription in status can change no more.
func terminal(status string) bool {
	return status == plan.StatusCanceled || status == plan.StatusIncompleteExpired
}

// givesPlan reports whether a subscription in status may give its plan.
func givesPlan(status string) bool {
	return status == plan.StatusActive || status == plan.StatusTrialing || status == plan.StatusPastDue
}
