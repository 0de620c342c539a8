package stripesync

import (
	"context"
	"encoding/json"
	"fmt"

	"go.uber.org/zap"

	"github.com/tollgate-dev/tollgate/ledger"
	"github.com/tollgate-dev/tollgate/money"
)

// Keys in the store's Meta map and in ledger.Credit.Key. Stripe object ids
// are short ASCII tokens (cus_…, pi_…, cs_…, in_…, dp_…), so every key stays
// within ledger.MaxIDLength; keyOK refuses anything else rather than let the
// store reject it halfway through an event.
const (
	// metaCustomer + Stripe customer id → tollgate customer id.
	metaCustomer = "stripe:customer:"
	// metaPayment + payment intent id → JSON paymentRecord.
	metaPayment = "stripe:payment_intent:"
	// metaDispute + dispute id + ":suspended" / ":lifted" → "1". Only used
	// to report whether an event changed anything; the ledger's own
	// suspension reasons are what the proxy obeys.
	metaDispute = "stripe:dispute:"
	// Credit keys, scoped per customer by the ledger.
	keySession = "stripe:checkout_session:" // + session id: one top-up
	keyInvoice = "stripe:invoice:"          // + invoice id: one grant
	keyClaw    = "stripe:payment_intent:"   // + payment intent id: cumulative claw-back (refunds and lost disputes)
)

// paymentRecord remembers what a payment intent paid for, so a refund or a
// dispute — which name only the charge and payment intent — finds the
// customer and the credits to claw back. Session is set for a Checkout
// top-up; Invoice for a subscription payment (whose grant is not clawed
// back; see docs/stripe.md).
type paymentRecord struct {
	Customer string       `json:"customer"`
	Credits  money.Micros `json:"credits"`
	Session  string       `json:"session,omitempty"`
	Invoice  string       `json:"invoice,omitempty"`
}

func keyOK(key string) error {
	if len(key) > ledger.MaxIDLength {
		return invalid("Stripe id in key %q is longer than %d bytes", key[:40]+"…", ledger.MaxIDLength)
	}
	return nil
}

func (s *Syncer) paymentRecord(ctx context.Context, pi string) (paymentRecord, bool, error) {
	if pi == "" {
		return paymentRecord{}, false, nil
	}
	if err := keyOK(metaPayment + pi); err != nil {
		return paymentRecord{}, false, err
	}
	v, ok, err := s.store.GetMeta(ctx, metaPayment+pi)
	if err != nil || !ok {
		return paymentRecord{}, false, storeErr("read payment record", err)
	}
	var rec paymentRecord
	if err := json.Unmarshal([]byte(v), &rec); err != nil || ledger.ValidateCustomer(rec.Customer) != nil {
		// Only this package writes the record; a corrupt one must not be
		// trusted with money. Treat it as missing so it is rewritten.
		s.log.Warn("stripe: ignoring unreadable payment record", zap.String("payment_intent", pi), zap.Error(err))
		return paymentRecord{}, false, nil
	}
	return rec, true, nil
}

func (s *Syncer) putPaymentRecord(ctx context.Context, pi string, rec paymentRecord) error {
	if pi == "" {
		return nil
	}
	if err := keyOK(metaPayment + pi); err != nil {
		return err
	}
	b, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("encode payment record: %w", err)
	}
	return storeErr("write payment record", s.store.PutMeta(ctx, metaPayment+pi, string(b)))
}

// mappedCustomer returns the tollgate customer last seen with a Stripe
// customer id, or "".
func (s *Syncer) mappedCustomer(ctx context.Context, stripeCustomer string) (string, error) {
	if stripeCustomer == "" || keyOK(metaCustomer+stripeCustomer) != nil {
		return "", nil
	}
	v, ok, err := s.store.GetMeta(ctx, metaCustomer+stripeCustomer)
	if err != nil {
		return "", storeErr("read customer mapping", err)
	}
	if !ok || ledger.ValidateCustomer(v) != nil {
		return "", nil
	}
	return v, nil
}

// learnCustomer records that stripeCustomer is tollgate customer id, so
// later invoices and charges that carry only the Stripe customer find it.
// The latest event that ties both wins.
func (s *Syncer) learnCustomer(ctx context.Context, stripeCustomer, id string) error {
	if stripeCustomer == "" || id == "" {
		return nil
	}
	if err := keyOK(metaCustomer + stripeCustomer); err != nil {
		return err
	}
	old, ok, err := s.store.GetMeta(ctx, metaCustomer+stripeCustomer)
	if err != nil {
		return storeErr("read customer mapping", err)
	}
	if ok && old == id {
		return nil
	}
	if err := s.store.PutMeta(ctx, metaCustomer+stripeCustomer, id); err != nil {
		return storeErr("write customer mapping", err)
	}
	if ok {
		s.log.Info("stripe: customer mapping changed", zap.String("stripe_customer", stripeCustomer), zap.String("from", old), zap.String("to", id))
	} else {
		s.log.Info("stripe: customer mapping learned", zap.String("stripe_customer", stripeCustomer), zap.String("customer", id))
	}
	return nil
}

// mark sets a dispute marker and reports whether it was new.
func (s *Syncer) mark(ctx context.Context, dispute, what string) (bool, error) {
	key := metaDispute + dispute + ":" + what
	if err := keyOK(key); err != nil {
		return false, err
	}
	_, ok, err := s.store.GetMeta(ctx, key)
	if err != nil {
		return false, storeErr("read dispute marker", err)
	}
	if ok {
		return false, nil
	}
	return true, storeErr("write dispute marker", s.store.PutMeta(ctx, key, "1"))
}

func (s *Syncer) marked(ctx context.Context, dispute, what string) (bool, error) {
	key := metaDispute + dispute + ":" + what
	if err := keyOK(key); err != nil {
		return false, err
	}
	_, ok, err := s.store.GetMeta(ctx, key)
	return ok, storeErr("read dispute marker", err)
}
