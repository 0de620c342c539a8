package apierror

import (
	"context"
	"net/http/httptest"
	"testing"
)

// TestDialectTravelsOnTheRequest: what WithDialect sets is what Write
// reads, so that a router choosing a route's dialect is the only change a
// new dialect needs outside this package.
func TestDialectTravelsOnTheRequest(t *testing.T) {
	r := httptest.NewRequest("GET", "/x", nil)
	if got := dialectOf(r); got != OpenAI {
		t.Errorf("no dialect set: %d, want OpenAI", got)
	}
	other := Dialect(7) // a dialect a later version may add
	if got := dialectOf(r.WithContext(WithDialect(context.Background(), other))); got != other {
		t.Errorf("WithDialect(%d): read %d", other, got)
	}
}
