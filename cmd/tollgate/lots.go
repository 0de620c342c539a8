package main

import (
	"context"
	"io"
	"strconv"
	"time"

	"github.com/tollgate-dev/tollgate/ledger"
)

// runLots is `tollgate lots ID`.
func runLots(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	id, data, err := getCustomer(ctx, "lots", "List a customer's active credit lots in the order they are spent: lowest priority\nfirst, then the earliest expiry (never last), then the oldest. Each lot is what is\nleft of one credit.", args, stdout, "lots")
	if err != nil || data == nil {
		return err
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
