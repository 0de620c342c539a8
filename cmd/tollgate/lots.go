package main

import (
	"context"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/tollgate-dev/tollgate/ledger"
)

// runLots is `tollgate lots ID`.
func runLots(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f := newFlagSet("lots", "ID",
		"List a customer's active credit lots in the order they are spent: lowest priority\nfirst, then the earliest expiry (never last), then the oldest. Each lot is what is\nleft of one credit.")
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
	c, err := newClient(opts)
	if err != nil {
		return err
	}
	data, err := c.call(ctx, http.MethodGet, customerPath(id, "lots"), nil, nil)
	if err != nil {
		return err
	}
	if *opts.json {
		return printJSON(stdout, data)
	}
	var res struct {
		Lots []ledger.Lot `json:"lots"`
	}
	if err := decodeAnswer(data, &res, "a list of lots"); err != nil {
		return err
	}
	if len(res.Lots) == 0 {
		p := &printer{w: stdout}
		p.printf("%s has no active lots\n", id)
		return p.err
	}
	t := newTable(stdout)
	t.printf("LOT\tKIND\tREMAINING\tOF\tPRIORITY\tEXPIRES\tREFERENCE\n")
	for _, l := range res.Lots {
		expires, ref := "never", l.Reference
		if l.ExpiresAt != nil {
			expires = l.ExpiresAt.UTC().Format(time.RFC3339)
		}
		if ref == "" {
			ref = "-"
		}
		t.printf("%s\t%s\t%s\t%s\t%s\t%s\t%s\n", l.ID, l.Kind, l.Remaining, l.Amount, strconv.Itoa(l.Priority), expires, ref)
	}
	return t.done()
}
