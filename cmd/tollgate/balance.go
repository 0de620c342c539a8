package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"text/tabwriter"
	"time"

	"github.com/tollgate-dev/tollgate/ledger"
)

// runBalance is `tollgate balance ID`.
func runBalance(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f := newFlagSet("balance", "ID", "Show a customer's balance, the credits reserved by requests in flight, and what is\navailable. A customer never seen has zeros.")
	opts := addClientFlags(f, 30*time.Second)
	args, err := f.parse(args, stdout)
	if err != nil {
		return done(err)
	}
	if err := f.wantArgs(args, "ID"); err != nil {
		return err
	}
	if err := requireID(f, args[0]); err != nil {
		return err
	}
	c, err := newClient(opts)
	if err != nil {
		return err
	}
	data, err := c.call(ctx, http.MethodGet, customerPath(args[0]), nil, nil)
	if err != nil {
		return err
	}
	if *opts.json {
		return printJSON(stdout, data)
	}
	var a ledger.Account
	if err := decodeAnswer(data, &a, "an account"); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "customer\t%s\n", a.Customer)
	fmt.Fprintf(tw, "balance\t%s\n", a.Balance)
	fmt.Fprintf(tw, "reserved\t%s\n", a.Reserved)
	fmt.Fprintf(tw, "available\t%s\n", a.Available)
	if a.Suspended {
		fmt.Fprintf(tw, "suspended\tyes: requests are refused until the Stripe dispute is closed\n")
	}
	return tw.Flush()
}
