package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/tollgate-dev/tollgate/config"
	"github.com/tollgate-dev/tollgate/ledger"
	"github.com/tollgate-dev/tollgate/meter"
	"github.com/tollgate-dev/tollgate/money"
	"github.com/tollgate-dev/tollgate/stripesync"
	tokens "github.com/tollgate-dev/tollgate/usage" // package main has a func usage
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
	if werr := printWarnings(stderr, cfg); werr != nil {
		return werr
	}
	if err != nil {
		problems := problemList(err)
		if problems == nil {
			return err
		}
		out := &printer{w: stderr}
		for _, p := range problems {
			out.printf("error: %v\n", p)
		}
		noun := "problems"
		if len(problems) == 1 {
			noun = "problem"
		}
		out.printf("%s: %d %s; nothing was started\n", path, len(problems), noun)
		if out.err != nil {
			return out.err
		}
		return errReported
	}
	return printConfig(stdout, path, cfg)
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

// printConfig prints the summary of a valid configuration.
func printConfig(w io.Writer, path string, c *config.Config) error {
	routes := "routes"
	if len(c.Routes) == 1 {
		routes = "route"
	}
	out := &printer{w: w}
	out.printf("%s is valid: %d %s.\n\n", path, len(c.Routes), routes)

	t := newTable(out)
	listen := c.Listen
	if c.ListenFromEnv {
		listen += " (from $" + config.EnvListen + ")"
	}
	t.printf("listen\t%s\n", listen)
	admin := c.Admin.Listen
	if c.Admin.Token == "" {
		admin += " (admin API refuses every call: admin.token is empty)"
	}
	t.printf("admin.listen\t%s\n", admin)
	if c.Store.RedisURL != "" {
		t.printf("store\tredis %s\n", redactRedisURL(c.Store.RedisURL))
		if l := c.Store.Leases; c.Store.LeasesOn() {
			t.printf("\tleases on: flush_interval %s, ttl %s, share %d%%\n", short(l.FlushInterval), short(l.TTL), l.Share)
		} else {
			t.printf("\tleases off: every request reserves in Redis\n")
		}
	} else {
		t.printf("store\tembedded, file %s\n", c.Store.Path)
	}
	t.printf("\thold_ttl %s, sweep_interval %s\n", short(c.Store.HoldTTL), short(c.Store.SweepInterval))
	t.printf("customer_header\t%s\n", c.CustomerHeader)
	t.printf("max_request_bytes\t%d (%s)\n", c.MaxRequestBytes, bytesSize(c.MaxRequestBytes))
	t.printf("timeouts\trequest body %s, shutdown %s, settle %s, max_request_duration %s\n", short(c.RequestBodyTimeout), short(c.ShutdownTimeout), short(c.SettleTimeout), short(c.MaxRequestDuration))
	s := c.Stripe
	webhook := "off (no webhook secret)"
	if n := len(s.WebhookSecrets); n > 0 {
		webhook = fmt.Sprintf("on (%d signing secret", n)
		if n > 1 {
			webhook += "s"
		}
		webhook += ")"
	}
	t.printf("stripe webhook\t%s\n", webhook)
	if s.Livemode != nil {
		mode := "test (livemode: false): live-mode events are ignored"
		if *s.Livemode {
			mode = "live (livemode: true): test-mode events are ignored"
		}
		t.printf("stripe mode\t%s\n", mode)
	}
	switch {
	case s.APIKey == "":
		t.printf("stripe API\toff (no api_key): no line items, no reconciliation\n")
	case s.ReconcileInterval == 0:
		t.printf("stripe API\t%s, periodic reconciliation off\n", s.APIBase)
	default:
		t.printf("stripe API\t%s, reconcile every %s over the last %s\n", s.APIBase, short(s.ReconcileInterval), short(s.ReconcileWindow))
	}
	for _, id := range slices.Sorted(maps.Keys(s.Prices)) {
		p := s.Prices[id]
		switch {
		case p.Credits == 0:
			t.printf("stripe price\t%s = plan %s, no credits\n", id, p.Plan)
		case p.Plan != "":
			t.printf("stripe price\t%s = plan %s and %s credits per unit; they %s; priority %d\n", id, p.Plan, p.Credits.Decimal(), priceExpiry(p), priceLotPriority(p))
		default:
			t.printf("stripe price\t%s = %s credits per unit; they %s; priority %d\n", id, p.Credits.Decimal(), priceExpiry(p), priceLotPriority(p))
		}
	}
	printPlans(t, c)
	_ = t.done() // out keeps the error

	out.printf("\nPrices are in credits: token rates per 1M tokens, per_image per image, per_minute per audio minute, tools per call.\n")
	for _, r := range c.Routes {
		printRoute(out, r)
	}
	return out.err
}

// printRoute prints a route and its price table to out.
func printRoute(out *printer, r config.Route) {
	out.printf("\n%s  %s → %s\n", r.Path, r.API, r.Upstream.Redacted())
	var notes []string
	if len(r.Headers) > 0 {
		// Names only: the values are credentials.
		notes = append(notes, "sets headers "+strings.Join(slices.Sorted(maps.Keys(r.Headers)), ", "))
	}
	if r.MaxOutputTokens > 0 {
		notes = append(notes, fmt.Sprintf("max_output_tokens %d", r.MaxOutputTokens))
	}
	if r.StreamUsage != "" {
		notes = append(notes, "stream_usage "+r.StreamUsage)
	}
	if r.ModelFrom != "" {
		notes = append(notes, "model_from "+r.ModelFrom)
	}
	for _, kind := range slices.Sorted(maps.Keys(r.ServerTools)) {
		a := r.ServerTools[kind]
		notes = append(notes, fmt.Sprintf("server_tools %s: %d calls of %d input tokens", kind, a.MaxUses, a.InputTokens))
	}
	if len(notes) > 0 {
		out.printf("  %s\n", strings.Join(notes, "; "))
	}

	type column struct {
		key string
		get func(meter.Price) money.Micros
	}
	rate := func(key string) func(meter.Price) money.Micros {
		return func(p meter.Price) money.Micros { return *p.Rate(key) }
	}
	var all []column
	for _, k := range meter.RateKeys() {
		all = append(all, column{k, rate(k)})
	}
	all = append(all,
		column{"per_request", func(p meter.Price) money.Micros { return p.PerRequest }},
		column{"per_minute", func(p meter.Price) money.Micros { return p.PerMinute }})
	// Show the columns that apply to the route's api and that some model
	// of it uses: a rate set to something, or, for the rates added for
	// parts of a class (1-hour cache writes, audio and image tokens), one
	// that is not simply the rate it defaults to.
	var cols []column
	perImage := false
	for _, col := range all {
		if !slices.Contains(config.PriceKeys(r.API), col.key) {
			continue
		}
		for _, p := range r.Prices {
			if uses(col.key, col.get(p), p.Rates) {
				cols = append(cols, col)
				break
			}
		}
	}
	for _, p := range r.Prices {
		perImage = perImage || len(p.PerImage) > 0
	}
	if len(cols) == 0 && !perImage {
		cols = []column{{"per_request", func(p meter.Price) money.Micros { return p.PerRequest }}} // every model is free: say so with a column of zeros
	}

	t := newTable(out)
	t.printf("  MODEL")
	for _, col := range cols {
		t.printf("\t%s", strings.ToUpper(col.key))
	}
	if perImage {
		t.printf("\tPER_IMAGE")
	}
	t.printf("\n")
	for _, model := range modelOrder(r.Prices) {
		p := r.Prices[model]
		name := model
		if model == config.ModelFallback {
			name = "* (any other model)"
		}
		t.printf("  %s", name)
		for _, col := range cols {
			t.printf("\t%s", col.get(p).Decimal())
		}
		if perImage {
			t.printf("\t-")
		}
		t.printf("\n")
		for _, size := range slices.Sorted(maps.Keys(p.PerImage)) {
			t.printf("    %s", size)
			for range cols {
				t.printf("\t")
			}
			t.printf("\t%s\n", p.PerImage[size].Decimal())
		}
	}
	_ = t.done() // out keeps the error

	// What does not fit the table: tool fees, tiers and variants, under
	// each model that has them.
	for _, model := range modelOrder(r.Prices) {
		lines := priceDetails(r.API, r.Prices[model])
		if len(lines) == 0 {
			continue
		}
		out.printf("  %s:\n", model)
		for _, l := range lines {
			out.printf("    %s\n", l)
		}
	}
}

// uses reports whether a column shows something for a price with rates r
// whose value in the column named key is v: a rate added for part of a
// class, only when it is not the rate it defaults to.
func uses(key string, v money.Micros, r meter.Rates) bool {
	switch key {
	case "cache_write_input_1h", "audio_input", "image_input", "audio_output", "image_output":
		return v != *r.Rate(meter.RateDefault(key))
	}
	return v != 0
}

// priceDetails describes p's tool fees, tiers and variants, one line each.
func priceDetails(api meter.API, p meter.Price) []string {
	var lines []string
	var fees []string
	for tool, fee := range p.Tools {
		if fee != 0 {
			fees = append(fees, tokens.Tool(tool).String()+" "+fee.Decimal())
		}
	}
	if len(fees) > 0 {
		lines = append(lines, "tools (per call): "+strings.Join(fees, ", "))
	}
	tiers := func(prefix string, ts []meter.Tier) {
		for _, t := range ts {
			lines = append(lines, fmt.Sprintf("%sabove %d input tokens: %s", prefix, t.AboveInputTokens, rateList(api, t.Rates)))
		}
	}
	tiers("", p.Tiers)
	for _, dim := range []struct {
		key string
		m   map[string]meter.Variant
	}{{"service_tier", p.ServiceTier}, {"speed", p.Speed}, {"inference_geo", p.InferenceGeo}} {
		for _, name := range slices.Sorted(maps.Keys(dim.m)) {
			v := dim.m[name]
			var what []string
			if v.HasRates {
				what = append(what, rateList(api, v.Rates))
			}
			if v.Multiplier != 0 {
				what = append(what, "token rates × "+money.Micros(v.Multiplier).Decimal())
			}
			lines = append(lines, fmt.Sprintf("%s %s: %s", dim.key, name, strings.Join(what, "; ")))
			tiers(fmt.Sprintf("%s %s, ", dim.key, name), v.Tiers)
		}
	}
	return lines
}

// rateList lists the rates of r that apply to api and say something:
// input and output, and the others where not their default.
func rateList(api meter.API, r meter.Rates) string {
	var parts []string
	for _, k := range meter.RateKeys() {
		if !slices.Contains(config.PriceKeys(api), k) {
			continue
		}
		v := *r.Rate(k)
		if d := meter.RateDefault(k); d != "" && v == *r.Rate(d) {
			continue
		}
		parts = append(parts, k+" "+v.Decimal())
	}
	return strings.Join(parts, ", ")
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

// priceExpiry says when the credits of a Stripe price expire.
func priceExpiry(p config.StripePrice) string {
	grace := ""
	if p.Grace > 0 {
		grace = " + " + short(p.Grace)
	}
	switch p.Expires {
	case stripesync.ExpiresNever:
		return "never expire"
	case stripesync.ExpiresPeriodEnd:
		return "expire at the period end" + grace
	case stripesync.ExpiresAfter:
		return "expire " + short(p.ExpiresAfter) + " after the grant"
	}
	return "expire at the period end" + grace + " on subscriptions, never on one-off purchases"
}

// priceLotPriority is the burn-order priority of a Stripe price's credits.
func priceLotPriority(p config.StripePrice) int {
	if p.Priority != nil {
		return *p.Priority
	}
	return ledger.DefaultPriority
}
