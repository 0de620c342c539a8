package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/tollgate-dev/tollgate/stripesync"
)

// runReconcile is `tollgate reconcile --since DURATION`.
func runReconcile(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f := newFlagSet("reconcile", "--since DURATION",
		"Ask the running tollgate to list, through the Stripe API, the events of the last\nDURATION and apply every one it missed (a webhook lost or refused). Safe to repeat:\neach purchase, invoice and refund applies once. Needs stripe.api_key on the server.")
	since := f.String("since", "", "how far back to look, e.g. 72h; at most 720h (Stripe keeps events for 30 days)")
	opts := addClientFlags(f, 10*time.Minute)
	args, err := f.parse(args, stdout)
	if err != nil {
		return done(err)
	}
	if err := f.wantArgs(args); err != nil {
		return err
	}
	if *since == "" {
		return usageErrorf("reconcile needs --since DURATION, e.g. --since 72h")
	}
	d, err := time.ParseDuration(*since)
	switch {
	case err != nil:
		return usageErrorf("reconcile: --since %q is not a duration; want e.g. 72h or 30m", *since)
	case d <= 0:
		return usageErrorf("reconcile: --since %q must be greater than 0, e.g. 72h", *since)
	case d > stripesync.MaxReconcileWindow:
		return usageErrorf("reconcile: --since %q is longer than 720h: Stripe keeps events for 30 days", *since)
	}
	c, err := newClient(opts)
	if err != nil {
		return err
	}
	data, err := c.call(ctx, http.MethodPost, "/v1/reconcile", nil, map[string]string{"since": *since})
	if err != nil {
		return err
	}
	if *opts.json {
		return printJSON(stdout, data)
	}
	var res struct {
		Events  int64 `json:"events"`
		Applied int64 `json:"applied"`
	}
	if err := decodeAnswer(data, &res, "a reconciliation result"); err != nil {
		return err
	}
	_, err = fmt.Fprintf(stdout, "reconciled the last %s: %d Stripe events, %d applied now (the rest were already applied or change nothing)\n", *since, res.Events, res.Applied)
	return err
}
