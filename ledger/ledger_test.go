package ledger_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/tollgate-dev/tollgate/ledger"
)

// TestValidateCustomer: an invalid id is an *InvalidCustomerError that
// matches ErrInvalidCustomer and carries the id and its problem, so that
// callers word their messages from data.
func TestValidateCustomer(t *testing.T) {
	long := strings.Repeat("a", ledger.MaxIDLength+1)
	tests := []struct {
		name, id, problem, detail string
	}{
		{"empty", "", "is empty", `"" is empty`},
		{"space", "acme corp", "contains ' ' at byte 4; use printable ASCII without spaces or braces",
			`"acme corp" contains ' ' at byte 4; use printable ASCII without spaces or braces`},
		{"brace", "{a}", "contains '{' at byte 0; use printable ASCII without spaces or braces",
			`"{a}" contains '{' at byte 0; use printable ASCII without spaces or braces`},
		{"too long", long, "is 201 bytes long; the limit is 200",
			`"` + long[:40] + `…" is 201 bytes long; the limit is 200`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := ledger.ValidateCustomer(tc.id)
			if !errors.Is(err, ledger.ErrInvalidCustomer) {
				t.Fatalf("ValidateCustomer(%q) = %v, want ErrInvalidCustomer", tc.id, err)
			}
			var ice *ledger.InvalidCustomerError
			if !errors.As(err, &ice) || ice.ID != tc.id || ice.Problem != tc.problem {
				t.Fatalf("ValidateCustomer(%q) = %#v, want ID %q and Problem %q", tc.id, err, tc.id, tc.problem)
			}
			if got := ice.Detail(); got != tc.detail {
				t.Errorf("Detail() = %s, want %s", got, tc.detail)
			}
			if got, want := err.Error(), "ledger: invalid customer id: "+tc.detail; got != want {
				t.Errorf("Error() = %s, want %s", got, want)
			}
		})
	}
	if err := ledger.ValidateCustomer("cus_1"); err != nil {
		t.Errorf("ValidateCustomer(cus_1) = %v", err)
	}
}
