package proxy

import (
	"context"
	"errors"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/tollgate-dev/tollgate/ledger"
)

// A hold lives as long as its request (DESIGN "The proxy"): store.hold_ttl
// only bounds how long a hold outlives a replica that crashed. While a
// request is open, one timer per request renews its hold every
// hold_ttl/3 (ledger.Store.Extend), so two renewals may fail before the
// hold expires, and a request shorter than that costs no store call
// beyond its reservation and settlement. The same timer enforces
// max_request_duration: a request still open then has its upstream
// request cancelled, which ends it through the paths of a stream the
// upstream cut (charged for what was streamed) or of an upstream that
// never answered (charged the prompt estimate, 504 to the client).

// holdTimer is an exchange's timer and the state it shares with the
// paths that close the hold.
type holdTimer struct {
	mu      sync.Mutex
	t       *time.Timer
	stopped bool
	start   time.Time     // when the request was admitted (wall clock, monotonic)
	every   time.Duration // renewal period; 0 when there is nothing to renew
	limit   time.Duration // max_request_duration
}

// startTimer arms ex's timer. It runs after the reservation succeeded.
func (ex *exchange) startTimer() {
	tm := &ex.timer
	tm.start = time.Now()
	tm.limit = ex.st.maxDuration
	if ex.reserved > 0 {
		// A zero hold holds nothing (and may not even be stored; see
		// ledger.Store.Reserve): there is nothing to keep alive.
		tm.every = max(ex.st.holdTTL/3, time.Millisecond)
	}
	tm.mu.Lock()
	defer tm.mu.Unlock()
	tm.t = time.AfterFunc(tm.next(0), ex.tick)
}

// next is how long after elapsed the timer fires next: at the next
// renewal or at the limit, whichever comes first.
func (tm *holdTimer) next(elapsed time.Duration) time.Duration {
	d := tm.limit - elapsed
	if tm.every > 0 && tm.every < d {
		d = tm.every
	}
	return d
}

// stopTimer disarms ex's timer for good. It runs when the hold is handed
// to settle or release, and when the exchange ends.
func (ex *exchange) stopTimer() {
	tm := &ex.timer
	tm.mu.Lock()
	defer tm.mu.Unlock()
	tm.stopped = true
	if tm.t != nil {
		tm.t.Stop()
	}
}

// tick runs on the timer's goroutine: it cuts the request at its limit,
// or renews the hold and re-arms.
func (ex *exchange) tick() {
	s, tm := ex.srv, &ex.timer
	tm.mu.Lock()
	if tm.stopped {
		tm.mu.Unlock()
		return
	}
	tm.mu.Unlock()
	if elapsed := time.Since(tm.start); elapsed >= tm.limit {
		ex.cut.Store(true)
		s.m.cuts.Inc()
		s.log.Warn("request still open at max_request_duration; cutting it and charging what it produced",
			zap.String("customer", ex.customer), zap.String("request", ex.id), zap.String("route", ex.rt.path),
			zap.Duration("max_request_duration", tm.limit))
		ex.cancelUp()
		return
	}
	again := s.renew(ex)
	tm.mu.Lock()
	defer tm.mu.Unlock()
	if tm.stopped {
		return
	}
	if !again {
		// The hold is gone; only the limit is left to enforce.
		tm.every = 0
	}
	tm.t.Reset(tm.next(time.Since(tm.start)))
}

// renew extends ex's hold by hold_ttl and reports whether renewing it
// later can still succeed. A failure is logged and counted but never cuts
// the request: the usage is charged at settlement whatever became of the
// hold.
func (s *Server) renew(ex *exchange) bool {
	s.busy.Add(1) // Drain waits for a renewal under way, as the store is closed after it
	defer s.busy.Add(-1)
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ex.Context), ex.st.settleTimeout)
	err := s.store.Extend(ctx, ex.customer, ex.id, ex.st.holdTTL)
	cancel()
	if err == nil {
		s.m.renewed.Inc()
		return true
	}
	if ex.closed.Load() {
		return false // settled or released meanwhile: nothing left to renew
	}
	s.m.renewFailed.Inc()
	gone := errors.Is(err, ledger.ErrHoldExpired) || errors.Is(err, ledger.ErrHoldReleased) ||
		errors.Is(err, ledger.ErrHoldSettled) || errors.Is(err, ledger.ErrHoldNotFound)
	msg := "hold renewal failed; the request goes on, and its hold stops counting at its expiry unless a later renewal succeeds"
	if gone {
		msg = "hold renewal failed: the hold is no longer live; the request goes on and is charged when it ends"
	}
	s.log.Warn(msg, zap.String("customer", ex.customer), zap.String("hold", ex.id), zap.String("route", ex.rt.path),
		zap.Duration("hold_ttl", ex.st.holdTTL), zap.Error(err))
	return !gone
}
