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

	"github.com/tollgate-dev/tollgate/ledger"
)

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
				// A hint beside the output: if stderr is gone, the
				// entries still were printed, and that is what counts.
				_, _ = fmt.Fprintf(stderr, "more entries: tollgate ledger %s --before %s (or --all)\n", shellQuote(id), shellQuote(next))
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
	t := newTable(w)
	t.printf("AT\tKIND\tAMOUNT\tBALANCE\tDETAIL\n")
	for _, r := range raw {
		var e ledger.Entry
		if err := decodeAnswer(r, &e, "a ledger entry"); err != nil {
			return err
		}
		at := "-"
		if !e.At.IsZero() {
			at = e.At.UTC().Format(time.RFC3339)
		}
		t.printf("%s\t%s\t%s\t%s\t%s\n", at, e.Kind, e.Amount, e.BalanceAfter, detail(e))
	}
	return t.done()
}

// detail describes an entry in one line: what a charge paid for, the lot
// an expiry took, and the reference and reason.
func detail(e ledger.Entry) string {
	var parts []string
	if e.Lot != "" {
		parts = append(parts, "lot "+e.Lot)
	}
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
