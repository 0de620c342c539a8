package stripesync

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"time"

	"github.com/tidwall/gjson"
	"go.uber.org/zap"

	"github.com/tollgate-dev/tollgate/ledger"
)

// Errors of Reconcile and Run besides ErrNoAPIKey. The admin API maps
// ErrInvalidWindow and ErrNoAPIKey to 400, errors matching
// ledger.ErrStoreUnavailable to 503, *APIError to 502, and ErrIncomplete to
// 500 with its message.
var (
	// ErrInvalidWindow: since is not positive or reaches further back
	// than MaxReconcileWindow.
	ErrInvalidWindow = errors.New("stripesync: invalid reconciliation window")
	// ErrIncomplete: the listing finished but some events could not be
	// applied; the error names them. Applied events stay applied, and
	// running again retries the rest.
	ErrIncomplete = errors.New("stripesync: some events were not applied")
)

// ReconcileLock is the name of the store lock (ledger.Meta.TryLock) that
// Run holds while it reconciles, so that one replica at a time does.
const ReconcileLock = "stripesync:reconcile"

// maxReconcileHold bounds how long Run keeps the reconciliation lock: the
// stores refuse locks longer than a day (so that a crashed holder blocks
// the job for a day at most), and asking for more would fail every tick.
const maxReconcileHold = 24 * time.Hour

// maxReportedFailures bounds how many failed events an ErrIncomplete
// message names.
const maxReportedFailures = 5

// Reconcile lists, through the Stripe Events API, every event of the types
// in EventTypes created in the last since (at most MaxReconcileWindow:
// Stripe keeps events for 30 days), and applies each through the same
// idempotent path as a webhook delivery. It is for events a webhook missed
// — an endpoint that was down longer than Stripe retries, misconfigured or
// disabled — and is safe to run at any time, as often as wanted, on any
// replica: what was applied before changes nothing.
//
// events counts the events listed and applied those that changed a
// balance or a suspension. Events that cannot be applied (a customer not
// known yet, say) are tried once more after the listing, since Stripe lists
// newest first and the event they depend on may come later; if some still
// fail the error matches ErrIncomplete. A store outage stops the run at
// once with an error matching ledger.ErrStoreUnavailable. It needs
// Options.APIKey (ErrNoAPIKey) and does no HTTP serving: the admin API and
// the CLI own the request and response.
func (s *Syncer) Reconcile(ctx context.Context, since time.Duration) (events, applied int, err error) {
	if s.apiKey == "" {
		return 0, 0, ErrNoAPIKey
	}
	if since <= 0 {
		return 0, 0, fmt.Errorf("%w: since %s must be positive, e.g. 72h", ErrInvalidWindow, since)
	}
	if since > MaxReconcileWindow {
		return 0, 0, fmt.Errorf("%w: since %s is more than 720h (30 days), the longest Stripe keeps events", ErrInvalidWindow, since)
	}
	from := s.now().Add(-since)
	q := url.Values{
		"types[]":      EventTypes(),
		"created[gte]": {strconv.FormatInt(from.Unix(), 10)},
	}
	var deferred []gjson.Result
	err = s.list(ctx, "/v1/events", q, func(ev gjson.Result) error {
		events++
		out, err := s.apply(ctx, ev, "reconcile")
		switch {
		case err == nil:
			if out.Result == Applied {
				applied++
			}
		case errors.Is(err, ledger.ErrStoreUnavailable):
			// The store is down: every other event would fail the
			// same way, so stop rather than report them all.
			return err
		case ctx.Err() != nil:
			return ctx.Err()
		default:
			deferred = append(deferred, ev)
		}
		return nil
	})
	if err != nil {
		var ae *APIError
		if errors.As(err, &ae) {
			return events, applied, fmt.Errorf("reconcile: listing events: %w", err)
		}
		return events, applied, fmt.Errorf("reconcile: %w", err)
	}
	var failed []error
	for i := len(deferred) - 1; i >= 0; i-- { // oldest first
		ev := deferred[i]
		out, err := s.apply(ctx, ev, "reconcile")
		if err != nil {
			if errors.Is(err, ledger.ErrStoreUnavailable) || ctx.Err() != nil {
				return events, applied, fmt.Errorf("reconcile: %w", errors.Join(err, ctx.Err()))
			}
			failed = append(failed, fmt.Errorf("event %s (%s): %w", ev.Get("id").String(), ev.Get("type").String(), err))
			continue
		}
		if out.Result == Applied {
			applied++
		}
	}
	s.log.Info("stripe: reconciled", zap.Duration("since", since), zap.Int("events", events), zap.Int("applied", applied), zap.Int("failed", len(failed)))
	if len(failed) > 0 {
		shown := failed
		if len(shown) > maxReportedFailures {
			shown = append(shown[:maxReportedFailures:maxReportedFailures], fmt.Errorf("and %d more (see the log)", len(failed)-maxReportedFailures))
		}
		return events, applied, fmt.Errorf("%w: %d of %d: %w", ErrIncomplete, len(failed), events, errors.Join(shown...))
	}
	return events, applied, nil
}

// Run reconciles the last window every interval until ctx is done, for
// tollgate serve when an API key is set (stripe.reconcile_interval and
// stripe.reconcile_window in the config: hourly over the last 72 hours by
// default, Stripe's retry period). It runs once at start.
//
// Replicas share the work through the store's lock: each tick, a replica
// runs only if it takes the lock, and keeps the lock for nine tenths of the
// interval after taking it (at most a day, the longest lock the stores
// grant), so the fleet reconciles about once per interval whatever the
// number of replicas, and a replica that dies mid-run frees the lock when
// it expires. A run that outlasts its lock is cancelled (the
// next run picks up the same window), so two replicas never reconcile at
// once; raise the interval or shorten the window if the log says runs are
// cut short.
//
// Failures are logged and retried next interval. Run returns nil when ctx
// ends, ErrNoAPIKey without an API key, and ErrInvalidWindow for a bad
// interval or window.
func (s *Syncer) Run(ctx context.Context, interval, window time.Duration) error {
	if s.apiKey == "" {
		return ErrNoAPIKey
	}
	if interval <= 0 {
		return fmt.Errorf("%w: interval %s must be positive", ErrInvalidWindow, interval)
	}
	if window <= 0 || window > MaxReconcileWindow {
		return fmt.Errorf("%w: window %s must be positive and at most 720h", ErrInvalidWindow, window)
	}
	hold := min(interval-interval/10, maxReconcileHold)
	tick := func() {
		token, ok, err := s.store.TryLock(ctx, ReconcileLock, hold)
		if err != nil {
			if ctx.Err() == nil {
				s.log.Warn("stripe: reconciliation skipped: cannot take the lock", zap.Error(err))
			}
			return
		}
		if !ok {
			s.log.Debug("stripe: reconciliation running elsewhere")
			return
		}
		runCtx, cancel := context.WithTimeout(ctx, hold)
		defer cancel()
		events, applied, err := s.Reconcile(runCtx, window)
		switch {
		case err == nil:
			// Keep the lock until it expires: see above.
		case ctx.Err() != nil:
			// Cut short by shutdown: free the lock so another replica
			// need not wait for it to expire.
			unlockCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			if err := s.store.Unlock(unlockCtx, ReconcileLock, token); err != nil {
				s.log.Debug("stripe: could not release the reconciliation lock", zap.Error(err))
			}
		case runCtx.Err() != nil:
			s.log.Warn("stripe: periodic reconciliation cut short at its time limit; raise the interval or shorten the window", zap.Duration("limit", hold), zap.Int("events", events), zap.Int("applied", applied))
		case err != nil:
			s.log.Warn("stripe: periodic reconciliation failed; retrying next interval", zap.Int("events", events), zap.Int("applied", applied), zap.Error(err))
		}
	}
	tick()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			tick()
		}
	}
}
