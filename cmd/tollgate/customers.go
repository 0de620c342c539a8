package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/tollgate-dev/tollgate/ledger"
	"github.com/tollgate-dev/tollgate/money"
)

func decodeAnswer(data []byte, v any, what string) error {
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("the admin API's answer is not %s: %v", what, err)
	}
	return nil
}

func requireID(f *flagSet, id string) error {
	if strings.TrimSpace(id) == "" {
		return usageErrorf("%s: the customer ID is empty: tollgate %s %s", f.name, f.name, f.synopsis)
	}
	return nil
}

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

// runLedger is `tollgate ledger ID`.
func runLedger(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f := newFlagSet("ledger", "ID [--limit N] [--before CURSOR | --all]",
		"List a customer's ledger entries, newest first, one page at a time (--before the\ncursor the previous page printed), or every entry with --all.")
	limit := f.Int("limit", 20, "entries per page")
	before := f.String("before", "", "start after this cursor, printed by the previous page")
	all := f.Bool("all", false, "fetch every page")
	opts := addClientFlags(f, 30*time.Second)
	args, err := f.parse(args, stdout)
	if err != nil {
		return done(err)
	}
	if err := f.wantArgs(args, "ID"); err != nil {
		return err
	}
	id := args[0]
	if err := requireID(f, id); err != nil {
		return err
	}
	if *limit < 1 {
		return usageErrorf("ledger: --limit %d: want 1 or more", *limit)
	}
	c, err := newClient(opts)
	if err != nil {
		return err
	}

	type page struct {
		Entries []json.RawMessage `json:"entries"`
		Next    *string           `json:"next"`
	}
	var raw []json.RawMessage
	cursor := *before
	seen := map[string]bool{}
	for {
		q := url.Values{"limit": {strconv.Itoa(*limit)}}
		if cursor != "" {
			q.Set("before", cursor)
		}
		data, err := c.call(ctx, http.MethodGet, customerPath(id, "ledger"), q, nil)
		if err != nil {
			return err
		}
		var p page
		if err := decodeAnswer(data, &p, "a ledger page"); err != nil {
			return err
		}
		next := ""
		if p.Next != nil {
			next = *p.Next
		}
		if !*all {
			if *opts.json {
				return printJSON(stdout, data)
			}
			if err := printEntries(stdout, id, p.Entries); err != nil {
				return err
			}
			if next != "" {
				fmt.Fprintf(stderr, "more entries: tollgate ledger %s --before %s (or --all)\n", shellQuote(id), shellQuote(next))
			}
			return nil
		}
		raw = append(raw, p.Entries...)
		if next == "" {
			break
		}
		if seen[next] || next == cursor {
			return fmt.Errorf("the admin API returned the cursor %q twice; stopped after %d entries to avoid a loop", next, len(raw))
		}
		seen[next] = true
		cursor = next
	}
	if *opts.json {
		if raw == nil {
			raw = []json.RawMessage{}
		}
		out, err := json.Marshal(page{Entries: raw})
		if err != nil {
			return err
		}
		return printJSON(stdout, out)
	}
	return printEntries(stdout, id, raw)
}

func printEntries(w io.Writer, customer string, raw []json.RawMessage) error {
	if len(raw) == 0 {
		_, err := fmt.Fprintf(w, "no ledger entries for %s\n", customer)
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprint(tw, "AT\tKIND\tAMOUNT\tBALANCE\tDETAIL\n")
	for _, r := range raw {
		var e ledger.Entry
		if err := decodeAnswer(r, &e, "a ledger entry"); err != nil {
			return err
		}
		at := "-"
		if !e.At.IsZero() {
			at = e.At.UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", at, e.Kind, e.Amount, e.BalanceAfter, detail(e))
	}
	return tw.Flush()
}

// detail describes an entry in one line: what a charge paid for, or the
// reference and reason of a credit.
func detail(e ledger.Entry) string {
	var parts []string
	if e.Kind == ledger.KindCharge {
		what := e.Model
		if e.Route != "" {
			what += " on " + e.Route
		}
		parts = append(parts, strings.TrimSpace(what)+": "+e.Tokens.TokenSummary())
	}
	if e.Reference != "" {
		parts = append(parts, e.Reference)
	}
	if e.Reason != "" {
		parts = append(parts, e.Reason)
	}
	return strings.Join(parts, " · ")
}

// shellQuote quotes s for a POSIX shell when it needs it.
func shellQuote(s string) string {
	safe := s != ""
	for _, c := range s {
		if !(c == '-' || c == '_' || c == '.' || c == ':' || c == '/' || c == '=' || c == '+' ||
			'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9') {
			safe = false
			break
		}
	}
	if safe {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
