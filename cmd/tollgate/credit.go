package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/tollgate-dev/tollgate/ledger"
	"github.com/tollgate-dev/tollgate/money"
)

// creditSynopsis is the arguments of `tollgate credit`.
const creditSynopsis = "ID AMOUNT --key KEY [--reason TEXT] [--expires-in DURATION | --expires-at TIME] [--priority N]"

// runCredit is `tollgate credit ID AMOUNT --key KEY [--reason TEXT]
// [--expires-in DURATION | --expires-at TIME] [--priority N]`.
func runCredit(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f := newFlagSet("credit", creditSynopsis,
		"Add AMOUNT credits (a decimal such as 10 or 2.5) to a customer's balance; a negative\nAMOUNT such as -5 removes them. KEY makes the change idempotent: running the command\nagain with the same KEY, even after a timeout, changes the balance only once.\n\nCredits that add become a lot: it expires after --expires-in or at --expires-at\n(never without either), and lots are spent by --priority (0 first, default 50), then\nthe earliest expiry, then the oldest. A negative AMOUNT takes from the lots in that\norder. `tollgate lots ID` lists them.")
	key := f.String("key", "", "idempotency key, unique per intended change (required), e.g. grant-2025-06-cust_1")
	reason := f.String("reason", "", "why, recorded on the ledger entry")
	expiresIn := f.String("expires-in", "", "the credits expire this long from now, e.g. 720h (units h, m, s)")
	expiresAt := f.String("expires-at", "", "the credits expire at this RFC 3339 time, e.g. 2030-01-31T00:00:00Z")
	priority := f.Int("priority", ledger.DefaultPriority, "burn order: lots of a lower priority are spent first (0 to 100)")
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
	body := map[string]any{"amount": amount.String(), "idempotency_key": *key}
	if *reason != "" {
		body["reason"] = *reason
	}
	// The admin API checks these too; checking here first names the flag.
	set := map[string]bool{}
	f.Visit(func(fl *flag.Flag) { set[fl.Name] = true })
	switch {
	case amount < 0 && (set["expires-in"] || set["expires-at"] || set["priority"]):
		return usageErrorf("credit: --expires-in, --expires-at and --priority apply to credits that add; a negative AMOUNT takes from the customer's lots in burn order")
	case set["expires-in"] && set["expires-at"]:
		return usageErrorf("credit: give --expires-in or --expires-at, not both")
	case set["expires-in"]:
		if d, err := time.ParseDuration(*expiresIn); err != nil || d <= 0 {
			return usageErrorf("credit: --expires-in %q: want a positive duration such as 720h (units h, m, s)", *expiresIn)
		}
		body["expires_in"] = *expiresIn
	case set["expires-at"]:
		if _, err := time.Parse(time.RFC3339, *expiresAt); err != nil {
			return usageErrorf("credit: --expires-at %q is not an RFC 3339 time such as 2030-01-31T00:00:00Z", *expiresAt)
		}
		body["expires_at"] = *expiresAt
	}
	if set["priority"] {
		if *priority < 0 || *priority > ledger.MaxPriority {
			return usageErrorf("credit: --priority %d: want 0 (spent first) to %d", *priority, ledger.MaxPriority)
		}
		body["priority"] = *priority
	}
	c, err := newClient(opts)
	if err != nil {
		return err
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
