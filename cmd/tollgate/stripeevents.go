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
	"time"

	"github.com/tollgate-dev/tollgate/stripesync"
)

// runStripeEvents is `tollgate stripe-events`.
func runStripeEvents(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f := newFlagSet("stripe-events", "[--customer ID] [--type T] [--limit N] [--before CURSOR]",
		"List the Stripe events tollgate received, by webhook or by reconciliation, newest first,\n"+
			"with what each did: applied, duplicate, ignored or failed, why, and the ledger entry it\n"+
			"wrote. The first answer to \"I paid but I have no access\": tollgate stripe-events --customer ID.")
	customer := f.String("customer", "", "only this customer's events")
	typ := f.String("type", "", "only events of this type, e.g. checkout.session.completed")
	limit := f.Int("limit", 20, "events per page")
	before := f.String("before", "", "start after this cursor, printed by the previous page")
	opts := addClientFlags(f, 30*time.Second)
	args, err := f.parse(args, stdout)
	if err != nil {
		return done(err)
	}
	if err := f.wantArgs(args); err != nil {
		return err
	}
	if *limit < 1 {
		return usageErrorf("stripe-events: --limit %d: want 1 or more", *limit)
	}
	c, err := newClient(opts)
	if err != nil {
		return err
	}
	q := url.Values{"limit": {strconv.Itoa(*limit)}}
	for k, v := range map[string]string{"customer": *customer, "type": *typ, "before": *before} {
		if v != "" {
			q.Set(k, v)
		}
	}
	data, err := c.call(ctx, http.MethodGet, "/v1/stripe/events", q, nil)
	if err != nil {
		return err
	}
	if *opts.json {
		return printJSON(stdout, data)
	}
	var page struct {
		Events []json.RawMessage `json:"events"`
		Next   *string           `json:"next"`
	}
	if err := decodeAnswer(data, &page, "a page of Stripe events"); err != nil {
		return err
	}
	if err := printStripeEvents(stdout, *customer, page.Events); err != nil {
		return err
	}
	if page.Next != nil {
		// A hint beside the output, as `tollgate ledger` gives.
		hint := "tollgate stripe-events"
		if *customer != "" {
			hint += " --customer " + shellQuote(*customer)
		}
		if *typ != "" {
			hint += " --type " + shellQuote(*typ)
		}
		_, _ = fmt.Fprintf(stderr, "more events: %s --before %s\n", hint, shellQuote(*page.Next))
	}
	return nil
}

func printStripeEvents(w io.Writer, customer string, raw []json.RawMessage) error {
	if len(raw) == 0 {
		p := &printer{w: w}
		if customer != "" {
			p.printf("no Stripe events for %s in the journal (it keeps 35 days)\n", customer)
		} else {
			p.printf("no Stripe events in the journal (it keeps 35 days)\n")
		}
		return p.err
	}
	t := newTable(w)
	t.printf("RECEIVED\tSOURCE\tTYPE\tOUTCOME\tCUSTOMER\tENTRY\tEVENT\tDETAIL\n")
	for _, r := range raw {
		var e stripesync.Record
		if err := decodeAnswer(r, &e, "a Stripe event record"); err != nil {
			return err
		}
		at := "-"
		if !e.ReceivedAt.IsZero() {
			at = e.ReceivedAt.UTC().Format(time.RFC3339)
		}
		cust := e.Customer
		if cust == "" {
			cust = "-"
		}
		if e.StripeCustomer != "" {
			cust += " (" + e.StripeCustomer + ")"
		}
		entry := e.LedgerEntry
		if entry == "" {
			entry = "-"
		}
		t.printf("%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", at, e.Source, e.Type, e.Outcome, cust, entry, e.ID, oneLine(e.Detail))
	}
	return t.done()
}

// oneLine keeps a detail on its table row.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
