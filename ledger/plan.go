package ledger

import (
	"errors"
	"fmt"
	"unicode/utf8"
)

// PlanState is what a customer's plan is computed from, kept beside the
// customer's money so that Reserve can check it in the same atomic step:
// the last subscription state written (with the ordering key it was
// written with) and an override. The ledger knows nothing of plans or
// Stripe: both values are opaque text (package plan's JSON), and Version
// tells a caller whether the state it computed a plan from is still the
// stored one.
type PlanState struct {
	// Version is 0 for a customer whose plan inputs were never written,
	// and grows by one with every write that changes Subscription or
	// Override.
	Version int64
	// Subscription is the last subscription state applied; "" for none.
	Subscription string
	// SubscriptionOrder is the ordering key Subscription was written
	// with (PutSubscription).
	SubscriptionOrder int64
	// Override is the override in force; "" for none.
	Override string
}

// PlanWrite is what PutSubscription or PutOverride did.
type PlanWrite struct {
	// State is the stored state after the call (the standing one when
	// nothing changed).
	State PlanState
	// Changed is true when the call changed Subscription or Override,
	// and so Version.
	Changed bool
	// Stale is true when PutSubscription was refused because a state
	// with a larger ordering key is stored.
	Stale bool
}

// PlanUnknown is the version to give ReservePlan when the caller knows
// nothing of the customer's plan inputs yet: no stored version equals it,
// so the call always returns the state in a *PlanChangedError.
const PlanUnknown int64 = -1

// MaxPlanValue bounds the values of PutSubscription and PutOverride.
const MaxPlanValue = 4096

// ErrPlanChanged is matched by *PlanChangedError.
var ErrPlanChanged = errors.New("ledger: plan inputs changed")

// PlanChangedError is returned by ReservePlan when the customer's stored
// plan inputs are not the version the caller assumed. Nothing was
// reserved. State is the stored state, from which the caller recomputes
// the plan (and what it allows, and the amount) before it retries.
type PlanChangedError struct {
	Customer string
	State    PlanState
}

func (e *PlanChangedError) Error() string {
	return fmt.Sprintf("ledger: plan inputs of %s are at version %d", e.Customer, e.State.Version)
}

// Unwrap returns ErrPlanChanged.
func (e *PlanChangedError) Unwrap() error { return ErrPlanChanged }

// checkPlanValue validates an opaque plan value; empty is allowed only
// where empty means none.
func checkPlanValue(what, v string, empty bool) error {
	switch {
	case v == "" && !empty:
		return fmt.Errorf("%w: %s is empty", ErrInvalidArgument, what)
	case len(v) > MaxPlanValue:
		return fmt.Errorf("%w: %s is %d bytes long; the limit is %d", ErrInvalidArgument, what, len(v), MaxPlanValue)
	case !utf8.ValidString(v):
		return fmt.Errorf("%w: %s is not valid UTF-8", ErrInvalidArgument, what)
	}
	return nil
}

func checkPutSubscription(customer, value string, order int64) error {
	if err := checkCustomer(customer); err != nil {
		return err
	}
	if order < 0 || order > int64(MaxAmount) {
		return fmt.Errorf("%w: ordering key %d is out of range; want 0 to %d", ErrInvalidArgument, order, int64(MaxAmount))
	}
	return checkPlanValue("subscription state", value, false)
}

func checkPutOverride(customer, value string) error {
	if err := checkCustomer(customer); err != nil {
		return err
	}
	return checkPlanValue("override", value, true)
}

func checkPlanVersion(version int64) error {
	if version < PlanUnknown {
		return fmt.Errorf("%w: plan version %d; want PlanUnknown or a stored version", ErrInvalidArgument, version)
	}
	return nil
}
