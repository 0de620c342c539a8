package events

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/tollgate-dev/tollgate/ledger"
)

// Store is what the Deliverer needs of the store: its event log, its
// meta map (the cursor) and its locks (one deliverer at a time).
type Store interface {
	ledger.Outbox
	ledger.Meta
}

// Delivery defaults and limits.
const (
	// MaxAge is how long an event is retried: an event older than this
	// when its turn comes is dropped (logged, counted in
	// tollgate_events_dropped_total) and stays listed by GET /v1/events.
	MaxAge = 72 * time.Hour
	// DefaultInterval is how often a Deliverer looks for new events.
	DefaultInterval = time.Second
	// DefaultTimeout bounds one POST, its answer included.
	DefaultTimeout = 10 * time.Second
	// DefaultScanInterval is how often the Redis outboxes are scanned for
	// events whose pending mark was lost (ledger.Outbox.MoveEvents).
	DefaultScanInterval = 10 * time.Minute
	// MaxBackoff caps the wait between two attempts of one event; the
	// waits double from one second up to it.
	MaxBackoff = 10 * time.Minute

	lockName    = "events"         // the store lock only the delivering replica holds
	lockTTL     = 30 * time.Second // a replica that dies hands over after this
	lockRenew   = 10 * time.Second // the holder takes the lock afresh this often
	cursorKey   = "events.delivered"
	pageSize    = 100
	maxRespBody = 64 << 10
)

// Options configure a Deliverer. Zero values take the defaults.
type Options struct {
	// URL receives the events; empty means no delivery (the Deliverer
	// still moves Redis outboxes into the log, for GET /v1/events).
	URL string
	// Secret signs each delivery (Sign).
	Secret string
	// Client sends the POSTs; nil means a client with DefaultTimeout.
	Client *http.Client
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Interval, ScanInterval: see DefaultInterval, DefaultScanInterval.
	Interval     time.Duration
	ScanInterval time.Duration
	Logger       *zap.Logger
	// Registerer receives the metrics; nil registers none.
	Registerer prometheus.Registerer
}

// Deliverer moves and delivers events. Run it in its own goroutine: a
// slow or dead receiver then slows nothing but the deliveries.
type Deliverer struct {
	store Store
	o     Options

	token    string    // the lock, while held
	lockedAt time.Time // when it was last taken
	lastScan time.Time
	lastSeen int64 // the newest log position seen, for the written count
	attempts int   // failed attempts of the event at the cursor
	retryAt  time.Time

	written, delivered, failed, dropped prometheus.Counter
	lag                                 prometheus.Gauge
}

// New returns a Deliverer of store's events.
func New(store Store, o Options) *Deliverer {
	if o.Client == nil {
		o.Client = &http.Client{Timeout: DefaultTimeout}
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Interval <= 0 {
		o.Interval = DefaultInterval
	}
	if o.ScanInterval <= 0 {
		o.ScanInterval = DefaultScanInterval
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	d := &Deliverer{
		store:     store,
		o:         o,
		written:   prometheus.NewCounter(prometheus.CounterOpts{Name: "tollgate_events_written_total", Help: "Outbound events that entered the event log, as the delivering replica saw them."}),
		delivered: prometheus.NewCounter(prometheus.CounterOpts{Name: "tollgate_events_delivered_total", Help: "Outbound events the receiver acknowledged with a 2xx."}),
		failed:    prometheus.NewCounter(prometheus.CounterOpts{Name: "tollgate_event_deliveries_failed_total", Help: "Delivery attempts that failed (no answer, or not 2xx); each is retried."}),
		dropped:   prometheus.NewCounter(prometheus.CounterOpts{Name: "tollgate_events_dropped_total", Help: "Outbound events given up after 72h without a successful delivery."}),
		lag:       prometheus.NewGauge(prometheus.GaugeOpts{Name: "tollgate_events_delivery_lag_seconds", Help: "Age of the oldest event not yet delivered; 0 when all are."}),
	}
	if o.Registerer != nil {
		o.Registerer.MustRegister(d.written, d.delivered, d.failed, d.dropped, d.lag)
	}
	return d
}

// Run delivers until ctx ends, then gives up the lock.
func (d *Deliverer) Run(ctx context.Context) {
	t := time.NewTicker(d.o.Interval)
	defer t.Stop()
	for {
		if err := d.Step(ctx); err != nil && ctx.Err() == nil {
			d.o.Logger.Warn("events: delivery step failed; retrying", zap.Error(err))
		}
		select {
		case <-ctx.Done():
			if d.token != "" {
				uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
				d.store.Unlock(uctx, lockName, d.token)
				cancel()
			}
			return
		case <-t.C:
		}
	}
}

// Step does one round: take (or keep) the lock, move outboxes, and
// deliver what is due, stopping at the first failure (later events wait:
// delivery is in order). It returns without doing anything while another
// replica holds the lock.
func (d *Deliverer) Step(ctx context.Context) error {
	held, err := d.lock(ctx)
	if err != nil || !held {
		return err
	}
	now := d.o.Now()
	scan := now.Sub(d.lastScan) >= d.o.ScanInterval
	if _, err := d.store.MoveEvents(ctx, scan); err != nil {
		return err
	}
	if scan {
		d.lastScan = now
	}
	cursor, err := d.cursor(ctx)
	if err != nil {
		return err
	}
	start := cursor
	defer func() {
		if cursor != start {
			if err := d.store.PutMeta(context.WithoutCancel(ctx), cursorKey, strconv.FormatInt(cursor, 10)); err != nil {
				d.o.Logger.Warn("events: could not save the delivery cursor; some events will be delivered again", zap.Error(err))
			}
		}
	}()
	for {
		page, err := d.store.Events(ctx, cursor, pageSize)
		if err != nil {
			return err
		}
		if page.Last > d.lastSeen {
			if d.lastSeen > 0 || cursor > 0 {
				d.written.Add(float64(page.Last - max(d.lastSeen, cursor)))
			}
			d.lastSeen = page.Last
		}
		if len(page.Events) == 0 {
			d.lag.Set(0)
			return nil
		}
		d.lag.Set(now.Sub(page.Events[0].Created).Seconds())
		if d.o.URL == "" {
			cursor = page.Events[len(page.Events)-1].Seq
			continue
		}
		for _, ev := range page.Events {
			if now.Sub(ev.Created) > MaxAge {
				d.dropped.Inc()
				d.o.Logger.Error("events: giving up an event older than 72h; it stays listed by GET /v1/events",
					zap.String("event", ev.ID()), zap.String("type", string(ev.Type)), zap.String("customer", ev.Customer))
				cursor, d.attempts = ev.Seq, 0
				continue
			}
			if now.Before(d.retryAt) || now.Sub(d.lockedAt) >= lockRenew {
				return nil
			}
			if err := d.post(ctx, ev); err != nil {
				d.failed.Inc()
				d.attempts++
				wait := backoff(d.attempts)
				d.retryAt = now.Add(wait)
				d.o.Logger.Warn("events: delivery failed; retrying", zap.String("event", ev.ID()), zap.Int("attempt", d.attempts), zap.Duration("retry_in", wait), zap.Error(err))
				return nil
			}
			d.delivered.Inc()
			cursor, d.attempts = ev.Seq, 0
			now = d.o.Now()
		}
	}
}

// backoff is the wait after the n-th failed attempt: 1s, 2s, 4s, … up to
// MaxBackoff.
func backoff(n int) time.Duration {
	if n > 20 {
		return MaxBackoff
	}
	return min(time.Second<<(n-1), MaxBackoff)
}

// lock takes the delivery lock, or takes it afresh when it is due for
// renewal, and reports whether this Deliverer holds it.
func (d *Deliverer) lock(ctx context.Context) (bool, error) {
	now := d.o.Now()
	if d.token != "" && now.Sub(d.lockedAt) < lockRenew {
		return true, nil
	}
	if d.token != "" {
		// Meta locks cannot be extended: let go and take it again at
		// once. Another replica may win in between; then it delivers.
		if err := d.store.Unlock(ctx, lockName, d.token); err != nil {
			return false, err
		}
		d.token = ""
	}
	token, ok, err := d.store.TryLock(ctx, lockName, lockTTL)
	if err != nil || !ok {
		return false, err
	}
	d.token, d.lockedAt = token, now
	return true, nil
}

func (d *Deliverer) cursor(ctx context.Context) (int64, error) {
	v, ok, err := d.store.GetMeta(ctx, cursorKey)
	if err != nil || !ok {
		return 0, err
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("events: delivery cursor %q is not a number", v)
	}
	return n, nil
}

// post sends one event.
func (d *Deliverer) post(ctx context.Context, ev ledger.Event) error {
	body, err := json.Marshal(ev)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.o.URL, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "tollgate-events")
	req.Header.Set(SignatureHeader, Sign(d.o.Secret, d.o.Now(), body))
	res, err := d.o.Client.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	io.Copy(io.Discard, io.LimitReader(res.Body, maxRespBody))
	if res.StatusCode < 200 || res.StatusCode > 299 {
		return fmt.Errorf("%s answered %s", d.o.URL, res.Status)
	}
	return nil
}
