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
	// metaSession + checkout session id → JSON paymentRecord of its
	// top-up, written once (bindRecord): the customer the session credits.
	metaSession = "stripe:checkout_session:"
	// metaInvoice + invoice id → JSON paymentRecord of its grant, written
	// once (bindRecord).
	metaInvoice = "stripe:invoice:"
	// metaDispute + dispute id + ":suspended" / ":lifted" → the tollgate
	// customer. ":suspended" pins whom a dispute suspended, so its close
	// lifts that customer whatever the mapping says by then; both tell
	// whether an event changed anything. The ledger's own suspension
	// reasons are what the proxy obeys.
	metaDispute = "stripe:dispute:"

	// Credit keys, scoped per customer by the ledger.
	keySession = "stripe:checkout_session:" // + session id: one top-up
	keyInvoice = "stripe:invoice:"          // + invoice id: one grant
	keyClaw    = "stripe:payment_intent:"   // + payment intent id: cumulative claw-back (refunds and lost disputes)
)

// paymentRecord remembers what a payment paid for and whom it credited:
// under a payment intent, so a refund or a dispute — which name only the
// charge and payment intent — finds the customer and the credits to claw
// back; under an invoice, so a replay grants the same customer the same
// lots. Session is set for a Checkout top-up; Invoice for a subscription
// payment (see the README's Stripe section, "What each payment does").
type paymentRecord struct {
	Customer string       `json:"customer"`
	Credits  money.Micros `json:"credits"`
	Session  string       `json:"session,omitempty"`
	Invoice  string       `json:"invoice,omitempty"`
	// Grants are the lots the payment credits, adding up to Credits;
	// none in a record written before lots (see credits).
	Grants []grant `json:"grants,omitempty"`
}

func keyOK(key string) error {
	if len(key) > ledger.MaxIDLength {
		return invalid("Stripe id in key %q is longer than %d bytes", key[:40]+"…", ledger.MaxIDLength)
	}
	return nil
}

// paymentRecord reads the record of payment intent pi.
func (s *Syncer) paymentRecord(ctx context.Context, pi string) (paymentRecord, bool, error) {
	if pi == "" {
		return paymentRecord{}, false, nil
	}
	return s.record(ctx, metaPayment+pi)
}

func (s *Syncer) record(ctx context.Context, key string) (paymentRecord, bool, error) {
	if err := keyOK(key); err != nil {
		return paymentRecord{}, false, err
	}
	v, ok, err := s.store.GetMeta(ctx, key)
	if err != nil || !ok {
		return paymentRecord{}, false, storeErr("read payment record", err)
	}
	var rec paymentRecord
	if err := json.Unmarshal([]byte(v), &rec); err != nil || ledger.ValidateCustomer(rec.Customer) != nil || rec.Credits < 0 || !rec.checkGrants() {
		// Only this package writes records; a corrupt one must not be
		// trusted with money. Treat it as missing so it is rewritten.
		s.log.Warn("stripe: ignoring unreadable payment record", zap.String("key", key), zap.Error(err))
		return paymentRecord{}, false, nil
	}
	return rec, true, nil
}

func (s *Syncer) putRecord(ctx context.Context, key string, rec paymentRecord) error {
	if err := keyOK(key); err != nil {
		return err
	}
	b, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("encode payment record: %w", err)
	}
	return storeErr("write payment record", s.store.PutMeta(ctx, key, string(b)))
}

// bindRecord binds a business object (a checkout session or an invoice)
// to rec unless it is bound already, and returns the record that stands.
// Credit keys are scoped to the customer, so two first applications of one
// object that resolved different customers (the Stripe customer mapping
// changed between them) would otherwise credit both; the write-if-absent
// makes every application credit the customer of the first binding. A
// binding this package cannot read is replaced, as record treats it as
// missing.
func (s *Syncer) bindRecord(ctx context.Context, key string, rec paymentRecord) (paymentRecord, error) {
	if err := keyOK(key); err != nil {
		return paymentRecord{}, err
	}
	b, err := json.Marshal(rec)
	if err != nil {
		return paymentRecord{}, fmt.Errorf("encode payment record: %w", err)
	}
	current, stored, err := s.store.PutMetaIfAbsent(ctx, key, string(b))
	if err != nil {
		return paymentRecord{}, storeErr("write payment record", err)
	}
	if stored {
		return rec, nil
	}
	var bound paymentRecord
	if err := json.Unmarshal([]byte(current), &bound); err != nil || ledger.ValidateCustomer(bound.Customer) != nil || bound.Credits < 0 {
		s.log.Warn("stripe: replacing unreadable payment record", zap.String("key", key), zap.Error(err))
		return rec, s.putRecord(ctx, key, rec)
	}
	if bound.Customer != rec.Customer {
		s.log.Info("stripe: already bound to another customer by an earlier application; crediting that one",
			zap.String("key", key), zap.String("bound", bound.Customer), zap.String("resolved", rec.Customer))
	}
	return bound, nil
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

// disputeMark reads a dispute marker: the customer it names, if set.
func (s *Syncer) disputeMark(ctx context.Context, dispute, what string) (string, bool, error) {
	key := metaDispute + dispute + ":" + what
	if err := keyOK(key); err != nil {
		return "", false, err
	}
	v, ok, err := s.store.GetMeta(ctx, key)
	if err != nil {
		return "", false, storeErr("read dispute marker", err)
	}
	return v, ok, nil
}

// setDisputeMark sets a dispute marker to customer unless it is set, and
// reports whether it was new.
func (s *Syncer) setDisputeMark(ctx context.Context, dispute, what, customer string) (bool, error) {
	if _, ok, err := s.disputeMark(ctx, dispute, what); err != nil || ok {
		return false, err
	}
	return true, storeErr("write dispute marker", s.store.PutMeta(ctx, metaDispute+dispute+":"+what, customer))
}
