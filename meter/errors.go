package meter

import (
	"errors"
	"fmt"
)

// Sentinel errors. Callers branch on them with errors.Is; the typed errors
// below carry the details and match them.
var (
	// ErrInvalidRequest reports a request body tollgate cannot read: not
	// valid JSON where the API takes JSON, a malformed multipart form, or a
	// field of the wrong type that changes the price (such as "n"). The
	// proxy answers 400 invalid_request. Errors are *RequestError values.
	ErrInvalidRequest = errors.New("meter: invalid request")

	// ErrModelNotPriced reports a model that has no entry in a route's
	// prices and no "*" entry to fall back to. The proxy answers 400
	// model_not_priced. Errors are *ModelNotPricedError values.
	ErrModelNotPriced = errors.New("meter: model not priced")

	// ErrCostRange reports a cost that does not fit in money.Micros, or a
	// Usage or Price with a negative component: it guards the arithmetic
	// against wrapping around instead of charging a wrong amount. From
	// Request.Estimate it means a worst case no balance can cover (a
	// request asking for ~10^18 output tokens on a route without a cap);
	// the proxy can refuse it as it refuses any reservation that does not
	// fit. Usage read from providers and prices from config do not reach
	// it at settlement.
	ErrCostRange = errors.New("meter: cost out of range")
)

// RequestError says why a request body cannot be metered. Reason is a
// sentence meant for the API client that sent the body.
type RequestError struct {
	Reason string
}

func (e *RequestError) Error() string { return "meter: invalid request: " + e.Reason }

// Unwrap returns ErrInvalidRequest.
func (e *RequestError) Unwrap() error { return ErrInvalidRequest }

func invalidf(format string, args ...any) error {
	return &RequestError{Reason: fmt.Sprintf(format, args...)}
}

// ModelNotPricedError names the model a route has no price for. Model is
// empty when the request named no model.
type ModelNotPricedError struct {
	Model string
}

func (e *ModelNotPricedError) Error() string { return "meter: " + e.Detail() }

// Detail says what is missing and what to do, for the API client.
func (e *ModelNotPricedError) Detail() string {
	if e.Model == "" {
		return `the request names no model and the route has no "*" price; name a model, or add a "*" entry to the route's prices`
	}
	return fmt.Sprintf(`model %q is not priced on this route; add it to the route's prices, or add a "*" entry`, e.Model)
}

// Unwrap returns ErrModelNotPriced.
func (e *ModelNotPricedError) Unwrap() error { return ErrModelNotPriced }
