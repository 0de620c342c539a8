package stripesync

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/tollgate-dev/tollgate/ledger"
)

// eventError is why an event could not be applied, with the status the
// webhook answers. Every status is non-2xx, so Stripe retries the delivery
// (for up to three days) and shows msg in the Dashboard's delivery log,
// which is where an operator looks first.
type eventError struct {
	status int
	code   string
	msg    string // sent to Stripe: no secrets, no internals
	err    error  // the cause, logged; errors.Is and errors.As see through to it
}

func (e *eventError) Error() string {
	if e.err != nil {
		return e.msg + ": " + e.err.Error()
	}
	return e.msg
}

func (e *eventError) Unwrap() error { return e.err }

// invalid: the event is authentic but carries data tollgate cannot apply
// as sent (malformed tollgate metadata, an invalid customer id, amounts out
// of range). Retrying the same bytes will not help; fixing the data or
// crediting by hand will, so it is loud.
func invalid(format string, args ...any) error {
	return &eventError{status: http.StatusUnprocessableEntity, code: "invalid_event", msg: fmt.Sprintf(format, args...)}
}

// retryLater: something this event depends on is not known yet (the
// customer behind a Stripe customer id, the top-up behind a refund), or
// needs configuration (an API key). A later delivery, after other events or
// a config fix, can succeed.
func retryLater(format string, args ...any) error {
	return &eventError{status: http.StatusServiceUnavailable, code: "retry_later", msg: fmt.Sprintf(format, args...)}
}

// storeErr wraps a ledger failure; nil stays nil. The ledger's error stays
// the cause, so an outage still matches ledger.ErrStoreUnavailable, which
// stops reconciliation.
func storeErr(op string, err error) error {
	if err == nil {
		return nil
	}
	var ee *eventError
	if errors.As(err, &ee) {
		return err
	}
	if errors.Is(err, ledger.ErrStoreUnavailable) {
		return &eventError{status: http.StatusServiceUnavailable, code: "store_unavailable", msg: "the credit store is unavailable; nothing was applied", err: fmt.Errorf("%s: %w", op, err)}
	}
	return &eventError{status: http.StatusInternalServerError, code: "store_error", msg: "the credit store failed; nothing was applied", err: fmt.Errorf("%s: %w", op, err)}
}

// apiErr wraps a failed Stripe API call.
func apiErr(what string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, ErrNoAPIKey) {
		return &eventError{status: http.StatusServiceUnavailable, code: "retry_later", msg: what + " needs a Stripe API key: set stripe.api_key", err: err}
	}
	return &eventError{status: http.StatusBadGateway, code: "stripe_api_error", msg: what + " through the Stripe API failed", err: err}
}

func statusOf(err error) (int, string, string) {
	var ee *eventError
	if errors.As(err, &ee) {
		return ee.status, ee.code, ee.msg
	}
	return http.StatusInternalServerError, "internal_error", "internal error; nothing was applied"
}
