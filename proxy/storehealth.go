package proxy

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/tollgate-dev/tollgate/ledger"
)

// The store's health, as /readyz and operators see it. One check runs at
// a time: ledger.Store.Ready, bounded by store.timeout, started by /readyz
// or by WatchStore and joined by whoever asks while it runs. A caller
// waits for it at most as long as its own context allows, so /readyz
// answers within readyzWait even when the store hangs and ignores
// deadlines (a stuck disk). The check's outcome feeds the metrics and the
// log, once per change of state.

// readyzWait bounds /readyz: Kubernetes' default probe timeout is 1s.
const readyzWait = 900 * time.Millisecond

// storeHealth is the state of the store checks.
type storeHealth struct {
	mu      sync.Mutex
	running *storeCheck // the check in flight, if any
	last    error       // outcome of the last finished check
	checked bool        // a check has finished
}

// storeCheck is one run of ledger.Store.Ready.
type storeCheck struct {
	done chan struct{}
	err  error
}

// CheckStore checks that the store can be trusted with money now (see
// ledger.Store.Ready): nil, or an error saying what is wrong and what to
// do. It joins the check in flight or starts one, and waits for it until
// ctx ends. Each change of state is logged once and shown in the metrics
// tollgate_store_ready and tollgate_store_data_losses_total. /readyz calls
// it; so does WatchStore, so that a lost Redis is noticed without probes.
func (s *Server) CheckStore(ctx context.Context) error {
	h := &s.health
	h.mu.Lock()
	c := h.running
	if c == nil {
		c = &storeCheck{done: make(chan struct{})}
		h.running = c
		go s.runCheck(c)
	}
	h.mu.Unlock()
	select {
	case <-c.done:
		return c.err
	case <-ctx.Done():
		return fmt.Errorf("%w: the credit store did not answer its readiness check in time (store.timeout %s)", ledger.ErrStoreUnavailable, s.state.Load().storeTimeout)
	}
}

func (s *Server) runCheck(c *storeCheck) {
	timeout := s.state.Load().storeTimeout
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	err := s.store.Ready(ctx)
	cancel()
	if errors.Is(err, context.DeadlineExceeded) {
		err = fmt.Errorf("the credit store did not answer within store.timeout (%s); check that it runs and is not overloaded: %w", timeout, err)
	}
	h := &s.health
	h.mu.Lock()
	prev, first := h.last, !h.checked
	h.last, h.checked, h.running = err, true, nil
	c.err = err
	h.mu.Unlock()
	// The metrics are set before the waiters are woken, so that whoever
	// saw the check's answer also sees it in /metrics.
	defer close(c.done)

	if err == nil {
		s.m.storeReady.Set(1)
		if prev != nil {
			s.log.Info("the credit store is ready again")
		}
		return
	}
	s.m.storeReady.Set(0)
	if errors.Is(err, ledger.ErrDataLost) && (first || !errors.Is(prev, ledger.ErrDataLost)) {
		s.m.dataLosses.Inc()
	}
	if first || prev == nil || prev.Error() != err.Error() {
		s.log.Warn("not ready: the credit store cannot be trusted with requests now", zap.Error(err))
	}
}

// WatchStore runs CheckStore now and then every interval until ctx ends.
func (s *Server) WatchStore(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		cctx, cancel := context.WithTimeout(ctx, interval)
		_ = s.CheckStore(cctx) // the check logs and counts what it finds
		cancel()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// readyz answers 200 when the store can be trusted with money (it answers,
// takes writes, and on Redis is safe and has not lost its data) and the
// server is not draining, so that a load balancer sends traffic only where
// it can be billed; otherwise 503 with what is wrong and what to do. It
// answers within readyzWait.
func (a *admin) readyz(w http.ResponseWriter, r *http.Request) {
	if a.s.draining.Load() {
		writeError(w, r, http.StatusServiceUnavailable, CodeShuttingDown, "tollgate is shutting down")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), readyzWait)
	defer cancel()
	if err := a.s.CheckStore(ctx); err != nil {
		writeError(w, r, http.StatusServiceUnavailable, CodeBillingUnavailable, "not ready: "+err.Error())
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

// acceptDataLoss is POST /v1/store/accept-data-loss: the operator's answer
// to a Redis that lost its data (see ledger.RedisStore.AcceptDataLoss).
func (a *admin) acceptDataLoss(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		methodNotAllowed(w, r, "POST")
		return
	}
	if a.opts.AcceptDataLoss == nil {
		a.fail(w, r, refuse(http.StatusBadRequest, CodeNotConfigured,
			"this server's store has no data-loss check to answer: only a Redis store (store.redis_url) marks its data"))
		return
	}
	if err := a.opts.AcceptDataLoss(r.Context()); err != nil {
		a.fail(w, r, err)
		return
	}
	a.s.log.Warn("an operator accepted the credit store's data as it is now (POST /v1/store/accept-data-loss)")
	ctx, cancel := context.WithTimeout(r.Context(), readyzWait)
	defer cancel()
	// The first check may be one that started before the acceptance;
	// the second starts after it.
	_ = a.s.CheckStore(ctx)
	status := "ready"
	if err := a.s.CheckStore(ctx); err != nil {
		status = "not ready: " + err.Error()
	}
	writeJSON(w, http.StatusOK, map[string]any{"accepted": true, "status": status})
}
