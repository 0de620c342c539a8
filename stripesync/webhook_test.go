package stripesync_test

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tidwall/gjson"

	"github.com/tollgate-dev/tollgate/stripesync"
)

func TestWebhookRefusesUnverifiedDeliveries(t *testing.T) {
	h := open(t, boltBackend())
	body := h.fixture("checkout_session_completed.json")
	tests := []struct {
		name      string
		signature string
		wantMsg   string
	}{
		{
			name:      "missing header",
			signature: "",
			wantMsg:   "missing Stripe-Signature header: this endpoint accepts only events sent by Stripe",
		},
		{
			name:      "wrong secret",
			signature: sign(body, "whsec_someone_else", h.clock.Now()),
			wantMsg:   "no signature matches a configured webhook secret: set stripe.webhook_secret to this endpoint's signing secret from the Stripe Dashboard (while rolling it, list both in stripe.webhook_secrets)",
		},
		{
			name:      "stale timestamp",
			signature: sign(body, testSecret, h.clock.Now().Add(-6*time.Minute)),
			wantMsg:   "signature timestamp is 6m0s old, beyond the 5m0s tolerance: a replayed request, or this server's clock is wrong",
		},
		{
			// A timestamp ahead of the clock by more than the tolerance
			// would keep a captured delivery replayable until the clock
			// catches up with it.
			name:      "future timestamp",
			signature: sign(body, testSecret, h.clock.Now().Add(6*time.Minute)),
			wantMsg:   "signature timestamp is 6m0s in the future, beyond the 5m0s tolerance: check this server's clock, which is probably behind (sync it with NTP)",
		},
		{
			name:      "malformed header",
			signature: "t=notanumber,v1=abc",
			wantMsg:   "malformed Stripe-Signature header",
		},
		{
			// A captured delivery replayed with a fresh t= in front:
			// stripe-go checks the HMAC against the last t=, so reading
			// the first for the tolerance would let any old delivery in.
			name:      "replay with a fresh timestamp prepended",
			signature: "t=" + strconv.FormatInt(h.clock.Now().Unix(), 10) + "," + sign(body, testSecret, h.clock.Now().Add(-time.Hour)),
			wantMsg:   "malformed Stripe-Signature header",
		},
		{
			name:      "signature of other bytes",
			signature: sign(append(bytes.Clone(body), ' '), testSecret, h.clock.Now()),
			wantMsg:   "no signature matches a configured webhook secret: set stripe.webhook_secret to this endpoint's signing secret from the Stripe Dashboard (while rolling it, list both in stripe.webhook_secrets)",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := h.post(body, tc.signature)
			if rec.Code != http.StatusBadRequest {
				t.Fatalf("status %d, want 400; body %s", rec.Code, rec.Body)
			}
			if got := gjson.Get(rec.Body.String(), "error.message").String(); got != tc.wantMsg {
				t.Errorf("message %q\nwant    %q", got, tc.wantMsg)
			}
			if got := gjson.Get(rec.Body.String(), "error.code").String(); got != "invalid_signature" {
				t.Errorf("code %q, want invalid_signature", got)
			}
		})
	}
	h.wantBalance(h.id("acme"), "0")
	if got := h.outcome("unverified", "invalid_signature"); got != len(tests) {
		t.Errorf("invalid_signature count %d, want %d", got, len(tests))
	}
	// Within the tolerance the same bytes are accepted.
	h.clock.Advance(4 * time.Minute)
	rec := h.post(body, sign(body, testSecret, t0))
	if rec.Code != http.StatusOK {
		t.Fatalf("delivery signed 4 minutes ago: status %d, want 200; %s", rec.Code, rec.Body)
	}
	h.wantBalance(h.id("acme"), "10000")
	// So are bytes signed up to the tolerance ahead of the clock: Stripe's
	// clock and this one may differ by a little either way.
	second := h.fixture("checkout_session_completed_unpaid.json", "data.object.payment_status", "paid")
	if rec := h.post(second, sign(second, testSecret, h.clock.Now().Add(4*time.Minute))); rec.Code != http.StatusOK {
		t.Fatalf("delivery signed 4 minutes ahead: status %d, want 200; %s", rec.Code, rec.Body)
	}
}

func TestWebhookAcceptsEitherSecretWhileRotating(t *testing.T) {
	h := open(t, boltBackend(), func(o *stripesync.Options) {
		o.WebhookSecrets = []string{"whsec_old", "whsec_new"}
	})
	first := h.fixture("checkout_session_completed.json")
	if rec := h.post(first, sign(first, "whsec_new", h.clock.Now())); rec.Code != http.StatusOK {
		t.Fatalf("signed with the second secret: status %d; %s", rec.Code, rec.Body)
	}
	second := h.fixture("checkout_session_completed_unpaid.json", "data.object.payment_status", "paid")
	if rec := h.post(second, sign(second, "whsec_old", h.clock.Now())); rec.Code != http.StatusOK {
		t.Fatalf("signed with the first secret: status %d; %s", rec.Code, rec.Body)
	}
	h.wantBalance(h.id("acme"), "15000.5")
	if rec := h.post(first, sign(first, testSecret, h.clock.Now())); rec.Code != http.StatusBadRequest {
		t.Fatalf("signed with a secret not configured: status %d, want 400", rec.Code)
	}
}

func TestWebhookWithoutSecretsSaysSo(t *testing.T) {
	h := open(t, boltBackend(), func(o *stripesync.Options) { o.WebhookSecrets = nil })
	body := h.fixture("checkout_session_completed.json")
	rec := h.deliver(body)
	if rec.Code != http.StatusBadRequest || !strings.Contains(rec.Body.String(), "set stripe.webhook_secret") {
		t.Fatalf("status %d body %s; want 400 naming stripe.webhook_secret", rec.Code, rec.Body)
	}
}

func TestWebhookCapsTheBody(t *testing.T) {
	h := open(t, boltBackend(), func(o *stripesync.Options) { o.MaxBodyBytes = 1024 })
	body := h.fixture("checkout_session_completed.json") // about 3 KiB
	rec := h.deliver(body)
	if rec.Code != http.StatusRequestEntityTooLarge {
		t.Fatalf("status %d, want 413; %s", rec.Code, rec.Body)
	}
	h.wantBalance(h.id("acme"), "0")
}

func TestWebhookAcknowledgesOtherEventTypes(t *testing.T) {
	h := open(t, boltBackend())
	rec := h.mustDeliver(h.fixture("customer_created.json"), http.StatusOK)
	if got := gjson.Get(rec.Body.String(), "outcome").String(); got != "ignored" {
		t.Errorf("outcome %q, want ignored", got)
	}
	if got := h.outcome("other", "ignored"); got != 1 {
		t.Errorf("other/ignored count %d, want 1", got)
	}
}

func TestWebhookRefusesGetRequests(t *testing.T) {
	h := open(t, boltBackend())
	req, _ := http.NewRequest(http.MethodGet, "/webhooks/stripe", nil)
	rec := httptest.NewRecorder()
	h.handler.ServeHTTP(rec, req)
	if rec.Code != http.StatusMethodNotAllowed || rec.Header().Get("Allow") != http.MethodPost {
		t.Fatalf("GET: status %d Allow %q, want 405 POST", rec.Code, rec.Header().Get("Allow"))
	}
}

func TestNewReportsEveryProblem(t *testing.T) {
	_, err := stripesync.New(open(t, boltBackend()).store, stripesync.Options{
		WebhookSecrets: []string{""},
		APIBase:        "ftp://example.com",
		Prices:         map[string]stripesync.Price{"price_x": {}},
	})
	if err == nil {
		t.Fatal("New accepted bad options")
	}
	for _, want := range []string{
		`webhook secret 0 is empty`,
		`API base "ftp://example.com" is not an http(s) URL`,
		`price "price_x" credits 0.000000 must be positive`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q\ndoes not mention %q", err, want)
		}
	}
}

// TestWebhookErrorShape: the webhook answers in the shape of every error
// tollgate writes, {"error":{"message","type","code"}}, with the proxy's
// type rules: invalid_request_error below 500, server_error from 500.
func TestWebhookErrorShape(t *testing.T) {
	tests := []struct {
		name   string
		body   func(h *harness) []byte
		status int
		code   string
		typ    string
	}{
		{
			name:   "signed body not JSON",
			body:   func(*harness) []byte { return []byte("{") },
			status: http.StatusBadRequest,
			code:   "invalid_request",
			typ:    "invalid_request_error",
		},
		{
			name: "credits not a decimal",
			body: func(h *harness) []byte {
				return h.fixture("checkout_session_completed.json", "data.object.metadata.tollgate_credits", "10k")
			},
			status: http.StatusUnprocessableEntity,
			code:   "invalid_event",
			typ:    "invalid_request_error",
		},
		{
			name: "customer not known yet",
			body: func(h *harness) []byte {
				return h.fixture("checkout_session_completed.json", "data.object.metadata.tollgate_customer", nil, "data.object.customer", nil)
			},
			status: http.StatusServiceUnavailable,
			code:   "retry_later",
			typ:    "server_error",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := open(t, boltBackend())
			rec := h.deliver(tc.body(h))
			if rec.Code != tc.status {
				t.Fatalf("status %d, want %d; %s", rec.Code, tc.status, rec.Body)
			}
			if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q, want application/json", ct)
			}
			e := gjson.Get(rec.Body.String(), "error")
			if got := e.Get("code").String(); got != tc.code {
				t.Errorf("error.code %q, want %q", got, tc.code)
			}
			if got := e.Get("type").String(); got != tc.typ {
				t.Errorf("error.type %q, want %q", got, tc.typ)
			}
			if e.Get("message").String() == "" {
				t.Errorf("error.message is empty: %s", rec.Body)
			}
		})
	}
}
