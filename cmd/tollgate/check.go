package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/tollgate-dev/tollgate/config"
	"github.com/tollgate-dev/tollgate/meter"
	"github.com/tollgate-dev/tollgate/money"
)

// runCheck is `tollgate check`: it validates a configuration and prints its
// warnings (stderr), then either a summary with every route and its prices
// (stdout) or every problem (stderr, exit status 1).
func runCheck(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f := newFlagSet("check", "[--config FILE]",
		"Validate the configuration as serve would: print its warnings, then its routes and\nresolved prices, or every problem in it (with file:line) and exit with status 1.")
	configPath := configFlag(f)
	args, err := f.parse(args, stdout)
	if err != nil {
		return done(err)
	}
	if err := f.wantArgs(args); err != nil {
		return err
	}
	path, from := configPath()
	cfg, err := loadConfig(path, from)
	printWarnings(stderr, cfg)
	if err != nil {
		problems := problemList(err)
		if problems == nil {
			return err
		}
		for _, p := range problems {
			fmt.Fprintf(stderr, "error: %v\n", p)
		}
		noun := "problems"
		if len(problems) == 1 {
			noun = "problem"
		}
		fmt.Fprintf(stderr, "%s: %d %s; nothing was started\n", path, len(problems), noun)
		return errReported
	}
	printConfig(stdout, path, cfg)
	return nil
}

// problemList returns the *config.Problem values err joins, or nil when
// err is something else (an unreadable file).
func problemList(err error) []error {
	var list []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		list = j.Unwrap()
	} else {
		list = []error{err}
	}
	for _, e := range list {
		var p *config.Problem
		if !errors.As(e, &p) {
			return nil
		}
	}
	return list
}

func printConfig(w io.Writer, path string, c *config.Config) {
	routes := "routes"
	if len(c.Routes) == 1 {
		routes = "route"
	}
	fmt.Fprintf(w, "%s is valid: %d %s.\n\n", path, len(c.Routes), routes)

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "listen\t%s\n", c.Listen)
	admin := c.Admin.Listen
	if c.Admin.Token == "" {
		admin += " (admin API refuses every call: admin.token is empty)"
	}
	fmt.Fprintf(tw, "admin.listen\t%s\n", admin)
	if c.Store.RedisURL != "" {
		fmt.Fprintf(tw, "store\tredis %s\n", redactRedisURL(c.Store.RedisURL))
	} else {
		fmt.Fprintf(tw, "store\tembedded, file %s\n", c.Store.Path)
	}
	fmt.Fprintf(tw, "\thold_ttl %s, sweep_interval %s\n", short(c.Store.HoldTTL), short(c.Store.SweepInterval))
	fmt.Fprintf(tw, "customer_header\t%s\n", c.CustomerHeader)
	fmt.Fprintf(tw, "max_request_bytes\t%d (%s)\n", c.MaxRequestBytes, bytesSize(c.MaxRequestBytes))
	fmt.Fprintf(tw, "timeouts\trequest body %s, shutdown %s, settle %s, max_request_duration %s\n", short(c.RequestBodyTimeout), short(c.ShutdownTimeout), short(c.SettleTimeout), short(c.MaxRequestDuration))
	s := c.Stripe
	webhook := "off (no webhook secret)"
	if n := len(s.WebhookSecrets); n > 0 {
		webhook = fmt.Sprintf("on (%d signing secret", n)
		if n > 1 {
			webhook += "s"
		}
		webhook += ")"
	}
	fmt.Fprintf(tw, "stripe webhook\t%s\n", webhook)
	if s.Livemode != nil {
		mode := "test (livemode: false): live-mode events are ignored"
		if *s.Livemode {
			mode = "live (livemode: true): test-mode events are ignored"
		}
		fmt.Fprintf(tw, "stripe mode\t%s\n", mode)
	}
	switch {
	case s.APIKey == "":
		fmt.Fprintf(tw, "stripe API\toff (no api_key): no line items, no reconciliation\n")
	case s.ReconcileInterval == 0:
		fmt.Fprintf(tw, "stripe API\t%s, periodic reconciliation off\n", s.APIBase)
	default:
		fmt.Fprintf(tw, "stripe API\t%s, reconcile every %s over the last %s\n", s.APIBase, short(s.ReconcileInterval), short(s.ReconcileWindow))
	}
	for _, id := range slices.Sorted(maps.Keys(s.Prices)) {
		fmt.Fprintf(tw, "stripe price\t%s = %s credits per unit\n", id, s.Prices[id].Credits.Decimal())
	}
	tw.Flush()

	fmt.Fprint(w, "\nPrices are in credits: token rates per 1M tokens, per_image per image, per_minute per audio minute.\n")
	for _, r := range c.Routes {
		printRoute(w, r)
	}
}

func printRoute(w io.Writer, r config.Route) {
	fmt.Fprintf(w, "\n%s  %s → %s\n", r.Path, r.API, r.Upstream.Redacted())
	var notes []string
	if len(r.Headers) > 0 {
		// Names only: the values are credentials.
		notes = append(notes, "sets headers "+strings.Join(slices.Sorted(maps.Keys(r.Headers)), ", "))
	}
	if r.MaxOutputTokens > 0 {
		notes = append(notes, fmt.Sprintf("max_output_tokens %d", r.MaxOutputTokens))
	}
	if len(notes) > 0 {
		fmt.Fprintf(w, "  %s\n", strings.Join(notes, "; "))
	}

	type column struct {
		key string
		get func(meter.Price) money.Micros
	}
	all := []column{
		{"input", func(p meter.Price) money.Micros { return p.Input }},
		{"cached_input", func(p meter.Price) money.Micros { return p.CachedInput }},
		{"cache_write_input", func(p meter.Price) money.Micros { return p.CacheWriteInput }},
		{"output", func(p meter.Price) money.Micros { return p.Output }},
		{"per_request", func(p meter.Price) money.Micros { return p.PerRequest }},
		{"per_minute", func(p meter.Price) money.Micros { return p.PerMinute }},
	}
	// Show the columns that apply to the route's api and that some model
	// of it uses.
	var cols []column
	perImage := false
	for _, col := range all {
		if !slices.Contains(config.PriceKeys(r.API), col.key) {
			continue
		}
		for _, p := range r.Prices {
			if col.get(p) != 0 {
				cols = append(cols, col)
				break
			}
		}
	}
	for _, p := range r.Prices {
		perImage = perImage || len(p.PerImage) > 0
	}
	if len(cols) == 0 && !perImage {
		cols = all[4:5] // every model is free: say so with a column of zeros
	}

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprint(tw, "  MODEL")
	for _, col := range cols {
		fmt.Fprint(tw, "\t"+strings.ToUpper(col.key))
	}
	if perImage {
		fmt.Fprint(tw, "\tPER_IMAGE")
	}
	fmt.Fprintln(tw)
	for _, model := range modelOrder(r.Prices) {
		p := r.Prices[model]
		name := model
		if model == config.ModelFallback {
			name = "* (any other model)"
		}
		fmt.Fprint(tw, "  "+name)
		for _, col := range cols {
			fmt.Fprint(tw, "\t"+col.get(p).Decimal())
		}
		if perImage {
			fmt.Fprint(tw, "\t-")
		}
		fmt.Fprintln(tw)
		for _, size := range slices.Sorted(maps.Keys(p.PerImage)) {
			fmt.Fprint(tw, "    "+size)
			for range cols {
				fmt.Fprint(tw, "\t")
			}
			fmt.Fprintf(tw, "\t%s\n", p.PerImage[size].Decimal())
		}
	}
	tw.Flush()
}

// modelOrder sorts model names, the fallback last.
func modelOrder(prices meter.Prices) []string {
	names := slices.Sorted(maps.Keys(prices))
	if i := slices.Index(names, config.ModelFallback); i >= 0 {
		names = append(slices.Delete(names, i, i+1), config.ModelFallback)
	}
	return names
}

// short prints a duration without zero units: "10m", "1h", "1h30m".
func short(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

func bytesSize(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", n>>30)
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d bytes", n)
}
