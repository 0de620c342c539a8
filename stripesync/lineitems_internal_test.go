package stripesync

import (
	"testing"

	"github.com/tollgate-dev/tollgate/money"
)

// TestPriceLookupOrder: a line is priced by its price id first, then by
// its price's lookup key (stripe.prices may name either).
func TestPriceLookupOrder(t *testing.T) {
	s := &Syncer{prices: map[string]Price{
		"price_1": {Credits: 100 * money.Credit},
		"pro":     {Credits: 5 * money.Credit},
	}}
	tests := []struct {
		id, lookup string
		want       money.Micros
		ok         bool
	}{
		{"price_1", "pro", 100 * money.Credit, true},
		{"price_2", "pro", 5 * money.Credit, true},
		{"price_2", "", 0, false},
		{"", "", 0, false},
	}
	for _, tc := range tests {
		got, ok := s.price(line{price: tc.id, lookupKey: tc.lookup})
		if got.Credits != tc.want || ok != tc.ok {
			t.Errorf("price(%q, %q) = %v, %v; want %v, %v", tc.id, tc.lookup, got.Credits, ok, tc.want, tc.ok)
		}
	}
}
