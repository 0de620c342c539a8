package stripesync

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tidwall/gjson"
	"go.uber.org/zap"

	"github.com/tollgate-dev/tollgate/ledger"
)

// Record is the journal's account of one Stripe event: what tollgate did
// with it and why (GET /v1/stripe/events, `tollgate stripe-events`). It is
// the JSON the store keeps, so its field names are the contract.
type Record struct {
	// ID is the Stripe event id (evt_…).
	ID         string    `json:"id"`
	Type       string    `json:"type"`
	APIVersion string    `json:"api_version,omitempty"`
	Livemode   bool      `json:"livemode"`
	ReceivedAt time.Time `json:"received_at"`
	// Source is "webhook" or "reconcile".
	Source string `json:"source"`
	// Customer is the tollgate customer, when the event resolved one (or
	// names one, for an event that was not applied).
	Customer string `json:"customer,omitempty"`
	// StripeCustomer is the Stripe customer (cus_…), when the event has
	// one.
	StripeCustomer string `json:"stripe_customer,omitempty"`
	Outcome        Result `json:"outcome"`
	Detail         string `json:"detail"`
	// LedgerEntry is the id of the ledger entry the event wrote in the
	// customer's ledger, when it changed a balance.
	LedgerEntry string `json:"ledger_entry,omitempty"`
}

// Sources of an event.
const (
	SourceWebhook   = "webhook"
	SourceReconcile = "reconcile"
)

// Journal writing. The journal is for support, not money: a webhook never
// waits for it and never fails because of it.
const (
	// journalQueue bounds the records waiting to be written; beyond it
	// records are dropped and counted.
	journalQueue = 1024
	// journalTimeout bounds one write.
	journalTimeout = 5 * time.Second
)

// journalWriter writes records in the background, in order, one at a
// time, through a bounded queue. A goroutine runs only while records
// wait, so a Syncer needs no Close.
type journalWriter struct {
	j      ledger.Journal // nil: no journal
	store  Store
	log    *zap.Logger
	errors *prometheus.CounterVec

	mu    sync.Mutex
	queue []pendingRecord
	idle  chan struct{} // closed while no goroutine writes
}

type pendingRecord struct {
	rec  Record
	obj  gjson.Result // data.object, to name the customer of an event not applied
	once string
}

func newJournalWriter(j ledger.Journal, store Store, log *zap.Logger, errs *prometheus.CounterVec) *journalWriter {
	idle := make(chan struct{})
	close(idle)
	return &journalWriter{j: j, store: store, log: log, errors: errs, idle: idle}
}

// add queues the record of event ev, which out describes. Reconciliation
// sees each event of its window on every run: it records an event once
// per outcome, so an hourly run adds nothing new for an event it saw in
// the same state before. Every webhook delivery is recorded.
func (w *journalWriter) add(ev gjson.Result, source string, received time.Time, out Outcome) {
	if w.j == nil {
		return
	}
	obj := ev.Get("data.object")
	rec := Record{
		ID:             ev.Get("id").String(),
		Type:           ev.Get("type").String(),
		APIVersion:     str(ev, "api_version"),
		Livemode:       ev.Get("livemode").Bool(),
		ReceivedAt:     received.UTC(),
		Source:         source,
		Customer:       out.Customer,
		StripeCustomer: out.StripeCustomer,
		Outcome:        out.Result,
		Detail:         out.detail(),
		LedgerEntry:    out.LedgerEntry,
	}
	if rec.StripeCustomer == "" {
		rec.StripeCustomer = idOf(obj.Get("customer"))
	}
	p := pendingRecord{rec: rec, obj: obj}
	if source == SourceReconcile {
		p.once = rec.ID + ":" + string(rec.Outcome)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.queue) >= journalQueue {
		w.errors.WithLabelValues("queue_full").Inc()
		w.log.Warn("stripe: journal queue full; event not recorded (the store is slow or down?)", zap.String("event", rec.ID), zap.String("outcome", string(rec.Outcome)))
		return
	}
	w.queue = append(w.queue, p)
	select {
	case <-w.idle:
		w.idle = make(chan struct{})
		go w.run(w.idle)
	default:
	}
}

// run writes what is queued until nothing is, then closes idle.
func (w *journalWriter) run(idle chan struct{}) {
	for {
		w.mu.Lock()
		batch := w.queue
		w.queue = nil
		if len(batch) == 0 {
			close(idle)
			w.mu.Unlock()
			return
		}
		w.mu.Unlock()
		for _, p := range batch {
			w.write(p)
		}
	}
}

func (w *journalWriter) write(p pendingRecord) {
	ctx, cancel := context.WithTimeout(context.Background(), journalTimeout)
	defer cancel()
	rec := p.rec
	if rec.Customer == "" && rec.Outcome != Applied {
		rec.Customer = w.customerOf(ctx, p.obj)
	}
	data, err := json.Marshal(rec)
	if err == nil {
		_, err = w.j.AppendJournal(ctx, ledger.JournalRecord{At: rec.ReceivedAt, Customer: rec.Customer, Type: journalType(rec.Type), Data: data}, journalOnce(p.once))
	}
	if err != nil {
		w.errors.WithLabelValues("store").Inc()
		w.log.Warn("stripe: could not record the event in the journal; its effect is unchanged", zap.String("event", rec.ID), zap.String("outcome", string(rec.Outcome)), zap.Error(err))
	}
}

// customerOf names the tollgate customer of an event that was not applied,
// for the journal's customer filter, from what the object says
// (metadata.tollgate_customer, client_reference_id, the subscription's
// metadata) or the customer last seen with its Stripe customer; "" when
// none. Nothing is credited on its word.
func (w *journalWriter) customerOf(ctx context.Context, obj gjson.Result) string {
	for _, p := range []string{"metadata.tollgate_customer", "client_reference_id", "parent.subscription_details.metadata.tollgate_customer", "subscription_details.metadata.tollgate_customer"} {
		if c := str(obj, p); c != "" {
			if ledger.ValidateCustomer(c) != nil {
				return ""
			}
			return c
		}
	}
	sc := idOf(obj.Get("customer"))
	if sc == "" || len(metaCustomer+sc) > ledger.MaxIDLength {
		return ""
	}
	v, ok, err := w.store.GetMeta(ctx, metaCustomer+sc)
	if err != nil || !ok || ledger.ValidateCustomer(v) != nil {
		return ""
	}
	return v
}

// journalType is an event type as the journal files it: Stripe's types
// are short dotted words, but a signed event may carry anything.
func journalType(t string) string {
	if t == "" || len(t) > ledger.MaxIDLength {
		return "unknown"
	}
	for i := 0; i < len(t); i++ {
		if c := t[i]; c <= ' ' || c > '~' || c == '{' || c == '}' {
			return "unknown"
		}
	}
	return t
}

// journalOnce is once if the journal accepts it as a key, else "" (the
// record is then added every time).
func journalOnce(once string) string {
	if journalType(once) != once {
		return ""
	}
	return once
}

// Flush waits until every event applied so far is in the journal (or its
// write failed), or ctx ends. serve calls it on shutdown; tests call it
// before reading the journal.
func (s *Syncer) Flush(ctx context.Context) error {
	s.journal.mu.Lock()
	idle := s.journal.idle
	s.journal.mu.Unlock()
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("stripesync: flush the journal: %w", ctx.Err())
	}
}

// RecentEvents returns the newest records of customer's Stripe events in
// j, at most n (1 to ledger.MaxPageSize), for GET
// /v1/customers/{id}/access.
func RecentEvents(ctx context.Context, j ledger.Journal, customer string, n int) ([]Record, error) {
	page, err := j.ReadJournal(ctx, ledger.JournalQuery{Customer: customer, Limit: n})
	if err != nil {
		return nil, err
	}
	out := make([]Record, 0, len(page.Records))
	for _, r := range page.Records {
		var rec Record
		if err := json.Unmarshal(r.Data, &rec); err != nil {
			return nil, fmt.Errorf("stripesync: journal record %s is not a Stripe event record: %w", r.ID, err)
		}
		out = append(out, rec)
	}
	return out, nil
}
