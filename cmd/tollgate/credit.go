package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/tollgate-dev/tollgate/ledger"
	"github.com/tollgate-dev/tollgate/money"
)

// runCredit is `tollgate credit ID AMOUNT --key KEY [--reason TEXT]`.
func runCredit(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f := newFlagSet("credit", "ID AMOUNT --key KEY [--reason TEXT]",
		"Add AMOUNT credits (a decimal such as 10 or 2.5) to a customer's balance; a negative\nAMOUNT such as -5 removes them. KEY makes the change idempotent: running the command\nagain with the same KEY, even after a timeout, changes the balance only once.")
	key := f.String("key", "", "idempotency key, unique per intended change (required), e.g. grant-2025-06-cust_1")
	reason := f.String("reason", "", "why, recorded on the ledger entry")
	opts := addClientFlags(f, 30*time.Second)
	args, err := f.parse(args, stdout)
	if err != nil {
		return done(err)
	}
	if err := f.wantArgs(args, "ID", "AMOUNT"); err != nil {
		return err
	}
	id := args[0]
	if err := requireID(f, id); err != nil {
		return err
	}
	amount, err := money.Parse(args[1])
	if err != nil {
		return usageErrorf("credit: AMOUNT %v", err)
	}
	if amount == 0 {
		return usageErrorf("credit: AMOUNT is zero; give a positive amount to add credits, or a negative one such as -5 to remove them")
	}
	if *key == "" {
		return usageErrorf("credit needs --key KEY, an idempotency key, so that running it again never credits twice; e.g. --key grant-%s-%s", time.Now().UTC().Format("2006-01-02"), id)
	}
	c, err := newClient(opts)
	if err != nil {
		return err
	}
	body := map[string]string{"amount": amount.String(), "idempotency_key": *key}
	if *reason != "" {
		body["reason"] = *reason
	}
	data, err := c.call(ctx, http.MethodPost, customerPath(id, "credits"), nil, body)
	if err != nil {
		return err
	}
	if *opts.json {
		return printJSON(stdout, data)
	}
	// The answer is the credit's result: the entry the key produced and
	// whether this call applied it. Fields it lacks are left out.
	var res struct {
		Applied *bool         `json:"applied"`
		Entry   *ledger.Entry `json:"entry"`
		Balance *money.Micros `json:"balance"`
	}
	if err := decodeAnswer(data, &res, "a credit result"); err != nil {
		return err
	}
	verb, prep, shown := "credited", "to", amount
	if amount < 0 {
		verb, prep, shown = "debited", "from", -amount
	}
	balance := ""
	switch {
	case res.Entry != nil && res.Entry.ID != "":
		balance = fmt.Sprintf("; balance after: %s (entry %s)", res.Entry.BalanceAfter, res.Entry.ID)
	case res.Balance != nil:
		balance = fmt.Sprintf("; balance: %s", *res.Balance)
	}
	if res.Applied != nil && !*res.Applied {
		_, err := fmt.Fprintf(stdout, "nothing changed: key %q was already applied for %s%s\n", *key, id, balance)
		return err
	}
	_, err = fmt.Fprintf(stdout, "%s %s %s %s%s\n", verb, shown, prep, id, balance)
	return err
}
