package proxy

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"go.uber.org/zap"

	"github.com/tollgate-dev/tollgate/ledger"
	"github.com/tollgate-dev/tollgate/meter"
	"github.com/tollgate-dev/tollgate/money"
)

// Settlement runs off the request path: the handler hands the hold over
// and returns, and a settler (settlers.go) settles it, typically within a
// millisecond or two of the last byte; a store that can queue the charge
// takes it without a settler (queueSettle): a Redis lease sends it with
// its next sync, the embedded store with its next commit. Each attempt
// runs on the request's context without its cancellation (the client
// being gone must not stop the charge) and with settle_timeout. A failed attempt is retried with
// backoff for Options.SettleRetryFor; Settle is idempotent per hold and
// charges holds that expired meanwhile, so retrying is always safe. A
// settlement that finally fails is logged at error level with everything
// needed to apply it by hand, and counted in tollgate_settle_failures_total.
// One whose charge the store still holds queued (ledger.ErrSettleQueued:
// a lease's charge while Redis is unreachable) is not given up, since
// the store records it once Redis answers; it is retried until then, or
// until shutdown, when the store, which sends what it can before it
// closes, logs what it could not: each lost charge is logged once, by
// whoever knows it is lost, and none that is recorded later is announced
// as lost.

const (
	firstBackoff = 50 * time.Millisecond
	maxBackoff   = 5 * time.Second
	// releaseAttempts bounds how often a failing Release is tried: a hold
	// that is never released only expires at its TTL, which costs the
	// customer nothing.
	releaseAttempts = 3
)

// settle closes ex's hold with the charge for u, in the background, and
// returns that charge, priced here so that the response can announce it
// (X-Tollgate-Cost) without waiting for the store. Only the first of
// settle and release for an exchange has an effect; ok is false for the
// others.
func (s *Server) settle(ex *exchange, u meter.Usage, reason string) (cost money.Micros, ok bool) {
	if !ex.closed.CompareAndSwap(false, true) {
		return 0, false
	}
	ex.stopTimer()
	u, cost = s.chargeFor(ex, u)
	if !s.queueSettle(ex, u, cost, reason) {
		s.retrySettle(ex, u, cost, reason)
	}
	return cost, true
}

// retrySettle settles ex on a settler, with settleWithRetries.
func (s *Server) retrySettle(ex *exchange, u meter.Usage, cost money.Micros, reason string) {
	s.settlers.run(func() {
		defer s.busy.Add(-1)
		s.settleWithRetries(ex, u, cost, reason)
	})
}

// queueSettle hands ex's settlement to a store that can take it without
// a caller waiting (ledger.SettleQueuer: a lease's hold, a live hold in
// the embedded store), and reports whether it did. No settler runs unless
// the store fails to send the charge; retrySettle then takes over, and its
// Settle returns the queued charge's outcome.
func (s *Server) queueSettle(ex *exchange, u meter.Usage, cost money.Micros, reason string) bool {
	if s.queuer == nil {
		return false
	}
	start := s.now()
	return s.queuer.QueueSettle(ex.customer, ex.id, cost, ex.charge(u), func(_ ledger.Entry, err error) {
		end := s.now()
		s.m.settleLatency.Observe(end.Sub(start).Seconds())
		if err != nil {
			// Counted and logged as a failed first attempt of
			// settleWithRetries would be.
			s.m.settleRetries.Inc()
			s.log.Warn("settlement failed; retrying", zap.String("customer", ex.customer), zap.String("hold", ex.id), zap.Error(err))
			s.retrySettle(ex, u, cost, reason)
			return
		}
		s.settled(ex, u, cost, end, reason)
		s.busy.Add(-1)
	})
}

// charge is what the ledger records of ex's settlement for u.
func (ex *exchange) charge(u meter.Usage) ledger.Charge {
	return ledger.Charge{Reference: ex.id, Route: ex.rt.path, Model: ex.req.Model, Tokens: u.Tokens}
}

// release closes ex's hold without a charge, in the background.
func (s *Server) release(ex *exchange, reason string) {
	if !ex.closed.CompareAndSwap(false, true) {
		return
	}
	ex.stopTimer()
	s.settlers.run(func() {
		defer s.busy.Add(-1)
		s.releaseWithRetries(ex, reason)
	})
}

// settleWithRetries charges ex's hold cost for u (as chargeFor returned
// them) in the store, retrying a failed attempt with backoff for
// Options.SettleRetryFor, and records the outcome in the metrics and the
// log.
func (s *Server) settleWithRetries(ex *exchange, u meter.Usage, cost money.Micros, reason string) {
	charge := ex.charge(u)
	base := context.WithoutCancel(ex.Context)
	deadline := s.now().Add(s.retryFor)
	window, warned := deadline, false // when a queued charge is first warned of
	wasQueued := false
	backoff := firstBackoff
	floorTries := 0
	for attempt := 1; ; attempt++ {
		ctx, cancel := context.WithTimeout(base, ex.st.settleTimeout)
		start := s.now()
		_, err := s.store.Settle(ctx, ex.customer, ex.id, cost, charge)
		cancel()
		end := s.now()
		s.m.settleLatency.Observe(end.Sub(start).Seconds())
		if err == nil {
			s.settled(ex, u, cost, end, reason)
			return
		}
		if errors.Is(err, ledger.ErrInvalidAmount) && floorTries < maxFloorTries {
			room, aerr := s.floorRoom(base, ex, cost)
			if aerr == nil {
				floorTries++
				cost = room
				continue
			}
			err = aerr // retried like any store failure
		}
		// A charge the store still holds queued (a lease's, while its
		// syncs fail for want of Redis) is the store's to record, or to
		// log should it close first: it is never given up here, however
		// long that takes, except at shutdown, and then not logged as
		// lost. Once the store sent it, a Settle is answered by Redis,
		// which may fail too: the retries start afresh then, with a
		// whole window.
		queued := errors.Is(err, ledger.ErrSettleQueued)
		if wasQueued && !queued {
			deadline, backoff = end.Add(s.retryFor), firstBackoff
		}
		wasQueued = queued
		switch {
		case queued && s.stopping():
			s.log.Warn("settlement not recorded yet at shutdown: the store holds the charge queued and sends it before it closes, or logs it with the command to apply it by hand; do not apply it from this message",
				zap.String("customer", ex.customer), zap.String("hold", ex.id), zap.String("amount", cost.String()), zap.Int("attempts", attempt), zap.Error(err))
			return
		case queued && !warned && !end.Before(window):
			// Not lost while this replica runs; lost if it dies first
			// (kill -9), and then nothing else would say so.
			warned = true
			s.log.Warn("settlement still queued in the store after the retry window: it is recorded once Redis takes the lease's sync. Do not apply it while this replica runs; if the replica dies before then, apply it unless the customer's ledger has an entry with this reference",
				s.settleFields(ex, u, cost, attempt, err)...)
		}
		if !queued && (permanent(err) || !end.Add(backoff).Before(deadline) || s.stopping()) {
			s.log.Error("settlement failed; the charge is NOT recorded. Check the customer's ledger for an entry with this reference, and if there is none apply it by hand", s.settleFields(ex, u, cost, attempt, err)...)
			// Counted after the log, so that whoever sees the count (an
			// alert, TestSettleGivesUp) finds the log with the command.
			s.m.settleFailures.Inc()
			return
		}
		s.m.settleRetries.Inc()
		if attempt == 1 {
			s.log.Warn("settlement failed; retrying", zap.String("customer", ex.customer), zap.String("hold", ex.id), zap.Error(err))
		}
		backoff = s.pause(backoff)
	}
}

// settleFields are the log fields of a settlement that may need applying
// by hand: what it charges for, and the command that applies it.
func (s *Server) settleFields(ex *exchange, u meter.Usage, cost money.Micros, attempts int, err error) []zap.Field {
	fields := []zap.Field{zap.String("customer", ex.customer), zap.String("hold", ex.id), zap.String("amount", cost.String()),
		zap.String("route", ex.rt.path), zap.String("model", ex.req.Model)}
	for name, n := range u.TokenCounts() {
		fields = append(fields, zap.Int64(name, n))
	}
	return append(fields, zap.Int("attempts", attempts),
		zap.String("apply", fmt.Sprintf("tollgate credit %s -%s --key settle-%s --reason 'unsettled request %s'", ex.customer, cost, ex.id, ex.id)),
		zap.Error(err))
}

// chargeFor returns the usage a settlement records and its cost, which is
// never more than the ledger accepts: a cost beyond ledger.MaxAmount
// (which Settle would refuse, leaving the request unpaid and its hold
// open) is charged ledger.MaxAmount, the most that can be charged, and
// logged as an error with the true cost. Such usage means a provider bug
// or a price far above any provider's; either way the usage happened and
// is never free.
func (s *Server) chargeFor(ex *exchange, u meter.Usage) (meter.Usage, money.Micros) {
	// Charge prices each of Anthropic's usage.iterations at its own
	// model's price and records their sum, and moves a fallback estimate
	// (a DALL·E image or a whisper-1 duration at a token-only price) into
	// the token counts the ledger records, marked Estimated. The route's
	// prices are those the request was held at, whatever a reload did
	// since.
	charged, cost, err := ex.rt.prices.Charge(ex.req, u)
	var trueCost string
	switch {
	case err != nil:
		// meter.ErrCostRange. At settlement it only means that the total
		// does not fit in money.Micros: the tap never reports negative
		// counts or more cached than input tokens, and config refuses
		// negative prices. (The model was priced at preflight, from the
		// same table, so ErrModelNotPriced cannot happen.)
		trueCost = "more than " + money.Micros(math.MaxInt64).String()
	case cost > ledger.MaxAmount:
		u, trueCost = charged, cost.String()
	default:
		return charged, cost
	}
	s.log.Error("usage costs more than the ledger can record; charging the most it accepts (check the provider's usage report and the route's prices)",
		zap.String("request", ex.id), zap.String("customer", ex.customer), zap.String("route", ex.rt.path), zap.String("model", ex.req.Model),
		zap.Int64("input_tokens", u.InputTokens), zap.Int64("output_tokens", u.OutputTokens),
		zap.String("cost", trueCost), zap.String("charged", ledger.MaxAmount.String()), zap.Error(err))
	return u, ledger.MaxAmount
}

// maxFloorTries bounds how often one settlement is lowered to the ledger's
// floor: each try charges less, but concurrent charges may move the floor
// while it runs.
const maxFloorTries = 5

// floorRoom is called when Settle refused cost as an invalid amount. cost
// is within 0 to ledger.MaxAmount, so Settle refused it because the
// balance would go below -ledger.MaxAmount, the floor of every balance. It
// returns what can still be charged down to that floor: cost itself if
// the balance rose meanwhile, less (logged as an error) otherwise.
func (s *Server) floorRoom(base context.Context, ex *exchange, cost money.Micros) (money.Micros, error) {
	ctx, cancel := context.WithTimeout(base, ex.st.settleTimeout)
	a, err := s.store.Account(ctx, ex.customer)
	cancel()
	if err != nil {
		return 0, err
	}
	room := max(a.Balance+ledger.MaxAmount, 0)
	if room >= cost {
		return cost, nil
	}
	s.log.Error("this charge would take the balance below the ledger's floor; charging what is left down to it",
		zap.String("request", ex.id), zap.String("customer", ex.customer), zap.String("route", ex.rt.path),
		zap.String("cost", cost.String()), zap.String("charged", room.String()), zap.String("balance", a.Balance.String()),
		zap.String("floor", (-ledger.MaxAmount).String()))
	return room, nil
}

// permanent reports whether retrying a failed Settle cannot help.
func permanent(err error) bool {
	switch {
	case errors.Is(err, ledger.ErrHoldNotFound), // the store lost the hold (a Redis without persistence restarted)
		errors.Is(err, ledger.ErrHoldReleased),
		errors.Is(err, ledger.ErrInvalidAmount),
		errors.Is(err, ledger.ErrInvalidArgument),
		errors.Is(err, ledger.ErrInvalidCustomer):
		return true
	}
	return false
}

func (s *Server) settled(ex *exchange, u meter.Usage, cost money.Micros, at time.Time, reason string) {
	s.m.heldSettled.Observe(at.Sub(ex.heldAt).Seconds())
	rm := ex.rt.m
	rm.credits.Add(float64(cost) / float64(money.Credit))
	rm.charged(u.Tokens)
	if u.Estimated {
		rm.estimated.Inc()
	}
	if ce := s.log.Check(zap.DebugLevel, "settled"); ce != nil {
		ce.Write(zap.String("customer", ex.customer), zap.String("hold", ex.id), zap.String("route", ex.rt.path),
			zap.String("model", ex.req.Model), zap.String("reserved", ex.reserved.String()), zap.String("charged", cost.String()),
			zap.Int64("input_tokens", u.InputTokens), zap.Int64("output_tokens", u.OutputTokens),
			zap.Bool("estimated", u.Estimated), zap.String("how", reason))
	}
}

// releaseWithRetries removes ex's hold from the store without a charge,
// trying at most releaseAttempts times.
func (s *Server) releaseWithRetries(ex *exchange, reason string) {
	base := context.WithoutCancel(ex.Context)
	backoff := firstBackoff
	for attempt := 1; ; attempt++ {
		ctx, cancel := context.WithTimeout(base, ex.st.settleTimeout)
		start := s.now()
		err := s.store.Release(ctx, ex.customer, ex.id)
		cancel()
		end := s.now()
		s.m.releaseLatency.Observe(end.Sub(start).Seconds())
		if err == nil {
			s.m.heldReleased.Observe(end.Sub(ex.heldAt).Seconds())
			if ce := s.log.Check(zap.DebugLevel, "released"); ce != nil {
				ce.Write(zap.String("customer", ex.customer), zap.String("hold", ex.id), zap.String("why", reason))
			}
			return
		}
		if attempt >= releaseAttempts || s.stopping() {
			s.log.Warn("release failed; the hold stops counting when it expires", zap.String("customer", ex.customer),
				zap.String("hold", ex.id), zap.Duration("hold_ttl", ex.st.holdTTL), zap.Error(err))
			return
		}
		backoff = s.pause(backoff)
	}
}

// pause waits backoff, or less if the server is giving up on retries
// (Drain ran out of time), and returns the next, doubled backoff.
func (s *Server) pause(backoff time.Duration) time.Duration {
	t := time.NewTimer(backoff)
	select {
	case <-t.C:
	case <-s.quit:
		t.Stop()
	}
	return min(2*backoff, maxBackoff)
}

func (s *Server) stopping() bool {
	select {
	case <-s.quit:
		return true
	default:
		return false
	}
}

// Drain waits until every request handler has returned and every hold has
// been settled or released, or until ctx ends. Call it after the proxy's
// http.Server has shut down (Shutdown, then Close if streams outlived the
// timeout: closing cuts them, and cut streams are settled too), and before
// closing the store. When ctx ends first, settlements still retrying give
// up at once and log what to charge by hand (those whose charge the store
// holds queued only warn: the store sends them as it closes, or logs
// them); Drain then waits briefly for them and returns an error saying
// how many were left.
//
// Drain also makes /readyz answer 503, so that load balancers stop
// sending traffic; call BeginDrain to do that earlier.
func (s *Server) Drain(ctx context.Context) error {
	s.BeginDrain()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for s.busy.Load() > 0 {
		select {
		case <-tick.C:
		case <-ctx.Done():
			s.quitOnce.Do(func() { close(s.quit) })
			grace := time.NewTimer(s.state.Load().settleTimeout + time.Second)
			defer grace.Stop()
			for s.busy.Load() > 0 {
				select {
				case <-tick.C:
				case <-grace.C:
					return fmt.Errorf("proxy: drain: %d requests or settlements still running", s.busy.Load())
				}
			}
			return nil
		}
	}
	return nil
}

// BeginDrain makes /readyz answer 503 from now on, so that load balancers
// take this instance out of rotation while it finishes its requests.
func (s *Server) BeginDrain() { s.draining.Store(true) }
