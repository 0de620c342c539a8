package stripesync_test

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tidwall/gjson"
)

// deliveryKey tags the context of one webhook delivery, so that
// mappingRace can tell the concurrent deliveries apart.
type deliveryKey struct{}

// mappingRace is a store that forces the interleaving behind a double
// credit: two first applications of one business object both read its
// payment record before either writes it, the first then resolves the
// customer from the Stripe customer mapping and finishes, the mapping
// changes (another checkout of the same Stripe customer for another
// tollgate customer), and only then does the second resolve it.
type mappingRace struct {
	testStore
	t          *testing.T
	recordKey  string
	mappingKey string
	arrived    atomic.Int32
	bothRead   chan struct{} // closed when both deliveries read the record
	proceed    chan struct{} // closed by the test once the mapping changed
}

func (m *mappingRace) GetMeta(ctx context.Context, key string) (string, bool, error) {
	who, tagged := ctx.Value(deliveryKey{}).(int)
	if tagged && key == m.recordKey {
		// The count Add returns, not a later Load: two readers can both
		// load 2 and close the channel twice.
		switch m.arrived.Add(1) {
		case 1:
			m.wait(m.bothRead, "both deliveries to read the payment record")
		case 2:
			close(m.bothRead)
		}
	}
	if tagged && who == 1 && key == m.mappingKey {
		m.wait(m.proceed, "the mapping to change")
	}
	return m.testStore.GetMeta(ctx, key)
}

func (m *mappingRace) wait(c chan struct{}, what string) {
	select {
	case <-c:
	case <-time.After(10 * time.Second):
		m.t.Errorf("gave up waiting for %s", what)
	}
}

// TestFirstApplicationsBindOneCustomer delivers the same invoice (and the
// same Checkout top-up) twice at once while the Stripe customer mapping
// changes between the two: whichever customer the first application
// resolved is credited, once, and the other customer nothing. Credit keys
// are scoped to the customer, so without binding the object to one
// customer both would be credited.
func TestFirstApplicationsBindOneCustomer(t *testing.T) {
	tests := []struct {
		name, fixture  string
		edits          []any
		recordKey      string // read first by every application
		stripeCustomer string
		credits        string
	}{
		{
			name:    "invoice",
			fixture: "invoice_paid_2024-06-20.json",
			edits: []any{
				"data.object.subscription_details.metadata", map[string]string{},
				"data.object.lines.data.0.metadata", map[string]string{},
			},
			recordKey:      "stripe:invoice:in_1PGlobexCycle01",
			stripeCustomer: "cus_QGlobex00001",
			credits:        "3000",
		},
		{
			name:    "checkout session",
			fixture: "checkout_session_completed.json",
			edits: []any{
				"data.object.metadata", map[string]string{"tollgate_credits": "10000"},
				"data.object.client_reference_id", nil,
			},
			recordKey:      "stripe:payment_intent:pi_3PTopupAcme0001",
			stripeCustomer: "cus_QAcme000001",
			credits:        "10000",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			forEachStore(t, func(t *testing.T, b backend) {
				c := &clock{t: t0}
				st, forget := b.open(t, c.Now)
				race := &mappingRace{testStore: st, t: t, bothRead: make(chan struct{}), proceed: make(chan struct{})}
				h := newHarness(t, race, c)
				if forget != nil {
					t.Cleanup(func() { forget(h.ns) })
				}
				race.recordKey = h.id(tc.recordKey)
				race.mappingKey = "stripe:customer:" + h.id(tc.stripeCustomer)
				first, second := h.id("first"), h.id("second")
				if err := st.PutMeta(context.Background(), race.mappingKey, first); err != nil {
					t.Fatal(err)
				}
				body := h.fixture(tc.fixture, tc.edits...)
				done := make([]chan *httptest.ResponseRecorder, 2)
				for i := range done {
					done[i] = make(chan *httptest.ResponseRecorder, 1)
					go func() {
						req := httptest.NewRequest(http.MethodPost, "/webhooks/stripe", bytes.NewReader(body))
						req = req.WithContext(context.WithValue(req.Context(), deliveryKey{}, i))
						req.Header.Set("Content-Type", "application/json; charset=utf-8")
						req.Header.Set("Stripe-Signature", sign(body, testSecret, c.Now()))
						rec := httptest.NewRecorder()
						h.handler.ServeHTTP(rec, req)
						done[i] <- rec
					}()
				}
				rec0 := <-done[0]
				if rec0.Code != http.StatusOK {
					t.Fatalf("first delivery: %d %s", rec0.Code, rec0.Body)
				}
				if err := st.PutMeta(context.Background(), race.mappingKey, second); err != nil {
					t.Fatal(err)
				}
				close(race.proceed)
				rec := <-done[1]
				if rec.Code != http.StatusOK {
					t.Fatalf("second delivery: %d %s", rec.Code, rec.Body)
				}
				// One application, one duplicate. Which delivery applies is
				// up to the scheduler where a path does not read the
				// mapping the second delivery is held at (an invoice's
				// subscription grant): both then race past the record.
				outcomes := []string{gjson.Get(rec0.Body.String(), "outcome").String(), gjson.Get(rec.Body.String(), "outcome").String()}
				slices.Sort(outcomes)
				if outcomes[0] != "applied" || outcomes[1] != "duplicate" {
					t.Errorf("delivery outcomes %q, want one applied and one duplicate", outcomes)
				}
				h.wantBalance(first, tc.credits)
				h.wantBalance(second, "0")
				// A later replay, under the changed mapping, still credits
				// no one else.
				h.mustDeliver(body, http.StatusOK)
				h.wantBalance(first, tc.credits)
				h.wantBalance(second, "0")
			})
		})
	}
}
