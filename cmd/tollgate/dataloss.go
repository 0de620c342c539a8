package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"time"
)

// runAcceptDataLoss is `tollgate accept-data-loss`.
func runAcceptDataLoss(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f := newFlagSet("accept-data-loss", "",
		"Tell the running tollgate that its Redis's present contents are what it should bill\n"+
			"from. tollgate stops billing (503 billing_unavailable, /readyz not ready) when it\n"+
			"finds that Redis lost its data: a restart without persistence, a FLUSHALL, a failover\n"+
			"to an empty replica. Restore Redis from a backup first if you can; then run this\n"+
			"once, against any replica: every replica serves again within seconds. Check\n"+
			"balances afterwards: credits and charges since the backup (or all of them) are gone.")
	opts := addClientFlags(f, 30*time.Second)
	args, err := f.parse(args, stdout)
	if err != nil {
		return done(err)
	}
	if err := f.wantArgs(args); err != nil {
		return err
	}
	c, err := newClient(opts)
	if err != nil {
		return err
	}
	data, err := c.call(ctx, http.MethodPost, "/v1/store/accept-data-loss", nil, nil)
	if err != nil {
		return err
	}
	if *opts.json {
		return printJSON(stdout, data)
	}
	var res struct {
		Status string `json:"status"`
	}
	if err := decodeAnswer(data, &res, "an accept-data-loss result"); err != nil {
		return err
	}
	_, err = fmt.Fprintf(stdout, "accepted: tollgate serves what Redis holds now (%s); the other replicas follow within seconds\n", res.Status)
	return err
}
