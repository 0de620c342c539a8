package stripesync

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/tollgate-dev/tollgate/internal/apierror"
	"github.com/tollgate-dev/tollgate/ledger"
)

// Codes the webhook answers with (error.code), which are also the outcome
// label of tollgate_stripe_events_total for a refused delivery (see
// Options.Registerer, and the README's "When Stripe shows failed
// deliveries").
const (
	codeMethodNotAllowed = "method_not_allowed"
	codeInvalidRequest   = "invalid_request"
	codeRequestTooLarge  = "request_too_large"
	codeInvalidSignature = "invalid_signature"
	codeInvalidEvent     = "invalid_event"
	codeRetryLater       = "retry_later"
	codeStripeAPIError   = "stripe_api_error"
	codeStoreUnavailable = "store_unavailable"
	codeStoreError       = "store_error"
	codeInternal         = "internal_error"
)

// An event that cannot be applied is an *apierror.Error: the status and
// code the webhook answers, the message Stripe shows, and the cause, which
// is logged. Every status is non-2xx, so Stripe retries the delivery (for
// up to three days) and shows the message in the Dashboard's delivery log,
// which is where an operator looks first; it names no secrets and no
// internals.

// invalid: the event is authentic but carries data tollgate cannot apply
// as sent (malformed tollgate metadata, an invalid customer id, amounts out
// of range). Retrying the same bytes will not help; fixing the data or
// crediting by hand will, so it is loud.
func invalid(format string, args ...any) error {
	return &apierror.Error{Status: http.StatusUnprocessableEntity, Code: codeInvalidEvent, Message: fmt.Sprintf(format, args...)}
}

// retryLater: something this event depends on is not known yet (the
// customer behind a Stripe customer id, the top-up behind a refund), or
// needs configuration (an API key). A later delivery, after other events or
// a config fix, can succeed.
func retryLater(format string, args ...any) error {
	return &apierror.Error{Status: http.StatusServiceUnavailable, Code: codeRetryLater, Message: fmt.Sprintf(format, args...)}
}

// storeErr wraps a ledger failure; nil stays nil. The ledger's error stays
// the cause, so an outage still matches ledger.ErrStoreUnavailable, which
// stops reconciliation.
func storeErr(op string, err error) error {
	if err == nil {
		return nil
	}
	var ae *apierror.Error
	if errors.As(err, &ae) {
		return err
	}
	if errors.Is(err, ledger.ErrStoreUnavailable) {
		return &apierror.Error{Status: http.StatusServiceUnavailable, Code: codeStoreUnavailable, Message: "the credit store is unavailable; nothing was applied", Err: fmt.Errorf("%s: %w", op, err)}
	}
	return &apierror.Error{Status: http.StatusInternalServerError, Code: codeStoreError, Message: "the credit store failed; nothing was applied", Err: fmt.Errorf("%s: %w", op, err)}
}

// apiErr wraps a failed Stripe API call.
func apiErr(what string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, ErrNoAPIKey) {
		return &apierror.Error{Status: http.StatusServiceUnavailable, Code: codeRetryLater, Message: what + " needs a Stripe API key: set stripe.api_key", Err: err}
	}
	return &apierror.Error{Status: http.StatusBadGateway, Code: codeStripeAPIError, Message: what + " through the Stripe API failed", Err: err}
}

// answer is the webhook's answer to an event that was not applied: the
// *apierror.Error err is or wraps, else a 500 that names nothing internal.
func answer(err error) *apierror.Error {
	var ae *apierror.Error
	if errors.As(err, &ae) {
		return ae
	}
	return &apierror.Error{Status: http.StatusInternalServerError, Code: codeInternal, Message: "internal error; nothing was applied", Err: err}
}
