package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/tollgate-dev/tollgate/config"
	"github.com/tollgate-dev/tollgate/events"
	"github.com/tollgate-dev/tollgate/ledger"
	"github.com/tollgate-dev/tollgate/proxy"
)

// eventOptions turns the config's events: section into the store's
// option: nil (events off) without one.
func eventOptions(cfg config.Events) *ledger.EventOptions {
	if !cfg.Enabled {
		return nil
	}
	return &ledger.EventOptions{LowBalance: cfg.LowBalance}
}

// newDeliverer serves GET /v1/events from st and returns the Deliverer
// that moves and sends its events, or nil with events off. A change of
// events: takes a restart: the store writes events as it was opened.
func newDeliverer(cfg config.Events, st store, admin *proxy.AdminOptions, reg prometheus.Registerer, log *zap.Logger) *events.Deliverer {
	if !cfg.Enabled {
		return nil
	}
	es, ok := st.(events.Store)
	if !ok {
		return nil
	}
	admin.Events = es
	return events.New(es, events.Options{URL: cfg.URL, Secret: cfg.Secret, Logger: log, Registerer: reg})
}

// runEvents is `tollgate events [--follow] [--after ID]`.
func runEvents(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f := newFlagSet("events", "",
		"List outbound events, oldest first: balance.low, balance.depleted, credits.granted,\ncredits.expired, credits.clawed_back, customer.suspended, customer.reinstated,\nplan.changed. With --follow, keep polling and print new events as they come.")
	opts := addClientFlags(f, 30*time.Second)
	after := f.String("after", "", "start after this event id (e.g. evt_42); default: the oldest kept")
	follow := f.Bool("follow", false, "keep polling for new events until interrupted")
	every := f.Duration("interval", 2*time.Second, "how often --follow polls")
	args, err := f.parse(args, stdout)
	if err != nil {
		return done(err)
	}
	if err := f.wantArgs(args); err != nil {
		return err
	}
	if _, err := ledger.ParseEventID(*after); err != nil {
		return usageErrorf("--after %q: want an event id such as evt_42", *after)
	}
	if *every <= 0 {
		return usageErrorf("--interval %s: want a positive duration such as 2s", *every)
	}
	c, err := newClient(opts)
	if err != nil {
		return err
	}
	cursor := *after
	header := !*opts.json
	for {
		q := url.Values{"limit": {strconv.Itoa(ledger.MaxPageSize)}}
		if cursor != "" {
			q.Set("after", cursor)
		}
		data, err := c.call(ctx, http.MethodGet, "/v1/events", q, nil)
		if err != nil {
			if *follow && errors.Is(ctx.Err(), context.Canceled) {
				return nil
			}
			return err
		}
		var res struct {
			Events  []json.RawMessage `json:"events"`
			HasMore bool              `json:"has_more"`
		}
		if err := decodeAnswer(data, &res, "a list of events"); err != nil {
			return err
		}
		p := &printer{w: stdout}
		for _, raw := range res.Events {
			var ev struct {
				ID       string          `json:"id"`
				Type     string          `json:"type"`
				Created  int64           `json:"created"`
				Customer string          `json:"customer"`
				Data     json.RawMessage `json:"data"`
			}
			if err := json.Unmarshal(raw, &ev); err != nil {
				return fmt.Errorf("the admin API answered an event that is not JSON: %w", err)
			}
			cursor = ev.ID
			if *opts.json {
				p.printf("%s\n", raw)
				continue
			}
			if header {
				p.printf("%-12s %-20s %-20s %-20s %s\n", "ID", "CREATED", "TYPE", "CUSTOMER", "DATA")
				header = false
			}
			p.printf("%-12s %-20s %-20s %-20s %s\n", ev.ID, time.Unix(ev.Created, 0).UTC().Format(time.RFC3339), ev.Type, ev.Customer, ev.Data)
		}
		if p.err != nil {
			return p.err
		}
		if res.HasMore {
			continue
		}
		if !*follow {
			if header {
				p.printf("no events\n")
			}
			return p.err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(*every):
		}
	}
}
