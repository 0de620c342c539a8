package main

import (
	"context"
	"io"
	"time"

	"github.com/tollgate-dev/tollgate/ledger"
)

// runBalance is `tollgate balance ID`.
func runBalance(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	_, data, err := getCustomer(ctx, "balance", "Show a customer's balance, the credits reserved by requests in flight, what is\navailable, any debt, and the credits that expire next. A customer never seen has zeros.", args, stdout)
	if err != nil || data == nil {
		return err
	}
	var a ledger.Account
	if err := decodeAnswer(data, &a, "an account"); err != nil {
		return err
	}
	t := newTable(stdout)
	t.printf("customer\t%s\n", a.Customer)
	t.printf("balance\t%s\n", a.Balance)
	t.printf("reserved\t%s\n", a.Reserved)
	t.printf("available\t%s\n", a.Available)
	if a.Debt > 0 {
		t.printf("debt\t%s: charged beyond every lot; the next credit repays it first\n", a.Debt)
	}
	if a.NextExpiry != nil {
		t.printf("next expiry\t%s at %s\n", a.NextExpiry.Amount, a.NextExpiry.At.UTC().Format(time.RFC3339))
	}
	if a.Suspended {
		t.printf("suspended\tyes: requests are refused until the Stripe dispute is closed\n")
	}
	return t.done()
}
