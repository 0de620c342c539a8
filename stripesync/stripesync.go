// Package stripesync turns Stripe events into ledger changes: Checkout
// top-ups, subscription credits, refunds and disputes. It verifies webhook
// deliveries (WebhookHandler), replays events it may have missed through the
// Stripe Events API (Reconcile, Run), and applies both through one
// idempotent path keyed by the business object (checkout session, invoice,
// payment intent), never by the event id, so duplicates, retries, replays
// and reconciliation credit a purchase exactly once.
//
// Stripe delivers each event at least once, late, out of order, for up to
// three days, and in the shape of the API version of the account's endpoint
// — not the one stripe-go pins. The package therefore reads only the fields
// it needs, with gjson, from both the 2024-06-20 shapes and the newer ones
// (since 2025-03-31 an invoice's subscription metadata lives under
// parent.subscription_details and a line's price under
// pricing.price_details.price).
//
// Wiring, in cmd/tollgate and the admin listener:
//
//	s, err := stripesync.New(store, stripesync.Options{
//		WebhookSecrets: cfg.Stripe.WebhookSecrets, // webhook_secret and/or webhook_secrets
//		APIKey:         cfg.Stripe.APIKey,
//		APIBase:        cfg.Stripe.APIBase,
//		Livemode:       cfg.Stripe.Livemode, // required with secrets or a key
//		Prices:         prices, // stripe.prices: price id or lookup key → Price
//		Logger:         logger,
//		Registerer:     registry,
//	})
//	admin.Handle("POST /webhooks/stripe", s.WebhookHandler())
//	// POST /v1/reconcile and `tollgate reconcile`:
//	events, applied, err := s.Reconcile(ctx, since)
//	// in serve, when an API key is set:
//	go s.Run(ctx, cfg.Stripe.ReconcileInterval, cfg.Stripe.ReconcileWindow)
//
// It does not serve the admin API, authenticate callers other than Stripe,
// read configuration files, or decide how much usage costs: cmd/tollgate
// maps configuration to Options, and the proxy owns the admin endpoints that
// call Reconcile. It never writes to Stripe.
package stripesync

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/tollgate-dev/tollgate/ledger"
)

// Store is the part of the ledger stripesync needs: idempotent credits,
// dispute suspensions, and the small key-value map and lock beside the
// ledger. *ledger.RedisStore and *ledger.BoltStore implement it.
type Store interface {
	// Credit applies a top-up (key: the checkout session), a subscription
	// grant (key: the invoice) or a claw-back (key: the payment intent,
	// Cumulative) exactly once per key and customer.
	Credit(ctx context.Context, c ledger.Credit) (ledger.CreditResult, error)
	// Suspend and Lift open and close a dispute's suspension; a lifted
	// reason stays lifted, so a late "created" cannot re-suspend.
	Suspend(ctx context.Context, customer, reason string) error
	Lift(ctx context.Context, customer, reason string) error
	// Plan and PutSubscription read and record the customer's
	// subscription state, the newest by ordering key (subscription.go).
	Plan(ctx context.Context, customer string) (ledger.PlanState, error)
	PutSubscription(ctx context.Context, customer, value string, order int64) (ledger.PlanWrite, error)
	ledger.Meta
}

// Defaults for Options and for the periodic reconciliation in serve.
const (
	// DefaultAPIBase is the Stripe API address, and stripe.api_base's
	// default.
	DefaultAPIBase = "https://api.stripe.com"
	// DefaultTolerance is how far a webhook signature's timestamp may be
	// from the clock, as Stripe's own libraries default to
	// (webhook.DefaultTolerance) for old timestamps; tollgate applies it
	// to future ones too.
	DefaultTolerance = 5 * time.Minute
	// DefaultMaxBodyBytes caps a webhook body. stripe-go's example uses
	// 64 KiB, but an event carrying an invoice with many lines or a
	// session with large metadata can exceed that, and rejecting a genuine
	// event would lose money; 1 MiB still bounds what an unauthenticated
	// client can make the server buffer before the signature is checked.
	DefaultMaxBodyBytes = 1 << 20
	// MaxReconcileWindow is how far back Reconcile may look, and so the
	// longest stripe.reconcile_window and `tollgate reconcile --since`:
	// Stripe keeps events for 30 days
	// (https://docs.stripe.com/api/events/list).
	MaxReconcileWindow = 30 * 24 * time.Hour
)

// Options configure a Syncer. The zero value of every field but Prices has
// a working default; cmd/tollgate fills them from the stripe section of the
// configuration.
type Options struct {
	// WebhookSecrets are the endpoint signing secrets ("whsec_…") a
	// delivery may be signed with. A delivery is accepted when its
	// signature matches any of them, so a secret can be rolled by adding
	// the new one, rolling it in the Stripe Dashboard, and removing the old
	// one once Stripe has stopped signing with it. Empty means the webhook
	// endpoint refuses every delivery with 400 and says so.
	WebhookSecrets []string
	// APIKey is a Stripe secret or restricted key. It enables the API
	// calls: line items of sessions that do not carry
	// metadata.tollgate_credits, invoice lines beyond those in the event,
	// looking up the top-up behind a refund or dispute that arrives before
	// it, and reconciliation. A restricted key needs what
	// RestrictedKeyPermissions says. Empty disables them.
	APIKey string
	// APIBase is the Stripe API address; default DefaultAPIBase. Point it
	// at stripe-mock or a test server.
	APIBase string
	// Livemode is the mode of the events this Syncer applies: true for
	// live mode, false for test mode (stripe.livemode). An event whose
	// livemode differs is acknowledged and ignored, with a warning,
	// whether a webhook delivered it or Reconcile listed it, so that test
	// payments never credit customers when test and live secrets are
	// configured together or a test endpoint points here (nor the
	// reverse). An event without a boolean livemode is refused as
	// invalid. Required (New fails without it) when WebhookSecrets or
	// APIKey is set: which mode to serve is never guessed.
	Livemode *bool
	// Prices maps a Stripe price id ("price_…") or a price's lookup key to
	// what one unit buys and how those credits expire and burn. A line
	// whose price is in neither form here is skipped and logged. Each
	// Price must pass its checks (see Price).
	Prices map[string]Price
	// Tolerance is how far a webhook signature's timestamp may be from
	// the clock, in either direction; default DefaultTolerance. Older
	// deliveries are refused with 400 because they may be replays, and so
	// are deliveries dated further ahead, which would stay replayable
	// until the clock caught up.
	Tolerance time.Duration
	// MaxBodyBytes caps a webhook body; default DefaultMaxBodyBytes.
	// Larger bodies are refused with 413.
	MaxBodyBytes int64
	// Now is the clock; default time.Now. It dates signature checks and
	// the reconciliation window.
	Now func() time.Time
	// Logger receives one line per event applied or refused; default
	// zap.NewNop(). Secrets, keys and bodies are never logged.
	Logger *zap.Logger
	// HTTPClient makes the Stripe API calls; default a client with a 30 s
	// timeout.
	HTTPClient *http.Client
	// Registerer, if set, receives the counter
	// tollgate_stripe_events_total{type,outcome}. type is the event type
	// for the types in EventTypes, "other" for the rest, and "unverified"
	// for deliveries refused before their signature was accepted.
	// outcome is "applied" (a balance or suspension changed), "duplicate"
	// (applied before), "ignored", or the error code the webhook answered
	// (invalid_signature, request_too_large, invalid_request,
	// invalid_event, retry_later, stripe_api_error, store_unavailable,
	// store_error, internal_error).
	//
	// It also receives tollgate_stripe_journal_errors_total{reason}:
	// events whose record did not reach the journal, because its queue
	// was full ("queue_full") or the write failed ("store").
	Registerer prometheus.Registerer
	// Journal keeps a record of every event received and what it did
	// (see Record); nil means the store's own journal when it has one
	// (*ledger.RedisStore and *ledger.BoltStore do). Records are written
	// in the background: the journal never delays or fails a webhook.
	Journal ledger.Journal
}

// Syncer applies Stripe events to a Store. Create it with New; it is safe
// for concurrent use.
type Syncer struct {
	store     Store
	secrets   []string
	apiKey    string
	apiBase   string
	livemode  bool
	prices    map[string]Price
	tolerance time.Duration
	maxBody   int64
	now       func() time.Time
	log       *zap.Logger
	client    *http.Client
	events    *prometheus.CounterVec
	journal   *journalWriter
}

// ErrNoAPIKey is returned by Reconcile and Run when Options.APIKey is empty.
var ErrNoAPIKey = errors.New("stripesync: reconciliation needs a Stripe API key (set stripe.api_key)")

// ErrNoLivemode is returned by New when WebhookSecrets or APIKey is set
// without Livemode.
var ErrNoLivemode = errors.New("stripesync: Livemode is not set: set stripe.livemode to true to apply live-mode events or false for test mode; events of the other mode are acknowledged and ignored")

// New returns a Syncer that applies events to store. It checks opts and
// reports every problem at once.
func New(store Store, opts Options) (*Syncer, error) {
	if store == nil {
		return nil, errors.New("stripesync: store is nil")
	}
	var errs []error
	for i, sec := range opts.WebhookSecrets {
		if strings.TrimSpace(sec) == "" {
			errs = append(errs, fmt.Errorf("stripesync: webhook secret %d is empty; remove it or set the endpoint's signing secret (whsec_…)", i))
		}
	}
	s := &Syncer{
		store:     store,
		secrets:   append([]string(nil), opts.WebhookSecrets...),
		apiKey:    opts.APIKey,
		apiBase:   strings.TrimRight(opts.APIBase, "/"),
		prices:    make(map[string]Price, len(opts.Prices)),
		tolerance: opts.Tolerance,
		maxBody:   opts.MaxBodyBytes,
		now:       opts.Now,
		log:       opts.Logger,
		client:    opts.HTTPClient,
	}
	if s.apiBase == "" {
		s.apiBase = DefaultAPIBase
	}
	switch {
	case opts.Livemode != nil:
		s.livemode = *opts.Livemode
	case len(opts.WebhookSecrets) > 0 || opts.APIKey != "":
		errs = append(errs, ErrNoLivemode)
	}
	// Otherwise no event can arrive: the webhook refuses every delivery
	// without a secret, and Reconcile needs the API key.
	if u, err := url.Parse(s.apiBase); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		errs = append(errs, fmt.Errorf("stripesync: API base %q is not an http(s) URL; want e.g. %q", opts.APIBase, DefaultAPIBase))
	}
	for k, v := range opts.Prices {
		if k == "" {
			errs = append(errs, errors.New("stripesync: a price key is empty; use a price id (price_…) or a lookup key"))
		}
		if err := v.check(k); err != nil {
			errs = append(errs, err)
		}
		s.prices[k] = v
	}
	if s.tolerance < 0 {
		errs = append(errs, fmt.Errorf("stripesync: tolerance %s is negative", s.tolerance))
	}
	if s.tolerance == 0 {
		s.tolerance = DefaultTolerance
	}
	if s.maxBody < 0 {
		errs = append(errs, fmt.Errorf("stripesync: max body bytes %d is negative", s.maxBody))
	}
	if s.maxBody == 0 {
		s.maxBody = DefaultMaxBodyBytes
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.log == nil {
		s.log = zap.NewNop()
	}
	if s.client == nil {
		s.client = &http.Client{Timeout: 30 * time.Second}
	}
	s.events = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tollgate_stripe_events_total",
		Help: "Stripe events received by webhook or reconciliation, by event type and outcome: applied, duplicate, ignored, or the error code answered.",
	}, []string{"type", "outcome"})
	if opts.Registerer != nil {
		if err := opts.Registerer.Register(s.events); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				errs = append(errs, fmt.Errorf("stripesync: register metrics: %w", err))
			} else if cv, ok := are.ExistingCollector.(*prometheus.CounterVec); ok {
				s.events = cv
			}
		}
	}
	journalErrors := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tollgate_stripe_journal_errors_total",
		Help: "Stripe events whose record did not reach the journal (GET /v1/stripe/events), by reason: queue_full or store. The events themselves were applied as usual.",
	}, []string{"reason"})
	if opts.Registerer != nil {
		if err := opts.Registerer.Register(journalErrors); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				errs = append(errs, fmt.Errorf("stripesync: register metrics: %w", err))
			} else if cv, ok := are.ExistingCollector.(*prometheus.CounterVec); ok {
				journalErrors = cv
			}
		}
	}
	for _, reason := range []string{"queue_full", "store"} {
		journalErrors.WithLabelValues(reason)
	}
	j := opts.Journal
	if j == nil {
		j, _ = store.(ledger.Journal)
	}
	s.journal = newJournalWriter(j, store, s.log, journalErrors)
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	// The series of every event type's common outcomes exist from the
	// start, at zero, so /metrics lists the metric before the first event.
	for _, typ := range EventTypes() {
		for _, out := range []outcome{outcomeApplied, outcomeDuplicate, outcomeIgnored} {
			s.events.WithLabelValues(typ, string(out))
		}
	}
	return s, nil
}
